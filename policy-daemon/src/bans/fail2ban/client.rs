//! A blocking client for fail2ban's control socket.
//!
//! One persistent connection, opened on first use. Every reply is read and
//! checked: `(0, result)` is success, `(1, exception)` becomes an error
//! naming the exception, and anything else is an error too. A connection
//! that went stale (fail2ban restarted: `EPIPE`, `ECONNRESET` or EOF on
//! first use) is reopened and the command sent once more; the commands
//! here are idempotent, so a command that reached fail2ban before its
//! reply was lost is harmless to repeat.

use std::{
    fmt::Write as _,
    io::{self, Read, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::{Duration, Instant},
};

use ipnet::IpNet;

use super::pickle::{self, PickleError, Value};
use crate::bans::target_to_string;

/// Ends every request and every reply.
pub const END_MARKER: &[u8] = b"<F2B_END_COMMAND>";
/// Asks fail2ban to close the connection (it sends no reply).
pub const CLOSE_COMMAND: &[u8] = b"<F2B_CLOSE_COMMAND>";
/// Longest reply accepted: a `banned` list of about 800,000 addresses.
pub const MAX_REPLY_BYTES: usize = 16 << 20;

/// Commands longer than this many arguments are shown shortened in errors.
const SHOWN_ARGS: usize = 6;
/// Longest rendering of an unexpected reply in an error.
const SHOWN_REPLY: usize = 200;

/// What went wrong talking to fail2ban. Every variant names the socket;
/// those about a command name it as sent (`set spamwall banip 192.0.2.7`).
#[derive(Debug, thiserror::Error)]
pub enum Fail2banError {
    #[error("fail2ban socket {}: cannot connect: {source}{}", socket.display(), connect_hint(source))]
    Connect { socket: PathBuf, source: io::Error },
    #[error("fail2ban socket {}: `{operation}`: {source}", socket.display())]
    Io {
        socket: PathBuf,
        operation: String,
        source: io::Error,
    },
    #[error("fail2ban socket {}: `{operation}`: no complete reply within {timeout:?}", socket.display())]
    Timeout {
        socket: PathBuf,
        operation: String,
        timeout: Duration,
    },
    #[error("fail2ban socket {}: `{operation}`: fail2ban closed the connection", socket.display())]
    Closed { socket: PathBuf, operation: String },
    #[error("fail2ban socket {}: `{operation}`: reply larger than {limit} bytes", socket.display())]
    ReplyTooLarge {
        socket: PathBuf,
        operation: String,
        limit: usize,
    },
    #[error("fail2ban socket {}: `{operation}`: undecodable reply: {source}", socket.display())]
    Decode {
        socket: PathBuf,
        operation: String,
        source: PickleError,
    },
    #[error(
        "fail2ban at {} has no jail {jail:?} (`{operation}`): define it in fail2ban's jail.local or fix [fail2ban] jail",
        socket.display()
    )]
    UnknownJail {
        socket: PathBuf,
        jail: String,
        operation: String,
    },
    #[error("fail2ban socket {}: `{operation}` refused: {exception}: {message}", socket.display())]
    Refused {
        socket: PathBuf,
        operation: String,
        /// The Python exception class, e.g. `ValueError`.
        exception: String,
        message: String,
    },
    /// fail2ban could not even read the command and answered with a bare
    /// string (`ERROR: …`).
    #[error("fail2ban socket {}: `{operation}`: fail2ban answered {message:?}", socket.display())]
    ServerError {
        socket: PathBuf,
        operation: String,
        message: String,
    },
    #[error("fail2ban socket {}: `{operation}`: unexpected reply {reply}", socket.display())]
    UnexpectedReply {
        socket: PathBuf,
        operation: String,
        reply: String,
    },
    #[error("fail2ban socket {}: argument {argument:?} cannot be sent (empty, too long or containing a protocol marker)", socket.display())]
    InvalidArgument { socket: PathBuf, argument: String },
}

impl Fail2banError {
    /// Whether fail2ban understood the command and refused it, so sending
    /// the same command again cannot succeed. An unknown jail is not such
    /// a refusal: it is fixed by configuring the jail.
    pub fn refuses_command(&self) -> bool {
        matches!(
            self,
            Self::Refused { .. } | Self::ServerError { .. } | Self::InvalidArgument { .. }
        )
    }

    /// Whether the connection is unusable after this error.
    fn breaks_connection(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::Io { .. }
                | Self::Timeout { .. }
                | Self::Closed { .. }
                | Self::ReplyTooLarge { .. }
                | Self::Decode { .. }
        )
    }

    /// Whether a reused connection was found dead before fail2ban could
    /// have answered: worth one immediate reconnect.
    fn is_stale_connection(&self) -> bool {
        match self {
            Self::Closed { .. } => true,
            Self::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::NotConnected
            ),
            _ => false,
        }
    }
}

fn connect_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            " (is fail2ban-server running?)"
        }
        io::ErrorKind::PermissionDenied => {
            " (fail2ban's socket is root-only; run spamwall with access to it)"
        }
        _ => "",
    }
}

#[cfg(any(test, feature = "test-support"))]
/// The answer to a ban.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanOutcome {
    /// fail2ban banned the target now.
    Banned,
    /// The target was already banned in the jail.
    AlreadyBanned,
}

#[cfg(any(test, feature = "test-support"))]
/// The answer to an unban.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnbanOutcome {
    /// fail2ban lifted the ban now.
    Unbanned,
    /// The target was not banned in the jail.
    NotBanned,
}

#[cfg(any(test, feature = "test-support"))]
/// A jail's `status`, as `fail2ban-client status <jail>` prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JailStatus {
    pub currently_failed: u64,
    pub total_failed: u64,
    pub currently_banned: u64,
    pub total_banned: u64,
    /// Banned entries as fail2ban lists them: addresses and CIDR prefixes,
    /// or any other text someone passed to a manual `banip`.
    pub banned: Vec<String>,
}

/// A connection to fail2ban's control socket, opened on first use and
/// reopened after failures.
#[derive(Debug)]
pub struct Fail2banClient {
    socket: PathBuf,
    timeout: Duration,
    stream: Option<UnixStream>,
}

impl Fail2banClient {
    /// A client for `socket`; no I/O happens until the first command.
    /// `timeout` bounds each write and each complete reply.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            socket: socket.into(),
            timeout,
            stream: None,
        }
    }

    #[cfg(any(test, feature = "test-support"))]
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Whether a connection is open (it may still turn out stale).
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// Opens a new connection now, closing any previous one.
    pub fn connect(&mut self) -> Result<(), Fail2banError> {
        self.disconnect();
        let connect_error = |source| Fail2banError::Connect {
            socket: self.socket.clone(),
            source,
        };
        let stream = UnixStream::connect(&self.socket).map_err(connect_error)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(connect_error)?;
        self.stream = Some(stream);
        Ok(())
    }

    /// Closes the connection politely (fail2ban sends no reply to that).
    pub fn disconnect(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            // Best effort: the connection is going away either way.
            let _ = stream.write_all(&[CLOSE_COMMAND, END_MARKER].concat());
        }
    }

    #[cfg(any(test, feature = "test-support"))]
    /// `ping` → `pong`.
    pub fn ping(&mut self) -> Result<(), Fail2banError> {
        let args = ["ping"];
        let reply = self.command(&args)?;
        match reply.as_str() {
            Some("pong") => Ok(()),
            _ => Err(self.unexpected(&args, &reply)),
        }
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Bans `target` (an address or a CIDR prefix) in `jail`.
    pub fn ban(
        &mut self,
        jail: &str,
        target: impl Into<IpNet>,
    ) -> Result<BanOutcome, Fail2banError> {
        let text = target_to_string(&target.into());
        let args = ["set", jail, "banip", &text];
        match self.count_reply(&args)? {
            0 => Ok(BanOutcome::AlreadyBanned),
            _ => Ok(BanOutcome::Banned),
        }
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Lifts the ban on `target` in `jail`.
    pub fn unban(
        &mut self,
        jail: &str,
        target: impl Into<IpNet>,
    ) -> Result<UnbanOutcome, Fail2banError> {
        let text = target_to_string(&target.into());
        let args = ["set", jail, "unbanip", &text];
        match self.count_reply(&args)? {
            0 => Ok(UnbanOutcome::NotBanned),
            _ => Ok(UnbanOutcome::Unbanned),
        }
    }

    /// Bans every target in one command; returns how many were not banned
    /// before. An empty slice sends nothing.
    pub fn ban_many(&mut self, jail: &str, targets: &[IpNet]) -> Result<u64, Fail2banError> {
        self.many(jail, "banip", targets)
    }

    /// Lifts the ban on every target in one command; returns how many were
    /// banned.
    pub fn unban_many(&mut self, jail: &str, targets: &[IpNet]) -> Result<u64, Fail2banError> {
        self.many(jail, "unbanip", targets)
    }

    /// Whether `target` is banned in `jail` (exact match: an address inside
    /// a banned prefix is not reported).
    pub fn is_banned(
        &mut self,
        jail: &str,
        target: impl Into<IpNet>,
    ) -> Result<bool, Fail2banError> {
        let text = target_to_string(&target.into());
        Ok(self.count_reply(&["get", jail, "banned", &text])? != 0)
    }

    /// Everything banned in `jail`, as fail2ban lists it.
    pub fn banned(&mut self, jail: &str) -> Result<Vec<String>, Fail2banError> {
        let args = ["get", jail, "banned"];
        let reply = self.command(&args)?;
        strings(&reply).ok_or_else(|| self.unexpected(&args, &reply))
    }

    #[cfg(any(test, feature = "test-support"))]
    /// The jail's counters and banned list.
    pub fn status(&mut self, jail: &str) -> Result<JailStatus, Fail2banError> {
        let args = ["status", jail];
        let reply = self.command(&args)?;
        parse_status(&reply).ok_or_else(|| self.unexpected(&args, &reply))
    }

    /// Checks that fail2ban answers and `jail` exists, cheaply.
    pub fn check_jail(&mut self, jail: &str) -> Result<(), Fail2banError> {
        self.command(&["get", jail, "bantime"]).map(drop)
    }

    /// Sends one command and returns the result of a `(0, result)` reply.
    pub fn command(&mut self, args: &[&str]) -> Result<Value, Fail2banError> {
        if let Some(bad) = args.iter().find(|a| a.is_empty() || contains_marker(a)) {
            return Err(Fail2banError::InvalidArgument {
                socket: self.socket.clone(),
                argument: (*bad).to_owned(),
            });
        }
        let mut request =
            pickle::encode_command(args).ok_or_else(|| Fail2banError::InvalidArgument {
                socket: self.socket.clone(),
                argument: args
                    .iter()
                    .find(|a| u32::try_from(a.len()).is_err())
                    .map(|a| format!("{}…", a.chars().take(20).collect::<String>()))
                    .unwrap_or_default(),
            })?;
        request.extend_from_slice(END_MARKER);
        let reused = self.stream.is_some();
        let reply = match self.exchange(&request, args) {
            Err(error) if reused && error.is_stale_connection() => {
                tracing::debug!("{error}; reconnecting");
                self.exchange(&request, args)
            }
            other => other,
        }?;
        self.interpret(args, reply)
    }

    /// One request/reply on the current connection (opened if needed); any
    /// failure that leaves the stream unusable closes it.
    fn exchange(&mut self, request: &[u8], args: &[&str]) -> Result<Value, Fail2banError> {
        if self.stream.is_none() {
            self.connect()?;
        }
        let result = self.send_and_receive(request, args);
        if result.as_ref().is_err_and(Fail2banError::breaks_connection) {
            self.stream = None;
        }
        result
    }

    fn send_and_receive(&mut self, request: &[u8], args: &[&str]) -> Result<Value, Fail2banError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.closed(args));
        };
        if let Err(source) = stream.write_all(request) {
            return Err(self.io_error(args, source));
        }
        let deadline = Instant::now() + self.timeout;
        let mut reply = Vec::new();
        let mut chunk = vec![0; 64 * 1024];
        loop {
            let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
            else {
                return Err(self.timed_out(args));
            };
            let Some(stream) = self.stream.as_mut() else {
                return Err(self.closed(args));
            };
            if let Err(source) = stream.set_read_timeout(Some(left)) {
                return Err(self.io_error(args, source));
            }
            let read = match stream.read(&mut chunk) {
                Ok(0) => return Err(self.closed(args)),
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(self.timed_out(args));
                }
                Err(source) => return Err(self.io_error(args, source)),
            };
            reply.extend_from_slice(&chunk[..read]);
            if reply.len() > MAX_REPLY_BYTES + END_MARKER.len() {
                return Err(Fail2banError::ReplyTooLarge {
                    socket: self.socket.clone(),
                    operation: describe(args),
                    limit: MAX_REPLY_BYTES,
                });
            }
            let Some(body) = reply.strip_suffix(END_MARKER) else {
                continue;
            };
            match pickle::decode(body) {
                // The marker was inside a string and the pickle goes on.
                Err(PickleError::Truncated { .. }) => {}
                Ok(value) => return Ok(value),
                Err(source) => {
                    return Err(Fail2banError::Decode {
                        socket: self.socket.clone(),
                        operation: describe(args),
                        source,
                    });
                }
            }
        }
    }

    fn interpret(&self, args: &[&str], reply: Value) -> Result<Value, Fail2banError> {
        let mut items = match reply {
            Value::Tuple(items) => items,
            Value::Str(message) => {
                return Err(Fail2banError::ServerError {
                    socket: self.socket.clone(),
                    operation: describe(args),
                    message,
                });
            }
            other => return Err(self.unexpected(args, &other)),
        };
        let code = match items.as_slice() {
            [code, _] => code.as_int(),
            _ => None,
        };
        match code {
            Some(0) => Ok(items.swap_remove(1)),
            Some(1) => Err(self.exception(args, &items[1])),
            _ => Err(self.unexpected(args, &Value::Tuple(items))),
        }
    }

    fn exception(&self, args: &[&str], exception: &Value) -> Fail2banError {
        let Value::Object(object) = exception else {
            return self.unexpected(args, exception);
        };
        let message = match object.args.as_slice() {
            [Value::Str(text)] => text.clone(),
            other => other
                .iter()
                .map(|arg| arg.summary(SHOWN_REPLY))
                .collect::<Vec<_>>()
                .join(", "),
        };
        if object.class == "UnknownJailException" {
            // fail2ban names the jail in the exception; fall back to ours.
            let jail = if message.is_empty() {
                args.get(1).copied().unwrap_or_default().to_owned()
            } else {
                message
            };
            return Fail2banError::UnknownJail {
                socket: self.socket.clone(),
                jail,
                operation: describe(args),
            };
        }
        Fail2banError::Refused {
            socket: self.socket.clone(),
            operation: describe(args),
            exception: object.class.clone(),
            message,
        }
    }

    /// A command whose result is a count: `banip`, `unbanip`, `banned IP`.
    fn count_reply(&mut self, args: &[&str]) -> Result<u64, Fail2banError> {
        let reply = self.command(args)?;
        reply
            .as_int()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| self.unexpected(args, &reply))
    }

    fn many(&mut self, jail: &str, keyword: &str, targets: &[IpNet]) -> Result<u64, Fail2banError> {
        if targets.is_empty() {
            return Ok(0);
        }
        let texts: Vec<String> = targets.iter().map(target_to_string).collect();
        let mut args = vec!["set", jail, keyword];
        args.extend(texts.iter().map(String::as_str));
        self.count_reply(&args)
    }

    fn unexpected(&self, args: &[&str], reply: &Value) -> Fail2banError {
        Fail2banError::UnexpectedReply {
            socket: self.socket.clone(),
            operation: describe(args),
            reply: reply.summary(SHOWN_REPLY),
        }
    }

    fn io_error(&self, args: &[&str], source: io::Error) -> Fail2banError {
        Fail2banError::Io {
            socket: self.socket.clone(),
            operation: describe(args),
            source,
        }
    }

    fn closed(&self, args: &[&str]) -> Fail2banError {
        Fail2banError::Closed {
            socket: self.socket.clone(),
            operation: describe(args),
        }
    }

    fn timed_out(&self, args: &[&str]) -> Fail2banError {
        Fail2banError::Timeout {
            socket: self.socket.clone(),
            operation: describe(args),
            timeout: self.timeout,
        }
    }
}

impl Drop for Fail2banClient {
    fn drop(&mut self) {
        self.disconnect();
    }
}

fn contains_marker(arg: &str) -> bool {
    [END_MARKER, CLOSE_COMMAND]
        .iter()
        .any(|marker| arg.as_bytes().windows(marker.len()).any(|w| w == *marker))
}

/// A command as a person would type it, shortened after a few arguments:
/// `set spamwall banip 192.0.2.1 192.0.2.2 192.0.2.3 … (+61 more)`.
fn describe(args: &[&str]) -> String {
    let mut text = args
        .iter()
        .take(SHOWN_ARGS)
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    if args.len() > SHOWN_ARGS {
        // Writing to a String cannot fail.
        let _ = write!(text, " … (+{} more)", args.len() - SHOWN_ARGS);
    }
    text
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value
        .as_seq()?
        .iter()
        .map(|item| item.as_str().map(str::to_owned))
        .collect()
}

#[cfg(any(test, feature = "test-support"))]
/// `[('Filter', [(name, value), …]), ('Actions', [(name, value), …])]`.
fn parse_status(value: &Value) -> Option<JailStatus> {
    let mut status = JailStatus::default();
    let mut seen_list = false;
    for section in value.as_seq()? {
        let [_, entries] = section.as_seq()? else {
            return None;
        };
        for entry in entries.as_seq()? {
            let [name, value] = entry.as_seq()? else {
                return None;
            };
            let count = || value.as_int().and_then(|n| u64::try_from(n).ok());
            match name.as_str()? {
                "Currently failed" => status.currently_failed = count()?,
                "Total failed" => status.total_failed = count()?,
                "Currently banned" => status.currently_banned = count()?,
                "Total banned" => status.total_banned = count()?,
                "Banned IP list" => {
                    status.banned = strings(value)?;
                    seen_list = true;
                }
                _ => {}
            }
        }
    }
    seen_list.then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reply_parses() {
        let reply = pickle::decode(include_bytes!("testdata/status.pickle")).expect("decode");
        let client = Fail2banClient::new("/nonexistent", Duration::from_secs(1));
        let result = client
            .interpret(&["status", "spamwall"], reply)
            .expect("ok");
        let status = parse_status(&result).expect("status shape");
        assert_eq!(
            status,
            JailStatus {
                currently_failed: 0,
                total_failed: 0,
                currently_banned: 3,
                total_banned: 3,
                banned: vec![
                    "192.0.2.7".into(),
                    "2001:db8::7".into(),
                    "198.51.100.9".into()
                ],
            }
        );
    }

    #[test]
    fn exceptions_become_errors_naming_socket_jail_and_command() {
        let client = Fail2banClient::new("/run/f2b.sock", Duration::from_secs(1));
        let args = ["set", "nojail", "banip", "192.0.2.7"];
        let reply = pickle::decode(include_bytes!("testdata/unknown_jail.pickle")).expect("decode");
        let error = client.interpret(&args, reply).expect_err("unknown jail");
        assert!(
            matches!(&error, Fail2banError::UnknownJail { jail, .. } if jail == "nojail"),
            "{error:?}"
        );
        let text = error.to_string();
        for needle in ["/run/f2b.sock", "\"nojail\"", "set nojail banip 192.0.2.7"] {
            assert!(text.contains(needle), "{text:?} lacks {needle:?}");
        }
        assert!(!error.refuses_command());

        let reply =
            pickle::decode(include_bytes!("testdata/invalid_command.pickle")).expect("decode");
        let error = client.interpret(&["bogus"], reply).expect_err("refused");
        assert_eq!(
            error.to_string(),
            "fail2ban socket /run/f2b.sock: `bogus` refused: Exception: Invalid command"
        );
        assert!(error.refuses_command());

        let reply = pickle::decode(include_bytes!("testdata/unpicklable.pickle")).expect("decode");
        let error = client.interpret(&["x"], reply).expect_err("bare string");
        assert!(error.refuses_command(), "{error}");
        assert!(
            error
                .to_string()
                .contains("ERROR: pickle data was truncated")
        );
    }

    #[test]
    fn counts_and_pong_are_results() {
        let client = Fail2banClient::new("/s", Duration::from_secs(1));
        for (bytes, expected) in [
            (
                &include_bytes!("testdata/banip_new.pickle")[..],
                Value::Int(1),
            ),
            (
                &include_bytes!("testdata/banip_again.pickle")[..],
                Value::Int(0),
            ),
            (
                &include_bytes!("testdata/banip_many.pickle")[..],
                Value::Int(1500),
            ),
            (
                &include_bytes!("testdata/ping.pickle")[..],
                Value::Str("pong".into()),
            ),
        ] {
            let reply = pickle::decode(bytes).expect("decode");
            assert_eq!(client.interpret(&["x"], reply).expect("ok"), expected);
        }
    }

    #[test]
    fn only_real_strings_are_banned_entries() {
        // (0, [builtins.str('192.0.2.7'), os.system('192.0.2.8')]): the
        // lookalike is neither called nor taken for an address.
        let reply = pickle::decode(
            b"\x80\x02K\x00](cbuiltins\nstr\nX\x09\x00\x00\x00192.0.2.7\x85R\
              cos\nsystem\nX\x09\x00\x00\x00192.0.2.8\x85Re\x86.",
        )
        .expect("decode");
        let client = Fail2banClient::new("/s", Duration::from_secs(1));
        let result = client
            .interpret(&["get", "spamwall", "banned"], reply)
            .expect("ok");
        assert_eq!(strings(&result), None);
        let error = client.unexpected(&["get", "spamwall", "banned"], &result);
        assert!(
            error.to_string().contains("system(\"192.0.2.8\")"),
            "{error}"
        );
    }

    #[test]
    fn long_commands_are_shortened_in_messages() {
        let args: Vec<String> = (0..70).map(|i| format!("192.0.2.{i}")).collect();
        let mut all = vec!["set", "spamwall", "banip"];
        all.extend(args.iter().map(String::as_str));
        assert_eq!(
            describe(&all),
            "set spamwall banip 192.0.2.0 192.0.2.1 192.0.2.2 … (+67 more)"
        );
    }

    #[test]
    fn arguments_with_markers_are_refused_before_sending() {
        let mut client = Fail2banClient::new("/nonexistent/sock", Duration::from_secs(1));
        for bad in ["", "a<F2B_END_COMMAND>", "<F2B_CLOSE_COMMAND>"] {
            let error = client.command(&["set", bad]).expect_err(bad);
            assert!(
                matches!(error, Fail2banError::InvalidArgument { .. }),
                "{error:?}"
            );
        }
        let error = client.ping().expect_err("no server");
        assert!(matches!(error, Fail2banError::Connect { .. }), "{error:?}");
        assert!(error.to_string().contains("/nonexistent/sock"), "{error}");
        assert!(
            error.to_string().contains("is fail2ban-server running?"),
            "{error}"
        );
    }
}
