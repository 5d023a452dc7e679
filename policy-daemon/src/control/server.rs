//! The control socket's server side: binding UNIX sockets safely and
//! serving one JSON request per line.
//!
//! At most [`MAX_CLIENTS`] clients are served at once. A client is idle
//! while the server waits for its next request; when one more connects at
//! the cap, the client idle the longest is closed to admit it, and when
//! every client has a request in progress the newcomer gets an error
//! answer at once. Reading a request and writing its answer each have
//! [`CLIENT_TIMEOUT`], and so does an idle client. Shutdown closes idle
//! clients at once; a request in progress finishes.
//!
//! A list is answered as it is read: one chunk of bans is read (on the
//! blocking pool) only once the previous one was written, so a slow reader
//! holds one chunk in the daemon, never the whole list, and each write of
//! it has [`CLIENT_TIMEOUT`]. A list still running at shutdown ends with an
//! error.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::watch,
};
use tracing::{debug, warn};

use super::{MAX_REQUEST_BYTES, Request, Response};
use crate::{
    bans::BanEntry,
    listen::{BindError, Clients, LogLimit, Slot, WARN_INTERVAL, accept_failed, bind_unix},
};

/// Control clients served at once.
pub const MAX_CLIENTS: usize = 64;

/// How long a client may stay idle, take to send a request, or take to
/// read its answer (of a list: each part of about 256 KiB). The CLI sends
/// its request at once and reads the answer as it comes; 30 s covers a
/// `ban --file` of millions of addresses.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Binds the control socket with mode 0660.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    bind_unix(path, 0o660, "control socket")
}

/// Serves control requests until `shutdown` resolves, then removes the
/// socket file. `handler` runs on the blocking pool: it may touch the
/// kernel. Neither idle clients nor a full house hold up accepting or
/// shutdown.
pub async fn serve<H>(
    listener: UnixListener,
    path: PathBuf,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request) -> Reply + Send + Sync + 'static,
{
    let clients = Clients::new(MAX_CLIENTS);
    let accept_errors = LogLimit::new(WARN_INTERVAL);
    let turned_away = LogLimit::new(WARN_INTERVAL);
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                let pause = accept_failed("control", &error, &accept_errors);
                if !pause.is_zero() {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                continue;
            }
        };
        let Some(admitted) = clients.admit() else {
            turn_away(stream);
            if let Some(held_back) = turned_away.check() {
                warn!(
                    max_clients = MAX_CLIENTS,
                    held_back, "control client turned away: every client has a request in progress"
                );
            }
            continue;
        };
        if admitted.closed_idle {
            debug!("control clients at the cap: closed the longest-idle one");
        }
        let handler = Arc::clone(&handler);
        let stopped = stopped.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(stream, handler, admitted.slot, stopped).await {
                debug!(%error, "control connection ended with an error");
            }
        });
    }
    let _ = stop.send(true);
    if let Err(error) = fs::remove_file(&path) {
        warn!(path = %path.display(), %error, "could not remove the control socket");
    }
}

/// Answers a client that cannot be served now with an error, without
/// waiting: a fresh socket's send buffer takes the short line (written
/// straight to the non-blocking socket, whatever the runtime knows of its
/// readiness), and if it does not, closing says enough.
fn turn_away(stream: UnixStream) {
    let response = Response::Error {
        message: format!(
            "the daemon is busy: {MAX_CLIENTS} control requests in progress; try again"
        ),
    };
    if let (Ok(mut text), Ok(mut stream)) = (serde_json::to_vec(&response), stream.into_std()) {
        text.push(b'\n');
        let _ = io::Write::write(&mut stream, &text);
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} took longer than {CLIENT_TIMEOUT:?}"),
    )
}

async fn connection<H>(
    stream: UnixStream,
    handler: Arc<H>,
    mut slot: Slot,
    mut stopped: watch::Receiver<bool>,
) -> io::Result<()>
where
    H: Fn(Request) -> Reply + Send + Sync + 'static,
{
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        slot.idle();
        if *stopped.borrow() {
            return Ok(());
        }
        let waiting = async { reader.fill_buf().await.map(<[u8]>::is_empty) };
        let ended = tokio::select! {
            ready = tokio::time::timeout(CLIENT_TIMEOUT, waiting) => match ready {
                Ok(ended) => ended?,
                Err(_) => return Err(timed_out("waiting for a request")),
            },
            _ = stopped.changed() => return Ok(()),
            () = slot.closed() => {
                debug!("idle control client closed to admit a new one");
                return Ok(());
            }
        };
        if ended || !slot.busy() {
            return Ok(());
        }
        let mut line = Vec::new();
        tokio::time::timeout(
            CLIENT_TIMEOUT,
            (&mut reader)
                .take(MAX_REQUEST_BYTES + 1)
                .read_until(b'\n', &mut line),
        )
        .await
        .map_err(|_| timed_out("reading a request"))??;
        let too_large = line.len() as u64 > MAX_REQUEST_BYTES;
        let (reply, streamed) = if too_large {
            let response = Response::Error {
                message: format!("request larger than {MAX_REQUEST_BYTES} bytes"),
            };
            (response.into(), false)
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(request) => {
                    let streamed = request.is_streamed();
                    let handler = Arc::clone(&handler);
                    let reply = tokio::task::spawn_blocking(move || handler(request))
                        .await
                        .unwrap_or_else(|e| {
                            Response::Error {
                                message: format!("request failed: {e}"),
                            }
                            .into()
                        });
                    (reply, streamed)
                }
                Err(error) => {
                    let response = Response::Error {
                        message: format!("malformed request: {error}"),
                    };
                    (response.into(), false)
                }
            }
        };
        match reply {
            Reply::Done(response) => write_line(&mut write, &response).await?,
            Reply::Bans(chunks) => write_bans(&mut write, chunks, streamed, &stopped).await?,
        }
        if too_large {
            return Ok(());
        }
    }
}

async fn write_line(
    write: &mut (impl tokio::io::AsyncWrite + Unpin),
    response: &Response,
) -> io::Result<()> {
    let mut text = serde_json::to_vec(response).map_err(io::Error::other)?;
    text.push(b'\n');
    write_timed(write, &text).await
}

async fn write_timed(
    write: &mut (impl tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
) -> io::Result<()> {
    tokio::time::timeout(CLIENT_TIMEOUT, write.write_all(bytes))
        .await
        .map_err(|_| timed_out("writing an answer"))?
}

/// Writes the bans of `chunks` as they are read: streamed, as
/// [`Response::BanChunk`] lines and a [`Response::ListEnd`] (or an
/// [`Response::Error`]); otherwise as one [`Response::Bans`] line, which an
/// error leaves unfinished, so that the client cannot take it for a
/// whole list.
async fn write_bans(
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
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::control::{ClientError, ListRequest, request};

    fn list() -> Request {
        Request::List(ListRequest::default())
    }

    fn echo_status(request: Request) -> Reply {
        match request {
            Request::List(_) => Response::Bans { bans: Vec::new() }.into(),
            other => Response::Error {
                message: format!("unexpected {other:?}"),
            }
            .into(),
        }
    }

    #[tokio::test]
    async fn serves_requests_and_removes_its_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/control.sock");
        let listener = bind(&path).expect("bind");
        let mode = fs::metadata(&path).expect("socket").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            path.clone(),
            Arc::new(echo_status),
            async {
                let _ = stopped.await;
            },
        ));
        let client_path = path.clone();
        let response = tokio::task::spawn_blocking(move || request(&client_path, &list()))
            .await
            .expect("join")
            .expect("request");
        assert_eq!(response, Response::Bans { bans: Vec::new() });

        // A second daemon must not steal a live socket.
        assert!(matches!(bind(&path), Err(BindError::InUse { .. })));

        stop.send(()).expect("stop");
        server.await.expect("server");
        assert!(!path.exists(), "socket removed on shutdown");
    }

    #[tokio::test]
    async fn malformed_request_gets_an_error_and_the_connection_stays_usable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        let listener = bind(&path).expect("bind");
        tokio::spawn(serve(
            listener,
            path.clone(),
            Arc::new(echo_status),
            std::future::pending(),
        ));
        let mut stream = UnixStream::connect(&path).await.expect("connect");
        stream
            .write_all(b"{\"command\":\"explode\"}\n{\"command\":\"list\"}\n")
            .await
            .expect("write");
        stream.shutdown().await.expect("shutdown");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        let lines: Vec<&str> = answer.lines().collect();
        assert_eq!(lines.len(), 2, "{answer}");
        assert!(
            lines[0].contains("malformed request") && lines[0].contains("explode"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("\"bans\""), "{}", lines[1]);
    }

    /// A server on a fresh socket in `dir`, stopped by the returned sender.
    fn start_server(
        dir: &Path,
    ) -> (
        PathBuf,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let path = dir.join("control.sock");
        let listener = bind(&path).expect("bind");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            path.clone(),
            Arc::new(echo_status),
            async {
                let _ = stopped.await;
            },
        ));
        (path, stop, server)
    }

    async fn ask_list(path: &Path) -> Result<Response, ClientError> {
        let path = path.to_owned();
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio::task::spawn_blocking(move || request(&path, &list())),
        )
        .await
        .expect("answered within 5 s")
        .expect("join")
    }

    #[tokio::test]
    async fn idle_clients_beyond_the_cap_cannot_lock_out_a_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _stop, _server) = start_server(dir.path());
        let mut idle = Vec::new();
        for _ in 0..MAX_CLIENTS + 36 {
            idle.push(UnixStream::connect(&path).await.expect("connect"));
        }
        let answer = ask_list(&path).await.expect("answer");
        assert_eq!(answer, Response::Bans { bans: Vec::new() });
        // The clients idle the longest were closed to make room.
        let mut first = [0_u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), idle[0].read(&mut first))
            .await
            .expect("closed within 5 s");
        assert_eq!(read.expect("read"), 0);
    }

    #[tokio::test]
    async fn a_full_house_turns_a_newcomer_away_with_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _stop, _server) = start_server(dir.path());
        let mut busy = Vec::new();
        for _ in 0..MAX_CLIENTS {
            let mut stream = UnixStream::connect(&path).await.expect("connect");
            // Half a request: busy until the line ends.
            stream.write_all(b"{\"command\":").await.expect("write");
            busy.push(stream);
        }
        // Every busy client has been seen before the newcomer arrives.
        tokio::time::sleep(Duration::from_millis(200)).await;
        match ask_list(&path).await {
            Ok(Response::Error { message }) => {
                assert!(message.contains("busy"), "{message}");
            }
            other => panic!("expected a busy error, got {other:?}"),
        }
        // One busy client finishes: its place frees once it is idle.
        busy[0].write_all(b"\"list\"}\n").await.expect("write");
        let mut answer = vec![0_u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), busy[0].read(&mut answer))
            .await
            .expect("answered within 5 s")
            .expect("read");
        assert!(answer[..read].starts_with(b"{\"result\":\"bans\""));
        let answer = ask_list(&path).await.expect("answer");
        assert_eq!(answer, Response::Bans { bans: Vec::new() });
    }

    #[tokio::test]
    async fn shutdown_is_not_held_up_by_idle_clients() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, stop, server) = start_server(dir.path());
        let mut idle = Vec::new();
        for _ in 0..100 {
            idle.push(UnixStream::connect(&path).await.expect("connect"));
        }
        // Every client accepted before the stop.
        assert!(matches!(ask_list(&path).await, Ok(Response::Bans { .. })));
        stop.send(()).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stopped within 5 s")
            .expect("server");
        assert!(!path.exists(), "socket removed");
        let last = idle.last_mut().expect("clients");
        let mut byte = [0_u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), last.read(&mut byte))
            .await
            .expect("idle client closed within 5 s");
        assert_eq!(read.expect("read"), 0);
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
            other => echo_status(other),
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

    #[test]
    fn stale_socket_is_replaced_and_other_files_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
        assert!(path.exists());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        runtime.block_on(async { bind(&path).expect("stale socket replaced") });

        let file = dir.path().join("not-a-socket");
        fs::write(&file, b"keep me").expect("file");
        runtime.block_on(async {
            assert!(matches!(bind(&file), Err(BindError::NotASocket { .. })));
        });
        assert_eq!(fs::read(&file).expect("kept"), b"keep me");
    }

    #[test]
    fn missing_daemon_is_reported_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("none.sock");
        let error = request(&path, &Request::Status).expect_err("no daemon");
        assert!(matches!(error, ClientError::Connect { .. }));
        assert!(error.to_string().contains("none.sock"), "{error}");
    }
}
