//! The ban store: an embedded `SQLite` database, the source of truth for
//! every ban. The only module that speaks SQL.
//!
//! One row per address or prefix ever banned within the history age: the
//! current ban (expiry, source, reason, score detail) and the offence count
//! used for escalation. A lifted or expired ban keeps its row as history
//! until it is purged. A second table is the durable outbox of operations
//! waiting for an external backend (fail2ban).

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, PoisonError},
};

use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{
    BanScope, Source,
    fail2ban::{Fail2banOp, OpKind, OutboxStore},
    parse_target, target_to_string,
};

/// The columns a [`StoredBan`] is read from, in [`RawBan::read`]'s order.
const COLUMNS: &str =
    "target, expires_at, source, reason, detail, count, first_banned_at, last_banned_at, scope";

/// A `bans` row as `SQLite` gives it.
struct RawBan {
    target: String,
    expires_at: Option<i64>,
    source: String,
    reason: String,
    detail: String,
    count: i64,
    first_banned_at: i64,
    last_banned_at: i64,
    scope: Option<String>,
}

impl RawBan {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            target: row.get(0)?,
            expires_at: row.get(1)?,
            source: row.get(2)?,
            reason: row.get(3)?,
            detail: row.get(4)?,
            count: row.get(5)?,
            first_banned_at: row.get(6)?,
            last_banned_at: row.get(7)?,
            scope: row.get(8)?,
        })
    }

    /// The ban, or `None` (logged) when the row cannot be read as one.
    fn decode(self, path: &Path) -> Option<StoredBan> {
        let parsed = parse_target(&self.target)
            .map_err(|e| e.to_string())
            .and_then(|net| {
                source_from_name(&self.source)
                    .map(|source| (net, source))
                    .ok_or_else(|| format!("unknown source {:?}", self.source))
            });
        let (net, source) = match parsed {
            Ok(parsed) => parsed,
            Err(detail) => {
                tracing::error!(
                    "{}; row skipped",
                    StoreError::Corrupt {
                        path: path.to_owned(),
                        target: self.target,
                        detail,
                    }
                );
                return None;
            }
        };
        // A scope that cannot be read fails closed: all traffic.
        let scope = BanScope::from_text(self.scope.as_deref()).unwrap_or_else(|error| {
            tracing::error!(
                "{}; the ban holds on all traffic",
                StoreError::Corrupt {
                    path: path.to_owned(),
                    target: self.target.clone(),
                    detail: error.to_string(),
                }
            );
            BanScope::All
        });
        Some(StoredBan {
            target: net,
            expires_at: self.expires_at,
            source,
            reason: self.reason,
            detail: self.detail,
            count: u32::try_from(self.count.max(0)).unwrap_or(u32::MAX),
            scope,
            first_banned_at: self.first_banned_at,
            last_banned_at: self.last_banned_at,
        })
    }
}

/// Database file name inside `state_dir`.
pub const DB_FILE: &str = "spamwall.db";
const SCHEMA_VERSION: i64 = 1;

/// A store operation that failed, with the database it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ban store {path}: {operation}: {source}")]
    Sql {
        path: PathBuf,
        operation: &'static str,
        source: rusqlite::Error,
    },
    #[error("ban store {path}: creating its directory: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "ban store {path} has schema version {found}, newer than this spamwall ({SCHEMA_VERSION})"
    )]
    Schema { path: PathBuf, found: i64 },
    #[error("ban store {path}: row for {target:?} is corrupt: {detail}")]
    Corrupt {
        path: PathBuf,
        target: String,
        detail: String,
    },
}

/// A ban as the store keeps it. Times are Unix seconds (UTC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBan {
    pub target: IpNet,
    /// `None`: permanent.
    pub expires_at: Option<i64>,
    pub source: Source,
    pub reason: String,
    /// Score detail of a policy verdict, empty otherwise.
    pub detail: String,
    /// Bans of this target within the history age, this one included.
    pub count: u32,
    /// The destination ports the ban holds on.
    pub scope: BanScope,
    pub first_banned_at: i64,
    pub last_banned_at: i64,
}

impl StoredBan {
    /// Whether the ban holds at `now`.
    pub fn is_active(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// An operation queued for an external backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: u64,
    pub op: String,
    pub target: String,
}

/// The `SQLite` ban store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// A second connection that copies the write-ahead log into the
    /// database in the background ([`Store::checkpoint`]), so no ban's
    /// commit pays for it; opened on first use.
    checkpointer: Mutex<Option<Connection>>,
}

impl Store {
    /// Opens (creating if needed) `state_dir/spamwall.db`.
    pub fn open_in(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Dir {
            path: state_dir.to_owned(),
            source,
        })?;
        Self::open(&state_dir.join(DB_FILE))
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(sql(path, "opening"))?;
        let store = Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            checkpointer: Mutex::new(None),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `body` in one transaction, committed (durable) when it
    /// succeeds; `committing` names the commit in an error.
    fn in_transaction<T>(
        &self,
        committing: &'static str,
        body: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(sql(&self.path, "beginning a transaction"))?;
        let value = body(&tx)?;
        tx.commit().map_err(sql(&self.path, committing))?;
        Ok(value)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let conn = self.conn();
        // WAL + FULL: a ban acknowledged to its caller is on disk, and
        // readers never wait for the writer.
        // A large page cache keeps bulk bans (hundreds of thousands of rows
        // in one transaction) from spilling to disk mid-transaction.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; \
             PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 65536;",
        )
        .map_err(sql(&self.path, "setting pragmas"))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(sql(&self.path, "reading the schema version"))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Schema {
                path: self.path.clone(),
                found: version,
            });
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS bans (
                target TEXT PRIMARY KEY,
                expires_at INTEGER,
                source TEXT NOT NULL,
                reason TEXT NOT NULL,
                detail TEXT NOT NULL DEFAULT '',
                count INTEGER NOT NULL,
                first_banned_at INTEGER NOT NULL,
                last_banned_at INTEGER NOT NULL,
                scope TEXT
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                backend TEXT NOT NULL,
                op TEXT NOT NULL,
                target TEXT NOT NULL,
                queued_at INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS outbox_backend ON outbox(backend, id);
            CREATE TABLE IF NOT EXISTS logwatch_positions (
                source TEXT PRIMARY KEY,
                inode INTEGER,
                offset INTEGER,
                head_hash INTEGER,
                cursor TEXT
            ) WITHOUT ROWID;
            PRAGMA user_version = 1;",
        )
        .map_err(sql(&self.path, "creating the schema"))?;
        // Added within schema version 1: older versions name their columns
        // and leave this one alone, so they can still open the store.
        let has_scope: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('bans') WHERE name = 'scope'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map_err(sql(&self.path, "reading the schema"))?
            > 0;
        if !has_scope {
            conn.execute_batch("ALTER TABLE bans ADD COLUMN scope TEXT;")
                .map_err(sql(&self.path, "adding the scope column"))?;
        }
        feeds::create(&conn, self)
    }

    /// Writes bans (inserted or replaced) in one transaction: when this
    /// returns, all of them are durable. Many rows go [`ROWS_PER_INSERT`]
    /// to a statement.
    pub fn put_bans(&self, bans: &[StoredBan]) -> Result<(), StoreError> {
        // In the order of the primary key: each row lands next to the one
        // before it in the B-tree instead of at a random page.
        let batch = Batch::new(bans);
        self.in_transaction("committing bans", |tx| {
            let mut chunks = batch.order.chunks_exact(ROWS_PER_INSERT);
            for chunk in &mut chunks {
                let sharing = batch.shares_text(chunk);
                let upsert = if sharing {
                    &*batch::UPSERT_SHARING
                } else {
                    &*batch::UPSERT_MANY
                };
                let mut insert = tx
                    .prepare_cached(upsert)
                    .map_err(sql(&self.path, "preparing the ban insert"))?;
                batch
                    .bind(&mut insert, chunk, sharing)
                    .map_err(sql(&self.path, "writing bans"))?;
                insert
                    .raw_execute()
                    .map_err(sql(&self.path, "writing bans"))?;
            }
            let mut insert = tx
                .prepare_cached(&batch::UPSERT_ONE)
                .map_err(sql(&self.path, "preparing the ban insert"))?;
            for row in chunks.remainder() {
                batch
                    .bind(&mut insert, std::slice::from_ref(row), false)
                    .map_err(sql(&self.path, "writing a ban"))?;
                insert
                    .raw_execute()
                    .map_err(sql(&self.path, "writing a ban"))?;
            }
            Ok(())
        })
    }

    /// Ends the ban on `target` at `now`, keeping its history; `false` when
    /// it was not active.
    pub fn end_ban(&self, target: &IpNet, now: i64) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE bans SET expires_at = ?2 WHERE target = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                params![target_to_string(target), now],
            )
            .map_err(sql(&self.path, "ending a ban"))?;
        Ok(changed > 0)
    }

    /// Ends the bans on `targets` at `now` in one transaction (one sync to
    /// disk for the lot); each flag says whether that ban was active.
    pub fn end_bans(&self, targets: &[IpNet], now: i64) -> Result<Vec<bool>, StoreError> {
        self.in_transaction("committing ended bans", |tx| {
            let mut update = tx
                .prepare_cached(
                    "UPDATE bans SET expires_at = ?2 WHERE target = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                )
                .map_err(sql(&self.path, "preparing the ban update"))?;
            targets
                .iter()
                .map(|target| {
                    update
                        .execute(params![target_to_string(target), now])
                        .map(|changed| changed > 0)
                        .map_err(sql(&self.path, "ending a ban"))
                })
                .collect()
        })
    }

    /// Every row: active bans and history. A row that cannot be read as a
    /// ban (an unparseable target or source, written by something else) is
    /// skipped with an error in the log; out-of-range numbers are clamped,
    /// so one damaged row never keeps the daemon from starting.
    pub fn all(&self) -> Result<Vec<StoredBan>, StoreError> {
        let mut bans = Vec::new();
        self.each(|ban| bans.push(ban))?;
        Ok(bans)
    }

    /// Calls `visit` with every row, as [`Store::all`] reads them, without
    /// holding them all at once.
    pub fn each(&self, visit: impl FnMut(StoredBan)) -> Result<(), StoreError> {
        self.select(&format!("SELECT {COLUMNS} FROM bans"), [], visit)
    }

    /// Copies the write-ahead log into the database without blocking the
    /// writer (`PASSIVE`). The daemon calls it every second; the writer
    /// itself checkpoints only past 65,536 pages (256 MiB) of log, should
    /// this stop.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let mut slot = self
            .checkpointer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            let conn = Connection::open(&self.path).map_err(sql(&self.path, "opening"))?;
            conn.execute_batch("PRAGMA busy_timeout = 1000;")
                .map_err(sql(&self.path, "setting pragmas"))?;
            *slot = Some(conn);
        }
        if let Some(conn) = slot.as_ref() {
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(sql(&self.path, "checkpointing"))?;
        }
        Ok(())
    }

    /// Frees the page cache (after a bulk write: it refills on demand).
    pub fn release_memory(&self) -> Result<(), StoreError> {
        self.conn()
            .execute_batch("PRAGMA shrink_memory;")
            .map_err(sql(&self.path, "releasing memory"))
    }

    /// The row of exactly `target`.
    pub fn get(&self, target: &IpNet) -> Result<Option<StoredBan>, StoreError> {
        let mut found = None;
        self.select(
            &format!("SELECT {COLUMNS} FROM bans WHERE target = ?1"),
            [target_to_string(target)],
            |ban| found = Some(ban),
        )?;
        Ok(found)
    }

    fn select(
        &self,
        query: &str,
        params: impl rusqlite::Params,
        mut visit: impl FnMut(StoredBan),
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        let mut query = conn
            .prepare_cached(query)
            .map_err(sql(&self.path, "preparing the ban query"))?;
        let mut rows = query
            .query(params)
            .map_err(sql(&self.path, "reading bans"))?;
        while let Some(row) = rows.next().map_err(sql(&self.path, "reading a ban"))? {
            let raw = RawBan::read(row).map_err(sql(&self.path, "reading a ban"))?;
            if let Some(ban) = raw.decode(&self.path) {
                visit(ban);
            }
        }
        Ok(())
    }

    /// Deletes every row whose ban ended before `cutoff` (history older than the
    /// history age); returns how many went.
    pub fn purge(&self, cutoff: i64) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "DELETE FROM bans WHERE expires_at IS NOT NULL AND expires_at < ?1 AND last_banned_at < ?1",
                params![cutoff],
            )
            .map_err(sql(&self.path, "purging old bans"))
    }

    /// [`Store::purge`] for exactly `targets`, by key, in one transaction;
    /// a row banned again since it was chosen stays.
    pub fn purge_targets(&self, targets: &[IpNet], cutoff: i64) -> Result<usize, StoreError> {
        self.in_transaction("purging old bans", |tx| {
            let mut delete = tx
                .prepare_cached(
                    "DELETE FROM bans WHERE target = ?1 AND expires_at IS NOT NULL AND expires_at < ?2 AND last_banned_at < ?2",
                )
                .map_err(sql(&self.path, "preparing the purge"))?;
            let mut purged = 0;
            for target in targets {
                purged += delete
                    .execute(params![target_to_string(target), cutoff])
                    .map_err(sql(&self.path, "purging an old ban"))?;
            }
            Ok(purged)
        })
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Queues an operation for `backend`; returns its id.
    pub fn outbox_push(
        &self,
        backend: &str,
        op: &str,
        target: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        self.outbox_push_many(backend, &[(op, target.to_owned())], now)
            .map(|ids| ids.first().copied().unwrap_or_default())
    }

    /// Operations still waiting for `backend`, oldest first.
    pub fn outbox_pending(&self, backend: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let conn = self.conn();
        let mut query = conn
            .prepare_cached("SELECT id, op, target FROM outbox WHERE backend = ?1 ORDER BY id")
            .map_err(sql(&self.path, "preparing the outbox query"))?;
        let rows = query
            .query_map(params![backend], |row| {
                Ok(OutboxRow {
                    id: row.get::<_, i64>(0)?.unsigned_abs(),
                    op: row.get(1)?,
                    target: row.get(2)?,
                })
            })
            .map_err(sql(&self.path, "reading the outbox"))?;
        rows.collect::<Result<_, _>>()
            .map_err(sql(&self.path, "reading the outbox"))
    }

    /// Removes a delivered operation.
    pub fn outbox_remove(&self, id: u64) -> Result<(), StoreError> {
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        self.conn()
            .execute("DELETE FROM outbox WHERE id = ?1", params![id])
            .map(drop)
            .map_err(sql(&self.path, "removing a delivered operation"))
    }

    /// Queues several `(op, payload)` operations for `backend` in one
    /// transaction; returns their ids.
    pub fn outbox_push_many(
        &self,
        backend: &str,
        ops: &[(&str, String)],
        now: i64,
    ) -> Result<Vec<u64>, StoreError> {
        self.in_transaction("committing queued operations", |tx| {
            let mut ids = Vec::with_capacity(ops.len());
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO outbox (backend, op, target, queued_at) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql(&self.path, "preparing the outbox insert"))?;
            for (op, payload) in ops {
                insert
                    .execute(params![backend, op, payload, now])
                    .map_err(sql(&self.path, "queueing an operation"))?;
                ids.push(tx.last_insert_rowid().unsigned_abs());
            }
            Ok(ids)
        })
    }

    /// Removes several delivered operations in one transaction.
    pub fn outbox_remove_many(&self, ids: &[u64]) -> Result<(), StoreError> {
        self.in_transaction("committing removed operations", |tx| {
            let mut delete = tx
                .prepare_cached("DELETE FROM outbox WHERE id = ?1")
                .map_err(sql(&self.path, "preparing the outbox delete"))?;
            for &id in ids {
                delete
                    .execute(params![i64::try_from(id).unwrap_or(i64::MAX)])
                    .map_err(sql(&self.path, "removing a delivered operation"))?;
            }
            Ok(())
        })
    }

    /// Where the log watcher stopped reading `source`, if it ever read it.
    pub fn logwatch_position(&self, source: &str) -> Result<Option<LogPosition>, StoreError> {
        self.conn()
            .query_row(
                "SELECT inode, offset, head_hash, cursor FROM logwatch_positions WHERE source = ?1",
                params![source],
                |row| {
                    Ok(LogPosition {
                        inode: u64_from_sql(row.get::<_, Option<i64>>(0)?.unwrap_or(0)),
                        offset: u64_from_sql(row.get::<_, Option<i64>>(1)?.unwrap_or(0)),
                        head_hash: u64_from_sql(row.get::<_, Option<i64>>(2)?.unwrap_or(0)),
                        cursor: row.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(sql(&self.path, "reading a log position"))
    }

    /// Records where the log watcher is in `source` (durable on return).
    pub fn put_logwatch_position(
        &self,
        source: &str,
        position: &LogPosition,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO logwatch_positions (source, inode, offset, head_hash, cursor)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (source) DO UPDATE SET inode = excluded.inode,
                    offset = excluded.offset, head_hash = excluded.head_hash, cursor = excluded.cursor",
                params![
                    source,
                    u64_to_sql(position.inode),
                    u64_to_sql(position.offset),
                    u64_to_sql(position.head_hash),
                    position.cursor,
                ],
            )
            .map(drop)
            .map_err(sql(&self.path, "writing a log position"))
    }

    /// How many operations wait for `backend`.
    pub fn outbox_len(&self, backend: &str) -> Result<u64, StoreError> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE backend = ?1",
                params![backend],
                |row| row.get::<_, i64>(0),
            )
            .optional()
            .map(|n| n.unwrap_or(0).unsigned_abs())
            .map_err(sql(&self.path, "counting the outbox"))
    }
}

/// The `outbox.backend` value of fail2ban's operations.
const FAIL2BAN_OUTBOX: &str = "fail2ban";

/// The fail2ban backend's durable queue, in table `outbox`.
impl OutboxStore for Store {
    type Error = StoreError;

    fn push(&self, op: &Fail2banOp) -> Result<u64, StoreError> {
        self.push_many(std::slice::from_ref(op))
            .map(|ids| ids.first().copied().unwrap_or_default())
    }

    fn push_many(&self, ops: &[Fail2banOp]) -> Result<Vec<u64>, StoreError> {
        let rows: Vec<(&str, String)> = ops
            .iter()
            .map(|op| (op.kind.as_str(), target_to_string(&op.target)))
            .collect();
        self.outbox_push_many(FAIL2BAN_OUTBOX, &rows, crate::clock::unix_now())
    }

    fn pending(&self) -> Result<Vec<(u64, Fail2banOp)>, StoreError> {
        self.outbox_pending(FAIL2BAN_OUTBOX)?
            .into_iter()
            .map(|row| {
                let corrupt = |detail: String| StoreError::Corrupt {
                    path: self.path.clone(),
                    target: row.target.clone(),
                    detail,
                };
                let kind: OpKind = row
                    .op
                    .parse()
                    .map_err(|e: super::fail2ban::UnknownOpKind| corrupt(e.to_string()))?;
                let target = parse_target(&row.target).map_err(|e| corrupt(e.to_string()))?;
                Ok((row.id, Fail2banOp { kind, target }))
            })
            .collect()
    }

    fn remove(&self, id: u64) -> Result<(), StoreError> {
        self.outbox_remove(id)
    }
}

/// A log source's read position: for a file its inode, the offset just
/// past the last line processed and a hash of its first line (to notice a
/// file replaced in place); for the journal the cursor of the last entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogPosition {
    pub inode: u64,
    pub offset: u64,
    /// 0: not known yet (no complete first line).
    pub head_hash: u64,
    pub cursor: Option<String>,
}

/// `SQLite` integers are signed: inodes and hashes keep their bits.
fn u64_to_sql(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

fn u64_from_sql(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

fn source_from_name(name: &str) -> Option<Source> {
    Source::ALL
        .into_iter()
        .find(|source| source.to_string() == name)
}

fn sql<'a>(path: &'a Path, operation: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::Sql {
        path: path.to_owned(),
        operation,
        source,
    }
}

mod batch;
mod feeds;
mod keys;
mod scan;

use batch::{Batch, ROWS_PER_INSERT};

pub use feeds::{Extended, FeedState, ReadBack};
pub use keys::in_key_order;
pub use scan::{ActiveBans, BanFilter, SCAN_CHUNK};

#[cfg(test)]
mod tests;
