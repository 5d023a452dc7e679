//! What the store keeps for blocklist feeds: per feed, the validators of
//! the last version fetched (for conditional GET), when it last loaded and
//! why it last failed, and the set of entries it lists, so a restart
//! neither refetches an unchanged feed nor forgets what to lift.

use std::fmt::Write as _;

use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{RawBan, Source, Store, StoreError, StoredBan, sql};
use crate::bans::{parse_target, target_to_string};

/// The feed's bans among a list of targets: `?2`, a JSON array of target
/// texts, each found by the primary key; `?3` is the reason's first word
/// (`feed:NAME`), `?4` the source.
macro_rules! feed_bans {
    () => {
        "target IN (SELECT value FROM json_each(?2))
           AND source = ?4
           AND (reason = ?3 OR substr(reason, 1, length(?3) + 1) = ?3 || ' ')"
    };
}

/// Extends the feed's bans (`feed_bans!`) that are live at `?5` and end
/// before `?1` to `?1`.
const EXTEND_FEED_BANS: &str = concat!(
    "UPDATE bans SET expires_at = ?1 WHERE ",
    feed_bans!(),
    " AND expires_at IS NOT NULL AND expires_at > ?5 AND expires_at < ?1"
);

/// The feed's bans (`feed_bans!`) that end at `?1`, as they are.
const FEED_BANS_ENDING: &str = concat!(
    "SELECT target, expires_at, source, reason, detail, count, first_banned_at, last_banned_at, scope
       FROM bans WHERE ",
    feed_bans!(),
    " AND expires_at = ?1"
);

/// What [`Store::extend_feed_bans`] extended.
#[derive(Debug, PartialEq, Eq)]
pub enum Extended {
    /// Every target, none read back.
    Every,
    /// The feed's bans among the targets that now end at the new end
    /// (the ones extended, and any that already did), as they now are.
    Rows(Vec<StoredBan>),
}

/// When [`Store::extend_feed_bans`] reads the bans back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBack {
    /// Only when some target was not extended.
    WhenPartial,
    /// Always.
    Always,
}

/// A feed's saved state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedState {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Unix time of the last fetch that worked (a 304 included).
    pub last_success: Option<i64>,
    /// Why the last fetch failed; `None` when it worked.
    pub last_error: Option<String>,
}

/// Writes feed `name`'s state, inserted or replaced.
fn write_state(conn: &Connection, name: &str, state: &FeedState) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO feed_state (name, etag, last_modified, last_success, last_error)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (name) DO UPDATE SET etag = excluded.etag,
            last_modified = excluded.last_modified,
            last_success = excluded.last_success, last_error = excluded.last_error",
        params![
            name,
            state.etag,
            state.last_modified,
            state.last_success,
            state.last_error
        ],
    )
    .map(drop)
}

/// Entries one insert statement carries (3 parameters each, well under
/// `SQLite`'s limit of 32,766).
const ENTRIES_PER_INSERT: usize = 256;

/// An insert of `rows` feed entries.
fn insert_entries(rows: usize) -> String {
    let mut text = String::from("INSERT OR REPLACE INTO feed_entries (feed, target, tag) VALUES ");
    for row in 0..rows {
        if row > 0 {
            text.push(',');
        }
        let base = row * 3;
        let _ = write!(text, "(?{},?{},?{})", base + 1, base + 2, base + 3);
    }
    text
}

/// Binds `entries` of feed `name` to an [`insert_entries`] of as many rows.
fn bind_entries(
    insert: &mut rusqlite::CachedStatement<'_>,
    name: &str,
    entries: &[(String, &str)],
) -> rusqlite::Result<()> {
    for (row, (target, tag)) in entries.iter().enumerate() {
        let base = row * 3;
        insert.raw_bind_parameter(base + 1, name)?;
        insert.raw_bind_parameter(base + 2, target)?;
        insert.raw_bind_parameter(base + 3, *tag)?;
    }
    Ok(())
}

/// Creates the feed tables (part of schema version 1: an older spamwall
/// leaves them alone).
pub(super) fn create(conn: &Connection, store: &Store) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS feed_state (
            name TEXT PRIMARY KEY,
            etag TEXT,
            last_modified TEXT,
            last_success INTEGER,
            last_error TEXT
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS feed_entries (
            feed TEXT NOT NULL,
            target TEXT NOT NULL,
            tag TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (feed, target)
        ) WITHOUT ROWID;",
    )
    .map_err(sql(&store.path, "creating the feed tables"))
}

impl Store {
    /// Extends to `until`, in one transaction, the bans on `targets` that
    /// are live at `now`, end before `until`, and were made by the feed
    /// whose reasons start with `reason_word`. Any other ban on a target
    /// is left alone. When every target was extended the bans are read
    /// back only if `read_back` says so: the update alone is a fraction
    /// of the cost of reading each row back.
    pub fn extend_feed_bans(
        &self,
        targets: &[IpNet],
        reason_word: &str,
        until: i64,
        now: i64,
        read_back: ReadBack,
    ) -> Result<Extended, StoreError> {
        if targets.is_empty() {
            return Ok(Extended::Rows(Vec::new()));
        }
        let texts: Vec<String> = targets.iter().map(target_to_string).collect();
        // Target texts hold digits, hex, '.', ':' and '/' only.
        let list = serde_json::to_string(&texts).unwrap_or_default();
        let feed = Source::Feed.as_str();
        self.in_transaction("committing extended feed bans", |tx| {
            let extended = tx
                .prepare_cached(EXTEND_FEED_BANS)
                .and_then(|mut update| update.execute(params![until, list, reason_word, feed, now]))
                .map_err(sql(&self.path, "extending feed bans"))?;
            // A target listed twice is found once: the count falls short.
            if extended == targets.len() && read_back == ReadBack::WhenPartial {
                return Ok(Extended::Every);
            }
            let mut select = tx
                .prepare_cached(FEED_BANS_ENDING)
                .map_err(sql(&self.path, "preparing the read of extended feed bans"))?;
            let rows = select
                .query_map(params![until, list, reason_word, feed], RawBan::read)
                .map_err(sql(&self.path, "reading extended feed bans"))?;
            let mut bans = Vec::with_capacity(extended);
            for row in rows {
                let raw = row.map_err(sql(&self.path, "reading an extended feed ban"))?;
                bans.extend(raw.decode(&self.path));
            }
            Ok(Extended::Rows(bans))
        })
    }

    /// The saved state of feed `name`, if it was ever fetched.
    pub fn feed_state(&self, name: &str) -> Result<Option<FeedState>, StoreError> {
        self.conn()
            .query_row(
                "SELECT etag, last_modified, last_success, last_error FROM feed_state WHERE name = ?1",
                params![name],
                |row| {
                    Ok(FeedState {
                        etag: row.get(0)?,
                        last_modified: row.get(1)?,
                        last_success: row.get(2)?,
                        last_error: row.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(sql(&self.path, "reading a feed's state"))
    }

    /// Records feed `name`'s state (durable on return).
    pub fn put_feed_state(&self, name: &str, state: &FeedState) -> Result<(), StoreError> {
        write_state(&self.conn(), name, state).map_err(sql(&self.path, "writing a feed's state"))
    }

    /// The entries feed `name` held when it last loaded, each with its
    /// tag. A row that does not read as a target is skipped.
    pub fn feed_entries(&self, name: &str) -> Result<Vec<(IpNet, String)>, StoreError> {
        let conn = self.conn();
        let mut select = conn
            .prepare_cached("SELECT target, tag FROM feed_entries WHERE feed = ?1")
            .map_err(sql(&self.path, "reading a feed's entries"))?;
        let rows = select
            .query_map(params![name], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(sql(&self.path, "reading a feed's entries"))?;
        let mut entries = Vec::new();
        for row in rows {
            let (text, tag) = row.map_err(sql(&self.path, "reading a feed's entries"))?;
            if let Ok(target) = parse_target(&text) {
                entries.push((target, tag));
            }
        }
        Ok(entries)
    }

    /// Replaces what feed `name` lists by the diff `added` / `removed` and
    /// its state, in one transaction.
    pub fn put_feed(
        &self,
        name: &str,
        added: &[(IpNet, &str)],
        removed: &[IpNet],
        state: &FeedState,
    ) -> Result<(), StoreError> {
        // In the order of the primary key, as `put_bans` writes: each row
        // lands next to the one before it in the B-tree.
        let mut keyed: Vec<(String, &str)> = added
            .iter()
            .map(|(target, tag)| (target_to_string(target), *tag))
            .collect();
        keyed.sort_unstable();
        self.in_transaction("committing a feed", |tx| {
            let mut delete = tx
                .prepare_cached("DELETE FROM feed_entries WHERE feed = ?1 AND target = ?2")
                .map_err(sql(&self.path, "preparing the feed entry delete"))?;
            for target in removed {
                delete
                    .execute(params![name, target_to_string(target)])
                    .map_err(sql(&self.path, "removing a feed entry"))?;
            }
            let mut chunks = keyed.chunks_exact(ENTRIES_PER_INSERT);
            if keyed.len() >= ENTRIES_PER_INSERT {
                let mut insert = tx
                    .prepare_cached(&insert_entries(ENTRIES_PER_INSERT))
                    .map_err(sql(&self.path, "preparing the feed entry insert"))?;
                for chunk in &mut chunks {
                    bind_entries(&mut insert, name, chunk)
                        .and_then(|()| insert.raw_execute())
                        .map_err(sql(&self.path, "adding feed entries"))?;
                }
            }
            let mut insert = tx
                .prepare_cached(&insert_entries(1))
                .map_err(sql(&self.path, "preparing the feed entry insert"))?;
            for entry in chunks.remainder() {
                bind_entries(&mut insert, name, std::slice::from_ref(entry))
                    .and_then(|()| insert.raw_execute())
                    .map_err(sql(&self.path, "adding a feed entry"))?;
            }
            write_state(tx, name, state).map_err(sql(&self.path, "writing a feed's state"))?;
            Ok(())
        })
    }

    /// Forgets feeds no longer configured: their state and entries.
    pub fn forget_feeds_except(&self, names: &[&str]) -> Result<Vec<String>, StoreError> {
        let known: Vec<String> = {
            let conn = self.conn();
            let mut select = conn
                .prepare("SELECT name FROM feed_state")
                .map_err(sql(&self.path, "listing feeds"))?;
            select
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(sql(&self.path, "listing feeds"))?
                .collect::<Result<_, _>>()
                .map_err(sql(&self.path, "listing feeds"))?
        };
        let gone: Vec<String> = known
            .into_iter()
            .filter(|name| !names.contains(&name.as_str()))
            .collect();
        self.in_transaction("forgetting feeds", |tx| {
            for name in &gone {
                tx.execute("DELETE FROM feed_entries WHERE feed = ?1", params![name])
                    .map_err(sql(&self.path, "forgetting a feed"))?;
                tx.execute("DELETE FROM feed_state WHERE name = ?1", params![name])
                    .map_err(sql(&self.path, "forgetting a feed"))?;
            }
            Ok(())
        })?;
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        parse_target(text).expect("target")
    }

    #[test]
    fn a_feeds_state_and_entries_survive_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        let state = FeedState {
            etag: Some("\"v1\"".into()),
            last_modified: Some("Sun, 06 Dec 2026 10:00:00 GMT".into()),
            last_success: Some(1_800_000_000),
            last_error: None,
        };
        {
            let store = Store::open_in(dir.path()).expect("open");
            assert_eq!(store.feed_state("drop").expect("state"), None);
            store
                .put_feed(
                    "drop",
                    &[
                        (net("192.0.2.0/24"), "SBL1"),
                        (net("2001:db8::/32"), ""),
                        (net("198.51.100.1"), ""),
                    ],
                    &[],
                    &state,
                )
                .expect("put");
            store
                .put_feed("drop", &[], &[net("198.51.100.1")], &state)
                .expect("diff");
            store
                .put_feed(
                    "other",
                    &[(net("203.0.113.0/24"), "")],
                    &[],
                    &FeedState::default(),
                )
                .expect("other");
        }
        let store = Store::open_in(dir.path()).expect("reopen");
        assert_eq!(store.feed_state("drop").expect("state"), Some(state));
        let mut entries = store.feed_entries("drop").expect("entries");
        entries.sort();
        assert_eq!(
            entries,
            [
                (net("192.0.2.0/24"), "SBL1".to_owned()),
                (net("2001:db8::/32"), String::new())
            ]
        );
        assert_eq!(
            store.forget_feeds_except(&["drop"]).expect("forget"),
            ["other"]
        );
        assert!(store.feed_entries("other").expect("entries").is_empty());
        assert_eq!(store.feed_entries("drop").expect("entries").len(), 2);
    }

    fn feed_ban(target: &str, expires_at: Option<i64>, source: Source, reason: &str) -> StoredBan {
        StoredBan {
            target: net(target),
            expires_at,
            source,
            reason: reason.into(),
            detail: String::new(),
            count: 1,
            scope: crate::bans::BanScope::Default,
            first_banned_at: 900,
            last_banned_at: 900,
        }
    }

    #[test]
    fn only_the_feeds_live_bans_are_extended_and_read_back_when_one_is_not() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open_in(dir.path()).expect("open");
        let (now, until) = (1_000, 5_000);
        store
            .put_bans(&[
                feed_ban("192.0.2.1", Some(2_000), Source::Feed, "feed:drop"),
                feed_ban("192.0.2.2", Some(2_000), Source::Feed, "feed:drop SBL1"),
                feed_ban("192.0.2.3", Some(2_000), Source::Feed, "feed:dropped"),
                feed_ban("192.0.2.4", Some(2_000), Source::Cli, "feed:drop"),
                feed_ban("192.0.2.5", Some(500), Source::Feed, "feed:drop"),
                feed_ban("192.0.2.6", Some(9_000), Source::Feed, "feed:drop"),
                feed_ban("192.0.2.7", None, Source::Feed, "feed:drop"),
            ])
            .expect("put");
        let extend = |targets: &[&str], read_back| {
            let targets: Vec<IpNet> = targets.iter().map(|t| net(t)).collect();
            store
                .extend_feed_bans(&targets, "feed:drop", until, now, read_back)
                .expect("extend")
        };
        assert_eq!(
            extend(&["192.0.2.1", "192.0.2.2"], ReadBack::WhenPartial),
            Extended::Every
        );
        for text in ["192.0.2.1", "192.0.2.2"] {
            let row = store.get(&net(text)).expect("get").expect("row");
            assert_eq!(
                (row.expires_at, row.count, row.first_banned_at),
                (Some(until), 1, 900)
            );
        }
        // Another feed's, another source's, an expired, a longer and a
        // permanent ban: none extended, the first two read back as they
        // now are (they already end at `until`).
        let Extended::Rows(rows) = extend(
            &[
                "192.0.2.1",
                "192.0.2.2",
                "192.0.2.3",
                "192.0.2.4",
                "192.0.2.5",
                "192.0.2.6",
                "192.0.2.7",
            ],
            ReadBack::WhenPartial,
        ) else {
            panic!("some were not extended");
        };
        let mut read: Vec<(String, Option<i64>, String)> = rows
            .iter()
            .map(|row| {
                (
                    target_to_string(&row.target),
                    row.expires_at,
                    row.reason.clone(),
                )
            })
            .collect();
        read.sort();
        assert_eq!(
            read,
            [
                ("192.0.2.1".to_owned(), Some(until), "feed:drop".to_owned()),
                (
                    "192.0.2.2".to_owned(),
                    Some(until),
                    "feed:drop SBL1".to_owned()
                ),
            ]
        );
        for (text, left) in [
            ("192.0.2.3", Some(2_000)),
            ("192.0.2.4", Some(2_000)),
            ("192.0.2.5", Some(500)),
            ("192.0.2.6", Some(9_000)),
            ("192.0.2.7", None),
        ] {
            let row = store.get(&net(text)).expect("get").expect("row");
            assert_eq!(row.expires_at, left, "{text} left alone");
        }
    }

    #[test]
    fn bans_extended_are_read_back_when_asked_or_when_a_target_comes_twice() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open_in(dir.path()).expect("open");
        store
            .put_bans(&[
                feed_ban("192.0.2.1", Some(2_000), Source::Feed, "feed:drop"),
                feed_ban("2001:db8::/64", Some(2_000), Source::Feed, "feed:drop"),
            ])
            .expect("put");
        let both = [net("192.0.2.1"), net("2001:db8::/64")];
        let Extended::Rows(rows) = store
            .extend_feed_bans(&both, "feed:drop", 3_000, 1_000, ReadBack::Always)
            .expect("extend")
        else {
            panic!("asked to read back");
        };
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|row| row.expires_at == Some(3_000)));
        let twice = [net("192.0.2.1"), net("192.0.2.1")];
        let extended = store
            .extend_feed_bans(&twice, "feed:drop", 4_000, 1_000, ReadBack::WhenPartial)
            .expect("extend");
        let Extended::Rows(rows) = extended else {
            panic!("one row for two targets is not every target");
        };
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].expires_at, Some(4_000));
    }
}
