//! One policy request, as Postfix sends it, and its answer: the client of
//! `spamwall query` and of the tests.

use std::{
    io::{self, BufRead as _, BufReader},
    net::TcpStream,
    os::unix::net::UnixStream,
    time::Duration,
};

use super::config::ListenAddr;

/// Why a query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot connect to the policy server at {addr}: {source}")]
    Connect { addr: ListenAddr, source: io::Error },
    #[error("talking to the policy server at {addr}: {source}")]
    Io { addr: ListenAddr, source: io::Error },
    #[error("the policy server at {addr} {message}")]
    Protocol { addr: ListenAddr, message: String },
}

/// Parses `name=value` lines (stdin of `spamwall query`); stops at the
/// first empty line. Blank input gives no attributes.
pub fn parse_attributes(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut attributes = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        attributes.push(parse_attribute(line).map_err(|e| format!("line {}: {e}", number + 1))?);
    }
    Ok(attributes)
}

/// Parses one `name=value`.
pub fn parse_attribute(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.contains('\n') => {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err(format!("{text:?} is not name=value")),
    }
}

/// Sends one request to `addr` and returns the answer's first line,
/// `action=…`. `request=smtpd_access_policy` is added when missing.
pub fn query(
    addr: &ListenAddr,
    attributes: &[(String, String)],
    timeout: Duration,
) -> Result<String, QueryError> {
    let mut text = String::new();
    if !attributes.iter().any(|(name, _)| name == "request") {
        text.push_str("request=smtpd_access_policy\n");
    }
    for (name, value) in attributes {
        text.push_str(name);
        text.push('=');
        text.push_str(value);
        text.push('\n');
    }
    text.push('\n');
    let connect_error = |source| QueryError::Connect {
        addr: addr.clone(),
        source,
    };
    let io_error = |source| QueryError::Io {
        addr: addr.clone(),
        source,
    };
    let answer = match addr {
        ListenAddr::Tcp(socket) => {
            let stream = TcpStream::connect_timeout(socket, timeout).map_err(connect_error)?;
            stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
            exchange(stream, &text).map_err(io_error)?
        }
        ListenAddr::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(connect_error)?;
            stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
            exchange(stream, &text).map_err(io_error)?
        }
    };
    let Some(first) = answer.first() else {
        return Err(QueryError::Protocol {
            addr: addr.clone(),
            message: "closed the connection without an answer (malformed request?)".to_owned(),
        });
    };
    if !first.starts_with("action=") {
        return Err(QueryError::Protocol {
            addr: addr.clone(),
            message: format!("answered {first:?}, not action=…"),
        });
    }
    Ok(first.clone())
}

/// Writes the request, reads answer lines up to the empty line.
fn exchange<S: io::Read + io::Write>(mut stream: S, request: &str) -> io::Result<Vec<String>> {
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(lines);
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_from_text() {
        let parsed = parse_attributes("client_address=192.0.2.1\nsender=a=b@x\n\nignored=1\n")
            .expect("attributes");
        assert_eq!(
            parsed,
            [
                ("client_address".to_owned(), "192.0.2.1".to_owned()),
                ("sender".to_owned(), "a=b@x".to_owned())
            ]
        );
        let error = parse_attributes("a=1\nbroken\n").expect_err("broken");
        assert!(
            error.contains("line 2") && error.contains("broken"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_server_is_named() {
        let addr: ListenAddr = "unix:/nonexistent/spamwall-policy.sock"
            .parse()
            .expect("addr");
        let error = query(&addr, &[], Duration::from_secs(1)).expect_err("nobody there");
        assert!(matches!(error, QueryError::Connect { .. }));
        assert!(
            error
                .to_string()
                .contains("/nonexistent/spamwall-policy.sock"),
            "{error}"
        );
    }
}
