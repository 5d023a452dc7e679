//! A jail's settings, read from the merged configuration, with what of
//! them spamwall cannot hold.

use std::path::PathBuf;

use super::{
    ini::Config,
    values::{self, Ignored},
};

/// fail2ban's own values for a jail that sets none (its server defaults).
const DEFAULT_MAXRETRY: u32 = 3;
const DEFAULT_SECONDS: i64 = 600;
/// The longest ban spamwall holds ([`crate::clock::MAX_BAN_LENGTH`]), in
/// seconds; also the longest window taken.
const LONGEST: i64 = 87_660 * 3600;

/// Filters of mail software among those fail2ban ships.
const MAIL_FILTERS: &[&str] = &[
    "assp",
    "courier-auth",
    "courier-smtp",
    "cyrus-imap",
    "dovecot",
    "exim",
    "exim-spam",
    "perdition",
    "qmail",
    "sendmail-auth",
    "sendmail-reject",
    "sieve",
    "squirrelmail",
    "uwimap-auth",
];

/// Where a jail reads its lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Logs {
    Files(Vec<PathBuf>),
    /// Units of the systemd journal.
    Journal(Vec<String>),
}

/// The ports a jail's bans hold on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    All,
    Only(Vec<u16>),
    /// `xdp.ports`.
    Default,
}

/// An enabled jail as spamwall can hold it.
#[derive(Debug)]
pub struct Jail {
    pub name: String,
    /// The filter's name in `filter.d` and its options.
    pub filter: String,
    pub options: Vec<(String, String)>,
    pub logs: Logs,
    pub ports: Ports,
    pub maxretry: u32,
    pub findtime: i64,
    /// Negative: permanent.
    pub bantime: i64,
    pub increment: bool,
    pub factor: Option<f64>,
    pub maxtime: Option<i64>,
    pub ignoreip: Vec<Ignored>,
    pub ignoreself: bool,
    /// Settings not carried over, each with why.
    pub lost: Vec<String>,
}

/// What became of an enabled jail.
#[derive(Debug)]
pub enum Reading {
    Mail(Box<Jail>),
    /// Enabled but not a mail jail: left to fail2ban.
    Other {
        name: String,
        filter: String,
    },
    /// A mail jail that cannot be carried over, and why.
    Refused {
        name: String,
        reason: String,
    },
}

/// The names of the jail sections, in order.
pub fn jail_names(config: &Config) -> Vec<String> {
    config
        .sections
        .iter()
        .map(|(name, _)| name.clone())
        .filter(|name| !name.contains('?') && !name.contains('/'))
        .collect()
}

/// Reads jail `name`; `None` when it is not enabled.
pub fn read(config: &Config, name: &str, services: &str) -> Option<Reading> {
    let get = |key: &str| config.get(name, key).map_err(|e| e.to_string());
    let enabled = match get("enabled").and_then(|v| v.map_or(Ok(false), |v| values::boolean(&v))) {
        Ok(enabled) => enabled,
        Err(reason) => {
            return Some(Reading::Refused {
                name: name.to_owned(),
                reason: format!("enabled: {reason}"),
            });
        }
    };
    if !enabled {
        return None;
    }
    let refused = |reason: String| {
        Some(Reading::Refused {
            name: name.to_owned(),
            reason,
        })
    };
    let spec = match get("filter") {
        Ok(Some(spec)) if !spec.trim().is_empty() => spec,
        Ok(_) => return refused("no filter".to_owned()),
        Err(e) => return refused(e),
    };
    let (filter, options) = match values::reference(&spec) {
        Ok(parsed) => parsed,
        Err(e) => return refused(format!("filter: {e}")),
    };
    let logpath = match get("logpath") {
        Ok(value) => value.unwrap_or_default(),
        Err(e) => return refused(e),
    };
    let mail_logs: Vec<String> = [
        "syslog_mail",
        "syslog_mail_warn",
        "postfix_log",
        "dovecot_log",
    ]
    .iter()
    .filter_map(|key| config.get(name, key).ok().flatten())
    .filter(|path| !path.is_empty())
    .collect();
    let paths: Vec<&str> = logpath
        .lines()
        .map(|line| line.split_whitespace().next().unwrap_or(""))
        .filter(|p| !p.is_empty())
        .collect();
    let is_mail = filter.starts_with("postfix")
        || MAIL_FILTERS.contains(&filter.as_str())
        || paths
            .iter()
            .any(|p| mail_logs.iter().any(|m| m == p) || p.contains("/mail"));
    if !is_mail {
        return Some(Reading::Other {
            name: name.to_owned(),
            filter: spec,
        });
    }
    match read_mail_jail(config, name, filter, options, &paths, services) {
        Ok(jail) => Some(Reading::Mail(Box::new(jail))),
        Err(reason) => refused(reason),
    }
}

fn read_mail_jail(
    config: &Config,
    name: &str,
    filter: String,
    options: Vec<(String, String)>,
    paths: &[&str],
    services: &str,
) -> Result<Jail, String> {
    let get = |key: &str| config.get(name, key).map_err(|e| e.to_string());
    let mut lost = Vec::new();
    let backend = get("backend")?.unwrap_or_else(|| "auto".to_owned());
    let logs = if backend.trim().starts_with("systemd") {
        Logs::Journal(Vec::new())
    } else {
        if paths.is_empty() {
            return Err("no logpath".to_owned());
        }
        for path in paths {
            if path.contains(['*', '?', '[']) {
                return Err(format!(
                    "logpath {path}: a pattern; spamwall follows named files (list them)"
                ));
            }
            if !path.starts_with('/') {
                return Err(format!("logpath {path}: not an absolute path"));
            }
        }
        Logs::Files(paths.iter().map(PathBuf::from).collect())
    };
    let number = |key: &str, default: i64| -> Result<i64, String> {
        get(key)?.map_or(Ok(default), |v| {
            values::seconds(&v).map_err(|e| format!("{key}: {e}"))
        })
    };
    let maxretry = match get("maxretry")? {
        None => DEFAULT_MAXRETRY,
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("maxretry: {v:?} is not a count of at least 1"))?,
    };
    let findtime = number("findtime", DEFAULT_SECONDS)?;
    if findtime <= 0 {
        return Err(format!("findtime: {findtime} s is not a window"));
    }
    if findtime > LONGEST {
        return Err(format!("findtime: {findtime} s is longer than ten years"));
    }
    let mut bantime = number("bantime", DEFAULT_SECONDS)?;
    if bantime == 0 {
        return Err("bantime: 0 bans for no time".to_owned());
    }
    if bantime > LONGEST {
        lost.push(format!(
            "bantime: {bantime} s is longer than a ban may last (ten years): permanent"
        ));
        bantime = -1;
    }
    let flag = |key: &str, default: bool| -> Result<bool, String> {
        get(key)?.map_or(Ok(default), |v| {
            values::boolean(&v).map_err(|e| format!("{key}: {e}"))
        })
    };
    let increment = flag("bantime.increment", false)?;
    let (factor, maxtime) = if increment {
        escalation(&get)?
    } else {
        (None, None)
    };
    unsupported(&get, &mut lost)?;
    if increment && flag("bantime.overalljails", false)? {
        lost.push(
            "bantime.overalljails: spamwall counts a host's bans from every rule anyway".to_owned(),
        );
    }
    if let Some(v) = get("maxlines")?.filter(|v| v.trim() != "1" && !v.trim().is_empty()) {
        return Err(format!(
            "maxlines = {v}: spamwall matches one line at a time"
        ));
    }
    let ports = port_scope(&get, services, &mut lost)?;
    let ignoreip = get("ignoreip")?
        .unwrap_or_default()
        .split([',', ' ', '\n', '\t'])
        .filter(|s| !s.is_empty())
        .map(values::ignored)
        .collect();
    let ignoreself = flag("ignoreself", true)?;
    lost.extend(extra_actions(&get("action")?.unwrap_or_default()));
    Ok(Jail {
        name: name.to_owned(),
        filter,
        options,
        logs,
        ports,
        maxretry,
        findtime,
        bantime,
        increment,
        factor,
        maxtime,
        ignoreip,
        ignoreself,
        lost,
    })
}

/// The actions after the first (the ban), which spamwall has no
/// equivalent for (mail reports, abuse reports).
fn extra_actions(action: &str) -> Option<String> {
    let names: Vec<&str> = action
        .lines()
        .filter(|l| !l.trim().is_empty())
        .skip(1)
        .filter_map(|l| l.trim().split(['[', ' ']).next())
        .collect();
    (!names.is_empty()).then(|| {
        format!(
            "{} actions besides the ban ({}): spamwall only bans",
            names.len(),
            names.join(", ")
        )
    })
}

/// `bantime.factor` and `bantime.maxtime` of an escalating jail.
fn escalation(
    get: &dyn Fn(&str) -> Result<Option<String>, String>,
) -> Result<(Option<f64>, Option<i64>), String> {
    let factor = match get("bantime.factor")? {
        Some(v) if !v.trim().is_empty() => Some(
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| format!("bantime.factor: {v:?} is not a positive number"))?,
        ),
        _ => None,
    };
    let maxtime = match get("bantime.maxtime")? {
        Some(v) if !v.trim().is_empty() => Some(
            values::seconds(&v)
                .ok()
                .filter(|s| *s > 0 && *s <= LONGEST)
                .ok_or_else(|| {
                    format!("bantime.maxtime: {v:?} is not a length of at most ten years")
                })?,
        ),
        _ => None,
    };
    Ok((factor, maxtime))
}

/// Settings spamwall has no equivalent for, each added to `lost`.
fn unsupported(
    get: &dyn Fn(&str) -> Result<Option<String>, String>,
    lost: &mut Vec<String>,
) -> Result<(), String> {
    for key in [
        "bantime.formula",
        "bantime.multipliers",
        "bantime.rndtime",
        "ignorecommand",
        "logtimezone",
        "datepattern",
        "failregex",
        "ignoreregex",
        "prefregex",
    ] {
        if let Some(value) = get(key)?.filter(|v| !v.trim().is_empty()) {
            lost.push(format!(
                "{key} = {}: spamwall has no such setting",
                one_line(&value)
            ));
        }
    }
    Ok(())
}

/// The ports the jail's bans hold on: every port for an `*-allports`
/// action or `0:65535`; `xdp.ports` when its `port` cannot be read.
fn port_scope(
    get: &dyn Fn(&str) -> Result<Option<String>, String>,
    services: &str,
    lost: &mut Vec<String>,
) -> Result<Ports, String> {
    let banaction = get("banaction")?.unwrap_or_default();
    let action = get("action")?.unwrap_or_default();
    let first_action = action.lines().next().unwrap_or("");
    if first_action.contains("allports")
        || (first_action.is_empty() && banaction.contains("allports"))
    {
        return Ok(Ports::All);
    }
    let Some(port) = get("port")?.filter(|p| !p.trim().is_empty()) else {
        return Ok(Ports::All);
    };
    match values::ports(&port, services) {
        Ok(Some(ports)) => Ok(Ports::Only(ports)),
        Ok(None) => Ok(Ports::All),
        Err(e) => {
            lost.push(format!("port: {e}; its bans hold on xdp.ports"));
            Ok(Ports::Default)
        }
    }
}

fn one_line(value: &str) -> String {
    let first = value.lines().next().unwrap_or("");
    if value.lines().nth(1).is_some() {
        format!("{first} …")
    } else {
        first.to_owned()
    }
}
