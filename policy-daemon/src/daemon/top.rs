//! What `spamwall top` asks besides stats and status: the newest bans and
//! the bans per source. Both walk every active ban in the index, a few
//! thousand at a time under the manager's lock (no store read but for the
//! newest bans' reasons): with a million bans, about 30 ms to rank the
//! newest and 10 ms to count the sources per refresh, and no ban waits
//! for more than one step of 4,096.

use std::{cmp::Reverse, collections::BinaryHeap};

use ipnet::IpNet;

use super::{Shared, WALK_BUDGET, list::entry};
use crate::{
    bans::{BanEntry, Cursor, Glance, Source, store::BanFilter},
    control::{BanChunks, MAX_NEWEST, Reply, Response, SourceBans},
};

/// The newest `filter.limit` bans `filter` wants, latest offence first.
pub(super) fn newest(shared: &Shared, filter: &BanFilter, now: i64) -> Reply {
    let Some(limit) = filter
        .limit
        .filter(|limit| *limit <= MAX_NEWEST)
        .and_then(|limit| usize::try_from(limit).ok())
    else {
        return Response::Error {
            message: format!("a list sorted by newest needs a limit of at most {MAX_NEWEST}"),
        }
        .into();
    };
    if filter.reason_word.is_some() {
        // The index the ranking walks knows sources, not feed names.
        return Response::Error {
            message: "a list sorted by newest takes a source, not one feed".to_owned(),
        }
        .into();
    }
    let mut ranked: BinaryHeap<Reverse<(i64, IpNet)>> = BinaryHeap::with_capacity(limit);
    walk(shared, now, |ban| {
        if limit == 0 || !wanted(filter, &ban) {
            return;
        }
        let candidate = Reverse((ban.last_banned_at, ban.target));
        if ranked.len() < limit {
            ranked.push(candidate);
        } else if ranked.peek().is_some_and(|oldest| candidate < *oldest) {
            ranked.pop();
            ranked.push(candidate);
        }
    });
    let (store, hits) = {
        let manager = shared.manager();
        (std::sync::Arc::clone(manager.store()), manager.hit_reader())
    };
    let mut bans = Vec::with_capacity(ranked.len());
    // Ascending in `Reverse`: the latest offence first.
    for Reverse((_, target)) in ranked.into_sorted_vec() {
        match store.get(&target) {
            // Lifted since the walk saw it.
            Ok(None) => {}
            Ok(Some(row)) => {
                let counted = hits
                    .as_ref()
                    .and_then(|reader| reader.hits(&[target]).ok()?.pop())
                    .unwrap_or_default();
                bans.push(entry((row, counted)));
            }
            Err(error) => {
                return Response::Error {
                    message: error.to_string(),
                }
                .into();
            }
        }
    }
    Reply::Bans(Box::new(Ranked(Some(bans))))
}

/// How many active bans each source made, every source named.
pub(super) fn bans_by_source(shared: &Shared, now: i64) -> Response {
    let mut counts = [0_u64; Source::ALL.len()];
    walk(shared, now, |ban| counts[ban.source.index()] += 1);
    Response::BansBySource {
        sources: Source::ALL
            .into_iter()
            .zip(counts)
            .map(|(source, bans)| SourceBans { source, bans })
            .collect(),
    }
}

/// Shows `visit` every active ban, [`WALK_BUDGET`] rows per hold of the
/// manager's lock.
fn walk(shared: &Shared, now: i64, mut visit: impl FnMut(Glance)) {
    let mut cursor = Cursor::default();
    while !cursor.is_done() {
        cursor = shared.step(|manager| manager.glance_active(cursor, WALK_BUDGET, now, &mut visit));
    }
}

fn wanted(filter: &BanFilter, ban: &Glance) -> bool {
    filter.source.is_none_or(|source| source == ban.source)
        && filter
            .within
            .is_none_or(|within| within.contains(&ban.target))
        && filter
            .expiring_by
            .is_none_or(|by| ban.expires_at.is_some_and(|at| at <= by))
}

/// Bans already ranked, given as one chunk.
struct Ranked(Option<Vec<BanEntry>>);

impl BanChunks for Ranked {
    fn next_chunk(&mut self) -> Result<Option<Vec<BanEntry>>, String> {
        Ok(self.0.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_of_a_ranked_list_is_that_of_any_list() {
        let ban = Glance {
            target: "192.0.2.7/32".parse().expect("net"),
            source: Source::Logwatch,
            expires_at: Some(2000),
            last_banned_at: 1000,
        };
        assert!(wanted(&BanFilter::default(), &ban));
        let only = |filter: BanFilter| wanted(&filter, &ban);
        assert!(only(BanFilter {
            source: Some(Source::Logwatch),
            within: Some("192.0.2.0/24".parse().expect("net")),
            expiring_by: Some(2000),
            limit: Some(1),
            reason_word: None,
        }));
        assert!(!only(BanFilter {
            source: Some(Source::Cli),
            ..BanFilter::default()
        }));
        assert!(!only(BanFilter {
            within: Some("198.51.100.0/24".parse().expect("net")),
            ..BanFilter::default()
        }));
        assert!(!only(BanFilter {
            expiring_by: Some(1999),
            ..BanFilter::default()
        }));
        let permanent = Glance {
            expires_at: None,
            ..ban
        };
        assert!(!wanted(
            &BanFilter {
                expiring_by: Some(i64::MAX),
                ..BanFilter::default()
            },
            &permanent
        ));
    }
}
