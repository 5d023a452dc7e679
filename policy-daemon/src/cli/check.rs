//! `spamwall check-config`: every problem of a configuration at once, the
//! warnings that stop short of an error, and a summary of what will run.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use clap::Args;
use serde::Serialize;

use super::{Failure, ports_text, print_json, print_out};
use crate::config::{Config, HostPaths, resolve_path};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// File to check [default: as for --config]
    pub path: Option<PathBuf>,
    /// Treat warnings as errors: exit 2 if there is any
    #[arg(long)]
    pub strict: bool,
    /// Print one JSON object: ok, path, errors, warnings, summary
    #[arg(long)]
    pub json: bool,
    /// The resolver configuration DNS checks fall back to (for tests)
    #[arg(
        long,
        hide = true,
        value_name = "PATH",
        default_value = "/etc/resolv.conf"
    )]
    pub resolv_conf: PathBuf,
}

/// What `check-config --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    /// No errors, and no warnings under `--strict`.
    ok: bool,
    path: String,
    errors: Vec<String>,
    warnings: Vec<String>,
    /// What will run; `None` when the file could not be read.
    summary: Option<Summary>,
}

/// Every part the daemon will run with this configuration.
#[derive(Debug, Serialize)]
struct Summary {
    interfaces: Vec<String>,
    mode: String,
    ports: Vec<u16>,
    backends: Vec<String>,
    bantime: String,
    allowlist: Vec<String>,
    control_socket: String,
    /// `None`: the policy server is off.
    policy: Option<PolicySummary>,
    logwatch: LogwatchSummary,
    /// `None`: bans stay on this host.
    fleet: Option<FleetSummary>,
    /// The `/metrics` address; `None`: no endpoint.
    metrics: Option<String>,
}

#[derive(Debug, Serialize)]
struct PolicySummary {
    listen: Vec<String>,
    resolver: String,
    checks: Vec<CheckSummary>,
    thresholds: Vec<ThresholdSummary>,
    /// One line per `[[policy.ratelimit]]`.
    ratelimits: Vec<String>,
}

#[derive(Debug, Serialize)]
struct CheckSummary {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    zone: Option<String>,
    score: Option<f64>,
}

#[derive(Debug, Serialize)]
struct ThresholdSummary {
    score: f64,
    action: String,
    ban: Option<String>,
    /// The ban's own ports; `None`: `xdp.ports`, empty: all traffic.
    ports: Option<Vec<u16>>,
}

#[derive(Debug, Serialize)]
struct LogwatchSummary {
    sources: Vec<SourceSummary>,
    rules: Vec<RuleSummary>,
}

#[derive(Debug, Serialize)]
struct SourceSummary {
    name: String,
    /// A file path, or `journal:UNIT,UNIT`.
    reads: String,
}

#[derive(Debug, Serialize)]
struct RuleSummary {
    filter: String,
    mode: Option<String>,
    /// `None`: every source.
    source: Option<String>,
    maxretry: u32,
    findtime: String,
    bantime: String,
    /// The ban's own ports; `None`: `xdp.ports`, empty: all traffic.
    ports: Option<Vec<u16>>,
}

#[derive(Debug, Serialize)]
struct FleetSummary {
    /// The Redis URL without its password.
    redis: String,
    channel: String,
    share: Vec<String>,
    accept: bool,
    signed: bool,
}

/// `check-config`: exit 0 when the file is usable (warnings printed), 2
/// when it is not, or when `--strict` and there are warnings.
pub fn check_config(flag: Option<&Path>, args: &CheckArgs) -> Result<(), Failure> {
    let path = resolve_path(args.path.as_deref().or(flag));
    let host = HostPaths {
        resolv_conf: args.resolv_conf.clone(),
        ..HostPaths::default()
    };
    let report = examine(&path, &host, args.strict);
    if args.json {
        print_json(&report)?;
        return if report.ok {
            Ok(())
        } else {
            Err(Failure::usage(String::new()))
        };
    }
    if let Some(summary) = &report.summary
        && report.errors.is_empty()
    {
        let verdict = if report.ok {
            "OK"
        } else {
            "refused by --strict"
        };
        print_out(&format!(
            "{}: {verdict}\n{}",
            path.display(),
            summary_text(summary)
        ))?;
    }
    for warning in &report.warnings {
        eprintln!("spamwall: warning: {}", super::printable(warning));
    }
    if !report.errors.is_empty() {
        return Err(Failure::usage(format!(
            "config {}:\n  {}",
            path.display(),
            report.errors.join("\n  ")
        )));
    }
    if !report.ok {
        return Err(Failure::usage(format!(
            "config {}: {} warning{} and --strict",
            path.display(),
            report.warnings.len(),
            if report.warnings.len() == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

/// Reads, validates and judges the file at `path`.
fn examine(path: &Path, host: &HostPaths, strict: bool) -> Report {
    let shown = path.display().to_string();
    let refused = |errors: Vec<String>| Report {
        ok: false,
        path: shown.clone(),
        errors,
        warnings: Vec::new(),
        summary: None,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return refused(vec![format!("cannot read it: {e}")]),
    };
    let reading = match Config::read(&text) {
        Ok(reading) => reading,
        Err(message) => return refused(vec![message]),
    };
    let errors = reading.problems;
    let (warnings, summary) = reading.config.map_or_else(
        || (Vec::new(), None),
        |config| {
            let mut warnings = config.warnings();
            warnings.extend(config.host_warnings(host));
            (warnings, Some(summarize(&config)))
        },
    );
    Report {
        ok: errors.is_empty() && (warnings.is_empty() || !strict),
        path: shown,
        errors,
        warnings,
        summary,
    }
}

/// `NAME: LIMIT COUNT per WINDOW by KEY: ACTION[, ban BANTIME]`.
fn ratelimit_line(limit: &crate::policy::ratelimit::RateLimitConfig) -> String {
    let window = limit
        .window
        .parse()
        .map_or_else(|e| e, |w| humantime::format_duration(w).to_string());
    let ban = limit
        .ban
        .map_or_else(String::new, |ban| format!(", ban {ban}"));
    format!(
        "{}: {} {} per {window} by {}: {}{ban}",
        limit.name, limit.limit, limit.count, limit.key, limit.action
    )
}

fn summarize(config: &Config) -> Summary {
    let policy = &config.policy;
    Summary {
        interfaces: config.xdp.interfaces.clone(),
        mode: config.xdp.mode.to_string(),
        ports: config.xdp.ports.clone(),
        backends: config
            .ban
            .backends
            .iter()
            .map(ToString::to_string)
            .collect(),
        bantime: config.ban.bantime.to_string(),
        allowlist: config
            .ban
            .allowlist
            .entries()
            .iter()
            .map(ToString::to_string)
            .collect(),
        control_socket: config.daemon.control_socket.display().to_string(),
        policy: policy.serves().then(|| PolicySummary {
            listen: policy.listen.iter().map(ToString::to_string).collect(),
            resolver: policy
                .resolver
                .clone()
                .unwrap_or_else(|| "system (/etc/resolv.conf)".to_owned()),
            checks: policy
                .check
                .iter()
                .map(|check| CheckSummary {
                    name: check.name.clone(),
                    kind: check.kind.to_string(),
                    zone: check.zone.clone(),
                    score: check.score,
                })
                .collect(),
            thresholds: policy
                .threshold
                .iter()
                .map(|threshold| ThresholdSummary {
                    score: threshold.score,
                    action: threshold.action.clone(),
                    ban: threshold.ban.map(|ban| ban.to_string()),
                    ports: threshold.ports.clone(),
                })
                .collect(),
            ratelimits: policy.ratelimit.iter().map(ratelimit_line).collect(),
        }),
        logwatch: LogwatchSummary {
            sources: config
                .logwatch
                .source
                .iter()
                .map(|source| SourceSummary {
                    name: source.name.clone(),
                    reads: match (&source.path, &source.journal) {
                        (Some(path), _) => path.display().to_string(),
                        (None, Some(units)) => format!("journal:{}", units.join(",")),
                        (None, None) => String::new(),
                    },
                })
                .collect(),
            rules: config
                .logwatch
                .rule
                .iter()
                .map(|rule| RuleSummary {
                    filter: rule.filter.clone(),
                    mode: rule.mode.clone(),
                    source: rule.source.clone(),
                    maxretry: rule.maxretry.unwrap_or(crate::logwatch::DEFAULT_MAXRETRY),
                    findtime: humantime::format_duration(
                        rule.findtime
                            .map_or(crate::logwatch::DEFAULT_FINDTIME, |span| span.0),
                    )
                    .to_string(),
                    bantime: rule.bantime.unwrap_or(config.ban.bantime).to_string(),
                    ports: rule.ports.clone(),
                })
                .collect(),
        },
        fleet: config.fleet.as_ref().map(|fleet| FleetSummary {
            redis: without_password(&fleet.redis),
            channel: fleet.channel.clone(),
            share: fleet.share.iter().map(ToString::to_string).collect(),
            accept: fleet.accept,
            signed: fleet.secret_file.is_some(),
        }),
        metrics: config.metrics.listen.clone(),
    }
}

/// Where a rule's or threshold's bans hold.
fn scope_text(ports: Option<&[u16]>) -> String {
    match ports {
        None => "on xdp.ports".to_owned(),
        Some([]) => "on all traffic".to_owned(),
        Some(ports) => format!("on ports {}", ports_text(ports)),
    }
}

/// A Redis URL fit to print: `redis://:secret@host` becomes
/// `redis://***@host`.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn summary_text(summary: &Summary) -> String {
    let mut out = String::new();
    let interfaces = if summary.interfaces.is_empty() {
        "none (bans not enforced by XDP)".to_owned()
    } else {
        summary.interfaces.join(", ")
    };
    let _ = writeln!(out, "  interfaces: {interfaces} (mode {})", summary.mode);
    let _ = writeln!(out, "  ports: {}", ports_text(&summary.ports));
    let _ = writeln!(out, "  backends: {}", summary.backends.join(", "));
    let _ = writeln!(out, "  bantime: {}", summary.bantime);
    let _ = writeln!(out, "  allowlist: {}", summary.allowlist.join(", "));
    let _ = writeln!(out, "  control socket: {}", summary.control_socket);
    match &summary.policy {
        None => out.push_str("  policy server: off\n"),
        Some(policy) => {
            let _ = writeln!(
                out,
                "  policy server: {} (resolver {})",
                policy.listen.join(", "),
                policy.resolver
            );
            if policy.checks.is_empty() {
                out.push_str("    no checks: every mail scores 0\n");
            }
            for check in &policy.checks {
                let zone = check
                    .zone
                    .as_ref()
                    .map_or_else(String::new, |zone| format!(" {zone}"));
                let score = check
                    .score
                    .map_or_else(String::new, |score| format!(", score {score}"));
                let _ = writeln!(
                    out,
                    "    check {} ({}{zone}{score})",
                    check.name, check.kind
                );
            }
            for threshold in &policy.thresholds {
                let ban = threshold.ban.as_ref().map_or_else(String::new, |ban| {
                    format!(", ban {ban} {}", scope_text(threshold.ports.as_deref()))
                });
                let _ = writeln!(
                    out,
                    "    threshold {}: {}{ban}",
                    threshold.score, threshold.action
                );
            }
            for limit in &policy.ratelimits {
                let _ = writeln!(out, "    ratelimit {limit}");
            }
        }
    }
    let logwatch = &summary.logwatch;
    if logwatch.sources.is_empty() && logwatch.rules.is_empty() {
        out.push_str("  logwatch: off\n");
    } else {
        out.push_str("  logwatch:\n");
    }
    for source in &logwatch.sources {
        let _ = writeln!(out, "    source {}: {}", source.name, source.reads);
    }
    for rule in &logwatch.rules {
        let mode = rule
            .mode
            .as_ref()
            .map_or_else(String::new, |mode| format!(" mode {mode}"));
        let source = rule.source.as_deref().unwrap_or("every source");
        let _ = writeln!(
            out,
            "    rule {}{mode} on {source}: {} within {}, ban {} {}",
            rule.filter,
            rule.maxretry,
            rule.findtime,
            rule.bantime,
            scope_text(rule.ports.as_deref())
        );
    }
    match &summary.fleet {
        None => out.push_str("  fleet: off\n"),
        Some(fleet) => {
            let _ = writeln!(
                out,
                "  fleet: {} channel {}, shares {}, {} remote bans, {}",
                fleet.redis,
                fleet.channel,
                fleet.share.join(", "),
                if fleet.accept { "accepts" } else { "ignores" },
                if fleet.signed { "signed" } else { "unsigned" }
            );
        }
    }
    let _ = writeln!(
        out,
        "  metrics: {}",
        summary.metrics.as_deref().unwrap_or("off")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(dir: &Path) -> HostPaths {
        std::fs::create_dir_all(dir.join("net/eth0")).expect("mkdir");
        std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n").expect("write");
        HostPaths {
            net_class: dir.join("net"),
            resolv_conf: dir.join("resolv.conf"),
        }
    }

    #[test]
    fn a_usable_file_is_summarized_part_by_part() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spamwall.toml");
        std::fs::write(
            &path,
            "[xdp]\ninterfaces = [\"eth0\"]\n[ban]\nbackends = [\"xdp\", \"fail2ban\"]\nallowlist = [\"192.0.2.0/24\"]\n\
             [policy]\nlisten = [\"127.0.0.1:10040\"]\n\
             [[policy.check]]\nname = \"zen\"\ntype = \"dnsbl\"\nzone = \"zen.example\"\nscore = 5\n\
             [[policy.threshold]]\nscore = 5\naction = \"REJECT\"\nban = \"1h\"\nports = [25]\n\
             [[logwatch.source]]\nname = \"mail\"\njournal = [\"postfix.service\"]\n\
             [[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"rbl\"\nmaxretry = 1\n\
             [fleet]\nredis = \"redis://:hunter2@127.0.0.1:6379\"\n\
             [metrics]\nlisten = \"127.0.0.1:9465\"\n",
        )
        .expect("write");
        let report = examine(&path, &host(dir.path()), true);
        assert!(report.ok, "{report:?}");
        assert!(report.errors.is_empty() && report.warnings.is_empty());
        let text = summary_text(report.summary.as_ref().expect("summary"));
        for needle in [
            "  interfaces: eth0 (mode auto)\n",
            "  backends: xdp, fail2ban\n",
            "  allowlist: 127.0.0.0/8, ::1/128, 192.0.2.0/24\n",
            "  policy server: 127.0.0.1:10040 (resolver system (/etc/resolv.conf))\n",
            "    check zen (dnsbl zen.example, score 5)\n",
            "    threshold 5: REJECT, ban 1h on ports 25\n",
            "    source mail: journal:postfix.service\n",
            "    rule postfix mode rbl on every source: 1 within 10m, ban 1h on xdp.ports\n",
            "  fleet: redis://***@127.0.0.1:6379 channel spamwall",
            "  metrics: 127.0.0.1:9465\n",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn errors_and_warnings_are_all_reported_and_strict_refuses_warnings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = host(dir.path());
        let path = dir.path().join("spamwall.toml");
        std::fs::write(&path, "[xdp]\ninterfaces = [\"nosuch0\"]\n").expect("write");
        let report = examine(&path, &host, false);
        assert!(report.ok && report.errors.is_empty(), "{report:?}");
        assert_eq!(report.warnings.len(), 1, "{report:?}");
        assert!(!examine(&path, &host, true).ok);
        std::fs::write(
            &path,
            "[xdp]\ninterfaces = [\"nosuch0\"]\nmode = \"turbo\"\n[ban]\nbantime = \"soon\"\n",
        )
        .expect("write");
        let report = examine(&path, &host, false);
        assert!(!report.ok);
        assert_eq!(report.errors.len(), 2, "{report:?}");
        assert!(
            report.errors[0].starts_with("xdp.mode: line 3"),
            "{report:?}"
        );
        assert!(
            report.errors[1].starts_with("ban.bantime: line 5"),
            "{report:?}"
        );
        assert_eq!(report.warnings.len(), 1, "still judged: {report:?}");
        let report = examine(&dir.path().join("absent.toml"), &host, false);
        assert!(!report.ok && report.summary.is_none());
        assert!(
            report.errors[0].starts_with("cannot read it: "),
            "{report:?}"
        );
    }
}
