//! `[policy.greylist]`: how long a new triplet waits, how long state is
//! kept, and what a deferred client is told.

use std::time::Duration;

use serde::Deserialize;

use crate::{duration::duration, policy::action::check_action};

/// The placeholder for the time left before a retry passes.
pub const DELAY_PLACEHOLDER: &str = "%DELAY%";

/// The `[policy.greylist]` section. Greylisting applies to the mails a
/// `[[policy.threshold]]` with `action = "greylist"` reaches.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GreylistConfig {
    /// A triplet retried after this passes. Default 5 min.
    #[serde(deserialize_with = "duration")]
    pub delay: Duration,
    /// A triplet never retried is forgotten this long after it was first
    /// seen. Default 2 days.
    #[serde(deserialize_with = "duration")]
    pub expire: Duration,
    /// A triplet that passed, and a client network's pass count, are kept
    /// this long after they were last seen. Default 35 days (postgrey's
    /// `--max-age`).
    #[serde(deserialize_with = "duration")]
    pub keep: Duration,
    /// A client network that passed this many distinct triplets skips
    /// greylisting; 0 never. Default 5.
    pub auto_allow: u32,
    /// The client network of a triplet: IPv4 prefix length. Default 24.
    pub v4_prefix: u8,
    /// The client network of a triplet: IPv6 prefix length. Default 64.
    pub v6_prefix: u8,
    /// The answer to a greylisted request: a deferral, with `%DELAY%`,
    /// `%IP%`, `%SCORE%`, `%DETAIL%`.
    pub action: String,
    /// Most triplets kept; past it the least recently seen are dropped.
    /// Default 1,000,000.
    pub max_triplets: usize,
}

impl Default for GreylistConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_mins(5),
            expire: Duration::from_hours(48),
            keep: Duration::from_hours(35 * 24),
            auto_allow: 5,
            v4_prefix: 24,
            v6_prefix: 64,
            action: "DEFER_IF_PERMIT greylisted, retry in %DELAY%".to_owned(),
            max_triplets: 1_000_000,
        }
    }
}

impl GreylistConfig {
    /// Every problem of the section, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.delay.is_zero() {
            problems.push("policy.greylist.delay: must be longer than 0s".to_owned());
        }
        if self.expire <= self.delay {
            problems.push(format!(
                "policy.greylist.expire: {} must be longer than delay ({}), or no retry can pass",
                humantime::format_duration(self.expire),
                humantime::format_duration(self.delay)
            ));
        }
        if self.keep < self.expire {
            problems.push(format!(
                "policy.greylist.keep: {} must be at least expire ({})",
                humantime::format_duration(self.keep),
                humantime::format_duration(self.expire)
            ));
        }
        if !(8..=32).contains(&self.v4_prefix) {
            problems.push(format!(
                "policy.greylist.v4_prefix: {} is not a prefix length from 8 to 32",
                self.v4_prefix
            ));
        }
        if !(16..=128).contains(&self.v6_prefix) {
            problems.push(format!(
                "policy.greylist.v6_prefix: {} is not a prefix length from 16 to 128",
                self.v6_prefix
            ));
        }
        if self.max_triplets == 0 {
            problems.push("policy.greylist.max_triplets: must be at least 1".to_owned());
        }
        if let Err(e) = check_deferral(&self.action) {
            problems.push(format!("policy.greylist.action: {e}"));
        }
        problems
    }
}

/// Checks that `action` is an access(5) action that defers: greylisting
/// that answers anything else would lose mail or let it through.
fn check_deferral(action: &str) -> Result<(), String> {
    check_action(action)?;
    let word = action.split_whitespace().next().unwrap_or_default();
    let defers = ["DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
        || (word.len() == 3 && word.starts_with('4'));
    if defers {
        Ok(())
    } else {
        Err(format!(
            "{word:?} does not defer; greylisting answers DEFER_IF_PERMIT, DEFER or a 4NN code"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GreylistConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_are_postgreys() {
        let config = parse("").expect("empty section");
        assert_eq!(config, GreylistConfig::default());
        assert!(config.problems().is_empty(), "{:?}", config.problems());
    }

    #[test]
    fn the_issue_example_parses() {
        let config = parse(
            r#"
delay = "5m"
expire = "2d"
auto_allow = 5
v4_prefix = 24
v6_prefix = 64
action = "DEFER_IF_PERMIT greylisted, retry in %DELAY%"
"#,
        )
        .expect("example");
        assert_eq!(config.delay, Duration::from_mins(5));
        assert_eq!(config.expire, Duration::from_hours(48));
        assert!(config.problems().is_empty());
    }

    #[test]
    fn every_problem_names_its_key() {
        let config = parse(
            r#"
delay = 0
expire = "1m"
keep = "30s"
v4_prefix = 33
v6_prefix = 8
action = "REJECT go away"
max_triplets = 0
"#,
        )
        .expect("parses");
        let problems = config.problems().join("\n");
        for key in [
            "policy.greylist.delay",
            "policy.greylist.keep",
            "policy.greylist.v4_prefix",
            "policy.greylist.v6_prefix",
            "policy.greylist.action",
            "policy.greylist.max_triplets",
        ] {
            assert!(problems.contains(key), "{key} missing in:\n{problems}");
        }
        let config = parse("delay = \"1h\"\nexpire = \"1h\"").expect("parses");
        assert!(config.problems()[0].starts_with("policy.greylist.expire"));
        assert!(parse("dealy = \"5m\"").is_err(), "unknown keys are refused");
    }

    #[test]
    fn only_deferrals_are_greylisting_answers() {
        for good in [
            "DEFER_IF_PERMIT greylisted",
            "defer try later",
            "450 4.7.1 later",
        ] {
            assert!(check_deferral(good).is_ok(), "{good}");
        }
        for bad in ["REJECT no", "550 no", "DUNNO", "OK", "greylist"] {
            assert!(check_deferral(bad).is_err(), "{bad}");
        }
    }
}
