//! `list`: the active bans a request wants, read from the store (the
//! source of truth) a chunk at a time, each chunk's hit counters looked up
//! in the kernel maps, and written as they are read. Sorted by packets,
//! the whole list is read first, keeping only the `limit` first.

use std::{cmp::Reverse, collections::BinaryHeap};

use ipnet::IpNet;
use tracing::warn;

use super::Shared;
use crate::{
    bans::{
        BanEntry, Source, is_feed_name, parse_target,
        store::{ActiveBans, BanFilter, StoredBan},
    },
    clock,
    control::{BanChunks, ListRequest, ListSort, Reply, Response},
    dataplane::{HitReader, Hits},
};

/// Answers a `list` request: the matching bans as they are read, or an
/// error naming what is wrong with the request or the store.
pub(super) fn list(shared: &Shared, request: &ListRequest) -> Reply {
    let now = clock::unix_now();
    let filter = match filter(request, now) {
        Ok(filter) => filter,
        Err(message) => return Response::Error { message }.into(),
    };
    if request.sort == Some(ListSort::Newest) {
        return super::top::newest(shared, &filter, now);
    }
    let sorted = request.sort == Some(ListSort::Packets);
    let limit = filter.limit;
    let filter = BanFilter {
        limit: if sorted { None } else { limit },
        ..filter
    };
    // The manager's lock is held only to reach the store and the maps.
    let (store, hits) = {
        let manager = shared.manager();
        (std::sync::Arc::clone(manager.store()), manager.hit_reader())
    };
    match store.active_bans(filter, now) {
        Ok(bans) => {
            let chunks = StoreChunks { bans, hits };
            if sorted {
                Reply::Bans(Box::new(ByPackets {
                    chunks: Some(chunks),
                    limit: limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX)),
                }))
            } else {
                Reply::Bans(Box::new(chunks))
            }
        }
        Err(error) => Response::Error {
            message: error.to_string(),
        }
        .into(),
    }
}

/// What the store is asked for; a prefix that is not a target is refused.
fn filter(request: &ListRequest, now: i64) -> Result<BanFilter, String> {
    let within = request
        .prefix
        .as_deref()
        .map(parse_target)
        .transpose()
        .map_err(|error| format!("list prefix: {error}"))?;
    let expiring_by = request
        .expiring_within
        .map(|secs| now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)));
    let reason_word = match &request.feed {
        None => None,
        Some(name) if is_feed_name(name) && request.source.is_none_or(|s| s == Source::Feed) => {
            Some(format!("feed:{name}"))
        }
        Some(name) => {
            return Err(format!(
                "list: feed {name:?}: a feed's bans are of source feed, and its name is 1 to 64 letters, digits, '-', '_' or '.'"
            ));
        }
    };
    Ok(BanFilter {
        source: if reason_word.is_some() {
            Some(Source::Feed)
        } else {
            request.source
        },
        within,
        expiring_by,
        limit: request.limit,
        reason_word,
    })
}

struct StoreChunks {
    bans: ActiveBans,
    /// `None` without XDP: every count is zero.
    hits: Option<HitReader>,
}

impl BanChunks for StoreChunks {
    fn next_chunk(&mut self) -> Result<Option<Vec<BanEntry>>, String> {
        let rows = match self.bans.next_chunk() {
            Ok(Some(rows)) => rows,
            Ok(None) => return Ok(None),
            Err(error) => {
                warn!(%error, "listing bans failed");
                return Err(error.to_string());
            }
        };
        let targets: Vec<IpNet> = rows.iter().map(|row| row.target).collect();
        let hits = match &self.hits {
            Some(reader) => reader.hits(&targets).unwrap_or_else(|error| {
                // The bans are still listed; their counts read zero.
                warn!(%error, "reading hit counters failed");
                vec![Hits::default(); targets.len()]
            }),
            None => vec![Hits::default(); targets.len()],
        };
        Ok(Some(rows.into_iter().zip(hits).map(entry).collect()))
    }
}

/// The bans of a [`StoreChunks`] with most packets first, ties by
/// address; only the `limit` first are kept while reading.
struct ByPackets {
    /// `None` once read.
    chunks: Option<StoreChunks>,
    limit: usize,
}

/// A ban ordered so that the greatest is the one to drop first from the
/// kept ones: fewest packets, then the highest address.
struct Ranked(BanEntry);

impl Ranked {
    fn key(&self) -> (Reverse<u64>, IpNet) {
        (Reverse(self.0.packets), self.0.addr)
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl BanChunks for ByPackets {
    fn next_chunk(&mut self) -> Result<Option<Vec<BanEntry>>, String> {
        let Some(mut chunks) = self.chunks.take() else {
            return Ok(None);
        };
        let mut kept = BinaryHeap::new();
        while let Some(bans) = chunks.next_chunk()? {
            for ban in bans {
                kept.push(Ranked(ban));
                if kept.len() > self.limit {
                    kept.pop();
                }
            }
        }
        Ok(Some(
            kept.into_sorted_vec()
                .into_iter()
                .map(|ranked| ranked.0)
                .collect(),
        ))
    }
}

/// A stored ban as `list` shows it, with its hit counters.
pub(super) fn entry((row, hits): (StoredBan, Hits)) -> BanEntry {
    BanEntry {
        addr: row.target,
        expires_at: row.expires_at.map(clock::system_time),
        source: row.source,
        reason: row.reason,
        detail: row.detail,
        count: row.count,
        ports: row.scope.to_ports(),
        packets: hits.packets,
        last_hit: hits.last_hit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_becomes_a_store_filter() {
        let request = ListRequest {
            source: Some(Source::Cli),
            prefix: Some("2001:db8::/32".into()),
            limit: Some(5),
            expiring_within: Some(60),
            stream: true,
            ..ListRequest::default()
        };
        assert_eq!(
            filter(&request, 1000),
            Ok(BanFilter {
                source: Some(Source::Cli),
                within: Some("2001:db8::/32".parse().expect("net")),
                expiring_by: Some(1060),
                limit: Some(5),
                reason_word: None,
            })
        );
        assert_eq!(
            filter(&ListRequest::default(), 1000),
            Ok(BanFilter::default())
        );
        let far = ListRequest {
            expiring_within: Some(u64::MAX),
            ..ListRequest::default()
        };
        assert_eq!(
            filter(&far, 1000).map(|f| f.expiring_by),
            Ok(Some(i64::MAX))
        );
        for bad in ["192.0.2.5/24", "banana", "fe80::1%eth0"] {
            let request = ListRequest {
                prefix: Some(bad.into()),
                ..ListRequest::default()
            };
            let error = filter(&request, 0).expect_err(bad);
            assert!(error.starts_with("list prefix: "), "{error}");
        }
    }

    #[test]
    fn a_feed_narrows_the_filter_to_its_reason_word() {
        let request = ListRequest {
            feed: Some("drop".into()),
            ..ListRequest::default()
        };
        let filter_of = |request: &ListRequest| filter(request, 0);
        assert_eq!(
            filter_of(&request).map(|f| (f.source, f.reason_word)),
            Ok((Some(Source::Feed), Some("feed:drop".into())))
        );
        for (source, name) in [
            (Some(Source::Cli), "drop"),
            (None, "a b"),
            (None, ""),
            (Some(Source::Feed), "x'; --"),
        ] {
            let request = ListRequest {
                source,
                feed: Some(name.into()),
                ..ListRequest::default()
            };
            let error = filter_of(&request).expect_err(name);
            assert!(error.starts_with("list: feed "), "{error}");
        }
    }
}
