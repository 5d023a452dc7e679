use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{Request, Response};

/// Longest answer line read; the daemon writes the bans of a list in lines
/// of about 256 KiB.
const MAX_ANSWER_LINE: u64 = 64 << 20;

/// Longest the daemon may stay silent, sending the request or answering
/// it: far above its slowest answer (a million bans ended at once takes
/// seconds), so a command never hangs on a daemon that is stopped or
/// stuck.
const ANSWER_TIMEOUT: Duration = Duration::from_mins(2);

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
    #[error(
        "the spamwall daemon at {path} did not answer within {} s (is it stopped or stuck? systemctl status spamwall)",
        after.as_secs_f64()
    )]
    Timeout { path: PathBuf, after: Duration },
}

/// Sends one request and waits for its answer.
pub fn request(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let mut answers = request_lines(socket, request)?;
    answers.next_answer()?.ok_or_else(|| ClientError::Protocol {
        path: socket.to_owned(),
        message: "connection closed without an answer".to_owned(),
    })
}

/// Sends one request whose answer may take several lines (a streamed
/// `list`); read them with [`Answers::next`].
pub fn request_lines(socket: &Path, request: &Request) -> Result<Answers, ClientError> {
    request_lines_within(socket, request, ANSWER_TIMEOUT)
}

/// [`request_lines`], the daemon silent for at most `timeout` at a time.
fn request_lines_within(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Answers, ClientError> {
    let io_error = |source| ClientError::Io {
        path: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.to_owned(),
        source,
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(io_error)?;
    let mut line = serde_json::to_vec(request).map_err(|e| io_error(io::Error::other(e)))?;
    line.push(b'\n');
    // A daemon that cannot serve us now answers with an error and closes
    // before reading: the write then fails, but the answer is there.
    let written = stream.write_all(&line).err();
    Ok(Answers {
        path: socket.to_owned(),
        reader: BufReader::new(stream),
        written,
        line: Vec::new(),
        timeout,
    })
}

/// The answer lines of one request, read one at a time.
#[derive(Debug)]
pub struct Answers {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    /// Why sending the request failed, told if no answer comes.
    written: Option<io::Error>,
    line: Vec<u8>,
    /// How long the daemon may stay silent.
    timeout: Duration,
}

impl Answers {
    /// The next answer; `None` when the daemon closed the connection after
    /// a whole line. A line cut short is an error.
    pub fn next_answer(&mut self) -> Result<Option<Response>, ClientError> {
        self.next_as()
    }

    /// [`Self::next_answer`] read as a client-side type `T`, for a client
    /// that wants members of an answer a newer daemon adds.
    pub fn next_as<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, ClientError> {
        self.line.clear();
        let read = (&mut self.reader)
            .take(MAX_ANSWER_LINE)
            .read_until(b'\n', &mut self.line);
        if self.line.is_empty() {
            if let Some(source) = self.written.take() {
                return Err(self.io(source));
            }
            read.map_err(|source| self.io(source))?;
            return Ok(None);
        }
        read.map_err(|source| self.io(source))?;
        if self.line.last() != Some(&b'\n') {
            let message = if self.line.len() as u64 >= MAX_ANSWER_LINE {
                format!("an answer line longer than {MAX_ANSWER_LINE} bytes")
            } else {
                "the connection closed in the middle of an answer".to_owned()
            };
            return Err(self.protocol(message));
        }
        serde_json::from_slice(&self.line)
            .map(Some)
            .map_err(|e| self.protocol(e.to_string()))
    }

    fn io(&self, source: io::Error) -> ClientError {
        // A read or write timeout shows as one of these two.
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return ClientError::Timeout {
                path: self.path.clone(),
                after: self.timeout,
            };
        }
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn protocol(&self, message: String) -> ClientError {
        ClientError::Protocol {
            path: self.path.clone(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A daemon that takes the request and never answers (stopped with
    /// SIGSTOP, or stuck): the command ends with a clear error.
    #[test]
    fn a_daemon_that_never_answers_is_an_error_after_the_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("control.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let silent = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            // Holds the connection open, reading nothing, answering nothing.
            std::thread::sleep(Duration::from_secs(2));
            drop(stream);
        });
        let timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let error = request_lines_within(&socket, &Request::Stats, timeout)
            .and_then(|mut answers| answers.next_answer())
            .expect_err("no answer");
        assert!(
            matches!(&error, ClientError::Timeout { after, .. } if *after == timeout),
            "{error:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "gave up in time"
        );
        assert!(
            error.to_string().contains("did not answer within 0.2 s"),
            "{error}"
        );
        silent.join().expect("silent peer");
    }
}
