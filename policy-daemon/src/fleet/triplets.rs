//! Greylisting's first sightings, shared through Redis: one key per
//! triplet, `<prefix>:grey:<hex key>`, holding the Unix milliseconds of
//! the first sighting (signed with the fleet's secret when it has one),
//! set only if absent and expiring with `policy.greylist.expire`. One
//! `SET … NX PX … GET` per lookup: the host that sees a triplet first
//! writes the time, every other host reads it.
//!
//! A failed or late command makes greylisting go on locally; Redis is
//! tried again after [`RETRY_AFTER`], so an outage costs one timeout, not
//! one per request.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{FutureExt as _, future::BoxFuture};
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;

use super::Fleet;
use crate::policy::{SharedTriplets, greylist::TripletKey};

/// How long Redis is left alone after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Link state of the shared triplets.
#[derive(Debug, Default)]
struct State {
    conn: Option<MultiplexedConnection>,
    /// Until when Redis is not asked, after a failure.
    resting_until: Option<Instant>,
    last_error: Option<String>,
}

/// The fleet's greylisting triplets.
#[derive(Debug)]
pub struct FleetTriplets {
    fleet: Arc<Fleet>,
    state: Mutex<State>,
}

impl FleetTriplets {
    pub fn new(fleet: Arc<Fleet>) -> Self {
        Self {
            fleet,
            state: Mutex::new(State::default()),
        }
    }

    fn redis_key(&self, key: &TripletKey) -> String {
        format!(
            "{}:grey:{}",
            self.fleet.config.prefix,
            data_encoding::HEXLOWER.encode(key)
        )
    }

    /// The value stored for a sighting at `at`: `<ms>` or, signed,
    /// `<ms>.<hmac hex>` over the key and the time.
    fn value(&self, key: &TripletKey, at: i64) -> String {
        match &self.fleet.secret {
            Some(secret) => format!("{at}.{}", secret.tag(&signed_bytes(key, at))),
            None => at.to_string(),
        }
    }

    /// The sighting a stored value holds, if it is well formed and, with
    /// a secret, signed by it.
    fn read(&self, key: &TripletKey, value: &str) -> Option<i64> {
        let (at, tag) = match value.split_once('.') {
            Some((at, tag)) => (at, Some(tag)),
            None => (value, None),
        };
        let at: i64 = at.parse().ok()?;
        match (&self.fleet.secret, tag) {
            (Some(secret), Some(tag)) => secret.verify(&signed_bytes(key, at), tag).then_some(at),
            (Some(_), None) => None,
            (None, _) => Some(at),
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        {
            let state = self.state.lock();
            if let Some(conn) = &state.conn {
                return Ok(conn.clone());
            }
            if state
                .resting_until
                .is_some_and(|until| Instant::now() < until)
            {
                return Err(format!(
                    "Redis unreachable ({})",
                    state.last_error.as_deref().unwrap_or("unknown error")
                ));
            }
        }
        let client = redis::Client::open(self.fleet.config.redis.as_str())
            .map_err(|e| format!("{}: {e}", self.fleet.config.redacted_url()))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| {
                format!(
                    "connecting to {} timed out",
                    self.fleet.config.redacted_url()
                )
            })?
            .map_err(|e| format!("connecting to {}: {e}", self.fleet.config.redacted_url()))?;
        self.state.lock().conn = Some(conn.clone());
        Ok(conn)
    }

    fn failed(&self, error: &str) {
        let mut state = self.state.lock();
        state.conn = None;
        state.resting_until = Some(Instant::now() + RETRY_AFTER);
        state.last_error = Some(error.to_owned());
    }

    async fn sighting(&self, key: TripletKey, now: i64, expire: Duration) -> Result<i64, String> {
        let mut conn = self.connection().await.inspect_err(|e| self.failed(e))?;
        let redis_key = self.redis_key(&key);
        let ttl = u64::try_from(expire.as_millis()).unwrap_or(u64::MAX).max(1);
        let previous: Option<String> = redis::cmd("SET")
            .arg(&redis_key)
            .arg(self.value(&key, now))
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .arg("GET")
            .query_async(&mut conn)
            .await
            .map_err(|e| {
                let error = format!(
                    "SET on {} (key {redis_key}): {e}",
                    self.fleet.config.redacted_url()
                );
                self.failed(&error);
                error
            })?;
        {
            let mut state = self.state.lock();
            state.resting_until = None;
            state.last_error = None;
        }
        // A value this host cannot read (another secret, tampering) says
        // nothing: the local sighting stands.
        Ok(previous
            .and_then(|value| self.read(&key, &value))
            .unwrap_or(now))
    }
}

/// What a sighting's signature covers: the key, then the time as decimal
/// text.
fn signed_bytes(key: &TripletKey, at: i64) -> Vec<u8> {
    let mut bytes = key.to_vec();
    bytes.extend_from_slice(at.to_string().as_bytes());
    bytes
}

impl SharedTriplets for FleetTriplets {
    fn first_seen(
        &self,
        key: TripletKey,
        now: i64,
        expire: Duration,
    ) -> BoxFuture<'_, Result<i64, String>> {
        self.sighting(key, now, expire).boxed()
    }

    fn describe(&self) -> String {
        let state = self.state.lock();
        match (&state.conn, &state.last_error) {
            (_, Some(error)) => format!(
                "shared through {}: DOWN, greylisting locally ({error})",
                self.fleet.config.redacted_url()
            ),
            (Some(_), None) => format!("shared through {}", self.fleet.config.redacted_url()),
            (None, None) => format!(
                "shared through {} (not asked yet)",
                self.fleet.config.redacted_url()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bans::store::Store, fleet::FleetConfig};

    fn triplets(secret: Option<&[u8]>) -> (FleetTriplets, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config: FleetConfig =
            toml::from_str("redis = \"redis://127.0.0.1:1\"").expect("fleet config");
        if let Some(secret) = secret {
            let path = dir.path().join("secret");
            std::fs::write(&path, secret).expect("secret");
            config.secret_file = Some(path);
        }
        let store = Arc::new(Store::open_in(dir.path()).expect("store"));
        let fleet = Fleet::new(config, store).expect("fleet");
        (FleetTriplets::new(fleet), dir)
    }

    #[test]
    fn signed_sightings_verify_and_forged_ones_say_nothing() {
        let (signed, _dir) = triplets(Some(b"0123456789abcdef0123"));
        let key = [7; 16];
        let value = signed.value(&key, 1_700_000_000_000);
        assert_eq!(signed.read(&key, &value), Some(1_700_000_000_000));
        assert_eq!(signed.read(&key, "1600000000000"), None, "unsigned");
        let moved = value.replacen("17", "16", 1);
        assert_eq!(signed.read(&key, &moved), None, "time changed");
        assert_eq!(
            signed.read(&[8; 16], &value),
            None,
            "another triplet's value"
        );
        let (plain, _dir) = triplets(None);
        assert_eq!(plain.read(&key, "1700000000000"), Some(1_700_000_000_000));
        assert_eq!(plain.read(&key, "soon"), None);
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_then_rests() {
        let (shared, _dir) = triplets(None);
        let error = shared
            .first_seen([1; 16], 0, Duration::from_hours(1))
            .await
            .expect_err("nothing listens on port 1");
        assert!(error.contains("connecting"), "{error}");
        assert!(shared.describe().contains("DOWN"), "{}", shared.describe());
        let started = Instant::now();
        let again = shared
            .first_seen([1; 16], 0, Duration::from_hours(1))
            .await
            .expect_err("resting");
        assert!(again.contains("unreachable"), "{again}");
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
