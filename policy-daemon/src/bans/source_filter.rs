//! Which bans a `list` or an `unban --source` means: a source, or one
//! feed of the `feed` source (`feed:NAME`, the word its bans' reasons
//! start with).

use std::{fmt, str::FromStr};

use super::Source;

/// A source, narrowed to one feed when `feed` is set (then `source` is
/// [`Source::Feed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFilter {
    pub source: Source,
    pub feed: Option<String>,
}

impl SourceFilter {
    /// Every ban of `source`.
    pub const fn all(source: Source) -> Self {
        Self { source, feed: None }
    }

    /// The reason's first word every ban of the feed has: `feed:NAME`.
    pub fn reason_word(&self) -> Option<String> {
        self.feed.as_ref().map(|name| format!("feed:{name}"))
    }

    /// Whether a ban of `source` with `reason` is one this filter means.
    pub fn matches(&self, source: Source, reason: &str) -> bool {
        source == self.source
            && self
                .reason_word()
                .is_none_or(|word| reason.split(' ').next() == Some(word.as_str()))
    }
}

/// Whether `name` may name a feed: 1 to 64 ASCII letters, digits, `-`,
/// `_` or `.`, so that `feed:NAME` is one word of a reason.
pub fn is_feed_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A text that is neither a source nor `feed:NAME`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a ban source (policy, cli, logwatch, fleet, feed or feed:NAME, NAME being 1 to 64 letters, digits, '-', '_' or '.')"
)]
pub struct UnknownSourceFilter(pub String);

impl FromStr for SourceFilter {
    type Err = UnknownSourceFilter;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownSourceFilter(text.to_owned());
        match text.split_once(':') {
            Some(("feed", name)) if is_feed_name(name) => Ok(Self {
                source: Source::Feed,
                feed: Some(name.to_owned()),
            }),
            Some(_) => Err(unknown()),
            None => text.parse().map(Self::all).map_err(|_| unknown()),
        }
    }
}

impl fmt::Display for SourceFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.feed {
            Some(name) => write!(f, "feed:{name}"),
            None => self.source.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_feeds_parse_and_print_back() {
        for text in [
            "policy",
            "cli",
            "logwatch",
            "fleet",
            "feed",
            "feed:spamhaus-drop",
        ] {
            let filter: SourceFilter = text.parse().expect(text);
            assert_eq!(filter.to_string(), text);
        }
        let feed: SourceFilter = "feed:drop_v4.1".parse().expect("feed");
        assert_eq!(feed.source, Source::Feed);
        assert_eq!(feed.feed.as_deref(), Some("drop_v4.1"));
    }

    #[test]
    fn anything_else_is_refused_with_the_forms_named() {
        let long = format!("feed:{}", "a".repeat(65));
        for text in [
            "",
            "feed:",
            "feed: x",
            "feed:a b",
            "feed:a%",
            "feed:x:y",
            "policy:x",
            "Feed:x",
            "martian",
            long.as_str(),
        ] {
            let error = text.parse::<SourceFilter>().expect_err(text);
            assert!(error.to_string().contains("feed:NAME"), "{error}");
        }
    }

    #[test]
    fn a_feed_filter_matches_its_own_reasons_only() {
        let drop: SourceFilter = "feed:drop".parse().expect("feed");
        assert!(drop.matches(Source::Feed, "feed:drop"));
        assert!(drop.matches(Source::Feed, "feed:drop SBL123"));
        assert!(!drop.matches(Source::Feed, "feed:drop2 SBL123"));
        assert!(!drop.matches(Source::Feed, "feed:dro"));
        assert!(!drop.matches(Source::Cli, "feed:drop"));
        let feeds = SourceFilter::all(Source::Feed);
        assert!(feeds.matches(Source::Feed, "feed:anything"));
        assert!(!feeds.matches(Source::Policy, "feed:anything"));
    }
}
