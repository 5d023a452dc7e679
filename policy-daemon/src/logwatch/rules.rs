//! `[[logwatch.rule]]`: `maxretry` failures of one host within `findtime`
//! (fail2ban's sliding window) decide a ban.
//!
//! Memory is bounded: a host's window holds at most `maxretry` times,
//! times older than `findtime` are pruned, and a rule tracks at most
//! [`MAX_HOSTS`] hosts (the stalest are forgotten first).

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, SystemTime},
};

use super::{
    LogwatchConfig,
    filter::{Filter, Verdict},
    resolve::{ResolveError, resolve_filter},
};
use crate::bans::{BanLength, BanScope};

/// `findtime` when a rule gives none (fail2ban's default).
pub const DEFAULT_FINDTIME: Duration = Duration::from_mins(10);
/// `maxretry` when a rule gives none (fail2ban's default).
pub const DEFAULT_MAXRETRY: u32 = 5;
/// Hosts one rule keeps windows for.
pub const MAX_HOSTS: usize = 100_000;
/// A line stamped this far in the future counts as now (clock skew).
const FUTURE_SLACK: Duration = Duration::from_mins(1);

/// A rule whose filter cannot be built, naming its key.
#[derive(Debug, thiserror::Error)]
#[error("logwatch.rule[{index}].filter: {error}")]
pub struct RuleError {
    pub index: usize,
    pub error: ResolveError,
}

/// One compiled rule and its windows.
#[derive(Debug)]
struct Rule {
    filter: Filter,
    source: Option<String>,
    findtime: Duration,
    maxretry: u32,
    length: BanLength,
    scope: BanScope,
    windows: HashMap<IpAddr, VecDeque<SystemTime>>,
    capacity: usize,
}

/// A ban a rule decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanDecision {
    /// Index in `[[logwatch.rule]]`.
    pub rule: usize,
    /// The filter's name, e.g. `postfix[mode=rbl]`.
    pub filter: String,
    pub host: IpAddr,
    pub length: BanLength,
    /// Where the ban holds.
    pub scope: BanScope,
    /// The line that reached `maxretry`.
    pub line: String,
    /// Failures counted in the window (`maxretry`).
    pub failures: u32,
}

/// What the rules made of one line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Rules whose filter matched the line.
    pub matches: u32,
    pub bans: Vec<BanDecision>,
}

/// Every rule of `[logwatch]`.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// Compiles the rules; a rule without `bantime` bans for `ban.bantime`
    /// (escalated), one with `bantime` starts there (escalated too).
    pub fn new(config: &LogwatchConfig) -> Result<Self, RuleError> {
        Self::with_capacity(config, MAX_HOSTS)
    }

    /// As [`Self::new`], tracking at most `capacity` hosts per rule.
    pub fn with_capacity(config: &LogwatchConfig, capacity: usize) -> Result<Self, RuleError> {
        let user = config.user_filters();
        let rules = config
            .rule
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let filter = resolve_filter(&rule.filter, rule.mode.as_deref(), &user)
                    .map_err(|error| RuleError { index, error })?;
                let length = match rule.bantime {
                    None => BanLength::Default,
                    Some(crate::duration::BanTime(Some(base))) => BanLength::Base(base),
                    Some(crate::duration::BanTime(None)) => BanLength::Permanent,
                };
                Ok(Rule {
                    filter,
                    source: rule.source.clone(),
                    findtime: rule.findtime.map_or(DEFAULT_FINDTIME, |span| span.0),
                    maxretry: rule.maxretry.unwrap_or(DEFAULT_MAXRETRY).max(1),
                    length,
                    scope: BanScope::from_setting(rule.ports.as_deref()),
                    windows: HashMap::new(),
                    capacity: capacity.max(1),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// Whether there is any rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    #[cfg(test)]
    /// Hosts currently tracked by rule `index` (for tests and status).
    pub fn tracked(&self, index: usize) -> usize {
        self.rules.get(index).map_or(0, |rule| rule.windows.len())
    }

    /// Applies every rule of `source` to one line: `text` is what filters
    /// read (timestamp removed), `line` the whole line (the ban reason),
    /// `time` the line's own time if it has one. A line older than a
    /// rule's `findtime` is matched but not counted, as in fail2ban.
    pub fn observe(
        &mut self,
        source: &str,
        text: &str,
        line: &str,
        time: Option<SystemTime>,
        now: SystemTime,
    ) -> Observation {
        let mut observation = Observation::default();
        let time = time
            .filter(|t| *t <= now + FUTURE_SLACK)
            .unwrap_or(now)
            .min(now);
        for (index, rule) in self.rules.iter_mut().enumerate() {
            if rule.source.as_deref().is_some_and(|s| s != source) {
                continue;
            }
            let Verdict::Matched { host, .. } = rule.filter.check(text) else {
                continue;
            };
            observation.matches += 1;
            let horizon = now
                .checked_sub(rule.findtime)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if time <= horizon {
                continue;
            }
            if let Some(failures) = rule.record(host, time, horizon) {
                observation.bans.push(BanDecision {
                    rule: index,
                    filter: rule.filter.name().to_owned(),
                    host,
                    length: rule.length,
                    scope: rule.scope.clone(),
                    line: line.to_owned(),
                    failures,
                });
            }
        }
        observation
    }
}

impl Rule {
    /// Counts a failure of `host` at `time`; `Some(failures)` when that
    /// reaches `maxretry` (the window is then cleared).
    fn record(&mut self, host: IpAddr, time: SystemTime, horizon: SystemTime) -> Option<u32> {
        if !self.windows.contains_key(&host) && self.windows.len() >= self.capacity {
            self.make_room(horizon);
        }
        let window = self.windows.entry(host).or_default();
        window.retain(|t| *t > time.checked_sub(self.findtime).unwrap_or(horizon));
        window.push_back(time);
        let failures = u32::try_from(window.len()).unwrap_or(u32::MAX);
        if failures >= self.maxretry {
            self.windows.remove(&host);
            return Some(failures);
        }
        while window.len() >= self.maxretry as usize {
            window.pop_front();
        }
        None
    }

    /// Drops expired windows, then (still full) the stalest tenth.
    fn make_room(&mut self, horizon: SystemTime) {
        self.windows
            .retain(|_, window| window.back().is_some_and(|t| *t > horizon));
        if self.windows.len() < self.capacity {
            return;
        }
        let mut last: Vec<SystemTime> = self
            .windows
            .values()
            .filter_map(|window| window.back().copied())
            .collect();
        let drop = (self.capacity / 10).max(1).min(last.len() - 1);
        let (_, cutoff, _) = last.select_nth_unstable(drop);
        let cutoff = *cutoff;
        let mut budget = drop;
        self.windows.retain(|_, window| {
            if budget > 0 && window.back().is_none_or(|t| *t < cutoff) {
                budget -= 1;
                return false;
            }
            true
        });
        // Ties at the cutoff: still full means drop arbitrary ones.
        while self.windows.len() >= self.capacity {
            let Some(host) = self.windows.keys().next().copied() else {
                break;
            };
            self.windows.remove(&host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const DNSBL: &str =
        "Nov 20 10:01:03 mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.2]:4567";

    fn rules(toml: &str) -> RuleSet {
        let config = Config::parse(toml).expect("valid config");
        RuleSet::new(&config.logwatch).expect("rules compile")
    }

    fn auth_line(host: &str) -> String {
        format!(
            "postfix/smtpd[7]: warning: unknown[{host}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"
        )
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn three_line_rule_bans_on_first_sight_with_the_default_bantime() {
        let mut set =
            rules("[[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"rbl\"\nmaxretry = 1\n");
        let text = DNSBL.split_once("mx ").expect("prefix").1;
        let seen = set.observe("mail", text, DNSBL, None, at(0));
        assert_eq!(seen.matches, 1);
        assert_eq!(
            seen.bans,
            [BanDecision {
                rule: 0,
                filter: "postfix[mode=rbl]".to_owned(),
                host: "192.0.2.2".parse().expect("ip"),
                length: BanLength::Default,
                scope: BanScope::Default,
                line: DNSBL.to_owned(),
                failures: 1,
            }]
        );
        assert_eq!(set.tracked(0), 0, "the window is reset after a ban");
    }

    #[test]
    fn maxretry_within_findtime_bans_and_old_failures_slide_out() {
        let mut set = rules(
            "[[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"auth\"\nfindtime = \"60s\"\nmaxretry = 3\nbantime = \"2h\"\n",
        );
        let line = auth_line("198.51.100.9");
        let mut observe = |secs| {
            set.observe("mail", &line, &line, Some(at(secs)), at(secs))
                .bans
        };
        assert!(observe(0).is_empty());
        assert!(observe(30).is_empty());
        // The failure at 0 left the window at 61: two in the window.
        assert!(observe(61).is_empty());
        let bans = observe(62);
        assert_eq!(bans.len(), 1, "30, 61, 62 are within 60 s");
        assert_eq!(bans[0].length, BanLength::Base(Duration::from_hours(2)));
        assert_eq!(bans[0].failures, 3);
        // Reset after the ban: counting starts again.
        assert!(observe(63).is_empty());
        assert!(observe(64).is_empty());
        assert_eq!(observe(65).len(), 1);
    }

    #[test]
    fn lines_older_than_findtime_match_but_do_not_count() {
        let mut set =
            rules("[[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"auth\"\nmaxretry = 1\n");
        let line = auth_line("198.51.100.9");
        let old = set.observe("mail", &line, &line, Some(at(0)), at(601));
        assert_eq!((old.matches, old.bans.len()), (1, 0));
        let recent = set.observe("mail", &line, &line, Some(at(2)), at(601));
        assert_eq!(recent.bans.len(), 1);
        // A line from the future counts as now.
        let future = set.observe("mail", &line, &line, Some(at(9999)), at(700));
        assert_eq!(future.bans.len(), 1);
    }

    #[test]
    fn rules_are_per_source_and_per_rule() {
        let mut set = rules(
            "[[logwatch.source]]\nname = \"a\"\npath = \"/var/log/a\"\n\
             [[logwatch.source]]\nname = \"b\"\npath = \"/var/log/b\"\n\
             [[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"auth\"\nmaxretry = 2\nsource = \"a\"\n\
             [[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"aggressive\"\nmaxretry = 1\nbantime = \"permanent\"\n",
        );
        let line = auth_line("2001:db8::7");
        let first = set.observe("b", &line, &line, None, at(0));
        assert_eq!(first.matches, 1, "rule 0 only reads source a");
        assert_eq!(first.bans[0].rule, 1);
        assert_eq!(first.bans[0].length, BanLength::Permanent);
        assert!(
            set.observe("a", &line, &line, None, at(1))
                .bans
                .iter()
                .all(|b| b.rule == 1)
        );
        let bans = set.observe("a", &line, &line, None, at(2)).bans;
        assert_eq!(bans.iter().map(|b| b.rule).collect::<Vec<_>>(), [0, 1]);
        let missed = set.observe(
            "a",
            "postfix/smtpd[1]: connect from x[192.0.2.1]",
            "",
            None,
            at(3),
        );
        assert_eq!(missed, Observation::default());
    }

    #[test]
    fn distinct_hosts_are_capped() {
        let config = Config::parse(
            "[[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"auth\"\nmaxretry = 3\n",
        )
        .expect("config");
        let mut set = RuleSet::with_capacity(&config.logwatch, 100).expect("rules");
        for i in 0..1000u32 {
            let host = std::net::Ipv4Addr::from(0xC633_6400 + (i % 250)).to_string();
            let line = auth_line(&host);
            let now = at(u64::from(i));
            set.observe("mail", &line, &line, Some(now), now);
            assert!(set.tracked(0) <= 100, "{} hosts tracked", set.tracked(0));
        }
        // Counting goes on for new hosts once the table is full.
        let line = auth_line("203.0.113.77");
        for secs in 1000..1002 {
            assert!(
                set.observe("mail", &line, &line, Some(at(secs)), at(secs))
                    .bans
                    .is_empty()
            );
        }
        assert_eq!(
            set.observe("mail", &line, &line, Some(at(1002)), at(1002))
                .bans
                .len(),
            1
        );
    }
}
