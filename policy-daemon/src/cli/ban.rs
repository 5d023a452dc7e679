//! `ban` and `unban`: targets on the command line or in a file, bans of
//! one source, and the result per target as text or JSON.

use std::{
    io::{BufRead, BufReader, IsTerminal as _, Write},
    path::{Path, PathBuf},
    time::SystemTime,
};

use clap::Args;
use serde::Serialize;

use super::{
    Failure, ask, print_json, printable,
    target_file::{TargetLine, TargetLines},
    unexpected,
};
use crate::{
    bans::{BanEntry, BanLength, Source, parse_target, target_to_string},
    control::{Covered, Refusal, Request, Response},
    duration::BanTime,
};

/// Targets per request of `unban --file`: each answer stays small, and the
/// daemon is free between requests.
const TARGETS_PER_REQUEST: usize = 10_000;

#[derive(Debug, Args)]
pub struct BanArgs {
    /// Addresses or CIDR prefixes (IPv4 and IPv6)
    #[arg(required_unless_present = "file", value_name = "ADDR|CIDR")]
    pub targets: Vec<String>,
    /// Also ban every address or prefix in this file (`-`: standard input),
    /// one per line, `#` comments; bad lines are reported and skipped
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Ban length: 90s, 10m, 1h, 1w, or 0/permanent [default: ban.bantime]
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: Option<String>,
    /// Why, shown by `list`
    #[arg(long, default_value = "manual ban", value_name = "TEXT")]
    pub reason: String,
    /// Ban prefixes wider than the configured widest (16 and 32 bits by default) too
    #[arg(long)]
    pub force: bool,
    /// Print the result per target as JSON
    #[arg(long)]
    pub json: bool,
}

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
    /// Lift every active ban made by policy, cli, logwatch or fleet (asks first)
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<Source>,
    /// Do not ask before `--source` lifts its bans
    #[arg(long)]
    pub yes: bool,
    /// Print the result per target as JSON
    #[arg(long)]
    pub json: bool,
}

/// The result for one target, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Outcome {
    target: String,
    /// `banned`, `refused`, `unbanned`, `not_banned` or `covered`.
    result: &'static str,
    /// The file line it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The ban made.
    #[serde(skip_serializing_if = "Option::is_none")]
    ban: Option<BanEntry>,
    /// The narrowest ban on a wider prefix that still blocks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    covered_by: Option<BanEntry>,
}

impl Outcome {
    fn new(target: String, result: &'static str) -> Self {
        Self {
            target,
            result,
            line: None,
            reason: None,
            ban: None,
            covered_by: None,
        }
    }

    fn refused(refusal: &Refusal) -> Self {
        Self {
            reason: Some(refusal.reason.clone()),
            ..Self::new(refusal.target.clone(), "refused")
        }
    }

    fn bad_line(line: &TargetLine, error: &str) -> Self {
        Self {
            line: Some(line.line),
            reason: Some(error.to_owned()),
            ..Self::new(line.text.clone(), "refused")
        }
    }
}

/// Checks every target before anything is sent: one bad address and
/// nothing is banned.
pub(super) fn check_targets(targets: &[String]) -> Result<(), Failure> {
    let errors: Vec<String> = targets
        .iter()
        .filter_map(|t| parse_target(t).err().map(|e| e.to_string()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::usage(format!(
            "{}; nothing was sent",
            errors.join("; ")
        )))
    }
}

pub(super) fn ban(socket: &Path, args: &BanArgs) -> Result<(), Failure> {
    check_targets(&args.targets)?;
    if let Some(path) = &args.file {
        return ban_file(socket, args, path);
    }
    let request = Request::Ban {
        targets: args.targets.clone(),
        length: ban_length(args)?,
        reason: args.reason.clone(),
        force: args.force,
    };
    let Response::Banned { banned, refused } = ask(socket, &request)? else {
        return Err(Failure::runtime("unexpected answer to ban"));
    };
    if args.json {
        let mut outcomes: Vec<Outcome> = banned
            .into_iter()
            .map(|entry| Outcome {
                ban: Some(entry.clone()),
                ..Outcome::new(target_to_string(&entry.addr), "banned")
            })
            .collect();
        outcomes.extend(refused.iter().map(Outcome::refused));
        print_json(&outcomes)?;
        return exit_for(refused.is_empty(), false);
    }
    for entry in &banned {
        println!(
            "banned {} {} (count {})",
            target_to_string(&entry.addr),
            until(entry.expires_at),
            entry.count
        );
    }
    refusals(&refused)
}

/// `ban --file`: reads the list, reports bad lines by number, bans the rest
/// in one request and prints a count.
fn ban_file(socket: &Path, args: &BanArgs, path: &Path) -> Result<(), Failure> {
    let mut targets = args.targets.clone();
    let mut bad_lines = Vec::new();
    for line in target_lines(path)? {
        let line =
            line.map_err(|e| Failure::runtime(format!("reading {}: {e}", path.display())))?;
        match &line.target {
            Ok(target) => targets.push(target_to_string(target)),
            Err(error) => {
                let error = error.clone();
                bad_lines.push((line, error));
            }
        }
    }
    if !args.json {
        report_bad_lines(path, &bad_lines);
    }
    let request = Request::BanBulk {
        targets: targets.clone(),
        length: ban_length(args)?,
        reason: args.reason.clone(),
        force: args.force,
    };
    let response = ask(socket, &request)?;
    let Response::BulkBanned { banned, refused } = response else {
        return Err(unexpected(&response));
    };
    if args.json {
        let refused_targets: std::collections::HashSet<&str> =
            refused.iter().map(|r| r.target.as_str()).collect();
        let mut outcomes: Vec<Outcome> = targets
            .iter()
            .filter(|target| !refused_targets.contains(target.as_str()))
            .map(|target| Outcome::new(target.clone(), "banned"))
            .collect();
        outcomes.extend(refused.iter().map(Outcome::refused));
        outcomes.extend(
            bad_lines
                .iter()
                .map(|(line, error)| Outcome::bad_line(line, error)),
        );
        print_json(&outcomes)?;
        return exit_for(refused.is_empty() && bad_lines.is_empty(), false);
    }
    println!("banned {banned} from {}", path.display());
    if bad_lines.is_empty() {
        refusals(&refused)
    } else {
        refusals(&refused).and(Err(Failure::usage(String::new())))
    }
}

/// The target lines of `path` (`-`: standard input), read as a stream.
fn target_lines(path: &Path) -> Result<TargetLines<Box<dyn BufRead>>, Failure> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
        Box::new(BufReader::new(file))
    };
    Ok(TargetLines::new(reader))
}

fn report_bad_lines(path: &Path, bad_lines: &[(TargetLine, String)]) {
    for (line, error) in bad_lines {
        eprintln!(
            "spamwall: {}:{}: {error}; skipped",
            path.display(),
            line.line
        );
    }
}

fn ban_length(args: &BanArgs) -> Result<BanLength, Failure> {
    Ok(match &args.duration {
        None => BanLength::Default,
        Some(text) => match text
            .parse::<BanTime>()
            .map_err(|e| Failure::usage(format!("--for: {e}")))?
        {
            BanTime(None) => BanLength::Permanent,
            BanTime(Some(duration)) => BanLength::For(duration),
        },
    })
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
        let lifted: std::collections::HashSet<&str> =
            self.unbanned.iter().map(String::as_str).collect();
        let mut covering: std::collections::HashMap<&str, &BanEntry> =
            std::collections::HashMap::new();
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
        let lifted: std::collections::HashSet<&str> =
            self.unbanned.iter().map(String::as_str).collect();
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
        let lifted: std::collections::HashSet<&str> =
            self.unbanned.iter().map(String::as_str).collect();
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
    if let Some(source) = args.source {
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

/// The summary of `unban --source`, as `--json` prints it.
#[derive(Debug, Serialize)]
struct SourceOutcome {
    source: Source,
    active: u64,
    unbanned: u64,
}

/// `unban --source`: counts, asks on the terminal unless `--yes`, lifts.
fn unban_source(socket: &Path, source: Source, args: &UnbanArgs) -> Result<(), Failure> {
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

fn source_bans(socket: &Path, source: Source, dry_run: bool) -> Result<SourceOutcome, Failure> {
    let response = ask(socket, &Request::UnbanSource { source, dry_run })?;
    let Response::SourceUnbanned {
        source,
        active,
        unbanned,
    } = response
    else {
        return Err(unexpected(&response));
    };
    Ok(SourceOutcome {
        source,
        active,
        unbanned,
    })
}

fn report_source(json: bool, source: Source, active: u64, unbanned: u64) -> Result<(), Failure> {
    if json {
        return print_json(&SourceOutcome {
            source,
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

/// Exit 2 unless `accepted`, else 1 when `blocked`, else 0; the details
/// are already printed.
fn exit_for(accepted: bool, blocked: bool) -> Result<(), Failure> {
    if !accepted {
        Err(Failure::usage(String::new()))
    } else if blocked {
        Err(Failure::runtime(String::new()))
    } else {
        Ok(())
    }
}

fn refusals(refused: &[Refusal]) -> Result<(), Failure> {
    if refused.is_empty() {
        return Ok(());
    }
    for refusal in refused {
        eprintln!(
            "spamwall: refused {}: {}",
            printable(&refusal.target),
            printable(&refusal.reason)
        );
    }
    Err(Failure::usage(String::new()))
}

pub(super) fn until(expires_at: Option<SystemTime>) -> String {
    expires_at.map_or_else(
        || "permanently".to_owned(),
        |time| format!("until {}", crate::clock::rfc3339(time)),
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn bad_targets_are_all_named_and_nothing_is_sent() {
        let failure = check_targets(&["192.0.2.7".into(), "nope".into(), "10.0.0.1/8".into()])
            .expect_err("bad targets");
        assert_eq!(failure.code, 2);
        assert!(failure.message.contains("\"nope\""), "{}", failure.message);
        assert!(
            failure.message.contains("10.0.0.0/8"),
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains("nothing was sent"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn unban_takes_targets_a_file_or_a_source() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        let cli = parse(&["spamwall", "unban", "--source", "logwatch", "--yes"]).expect("parse");
        let Command::Unban(args) = cli.command else {
            panic!("not unban")
        };
        assert_eq!(args.source, Some(Source::Logwatch));
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
                    {"addr": "192.0.2.0/24", "expires_at": null, "source": "cli", "reason": "bulk", "count": 1}},
                {"target": "198.51.100.1", "result": "unbanned"},
                {"target": "192.0.2.8", "result": "covered", "covered_by":
                    {"addr": "192.0.2.0/24", "expires_at": null, "source": "cli", "reason": "bulk", "count": 1}},
                {"target": "203.0.113.5", "result": "not_banned"},
            ])
        );
        assert_eq!(unbans.exit().expect_err("covered").code, 1);
    }
}
