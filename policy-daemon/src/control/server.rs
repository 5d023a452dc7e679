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
//! A list is written as it is read (`list.rs`).

use std::{
    fs, io,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader},
    net::{UnixListener, UnixStream},
    runtime::{Handle, RuntimeFlavor},
    sync::watch,
};
use tracing::{debug, warn};

pub use super::timed::CLIENT_TIMEOUT;
use super::{
    MAX_REQUEST_BYTES, Request, Response,
    list::{Reply, write_bans},
    timed::{timed_out, write_line},
};
use crate::listen::{
    BindError, Clients, LogLimit, Slot, WARN_INTERVAL, bind_unix, next_connection,
};

/// Control clients served at once.
pub const MAX_CLIENTS: usize = 64;

/// Binds the control socket with mode 0660.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    bind_unix(path, 0o660, "control socket")
}

/// Serves control requests until `shutdown` resolves, then removes the
/// socket file. `handler` may block (it takes the ban manager's lock and
/// touches the kernel and the store): see [`run_handler`]. Neither idle
/// clients nor a full house hold up accepting or shutdown.
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
    while let Some((stream, _)) = next_connection(
        "control",
        &accept_errors,
        || listener.accept(),
        shutdown.as_mut(),
    )
    .await
    {
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
                    (run_handler(&handler, request).await, streamed)
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

/// Runs `handler` for one request. On the multi-threaded runtime it runs
/// on the thread that read the request, which hands its other tasks to
/// another thread meanwhile (`block_in_place`): the request is read,
/// handled and answered by one thread, with no wake-up of another on the
/// way, each of which can cost an idle CPU's wake-up. Elsewhere (a
/// current-thread runtime, as in tests) it runs on the blocking pool. A
/// panicking handler is answered with an error either way.
async fn run_handler<H>(handler: &Arc<H>, request: Request) -> Reply
where
    H: Fn(Request) -> Reply + Send + Sync + 'static,
{
    let outcome = if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| {
            panic::catch_unwind(AssertUnwindSafe(|| handler(request)))
                .map_err(|_| "the handler panicked".to_owned())
        })
    } else {
        let handler = Arc::clone(handler);
        tokio::task::spawn_blocking(move || handler(request))
            .await
            .map_err(|error| error.to_string())
    };
    outcome.unwrap_or_else(|error| {
        Response::Error {
            message: format!("request failed: {error}"),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::PermissionsExt as _, time::Duration};

    use tokio::io::AsyncWriteExt as _;

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
        let path = serve_with(dir.path(), echo_status);
        let answer = answers(
            &path,
            b"{\"command\":\"explode\"}\n{\"command\":\"list\"}\n",
        )
        .await;
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

    /// A server on a fresh socket in `dir` with `handler`, never stopped.
    fn serve_with<H>(dir: &Path, handler: H) -> PathBuf
    where
        H: Fn(Request) -> Reply + Send + Sync + 'static,
    {
        let path = dir.join("control.sock");
        let listener = bind(&path).expect("bind");
        tokio::spawn(serve(
            listener,
            path.clone(),
            Arc::new(handler),
            std::future::pending(),
        ));
        path
    }

    /// Sends `requests` on one connection, closes its sending side and
    /// returns every answer, within 5 s.
    async fn answers(path: &Path, requests: &[u8]) -> String {
        let mut stream = UnixStream::connect(path).await.expect("connect");
        stream.write_all(requests).await.expect("write");
        stream.shutdown().await.expect("shutdown");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
            .await
            .expect("answered within 5 s")
            .expect("read");
        answer
    }

    /// One worker thread: a handler run on it must not stop it from
    /// accepting and serving another client.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_blocked_handler_holds_up_neither_accepting_nor_other_clients() {
        use std::sync::atomic::{AtomicBool, Ordering};

        let dir = tempfile::tempdir().expect("tempdir");
        let started = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let path = serve_with(dir.path(), {
            let (started, release) = (Arc::clone(&started), Arc::clone(&release));
            move |request| {
                if request == Request::Status {
                    started.store(true, Ordering::SeqCst);
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    while !release.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                echo_status(request)
            }
        });
        let blocked_path = path.clone();
        let blocked = tokio::task::spawn_blocking(move || request(&blocked_path, &Request::Status));
        tokio::time::timeout(Duration::from_secs(5), async {
            while !started.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the first request reached its handler within 5 s");
        let answer = ask_list(&path).await.expect("answer");
        assert_eq!(answer, Response::Bans { bans: Vec::new() });
        assert!(
            !release.load(Ordering::SeqCst) && !blocked.is_finished(),
            "the first request was still in its handler"
        );
        release.store(true, Ordering::SeqCst);
        let first = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("answered within 5 s once released")
            .expect("join")
            .expect("answer");
        assert!(
            matches!(&first, Response::Error { message } if message.contains("unexpected Status")),
            "{first:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_handler_is_answered_with_an_error_and_the_connection_stays_usable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = serve_with(dir.path(), |request| {
            assert!(request != Request::Status, "status is broken");
            echo_status(request)
        });
        let answer = answers(&path, b"{\"command\":\"status\"}\n{\"command\":\"list\"}\n").await;
        let lines: Vec<&str> = answer.lines().collect();
        assert_eq!(lines.len(), 2, "{answer}");
        assert!(lines[0].contains("request failed"), "{}", lines[0]);
        assert!(lines[1].contains("\"bans\""), "{}", lines[1]);
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
