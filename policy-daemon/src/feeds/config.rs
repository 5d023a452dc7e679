//! `[[feed]]`: blocklists fetched on a schedule and applied as bans.

use std::time::Duration;

use serde::Deserialize;

use crate::{bans::is_feed_name, duration::Span};

/// The largest body a feed may send unless it says otherwise: 32 MiB
/// (two million plain IPv4 entries).
pub const DEFAULT_MAX_SIZE: u64 = 32 << 20;
/// The most a feed's `max_size` may be raised to: 1 GiB.
pub const MAX_MAX_SIZE: u64 = 1 << 30;
/// The shortest refresh interval (public lists ask for an hour or more).
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// The widest prefix any feed may list, whatever it sets: a /8 or a /16.
pub const FLOOR_V4: u8 = 8;
/// See [`FLOOR_V4`].
pub const FLOOR_V6: u8 = 16;

/// How a feed's body lists its entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeedFormat {
    /// One address or CIDR prefix a line; `#` and `;` start comments.
    Plain,
    /// Spamhaus DROP: one JSON object a line with `cidr` and `sblid`.
    SpamhausJson,
}

/// One `[[feed]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Names the feed: its bans' source reads `feed:NAME`.
    pub name: String,
    /// `http://`, `https://` or `file://` (an absolute path).
    pub url: String,
    pub format: FeedFormat,
    /// How often the feed is fetched. Default 1h.
    #[serde(default)]
    pub refresh: Option<Span>,
    /// How long an entry stays banned after the last fetch that listed
    /// it; entries still listed are extended at each refresh. Default
    /// twice `refresh`, so one failed fetch lifts nothing.
    #[serde(default)]
    pub bantime: Option<Span>,
    /// The widest IPv4 prefix taken from this feed. Default `ban.widest_v4`.
    #[serde(default)]
    pub widest_v4: Option<u8>,
    /// The widest IPv6 prefix taken from this feed. Default `ban.widest_v6`.
    #[serde(default)]
    pub widest_v6: Option<u8>,
    /// The largest body accepted, in bytes. Default 32 MiB.
    #[serde(default)]
    pub max_size: Option<u64>,
    /// How long one fetch may take, all in. Default 60s.
    #[serde(default)]
    pub timeout: Option<Span>,
}

impl FeedConfig {
    /// The refresh interval in force.
    pub fn refresh(&self) -> Duration {
        self.refresh.map_or(Duration::from_hours(1), |s| s.0)
    }

    /// The ban length in force.
    pub fn bantime(&self) -> Duration {
        self.bantime.map_or_else(|| self.refresh() * 2, |s| s.0)
    }

    /// The body size limit in force.
    pub fn max_size(&self) -> u64 {
        self.max_size.unwrap_or(DEFAULT_MAX_SIZE)
    }

    /// The fetch timeout in force.
    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(Duration::from_mins(1), |s| s.0)
    }

    /// The source name its bans show: `feed:NAME`.
    pub fn source_name(&self) -> String {
        format!("feed:{}", self.name)
    }
}

/// Every problem of the `[[feed]]` tables, each naming its key.
pub fn problems(feeds: &[FeedConfig]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, feed) in feeds.iter().enumerate() {
        let key = format!("feed[{i}] ({})", feed.name);
        if !is_feed_name(&feed.name) {
            problems.push(format!(
                "{key}.name: {:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                feed.name
            ));
        }
        if feeds[..i].iter().any(|other| other.name == feed.name) {
            problems.push(format!("{key}.name: {} is used twice", feed.name));
        }
        if let Err(why) = super::fetch::FeedUrl::parse(&feed.url) {
            problems.push(format!("{key}.url: {why}"));
        }
        if feed.refresh() < MIN_REFRESH {
            problems.push(format!(
                "{key}.refresh: must be at least {}",
                humantime::format_duration(MIN_REFRESH)
            ));
        }
        if let Err(error) = crate::clock::check_ban_length(feed.bantime()) {
            problems.push(format!("{key}.bantime: {error}"));
        }
        if feed.bantime() < feed.refresh() {
            problems.push(format!(
                "{key}.bantime: shorter than refresh ({}): entries would lapse between fetches",
                humantime::format_duration(feed.refresh())
            ));
        }
        if let Some(v4) = feed.widest_v4
            && !(FLOOR_V4..=32).contains(&v4)
        {
            problems.push(format!("{key}.widest_v4: must be from {FLOOR_V4} to 32"));
        }
        if let Some(v6) = feed.widest_v6
            && !(FLOOR_V6..=128).contains(&v6)
        {
            problems.push(format!("{key}.widest_v6: must be from {FLOOR_V6} to 128"));
        }
        if feed.max_size() == 0 || feed.max_size() > MAX_MAX_SIZE {
            problems.push(format!(
                "{key}.max_size: must be from 1 to {MAX_MAX_SIZE} bytes"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Feeds {
        feed: Vec<FeedConfig>,
    }

    fn feeds(text: &str) -> Vec<FeedConfig> {
        toml::from_str::<Feeds>(text).expect("toml").feed
    }

    #[test]
    fn a_feed_takes_its_defaults_from_refresh() {
        let feeds = feeds(
            r#"
            [[feed]]
            name = "spamhaus-drop"
            url = "https://www.spamhaus.org/drop/drop_v4.json"
            format = "spamhaus-json"
            refresh = "30m"
            "#,
        );
        let feed = &feeds[0];
        assert_eq!(feed.format, FeedFormat::SpamhausJson);
        assert_eq!(feed.bantime(), Duration::from_hours(1));
        assert_eq!(feed.max_size(), DEFAULT_MAX_SIZE);
        assert_eq!(feed.source_name(), "feed:spamhaus-drop");
        assert!(problems(&feeds).is_empty(), "{:?}", problems(&feeds));
    }

    #[test]
    fn every_problem_names_its_key() {
        let feeds = feeds(
            r#"
            [[feed]]
            name = "a b"
            url = "ftp://example.org/list"
            format = "plain"
            refresh = "500ms"
            bantime = "20y"
            widest_v4 = 0
            widest_v6 = 200
            max_size = 0

            [[feed]]
            name = "x"
            url = "file://relative/path"
            format = "plain"
            refresh = "1h"
            bantime = "10m"

            [[feed]]
            name = "x"
            url = "http://127.0.0.1:8080/list"
            format = "plain"
            "#,
        );
        let problems = problems(&feeds).join("\n");
        for expected in [
            "feed[0] (a b).name:",
            "feed[0] (a b).url: ",
            "feed[0] (a b).refresh: must be at least 1s",
            "feed[0] (a b).bantime:",
            "feed[0] (a b).widest_v4: must be from 8 to 32",
            "feed[0] (a b).widest_v6: must be from 16 to 128",
            "feed[0] (a b).max_size:",
            "feed[1] (x).url: ",
            "feed[1] (x).bantime: shorter than refresh",
            "feed[2] (x).name: x is used twice",
        ] {
            assert!(
                problems.contains(expected),
                "{expected} missing from:\n{problems}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_formats_are_refused() {
        assert!(
            toml::from_str::<Feeds>(
                "[[feed]]\nname = \"a\"\nurl = \"file:///x\"\nformat = \"plain\"\nrefesh = \"1h\"\n"
            )
            .is_err()
        );
        assert!(
            toml::from_str::<Feeds>(
                "[[feed]]\nname = \"a\"\nurl = \"file:///x\"\nformat = \"csv\"\n"
            )
            .is_err()
        );
    }
}
