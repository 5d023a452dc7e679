//! The control socket: request and response types shared by the daemon and
//! the CLI, the server loop and the client call.
//!
//! One JSON object per line. A connection may carry several requests.
//! Every request is answered with one line, except a `list` that asks for
//! `stream`: its bans come in [`Response::BanChunk`] lines, closed by one
//! [`Response::ListEnd`], or cut short by one [`Response::Error`].

mod client;
mod list;
mod server;
mod timed;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use client::{Answers, ClientError, request, request_lines};
pub use list::{BanChunks, Reply};
pub use server::{CLIENT_TIMEOUT, MAX_CLIENTS, bind, serve};

pub use crate::listen::BindError;

use crate::{
    bans::{BanEntry, BanLength, BanStats, Source, explain::Explanation},
    dataplane::Attachment,
};

/// Largest request line the daemon accepts.
pub const MAX_REQUEST_BYTES: u64 = 16 << 20;

/// A command sent to the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Ban each target (address or CIDR text).
    Ban {
        targets: Vec<String>,
        length: BanLength,
        reason: String,
        /// Allow prefixes wider than `ban.widest_v4` / `ban.widest_v6`.
        #[serde(default)]
        force: bool,
    },
    /// Ban many targets (a file); the answer counts instead of listing.
    BanBulk {
        targets: Vec<String>,
        length: BanLength,
        reason: String,
        #[serde(default)]
        force: bool,
    },
    /// Lift the ban on each target.
    Unban { targets: Vec<String> },
    /// Lift every active ban `source` made; with `dry_run`, only count
    /// them.
    UnbanSource {
        source: Source,
        #[serde(default)]
        dry_run: bool,
        /// Only the bans of this feed (`source` is then `feed`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feed: Option<String>,
    },
    /// Why `target` is blocked or not.
    Explain { target: String },
    /// The active bans `filter` wants (every active ban by default).
    List(ListRequest),
    /// Ban counts and packet counters.
    Stats,
    /// How many active bans each source made.
    BansBySource,
    /// Backends, interfaces and settings.
    Status,
}

impl Request {
    /// Whether the answer comes in several lines (a streamed `list`).
    pub const fn is_streamed(&self) -> bool {
        matches!(self, Self::List(ListRequest { stream: true, .. }))
    }
}

/// A `list` request: which active bans, and in which form.
///
/// An older CLI sends `{"command":"list"}` and reads one line: that is
/// every active ban, in one [`Response::Bans`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    /// Only bans this source made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Only the bans of this feed (`source` is then `feed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<String>,
    /// Only bans on addresses and prefixes inside this address or prefix
    /// (text, as a target is written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// At most this many bans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Only bans that end within this many seconds; permanent bans never
    /// do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiring_within: Option<u64>,
    /// The order of the list: by address when absent. With a `limit`,
    /// the bans first in this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<ListSort>,
    /// Answer in [`Response::BanChunk`] lines and a [`Response::ListEnd`]
    /// instead of one [`Response::Bans`] line.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// The orders a `list` can ask for besides the target's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListSort {
    /// Most packets dropped first (in a dry run: would have been), then by
    /// address.
    Packets,
    /// Latest offence first; needs a `limit` of at most
    /// [`MAX_NEWEST`].
    Newest,
}

/// The longest list of newest bans one request gets: each is ranked in a
/// walk over every ban.
pub const MAX_NEWEST: u64 = 1000;

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Banned {
        banned: Vec<BanEntry>,
        refused: Vec<Refusal>,
    },
    BulkBanned {
        banned: u64,
        refused: Vec<Refusal>,
    },
    Unbanned {
        unbanned: Vec<String>,
        not_banned: Vec<String>,
        refused: Vec<Refusal>,
        /// Targets a wider prefix ban still blocks: those not banned
        /// themselves are in no other list, those unbanned are in
        /// `unbanned` too.
        #[serde(default)]
        covered: Vec<Covered>,
    },
    /// The bans of `source`: `active` found, `unbanned` lifted (none on a
    /// dry run).
    SourceUnbanned {
        source: Source,
        active: u64,
        unbanned: u64,
        /// The feed the bans were narrowed to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feed: Option<String>,
    },
    Explanation {
        explanation: Box<Explanation>,
    },
    /// Every ban asked for, in one line: the answer to a `list` that does
    /// not ask for `stream`.
    Bans {
        bans: Vec<BanEntry>,
    },
    /// The next bans of a streamed `list`, in order.
    BanChunk {
        bans: Vec<BanEntry>,
    },
    /// The end of a streamed `list`: `listed` bans were sent.
    ListEnd {
        listed: u64,
    },
    Stats {
        stats: BanStats,
    },
    /// Active bans per source, every source named.
    BansBySource {
        sources: Vec<SourceBans>,
    },
    Status {
        status: Box<Status>,
    },
    Error {
        message: String,
    },
}

/// A target the daemon would not act on, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub target: String,
    pub reason: String,
}

/// How many active bans one source made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceBans {
    pub source: Source,
    pub bans: u64,
}

/// A target that a ban on a wider prefix blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Covered {
    pub target: String,
    /// The narrowest covering ban.
    pub by: BanEntry,
}

/// What `spamwall status` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    /// RFC 3339 UTC start time.
    pub started_at: String,
    pub config: String,
    pub pin_dir: String,
    pub program_id: u32,
    pub backends: Vec<BackendStatus>,
    pub interfaces: Vec<Attachment>,
    /// Enforced destination ports; empty means all traffic.
    pub ports: Vec<u16>,
    /// `[xdp] dry_run`: banned sources are counted and passed.
    #[serde(default)]
    pub dry_run: bool,
    pub bans_active: u64,
    pub capacity_v4: u32,
    pub capacity_v6: u32,
    pub capacity_prefix_v4: u32,
    pub capacity_prefix_v6: u32,
    pub allowlist: Vec<IpNet>,
    pub default_bantime: String,
    /// The ban store's database file.
    pub store: String,
    /// The port scopes bans are enforced in: `xdp.ports` first, then the
    /// rules' and thresholds' own; an empty list is all traffic.
    #[serde(default)]
    pub port_scopes: Vec<Vec<u16>>,
    /// Where the policy server listens; empty when it is off.
    #[serde(default)]
    pub policy_listen: Vec<String>,
    /// Greylisting's state and how sharing goes; absent when off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greylist: Option<String>,
    /// Each log source and what it reads (`NAME: PATH` or
    /// `NAME: journal UNIT,…`).
    #[serde(default)]
    pub log_sources: Vec<String>,
    /// A line per blocklist feed: entries, when it last loaded, its last
    /// error.
    #[serde(default)]
    pub feeds: Vec<String>,
}

pub use crate::bans::BackendStatus;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let request = Request::Ban {
            targets: vec!["192.0.2.7".into()],
            length: BanLength::For(std::time::Duration::from_secs(90)),
            reason: "manual".into(),
            force: false,
        };
        let text = serde_json::to_string(&request).expect("json");
        assert_eq!(
            text,
            r#"{"command":"ban","targets":["192.0.2.7"],"length":{"for":90},"reason":"manual","force":false}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(&text).expect("parse"),
            request
        );
        // A client that predates `force` is read as not forcing.
        let old =
            r#"{"command":"ban","targets":["192.0.2.7"],"length":{"for":90},"reason":"manual"}"#;
        assert_eq!(
            serde_json::from_str::<Request>(old).expect("parse"),
            request
        );
        assert_eq!(
            serde_json::to_string(&Request::List(ListRequest::default())).expect("json"),
            r#"{"command":"list"}"#
        );
        let default = serde_json::to_string(&BanLength::Default).expect("json");
        assert_eq!(default, r#""default""#);
        assert_eq!(
            serde_json::to_string(&Request::UnbanSource {
                source: Source::Logwatch,
                dry_run: true,
                feed: None,
            })
            .expect("json"),
            r#"{"command":"unban_source","source":"logwatch","dry_run":true}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Explain {
                target: "192.0.2.7".into()
            })
            .expect("json"),
            r#"{"command":"explain","target":"192.0.2.7"}"#
        );
    }

    #[test]
    fn list_requests_of_older_and_newer_clients() {
        // What every CLI before filters sent.
        let old: Request = serde_json::from_str(r#"{"command":"list"}"#).expect("parse");
        assert_eq!(old, Request::List(ListRequest::default()));
        assert!(!old.is_streamed());
        let filtered = Request::List(ListRequest {
            source: Some(Source::Fleet),
            prefix: Some("2001:db8::/32".into()),
            limit: Some(10),
            expiring_within: Some(3600),
            stream: true,
            sort: Some(ListSort::Newest),
            ..ListRequest::default()
        });
        let text = serde_json::to_string(&filtered).expect("json");
        assert_eq!(
            text,
            r#"{"command":"list","source":"fleet","prefix":"2001:db8::/32","limit":10,"expiring_within":3600,"sort":"newest","stream":true}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(&text).expect("parse"),
            filtered
        );
        assert!(filtered.is_streamed());
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"command":"list","sort":"packets","limit":5}"#)
                .expect("parse"),
            Request::List(ListRequest {
                limit: Some(5),
                sort: Some(ListSort::Packets),
                ..ListRequest::default()
            })
        );
        for bad in [
            r#"{"command":"list","source":"martian"}"#,
            r#"{"command":"list","limit":-1}"#,
            r#"{"command":"list","expiring_within":"1h"}"#,
            r#"{"command":"list","sort":"oldest"}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&Response::ListEnd { listed: 3 }).expect("json"),
            r#"{"result":"list_end","listed":3}"#
        );
        assert_eq!(
            serde_json::to_string(&Response::BanChunk { bans: Vec::new() }).expect("json"),
            r#"{"result":"ban_chunk","bans":[]}"#
        );
    }

    #[test]
    fn an_unban_answer_of_an_older_daemon_reads_as_covering_nothing() {
        let old = r#"{"result":"unbanned","unbanned":["192.0.2.7"],"not_banned":[],"refused":[]}"#;
        assert_eq!(
            serde_json::from_str::<Response>(old).expect("parse"),
            Response::Unbanned {
                unbanned: vec!["192.0.2.7".into()],
                not_banned: Vec::new(),
                refused: Vec::new(),
                covered: Vec::new(),
            }
        );
    }
}
