//! `[fleet]`: where Redis is and what is shared.

use serde::Deserialize;

use crate::bans::Source;

/// `[fleet]`. Absent: bans stay local.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `redis://[:password@]host:port/db` or `redis+unix:///path.sock`; a
    /// password (or `user:password`) goes in the URL.
    pub redis: String,
    /// This node's name in messages; default: the host name.
    #[serde(default)]
    pub node: Option<String>,
    /// The pub/sub channel; default `spamwall`.
    #[serde(default = "default_name")]
    pub channel: String,
    /// Key prefix: `<prefix>:bans` (sorted set by expiry) and
    /// `<prefix>:details` (hash); default `spamwall`.
    #[serde(default = "default_name")]
    pub prefix: String,
    /// Sources whose bans are published; default policy and logwatch.
    #[serde(default = "default_share")]
    pub share: Vec<Source>,
    /// Whether bans from other nodes are applied here; default true.
    #[serde(default = "default_accept")]
    pub accept: bool,
}

fn default_name() -> String {
    "spamwall".to_owned()
}

fn default_share() -> Vec<Source> {
    vec![Source::Policy, Source::Logwatch]
}

const fn default_accept() -> bool {
    true
}

impl FleetConfig {
    /// Problems, one per key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = redis::Client::open(self.redis.as_str()) {
            problems.push(format!(
                "fleet.redis: {:?} is not a Redis URL ({error})",
                self.redacted_url()
            ));
        }
        if self.share.contains(&Source::Fleet) {
            problems.push("fleet.share: \"fleet\" cannot be shared again".to_owned());
        }
        if self.channel.is_empty() {
            problems.push("fleet.channel: must not be empty".to_owned());
        }
        if self.prefix.is_empty() {
            problems.push("fleet.prefix: must not be empty".to_owned());
        }
        if self.node.as_deref().is_some_and(str::is_empty) {
            problems.push("fleet.node: must not be empty".to_owned());
        }
        problems
    }

    /// `node`, else the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .ok()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "spamwall".to_owned())
        })
    }

    /// The URL without its password, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact(&self.redis)
    }

    /// The sorted set of active targets by expiry.
    pub fn bans_key(&self) -> String {
        format!("{}:bans", self.prefix)
    }

    /// The hash of ban details by target.
    pub fn details_key(&self) -> String {
        format!("{}:details", self.prefix)
    }
}

fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_problems() {
        let config: FleetConfig =
            toml::from_str("redis = \"redis://:secret@192.0.2.1:6379/0\"\nnode = \"mx1\"")
                .expect("toml");
        assert_eq!(config.channel, "spamwall");
        assert_eq!(config.share, [Source::Policy, Source::Logwatch]);
        assert!(config.accept);
        assert!(config.problems().is_empty());
        assert_eq!(config.redacted_url(), "redis://***@192.0.2.1:6379/0");
        assert_eq!(config.bans_key(), "spamwall:bans");
        let bad: FleetConfig =
            toml::from_str("redis = \"http://x\"\nshare = [\"fleet\"]").expect("toml");
        let problems = bad.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(toml::from_str::<FleetConfig>("redis = \"redis://h\"\nbogus = 1").is_err());
    }
}
