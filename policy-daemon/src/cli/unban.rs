//! `unban`: targets on the command line or in a file, every ban of one
//! source, and the result per target as text or JSON, naming the prefix
//! ban that still blocks a target.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, IsTerminal as _, Write},
    path::{Path, PathBuf},
};

use clap::Args;
use serde::Serialize;

use super::{
    Failure, ask,
    ban::{Outcome, check_targets, exit_for, report_bad_lines, target_lines, until},
    print_json, printable,
    target_file::{TargetLine, TargetLines},
    unexpected,
};
use crate::{
    bans::{BanEntry, SourceFilter, target_to_string},
    control::{Covered, Refusal, Request, Response},
};

/// Targets per request of `unban --file`: each answer stays small, and the
/// daemon is free between requests.
const TARGETS_PER_REQUEST: usize = 10_000;

#[derive(Debug, Args)]
pub struct UnbanArgs {
    /// Addresses or CIDR prefixes, exactly as banned
    #[arg(
        required_unless_present_any = ["file", "source"],
        conflicts_with = "source",
        value_name = "ADDR|CIDR"
    )]
    pub targets: Vec<String>,
    /// Also lift every address or prefix in this file (`-`: standard
    /// input), one per line, `#` comments; bad lines are reported and skipped
    #[arg(long, value_name = "PATH", conflicts_with = "source")]
    pub file: Option<PathBuf>,
    /// Lift every active ban made by policy, cli, logwatch, fleet, feed or one feed (feed:NAME) (asks first)
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<SourceFilter>,
    /// Do not ask before `--source` lifts its bans
    #[arg(long)]
    pub yes: bool,
    /// Print the result per target as JSON
    #[arg(long)]
    pub json: bool,
}

/// What unbanning a list of targets came to.
#[derive(Debug, Default)]
struct Unbans {
    unbanned: Vec<String>,
    not_banned: Vec<String>,
    refused: Vec<Refusal>,
    covered: Vec<Covered>,
    bad_lines: Vec<(TargetLine, String)>,
}

impl Unbans {
    fn ask(&mut self, socket: &Path, targets: Vec<String>) -> Result<(), Failure> {
        if targets.is_empty() {
            return Ok(());
        }
        let response = ask(socket, &Request::Unban { targets })?;
        let Response::Unbanned {
            unbanned,
            not_banned,
            refused,
            covered,
        } = response
        else {
            return Err(unexpected(&response));
        };
        self.unbanned.extend(unbanned);
        self.not_banned.extend(not_banned);
        self.refused.extend(refused);
        self.covered.extend(covered);
        Ok(())
    }

    /// Whether `target` was lifted: a covered target in `unbanned` is
    /// still blocked, one elsewhere had no ban of its own.
    fn outcomes(&self) -> Vec<Outcome> {
        let lifted: HashSet<&str> = self.unbanned.iter().map(String::as_str).collect();
        let mut covering: HashMap<&str, &BanEntry> = HashMap::new();
        for covered in &self.covered {
            covering.insert(covered.target.as_str(), &covered.by);
        }
        let mut out: Vec<Outcome> = self
            .unbanned
            .iter()
            .map(|target| Outcome {
                covered_by: covering.get(target.as_str()).map(|by| (*by).clone()),
                ..Outcome::new(target.clone(), "unbanned")
            })
            .collect();
        out.extend(
            self.covered
                .iter()
                .filter(|c| !lifted.contains(c.target.as_str()))
                .map(|c| Outcome {
                    covered_by: Some(c.by.clone()),
                    ..Outcome::new(c.target.clone(), "covered")
                }),
        );
        out.extend(
            self.not_banned
                .iter()
                .map(|target| Outcome::new(target.clone(), "not_banned")),
        );
        out.extend(self.refused.iter().map(Outcome::refused));
        out.extend(
            self.bad_lines
                .iter()
                .map(|(line, error)| Outcome::bad_line(line, error)),
        );
        out
    }

    /// Exit 2 for a refused target or a bad line, else 1 when a target is
    /// blocked only by a prefix ban, else 0.
    fn exit(&self) -> Result<(), Failure> {
        let lifted: HashSet<&str> = self.unbanned.iter().map(String::as_str).collect();
        let only_covered = self
            .covered
            .iter()
            .any(|c| !lifted.contains(c.target.as_str()));
        exit_for(
            self.refused.is_empty() && self.bad_lines.is_empty(),
            only_covered,
        )
    }

    /// The covering bans and refusals, on standard error.
    fn report_problems(&self, file: Option<&Path>) {
        let lifted: HashSet<&str> = self.unbanned.iter().map(String::as_str).collect();
        for covered in &self.covered {
            let by = &covered.by;
            let prefix = target_to_string(&by.addr);
            let what = format!(
                "the ban on {prefix} ({}, {:?}, {}, count {})",
                by.source,
                printable(&by.reason),
                until(by.expires_at),
                by.count
            );
            if lifted.contains(covered.target.as_str()) {
                eprintln!("spamwall: {} is still blocked by {what}", covered.target);
            } else {
                eprintln!(
                    "spamwall: {} is not banned itself: it is covered by {what}; `spamwall unban {prefix}` lifts that",
                    covered.target
                );
            }
        }
        if let Some(path) = file {
            report_bad_lines(path, &self.bad_lines);
        }
        for refusal in &self.refused {
            eprintln!(
                "spamwall: refused {}: {}",
                printable(&refusal.target),
                printable(&refusal.reason)
            );
        }
    }
}

pub(super) fn unban(socket: &Path, args: &UnbanArgs) -> Result<(), Failure> {
    if let Some(source) = &args.source {
        return unban_source(socket, source, args);
    }
    if args.yes {
        return Err(Failure::usage(
            "--yes confirms `unban --source`; named targets are lifted without asking; nothing was sent",
        ));
    }
    check_targets(&args.targets)?;
    // Opened first: a file that cannot be read stops everything.
    let lines = args.file.as_deref().map(target_lines).transpose()?;
    let mut unbans = Unbans::default();
    unbans.ask(socket, args.targets.clone())?;
    if let (Some(path), Some(lines)) = (&args.file, lines) {
        unban_file(socket, path, lines, &mut unbans)?;
    }
    if args.json {
        print_json(&unbans.outcomes())?;
        return unbans.exit();
    }
    if let Some(path) = &args.file {
        println!(
            "unbanned {} from {}; {} not banned",
            unbans.unbanned.len(),
            path.display(),
            unbans.not_banned.len()
        );
    } else {
        for target in &unbans.unbanned {
            println!("unbanned {target}");
        }
        for target in &unbans.not_banned {
            println!("{target} was not banned");
        }
    }
    unbans.report_problems(args.file.as_deref());
    unbans.exit()
}

/// `unban --file`: streams the list to the daemon a batch at a time.
fn unban_file(
    socket: &Path,
    path: &Path,
    lines: TargetLines<Box<dyn BufRead>>,
    unbans: &mut Unbans,
) -> Result<(), Failure> {
    let mut batch = Vec::with_capacity(TARGETS_PER_REQUEST);
    for line in lines {
        let line =
            line.map_err(|e| Failure::runtime(format!("reading {}: {e}", path.display())))?;
        match &line.target {
            Ok(target) => batch.push(target_to_string(target)),
            Err(error) => {
                let error = error.clone();
                unbans.bad_lines.push((line, error));
            }
        }
        if batch.len() == TARGETS_PER_REQUEST {
            unbans.ask(socket, std::mem::take(&mut batch))?;
        }
    }
    unbans.ask(socket, batch)
}

/// The summary of `unban --source`, as `--json` prints it: `source` is
/// the filter as given (`feed:NAME` for one feed).
#[derive(Debug, Serialize)]
struct SourceOutcome {
    source: String,
    active: u64,
    unbanned: u64,
}

/// `unban --source`: counts, asks on the terminal unless `--yes`, lifts.
fn unban_source(socket: &Path, source: &SourceFilter, args: &UnbanArgs) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    if !args.yes && !stdin.is_terminal() {
        return Err(Failure::usage(format!(
            "unban --source {source} lifts every ban from {source}: confirm with --yes (standard input is not a terminal to ask on); nothing was sent"
        )));
    }
    if !args.yes {
        let active = source_bans(socket, source, true)?.active;
        if active == 0 {
            return report_source(args.json, source, 0, 0);
        }
        let prompt = format!("lift {active} active bans made by {source}? [y/N] ");
        if !confirm(&prompt, &mut stdin.lock(), &mut std::io::stderr())? {
            return Err(Failure::runtime("not confirmed; nothing was unbanned"));
        }
    }
    let done = source_bans(socket, source, false)?;
    report_source(args.json, source, done.active, done.unbanned)
}

fn source_bans(
    socket: &Path,
    filter: &SourceFilter,
    dry_run: bool,
) -> Result<SourceOutcome, Failure> {
    let request = Request::UnbanSource {
        source: filter.source,
        dry_run,
        feed: filter.feed.clone(),
    };
    let response = ask(socket, &request)?;
    let Response::SourceUnbanned {
        source,
        active,
        unbanned,
        feed,
    } = response
    else {
        return Err(unexpected(&response));
    };
    // A daemon that knows no feed filter would have lifted the whole source.
    if source != filter.source || feed != filter.feed {
        return Err(Failure::runtime(format!(
            "the daemon answered for {} instead of {filter}",
            SourceFilter { source, feed }
        )));
    }
    Ok(SourceOutcome {
        source: filter.to_string(),
        active,
        unbanned,
    })
}

fn report_source(
    json: bool,
    source: &SourceFilter,
    active: u64,
    unbanned: u64,
) -> Result<(), Failure> {
    if json {
        return print_json(&SourceOutcome {
            source: source.to_string(),
            active,
            unbanned,
        });
    }
    if active == 0 {
        println!("no active bans made by {source}");
    } else {
        println!("unbanned {unbanned} of {active} bans made by {source}");
    }
    Ok(())
}

/// Asks `prompt` on `output`; true only for an answer of `y` or `yes`.
fn confirm(
    prompt: &str,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> Result<bool, Failure> {
    output
        .write_all(prompt.as_bytes())
        .and_then(|()| output.flush())
        .map_err(|e| Failure::runtime(format!("asking for confirmation: {e}")))?;
    let mut answer = String::new();
    input
        .read_line(&mut answer)
        .map_err(|e| Failure::runtime(format!("reading the confirmation: {e}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{
        bans::Source,
        cli::{Cli, Command},
    };

    #[test]
    fn unban_takes_targets_a_file_or_a_source() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        let cli = parse(&["spamwall", "unban", "--source", "logwatch", "--yes"]).expect("parse");
        let Command::Unban(args) = cli.command else {
            panic!("not unban")
        };
        assert_eq!(args.source, Some(SourceFilter::all(Source::Logwatch)));
        let cli = parse(&["spamwall", "unban", "--source", "feed:drop", "--yes"]).expect("parse");
        let Command::Unban(args) = cli.command else {
            panic!("not unban")
        };
        assert_eq!(
            args.source.map(|s| s.to_string()).as_deref(),
            Some("feed:drop")
        );
        assert!(args.yes && args.targets.is_empty());
        assert!(parse(&["spamwall", "unban", "--file", "-", "--json"]).is_ok());
        for bad in [
            &["spamwall", "unban"][..],
            &["spamwall", "unban", "--source", "martian"],
            &["spamwall", "unban", "192.0.2.7", "--source", "cli"],
            &["spamwall", "unban", "--file", "x", "--source", "cli"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn only_yes_confirms() {
        for (answer, wanted) in [
            ("y\n", true),
            ("YES\n", true),
            (" yes \n", true),
            ("\n", false),
            ("n\n", false),
            ("yep\n", false),
            ("", false),
        ] {
            let mut prompt = Vec::new();
            let confirmed = confirm("lift 3? [y/N] ", &mut answer.as_bytes(), &mut prompt)
                .unwrap_or_else(|failure| panic!("{}", failure.message));
            assert_eq!(confirmed, wanted, "{answer:?}");
            assert_eq!(prompt, b"lift 3? [y/N] ");
        }
    }

    #[test]
    fn unban_outcomes_say_what_happened_to_each_target() {
        let by = BanEntry {
            addr: "192.0.2.0/24".parse().expect("net"),
            expires_at: None,
            source: Source::Cli,
            reason: "bulk".into(),
            detail: String::new(),
            count: 1,
            ports: None,
            packets: 0,
            last_hit: None,
        };
        let unbans = Unbans {
            unbanned: vec!["192.0.2.7".into(), "198.51.100.1".into()],
            not_banned: vec!["203.0.113.5".into()],
            refused: Vec::new(),
            covered: vec![
                Covered {
                    target: "192.0.2.7".into(),
                    by: by.clone(),
                },
                Covered {
                    target: "192.0.2.8".into(),
                    by,
                },
            ],
            bad_lines: Vec::new(),
        };
        let json = serde_json::to_value(unbans.outcomes()).expect("json");
        assert_eq!(
            json,
            serde_json::json!([
                {"target": "192.0.2.7", "result": "unbanned", "covered_by":
                    {"addr": "192.0.2.0/24", "expires_at": null, "source": "cli", "reason": "bulk", "count": 1,
                     "packets": 0, "last_hit": null}},
                {"target": "198.51.100.1", "result": "unbanned"},
                {"target": "192.0.2.8", "result": "covered", "covered_by":
                    {"addr": "192.0.2.0/24", "expires_at": null, "source": "cli", "reason": "bulk", "count": 1,
                     "packets": 0, "last_hit": null}},
                {"target": "203.0.113.5", "result": "not_banned"},
            ])
        );
        assert_eq!(unbans.exit().expect_err("covered").code, 1);
    }
}
