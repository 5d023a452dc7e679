//! What `top` reads from the daemon each refresh, and the unban it sends,
//! on a thread of their own: a daemon that does not answer never freezes
//! the keys.

use std::{
    path::Path,
    sync::mpsc::{Receiver, RecvTimeoutError, Sender},
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::{
    bans::BanStats,
    control::{self, ListRequest, ListSort, Request, Response, SourceBans, Status},
};

/// Bans shown in the bans panel.
pub const BANS_SHOWN: u64 = 100;

/// One ban as `top` shows it: the list's JSON object, read on the client
/// side so that the hit counters of a newer daemon (`packets`,
/// `last_hit`) come through, and read as none from an older one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TopBan {
    pub addr: String,
    /// RFC 3339 UTC, `None` for permanent.
    #[serde(default)]
    pub expires_at: Option<String>,
    pub source: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub count: u32,
    /// Packets dropped from it.
    #[serde(default)]
    pub packets: u64,
    /// RFC 3339 UTC of the last packet dropped, `None` for never.
    #[serde(default)]
    pub last_hit: Option<String>,
}

/// The answer lines of a list, as `top` reads them.
#[derive(Debug, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
enum ListLine {
    BanChunk { bans: Vec<TopBan> },
    ListEnd { listed: u64 },
    Bans { bans: Vec<TopBan> },
    Error { message: String },
}

/// Everything one refresh shows.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub taken: Instant,
    pub stats: BanStats,
    pub status: Status,
    pub sources: Vec<SourceBans>,
    pub bans: Vec<TopBan>,
}

/// What the view asks of the fetching thread.
#[derive(Clone, Debug)]
pub enum Order {
    /// Read again now, with the bans in this order.
    Sort(ListSort),
    /// Lift the ban on this target, then read again.
    Unban(String),
}

/// What the fetching thread tells the view.
#[derive(Debug)]
pub enum News {
    Snapshot(Box<Snapshot>),
    /// The daemon could not be read; the view keeps the last figures.
    Failed(String),
    /// How an unban went, in words.
    Unbanned(String),
}

/// Reads the daemon at `socket` every `interval` and at each order, until
/// the view hangs up.
pub fn serve(
    socket: &Path,
    interval: Duration,
    mut sort: ListSort,
    orders: &Receiver<Order>,
    news: &Sender<News>,
) {
    loop {
        let fetched =
            snapshot(socket, sort).map_or_else(News::Failed, |s| News::Snapshot(Box::new(s)));
        if news.send(fetched).is_err() {
            return;
        }
        match orders.recv_timeout(interval) {
            Ok(Order::Sort(next)) => sort = next,
            Ok(Order::Unban(target)) => {
                if news.send(News::Unbanned(unban(socket, &target))).is_err() {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Reads stats, status, bans per source and the bans panel's list.
fn snapshot(socket: &Path, sort: ListSort) -> Result<Snapshot, String> {
    let taken = Instant::now();
    let stats = match ask(socket, &Request::Stats)? {
        Response::Stats { stats } => stats,
        other => return Err(unexpected(&other)),
    };
    let daemon_status = match ask(socket, &Request::Status)? {
        Response::Status { status } => *status,
        other => return Err(unexpected(&other)),
    };
    let sources = match ask(socket, &Request::BansBySource)? {
        Response::BansBySource { sources } => sources,
        other => return Err(unexpected(&other)),
    };
    let bans = list(socket, sort)?;
    Ok(Snapshot {
        taken,
        stats,
        status: daemon_status,
        sources,
        bans,
    })
}

fn ask(socket: &Path, request: &Request) -> Result<Response, String> {
    match control::request(socket, request) {
        Ok(Response::Error { message }) => Err(format!("the daemon answered: {message}")),
        Ok(response) => Ok(response),
        Err(error) => Err(error.to_string()),
    }
}

fn unexpected(response: &Response) -> String {
    format!("unexpected answer from the daemon: {response:?}")
}

/// The first [`BANS_SHOWN`] bans in `sort` order.
fn list(socket: &Path, sort: ListSort) -> Result<Vec<TopBan>, String> {
    let request = Request::List(ListRequest {
        limit: Some(BANS_SHOWN),
        stream: true,
        sort: Some(sort),
        ..ListRequest::default()
    });
    let mut answers = control::request_lines(socket, &request).map_err(|e| e.to_string())?;
    let mut bans = Vec::new();
    loop {
        match answers.next_as::<ListLine>().map_err(|e| e.to_string())? {
            Some(ListLine::BanChunk { bans: chunk }) => bans.extend(chunk),
            Some(ListLine::ListEnd { listed }) => {
                if listed != bans.len() as u64 {
                    return Err(format!(
                        "the daemon listed {listed} bans but {} arrived",
                        bans.len()
                    ));
                }
                return Ok(bans);
            }
            Some(ListLine::Bans { bans }) => return Ok(bans),
            Some(ListLine::Error { message }) => {
                return Err(format!("the daemon answered: {message}"));
            }
            None => {
                return Err("the daemon closed the connection before the end of the list".into());
            }
        }
    }
}

/// Lifts the ban on `target`; says what happened.
fn unban(socket: &Path, target: &str) -> String {
    let request = Request::Unban {
        targets: vec![target.to_owned()],
    };
    match ask(socket, &request) {
        Ok(Response::Unbanned {
            unbanned,
            not_banned,
            refused,
            covered,
        }) => {
            if let Some(refusal) = refused.first() {
                format!("{target} not unbanned: {}", refusal.reason)
            } else if let Some(cover) = covered.first() {
                format!(
                    "{target} unbanned, but still blocked by {}",
                    crate::bans::target_to_string(&cover.by.addr)
                )
            } else if !unbanned.is_empty() {
                format!("{target} unbanned")
            } else if !not_banned.is_empty() {
                format!("{target} was not banned")
            } else {
                format!("{target}: nothing done")
            }
        }
        Ok(other) => unexpected(&other),
        Err(error) => format!("unban {target} failed: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_read_with_and_without_hit_counters() {
        let old = r#"{"result":"ban_chunk","bans":[{"addr":"192.0.2.7","expires_at":null,"source":"cli","reason":"r","count":1}]}"#;
        let ListLine::BanChunk { bans } = serde_json::from_str(old).expect("parse") else {
            panic!("not a chunk");
        };
        assert_eq!(bans[0].packets, 0);
        assert_eq!(bans[0].last_hit, None);
        let new = r#"{"result":"ban_chunk","bans":[{"addr":"192.0.2.7","expires_at":"2026-12-06T18:00:00Z","source":"fleet","reason":"r","count":3,"packets":42,"last_hit":"2026-12-06T17:00:00Z","ports":[25]}]}"#;
        let ListLine::BanChunk { bans } = serde_json::from_str(new).expect("parse") else {
            panic!("not a chunk");
        };
        assert_eq!(
            bans[0],
            TopBan {
                addr: "192.0.2.7".into(),
                expires_at: Some("2026-12-06T18:00:00Z".into()),
                source: "fleet".into(),
                reason: "r".into(),
                count: 3,
                packets: 42,
                last_hit: Some("2026-12-06T17:00:00Z".into()),
            }
        );
    }

    #[test]
    fn a_missing_daemon_is_news_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("none.sock");
        let error = snapshot(&socket, ListSort::Newest).expect_err("no daemon");
        assert!(error.contains("none.sock"), "{error}");
        assert!(unban(&socket, "192.0.2.7").contains("failed"));
    }
}
