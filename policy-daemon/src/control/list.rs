//! A list of bans written as it is read: one chunk is read (on the
//! blocking pool) only once the previous one was written, so a slow
//! reader holds one chunk in the daemon, never the whole list, and each
//! write of it has [`CLIENT_TIMEOUT`](super::CLIENT_TIMEOUT). A list still
//! running at shutdown ends with an error.

use std::io;

use tokio::sync::watch;

use super::{
    Response,
    timed::{write_line, write_timed},
};
use crate::bans::BanEntry;

/// Bytes of bans written in one line at most (plus one ban): a reader
/// holds at most this much of a list at once.
const LIST_LINE_BYTES: usize = 256 << 10;

/// What a handler answers a request with.
pub enum Reply {
    /// One answer.
    Done(Response),
    /// Bans read a chunk at a time and written as they come, in the form the
    /// request asked for ([`Request::is_streamed`]).
    Bans(Box<dyn BanChunks>),
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Self::Done(response)
    }
}

/// A list of bans read a chunk at a time, each read on the blocking pool.
pub trait BanChunks: Send {
    /// The next bans, in order (possibly none), or `None` at the end; an
    /// error ends the list and reaches the client.
    fn next_chunk(&mut self) -> Result<Option<Vec<BanEntry>>, String>;
}

/// Writes the bans of `chunks` as they are read: streamed, as
/// [`Response::BanChunk`] lines and a [`Response::ListEnd`] (or an
/// [`Response::Error`]); otherwise as one [`Response::Bans`] line, which an
/// error leaves unfinished, so that the client cannot take it for a
/// whole list.
pub(super) async fn write_bans(
    write: &mut (impl tokio::io::AsyncWrite + Unpin),
    chunks: Box<dyn BanChunks>,
    streamed: bool,
    stopped: &watch::Receiver<bool>,
) -> io::Result<()> {
    let mut lines = BanLines::new(streamed);
    let mut chunks = Some(chunks);
    let failure = loop {
        if *stopped.borrow() {
            break "the daemon is shutting down".to_owned();
        }
        let Some(mut source) = chunks.take() else {
            break "the list was lost".to_owned();
        };
        let read = tokio::task::spawn_blocking(move || {
            let next = source.next_chunk();
            (source, next)
        })
        .await;
        let next = match read {
            Ok((source, next)) => {
                chunks = Some(source);
                next
            }
            Err(error) => Err(format!("listing failed: {error}")),
        };
        match next {
            Ok(Some(bans)) => {
                for ban in &bans {
                    if let Some(line) = lines.push(ban)? {
                        write_timed(write, &line).await?;
                    }
                }
            }
            Ok(None) => {
                return write_timed(write, &lines.finish()?).await;
            }
            Err(message) => break message,
        }
    };
    if !streamed {
        return Err(io::Error::other(format!("list cut short: {failure}")));
    }
    if let Some(line) = lines.flush() {
        write_timed(write, &line).await?;
    }
    write_line(write, &Response::Error { message: failure }).await
}

/// Bans framed as the answer lines of a list, at most about
/// [`LIST_LINE_BYTES`] written at a time.
struct BanLines {
    streamed: bool,
    buffer: Vec<u8>,
    /// Bans in `buffer` not yet written.
    pending: usize,
    listed: u64,
}

impl BanLines {
    const CHUNK_HEAD: &'static [u8] = br#"{"result":"ban_chunk","bans":["#;
    const BANS_HEAD: &'static [u8] = br#"{"result":"bans","bans":["#;

    fn new(streamed: bool) -> Self {
        let mut buffer = Vec::with_capacity(LIST_LINE_BYTES + 4096);
        if !streamed {
            buffer.extend_from_slice(Self::BANS_HEAD);
        }
        Self {
            streamed,
            buffer,
            pending: 0,
            listed: 0,
        }
    }

    /// Adds `ban`; returns bytes to write once enough have gathered.
    fn push(&mut self, ban: &BanEntry) -> io::Result<Option<Vec<u8>>> {
        if self.streamed && self.pending == 0 {
            self.buffer.extend_from_slice(Self::CHUNK_HEAD);
        } else if self.listed > 0 {
            self.buffer.push(b',');
        }
        serde_json::to_writer(&mut self.buffer, ban).map_err(io::Error::other)?;
        self.pending += 1;
        self.listed += 1;
        Ok((self.buffer.len() >= LIST_LINE_BYTES)
            .then(|| self.flush())
            .flatten())
    }

    /// The bans gathered so far; a streamed chunk's line is closed.
    fn flush(&mut self) -> Option<Vec<u8>> {
        if self.pending == 0 && self.buffer.is_empty() {
            return None;
        }
        if self.streamed && self.pending > 0 {
            self.buffer.extend_from_slice(b"]}\n");
        }
        self.pending = 0;
        Some(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(LIST_LINE_BYTES + 4096),
        ))
    }

    /// What is left to write, with the end of the list.
    fn finish(mut self) -> io::Result<Vec<u8>> {
        let mut rest = self.flush().unwrap_or_default();
        if self.streamed {
            let end = Response::ListEnd {
                listed: self.listed,
            };
            serde_json::to_writer(&mut rest, &end).map_err(io::Error::other)?;
            rest.push(b'\n');
        } else {
            rest.extend_from_slice(b"]}\n");
        }
        Ok(rest)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        path::{Path, PathBuf},
        sync::Arc,
        time::Duration,
    };

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::UnixStream,
    };

    use super::*;
    use crate::control::{ClientError, ListRequest, Request, bind, request, serve};

    fn list() -> Request {
        Request::List(ListRequest::default())
    }

    /// `chunks` chunks of `per_chunk` bans each (every third chunk empty),
    /// counting the chunks read; fails at chunk `fail_at`.
    struct Counted {
        read: Arc<std::sync::atomic::AtomicUsize>,
        chunks: usize,
        per_chunk: usize,
        fail_at: Option<usize>,
    }

    impl BanChunks for Counted {
        fn next_chunk(&mut self) -> Result<Option<Vec<BanEntry>>, String> {
            let n = self.read.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if Some(n) == self.fail_at {
                return Err("the store went away".to_owned());
            }
            if n >= self.chunks {
                return Ok(None);
            }
            let count = if n % 3 == 2 { 0 } else { self.per_chunk };
            Ok(Some(
                (0..count)
                    .map(|i| BanEntry {
                        addr: IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
                            u32::try_from(n * self.per_chunk + i).expect("small"),
                        ))),
                        expires_at: None,
                        source: crate::bans::Source::Cli,
                        reason: "x".repeat(100),
                        detail: String::new(),
                        count: 1,
                        ports: None,
                        packets: 0,
                        last_hit: None,
                    })
                    .collect(),
            ))
        }
    }

    use ipnet::IpNet;

    fn start_list_server(
        dir: &Path,
        chunks: usize,
        per_chunk: usize,
        fail_at: Option<usize>,
    ) -> (PathBuf, Arc<std::sync::atomic::AtomicUsize>) {
        let path = dir.join("control.sock");
        let listener = bind(&path).expect("bind");
        let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&read);
        let handler = move |request: Request| match request {
            Request::List(_) => Reply::Bans(Box::new(Counted {
                read: Arc::clone(&counter),
                chunks,
                per_chunk,
                fail_at,
            })),
            other => Response::Error {
                message: format!("unexpected {other:?}"),
            }
            .into(),
        };
        tokio::spawn(serve(
            listener,
            path.clone(),
            Arc::new(handler),
            std::future::pending(),
        ));
        (path, read)
    }

    fn streamed() -> Request {
        Request::List(ListRequest {
            stream: true,
            ..ListRequest::default()
        })
    }

    /// Every answer line of `request`, up to the last one (any but a chunk).
    async fn all_lines(path: &Path, request: Request) -> Vec<Result<Response, String>> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut answers = crate::control::request_lines(&path, &request).expect("send");
            let mut lines = Vec::new();
            loop {
                match answers.next_answer() {
                    Ok(Some(response)) => {
                        let more = matches!(response, Response::BanChunk { .. });
                        lines.push(Ok(response));
                        if !more {
                            return lines;
                        }
                    }
                    Ok(None) => return lines,
                    Err(error) => {
                        lines.push(Err(error.to_string()));
                        return lines;
                    }
                }
            }
        })
        .await
        .expect("join")
    }

    #[tokio::test]
    async fn a_streamed_list_comes_in_bounded_chunks_and_ends_with_its_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = start_list_server(dir.path(), 30, 1000, None);
        let lines = all_lines(&path, streamed()).await;
        let (last, chunks) = lines.split_last().expect("lines");
        let mut addrs = Vec::new();
        for line in chunks {
            let Ok(Response::BanChunk { bans }) = line else {
                panic!("not a chunk: {line:?}");
            };
            assert!(!bans.is_empty(), "an empty chunk line");
            let bytes = serde_json::to_vec(bans).expect("json").len();
            assert!(bytes <= LIST_LINE_BYTES + 1024, "a line of {bytes} bytes");
            addrs.extend(bans.iter().map(|ban| ban.addr));
        }
        assert_eq!(addrs.len(), 20 * 1000);
        assert!(addrs.windows(2).all(|pair| pair[0] < pair[1]), "in order");
        assert_eq!(last, &Ok(Response::ListEnd { listed: 20_000 }));
        // An empty list is an end at once.
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = start_list_server(dir.path(), 0, 1, None);
        assert_eq!(
            all_lines(&path, streamed()).await,
            [Ok(Response::ListEnd { listed: 0 })]
        );
    }

    #[tokio::test]
    async fn an_older_client_gets_the_whole_list_in_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = start_list_server(dir.path(), 10, 1000, None);
        let lines = all_lines(&path, list()).await;
        assert_eq!(lines.len(), 1, "one line");
        let Ok(Response::Bans { bans }) = &lines[0] else {
            panic!("{:?}", lines[0]);
        };
        assert_eq!(bans.len(), 7 * 1000);
        // And the same with nothing to list.
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = start_list_server(dir.path(), 0, 1, None);
        assert_eq!(
            all_lines(&path, list()).await,
            [Ok(Response::Bans { bans: Vec::new() })]
        );
    }

    #[tokio::test]
    async fn an_error_in_the_middle_of_a_list_reaches_the_client_as_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = start_list_server(dir.path(), 100, 1000, Some(4));
        let lines = all_lines(&path, streamed()).await;
        assert!(
            lines[..lines.len() - 1]
                .iter()
                .all(|line| matches!(line, Ok(Response::BanChunk { .. }))),
            "{lines:?}"
        );
        assert_eq!(
            lines.last(),
            Some(&Ok(Response::Error {
                message: "the store went away".to_owned()
            }))
        );
        // The one-line form is left unfinished: never a valid short list.
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = start_list_server(dir.path(), 100, 1000, Some(4));
        let path_for_request = path.clone();
        let answer = tokio::task::spawn_blocking(move || request(&path_for_request, &list()))
            .await
            .expect("join");
        match answer {
            Err(ClientError::Protocol { message, .. }) => {
                assert!(message.contains("closed in the middle"), "{message}");
            }
            other => panic!("expected a broken answer, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_reader_that_does_not_read_holds_the_list_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        // About 13 MB of bans in all.
        let (path, read) = start_list_server(dir.path(), 1500, 100, None);
        let mut stream = UnixStream::connect(&path).await.expect("connect");
        let mut line = serde_json::to_vec(&streamed()).expect("json");
        line.push(b'\n');
        stream.write_all(&line).await.expect("write");
        stream.shutdown().await.expect("shutdown");
        // Wait until the daemon stops reading chunks: the socket is full.
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = read.load(std::sync::atomic::Ordering::SeqCst);
            if now == last {
                break;
            }
            last = now;
        }
        assert!(last < 200, "{last} of 1500 chunks read with nobody reading");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.expect("read");
        let end = rest
            .split(|byte| *byte == b'\n')
            .rfind(|line| !line.is_empty())
            .expect("lines");
        assert_eq!(end, br#"{"result":"list_end","listed":100000}"#);
    }
}
