//! Fetching a feed: HTTP(S) with conditional GET, or a local file; a size
//! limit and a timeout on both. Blocking: the runner calls it on a
//! blocking thread. The only module that speaks HTTP.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::{Duration, UNIX_EPOCH},
};

/// Where a feed is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedUrl {
    Http(String),
    File(PathBuf),
}

impl FeedUrl {
    /// `http://…`, `https://…` or `file:///absolute/path`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let rest = url.split_once("://").map_or("", |(_, r)| r);
            if rest.is_empty() || rest.starts_with('/') {
                return Err(format!("{url:?} names no host"));
            }
            if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("{url:?} contains spaces or control characters"));
            }
            return Ok(Self::Http(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{url:?}: a file:// URL takes an absolute path (file:///var/lib/…)"
                ));
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        Err(format!(
            "{url:?} is not an http://, https:// or file:// URL"
        ))
    }
}

/// What a server said about the version it sent, sent back on the next
/// fetch so an unchanged feed costs a 304 (for a file: its mtime and size).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// The outcome of a fetch that worked.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The feed did not change since `validators` were given.
    NotModified,
    /// A new body and its validators.
    Body {
        body: Vec<u8>,
        validators: Validators,
    },
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: the body is larger than max_size ({limit} bytes)")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: no answer within {}", humantime::format_duration(*timeout))]
    Timeout { url: String, timeout: Duration },
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Fetches `url`, sending `validators` for a conditional request; the body
/// is refused past `max_size` bytes and the whole fetch past `timeout`.
pub fn fetch(
    url: &FeedUrl,
    validators: &Validators,
    max_size: u64,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    match url {
        FeedUrl::Http(url) => fetch_http(url, validators, max_size, timeout),
        FeedUrl::File(path) => fetch_file(path, validators, max_size),
    }
}

fn fetch_file(path: &Path, validators: &Validators, max_size: u64) -> Result<Fetched, FetchError> {
    let file_error = |source| FetchError::File {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(file_error)?;
    let meta = file.metadata().map_err(file_error)?;
    if !meta.is_file() {
        return Err(file_error(std::io::Error::other("not a regular file")));
    }
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    let stamp = format!(
        "{}.{:09} {}",
        mtime.as_secs(),
        mtime.subsec_nanos(),
        meta.len()
    );
    if validators.last_modified.as_deref() == Some(stamp.as_str()) {
        return Ok(Fetched::NotModified);
    }
    let mut body = Vec::new();
    file.take(max_size.saturating_add(1))
        .read_to_end(&mut body)
        .map_err(file_error)?;
    if body.len() as u64 > max_size {
        return Err(FetchError::TooLarge {
            url: format!("file://{}", path.display()),
            limit: max_size,
        });
    }
    Ok(Fetched::Body {
        body,
        validators: Validators {
            etag: None,
            last_modified: Some(stamp),
        },
    })
}

fn fetch_http(
    url: &str,
    validators: &Validators,
    max_size: u64,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    let agent = agent(timeout);
    let mut request = agent.get(url);
    if let Some(etag) = &validators.etag {
        request = request.header("If-None-Match", etag);
    }
    if let Some(modified) = &validators.last_modified {
        request = request.header("If-Modified-Since", modified);
    }
    let error = |e: ureq::Error| match e {
        ureq::Error::Timeout(_) => FetchError::Timeout {
            url: url.to_owned(),
            timeout,
        },
        ureq::Error::BodyExceedsLimit(_) => FetchError::TooLarge {
            url: url.to_owned(),
            limit: max_size,
        },
        other => FetchError::Http {
            url: url.to_owned(),
            message: other.to_string(),
        },
    };
    let mut response = request.call().map_err(error)?;
    let status = response.status().as_u16();
    if status == 304 {
        return Ok(Fetched::NotModified);
    }
    if status != 200 {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status,
        });
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 256)
            .map(str::to_owned)
    };
    let validators = Validators {
        etag: header("etag"),
        last_modified: header("last-modified"),
    };
    let body = response
        .body_mut()
        .with_config()
        .limit(max_size)
        .read_to_vec()
        .map_err(error)?;
    Ok(Fetched::Body { body, validators })
}

/// An agent that follows at most three redirects (never to a `file://`
/// URL: it speaks only HTTP), with the whole exchange bounded by `timeout`.
fn agent(timeout: Duration) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(Arc::clone(roots())))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(3)
        .timeout_global(Some(timeout))
        .tls_config(tls)
        .user_agent(concat!("spamwall/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// The system's CA certificates (`SSL_CERT_FILE` and `SSL_CERT_DIR` are
/// honoured), read once.
fn roots() -> &'static Arc<Vec<ureq::tls::Certificate<'static>>> {
    static ROOTS: OnceLock<Arc<Vec<ureq::tls::Certificate<'static>>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "reading the system's CA certificates");
        }
        Arc::new(
            found
                .certs
                .iter()
                .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
                .collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_https_or_absolute_files() {
        assert_eq!(
            FeedUrl::parse("https://www.spamhaus.org/drop/drop_v4.json"),
            Ok(FeedUrl::Http(
                "https://www.spamhaus.org/drop/drop_v4.json".into()
            ))
        );
        assert_eq!(
            FeedUrl::parse("file:///var/lib/lists/a.txt"),
            Ok(FeedUrl::File(PathBuf::from("/var/lib/lists/a.txt")))
        );
        for bad in [
            "ftp://x/y",
            "file://x/y",
            "http://",
            "http:///x",
            "x",
            "http://a b/",
        ] {
            assert!(FeedUrl::parse(bad).is_err(), "{bad}");
        }
    }

    /// A one-connection HTTP server on loopback answering `head`, then
    /// `body` in pieces of `piece` bytes `pause` apart, `pieces` times.
    fn server(head: String, piece: Vec<u8>, pieces: usize, pause: Duration) -> String {
        use std::io::{BufRead as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/list", listener.local_addr().expect("addr"));
        std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = std::io::BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut stream = &stream;
            if stream.write_all(head.as_bytes()).is_err() {
                return;
            }
            for _ in 0..pieces {
                if stream.write_all(&piece).is_err() {
                    return;
                }
                std::thread::sleep(pause);
            }
        });
        url
    }

    #[test]
    fn an_endless_slow_body_times_out() {
        let url = server(
            "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n".into(),
            b"192.0.2.1\n".to_vec(),
            200,
            Duration::from_millis(50),
        );
        let started = std::time::Instant::now();
        let error = fetch(
            &FeedUrl::Http(url),
            &Validators::default(),
            DEFAULT_LIMIT,
            Duration::from_millis(500),
        )
        .expect_err("too slow");
        assert!(matches!(error, FetchError::Timeout { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_body_over_the_limit_is_refused_and_redirects_to_files_are_not_followed() {
        let url = server(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
            b"1000\r\n"
                .iter()
                .copied()
                .chain([b'1'; 4096])
                .chain(*b"\r\n")
                .collect(),
            100,
            Duration::ZERO,
        );
        let error = fetch(
            &FeedUrl::Http(url),
            &Validators::default(),
            10_000,
            Duration::from_secs(5),
        )
        .expect_err("too large");
        assert!(
            matches!(error, FetchError::TooLarge { limit: 10_000, .. }),
            "{error}"
        );
        let url = server(
            "HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\n\r\n"
                .into(),
            Vec::new(),
            0,
            Duration::ZERO,
        );
        let error = fetch(
            &FeedUrl::Http(url),
            &Validators::default(),
            10_000,
            Duration::from_secs(5),
        )
        .expect_err("a redirect to a file");
        assert!(matches!(error, FetchError::Http { .. }), "{error}");
    }

    #[test]
    fn a_not_modified_answer_and_an_error_status_are_told_apart() {
        let url = server(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n".into(),
            Vec::new(),
            0,
            Duration::ZERO,
        );
        let known = Validators {
            etag: Some("\"v1\"".into()),
            last_modified: None,
        };
        assert_eq!(
            fetch(&FeedUrl::Http(url), &known, 10, Duration::from_secs(5)).expect("304"),
            Fetched::NotModified
        );
        let url = server(
            "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n".into(),
            Vec::new(),
            0,
            Duration::ZERO,
        );
        let error =
            fetch(&FeedUrl::Http(url), &known, 10, Duration::from_secs(5)).expect_err("503");
        assert!(
            matches!(error, FetchError::Status { status: 503, .. }),
            "{error}"
        );
    }

    const DEFAULT_LIMIT: u64 = 1 << 20;

    #[test]
    fn a_file_feed_is_refetched_only_when_it_changes_and_is_bounded() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("list.txt");
        std::fs::write(&path, "192.0.2.1\n").expect("write");
        let url = FeedUrl::File(path.clone());
        let Fetched::Body { body, validators } =
            fetch(&url, &Validators::default(), 100, Duration::from_secs(1)).expect("fetch")
        else {
            panic!("expected a body");
        };
        assert_eq!(body, b"192.0.2.1\n");
        assert_eq!(
            fetch(&url, &validators, 100, Duration::from_secs(1)).expect("again"),
            Fetched::NotModified
        );
        std::fs::write(&path, "192.0.2.1\n192.0.2.2\n").expect("write");
        assert!(matches!(
            fetch(&url, &validators, 100, Duration::from_secs(1)),
            Ok(Fetched::Body { .. })
        ));
        assert!(matches!(
            fetch(&url, &Validators::default(), 5, Duration::from_secs(1)),
            Err(FetchError::TooLarge { limit: 5, .. })
        ));
        let missing = FeedUrl::File(dir.path().join("missing"));
        let error = fetch(&missing, &Validators::default(), 5, Duration::from_secs(1))
            .expect_err("missing");
        assert!(error.to_string().contains("missing"), "{error}");
    }
}
