//! Prometheus metrics: `GET /metrics` on `[metrics] listen`.
//!
//! Modules record through the `metrics` facade (`counter!`, `histogram!`);
//! figures that live elsewhere (kernel counters, ban counts, backend state)
//! are copied in from a snapshot right before each scrape, so a scrape is
//! never staler than the request.
//!
//! At most [`MAX_CLIENTS`] scrapes are served at once; one more is answered
//! `503` at once, without waiting. A scraper has [`REQUEST_TIMEOUT`] to send
//! its request and [`WRITE_TIMEOUT`] to read the answer; shutdown closes
//! every connection at once.

use std::{sync::Arc, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};
use tracing::debug;

use crate::listen::{LogLimit, WARN_INTERVAL, next_connection};

/// Policy request latency, seconds.
pub const POLICY_LATENCY: &str = "spamwall_policy_request_duration_seconds";
/// How long a ban, an unban or a control request's reads waited for the
/// ban manager, when something else held it, seconds.
pub const MANAGER_LOCK_WAIT: &str = "spamwall_manager_lock_wait_seconds";
/// Policy requests answered.
pub const POLICY_REQUESTS: &str = "spamwall_policy_requests_total";
/// Bans made, by source.
pub const BANS_TOTAL: &str = "spamwall_bans_total";
/// Requests over a rate limit, by `limit`.
pub const RATELIMIT_OVERRUNS: &str = "spamwall_ratelimit_exceeded_total";
/// Rate limit counters dropped at `policy.ratelimit_keys`, the least
/// recently counted first.
pub const RATELIMIT_DROPPED: &str = "spamwall_ratelimit_dropped_total";
/// Rate limit counters held.
pub const RATELIMIT_KEYS: &str = "spamwall_ratelimit_keys";
/// Rate limit requests counted locally because Redis did not answer.
pub const RATELIMIT_FALLBACK: &str = "spamwall_ratelimit_local_fallback_total";
/// Whether Redis counts the rate limits now, 1 or 0.
pub const RATELIMIT_SHARED: &str = "spamwall_ratelimit_shared";
/// Entries a blocklist feed holds, by feed.
pub const FEED_ENTRIES: &str = "spamwall_feed_entries";
/// When a feed last loaded (a 304 included), Unix seconds, by feed.
pub const FEED_LAST_SUCCESS: &str = "spamwall_feed_last_success_timestamp_seconds";
/// Fetches of a feed that failed, by feed.
pub const FEED_ERRORS: &str = "spamwall_feed_errors_total";

/// Latency buckets: sub-millisecond answers from the cache up to the
/// request deadline.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 2.0, 10.0,
];
/// Lock wait buckets: a step of a walk over the bans (tens of
/// microseconds) up to a bulk ban's part (a good part of a second).
const LOCK_WAIT_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.025, 0.1,
    1.0,
];
/// Longest a scraper may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a scraper may take to read the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once. Prometheus scrapes one at a time per target.
pub const MAX_CLIENTS: usize = 16;
/// The answer to a scrape over [`MAX_CLIENTS`].
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("installing the metrics recorder: {0}")]
    Install(String),
    #[error("metrics listener {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Installs the process-wide recorder; returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(POLICY_LATENCY.to_owned()), &LATENCY_BUCKETS)
        .map_err(|e| MetricsError::Install(e.to_string()))?
        .set_buckets_for_metric(
            Matcher::Full(MANAGER_LOCK_WAIT.to_owned()),
            &LOCK_WAIT_BUCKETS,
        )
        .map_err(|e| MetricsError::Install(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError::Install(e.to_string()))
}

/// Binds the metrics listener.
pub async fn bind(addr: &str) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind {
            addr: addr.to_owned(),
            source,
        })
}

/// Serves `GET /metrics` until `shutdown` resolves, then closes every
/// connection. `refresh` runs before each render (on the blocking pool:
/// it may read kernel maps).
pub async fn serve<F>(
    listener: TcpListener,
    handle: PrometheusHandle,
    refresh: Arc<F>,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn() + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let accept_errors = LogLimit::new(WARN_INTERVAL);
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    while let Some((stream, _)) = next_connection(
        "metrics",
        &accept_errors,
        || listener.accept(),
        shutdown.as_mut(),
    )
    .await
    {
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            // A fresh socket's send buffer takes the short answer; written
            // straight to the non-blocking socket, it never waits.
            if let Ok(mut stream) = stream.into_std() {
                let _ = std::io::Write::write(&mut stream, BUSY);
            }
            debug!(
                max_clients = MAX_CLIENTS,
                "metrics scrape turned away: too many at once"
            );
            continue;
        };
        let handle = handle.clone();
        let refresh = Arc::clone(&refresh);
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            tokio::select! {
                scraped = scrape(stream, handle, refresh) => {
                    if let Err(error) = scraped {
                        debug!(%error, "metrics connection ended with an error");
                    }
                }
                _ = stopped.wait_for(|stop| *stop) => {}
            }
            drop(permit);
        });
    }
    let _ = stop.send(true);
}

async fn scrape<F>(
    mut stream: TcpStream,
    handle: PrometheusHandle,
    refresh: Arc<F>,
) -> std::io::Result<()>
where
    F: Fn() + Send + Sync + 'static,
{
    let mut request = Vec::with_capacity(512);
    let mut buf = [0_u8; 512];
    let read_head = async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read_head)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let (status, content_type, body) =
        if line.starts_with(b"GET /metrics ") || line.starts_with(b"GET / ") {
            let _ = tokio::task::spawn_blocking(move || refresh()).await;
            handle.run_upkeep();
            ("200 OK", "text/plain; version=0.0.4", handle.render())
        } else {
            (
                "404 Not Found",
                "text/plain",
                "spamwall serves GET /metrics\n".to_owned(),
            )
        };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, answer)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "writing the answer"))?
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    struct Running {
        addr: std::net::SocketAddr,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start() -> Running {
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // A recorder of its own: the process-wide one is the daemon's.
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, handle, Arc::new(|| {}), async {
            let _ = stopped.await;
        }));
        Running { addr, stop, task }
    }

    /// Sends `GET /metrics` and reads the whole answer (bounded).
    async fn scrape_text(addr: std::net::SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // Turned-away clients may find the connection closed before the
        // request is written; the answer is what counts.
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
        read_all(&mut stream).await
    }

    async fn read_all(stream: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("answered within 5 s");
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn scrapes_over_the_cap_get_503_at_once() {
        let server = start().await;
        assert!(
            scrape_text(server.addr)
                .await
                .starts_with("HTTP/1.1 200 OK")
        );
        // Connections that never send their request hold every place.
        let mut silent = Vec::new();
        for _ in 0..MAX_CLIENTS {
            silent.push(TcpStream::connect(server.addr).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = scrape_text(server.addr).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        drop(silent);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            scrape_text(server.addr)
                .await
                .starts_with("HTTP/1.1 200 OK")
        );
    }

    #[tokio::test]
    async fn shutdown_closes_silent_connections_at_once() {
        let server = start().await;
        let mut silent = Vec::new();
        for _ in 0..MAX_CLIENTS {
            silent.push(TcpStream::connect(server.addr).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.stop.send(()).expect("stop");
        // Well before REQUEST_TIMEOUT (5 s) would have closed them.
        tokio::time::timeout(Duration::from_secs(2), server.task)
            .await
            .expect("stopped within 2 s")
            .expect("serve");
        for stream in &mut silent {
            let mut byte = [0_u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte))
                .await
                .expect("closed within 2 s");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
    }
}
