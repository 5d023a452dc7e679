//! The threshold table: compiled from `[[policy.threshold]]`, highest
//! score first.

use super::super::{
    action::{Template, check_action},
    config::ThresholdConfig,
};
use crate::{
    bans::{BanLength, BanScope},
    duration::BanTime,
};

/// The threshold action that hands the answer to greylisting.
pub const GREYLIST: &str = "greylist";

/// One compiled `[[policy.threshold]]`.
#[derive(Clone, Debug)]
pub struct Threshold {
    pub score: f64,
    pub action: Template,
    pub ban: Option<BanLength>,
    /// Where the ban holds.
    pub scope: BanScope,
    /// `action = "greylist"`: the answer comes from greylisting.
    pub greylist: bool,
}

/// The threshold table, highest score first.
#[derive(Clone, Debug, Default)]
pub struct Thresholds(Vec<Threshold>);

impl Thresholds {
    /// Compiles and orders the table; every problem names its key.
    /// `greylisting`: whether `[policy.greylist]` is set, which a
    /// `greylist` action needs.
    pub fn compile(configs: &[ThresholdConfig], greylisting: bool) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut table = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            let key = format!("policy.threshold[{i}]");
            if !config.score.is_finite() {
                problems.push(format!("{key}.score: must be a finite number"));
            } else if configs[..i]
                .iter()
                .any(|t| t.score.total_cmp(&config.score).is_eq())
            {
                problems.push(format!(
                    "{key}.score: {} is used by an earlier threshold",
                    config.score
                ));
            }
            let greylist = config.action.trim().eq_ignore_ascii_case(GREYLIST);
            if greylist {
                if !greylisting {
                    problems.push(format!(
                        "{key}.action: \"greylist\" needs a [policy.greylist] section"
                    ));
                }
                if config.ban.is_some() {
                    problems.push(format!(
                        "{key}.ban: a greylisting threshold does not ban; ban from a higher threshold"
                    ));
                }
            } else if let Err(e) = check_action(&config.action) {
                problems.push(format!("{key}.action: {e}"));
            }
            if config.ban.is_some() && config.score <= 0.0 {
                problems.push(format!(
                    "{key}.ban: a ban needs a threshold above 0, or every client is banned"
                ));
            }
            if config.ports.is_some() && config.ban.is_none() {
                problems.push(format!(
                    "{key}.ports: only a threshold with `ban` bans; set `ban` or remove `ports`"
                ));
            }
            table.push(Threshold {
                score: config.score,
                action: Template::parse(config.action.trim()),
                ban: config
                    .ban
                    .map(|BanTime(length)| length.map_or(BanLength::Permanent, BanLength::Base)),
                scope: BanScope::from_setting(config.ports.as_deref()),
                greylist,
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        table.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(Self(table))
    }

    /// Threshold `i` of the table, highest score first.
    pub fn get(&self, i: usize) -> Option<&Threshold> {
        self.0.get(i)
    }

    /// The highest threshold `score` reaches.
    pub fn reached(&self, score: f64) -> Option<(usize, &Threshold)> {
        self.0.iter().enumerate().find(|(_, t)| score >= t.score)
    }
}
