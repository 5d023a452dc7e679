//! Answers `explain`: the manager's view of a target, the enforced ports,
//! and what the fail2ban jail holds for it, asked outside the manager's
//! lock.

use std::time::Duration;

use ipnet::IpNet;

use super::Shared;
use crate::{
    bans::{
        explain::{Explanation, Fail2banView},
        fail2ban::{Fail2banClient, Fail2banSettings},
        parse_target, target_to_string,
    },
    control::Response,
};

/// Longest wait for fail2ban's answer: an explanation must not hang on a
/// stuck jail.
const FAIL2BAN_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn explain(shared: &Shared, input: &str) -> Response {
    let target = match parse_target(input) {
        Ok(target) => target,
        Err(error) => {
            return Response::Error {
                message: error.to_string(),
            };
        }
    };
    let (mut explanation, fail2ban) = {
        let manager = shared.manager();
        let fail2ban = manager.fail2ban().map(|link| {
            (
                link.backend.settings().clone(),
                manager.fail2ban_active(),
                link.backend.health().queue_depth,
            )
        });
        (manager.explain(target, input), fail2ban)
    };
    explanation
        .ports
        .clone_from(&shared.runtime().config.xdp.ports);
    if let Some((settings, active, queued)) = fail2ban {
        explanation.fail2ban = Some(ask_fail2ban(
            &settings,
            active,
            queued,
            target,
            &explanation,
        ));
    }
    Response::Explanation {
        explanation: Box::new(explanation),
    }
}

/// Whether the jail holds the target or one of the prefixes covering it
/// (fail2ban matches exactly: it does not know that a prefix contains an
/// address).
fn ask_fail2ban(
    settings: &Fail2banSettings,
    active: bool,
    queued: u64,
    target: IpNet,
    explanation: &Explanation,
) -> Fail2banView {
    let mut view = Fail2banView {
        jail: settings.jail.clone(),
        active,
        queued,
        ..Fail2banView::default()
    };
    let mut client = Fail2banClient::new(&settings.socket, settings.timeout.min(FAIL2BAN_TIMEOUT));
    let candidates =
        std::iter::once(target).chain(explanation.covered_by.iter().map(|ban| ban.entry.addr));
    for candidate in candidates {
        match client.is_banned(&settings.jail, candidate) {
            Ok(true) => view.held.push(target_to_string(&candidate)),
            Ok(false) => {}
            Err(error) => {
                view.error = Some(error.to_string());
                break;
            }
        }
    }
    client.disconnect();
    view
}
