//! `[[policy.ratelimit]]`: one limit per table, and its validation.

use std::time::Duration;

use serde::Deserialize;

use crate::duration::BanTime;

/// Default of `policy.ratelimit_keys`: the most counters held at once.
pub const DEFAULT_KEYS: usize = 100_000;
/// The shortest window: counts are kept to the millisecond, but a window
/// shorter than a second says nothing a mail server can act on.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// The longest window: counters live two windows, in memory and on disk.
pub const MAX_WINDOW: Duration = Duration::from_hours(24 * 31);

/// A window as TOML gives it: seconds or humantime text.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum WindowText {
    Seconds(u64),
    Text(String),
}

impl WindowText {
    /// The window's length, or why it is not one.
    pub fn parse(&self) -> Result<Duration, String> {
        let length = match self {
            Self::Seconds(secs) => Duration::from_secs(*secs),
            Self::Text(text) => {
                let text = text.trim();
                match text.parse::<u64>() {
                    Ok(secs) => Duration::from_secs(secs),
                    Err(_) => humantime::parse_duration(text).map_err(|e| {
                        format!(
                            "{text:?} is not a length of time ({e}); e.g. \"10m\", \"1h\", \"1d\""
                        )
                    })?,
                }
            }
        };
        if length < MIN_WINDOW || length > MAX_WINDOW {
            return Err(format!(
                "{} is outside 1s to 31 days",
                humantime::format_duration(length)
            ));
        }
        Ok(length)
    }
}

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Every `RCPT` request.
    Recipients,
    /// Each mail (`instance`) once, at its first `RCPT`.
    Mails,
}

impl Count {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "recipients" => Ok(Self::Recipients),
            "mails" => Ok(Self::Mails),
            other => Err(format!(
                "{other:?}: must be \"recipients\" (each RCPT) or \"mails\" (each mail once)"
            )),
        }
    }
}

/// One `[[policy.ratelimit]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Unique name: in details, logs, metrics and the stored counters.
    pub name: String,
    /// The request attribute counted by, e.g. `client_address`, `sender`,
    /// `sasl_username`, `recipient`. Default `client_address`.
    #[serde(default = "default_key")]
    pub key: String,
    /// `recipients` (every RCPT request) or `mails` (each `instance`
    /// once). Default `recipients`.
    #[serde(default = "default_count")]
    pub count: String,
    /// Most counted in one window; the next is over the limit.
    pub limit: u64,
    /// The sliding window, e.g. `"1h"`.
    pub window: WindowText,
    /// access(5) answer over the limit, with `%IP%`, `%SCORE%`, `%DETAIL%`.
    pub action: String,
    /// Also ban the client this long, once per key and window.
    #[serde(default)]
    pub ban: Option<BanTime>,
    /// Added to the mail's score over the limit, once per mail. Default 0.
    #[serde(default)]
    pub score: f64,
}

fn default_key() -> String {
    "client_address".to_owned()
}

fn default_count() -> String {
    "recipients".to_owned()
}

/// A name is safe in logs, metric labels and keys.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A Postfix attribute name: lowercase letters, digits, `_`.
fn is_attribute(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A limit as the engine uses it.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub name: String,
    pub key: String,
    pub count: Count,
    pub limit: u64,
    pub window: Duration,
    pub action: String,
    pub ban: Option<BanTime>,
    pub score: f64,
}

/// Compiles every limit; every problem names its key
/// (`policy.ratelimit[0].window`).
pub fn compile(configs: &[RateLimitConfig]) -> Result<Vec<Compiled>, Vec<String>> {
    let mut problems = Vec::new();
    let mut compiled = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let at = format!("policy.ratelimit[{i}]");
        if !is_name(&config.name) {
            problems.push(format!(
                "{at}.name: {:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                config.name
            ));
        } else if configs[..i].iter().any(|c| c.name == config.name) {
            problems.push(format!(
                "{at}.name: {:?} is used by an earlier limit",
                config.name
            ));
        }
        if !is_attribute(&config.key) {
            problems.push(format!(
                "{at}.key: {:?} is not a request attribute name (e.g. client_address, sender, sasl_username, recipient)",
                config.key
            ));
        }
        let count = Count::parse(&config.count)
            .map_err(|e| problems.push(format!("{at}.count: {e}")))
            .ok();
        if config.limit == 0 {
            problems.push(format!(
                "{at}.limit: must be at least 1 (a list check refuses everything)"
            ));
        }
        let window = config
            .window
            .parse()
            .map_err(|e| problems.push(format!("{at}.window: {e}")))
            .ok();
        if let Err(e) = crate::policy::action::check_action(&config.action) {
            problems.push(format!("{at}.action: {e}"));
        }
        if !config.score.is_finite() {
            problems.push(format!("{at}.score: must be a finite number"));
        }
        if let (Some(count), Some(window)) = (count, window) {
            compiled.push(Compiled {
                name: config.name.clone(),
                key: config.key.clone(),
                count,
                limit: config.limit,
                window,
                action: config.action.trim().to_owned(),
                ban: config.ban,
                score: config.score,
            });
        }
    }
    if problems.is_empty() {
        Ok(compiled)
    } else {
        Err(problems)
    }
}
