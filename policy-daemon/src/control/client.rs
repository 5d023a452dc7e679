use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use super::{Request, Response};

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the spamwall daemon at {path}: {source} (is it running? is --socket or daemon.control_socket right?)"
    )]
    Connect { path: PathBuf, source: io::Error },
    #[error("talking to the spamwall daemon at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the spamwall daemon at {path} sent an unreadable answer: {message}")]
    Protocol { path: PathBuf, message: String },
}

/// Sends one request and waits for its answer.
pub fn request(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let io_error = |source| ClientError::Io {
        path: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_owned(),
        source,
    })?;
    let mut line = serde_json::to_vec(request).map_err(|e| io_error(io::Error::other(e)))?;
    line.push(b'\n');
    // A daemon that cannot serve us now answers with an error and closes
    // before reading: the write then fails, but the answer is there.
    let written = stream.write_all(&line);
    let mut answer = Vec::new();
    let read = BufReader::new(stream).read_until(b'\n', &mut answer);
    if answer.is_empty() {
        written.map_err(io_error)?;
        read.map_err(io_error)?;
        return Err(ClientError::Protocol {
            path: socket.to_owned(),
            message: "connection closed without an answer".to_owned(),
        });
    }
    serde_json::from_slice(&answer).map_err(|e| ClientError::Protocol {
        path: socket.to_owned(),
        message: e.to_string(),
    })
}
