//! Writing to a control client, and reading from one, within
//! [`CLIENT_TIMEOUT`].

use std::{io, time::Duration};

use tokio::io::AsyncWriteExt as _;

use super::Response;

/// How long a client may stay idle, take to send a request, or take to
/// read its answer (of a list: each part of about 256 KiB). The CLI sends
/// its request at once and reads the answer as it comes; 30 s covers a
/// `ban --file` of millions of addresses.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The error of a step that took longer than [`CLIENT_TIMEOUT`].
pub(super) fn timed_out(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} took longer than {CLIENT_TIMEOUT:?}"),
    )
}

/// Writes `response` as one JSON line.
pub(super) async fn write_line(
    write: &mut (impl tokio::io::AsyncWrite + Unpin),
    response: &Response,
) -> io::Result<()> {
    let mut text = serde_json::to_vec(response).map_err(io::Error::other)?;
    text.push(b'\n');
    write_timed(write, &text).await
}

/// Writes `bytes` within [`CLIENT_TIMEOUT`].
pub(super) async fn write_timed(
    write: &mut (impl tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
) -> io::Result<()> {
    tokio::time::timeout(CLIENT_TIMEOUT, write.write_all(bytes))
        .await
        .map_err(|_| timed_out("writing an answer"))?
}
