//! Blocklist feeds as a ban source (`[[feed]]`): each feed is fetched
//! every `refresh` (conditional GET, a size limit, a timeout), parsed
//! leniently and applied as a diff through the ban manager under the
//! source `feed:NAME`. A feed that fails keeps its entries until their
//! bantime runs out and says so in `status` and the metrics.
//!
//! [`config`] holds `[[feed]]`, [`parse`] reads bodies, [`fetch`] speaks
//! HTTP and reads files, [`apply`] applies the diff.

pub mod apply;
pub mod config;
pub mod fetch;
pub mod parse;

use std::{fmt::Write as _, sync::Arc, time::Instant};

use foldhash::HashMap;
use ipnet::IpNet;
use parking_lot::Mutex;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

pub use apply::FeedTarget;
pub use config::{FeedConfig, FeedFormat};

use crate::{
    bans::{
        Widest,
        store::{FeedState, Store},
    },
    clock::unix_now,
};

/// How one feed stands, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedHealth {
    pub entries: usize,
    /// Unix time of the last fetch that worked.
    pub last_success: Option<i64>,
    /// Why the last fetch failed; `None` once one works again.
    pub last_error: Option<String>,
    /// Bad lines and refused entries in the last list applied.
    pub bad_lines: usize,
    pub refused: usize,
}

/// Every feed's health, shared with `status`.
#[derive(Debug, Default)]
pub struct FeedBoard {
    feeds: Vec<(FeedConfig, Mutex<FeedHealth>)>,
}

impl FeedBoard {
    /// A line per feed: `NAME (URL): N entries, loaded TIME[, last error: …]`.
    pub fn describe(&self) -> Vec<String> {
        self.feeds
            .iter()
            .map(|(feed, health)| {
                let health = health.lock().clone();
                let loaded = health.last_success.map_or_else(
                    || "never loaded".to_owned(),
                    |at| {
                        format!(
                            "loaded {}",
                            crate::clock::rfc3339(crate::clock::system_time(at))
                        )
                    },
                );
                let mut line = format!(
                    "{} ({}): {} entries, {loaded}",
                    feed.source_name(),
                    feed.url,
                    health.entries
                );
                if health.bad_lines > 0 {
                    let _ = write!(line, ", {} bad lines", health.bad_lines);
                }
                if health.refused > 0 {
                    let _ = write!(line, ", {} refused", health.refused);
                }
                if let Some(error) = &health.last_error {
                    let _ = write!(line, ", last error: {error}");
                }
                line
            })
            .collect()
    }
}

/// What a feed holds between fetches.
struct Memory {
    state: FeedState,
    held: HashMap<IpNet, String>,
}

/// Starts one task per feed; each fetches at once, then every `refresh`,
/// until `stopped` turns true. Feeds no longer configured are forgotten
/// (their bans run out on their own).
pub fn start(
    feeds: &[FeedConfig],
    ban_widest: Widest,
    store: &Arc<Store>,
    target: &Arc<dyn FeedTarget>,
    stopped: &watch::Receiver<bool>,
) -> (Arc<FeedBoard>, Vec<JoinHandle<()>>) {
    let names: Vec<&str> = feeds.iter().map(|f| f.name.as_str()).collect();
    match store.forget_feeds_except(&names) {
        Ok(gone) if !gone.is_empty() => {
            info!(feeds = ?gone, "feeds no longer configured forgotten");
        }
        Ok(_) => {}
        Err(error) => warn!(%error, "forgetting old feeds failed"),
    }
    let board = Arc::new(FeedBoard {
        feeds: feeds
            .iter()
            .map(|feed| (feed.clone(), Mutex::new(FeedHealth::default())))
            .collect(),
    });
    let tasks = (0..feeds.len())
        .map(|at| {
            tokio::spawn(run(
                Arc::clone(&board),
                at,
                ban_widest,
                Arc::clone(store),
                Arc::clone(target),
                stopped.clone(),
            ))
        })
        .collect();
    (board, tasks)
}

async fn run(
    board: Arc<FeedBoard>,
    at: usize,
    ban_widest: Widest,
    store: Arc<Store>,
    target: Arc<dyn FeedTarget>,
    mut stopped: watch::Receiver<bool>,
) {
    let Some(feed) = board.feeds.get(at).map(|(feed, _)| feed.clone()) else {
        return;
    };
    let memory = {
        let store = Arc::clone(&store);
        let name = feed.name.clone();
        tokio::task::spawn_blocking(move || load(&store, &name)).await
    };
    let Ok(mut memory) = memory else { return };
    loop {
        let started = Instant::now();
        let job = {
            let (board, store, target, feed) = (
                Arc::clone(&board),
                Arc::clone(&store),
                Arc::clone(&target),
                feed.clone(),
            );
            tokio::task::spawn_blocking(move || {
                refresh(
                    &feed,
                    ban_widest,
                    &mut memory,
                    &store,
                    target.as_ref(),
                    &board,
                    at,
                );
                memory
            })
        };
        match job.await {
            Ok(kept) => memory = kept,
            Err(error) => {
                warn!(feed = %feed.name, %error, "feed refresh panicked; the feed stops");
                return;
            }
        }
        let wait = apply::next_wait(&feed, started.elapsed());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// The feed's saved validators and entries.
fn load(store: &Store, name: &str) -> Memory {
    let state = store.feed_state(name).unwrap_or_else(|error| {
        warn!(feed = name, %error, "reading the feed's state failed; fetching in full");
        None
    });
    let held = match store.feed_entries(name) {
        Ok(entries) => entries.into_iter().collect(),
        Err(error) => {
            warn!(feed = name, %error, "reading the feed's entries failed");
            HashMap::default()
        }
    };
    Memory {
        state: state.unwrap_or_default(),
        held,
    }
}

/// One fetch and application; every outcome lands in the board, the
/// metrics and the store.
fn refresh(
    feed: &FeedConfig,
    ban_widest: Widest,
    memory: &mut Memory,
    store: &Store,
    target: &dyn FeedTarget,
    board: &FeedBoard,
    at: usize,
) {
    let widest = apply::widest_for(feed, ban_widest);
    let started = Instant::now();
    let mut fetched = std::time::Duration::ZERO;
    let outcome = load_list(feed, memory).and_then(|(listed, validators, bad_lines)| {
        fetched = started.elapsed();
        let listed = listed.unwrap_or_else(|| memory.held.clone());
        apply::apply(feed, widest, &listed, &memory.held, target)
            .map(|applied| (applied, validators, bad_lines))
            .map_err(|e| format!("applying the list: {e}"))
    });
    let mut health = board
        .feeds
        .get(at)
        .map(|(_, health)| health.lock().clone())
        .unwrap_or_default();
    match outcome {
        Ok((applied, validators, bad_lines)) => {
            let now = unix_now();
            let state = FeedState {
                etag: validators.etag,
                last_modified: validators.last_modified,
                last_success: Some(now),
                last_error: None,
            };
            let added: Vec<(IpNet, &str)> = applied
                .held
                .iter()
                .filter(|(entry, tag)| memory.held.get(*entry) != Some(*tag))
                .map(|(entry, tag)| (*entry, tag.as_str()))
                .collect();
            let removed: Vec<IpNet> = memory
                .held
                .keys()
                .filter(|entry| !applied.held.contains_key(*entry))
                .copied()
                .collect();
            let applied_in = started.elapsed();
            if let Err(error) = store.put_feed(&feed.name, &added, &removed, &state) {
                warn!(feed = %feed.name, %error, "saving the feed's entries failed");
            }
            info!(
                feed = %feed.name,
                entries = applied.held.len(),
                added = added.len(),
                lifted = applied.lifted,
                refused = applied.refused,
                bad_lines,
                first_refusal = applied.first_refusal.as_deref().unwrap_or(""),
                ?fetched,
                ?applied_in,
                total = ?started.elapsed(),
                "feed applied"
            );
            health = FeedHealth {
                entries: applied.held.len(),
                last_success: Some(now),
                last_error: None,
                bad_lines,
                refused: applied.refused,
            };
            memory.held = applied.held;
            memory.state = state;
        }
        Err(error) => {
            warn!(feed = %feed.name, %error, "feed not loaded; its entries stay until their bantime runs out");
            metrics::counter!(crate::metrics::FEED_ERRORS, "feed" => feed.name.clone())
                .increment(1);
            memory.state.last_error = Some(error.clone());
            if let Err(error) = store.put_feed_state(&feed.name, &memory.state) {
                warn!(feed = %feed.name, %error, "saving the feed's state failed");
            }
            health.entries = memory.held.len();
            health.last_success = memory.state.last_success.or(health.last_success);
            health.last_error = Some(error);
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "a gauge")]
    {
        metrics::gauge!(crate::metrics::FEED_ENTRIES, "feed" => feed.name.clone())
            .set(health.entries as f64);
        if let Some(at) = health.last_success {
            metrics::gauge!(crate::metrics::FEED_LAST_SUCCESS, "feed" => feed.name.clone())
                .set(at as f64);
        }
    }
    if let Some((_, slot)) = board.feeds.get(at) {
        *slot.lock() = health;
    }
}

/// A fetch's outcome: the list (`None`: unchanged since the last fetch),
/// the new validators and the number of bad lines.
type Loaded = (Option<apply::Listed>, fetch::Validators, usize);

/// Fetches and parses.
fn load_list(feed: &FeedConfig, memory: &Memory) -> Result<Loaded, String> {
    let url = fetch::FeedUrl::parse(&feed.url)?;
    let known = fetch::Validators {
        etag: memory.state.etag.clone(),
        last_modified: memory.state.last_modified.clone(),
    };
    // Without entries held there is nothing an unchanged answer would keep.
    let asked = if memory.state.last_success.is_some() {
        known.clone()
    } else {
        fetch::Validators::default()
    };
    match fetch::fetch(&url, &asked, feed.max_size(), feed.timeout()) {
        Ok(fetch::Fetched::NotModified) => Ok((None, known, 0)),
        Ok(fetch::Fetched::Body { body, validators }) => {
            let parsed =
                parse::parse(feed.format, &body).map_err(|e| format!("{}: {e}", feed.url))?;
            Ok((
                Some(apply::deduplicate(parsed.entries)),
                validators,
                parsed.bad_lines,
            ))
        }
        Err(error) => Err(error.to_string()),
    }
}
