//! What an mtpolicyd configuration becomes, before it is written as
//! TOML: checks, threshold stages, greylisting, rate limits, and notes on
//! what was left out.

use super::parse::Location;

/// Base weight of the score slots that stand for a plugin answering at
/// once (`mode = "reject"`, a `Condition` with an `action`, …).
pub const SLOT_BASE: f64 = 1000.0;
/// Most such slots; each weighs four times the next, so the first one a
/// mail hits decides, as mtpolicyd's chain stops at the first answer.
pub const MAX_SLOTS: usize = 20;

/// A score: plain, or a slot's weight plus a plain part.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Score {
    Fixed(f64),
    /// Slot index, and the plugin's own score added to it.
    Slot(usize, f64),
}

/// What a slot does when a mail's highest slot is it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// Answer this access(5) action (a reject, a deferral, …).
    Answer(String),
    /// Accept: the weight counts negatively, so no threshold is reached.
    Accept,
}

#[derive(Clone, Debug)]
pub struct Slot {
    pub kind: SlotKind,
    /// The plugin, for the comment.
    pub origin: String,
}

impl Slot {
    /// The slot's weight: `SLOT_BASE × 4^(n−1−index)`.
    pub fn weight(index: usize, count: usize) -> f64 {
        let power = i32::try_from(count.saturating_sub(index + 1)).unwrap_or(0);
        SLOT_BASE * 4f64.powi(power)
    }
}

/// One `[[policy.check]]`.
#[derive(Clone, Debug, Default)]
pub struct Check {
    /// Comment lines above it (without `# `).
    pub comment: Vec<String>,
    pub name: String,
    /// The mtpolicyd plugin it came from.
    pub plugin: String,
    pub kind: &'static str,
    pub zone: Option<String>,
    pub score: Option<Score>,
    /// `(match, name, score)`.
    pub categories: Vec<(String, String, Score)>,
    pub fields: Vec<&'static str>,
    pub allow: bool,
    pub action: Option<String>,
    pub client: Vec<String>,
    pub sender: Vec<String>,
    pub recipient: Vec<String>,
    pub helo: Vec<String>,
    /// SPF result scores by result name.
    pub spf_scores: Vec<(&'static str, Score)>,
    pub file: Option<String>,
    /// Written as comments only: it needs something the importer cannot
    /// provide (a list file exported from SQL).
    pub disabled: bool,
}

/// One stage of mtpolicyd's score answers, in chain order.
#[derive(Clone, Debug)]
pub enum Stage {
    /// `ScoreAction`: at a score of at least `threshold`.
    Score {
        threshold: f64,
        action: Option<String>,
        ban: bool,
        greylist: bool,
        origin: String,
    },
    /// `AddScoreHeader`: always answers, `YES` from `spam_score` on.
    Header {
        spam_score: f64,
        header: String,
        origin: String,
    },
}

/// One `[[policy.threshold]]`.
#[derive(Clone, Debug)]
pub struct Threshold {
    pub comment: Vec<String>,
    pub score: f64,
    pub action: String,
    pub ban: bool,
}

/// `[policy.greylist]`.
#[derive(Clone, Debug)]
pub struct Greylist {
    pub comment: Vec<String>,
    pub delay: u64,
    pub expire: u64,
    pub keep_days: u64,
    pub auto_allow: u64,
    pub action: String,
}

/// One `[[policy.ratelimit]]`.
#[derive(Clone, Debug)]
pub struct RateLimit {
    pub comment: Vec<String>,
    pub name: String,
    pub key: String,
    pub count: &'static str,
    pub limit: u64,
    pub window: String,
    pub action: String,
}

/// Something said about the input: left out (`lost`) or worth knowing.
#[derive(Clone, Debug)]
pub struct Note {
    pub at: Option<Location>,
    pub text: String,
    /// Part of the configuration that has no equivalent: the import is
    /// incomplete.
    pub lost: bool,
}

/// The whole result.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub source: String,
    pub listen: Vec<String>,
    pub request_timeout: Option<u64>,
    pub checks: Vec<Check>,
    pub slots: Vec<Slot>,
    pub stages: Vec<Stage>,
    pub greylist: Option<Greylist>,
    pub ratelimits: Vec<RateLimit>,
    pub notes: Vec<Note>,
    /// The chain was cut at spamwall's limits.
    pub cut: bool,
}

impl Model {
    /// Notes a part that was not carried over.
    pub fn lost(&mut self, at: &Location, text: impl Into<String>) {
        self.notes.push(Note {
            at: Some(at.clone()),
            text: text.into(),
            lost: true,
        });
    }

    /// Notes something carried over with a difference worth knowing.
    pub fn note(&mut self, at: &Location, text: impl Into<String>) {
        self.notes.push(Note {
            at: Some(at.clone()),
            text: text.into(),
            lost: false,
        });
    }

    /// A new slot answering `kind`; `None` past [`MAX_SLOTS`].
    pub fn slot(&mut self, kind: SlotKind, origin: &str) -> Option<usize> {
        if self.slots.len() >= MAX_SLOTS {
            return None;
        }
        self.slots.push(Slot {
            kind,
            origin: origin.to_owned(),
        });
        Some(self.slots.len() - 1)
    }

    /// A check name not used yet, made of `wanted`'s allowed characters.
    pub fn check_name(&self, wanted: &str) -> String {
        let mut base: String = wanted
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '-'
                }
            })
            .take(60)
            .collect();
        if base.is_empty() {
            base.push_str("plugin");
        }
        let mut name = base.clone();
        let mut n = 2;
        while self.checks.iter().any(|c| c.name == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        name
    }
}
