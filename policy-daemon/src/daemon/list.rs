//! `list`: the active bans a request wants, read from the store (the
//! source of truth) a chunk at a time and written as they are read.

use tracing::warn;

use super::Shared;
use crate::{
    bans::{
        BanEntry, Source, is_feed_name, parse_target,
        store::{ActiveBans, BanFilter, StoredBan},
    },
    clock,
    control::{BanChunks, ListRequest, ListSort, Reply, Response},
};

/// Answers a `list` request: the matching bans as they are read, or an
/// error naming what is wrong with the request or the store.
pub(super) fn list(shared: &Shared, request: &ListRequest) -> Reply {
    let now = clock::unix_now();
    let filter = match filter(request, now) {
        Ok(filter) => filter,
        Err(message) => return Response::Error { message }.into(),
    };
    // Sorting by packets is not served yet: those lists come in target
    // order.
    if request.sort == Some(ListSort::Newest) {
        return super::top::newest(shared, &filter, now);
    }
    // The manager's lock is held only to reach the store.
    let store = std::sync::Arc::clone(shared.manager().store());
    match store.active_bans(filter, now) {
        Ok(bans) => Reply::Bans(Box::new(StoreChunks(bans))),
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

struct StoreChunks(ActiveBans);

impl BanChunks for StoreChunks {
    fn next_chunk(&mut self) -> Result<Option<Vec<BanEntry>>, String> {
        match self.0.next_chunk() {
            Ok(chunk) => Ok(chunk.map(|bans| bans.into_iter().map(entry).collect())),
            Err(error) => {
                warn!(%error, "listing bans failed");
                Err(error.to_string())
            }
        }
    }
}

/// A stored ban as `list` shows it.
pub(super) fn entry(row: StoredBan) -> BanEntry {
    BanEntry {
        addr: row.target,
        expires_at: row.expires_at.map(clock::system_time),
        source: row.source,
        reason: row.reason,
        detail: row.detail,
        count: row.count,
        ports: row.scope.to_ports(),
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
