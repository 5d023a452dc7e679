//! Applying a feed's list as a diff through the ban manager: entries
//! listed are banned (or extended) until `bantime` from now, entries no
//! longer listed are lifted when this feed's ban is what holds them.

use std::time::Duration;

use foldhash::{HashMap, HashMapExt as _, HashSet};
use ipnet::IpNet;

use super::config::FeedConfig;
use crate::{
    bans::{
        BanError, BanLength, BanManager, BanRequest, BanScope, Breadth, Source, Widest,
        canonical_net, store::in_key_order, target_to_string,
    },
    clock::{secs_i64, unix_now},
};

/// Bans per hold of the manager's lock: other bans wait no longer than
/// one batch.
const BATCH: usize = 8_192;
/// Unbans per hold of the manager's lock.
const LIFT_BATCH: usize = 512;

/// Runs `step` with the ban manager locked; the lock is released between
/// steps so other bans go through.
pub trait FeedTarget: Send + Sync {
    fn with_manager(&self, step: &mut dyn FnMut(&mut BanManager));
}

/// What applying a list did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The entries the feed now holds, with their tags.
    pub held: Listed,
    /// Entries refused (allowlist, own address, wider than the feed's
    /// widest prefix), and the first refusal.
    pub refused: usize,
    pub first_refusal: Option<String>,
    /// Bans lifted because the feed no longer lists them.
    pub lifted: usize,
}

/// The feed's ban reason: `feed:NAME` and the entry's tag.
pub fn reason(feed: &FeedConfig, tag: &str) -> String {
    if tag.is_empty() {
        feed.source_name()
    } else {
        format!("{} {tag}", feed.source_name())
    }
}

/// Whether a ban with `reason` was made by `feed`.
fn made_by(feed: &FeedConfig, reason: &str) -> bool {
    reason.split(' ').next() == Some(feed.source_name().as_str())
}

/// A feed's entries with their tags.
pub type Listed = HashMap<IpNet, String>;

/// Bans every entry of `listed` until `bantime` from now, then lifts the
/// entries of `before` no longer held. A store failure fails the whole
/// application: nothing is recorded and the old list stays in force.
pub fn apply(
    feed: &FeedConfig,
    widest: Widest,
    listed: &Listed,
    before: &Listed,
    target: &dyn FeedTarget,
) -> Result<Applied, BanError> {
    let mut applied = Applied {
        held: HashMap::with_capacity(listed.len()),
        ..Applied::default()
    };
    let until = unix_now().saturating_add(secs_i64(feed.bantime()));
    let mut requests = Vec::with_capacity(listed.len());
    // Listed before with the same tag: most likely still this feed's ban,
    // extended in place; whatever is not goes through the ban path.
    let mut kept = Vec::new();
    for (&entry, tag) in listed {
        if let Some(limit) = widest.exceeded_by(&entry) {
            applied.refused += 1;
            applied.first_refusal.get_or_insert_with(|| {
                format!(
                    "{} is wider than the feed's widest prefix (/{limit})",
                    target_to_string(&entry)
                )
            });
            continue;
        }
        if before.get(&entry) == Some(tag) {
            kept.push(entry);
        } else {
            requests.push(ban_request(feed, entry, tag, until));
        }
    }
    // In the store's key order, each batch rewrites a run of neighbouring
    // pages instead of most of the table: a feed's list comes in no order.
    let kept = in_key_order(kept, |entry| entry);
    let word = feed.source_name();
    for batch in kept.chunks(BATCH) {
        let mut extended = Ok(Vec::new());
        target.with_manager(&mut |manager| {
            extended = manager.extend_feed(batch, &word, until);
        });
        let extended = extended?;
        // As many extended as asked: every one (a ban per target).
        let every = extended.len() == batch.len();
        let extended: HashSet<IpNet> = if every {
            HashSet::default()
        } else {
            extended.into_iter().collect()
        };
        for &entry in batch {
            let tag = listed.get(&entry).map_or("", String::as_str);
            if every || extended.contains(&canonical_net(entry.trunc())) {
                applied.held.insert(entry, tag.to_owned());
            } else {
                requests.push(ban_request(feed, entry, tag, until));
            }
        }
    }
    let requests = in_key_order(requests, |request| &request.target);
    let mut failure = None;
    for batch in requests.chunks(BATCH) {
        let mut results = Vec::new();
        target.with_manager(&mut |manager| {
            // The feed's own widest prefix was checked above.
            results = manager.ban_many_as(batch.to_vec(), Breadth::Forced);
        });
        for (request, result) in batch.iter().zip(results) {
            match result {
                Ok(_) => {
                    let tag = listed.get(&request.target).cloned().unwrap_or_default();
                    applied.held.insert(request.target, tag);
                }
                Err(error @ (BanError::Store { .. } | BanError::Lost(_))) => {
                    failure.get_or_insert(error);
                }
                Err(error) => {
                    applied.refused += 1;
                    applied
                        .first_refusal
                        .get_or_insert_with(|| error.to_string());
                }
            }
        }
        if failure.is_some() {
            break;
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    let gone: Vec<IpNet> = before
        .keys()
        .filter(|entry| !applied.held.contains_key(entry))
        .copied()
        .collect();
    applied.lifted = lift(feed, &gone, target)?;
    Ok(applied)
}

/// The ban of a listed `entry` until `until`.
fn ban_request(feed: &FeedConfig, entry: IpNet, tag: &str, until: i64) -> BanRequest {
    BanRequest::new(
        entry,
        BanLength::Until(until),
        Source::Feed,
        &reason(feed, tag),
        &BanScope::Default,
    )
}

/// Lifts the bans on `gone` that this feed's ban holds; a ban another
/// source made (or another feed) stays.
fn lift(feed: &FeedConfig, gone: &[IpNet], target: &dyn FeedTarget) -> Result<usize, BanError> {
    let now = unix_now();
    let mut lifted = 0;
    let mut failure = None;
    for batch in gone.chunks(LIFT_BATCH) {
        target.with_manager(&mut |manager| {
            let mine: Vec<IpNet> = batch
                .iter()
                .filter(|entry| {
                    matches!(manager.store().get(entry), Ok(Some(row))
                        if row.source == Source::Feed && row.is_active(now) && made_by(feed, &row.reason))
                })
                .copied()
                .collect();
            for result in manager.unban_many(&mine, Some(Source::Feed)) {
                match result {
                    Ok(true) => lifted += 1,
                    Ok(false) => {}
                    Err(error) => {
                        failure.get_or_insert(error);
                    }
                }
            }
        });
        if failure.is_some() {
            break;
        }
    }
    failure.map_or(Ok(lifted), Err)
}

/// The list as parsed, without repeats (the first tag of a target wins).
pub fn deduplicate(entries: Vec<(IpNet, String)>) -> Listed {
    let mut listed = HashMap::with_capacity(entries.len());
    for (entry, tag) in entries {
        listed.entry(entry).or_insert(tag);
    }
    listed
}

/// The widest prefixes taken from `feed`, its own or `ban.widest_*`.
pub fn widest_for(feed: &FeedConfig, ban: Widest) -> Widest {
    Widest {
        v4: feed.widest_v4.unwrap_or(ban.v4),
        v6: feed.widest_v6.unwrap_or(ban.v6),
    }
}

/// How long until the next fetch after one that took `took`.
pub fn next_wait(feed: &FeedConfig, took: Duration) -> Duration {
    feed.refresh()
        .saturating_sub(took)
        .max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;
    use crate::bans::{Allowlist, BanPolicy, XdpBackend, parse_target, store::Store};

    struct Locked(Mutex<BanManager>);

    impl FeedTarget for Locked {
        fn with_manager(&self, step: &mut dyn FnMut(&mut BanManager)) {
            step(&mut self.0.lock());
        }
    }

    fn net(text: &str) -> IpNet {
        parse_target(text).expect("target")
    }

    fn target() -> (tempfile::TempDir, Locked) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open_in(dir.path()).expect("store"));
        let xdp = XdpBackend {
            dataplane: None,
            enforcing: false,
            note: "test".into(),
        };
        let policy = BanPolicy {
            allowlist: Allowlist::new([net("203.0.113.0/24")]),
            ..BanPolicy::default()
        };
        let manager = BanManager::new(store, xdp, None, policy).expect("manager");
        (dir, Locked(Mutex::new(manager)))
    }

    fn feed(name: &str) -> FeedConfig {
        toml::from_str(&format!(
            "name = \"{name}\"\nurl = \"file:///x\"\nformat = \"plain\"\nrefresh = \"1h\"\nbantime = \"2h\"\n"
        ))
        .expect("feed")
    }

    fn listed(entries: &[(&str, &str)]) -> Listed {
        deduplicate(
            entries
                .iter()
                .map(|(t, tag)| (net(t), (*tag).to_owned()))
                .collect(),
        )
    }

    fn row(target: &Locked, text: &str) -> Option<crate::bans::store::StoredBan> {
        target
            .0
            .lock()
            .store()
            .get(&net(text))
            .expect("store")
            .filter(|row| row.is_active(unix_now()))
    }

    #[test]
    fn a_list_is_applied_as_a_diff_and_gone_entries_are_lifted() {
        let (_dir, target) = target();
        let drop = feed("drop");
        let widest = widest_for(&drop, Widest { v4: 16, v6: 32 });
        let first = listed(&[
            ("192.0.2.0/24", "SBL1"),
            ("198.51.100.7", ""),
            ("203.0.113.9", ""),
            ("10.0.0.0/8", ""),
        ]);
        let applied = apply(&drop, widest, &first, &HashMap::default(), &target).expect("apply");
        assert_eq!(applied.held.len(), 2);
        assert_eq!(applied.refused, 2, "the allowlist and the widest prefix");
        let banned = row(&target, "192.0.2.0/24").expect("banned");
        assert_eq!(banned.source, Source::Feed);
        assert_eq!(banned.reason, "feed:drop SBL1");
        let left = banned.expires_at.expect("expires") - unix_now();
        assert!((7190..=7201).contains(&left), "{left}");

        let second = listed(&[("192.0.2.0/24", "SBL1")]);
        let applied = apply(&drop, widest, &second, &applied.held, &target).expect("apply");
        assert_eq!(applied.lifted, 1);
        assert!(row(&target, "198.51.100.7").is_none());
        assert!(row(&target, "192.0.2.0/24").is_some());
    }

    #[test]
    fn a_feed_never_shortens_nor_lifts_another_sources_ban() {
        let (_dir, target) = target();
        let drop = feed("drop");
        let widest = widest_for(&drop, Widest { v4: 16, v6: 32 });
        target
            .0
            .lock()
            .ban(BanRequest::new(
                net("198.51.100.7"),
                BanLength::For(Duration::from_hours(240)),
                Source::Cli,
                "by hand",
                &BanScope::Default,
            ))
            .expect("cli ban");
        let list = listed(&[("198.51.100.7", ""), ("2001:db8::/32", "")]);
        let held = apply(&drop, widest, &list, &HashMap::default(), &target)
            .expect("apply")
            .held;
        let cli = row(&target, "198.51.100.7").expect("held");
        assert_eq!(cli.source, Source::Cli);
        assert_eq!(cli.reason, "by hand");
        assert!(cli.expires_at.expect("expires") - unix_now() > 200 * 3600);
        // Another feed's ban is not this feed's to lift.
        let other = feed("other");
        let applied = apply(&other, widest, &listed(&[]), &held, &target).expect("apply");
        assert_eq!(applied.lifted, 0);
        assert!(row(&target, "2001:db8::/32").is_some());
        let applied = apply(&drop, widest, &listed(&[]), &held, &target).expect("apply");
        assert_eq!(applied.lifted, 1, "only the feed's own ban");
        assert!(row(&target, "198.51.100.7").is_some());
        assert!(row(&target, "2001:db8::/32").is_none());
    }

    #[test]
    fn a_feeds_own_widest_prefix_goes_past_the_ban_setting_but_not_past_its_own() {
        let (_dir, target) = target();
        let mut drop = feed("drop");
        drop.widest_v4 = Some(10);
        let widest = widest_for(&drop, Widest { v4: 16, v6: 32 });
        let list = listed(&[("1.0.0.0/10", ""), ("2.0.0.0/8", "")]);
        let applied = apply(&drop, widest, &list, &HashMap::default(), &target).expect("apply");
        assert_eq!(applied.held.len(), 1);
        assert!(row(&target, "1.0.0.0/10").is_some());
        assert!(
            applied
                .first_refusal
                .expect("refusal")
                .contains("2.0.0.0/8 is wider than the feed's widest prefix (/10)")
        );
    }

    #[test]
    fn a_refresh_extends_what_the_feed_held_and_bans_again_what_was_lifted() {
        let (_dir, target) = target();
        let drop = feed("drop");
        let widest = widest_for(&drop, Widest { v4: 16, v6: 32 });
        let list = listed(&[
            ("192.0.2.0/24", "SBL1"),
            ("198.51.100.7", ""),
            ("198.51.100.8", ""),
        ]);
        let held = apply(&drop, widest, &list, &HashMap::default(), &target)
            .expect("apply")
            .held;
        let first = row(&target, "192.0.2.0/24").expect("banned");
        let lifted = target
            .0
            .lock()
            .unban_many(&[net("198.51.100.8")], Some(Source::Feed));
        assert!(matches!(lifted.as_slice(), [Ok(true)]));
        // A longer bantime stands for time passing: every expiry moves.
        let mut longer = drop.clone();
        longer.bantime = feed_bantime("3h");
        let applied = apply(&longer, widest, &list, &held, &target).expect("apply");
        assert_eq!(applied.held, list, "every entry held again");
        let extended = row(&target, "192.0.2.0/24").expect("extended");
        let left = extended.expires_at.expect("expires") - unix_now();
        assert!((10_790..=10_801).contains(&left), "{left}");
        assert_eq!(
            (
                extended.reason.as_str(),
                extended.count,
                extended.first_banned_at
            ),
            (first.reason.as_str(), first.count, first.first_banned_at),
            "extended in place, no offence counted"
        );
        let again = row(&target, "198.51.100.8").expect("the lifted entry is banned again");
        assert_eq!(again.reason, "feed:drop");
        let indexed = target.0.lock().held(&net("198.51.100.7")).expect("indexed");
        assert_eq!(
            indexed.expires_at, extended.expires_at,
            "the index has the new expiry"
        );
    }

    /// A ban told to an observer: target, reason, end.
    type Told = (IpNet, String, Option<i64>);

    /// What an observer of `sources` is told of bans.
    fn observe(target: &Locked, sources: Vec<Source>) -> Arc<Mutex<Vec<Told>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        target.0.lock().set_observer(
            Box::new(move |event| {
                if let crate::bans::BanEvent::Banned(rows) = event {
                    log.lock().extend(
                        rows.iter()
                            .map(|row| (row.target, row.reason.clone(), row.expires_at)),
                    );
                }
            }),
            sources,
        );
        seen
    }

    #[test]
    fn a_refresh_extending_every_entry_moves_the_index_and_tells_an_observer_of_feeds() {
        for sources in [vec![Source::Feed], vec![Source::Policy]] {
            let (_dir, target) = target();
            let drop = feed("drop");
            let widest = widest_for(&drop, Widest { v4: 16, v6: 32 });
            let list = listed(&[("192.0.2.0/24", "SBL1"), ("2001:db8::/48", "")]);
            let held = apply(&drop, widest, &list, &HashMap::default(), &target)
                .expect("apply")
                .held;
            let first = row(&target, "192.0.2.0/24").expect("banned");
            let seen = observe(&target, sources.clone());
            let mut longer = drop.clone();
            longer.bantime = feed_bantime("3h");
            let applied = apply(&longer, widest, &list, &held, &target).expect("apply");
            assert_eq!(applied.held, list);
            let mut told = Vec::new();
            for (text, reason) in [
                ("192.0.2.0/24", "feed:drop SBL1"),
                ("2001:db8::/48", "feed:drop"),
            ] {
                let extended = row(&target, text).expect("extended");
                let left = extended.expires_at.expect("expires") - unix_now();
                assert!((10_790..=10_801).contains(&left), "{left}");
                let indexed = target.0.lock().held(&net(text)).expect("indexed");
                assert_eq!(
                    (indexed.expires_at, indexed.count, indexed.first_banned_at),
                    (extended.expires_at, first.count, first.first_banned_at),
                    "the index has the new end and nothing else new"
                );
                told.push((net(text), reason.to_owned(), extended.expires_at));
            }
            let mut seen = seen.lock().clone();
            seen.sort();
            if sources.contains(&Source::Feed) {
                assert_eq!(
                    seen, told,
                    "an observer of feeds is told each, with its reason"
                );
            } else {
                assert!(seen.is_empty(), "{seen:?}");
            }
        }
    }

    #[test]
    fn another_feeds_ban_is_not_extended_as_this_feeds() {
        let (_dir, target) = target();
        let widest = Widest { v4: 16, v6: 32 };
        let list = listed(&[("198.51.100.7", "")]);
        let held = apply(&feed("other"), widest, &list, &HashMap::default(), &target)
            .expect("apply")
            .held;
        let mut drop = feed("drop");
        drop.bantime = feed_bantime("3h");
        let applied = apply(&drop, widest, &list, &held, &target).expect("apply");
        assert_eq!(applied.held.len(), 1, "banned through the ban path");
        let row = row(&target, "198.51.100.7").expect("banned");
        assert!(row.expires_at.expect("expires") - unix_now() > 10_000);
    }

    fn feed_bantime(text: &str) -> Option<crate::duration::Span> {
        toml::from_str::<FeedConfig>(&format!(
            "name = \"x\"\nurl = \"file:///x\"\nformat = \"plain\"\nbantime = \"{text}\"\n"
        ))
        .expect("feed")
        .bantime
    }
}
