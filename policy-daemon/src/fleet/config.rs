//! `[fleet]`: where Redis is and what is shared.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::{bans::Source, duration::BanTime};

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
    /// File holding the fleet's shared secret: messages and the resync set
    /// are signed with HMAC-SHA256, and only messages signed with it are
    /// applied. Default none: unsigned (warned about off loopback).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Longest ban another node can impose here, counted from receipt;
    /// longer and permanent remote bans are cut to it. `"permanent"` lifts
    /// the cap. Default 7 days.
    #[serde(default = "default_max_bantime")]
    pub max_bantime: BanTime,
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

const fn default_max_bantime() -> BanTime {
    BanTime(Some(Duration::from_hours(24 * 7)))
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
        if let Some(path) = &self.secret_file
            && let Err(error) = super::wire::Secret::load(path)
        {
            problems.push(error.to_string());
        }
        problems
    }

    /// Whether messages travel unauthenticated over a network: no secret,
    /// and plain `redis://` to a host that is not loopback.
    pub fn unprotected(&self) -> bool {
        if self.secret_file.is_some() {
            return false;
        }
        let Ok(client) = redis::Client::open(self.redis.as_str()) else {
            return false;
        };
        match client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, _) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                !(host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback()))
            }
            _ => false,
        }
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
        assert_eq!(
            config.max_bantime,
            BanTime(Some(Duration::from_hours(24 * 7)))
        );
    }

    #[test]
    fn plaintext_off_loopback_without_a_secret_is_unprotected() {
        let fleet = |text: &str| -> FleetConfig { toml::from_str(text).expect("toml") };
        assert!(fleet("redis = \"redis://192.0.2.1:6379\"").unprotected());
        assert!(fleet("redis = \"redis://mx-redis.example\"").unprotected());
        assert!(!fleet("redis = \"redis://127.0.0.1:6379\"").unprotected());
        assert!(!fleet("redis = \"redis://[::1]:6379\"").unprotected());
        assert!(!fleet("redis = \"redis://localhost\"").unprotected());
        assert!(!fleet("redis = \"rediss://192.0.2.1:6379\"").unprotected());
        assert!(!fleet("redis = \"redis+unix:///run/redis.sock\"").unprotected());
        assert!(
            !fleet("redis = \"redis://192.0.2.1\"\nsecret_file = \"/etc/spamwall/fleet.key\"")
                .unprotected()
        );
        let problems =
            fleet("redis = \"redis://h\"\nsecret_file = \"/nonexistent/key\"").problems();
        assert!(
            problems.iter().any(|p| p.contains("/nonexistent/key")),
            "{problems:?}"
        );
    }
}
