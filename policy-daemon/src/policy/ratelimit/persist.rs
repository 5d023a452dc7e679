//! The counters on disk: table `ratelimit` in the daemon's database, on a
//! connection of its own. Written behind — the changes of a few seconds in
//! one transaction, and at shutdown — never on a request's path. The only
//! SQL outside the ban store, and it touches only its own table.

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use rusqlite::{Connection, params};

use super::{
    table::{Entry, Row, Table},
    window::Window,
};

/// Why the counters could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("rate limit counters in {}: {operation}: {source}", path.display())]
pub struct PersistError {
    pub path: PathBuf,
    pub operation: &'static str,
    pub source: rusqlite::Error,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS ratelimit (
    key BLOB PRIMARY KEY,
    length_ms INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    current INTEGER NOT NULL,
    previous INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    banned INTEGER NOT NULL
) WITHOUT ROWID";

/// The connection to the counters' table.
#[derive(Debug)]
pub struct Persist {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// `SQLite`'s integers are signed: counts and times beyond `i64::MAX` (no
/// clock or count gets there) are stored as `i64::MAX`.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Persist {
    /// Opens `path` (the daemon's database) and creates the table if
    /// needed.
    pub fn open(path: &Path) -> Result<Self, PersistError> {
        let failed = |operation| {
            move |source| PersistError {
                path: path.to_owned(),
                operation,
                source,
            }
        };
        let conn = Connection::open(path).map_err(failed("opening"))?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(failed("setting pragmas"))?;
        conn.execute_batch(SCHEMA)
            .map_err(failed("creating table ratelimit"))?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn failed(&self, operation: &'static str) -> impl FnOnce(rusqlite::Error) -> PersistError {
        let path = self.path.clone();
        move |source| PersistError {
            path,
            operation,
            source,
        }
    }

    /// Loads the counters still live at `now` into `table`, the most
    /// recently counted first, at most `limit` of them.
    pub fn load(&self, table: &Table, now: u64, limit: usize) -> Result<usize, PersistError> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut statement = conn
            .prepare(
                "SELECT key, length_ms, start_ms, current, previous, last_ms, banned FROM ratelimit \
                 WHERE start_ms + 2 * length_ms > ?1 ORDER BY last_ms DESC LIMIT ?2",
            )
            .map_err(self.failed("reading"))?;
        let rows = statement
            .query_map(params![signed(now), signed(limit as u64)], |row| {
                Ok(Row {
                    key: row.get::<_, Vec<u8>>(0)?.into_boxed_slice(),
                    entry: Entry {
                        length: unsigned(row.get(1)?),
                        window: Window {
                            start: unsigned(row.get(2)?),
                            current: unsigned(row.get(3)?),
                            previous: unsigned(row.get(4)?),
                        },
                        last: unsigned(row.get(5)?),
                        banned: unsigned(row.get(6)?),
                    },
                })
            })
            .map_err(self.failed("reading"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.failed("reading"))?;
        let loaded = rows.len();
        table.load(rows.into_iter().filter(|row| row.entry.length > 0), now);
        Ok(loaded)
    }

    /// Writes what changed in `table` since the last write, and deletes
    /// what expired or was dropped, in one transaction. On failure the
    /// next write takes everything again.
    pub fn flush(&self, table: &Table, now: u64) -> Result<usize, PersistError> {
        let changes = table.changes(now);
        let written = self.write(&changes, now);
        if written.is_err() {
            table.rewrite_all();
        }
        written
    }

    fn write(&self, changes: &super::table::Changes, now: u64) -> Result<usize, PersistError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = conn.transaction().map_err(self.failed("beginning"))?;
        if changes.rewrite {
            tx.execute("DELETE FROM ratelimit", [])
                .map_err(self.failed("clearing"))?;
        }
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM ratelimit WHERE key = ?1")
                .map_err(self.failed("deleting"))?;
            for key in &changes.gone {
                delete
                    .execute(params![&**key])
                    .map_err(self.failed("deleting"))?;
            }
            let mut upsert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO ratelimit \
                     (key, length_ms, start_ms, current, previous, last_ms, banned) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(self.failed("writing"))?;
            for row in &changes.rows {
                let entry = &row.entry;
                upsert
                    .execute(params![
                        &*row.key,
                        signed(entry.length),
                        signed(entry.window.start),
                        signed(entry.window.current),
                        signed(entry.window.previous),
                        signed(entry.last),
                        signed(entry.banned),
                    ])
                    .map_err(self.failed("writing"))?;
            }
        }
        tx.execute(
            "DELETE FROM ratelimit WHERE start_ms + 2 * length_ms <= ?1",
            params![signed(now)],
        )
        .map_err(self.failed("deleting expired counters"))?;
        tx.commit().map_err(self.failed("committing"))?;
        Ok(changes.rows.len())
    }

    /// Counters on disk.
    #[cfg(test)]
    pub fn stored(&self) -> usize {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        conn.query_row("SELECT COUNT(*) FROM ratelimit", [], |row| {
            row.get::<_, i64>(0)
        })
        .map_or(0, |count| usize::try_from(count).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    fn count(table: &Table, key: &str, add: u64, now: u64) -> u64 {
        table.update(key.as_bytes(), MINUTE, now, |entry| {
            entry.window.add(add, now, MINUTE)
        })
    }

    #[test]
    fn counters_survive_a_restart_and_expired_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spamwall.db");
        let now = 1_000 * MINUTE;
        {
            let persist = Persist::open(&path).expect("open");
            let table = Table::new(100);
            count(&table, "live", 5, now);
            count(&table, "old", 3, now - 2 * MINUTE);
            assert_eq!(persist.flush(&table, now - MINUTE).expect("flush"), 2);
            count(&table, "live", 1, now + 1);
            assert_eq!(persist.flush(&table, now + 1).expect("flush"), 1);
            assert_eq!(persist.stored(), 1, "the expired counter is deleted");
        }
        let persist = Persist::open(&path).expect("reopen");
        let table = Table::new(100);
        assert_eq!(persist.load(&table, now + 2, 100).expect("load"), 1);
        assert_eq!(count(&table, "live", 1, now + 3), 7);
        assert_eq!(count(&table, "old", 1, now + 3), 1);
    }

    #[test]
    fn dropped_counters_are_deleted_and_the_disk_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spamwall.db");
        let persist = Persist::open(&path).expect("open");
        let table = Table::new(64);
        let now = 1_000 * MINUTE;
        for round in 0..20_u64 {
            for i in 0..50_u64 {
                count(&table, &format!("k{round}-{i}"), 1, now + round * 100 + i);
            }
            persist
                .flush(&table, now + round * 100 + 99)
                .expect("flush");
        }
        assert!(persist.stored() <= 64, "{}", persist.stored());
        assert_eq!(persist.stored(), table.len());
    }

    #[test]
    fn a_database_that_is_not_one_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spamwall.db");
        std::fs::write(&path, b"not a database at all, just text ......").expect("write");
        let error = Persist::open(&path).expect_err("garbage").to_string();
        assert!(error.contains("spamwall.db"), "{error}");
    }
}
