//! The built-in `postfix` filter: fail2ban's postfix modes plus what they
//! miss (postscreen `DNSBL rank`, `COMMAND PIPELINING`, `NON-SMTP COMMAND`,
//! `BARE NEWLINE`, and rejects whose text came from spamwall's own policy
//! answers).

use std::{fmt, str::FromStr};

use super::filter::{Filter, FilterError};

/// The syslog prefix: optional host name, then `postfix…/daemon[pid]:`.
const PREFIX: &str = r"^(?:\S+\s+)?postfix(?:-[\w-]+)?/[\w/-]+(?:\[\d+\])?:\s+";
const CLIENT: &str = r"[^\[\s]*\[<HOST>\](?::\d+)?";

/// A mode of the built-in filter, named as fail2ban names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Reject lines, pipelining, too many errors, spamwall's policy rejects.
    Normal,
    /// DNSBL rejects and postscreen `DNSBL rank`.
    Rbl,
    /// SASL authentication failures.
    Auth,
    /// Lost connections, `PREGREET`, `HANGUP`, command limits, postscreen
    /// protocol violations.
    Ddos,
    /// `normal` and `rbl` (fail2ban's default).
    More,
    /// Everything.
    Aggressive,
}

impl Mode {
    #[cfg(any(test, feature = "test-support"))]
    /// Every mode, for help texts.
    pub const ALL: [Self; 6] = [
        Self::Normal,
        Self::Rbl,
        Self::Auth,
        Self::Ddos,
        Self::More,
        Self::Aggressive,
    ];
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "normal" => Self::Normal,
            "rbl" => Self::Rbl,
            "auth" => Self::Auth,
            "ddos" => Self::Ddos,
            "more" => Self::More,
            "aggressive" => Self::Aggressive,
            other => {
                return Err(format!(
                    "unknown postfix mode {other:?} (normal, rbl, auth, ddos, more, aggressive)"
                ));
            }
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Normal => "normal",
            Self::Rbl => "rbl",
            Self::Auth => "auth",
            Self::Ddos => "ddos",
            Self::More => "more",
            Self::Aggressive => "aggressive",
        })
    }
}

fn normal() -> Vec<String> {
    vec![
        format!(
            r"{PREFIX}\w+: (?:milter-)?reject: [A-Z]{{4}} from {CLIENT}: [45][50][04] [45]\.\d\.\d+ (?:(?:<[^>]*>)?: )?(?:(?:Helo command|(?:Sender|Recipient) address) rejected: )?(?:Service unavailable|(?:Client host|Command|Data command) rejected|Relay access denied|(?:Host|Domain) not found|need fully-qualified hostname|match|[Uu](?:ser unknown|ndeliverable address))\b"
        ),
        format!(r"{PREFIX}(?:improper command pipelining|too many errors) after \S+ from {CLIENT}"),
        // spamwall's policy answers (`sender ip X is blocked (score=…)`,
        // `… listed (zen=…)`) as Postfix logs them.
        format!(
            r"{PREFIX}\w+: reject: [A-Z]{{4}} from {CLIENT}: [45]\d\d [45]\.\d\.\d+ (?:<[^>]*>: )?(?:(?:Helo command|Client host|(?:Sender|Recipient) address) rejected: )?[^;]*?(?:\bis blocked\b|\(score=-?\d|\blisted \([\w.-]+=)"
        ),
    ]
}

fn rbl() -> Vec<String> {
    vec![
        format!(
            r"{PREFIX}\w+: reject: [A-Z]{{4}} from {CLIENT}: [45]5[04] [45]\.7\.1 Service unavailable; [Cc]lient (?:host )?\[\S+\] blocked\b"
        ),
        format!(r"{PREFIX}DNSBL rank \d+ for {CLIENT}"),
    ]
}

fn auth(aggressive: bool) -> Vec<String> {
    let exclusions = if aggressive {
        "(?! Connection lost to authentication server)"
    } else {
        "(?! Connection lost to authentication server| Invalid authentication mechanism)"
    };
    vec![format!(
        r"{PREFIX}warning: {CLIENT}: SASL (?i:LOGIN|PLAIN|(?:CRAM|DIGEST)-MD5) authentication failed:{exclusions}"
    )]
}

fn ddos() -> Vec<String> {
    vec![
        format!(r"{PREFIX}lost connection after(?! DATA) [A-Z]+ from {CLIENT}"),
        format!(r"{PREFIX}disconnect from {CLIENT}(?: \S+=\d+(?:/\d+)?)* auth=0/(?:[1-9]|\d\d+)"),
        format!(r"{PREFIX}(?:PREGREET \d+|HANGUP) after \S+ from {CLIENT}"),
        format!(r"{PREFIX}COMMAND (?:TIME|COUNT|LENGTH) LIMIT from {CLIENT}"),
        format!(r"{PREFIX}COMMAND PIPELINING from {CLIENT}"),
        format!(r"{PREFIX}NON-SMTP COMMAND from {CLIENT}"),
        format!(r"{PREFIX}BARE NEWLINE from {CLIENT}"),
    ]
}

/// The failregex lines of a mode.
pub fn failregex(mode: Mode) -> Vec<String> {
    match mode {
        Mode::Normal => normal(),
        Mode::Rbl => rbl(),
        Mode::Auth => auth(false),
        Mode::Ddos => ddos(),
        Mode::More => [normal(), rbl()].concat(),
        Mode::Aggressive => [auth(true), normal(), rbl(), ddos()].concat(),
    }
}

/// The built-in filter in `mode`.
pub fn filter(mode: Mode) -> Result<Filter, FilterError> {
    Filter::new(&format!("postfix[mode={mode}]"), &failregex(mode), &[])
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, net::IpAddr, time::SystemTime};

    use super::*;
    use crate::logwatch::filter::{Scratch, Verdict, parse_line};

    /// One corpus line: the modes that must match it, with the host.
    struct Case {
        line: String,
        host: Option<IpAddr>,
        modes: Vec<Mode>,
    }

    /// `testdata/postfix.corpus`: `MODES HOST | LINE`; `-` for no host.
    fn corpus() -> Vec<Case> {
        let text = include_str!("testdata/postfix.corpus");
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (head, line) = l.split_once(" | ").expect("MODES HOST | LINE");
                let (modes, host) = head.split_once(' ').expect("MODES HOST");
                let modes = if modes == "none" {
                    Vec::new()
                } else {
                    modes.split(',').map(|m| m.parse().expect("mode")).collect()
                };
                Case {
                    line: line.to_owned(),
                    host: (host != "-").then(|| host.parse().expect("host")),
                    modes,
                }
            })
            .collect()
    }

    fn covered_by(case: &Case, mode: Mode) -> bool {
        let implied = |m: Mode| match mode {
            Mode::Aggressive => true,
            Mode::More => matches!(m, Mode::Normal | Mode::Rbl | Mode::More),
            _ => m == mode,
        };
        case.modes.iter().any(|&m| implied(m))
    }

    #[test]
    fn corpus_matches_exactly_the_expected_lines_in_every_mode() {
        let cases = corpus();
        assert!(cases.len() >= 40, "corpus too small: {}", cases.len());
        let mut failures = Vec::new();
        for mode in Mode::ALL {
            let filter = filter(mode).expect("built-in filter compiles");
            for case in &cases {
                let parsed = parse_line(&case.line, SystemTime::now());
                let got = filter.check(&parsed.text);
                let expected = covered_by(case, mode);
                match (&got, expected) {
                    (Verdict::Matched { host, .. }, true) if Some(*host) == case.host => {}
                    (Verdict::Missed | Verdict::Ignored, false) => {}
                    _ => failures.push(format!("mode {mode}: {got} for {}", case.line)),
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn fast_and_general_paths_agree_on_the_corpus() {
        let cases = corpus();
        for mode in Mode::ALL {
            let filter = filter(mode).expect("built-in filter compiles");
            let mut scratch = filter.scratch();
            for case in &cases {
                let parsed = parse_line(&case.line, SystemTime::now());
                assert_eq!(
                    filter.check_with(&mut scratch, &parsed.text),
                    filter.check_with(&mut Scratch::general(), &parsed.text),
                    "mode {mode}: {}",
                    case.line
                );
            }
        }
    }

    #[test]
    fn candidate_lines_hold_every_line_that_matches() {
        let cases = corpus();
        let text: String = cases.iter().flat_map(|c| [c.line.as_str(), "\n"]).collect();
        for mode in Mode::ALL {
            let filter = filter(mode).expect("built-in filter compiles");
            let candidates: Vec<(usize, &[u8])> = filter.candidate_lines(text.as_bytes()).collect();
            let mut offset = 0;
            let mut matching = Vec::new();
            for case in &cases {
                if covered_by(case, mode) {
                    matching.push(offset);
                }
                offset += case.line.len() + 1;
            }
            for (offset, line) in &candidates {
                assert!(
                    *offset == 0 || text.as_bytes()[offset - 1] == b'\n',
                    "mode {mode}: {offset} is not a line start"
                );
                assert!(line.ends_with(b"\n"), "mode {mode}: {line:?}");
            }
            // The failregexes a candidate may match leave out none that
            // does: the verdict is the general path's.
            let mut scratch = filter.scratch();
            for candidate in filter.candidates(text.as_bytes()) {
                let line = std::str::from_utf8(candidate.line).expect("utf8");
                let parsed = parse_line(line, SystemTime::now());
                assert_eq!(
                    filter.check_candidate(&mut scratch, &parsed.text, candidate.rules),
                    filter.check_with(&mut Scratch::general(), &parsed.text),
                    "mode {mode}: {line:?}"
                );
            }
            let offsets: Vec<usize> = candidates.iter().map(|(o, _)| *o).collect();
            let lost: Vec<&usize> = matching.iter().filter(|o| !offsets.contains(o)).collect();
            assert!(lost.is_empty(), "mode {mode}: lines at {lost:?} left out");
            assert!(
                candidates.len() < cases.len(),
                "mode {mode}: the prefilter leaves nothing out"
            );
        }
    }

    #[test]
    fn every_postscreen_event_and_mode_is_in_the_corpus() {
        let cases = corpus();
        let all: String = cases.iter().map(|c| c.line.as_str()).collect();
        for needle in [
            "DNSBL rank",
            "COMMAND PIPELINING",
            "NON-SMTP COMMAND",
            "BARE NEWLINE",
            "PREGREET",
            "HANGUP",
            "COMMAND TIME LIMIT",
            "COMMAND COUNT LIMIT",
            "COMMAND LENGTH LIMIT",
            "PASS OLD",
            "PASS NEW",
            "CONNECT from",
            "DISCONNECT",
            "is blocked",
            "unknown[",
            "2001:db8:",
        ] {
            assert!(all.contains(needle), "corpus lacks {needle:?}");
        }
        let mut per_mode = BTreeMap::new();
        for case in &cases {
            for mode in &case.modes {
                *per_mode.entry(mode.to_string()).or_insert(0) += 1;
            }
        }
        for mode in ["normal", "rbl", "auth", "ddos"] {
            assert!(
                per_mode.get(mode).copied().unwrap_or(0) >= 3,
                "{per_mode:?}"
            );
        }
    }

    #[test]
    fn unknown_mode_is_named() {
        let error = "turbo".parse::<Mode>().expect_err("bad mode");
        assert!(
            error.contains("turbo") && error.contains("aggressive"),
            "{error}"
        );
    }
}
