//! The imported jails written as spamwall's TOML, with a `#` comment for
//! everything that could not be carried over.

use std::{fmt::Write as _, path::Path};

use ipnet::IpNet;

use super::{
    Import,
    ini::Config,
    jail::{Jail, Logs, Ports, Reading},
    values::{self, Ignored},
};
use crate::logwatch::filter::{Filter, import_fail2ban};

/// Distinct port lists rules may use besides `xdp.ports`.
const MAX_PORT_LISTS: usize = 7;

/// A jail that will be written: its filter's entry and its sources.
struct Carried<'a> {
    jail: &'a Jail,
    filter: usize,
    sources: Vec<usize>,
    ports: Ports,
    lost: Vec<String>,
}

struct FilterEntry {
    name: String,
    spec: String,
}

struct SourceEntry {
    name: String,
    logs: Logs,
}

/// What the jails become: filters and sources shared between rules, the
/// rules, and what is lost.
#[derive(Default)]
struct Plan<'a> {
    lost: Vec<String>,
    filters: Vec<FilterEntry>,
    sources: Vec<SourceEntry>,
    carried: Vec<Carried<'a>>,
    port_lists: Vec<Ports>,
}

impl<'a> Plan<'a> {
    fn add(&mut self, config: &Config, reading: &'a Reading, filter_dir: &Path) {
        let jail = match reading {
            Reading::Other { name, filter } => {
                self.lost.push(format!(
                    "jail {name} (filter {filter}): not a mail jail; left to fail2ban"
                ));
                return;
            }
            Reading::Refused { name, reason } => {
                self.lost
                    .push(format!("jail {name}: not carried over: {reason}"));
                return;
            }
            Reading::Mail(jail) => jail,
        };
        let mut jail_lost = jail.lost.clone();
        let logs = filter_spec(jail, filter_dir).and_then(|spec| {
            let logs = match &jail.logs {
                Logs::Journal(_) => vec![Logs::Journal(journal_units(
                    config,
                    jail,
                    filter_dir,
                    &mut jail_lost,
                )?)],
                Logs::Files(paths) => paths.iter().map(|p| Logs::Files(vec![p.clone()])).collect(),
            };
            Ok((spec, logs))
        });
        let (spec, logs) = match logs {
            Ok(found) => found,
            Err(reason) => {
                self.lost
                    .push(format!("jail {}: not carried over: {reason}", jail.name));
                return;
            }
        };
        if logs.len() > 1 {
            jail_lost.push(
                "several logpaths: a rule for each, counting its file's lines apart".to_owned(),
            );
        }
        let filter = self.filter(jail, spec);
        let sources = logs.into_iter().map(|log| self.source(log)).collect();
        let mut ports = jail.ports.clone();
        if ports != Ports::Default && !self.port_lists.contains(&ports) {
            if self.port_lists.len() < MAX_PORT_LISTS {
                self.port_lists.push(ports.clone());
            } else {
                jail_lost.push(format!(
                    "port: more than {MAX_PORT_LISTS} distinct port lists; its bans hold on xdp.ports"
                ));
                ports = Ports::Default;
            }
        }
        self.carried.push(Carried {
            jail,
            filter,
            sources,
            ports,
            lost: jail_lost,
        });
    }

    fn filter(&mut self, jail: &Jail, spec: String) -> usize {
        if let Some(index) = self.filters.iter().position(|f| f.spec == spec) {
            return index;
        }
        let taken: Vec<&str> = self.filters.iter().map(|f| f.name.as_str()).collect();
        let name = unique(filter_name(jail), &taken);
        self.filters.push(FilterEntry { name, spec });
        self.filters.len() - 1
    }

    fn source(&mut self, logs: Logs) -> usize {
        if let Some(index) = self.sources.iter().position(|s| s.logs == logs) {
            return index;
        }
        let taken: Vec<&str> = self.sources.iter().map(|s| s.name.as_str()).collect();
        let name = unique(source_name(&logs), &taken);
        self.sources.push(SourceEntry { name, logs });
        self.sources.len() - 1
    }
}

pub(super) fn write(config: &Config, readings: &[Reading], filter_dir: &Path) -> Import {
    let mut plan = Plan::default();
    for reading in readings {
        plan.add(config, reading, filter_dir);
    }
    let Plan {
        mut lost,
        filters,
        sources,
        carried,
        ..
    } = plan;
    let mut out = String::new();
    out.push_str("# spamwall configuration from fail2ban's\n");
    for file in &config.files {
        let _ = writeln!(out, "#   {}", comment(&file.display().to_string()));
    }
    if !filters.is_empty() {
        out.push_str(
            "# The filters are fail2ban's filter files, read in place: keep them (or copy\n\
             # them and change `file`) when fail2ban is removed.\n",
        );
    }
    let ban = ban_section(&carried, &mut lost);
    if !lost.is_empty() {
        out.push_str("#\n# Not carried over:\n");
        for line in &lost {
            let _ = writeln!(out, "# - {}", comment(line));
        }
    }
    out.push_str(&ban);
    for source in &sources {
        out.push_str("\n[[logwatch.source]]\n");
        let _ = writeln!(out, "name = {}", quoted(&source.name));
        match &source.logs {
            Logs::Files(paths) => {
                let path = paths
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let _ = writeln!(out, "path = {}", quoted(&path));
            }
            Logs::Journal(units) => {
                let _ = writeln!(out, "journal = {}", list(units.iter().map(|u| quoted(u))));
            }
        }
    }
    for filter in &filters {
        out.push_str("\n[[logwatch.filter]]\n");
        let _ = writeln!(out, "name = {}", quoted(&filter.name));
        let _ = writeln!(out, "file = {}", quoted(&filter.spec));
    }
    let mut total_lost = lost.len();
    for jail in &carried {
        total_lost += jail.lost.len();
        out.push_str(&rule(jail, &filters, &sources));
    }
    Import {
        toml: out,
        lost: total_lost,
    }
}

/// `file` of the jail's `[[logwatch.filter]]`, after the filter imported
/// and compiled as the daemon will import and compile it.
fn filter_spec(jail: &Jail, filter_dir: &Path) -> Result<String, String> {
    let file = filter_dir.join(format!("{}.conf", jail.filter));
    if jail.filter.contains('/') || !file.is_file() {
        return Err(format!("filter {}: no {}", jail.filter, file.display()));
    }
    for (key, value) in &jail.options {
        if value.contains([',', ']', '[', '"']) {
            return Err(format!(
                "filter option {key}={value:?}: a value with `,`, `[`, `]` or `\"` cannot be passed to a filter file"
            ));
        }
    }
    let imported = import_fail2ban(&file, &jail.options)
        .map_err(|e| format!("filter {}: {e}", jail.filter))?;
    Filter::new(&jail.filter, &imported.failregex, &imported.ignoreregex)
        .map_err(|e| e.to_string())?;
    let mut spec = file.display().to_string();
    if !jail.options.is_empty() {
        let options: Vec<String> = jail
            .options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = write!(spec, "[{}]", options.join(","));
    }
    Ok(spec)
}

/// The journal units of a `backend = systemd` jail, from its
/// `journalmatch` or its filter's.
fn journal_units(
    config: &Config,
    jail: &Jail,
    filter_dir: &Path,
    lost: &mut Vec<String>,
) -> Result<Vec<String>, String> {
    let own = config
        .get(&jail.name, "journalmatch")
        .map_err(|e| e.to_string())?;
    let matches = if let Some(own) = own.filter(|m| !m.trim().is_empty()) {
        own
    } else {
        let files = crate::logwatch::filter::fail2ban_files(&filter_dir.join(&jail.filter));
        let filter = Config::read(&files).map_err(|e| e.to_string())?;
        filter
            .get("Definition", "journalmatch")
            .map_err(|e| e.to_string())?
            .unwrap_or_default()
    };
    let mut units = Vec::new();
    for token in matches.split_whitespace().filter(|t| *t != "+") {
        match token.strip_prefix("_SYSTEMD_UNIT=") {
            Some(unit) if !unit.is_empty() => units.push(unit.to_owned()),
            _ => lost.push(format!(
                "journalmatch {token}: spamwall selects journal entries by unit only"
            )),
        }
    }
    if units.is_empty() {
        return Err("backend = systemd with no _SYSTEMD_UNIT= in journalmatch".to_owned());
    }
    Ok(units)
}

/// `[ban]`: escalation, `ignoreself` and the allowlist, which spamwall
/// holds once for every rule.
fn ban_section(carried: &[Carried<'_>], lost: &mut Vec<String>) -> String {
    let mut out = String::new();
    let Some(first) = carried.first() else {
        return out;
    };
    out.push_str("\n[ban]\n");
    let increment = first.jail.increment;
    for other in carried.iter().filter(|c| c.jail.increment != increment) {
        lost.push(format!(
            "jail {}: bantime.increment = {}: escalation is one setting for every rule here, {increment} as jail {} has it",
            other.jail.name, other.jail.increment, first.jail.name
        ));
    }
    let _ = writeln!(out, "increment = {increment}");
    if increment {
        let escalating: Vec<&Jail> = carried
            .iter()
            .map(|c| c.jail)
            .filter(|j| j.increment)
            .collect();
        if let Some(factor) = escalating[0].factor {
            let _ = writeln!(out, "factor = {factor:?}");
        }
        match escalating[0].maxtime {
            Some(maxtime) => {
                let _ = writeln!(out, "maxtime = {}", quoted(&values::span(maxtime)));
            }
            None => lost.push(format!(
                "jail {}: no bantime.maxtime: spamwall caps escalated bans at ban.maxtime (1w unless set)",
                escalating[0].name
            )),
        }
        for jail in &escalating[1..] {
            if jail.factor != escalating[0].factor || jail.maxtime != escalating[0].maxtime {
                lost.push(format!(
                    "jail {}: bantime.factor/maxtime: one setting for every rule here, jail {}'s",
                    jail.name, escalating[0].name
                ));
            }
        }
    }
    let ignoreself = first.jail.ignoreself;
    if carried.iter().any(|c| c.jail.ignoreself != ignoreself) {
        lost.push("ignoreself differs between jails: spamwall's ban.ignore_self holds for every rule (true)".to_owned());
    } else if !ignoreself {
        out.push_str("ignore_self = false\n");
    }
    let mut allow: Vec<IpNet> = Vec::new();
    for jail in carried.iter().map(|c| c.jail) {
        for entry in &jail.ignoreip {
            match entry {
                Ignored::Net(net) if !allow.contains(net) => allow.push(*net),
                Ignored::Name(name) => {
                    let line = format!(
                        "ignoreip {name}: a name, and the allowlist holds addresses (add its addresses)"
                    );
                    if !lost.contains(&line) {
                        lost.push(line);
                    }
                }
                _ => {}
            }
        }
    }
    for jail in carried.iter().map(|c| c.jail) {
        let own: Vec<&IpNet> = jail
            .ignoreip
            .iter()
            .filter_map(|e| match e {
                Ignored::Net(net) => Some(net),
                _ => None,
            })
            .collect();
        if own.len() < allow.len() && !allow.is_empty() {
            lost.push(format!(
                "jail {}: ignoreip is narrower than the others': the allowlist holds for every rule",
                jail.name
            ));
        }
    }
    if !allow.is_empty() {
        let _ = writeln!(
            out,
            "allowlist = {}",
            list(allow.iter().map(|net| quoted(&net.to_string())))
        );
    }
    out
}

fn rule(carried: &Carried<'_>, filters: &[FilterEntry], sources: &[SourceEntry]) -> String {
    let jail = carried.jail;
    let mut out = String::new();
    for &source in &carried.sources {
        let _ = write!(out, "\n# jail {}\n", comment(&jail.name));
        for line in &carried.lost {
            let _ = writeln!(out, "# not carried over: {}", comment(line));
        }
        out.push_str("[[logwatch.rule]]\n");
        let _ = writeln!(out, "filter = {}", quoted(&filters[carried.filter].name));
        let _ = writeln!(out, "source = {}", quoted(&sources[source].name));
        let _ = writeln!(out, "maxretry = {}", jail.maxretry);
        let _ = writeln!(out, "findtime = {}", quoted(&values::span(jail.findtime)));
        let bantime = if jail.bantime < 0 {
            "permanent".to_owned()
        } else {
            values::span(jail.bantime)
        };
        let _ = writeln!(out, "bantime = {}", quoted(&bantime));
        match &carried.ports {
            Ports::All => out.push_str("ports = []\n"),
            Ports::Only(ports) => {
                let _ = writeln!(out, "ports = {}", list(ports.iter().map(u16::to_string)));
            }
            Ports::Default => {}
        }
    }
    out
}

fn filter_name(jail: &Jail) -> String {
    let mut name = jail.filter.clone();
    for (_, value) in &jail.options {
        name.push('-');
        name.push_str(value);
    }
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name == "postfix" {
        "postfix-fail2ban".to_owned()
    } else {
        name
    }
}

fn source_name(logs: &Logs) -> String {
    match logs {
        Logs::Files(paths) => paths
            .first()
            .and_then(|p| p.file_stem())
            .map(|s| {
                s.to_string_lossy()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "log".to_owned()),
        Logs::Journal(_) => "journal".to_owned(),
    }
}

fn unique(wanted: String, taken: &[&str]) -> String {
    if !taken.contains(&wanted.as_str()) {
        return wanted;
    }
    // Some suffix up to one past the names taken is free.
    (2..=taken.len() + 2)
        .map(|n| format!("{wanted}-{n}"))
        .find(|name| !taken.contains(&name.as_str()))
        .unwrap_or(wanted)
}

fn list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

/// A TOML basic string.
pub(super) fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `text` as one comment line: a value's newline must not end the comment
/// and let the rest be read as configuration.
fn comment(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
