//! `[logwatch]` in the configuration: sources, user filters, rules.

use std::path::{Path, PathBuf};

use super::{
    filter::{self, Filter},
    lint,
    resolve::{UserFilter, resolve_filter},
};

/// `[logwatch]`: log sources, user filters and ban rules.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogwatchConfig {
    /// `[[logwatch.source]]`.
    pub source: Vec<SourceConfig>,
    /// `[[logwatch.rule]]`.
    pub rule: Vec<RuleConfig>,
    /// `[[logwatch.filter]]`.
    pub filter: Vec<FilterConfig>,
}

/// A followed log: a file (`path`) or journal units (`journal`).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    pub path: Option<PathBuf>,
    pub journal: Option<Vec<String>>,
    /// The journal namespace the units log to (their `LogNamespace=`);
    /// default the system journal.
    pub journal_namespace: Option<String>,
}

/// What systemd accepts as a journal namespace (`LogNamespace=`).
fn journal_namespace_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A ban rule: `maxretry` matches of `filter` within `findtime` ban the
/// host for `bantime` (escalated for repeat offenders).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub filter: String,
    pub mode: Option<String>,
    /// Default 10 minutes.
    pub findtime: Option<crate::duration::Span>,
    /// Default 5.
    pub maxretry: Option<u32>,
    /// Default `ban.bantime`.
    pub bantime: Option<crate::duration::BanTime>,
    /// Only lines of this source; default all.
    pub source: Option<String>,
    /// The destination ports the ban holds on; default `xdp.ports`, `[]`
    /// all traffic.
    pub ports: Option<Vec<u16>>,
}

/// A user filter: inline regexes or a fail2ban filter file.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    pub name: String,
    #[serde(default)]
    pub failregex: Vec<String>,
    #[serde(default)]
    pub ignoreregex: Vec<String>,
    pub file: Option<PathBuf>,
}

impl LogwatchConfig {
    /// The `[[logwatch.filter]]`s; file filters are
    /// imported (an unreadable file gives an empty filter, reported by
    /// [`Self::problems`]).
    pub fn user_filters(&self) -> Vec<UserFilter> {
        self.load_user_filters().0
    }

    /// [`Self::user_filters`] and the import problems, each file read once.
    fn load_user_filters(&self) -> (Vec<UserFilter>, Vec<String>) {
        let mut problems = Vec::new();
        let filters = self
            .filter
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let (mut fail, mut ignore) = (f.failregex.clone(), f.ignoreregex.clone());
                if let Some(file) = &f.file {
                    let (path, params) = filter::split_params(file.to_str().unwrap_or(""));
                    match filter::import_fail2ban(Path::new(path), &params) {
                        Ok(imported) => {
                            fail.extend(imported.failregex);
                            ignore.extend(imported.ignoreregex);
                        }
                        Err(e) => problems.push(format!("logwatch.filter[{i}].file: {e}")),
                    }
                }
                UserFilter {
                    name: f.name.clone(),
                    // Only the file's lines: they are fail2ban's.
                    fail2ban: f.file.is_some()
                        && f.failregex.is_empty()
                        && f.ignoreregex.is_empty(),
                    failregex: fail,
                    ignoreregex: ignore,
                }
            })
            .collect();
        (filters, problems)
    }

    /// What is allowed but risky, each naming its key: failregexes whose
    /// host a client can choose ([`lint::host_not_anchored`]) or that
    /// capture no host, rules with no source to read and sources no rule
    /// reads.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (i, filter) in self.user_filters().iter().enumerate() {
            let name = &filter.name;
            for (j, regex) in filter.failregex.iter().enumerate() {
                if lint::has_no_host(regex) {
                    warnings.push(format!(
                        "logwatch.filter[{i}] ({name}): failregex {} has no <HOST> (nor <ADDR>, <IP4>, <IP6>): a line it matches bans nobody: {regex}",
                        j + 1
                    ));
                } else if let Some(problem) = lint::host_not_anchored(regex) {
                    warnings.push(format!(
                        "logwatch.filter[{i}] ({name}): failregex {} {problem}: {regex}",
                        j + 1
                    ));
                }
            }
        }
        if self.source.is_empty() {
            for (i, rule) in self.rule.iter().enumerate() {
                warnings.push(format!(
                    "logwatch.rule[{i}] ({}): no [[logwatch.source]] to read: the rule never sees a line; add a source with the mail log's `path` or `journal` units",
                    rule.filter
                ));
            }
        }
        for (i, source) in self.source.iter().enumerate() {
            let read = self
                .rule
                .iter()
                .any(|rule| rule.source.as_ref().is_none_or(|s| *s == source.name));
            if !read {
                warnings.push(format!(
                    "logwatch.source[{i}] ({}): no [[logwatch.rule]] reads it: its lines ban nobody",
                    source.name
                ));
            }
        }
        warnings
    }

    /// What this host says about the sources: a log file that is not
    /// there (yet) gives its rules nothing to read.
    pub fn host_warnings(&self) -> Vec<String> {
        self.source
            .iter()
            .enumerate()
            .filter_map(|(i, source)| {
                let path = source.path.as_ref()?;
                (path.is_absolute() && !path.exists()).then(|| {
                    format!(
                        "logwatch.source[{i}].path: {} does not exist: its rules read nothing until it does",
                        path.display()
                    )
                })
            })
            .collect()
    }

    /// Every problem, each naming its key (`logwatch.rule[1].filter`).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, source) in self.source.iter().enumerate() {
            if source.journal.as_ref().is_some_and(Vec::is_empty) {
                problems.push(format!(
                    "logwatch.source[{i}].journal: name at least one unit"
                ));
            }
            if source.path.as_ref().is_some_and(|p| !p.is_absolute()) {
                problems.push(format!("logwatch.source[{i}].path: must be absolute"));
            }
            if let Some(namespace) = &source.journal_namespace {
                if source.journal.is_none() {
                    problems.push(format!(
                        "logwatch.source[{i}].journal_namespace: only for a `journal` source"
                    ));
                }
                if !journal_namespace_valid(namespace) {
                    problems.push(format!(
                        "logwatch.source[{i}].journal_namespace: {namespace:?} is not a namespace name (letters, digits, `-`, `_`, `.`; at most 64)"
                    ));
                }
            }
            if source.path.is_some() == source.journal.is_some() {
                problems.push(format!(
                    "logwatch.source[{i}]: give exactly one of `path` or `journal`"
                ));
            }
            if self.source[..i].iter().any(|s| s.name == source.name) {
                problems.push(format!(
                    "logwatch.source[{i}].name: {:?} is used twice",
                    source.name
                ));
            }
        }
        let (user, import_problems) = self.load_user_filters();
        problems.extend(import_problems);
        for (i, f) in self.filter.iter().enumerate() {
            if f.name == "postfix" {
                problems.push(format!("logwatch.filter[{i}].name: `postfix` is built in"));
            }
            if let Err(e) = Filter::new(&f.name, &user[i].failregex, &user[i].ignoreregex) {
                problems.push(format!("logwatch.filter[{i}]: {e}"));
            }
        }
        for (i, rule) in self.rule.iter().enumerate() {
            if let Err(e) = resolve_filter(&rule.filter, rule.mode.as_deref(), &user) {
                problems.push(format!("logwatch.rule[{i}].filter: {e}"));
            }
            if rule.maxretry == Some(0) {
                problems.push(format!("logwatch.rule[{i}].maxretry: must be at least 1"));
            }
            if let Some(source) = &rule.source
                && !self.source.iter().any(|s| &s.name == source)
            {
                problems.push(format!(
                    "logwatch.rule[{i}].source: no source named {source:?}"
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ParseError};

    #[test]
    fn three_line_rule_parses() {
        let config: Config = toml::from_str(
            "[[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"rbl\"\nmaxretry = 1\n",
        )
        .expect("deserializes");
        assert_eq!(config.logwatch.rule[0].maxretry, Some(1));
        let problems = config.logwatch.problems();
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn journal_namespace_is_checked() {
        let Err(ParseError::Invalid(problems)) = Config::parse(
            "[[logwatch.source]]\nname = \"a\"\npath = \"/var/log/mail.log\"\njournal_namespace = \"mail\"\n\
             [[logwatch.source]]\nname = \"b\"\njournal = [\"postfix@-.service\"]\njournal_namespace = \"../x\"\n",
        ) else {
            panic!("expected problems");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("logwatch.source[0].journal_namespace: only for a `journal` source"),
            "{all}"
        );
        assert!(
            all.contains("logwatch.source[1].journal_namespace: \"../x\""),
            "{all}"
        );
        assert!(journal_namespace_valid("mail") && journal_namespace_valid("spamwall-test.1"));
        assert!(!journal_namespace_valid("") && !journal_namespace_valid("a/b"));
    }

    #[test]
    fn an_unreadable_filter_file_names_its_key_and_path() {
        let Err(ParseError::Invalid(problems)) = Config::parse(
            "[[logwatch.filter]]\nname = \"mine\"\nfile = \"/nonexistent/mine.conf\"\n",
        ) else {
            panic!("expected problems");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("logwatch.filter[0].file") && all.contains("/nonexistent/mine.conf"),
            "{all}"
        );
    }

    #[test]
    fn only_a_filter_made_of_a_file_alone_matches_as_fail2ban_does() {
        let dir = tempfile::tempdir().expect("a directory");
        let file = dir.path().join("mine.conf");
        std::fs::write(&file, "[Definition]\nfailregex = ^ x \\[<HOST>\\]$\n")
            .expect("writing the filter");
        let file = serde_json::to_string(file.to_str().expect("UTF-8")).expect("quoted");
        let config: Config = toml::from_str(&format!(
            "[[logwatch.filter]]\nname = \"file\"\nfile = {file}\n\
             [[logwatch.filter]]\nname = \"mixed\"\nfile = {file}\nfailregex = [\"^y \\\\[<HOST>\\\\]$\"]\n\
             [[logwatch.filter]]\nname = \"own\"\nfailregex = [\"^y \\\\[<HOST>\\\\]$\"]\n"
        ))
        .expect("deserializes");
        let fail2ban: Vec<(String, bool)> = config
            .logwatch
            .user_filters()
            .into_iter()
            .map(|f| (f.name, f.fail2ban))
            .collect();
        assert_eq!(
            fail2ban,
            [
                ("file".to_owned(), true),
                ("mixed".to_owned(), false),
                ("own".to_owned(), false)
            ]
        );
    }

    #[test]
    fn rules_without_sources_and_filters_without_hosts_are_warned_about() {
        let config = Config::parse(
            "[[logwatch.filter]]\nname = \"mine\"\nfailregex = ['^x \\[<HOST>\\]', '^y from \\S+']\n\
             [[logwatch.rule]]\nfilter = \"postfix\"\n[[logwatch.rule]]\nfilter = \"mine\"\n",
        )
        .expect("valid");
        let warnings = config.logwatch.warnings();
        assert_eq!(
            warnings,
            [
                "logwatch.filter[0] (mine): failregex 2 has no <HOST> (nor <ADDR>, <IP4>, <IP6>): a line it matches bans nobody: ^y from \\S+",
                "logwatch.rule[0] (postfix): no [[logwatch.source]] to read: the rule never sees a line; add a source with the mail log's `path` or `journal` units",
                "logwatch.rule[1] (mine): no [[logwatch.source]] to read: the rule never sees a line; add a source with the mail log's `path` or `journal` units",
            ]
        );
        let config = Config::parse(
            "[[logwatch.source]]\nname = \"mail\"\npath = \"/nonexistent/mail.log\"\n\
             [[logwatch.source]]\nname = \"other\"\njournal = [\"postfix.service\"]\n\
             [[logwatch.rule]]\nfilter = \"postfix\"\nsource = \"mail\"\n",
        )
        .expect("valid");
        assert_eq!(
            config.logwatch.warnings(),
            ["logwatch.source[1] (other): no [[logwatch.rule]] reads it: its lines ban nobody"]
        );
        assert_eq!(
            config.logwatch.host_warnings(),
            [
                "logwatch.source[0].path: /nonexistent/mail.log does not exist: its rules read nothing until it does"
            ]
        );
    }

    #[test]
    fn bad_rule_names_its_key() {
        let Err(ParseError::Invalid(problems)) = Config::parse(
            "[[logwatch.rule]]\nfilter = \"postfix\"\n[[logwatch.rule]]\nfilter = \"nope\"\nmaxretry = 0\n",
        ) else {
            panic!("expected problems");
        };
        let all = problems.join("\n");
        assert!(all.contains("logwatch.rule[1].filter"), "{all}");
        assert!(all.contains("logwatch.rule[1].maxretry"), "{all}");
    }
}
