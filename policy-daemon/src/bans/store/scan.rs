//! Listing active bans a chunk at a time, for `spamwall list`.
//!
//! A listing reads through a read-only connection of its own: in WAL mode
//! it never waits for the writer and never holds the store's mutex, so a
//! list of a million bans does not hold up a single ban. Each chunk is one
//! statement (its own snapshot) that seeks past the last target read, so a
//! chunk costs the same at the end of the table as at its start and no
//! snapshot is held between chunks.
//!
//! Order: by the target's text as stored (`192.0.2.7`, `2001:db8::/64`),
//! the primary key's own order. Bans that change while a listing runs
//! appear at most once each, as their chunk found them.

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use rusqlite::{Connection, OpenFlags, params};

use super::{RawBan, Source, StoreError, StoredBan, sql};

/// Rows one chunk reads at most.
pub const SCAN_CHUNK: usize = 4096;

/// One chunk: a seek on the primary key past the last target read.
const CHUNK_QUERY: &str = "SELECT target, expires_at, source, reason, detail, count, first_banned_at, last_banned_at, scope
     FROM bans
     WHERE target > ?1 AND target < ?2
       AND (expires_at IS NULL OR expires_at > ?3)
       AND (?4 IS NULL OR source = ?4)
       AND (?5 IS NULL OR (expires_at IS NOT NULL AND expires_at <= ?5))
       AND (?7 IS NULL OR reason = ?7 OR substr(reason, 1, length(?7) + 1) = ?7 || ' ')
     ORDER BY target LIMIT ?6";

/// Greater than the text of every target (digits, hex, `.`, `:` and `/`).
const PAST_EVERY_TARGET: &str = "~";

/// Which active bans a listing wants; every condition set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BanFilter {
    /// Only bans this source made.
    pub source: Option<Source>,
    /// Only bans on addresses and prefixes inside this prefix (itself
    /// included).
    pub within: Option<IpNet>,
    /// Only bans that end at or before this Unix time; permanent bans never
    /// match.
    pub expiring_by: Option<i64>,
    /// At most this many bans.
    pub limit: Option<u64>,
    /// Only bans whose reason's first word is this (`feed:NAME`).
    pub reason_word: Option<String>,
}

/// The active bans matching a [`BanFilter`], in target text order, read a
/// chunk at a time by [`ActiveBans::next_chunk`]. `Send`: each chunk may be
/// read on another thread.
#[derive(Debug)]
pub struct ActiveBans {
    path: PathBuf,
    conn: Connection,
    filter: BanFilter,
    now: i64,
    /// Every target read so far is at most this.
    after: String,
    /// Every target wanted is below this.
    before: String,
    /// Bans still to give under the limit.
    left: u64,
    chunk: usize,
    done: bool,
}

impl super::Store {
    /// The bans active at `now` that `filter` wants. Opens a read-only
    /// connection of its own.
    pub fn active_bans(&self, filter: BanFilter, now: i64) -> Result<ActiveBans, StoreError> {
        ActiveBans::open(self.path(), filter, now, SCAN_CHUNK)
    }
}

impl ActiveBans {
    fn open(path: &Path, filter: BanFilter, now: i64, chunk: usize) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql(path, "opening a connection to list bans"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql(path, "setting the busy timeout"))?;
        let (after, before) = filter
            .within
            .as_ref()
            .map_or_else(|| (String::new(), PAST_EVERY_TARGET.to_owned()), text_range);
        Ok(Self {
            path: path.to_owned(),
            conn,
            left: filter.limit.unwrap_or(u64::MAX),
            filter,
            now,
            after,
            before,
            chunk: chunk.max(1),
            done: false,
        })
    }

    /// The next chunk: up to [`SCAN_CHUNK`] rows read, those the filter
    /// wants returned (possibly none); `None` once every ban was given.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<StoredBan>>, StoreError> {
        if self.done || self.left == 0 {
            self.done = true;
            return Ok(None);
        }
        // Without a prefix every row read is wanted, so the limit can cut
        // the read itself.
        let want = if self.filter.within.is_none() {
            usize::try_from(self.left).map_or(self.chunk, |left| left.min(self.chunk))
        } else {
            self.chunk
        };
        let mut query = self
            .conn
            .prepare_cached(CHUNK_QUERY)
            .map_err(sql(&self.path, "preparing the ban listing"))?;
        let source = self.filter.source.map(|source| source.to_string());
        let rows = query
            .query_map(
                params![
                    self.after,
                    self.before,
                    self.now,
                    source,
                    self.filter.expiring_by,
                    i64::try_from(want).unwrap_or(i64::MAX),
                    self.filter.reason_word,
                ],
                RawBan::read,
            )
            .map_err(sql(&self.path, "listing bans"))?;
        let mut read = 0;
        let mut bans = Vec::new();
        for row in rows {
            let raw = row.map_err(sql(&self.path, "reading a listed ban"))?;
            read += 1;
            self.after.clone_from(&raw.target);
            let Some(ban) = raw.decode(&self.path) else {
                continue;
            };
            if self
                .filter
                .within
                .is_none_or(|within| within.contains(&ban.target))
                && self.left > 0
            {
                self.left -= 1;
                bans.push(ban);
            }
        }
        if read < want || self.left == 0 {
            self.done = true;
        }
        Ok(Some(bans))
    }
}

/// The text range `(after, before)` holding every target inside `within`:
/// its leading whole octets or non-zero hextets are written the same way in
/// every target inside it. A bound, not the test: rows in it are still
/// checked with [`IpNet::contains`].
fn text_range(within: &IpNet) -> (String, String) {
    let prefix = match within.network() {
        IpAddr::V4(addr) => {
            let whole = usize::from(within.prefix_len() / 8).min(3);
            addr.octets()[..whole]
                .iter()
                .fold(String::new(), |mut text, octet| {
                    let _ = write!(text, "{octet}.");
                    text
                })
        }
        IpAddr::V6(addr) => {
            // A zero hextet may be written `::`: the text is known only up
            // to the first one.
            let whole = usize::from(within.prefix_len() / 16).min(7);
            addr.segments()[..whole]
                .iter()
                .take_while(|hextet| **hextet != 0)
                .fold(String::new(), |mut text, hextet| {
                    let _ = write!(text, "{hextet:x}:");
                    text
                })
        }
    };
    // The prefix ends in `.` or `:`; the bound just past every text
    // starting with it ends in the next character instead.
    match prefix.chars().next_back() {
        Some(separator) => {
            let head = &prefix[..prefix.len() - separator.len_utf8()];
            let before = format!("{head}{}", next_char(separator));
            (prefix, before)
        }
        None => (String::new(), PAST_EVERY_TARGET.to_owned()),
    }
}

/// The character after `separator` (`.` → `/`, `:` → `;`).
fn next_char(separator: char) -> char {
    char::from_u32(u32::from(separator) + 1).unwrap_or(separator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bans::{BanScope, parse_target, store::Store, target_to_string};

    const NOW: i64 = 10_000;

    fn ban(target: &str, expires_at: Option<i64>, source: Source) -> StoredBan {
        StoredBan {
            target: parse_target(target).expect("target"),
            expires_at,
            source,
            reason: format!("reason of {target}"),
            detail: String::new(),
            count: 1,
            scope: BanScope::Default,
            first_banned_at: 1000,
            last_banned_at: 1000,
        }
    }

    fn store_with(bans: &[StoredBan]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_in(dir.path()).expect("open");
        store.put_bans(bans).expect("put");
        (dir, store)
    }

    /// Every target the filter lists, chunk by chunk of `chunk` rows.
    fn listed(store: &Store, filter: BanFilter, chunk: usize) -> Vec<String> {
        let mut scan = ActiveBans::open(store.path(), filter, NOW, chunk).expect("scan");
        let mut targets = Vec::new();
        let mut chunks = 0;
        while let Some(bans) = scan.next_chunk().expect("chunk") {
            assert!(bans.len() <= chunk, "a chunk of {} rows", bans.len());
            chunks += 1;
            assert!(chunks < 10_000, "the scan does not end");
            targets.extend(bans.iter().map(|ban| target_to_string(&ban.target)));
        }
        assert_eq!(scan.next_chunk().expect("after the end"), None);
        targets
    }

    fn sample() -> Vec<StoredBan> {
        vec![
            ban("192.0.2.7", Some(NOW + 60), Source::Cli),
            ban("192.0.2.0/24", None, Source::Policy),
            ban("192.0.2.128/25", Some(NOW + 7200), Source::Fleet),
            ban("192.0.20.1", Some(NOW + 60), Source::Cli),
            ban("192.0.3.1", Some(NOW + 60), Source::Logwatch),
            ban("10.1.2.3", Some(NOW - 1), Source::Cli),
            ban("10.1.2.4", Some(NOW), Source::Cli),
            ban("9.9.9.9", Some(NOW + 1), Source::Cli),
            ban("2001:db8::1", Some(NOW + 60), Source::Fleet),
            ban("2001:db8::/64", Some(NOW + 60), Source::Policy),
            ban("2001:db8:0:1::/64", None, Source::Cli),
            ban("2001:db80::1", Some(NOW + 60), Source::Cli),
            ban("2001:db9::1", Some(NOW + 60), Source::Cli),
            ban("::5", Some(NOW + 60), Source::Cli),
            ban("fe80::1", Some(NOW + 60), Source::Logwatch),
        ]
    }

    fn within(prefix: &str) -> BanFilter {
        BanFilter {
            within: Some(prefix.parse().expect("prefix")),
            ..BanFilter::default()
        }
    }

    #[test]
    fn lists_only_active_bans_in_target_text_order() {
        let (_dir, store) = store_with(&sample());
        let all = listed(&store, BanFilter::default(), SCAN_CHUNK);
        let mut expected: Vec<String> = sample()
            .iter()
            .filter(|ban| ban.is_active(NOW))
            .map(|ban| target_to_string(&ban.target))
            .collect();
        expected.sort();
        assert_eq!(all, expected);
        assert!(!all.contains(&"10.1.2.3".to_owned()) && !all.contains(&"10.1.2.4".to_owned()));
        // Every field comes back as stored.
        let mut scan = store
            .active_bans(within("192.0.2.0/24"), NOW)
            .expect("scan");
        let first = scan.next_chunk().expect("chunk").expect("some");
        let stored = sample();
        let permanent = stored
            .iter()
            .find(|ban| ban.target == first[0].target)
            .expect("stored");
        assert_eq!(&first[0], permanent);
    }

    #[test]
    fn chunk_boundaries_lose_and_repeat_nothing() {
        let bans: Vec<StoredBan> = (0..1000_u32)
            .map(|i| {
                let addr = std::net::Ipv4Addr::from(0xC633_6400 + i * 7);
                ban(&addr.to_string(), Some(NOW + i64::from(i)), Source::Cli)
            })
            .collect();
        let (_dir, store) = store_with(&bans);
        let whole = listed(&store, BanFilter::default(), SCAN_CHUNK);
        // `NOW + 0` has ended: 999 active.
        assert_eq!(whole.len(), 999);
        for chunk in [1, 2, 7, 333, 998, 999, 1000] {
            assert_eq!(
                listed(&store, BanFilter::default(), chunk),
                whole,
                "chunk {chunk}"
            );
        }
        let limited = BanFilter {
            limit: Some(500),
            ..BanFilter::default()
        };
        for chunk in [1, 7, 499, 500, 501, SCAN_CHUNK] {
            assert_eq!(
                listed(&store, limited.clone(), chunk),
                whole[..500],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_prefix_lists_what_lies_inside_it_v4() {
        let (_dir, store) = store_with(&sample());
        for chunk in [1, 2, SCAN_CHUNK] {
            assert_eq!(
                listed(&store, within("192.0.2.0/24"), chunk),
                ["192.0.2.0/24", "192.0.2.128/25", "192.0.2.7"],
                "chunk {chunk}"
            );
            assert_eq!(
                listed(&store, within("192.0.2.128/25"), chunk),
                ["192.0.2.128/25"]
            );
            // 192.0.20.1 shares the text "192.0.2" but lies outside.
            assert_eq!(
                listed(&store, within("192.0.0.0/22"), chunk),
                ["192.0.2.0/24", "192.0.2.128/25", "192.0.2.7", "192.0.3.1"]
            );
            assert_eq!(listed(&store, within("192.0.2.7/32"), chunk), ["192.0.2.7"]);
            assert_eq!(listed(&store, within("192.0.2.4/30"), chunk), ["192.0.2.7"]);
            // A prefix narrower than the ban does not list the wider ban.
            assert!(listed(&store, within("192.0.2.8/29"), chunk).is_empty());
            assert_eq!(
                listed(&store, within("0.0.0.0/0"), chunk),
                [
                    "192.0.2.0/24",
                    "192.0.2.128/25",
                    "192.0.2.7",
                    "192.0.20.1",
                    "192.0.3.1",
                    "9.9.9.9"
                ]
            );
            assert_eq!(listed(&store, within("8.0.0.0/7"), chunk), ["9.9.9.9"]);
        }
    }

    #[test]
    fn a_prefix_lists_what_lies_inside_it_v6() {
        let (_dir, store) = store_with(&sample());
        for chunk in [1, 3, SCAN_CHUNK] {
            assert_eq!(
                listed(&store, within("2001:db8::/32"), chunk),
                ["2001:db8:0:1::/64", "2001:db8::/64", "2001:db8::1"],
                "chunk {chunk}"
            );
            assert_eq!(
                listed(&store, within("2001:db8::/64"), chunk),
                ["2001:db8::/64", "2001:db8::1"]
            );
            assert_eq!(
                listed(&store, within("2001:db8::/48"), chunk),
                ["2001:db8:0:1::/64", "2001:db8::/64", "2001:db8::1"]
            );
            assert_eq!(
                listed(&store, within("2001:db8::1/128"), chunk),
                ["2001:db8::1"]
            );
            // Texts that start alike but lie outside.
            assert_eq!(
                listed(&store, within("2001:db80::/32"), chunk),
                ["2001:db80::1"]
            );
            assert_eq!(
                listed(&store, within("2001:db8::/31"), chunk),
                [
                    "2001:db8:0:1::/64",
                    "2001:db8::/64",
                    "2001:db8::1",
                    "2001:db9::1"
                ]
            );
            // Leading zero hextets are written `::`.
            assert_eq!(listed(&store, within("::/96"), chunk), ["::5"]);
            assert_eq!(listed(&store, within("fe80::/10"), chunk), ["fe80::1"]);
            assert_eq!(listed(&store, within("::/0"), chunk).len(), 7);
        }
    }

    #[test]
    fn source_and_expiry_filters() {
        let (_dir, store) = store_with(&sample());
        let by = |source| BanFilter {
            source: Some(source),
            ..BanFilter::default()
        };
        assert_eq!(
            listed(&store, by(Source::Fleet), 1),
            ["192.0.2.128/25", "2001:db8::1"]
        );
        assert_eq!(
            listed(&store, by(Source::Logwatch), SCAN_CHUNK),
            ["192.0.3.1", "fe80::1"]
        );
        assert_eq!(
            listed(&store, by(Source::Policy), 2),
            ["192.0.2.0/24", "2001:db8::/64"]
        );
        let expiring = |seconds| BanFilter {
            expiring_by: Some(NOW + seconds),
            ..BanFilter::default()
        };
        assert_eq!(listed(&store, expiring(1), SCAN_CHUNK), ["9.9.9.9"]);
        // Permanent bans never match; the ended ones are not active.
        let hour = listed(&store, expiring(3600), 2);
        assert_eq!(hour.len(), 10, "{hour:?}");
        assert!(
            !hour
                .iter()
                .any(|t| t == "192.0.2.0/24" || t == "2001:db8:0:1::/64")
        );
        assert!(!hour.contains(&"192.0.2.128/25".to_owned()));
        assert_eq!(listed(&store, expiring(7200), 2).len(), 11);
        // All conditions together, with a limit.
        let all = BanFilter {
            source: Some(Source::Cli),
            within: Some("192.0.0.0/16".parse().expect("prefix")),
            expiring_by: Some(NOW + 3600),
            limit: Some(2),
            reason_word: None,
        };
        assert_eq!(listed(&store, all.clone(), 1), ["192.0.2.7", "192.0.20.1"]);
        let one = BanFilter {
            limit: Some(1),
            ..all
        };
        assert_eq!(listed(&store, one, SCAN_CHUNK), ["192.0.2.7"]);
        let none = BanFilter {
            limit: Some(0),
            ..BanFilter::default()
        };
        assert!(listed(&store, none, SCAN_CHUNK).is_empty());
    }

    #[test]
    fn text_ranges_bound_the_scan() {
        let range = |prefix: &str| text_range(&prefix.parse().expect("prefix"));
        assert_eq!(
            range("192.0.2.0/24"),
            ("192.0.2.".into(), "192.0.2/".into())
        );
        assert_eq!(
            range("192.0.2.7/32"),
            ("192.0.2.".into(), "192.0.2/".into())
        );
        assert_eq!(range("10.0.0.0/15"), ("10.".into(), "10/".into()));
        assert_eq!(range("0.0.0.0/4"), (String::new(), "~".into()));
        assert_eq!(
            range("2001:db8::/32"),
            ("2001:db8:".into(), "2001:db8;".into())
        );
        assert_eq!(
            range("2001:db8::/48"),
            ("2001:db8:".into(), "2001:db8;".into())
        );
        assert_eq!(range("2001:0:1::/48"), ("2001:".into(), "2001;".into()));
        assert_eq!(range("::/96"), (String::new(), "~".into()));
        assert_eq!(
            range("2001:db8:1:2:3:4:5:6/128"),
            ("2001:db8:1:2:3:4:5:".into(), "2001:db8:1:2:3:4:5;".into())
        );
    }

    #[test]
    fn a_listing_does_not_hold_up_bans() {
        let (_dir, store) = store_with(&sample());
        let mut scan = ActiveBans::open(store.path(), BanFilter::default(), NOW, 2).expect("scan");
        let first = scan.next_chunk().expect("chunk").expect("some");
        // Between chunks the writer goes ahead; the listing sees what
        // changed after the last target it read.
        store
            .put_bans(&[ban("2001:db8:ffff::1", Some(NOW + 60), Source::Cli)])
            .expect("a ban while listing");
        let mut rest = Vec::new();
        while let Some(bans) = scan.next_chunk().expect("chunk") {
            rest.extend(bans);
        }
        assert_eq!(first.len() + rest.len(), 14);
        assert!(
            rest.iter()
                .any(|ban| target_to_string(&ban.target) == "2001:db8:ffff::1")
        );
    }

    #[test]
    fn each_chunk_seeks_the_primary_key_and_sorts_nothing() {
        let (_dir, store) = store_with(&sample());
        let conn = store.conn();
        let mut explain = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {CHUNK_QUERY}"))
            .expect("explain");
        let plan: Vec<String> = explain
            .query_map(
                params!["192.0.2.7", "~", NOW, "feed", NOW + 60, 4096, "feed:drop"],
                |row| row.get::<_, String>(3),
            )
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(plan.len(), 1, "{plan:?}");
        assert!(
            plan[0].starts_with("SEARCH bans USING PRIMARY KEY (target>? AND target<?)"),
            "{plan:?}"
        );
    }

    #[test]
    fn a_damaged_row_is_skipped() {
        let (_dir, store) = store_with(&sample()[..2]);
        store
            .conn()
            .execute(
                "INSERT INTO bans (target, expires_at, source, reason, count, first_banned_at, last_banned_at)
                 VALUES ('192.0.2.9', NULL, 'martian', '', 1, 0, 0), ('not-an-ip', NULL, 'cli', '', 1, 0, 0)",
                [],
            )
            .expect("damage");
        assert_eq!(
            listed(&store, BanFilter::default(), 1),
            ["192.0.2.0/24", "192.0.2.7"]
        );
    }

    #[test]
    fn a_reason_word_lists_one_feeds_bans_and_no_look_alike() {
        let feed = |target: &str, reason: &str| StoredBan {
            reason: reason.to_owned(),
            ..ban(target, Some(NOW + 60), Source::Feed)
        };
        let (_dir, store) = store_with(&[
            feed("192.0.2.1", "feed:drop"),
            feed("192.0.2.2", "feed:drop SBL1"),
            feed("192.0.2.3", "feed:drop2 SBL2"),
            feed("192.0.2.4", "feed:dro"),
            feed("192.0.2.5", "feed:drop_x"),
            feed("192.0.2.6", "feed:d%op"),
        ]);
        let only = |word: &str| BanFilter {
            source: Some(Source::Feed),
            reason_word: Some(word.to_owned()),
            ..BanFilter::default()
        };
        assert_eq!(
            listed(&store, only("feed:drop"), SCAN_CHUNK),
            ["192.0.2.1", "192.0.2.2"]
        );
        assert_eq!(
            listed(&store, only("feed:d%"), SCAN_CHUNK),
            Vec::<String>::new()
        );
        assert_eq!(
            listed(&store, only("feed:d_op"), SCAN_CHUNK),
            Vec::<String>::new()
        );
        assert_eq!(listed(&store, only("feed:drop"), 1).len(), 2);
    }
}
