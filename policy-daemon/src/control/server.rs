use std::{
    fs, io,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};
use tracing::{debug, warn};

use super::{MAX_REQUEST_BYTES, Request, Response};

/// Concurrent control connections; more wait for a slot.
const MAX_CONNECTIONS: usize = 32;

/// Why a UNIX socket (the control socket, a policy listener) could not be
/// opened. `role` names it, e.g. "control socket".
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{role} {path}: another process is already listening there")]
    InUse { role: &'static str, path: PathBuf },
    #[error("{role} {path} exists and is not a socket; remove it or change the configuration")]
    NotASocket { role: &'static str, path: PathBuf },
    #[error("{role} {path}: {operation}: {source}")]
    Io {
        role: &'static str,
        path: PathBuf,
        operation: &'static str,
        source: io::Error,
    },
}

/// Binds the control socket with mode 0660.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    bind_unix(path, 0o660, "control socket")
}

/// Binds a UNIX stream socket with `mode`. A socket file left by a dead
/// process is removed; a live one is never taken over, and a file that is
/// not a socket is left alone.
pub fn bind_unix(path: &Path, mode: u32, role: &'static str) -> Result<UnixListener, BindError> {
    let io_error = |operation| {
        move |source| BindError::Io {
            role,
            path: path.to_owned(),
            operation,
            source,
        }
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_error("creating its directory"))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotASocket {
                role,
                path: path.to_owned(),
            });
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(BindError::InUse {
                    role,
                    path: path.to_owned(),
                });
            }
            Err(_) => fs::remove_file(path).map_err(io_error("removing the stale socket"))?,
        },
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_error("inspecting")(source)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_error("binding"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_error("setting its mode"))?;
    listener
        .set_nonblocking(true)
        .map_err(io_error("setting non-blocking"))?;
    UnixListener::from_std(listener).map_err(io_error("registering with the runtime"))
}

/// Serves control requests until `shutdown` resolves, then removes the
/// socket file. `handler` runs on the blocking pool: it may touch the kernel.
pub async fn serve<H>(
    listener: UnixListener,
    path: PathBuf,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request) -> Response + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { break };
                    let handler = Arc::clone(&handler);
                    tokio::spawn(async move {
                        if let Err(error) = connection(stream, handler).await {
                            debug!(%error, "control connection ended with an error");
                        }
                        drop(permit);
                    });
                }
                Err(error) => warn!(%error, "accepting a control connection failed"),
            },
        }
    }
    if let Err(error) = fs::remove_file(&path) {
        warn!(path = %path.display(), %error, "could not remove the control socket");
    }
}

async fn connection<H>(stream: UnixStream, handler: Arc<H>) -> io::Result<()>
where
    H: Fn(Request) -> Response + Send + Sync + 'static,
{
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_REQUEST_BYTES + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Ok(());
        }
        let response = if line.len() as u64 > MAX_REQUEST_BYTES {
            Response::Error {
                message: format!("request larger than {MAX_REQUEST_BYTES} bytes"),
            }
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(request) => {
                    let handler = Arc::clone(&handler);
                    tokio::task::spawn_blocking(move || handler(request))
                        .await
                        .unwrap_or_else(|e| Response::Error {
                            message: format!("request failed: {e}"),
                        })
                }
                Err(error) => Response::Error {
                    message: format!("malformed request: {error}"),
                },
            }
        };
        let mut text = serde_json::to_vec(&response).map_err(io::Error::other)?;
        text.push(b'\n');
        write.write_all(&text).await?;
        if matches!(response, Response::Error { .. }) && line.len() as u64 > MAX_REQUEST_BYTES {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{ClientError, request};

    fn echo_status(request: Request) -> Response {
        match request {
            Request::List => Response::Bans { bans: Vec::new() },
            other => Response::Error {
                message: format!("unexpected {other:?}"),
            },
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
        let response = tokio::task::spawn_blocking(move || request(&client_path, &Request::List))
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
