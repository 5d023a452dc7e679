//! Answers the requests of the control socket: ban, stats and status
//! here, unban, explain and list in their own files, each through the ban
//! manager (list reads the store directly).

use std::sync::Arc;

use tracing::{info, warn};

use super::{Shared, log_ban};
use crate::{
    bans::{
        BanEntry, BanLength, BanRequest, BanScope, Breadth, Source, SourceFilter, parse_target,
    },
    control::{BackendStatus, Refusal, Reply, Request, Response, Status},
    dataplane::DataplaneError,
};

/// Answers one control request.
pub(super) fn handle(shared: &Shared, request: Request) -> Reply {
    let response = match request {
        Request::List(list) => return super::list::list(shared, &list),
        Request::Ban {
            targets,
            length,
            reason,
            force,
        } => {
            let (banned, refused) = ban_targets(shared, targets, length, &reason, breadth(force));
            Response::Banned { banned, refused }
        }
        Request::BanBulk {
            targets,
            length,
            reason,
            force,
        } => ban_bulk(shared, targets, length, &reason, breadth(force)),
        Request::Unban { targets } => super::unban::unban_targets(shared, targets),
        Request::UnbanSource {
            source,
            dry_run,
            feed,
        } => super::unban::unban_source(shared, SourceFilter { source, feed }, dry_run),
        Request::Explain { target } => super::explain::explain(shared, &target),
        Request::Stats => {
            let mut stats = shared.ban_stats();
            stats.policy_requests = shared.policy_stats.requests();
            Response::Stats { stats }
        }
        Request::BansBySource => super::top::bans_by_source(shared, crate::clock::unix_now()),
        Request::Status => match status(shared) {
            Ok(status) => Response::Status {
                status: Box::new(status),
            },
            Err(error) => Response::Error {
                message: error.to_string(),
            },
        },
    };
    response.into()
}

/// How wide a command-line ban may be.
pub(super) const fn breadth(force: bool) -> Breadth {
    if force {
        Breadth::Forced
    } else {
        Breadth::Bounded
    }
}

/// `ban --file`: one batch, answered with a count.
pub(super) fn ban_bulk(
    shared: &Shared,
    targets: Vec<String>,
    length: BanLength,
    reason: &str,
    breadth: Breadth,
) -> Response {
    tracing::debug!(targets = targets.len(), "bulk ban request parsed");
    let (nets, mut texts, mut refused) = super::targets::parse_targets(targets);
    // Made before the lock is taken: a ban --file sends its targets in
    // parts, and the next part's requests are made while this one is
    // written.
    let requests = crate::bans::bulk_requests(&nets, length, Source::Cli, reason);
    let (banned, rejected) = shared.manager().ban_bulk(requests, breadth);
    for (i, error) in rejected {
        refused.push(Refusal {
            target: std::mem::take(&mut texts[i]),
            reason: error.to_string(),
        });
    }
    info!(banned, refused = refused.len(), %reason, "bulk ban");
    if texts.len() >= super::memory::LARGE_REQUEST {
        drop((nets, texts));
        super::memory::give_back_soon(Arc::clone(shared.manager().store()));
    }
    Response::BulkBanned {
        banned: banned as u64,
        refused,
    }
}

/// Bans command-line targets through the manager in one batch.
pub(super) fn ban_targets(
    shared: &Shared,
    targets: Vec<String>,
    length: BanLength,
    reason: &str,
    breadth: Breadth,
) -> (Vec<BanEntry>, Vec<Refusal>) {
    let mut refused = Vec::new();
    let mut requests = Vec::with_capacity(targets.len());
    let mut texts = Vec::with_capacity(targets.len());
    for target in targets {
        match parse_target(&target) {
            Ok(net) => {
                requests.push(BanRequest::new(
                    net,
                    length,
                    Source::Cli,
                    reason,
                    &BanScope::Default,
                ));
                texts.push(target);
            }
            Err(error) => refused.push(Refusal {
                target,
                reason: error.to_string(),
            }),
        }
    }
    let count = requests.len();
    let results = shared.manager().ban_many_as(requests, breadth);
    let mut banned = Vec::with_capacity(count);
    for (target, result) in texts.into_iter().zip(results) {
        match result {
            Ok(entry) => {
                log_ban(&entry);
                banned.push(entry);
            }
            Err(error) => {
                warn!(%target, %error, "ban refused");
                refused.push(Refusal {
                    target,
                    reason: error.to_string(),
                });
            }
        }
    }
    (banned, refused)
}

pub(super) fn status(shared: &Shared) -> Result<Status, DataplaneError> {
    let stats = shared.ban_stats();
    let runtime = shared.runtime();
    let manager = shared.manager();
    let (program_id, capacities, pin_dir) = match manager.xdp().program()? {
        Some(program) => program,
        None => (
            0,
            runtime.config.ban.capacities(),
            runtime.config.daemon.bpf_pin_dir.display().to_string(),
        ),
    };
    Ok(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        started_at: crate::clock::rfc3339(runtime.started_at),
        config: runtime.config_path.display().to_string(),
        pin_dir,
        program_id,
        backends: {
            let mut list = manager.backends();
            if let Some(fleet) = &shared.fleet {
                list.push(BackendStatus {
                    name: "fleet".to_owned(),
                    active: fleet.health().connected(),
                    detail: fleet.describe(),
                    queue_depth: Some(fleet.health().queue_depth()),
                });
            }
            if let Some(counter) = &shared.rate_counter {
                list.push(counter.status());
            }
            list
        },
        interfaces: runtime.attachments.clone(),
        ports: runtime.config.xdp.ports.clone(),
        dry_run: runtime.config.xdp.dry_run,
        bans_active: stats.bans_active,
        capacity_v4: capacities.v4,
        capacity_v6: capacities.v6,
        capacity_prefix_v4: capacities.prefix_v4,
        capacity_prefix_v6: capacities.prefix_v6,
        allowlist: manager.policy().allowlist.entries().to_vec(),
        default_bantime: runtime.config.ban.bantime.to_string(),
        store: manager.store().path().display().to_string(),
        port_scopes: manager
            .policy()
            .scopes
            .describe()
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect(),
        policy_listen: if runtime.config.policy.serves() {
            runtime
                .config
                .policy
                .listen
                .iter()
                .map(ToString::to_string)
                .collect()
        } else {
            Vec::new()
        },
        greylist: shared.greylist.lock().as_ref().map(|g| g.describe()),
        log_sources: runtime
            .config
            .logwatch
            .source
            .iter()
            .map(|source| match (&source.path, &source.journal) {
                (Some(path), _) => format!("{}: {}", source.name, path.display()),
                (None, Some(units)) => format!("{}: journal {}", source.name, units.join(",")),
                (None, None) => source.name.clone(),
            })
            .collect(),
        feeds: shared
            .feeds
            .lock()
            .as_ref()
            .map(|board| board.describe())
            .unwrap_or_default(),
    })
}
