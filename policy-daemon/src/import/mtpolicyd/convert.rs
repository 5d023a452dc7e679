//! The configuration as a whole: global settings, the `<VirtualHost>`,
//! its plugin chain, and mtpolicyd's score answers as a threshold table.

use std::collections::BTreeSet;

use super::{
    model::{Model, Score, Slot, SlotKind, Stage, Threshold},
    parse::Block,
    plugins,
    settings::FLOOR,
};

/// mtpolicyd's process settings, which have no meaning for spamwall.
const PROCESS_SETTINGS: &[&str] = &[
    "user",
    "group",
    "pid_file",
    "chroot",
    "log_level",
    "log_file",
    "syslog_ident",
    "syslog_facility",
    "min_servers",
    "min_spare_servers",
    "max_spare_servers",
    "max_servers",
    "max_requests",
    "keepalive_timeout",
    "max_keepalive",
    "tcp_timeout",
    "background",
    "setsid",
];

/// Reads the parsed configuration into a [`Model`].
pub fn convert(root: &Block, source: &str) -> Model {
    let mut model = Model {
        source: source.to_owned(),
        ..Model::default()
    };
    let mut process = Vec::new();
    for setting in root.settings() {
        match setting.key.as_str() {
            "request_timeout" => match setting.value.trim().parse::<u64>() {
                Ok(secs) if (1..100).contains(&secs) => model.request_timeout = Some(secs),
                _ => model.note(
                    &setting.at,
                    format!(
                        "request_timeout = {:?}: spamwall answers within 1 to 99 s; its default 10s is kept",
                        setting.value
                    ),
                ),
            },
            "host" | "port" => {}
            key if PROCESS_SETTINGS.contains(&key) => process.push(key.to_owned()),
            key => model.note(
                &setting.at,
                format!("{key}: an mtpolicyd setting spamwall does not need"),
            ),
        }
    }
    let mut hosts = root.blocks().filter(|b| b.kind == "VirtualHost");
    for block in root.blocks() {
        match block.kind.as_str() {
            "VirtualHost" => {}
            "Connection" | "SessionCache" => model.note(
                &block.at,
                format!(
                    "{}: spamwall keeps scores and greylisting in its own memory and database; no memcached, Redis or SQL connection is needed",
                    block.title()
                ),
            ),
            _ => model.lost(
                &block.at,
                format!("{}: not an mtpolicyd 2.05 section", block.title()),
            ),
        }
    }
    match hosts.next() {
        None => model.lost(
            &root.at,
            "no <VirtualHost PORT>: there is no plugin chain to carry over",
        ),
        Some(host) => {
            let listen = listen_address(root, host, &mut model);
            model.listen.push(listen);
            for plugin in host.blocks() {
                if plugin.kind == "Plugin" {
                    plugins::convert(plugin, &mut model);
                } else {
                    model.lost(
                        &plugin.at,
                        format!("{} inside {}: not a plugin", plugin.title(), host.title()),
                    );
                }
            }
            for setting in host.settings().filter(|s| s.key != "name") {
                model.note(
                    &setting.at,
                    format!(
                        "{}: a VirtualHost setting spamwall does not need",
                        setting.key
                    ),
                );
            }
        }
    }
    for other in hosts {
        model.lost(
            &other.at,
            format!(
                "{}: spamwall runs one check chain; a second VirtualHost needs a second spamwall configuration",
                other.title()
            ),
        );
    }
    if !process.is_empty() {
        model.notes.insert(
            0,
            super::model::Note {
                at: None,
                text: format!(
                    "process settings with no meaning here: {}",
                    process.join(", ")
                ),
                lost: false,
            },
        );
    }
    model
}

/// The address of the `VirtualHost`'s port: the `port` entry with that port
/// (`host:port` or a bare port with `host`), else loopback.
fn listen_address(root: &Block, host: &Block, model: &mut Model) -> String {
    let port = host.name.trim();
    if port.parse::<u16>().is_err() {
        model.lost(
            &host.at,
            format!(
                "{}: not a port number; listening on 127.0.0.1:10040",
                host.title()
            ),
        );
        return crate::policy::config::DEFAULT_LISTEN.to_owned();
    }
    let default_host = root
        .get("host")
        .map(str::trim)
        .filter(|h| h.parse::<std::net::IpAddr>().is_ok())
        .unwrap_or("127.0.0.1");
    let entries = root.get("port").unwrap_or_default();
    for entry in entries.split([',', ' ']).map(str::trim) {
        let (address, entry_port) = match entry.rsplit_once(':') {
            Some((address, p)) => (address.trim_matches(['[', ']']), p),
            None => (default_host, entry),
        };
        if entry_port == port
            && let Ok(ip) = address.parse::<std::net::IpAddr>()
        {
            return std::net::SocketAddr::new(ip, port.parse().unwrap_or_default()).to_string();
        }
    }
    format!("{default_host}:{port}")
}

/// The thresholds: mtpolicyd's `ScoreAction` and `AddScoreHeader` stages
/// evaluated at every score where their outcome can change (so the
/// highest threshold reached answers as mtpolicyd's first stage would),
/// then one per answering slot.
pub fn thresholds(model: &mut Model) -> Vec<Threshold> {
    let mut values = BTreeSet::new();
    for stage in &model.stages {
        match stage {
            Stage::Score { threshold, .. } => values.insert(Key(*threshold)),
            Stage::Header { spam_score, .. } => {
                values.insert(Key(FLOOR));
                values.insert(Key(*spam_score))
            }
        };
    }
    let mut table = Vec::new();
    let mut lost = Vec::new();
    for Key(value) in values {
        let (answer, mut ban, greylist) = outcome(&model.stages, value);
        if !ban.is_empty() && (greylist || value <= 0.0) {
            lost.push(format!(
                "the ban of {} at score {}: {}",
                ban.join(", "),
                number(value),
                if greylist {
                    "a greylisting threshold does not ban"
                } else {
                    "a ban needs a threshold above 0"
                }
            ));
            ban.clear();
        }
        let (action, origin) = match answer {
            Some(answer) => answer,
            None if !ban.is_empty() => ("DUNNO".to_owned(), ban.join(", ")),
            None => continue,
        };
        let mut comment = vec![format!("from {origin}")];
        if !ban.is_empty() {
            comment.push(format!(
                "{}'s Fail2Ban banned through fail2ban for its jail's bantime (fail2ban's default 10m): set yours",
                ban.join(", ")
            ));
        }
        table.push(Threshold {
            comment,
            score: value,
            action,
            ban: !ban.is_empty(),
        });
    }
    for text in lost {
        model.notes.push(super::model::Note {
            at: None,
            text,
            lost: true,
        });
    }
    let count = model.slots.len();
    for (index, Slot { kind, origin }) in model.slots.iter().enumerate() {
        if let SlotKind::Answer(action) = kind {
            table.push(Threshold {
                comment: vec![format!("slot {index}: {origin} answers at once")],
                score: Slot::weight(index, count) / 2.0,
                action: action.clone(),
                ban: false,
            });
        }
    }
    table
}

/// What mtpolicyd's stages answer at `value`: the first that answers in
/// chain order (its action and origin), the bans of the stages before
/// it, and whether the answer is greylisting.
fn outcome(stages: &[Stage], value: f64) -> (Option<(String, String)>, Vec<String>, bool) {
    let mut ban = Vec::new();
    for stage in stages {
        match stage {
            Stage::Score {
                threshold,
                action,
                ban: bans,
                greylist,
                origin,
            } if *threshold <= value => {
                if *bans {
                    ban.push(origin.clone());
                }
                if *greylist {
                    return (Some(("greylist".to_owned(), origin.clone())), ban, true);
                }
                if let Some(action) = action {
                    return (Some((action.clone(), origin.clone())), ban, false);
                }
            }
            Stage::Score { .. } => {}
            Stage::Header {
                spam_score,
                header,
                origin,
            } => {
                let verdict = if value >= *spam_score { "YES" } else { "NO" };
                let action = format!("PREPEND {header}: {verdict} score=%SCORE% [%DETAIL%]");
                return (Some((action, origin.clone())), ban, false);
            }
        }
    }
    (None, ban, false)
}

/// A score's value in the written configuration.
pub fn score_value(score: Score, slots: &[Slot]) -> f64 {
    match score {
        Score::Fixed(value) => value,
        Score::Slot(index, own) => {
            let weight = Slot::weight(index, slots.len());
            match slots[index].kind {
                SlotKind::Answer(_) => weight + own,
                SlotKind::Accept => own - weight,
            }
        }
    }
}

/// A number as TOML writes it: whole numbers without a fraction.
pub fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

/// An `f64` ordered for a set (values are finite).
#[derive(Clone, Copy, PartialEq)]
struct Key(f64);

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
