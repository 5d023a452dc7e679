//! Lifting bans at the control socket's request: named targets, and every
//! ban of one source. Both go through the manager in batches, releasing
//! its lock in between, so a bulk unban never holds up verdicts, the
//! fleet or maintenance for long.

use tracing::{debug, info, warn};

use std::sync::Arc;

use ipnet::IpNet;

use super::Shared;
use crate::{
    bans::{
        Source, SourceFilter, is_feed_name,
        store::{BanFilter, StoreError},
        target_to_string,
    },
    clock::unix_now,
    control::{Covered, Refusal, Response},
};

/// Targets lifted per hold of the manager's lock: one store transaction
/// each.
const BATCH: usize = 512;

/// Unbans logged one by one; more are logged as a count.
const LOGGED_ONE_BY_ONE: usize = 64;

/// Lifts the ban on each target; names the prefix ban that still blocks a
/// target, whether or not it had a ban of its own.
pub(super) fn unban_targets(shared: &Shared, targets: Vec<String>) -> Response {
    let mut unbanned = Vec::new();
    let mut not_banned = Vec::new();
    let mut covered = Vec::new();
    let (nets, texts, mut refused) = super::targets::parse_targets(targets);
    let one_by_one = nets.len() <= LOGGED_ONE_BY_ONE;
    for (nets, texts) in nets.chunks(BATCH).zip(texts.chunks(BATCH)) {
        let mut manager = shared.manager();
        let results = manager.unban_many(nets, None);
        for ((net, text), result) in nets.iter().zip(texts).zip(results) {
            let name = target_to_string(net);
            let lifted = match result {
                Ok(lifted) => lifted,
                Err(error) => {
                    warn!(target = %name, %error, "unban failed");
                    refused.push(Refusal {
                        target: text.clone(),
                        reason: error.to_string(),
                    });
                    continue;
                }
            };
            let by = manager.covering(*net).into_iter().next();
            if lifted {
                if one_by_one {
                    info!(target = %name, "unbanned");
                }
                unbanned.push(name.clone());
            } else if by.is_none() {
                not_banned.push(name.clone());
            }
            if let Some(by) = by {
                covered.push(Covered { target: name, by });
            }
        }
    }
    if !one_by_one {
        info!(
            unbanned = unbanned.len(),
            not_banned = not_banned.len(),
            refused = refused.len(),
            "bulk unban"
        );
    }
    Response::Unbanned {
        unbanned,
        not_banned,
        refused,
        covered,
    }
}

/// Lifts (or, on a dry run, counts) every active ban `filter` means. The
/// bans are chosen at once and lifted in batches; one banned again by
/// another source meanwhile stays.
pub(super) fn unban_source(shared: &Shared, filter: SourceFilter, dry_run: bool) -> Response {
    let targets = match chosen(shared, &filter) {
        Ok(targets) => targets,
        Err(message) => return Response::Error { message },
    };
    let source = filter.source;
    let active = targets.len() as u64;
    if dry_run {
        return Response::SourceUnbanned {
            source,
            active,
            unbanned: 0,
            feed: filter.feed,
        };
    }
    let mut unbanned = 0_u64;
    let mut failed = 0_u64;
    let mut first_error = None;
    for batch in targets.chunks(BATCH) {
        let results = shared.manager().unban_many(batch, Some(source));
        for result in results {
            match result {
                Ok(true) => unbanned += 1,
                Ok(false) => {}
                Err(error) => {
                    failed += 1;
                    first_error.get_or_insert(error);
                }
            }
        }
        debug!(unbanned, "unbanning by source");
    }
    info!(source = %filter, active, unbanned, failed, "unbanned by source");
    match first_error {
        Some(error) => Response::Error {
            message: format!(
                "unbanned {unbanned} of the {active} bans from {filter}; {failed} failed, the first with: {error}"
            ),
        },
        None => Response::SourceUnbanned {
            source,
            active,
            unbanned,
            feed: filter.feed,
        },
    }
}

/// The active bans `filter` means: a whole source from the manager's
/// index; one feed's from the store, which keeps the reason naming it,
/// read without holding the manager.
fn chosen(shared: &Shared, filter: &SourceFilter) -> Result<Vec<IpNet>, String> {
    let Some(word) = filter.reason_word() else {
        return Ok(shared.manager().active_from(filter.source));
    };
    let name = filter.feed.as_deref().unwrap_or_default();
    if filter.source != Source::Feed || !is_feed_name(name) {
        return Err(format!(
            "unban: feed {name:?} with source {}: a feed's bans are of source feed, and its name is 1 to 64 letters, digits, '-', '_' or '.'",
            filter.source
        ));
    }
    let store = Arc::clone(shared.manager().store());
    let read = |error: StoreError| format!("reading the bans of {filter}: {error}");
    let mut bans = store
        .active_bans(
            BanFilter {
                source: Some(Source::Feed),
                reason_word: Some(word),
                ..BanFilter::default()
            },
            unix_now(),
        )
        .map_err(read)?;
    let mut targets = Vec::new();
    while let Some(chunk) = bans.next_chunk().map_err(read)? {
        targets.extend(chunk.into_iter().map(|ban| ban.target));
    }
    Ok(targets)
}
