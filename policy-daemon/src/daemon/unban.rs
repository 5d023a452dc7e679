//! Lifting bans at the control socket's request: named targets, and every
//! ban of one source. Both go through the manager in batches, releasing
//! its lock in between, so a bulk unban never holds up verdicts, the
//! fleet or maintenance for long.

use tracing::{debug, info, warn};

use super::Shared;
use crate::{
    bans::{Source, target_to_string},
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

/// Lifts (or, on a dry run, counts) every active ban `source` made. The
/// bans are chosen at once and lifted in batches; one banned again by
/// another source meanwhile stays.
pub(super) fn unban_source(shared: &Shared, source: Source, dry_run: bool) -> Response {
    let targets = shared.manager().active_from(source);
    let active = targets.len() as u64;
    if dry_run {
        return Response::SourceUnbanned {
            source,
            active,
            unbanned: 0,
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
    info!(%source, active, unbanned, failed, "unbanned by source");
    match first_error {
        Some(error) => Response::Error {
            message: format!(
                "unbanned {unbanned} of the {active} bans from {source}; {failed} failed, the first with: {error}"
            ),
        },
        None => Response::SourceUnbanned {
            source,
            active,
            unbanned,
        },
    }
}
