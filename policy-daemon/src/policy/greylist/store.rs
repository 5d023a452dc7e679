//! Greylisting state on disk: two tables in the daemon's `SQLite` store,
//! written behind the requests in one transaction per save, read back at
//! start. Its own connection: a save never waits for a ban's commit
//! beyond `SQLite`'s own write lock.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::table::{Changes, Client, NetworkKey, Triplet, TripletKey};

/// Why the greylisting state could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("greylisting state in {}: {operation}: {source}", path.display())]
    Sql {
        path: PathBuf,
        operation: &'static str,
        source: rusqlite::Error,
    },
    #[error("greylisting state in {}: starting the save thread: {source}", path.display())]
    Thread {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StateError {
    pub fn thread(path: &Path, source: std::io::Error) -> Self {
        Self::Thread {
            path: path.to_owned(),
            source,
        }
    }
}

fn sql(path: &Path, operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StateError {
    let path = path.to_owned();
    move |source| StateError::Sql {
        path,
        operation,
        source,
    }
}

/// The greylisting tables of one database file.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    conn: Connection,
}

/// What the store holds.
pub type Rows = (Vec<(TripletKey, Triplet)>, Vec<(NetworkKey, Client)>);

impl StateStore {
    /// Opens `path` (the daemon's store, or any `SQLite` file) and creates
    /// the tables if needed.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let conn = Connection::open(path).map_err(sql(path, "opening"))?;
        // Losing the last second of greylisting state to a power cut only
        // makes a few retries wait again: no sync per save.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS greylist_triplets (
                 key BLOB PRIMARY KEY, first_seen INTEGER NOT NULL,
                 last_seen INTEGER NOT NULL, passed INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS greylist_clients (
                 network BLOB PRIMARY KEY, passes INTEGER NOT NULL,
                 last_seen INTEGER NOT NULL) WITHOUT ROWID;",
        )
        .map_err(sql(path, "creating the tables"))?;
        Ok(Self {
            path: path.to_owned(),
            conn,
        })
    }

    /// Every row; rows whose key has the wrong size are skipped.
    pub fn load(&self) -> Result<Rows, StateError> {
        let path = &self.path;
        let mut statement = self
            .conn
            .prepare("SELECT key, first_seen, last_seen, passed FROM greylist_triplets")
            .map_err(sql(path, "reading triplets"))?;
        let triplets = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    Triplet {
                        first_seen: row.get(1)?,
                        last_seen: row.get(2)?,
                        passed: row.get(3)?,
                    },
                ))
            })
            .map_err(sql(path, "reading triplets"))?
            .filter_map(|row| {
                row.ok()
                    .and_then(|(key, t)| TripletKey::try_from(key).ok().map(|k| (k, t)))
            })
            .collect();
        let mut statement = self
            .conn
            .prepare("SELECT network, passes, last_seen FROM greylist_clients")
            .map_err(sql(path, "reading clients"))?;
        let clients = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    Client {
                        passes: row.get(1)?,
                        last_seen: row.get(2)?,
                    },
                ))
            })
            .map_err(sql(path, "reading clients"))?
            .filter_map(|row| {
                row.ok()
                    .and_then(|(key, c)| NetworkKey::try_from(key).ok().map(|k| (k, c)))
            })
            .collect();
        Ok((triplets, clients))
    }

    /// Writes `triplets` and `clients` in one transaction.
    pub fn save(
        &mut self,
        triplets: &Changes<TripletKey, Triplet>,
        clients: &Changes<NetworkKey, Client>,
    ) -> Result<(), StateError> {
        if triplets.is_empty() && clients.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(sql(&path, "beginning a save"))?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO greylist_triplets (key, first_seen, last_seen, passed) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(sql(&path, "saving triplets"))?;
            let mut delete = tx
                .prepare_cached("DELETE FROM greylist_triplets WHERE key = ?1")
                .map_err(sql(&path, "saving triplets"))?;
            for (key, change) in triplets {
                match change {
                    Some(t) => put.execute(params![&key[..], t.first_seen, t.last_seen, t.passed]),
                    None => delete.execute(params![&key[..]]),
                }
                .map_err(sql(&path, "saving triplets"))?;
            }
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO greylist_clients (network, passes, last_seen) \
                     VALUES (?1, ?2, ?3)",
                )
                .map_err(sql(&path, "saving clients"))?;
            let mut delete = tx
                .prepare_cached("DELETE FROM greylist_clients WHERE network = ?1")
                .map_err(sql(&path, "saving clients"))?;
            for (network, change) in clients {
                match change {
                    Some(c) => put.execute(params![&network[..], c.passes, c.last_seen]),
                    None => delete.execute(params![&network[..]]),
                }
                .map_err(sql(&path, "saving clients"))?;
            }
        }
        tx.commit().map_err(sql(&path, "committing a save"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_rows_load_back_and_removals_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spamwall.db");
        let mut store = StateStore::open(&path).expect("open");
        let triplet = Triplet {
            first_seen: 1,
            last_seen: 2,
            passed: true,
        };
        let client = Client {
            passes: 3,
            last_seen: 4,
        };
        let mut triplets = Changes::default();
        triplets.insert([1; 16], Some(triplet));
        triplets.insert([2; 16], Some(triplet));
        let mut clients = Changes::default();
        clients.insert([4; 17], Some(client));
        store.save(&triplets, &clients).expect("save");
        let mut removal = Changes::default();
        removal.insert([2; 16], None);
        store.save(&removal, &Changes::default()).expect("remove");
        drop(store);
        let (triplets, clients) = StateStore::open(&path)
            .expect("reopen")
            .load()
            .expect("load");
        assert_eq!(triplets, vec![([1; 16], triplet)]);
        assert_eq!(clients, vec![([4; 17], client)]);
    }
}
