//! `explain ADDR|CIDR`: why a target is blocked or not.

use std::{fmt::Write as _, path::Path};

use clap::Args;

use super::{Failure, ask, ban::until, print_json, print_out, printable, unexpected};
use crate::{
    bans::{
        BanEntry,
        explain::{BanDetail, Explanation, Fail2banView, KernelView, Verdict},
        parse_target, target_to_string,
    },
    control::{Request, Response},
};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// An address or CIDR prefix (IPv4, IPv6, IPv4-mapped IPv6)
    #[arg(value_name = "ADDR|CIDR")]
    pub target: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

pub(super) fn explain(socket: &Path, args: &ExplainArgs) -> Result<(), Failure> {
    parse_target(&args.target).map_err(|e| Failure::usage(format!("{e}; nothing was sent")))?;
    let response = ask(
        socket,
        &Request::Explain {
            target: args.target.clone(),
        },
    )?;
    let Response::Explanation { explanation } = response else {
        return Err(unexpected(&response));
    };
    if args.json {
        return print_json(&explanation);
    }
    print_out(&explanation_text(&explanation))
}

/// The human form: the verdict, then one labelled line per part.
pub fn explanation_text(e: &Explanation) -> String {
    let target = printable(&e.target);
    let mut out = verdict_line(e);
    if e.input.trim() != e.target {
        let _ = writeln!(out, "  (read {:?} as {target})", printable(&e.input));
    }
    let mut line = |label: &str, text: &str| {
        let _ = writeln!(out, "{label:<11} {text}");
    };
    line(
        "ban:",
        &e.ban
            .as_ref()
            .map_or_else(|| "none of its own".to_owned(), ban_text),
    );
    for ban in &e.covered_by {
        line("covered by:", &ban_text(ban));
    }
    if let Some(history) = &e.history {
        line("history:", &format!("ended {}", ban_text(history)));
    }
    if e.inside > 0 {
        let first: Vec<String> = e
            .inside_first
            .iter()
            .map(|ban| target_to_string(&ban.addr))
            .collect();
        let more = if e.inside > first.len() as u64 {
            ", …"
        } else {
            ""
        };
        line(
            "inside:",
            &format!("{} active bans: {}{more}", e.inside, first.join(", ")),
        );
    }
    line(
        "allowlist:",
        &e.allowlisted_by.as_ref().map_or_else(
            || "no entry covers it".to_owned(),
            |entry| format!("{} protects it: it is never banned", printable(entry)),
        ),
    );
    if let Some(own) = &e.own_address {
        line(
            "this host:",
            &format!(
                "{} is an address of this host (ban.ignore_self)",
                printable(own)
            ),
        );
    }
    for (i, text) in kernel_lines(&e.kernel).iter().enumerate() {
        line(if i == 0 { "kernel:" } else { "" }, text);
    }
    line(
        "fail2ban:",
        &e.fail2ban
            .as_ref()
            .map_or_else(|| "not configured".to_owned(), fail2ban_text),
    );
    line("ports:", &ports_text(&e.ports));
    line(
        "next ban:",
        &format!(
            "{} at ban.bantime",
            e.next_bantime.as_deref().map_or("permanent", |t| t)
        ),
    );
    for warning in warnings(e) {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

fn verdict_line(e: &Explanation) -> String {
    let target = printable(&e.target);
    let narrowest = e
        .covered_by
        .first()
        .map(|ban| target_to_string(&ban.entry.addr));
    let text = match (e.verdict, narrowest) {
        (Verdict::Banned, None) => format!("{target} is banned"),
        (Verdict::Banned, Some(prefix)) => {
            format!("{target} is banned, and the ban on {prefix} covers it too")
        }
        (Verdict::Covered, Some(prefix)) => {
            format!("{target} is blocked by the ban on {prefix}: it has no ban of its own")
        }
        (Verdict::Allowlisted, _) => format!(
            "{target} is not banned: the allowlist entry {} protects it",
            printable(e.allowlisted_by.as_deref().unwrap_or("?"))
        ),
        (Verdict::OwnAddress, _) => {
            format!("{target} is not banned: it holds an address of this host")
        }
        (Verdict::Covered | Verdict::NotBanned, _) => format!("{target} is not banned"),
    };
    text + "\n"
}

fn ban_text(ban: &BanDetail) -> String {
    let entry: &BanEntry = &ban.entry;
    let detail = if entry.detail.is_empty() {
        String::new()
    } else {
        format!(" [{}]", printable(&entry.detail))
    };
    format!(
        "{} by {}, {:?}{detail}, {}, {}, count {} (escalation step {}), first banned {}, last {}",
        target_to_string(&entry.addr),
        entry.source,
        printable(&entry.reason),
        until(entry.expires_at),
        scope_text(entry.ports.as_deref()),
        entry.count,
        entry.count,
        ban.first_banned_at,
        ban.last_banned_at
    )
}

fn kernel_lines(kernel: &KernelView) -> Vec<String> {
    if !kernel.available {
        return vec![format!("maps not available: {}", printable(&kernel.note))];
    }
    let mut lines: Vec<String> = kernel
        .entries
        .iter()
        .map(|entry| {
            format!(
                "{} {}: {}, {}, {}, source {}, count {}",
                entry.map,
                entry.key,
                if entry.live { "live" } else { "expired" },
                entry
                    .expires_at
                    .as_ref()
                    .map_or_else(|| "permanent".to_owned(), |at| format!("until {at}")),
                scope_text(entry.ports.as_deref()),
                entry.source,
                entry.count
            )
        })
        .collect();
    if lines.is_empty() {
        lines.push("no map entry".to_owned());
    }
    lines.push(if !kernel.enforcing {
        format!("not enforcing: {}", printable(&kernel.note))
    } else if kernel.dropped {
        "its packets are dropped".to_owned()
    } else {
        "its packets pass".to_owned()
    });
    lines
}

fn fail2ban_text(view: &Fail2banView) -> String {
    let role = if view.active { "in use" } else { "idle" };
    let held = match (&view.error, view.held.is_empty()) {
        (Some(error), _) => format!("could not ask: {}", printable(error)),
        (None, true) => "holds nothing for it".to_owned(),
        (None, false) => format!("holds {}", view.held.join(", ")),
    };
    format!(
        "jail {} ({role}) {held}; {} operations queued",
        printable(&view.jail),
        view.queued
    )
}

fn ports_text(ports: &[u16]) -> String {
    if ports.is_empty() {
        "bans without ports of their own apply to all traffic (xdp.ports is empty)".to_owned()
    } else {
        let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
        format!(
            "bans without ports of their own apply to destination ports {} only (xdp.ports); other traffic passes",
            list.join(", ")
        )
    }
}

/// Where one ban holds: `None` is `xdp.ports`.
fn scope_text(ports: Option<&[u16]>) -> String {
    match ports {
        None => "on xdp.ports".to_owned(),
        Some([]) => "on all traffic".to_owned(),
        Some(ports) => {
            let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
            format!("on ports {}", list.join(", "))
        }
    }
}

/// Where the store and the kernel disagree, or the allowlist and a ban.
fn warnings(e: &Explanation) -> Vec<String> {
    let mut out = Vec::new();
    let banned = matches!(e.verdict, Verdict::Banned | Verdict::Covered);
    let k = &e.kernel;
    if k.available && k.entries.iter().any(|entry| entry.live) && !banned {
        out.push(
            "a live kernel map entry blocks it though no ban in the store does; the next reconciliation removes it"
                .to_owned(),
        );
    }
    if k.available && banned && !k.entries.iter().any(|entry| entry.live) {
        out.push(
            "the store bans it but no live kernel map entry does; the next reconciliation writes it back"
                .to_owned(),
        );
    }
    if banned && let Some(entry) = &e.allowlisted_by {
        out.push(format!(
            "the allowlist entry {} covers it: the ban is lifted at the next reload",
            printable(entry)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bans::{
        Source,
        explain::{Explanation, MapEntry},
    };

    fn covered_explanation() -> Explanation {
        Explanation {
            input: "::ffff:192.0.2.7".into(),
            target: "192.0.2.7".into(),
            verdict: Verdict::Covered,
            ban: None,
            covered_by: vec![BanDetail {
                entry: BanEntry {
                    addr: "192.0.2.0/24".parse().expect("net"),
                    expires_at: None,
                    source: Source::Cli,
                    reason: "bulk\u{1b}[2J".into(),
                    detail: String::new(),
                    count: 2,
                    ports: None,
                    packets: 0,
                    last_hit: None,
                },
                first_banned_at: "2026-11-28T00:00:00Z".into(),
                last_banned_at: "2026-11-29T00:00:00Z".into(),
            }],
            history: None,
            next_bantime: Some("2h".into()),
            inside: 0,
            inside_first: Vec::new(),
            allowlisted_by: None,
            own_address: None,
            kernel: KernelView {
                available: true,
                enforcing: true,
                note: "attached to eth0".into(),
                entries: vec![MapEntry {
                    map: "prefix_v4".into(),
                    key: "192.0.2.0/24".into(),
                    live: true,
                    expires_at: None,
                    source: Source::Cli,
                    count: 2,
                    ports: Some(vec![25]),
                }],
                dropped: true,
            },
            fail2ban: None,
            ports: vec![25, 587],
        }
    }

    #[test]
    fn a_covered_address_names_its_prefix_and_what_the_kernel_holds() {
        let text = explanation_text(&covered_explanation());
        assert_eq!(
            text,
            "192.0.2.7 is blocked by the ban on 192.0.2.0/24: it has no ban of its own\n\
             \x20 (read \"::ffff:192.0.2.7\" as 192.0.2.7)\n\
             ban:        none of its own\n\
             covered by: 192.0.2.0/24 by cli, \"bulk\\\\u{1b}[2J\", permanently, on xdp.ports, count 2 (escalation step 2), first banned 2026-11-28T00:00:00Z, last 2026-11-29T00:00:00Z\n\
             allowlist:  no entry covers it\n\
             kernel:     prefix_v4 192.0.2.0/24: live, permanent, on ports 25, source cli, count 2\n\
             \x20           its packets are dropped\n\
             fail2ban:   not configured\n\
             ports:      bans without ports of their own apply to destination ports 25, 587 only (xdp.ports); other traffic passes\n\
             next ban:   2h at ban.bantime\n"
        );
    }

    #[test]
    fn store_and_kernel_disagreeing_is_a_warning() {
        let mut e = covered_explanation();
        e.verdict = Verdict::Allowlisted;
        e.covered_by.clear();
        e.allowlisted_by = Some("192.0.2.0/24".into());
        let text = explanation_text(&e);
        assert!(
            text.starts_with(
                "192.0.2.7 is not banned: the allowlist entry 192.0.2.0/24 protects it\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "warning: a live kernel map entry blocks it though no ban in the store does"
            ),
            "{text}"
        );
        e.kernel = KernelView {
            note: "XDP not loaded: no privilege".into(),
            ..KernelView::default()
        };
        let text = explanation_text(&e);
        assert!(
            text.contains("kernel:     maps not available: XDP not loaded: no privilege\n"),
            "{text}"
        );
        assert!(!text.contains("warning"), "{text}");
    }
}
