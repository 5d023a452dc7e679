//! Lengths of time as the configuration and the command line write them:
//! humantime text (`90s`, `10m`, `1h 30m`, `1w`) or a number of seconds.
//! A leaf: the configuration sections of every module use it.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, de};

/// A length of time: humantime text (`10m`, `1w`) or seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let span = duration(deserializer)?;
        if span.is_zero() {
            return Err(de::Error::custom("must be longer than zero"));
        }
        Ok(Self(span))
    }
}

/// A length of time as TOML gives it: a number of seconds, or text.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

/// The longest length of time any setting takes: a hundred years. Longer
/// values are typing mistakes, and would overflow the clock arithmetic
/// timers do.
const MAX_SETTING: Duration = Duration::from_hours(876_600);

/// Humantime text (`500ms`, `90s`, `10m`, `1h 30m`, `1w`) or a plain
/// number of seconds, at most a hundred years.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_unbounded(text)?;
    bounded(duration).map_err(|e| format!("{:?}: {e}", text.trim()))
}

/// [`parse_duration`] without the upper bound, for callers with a bound
/// of their own.
fn parse_unbounded(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text).map_err(|e| {
            format!("invalid duration {text:?}: {e} (examples: 500ms, 90s, 10m, 1h, 1w)")
        }),
    }
}

fn bounded(duration: Duration) -> Result<Duration, String> {
    if duration > MAX_SETTING {
        Err(format!(
            "{} is longer than the longest setting, {}",
            humantime::format_duration(duration),
            humantime::format_duration(MAX_SETTING)
        ))
    } else {
        Ok(duration)
    }
}

/// Deserializes a length of time: a number of seconds or
/// [`parse_duration`] text; zero allowed.
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    match RawDuration::deserialize(deserializer)? {
        RawDuration::Seconds(secs) => bounded(Duration::from_secs(secs)).map_err(de::Error::custom),
        RawDuration::Text(text) => parse_duration(&text).map_err(de::Error::custom),
    }
}

/// A ban length; `None` is permanent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanTime(pub Option<Duration>);

impl FromStr for BanTime {
    type Err = String;

    /// Accepts humantime durations (`90s`, `10m`, `1h`, `1w`, `1h 30m`),
    /// a plain number of seconds, and `0` or `permanent` for no expiry.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().eq_ignore_ascii_case("permanent") {
            return Ok(Self(None));
        }
        let duration = parse_unbounded(text).map_err(|e| format!("{e} or permanent"))?;
        Self::limited(duration).map_err(|e| format!("{:?}: {e}", text.trim()))
    }
}

impl BanTime {
    /// `length` as a ban time (zero is permanent), refused beyond
    /// [`crate::clock::MAX_BAN_LENGTH`].
    fn limited(length: Duration) -> Result<Self, String> {
        if length.is_zero() {
            return Ok(Self(None));
        }
        crate::clock::check_ban_length(length)
            .map(|length| Self(Some(length)))
            .map_err(|e| e.to_string())
    }
}

impl fmt::Display for BanTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("permanent"),
            Some(d) => write!(f, "{}", humantime::format_duration(d)),
        }
    }
}

impl<'de> Deserialize<'de> for BanTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match RawDuration::deserialize(deserializer)? {
            RawDuration::Seconds(secs) => {
                Self::limited(Duration::from_secs(secs)).map_err(de::Error::custom)
            }
            RawDuration::Text(text) => text.parse().map_err(de::Error::custom),
        }
    }
}
