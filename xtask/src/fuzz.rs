//! `cargo xtask fuzz`: the libFuzzer targets in `fuzz/`, built and run by
//! cargo-fuzz with the nightly toolchain.
//!
//! A target starts from its committed seeds in `fuzz/corpus/TARGET` and
//! keeps what it learns in `target/fuzz/corpus/TARGET`, so the committed
//! corpus stays small while later runs go on from where earlier ones got.
//! Crashing inputs land in `fuzz/artifacts/TARGET/`.

use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cmd::{describe, display, run};
use crate::setup::NIGHTLY;
use crate::{UsageError, root, target_dir};

/// Longest one input may run before libFuzzer reports it as a hang.
const INPUT_TIMEOUT_SECS: u64 = 25;

/// Seconds each target runs in `cargo xtask test`.
const SMOKE_SECS: u64 = 3;

/// Extra seed directories read (never written) when they exist: Debian's
/// fail2ban filters are GPL-licensed, so they are not copied into the
/// repository but fed to the import target where fail2ban is installed;
/// so are its jail.d and Debian's mtpolicyd configuration.
const SYSTEM_SEEDS: &[(&str, &str)] = &[
    ("filter_import", "/etc/fail2ban/filter.d"),
    ("fail2ban_jail", "/etc/fail2ban/jail.d"),
    ("mtpolicyd_import", "/etc/mtpolicyd"),
];

/// How the targets are built and run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// A target stops after this many seconds (if any) or `runs`
    /// executions (if any), whichever comes first.
    pub seconds: Option<u64>,
    pub runs: Option<u64>,
    pub build: Build,
    /// Whether the system's seed directories ([`SYSTEM_SEEDS`]) are read.
    pub system_seeds: bool,
}

/// How the targets are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// Optimised, as campaigns want.
    Release,
    /// `--dev`, unoptimised: about a third of the release build's CPU time
    /// and the library rebuilt in seconds after a change; for the smoke
    /// run.
    Dev,
}

/// What one run of a target did.
struct Outcome {
    target: String,
    executions: Option<u64>,
    exec_per_sec: Option<u64>,
    seconds: f64,
    /// For the table: `no crash`, `CRASH (timeout)`, `failed (signal 2)`.
    result: String,
    /// Why the run failed: the crash artifact, or the exit status.
    failure: Option<String>,
}

/// The targets: one per file in `fuzz/fuzz_targets`, in name order.
fn targets() -> Result<Vec<String>> {
    let dir = root()?.join("fuzz/fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

fn cargo_fuzz(args: &[&str]) -> Result<Command> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root()?)
        .arg(format!("+{NIGHTLY}"))
        .arg("fuzz")
        .args(args);
    Ok(cmd)
}

/// The fuzzing step of `cargo xtask test`: every target for a few seconds,
/// its committed seeds (regression inputs included) first. The system's
/// seeds are left out: unoptimised, Debian's filters alone take 20 s.
pub fn smoke() -> Result<()> {
    fuzz(
        None,
        Plan {
            seconds: Some(SMOKE_SECS),
            runs: None,
            build: Build::Dev,
            system_seeds: false,
        },
    )
}

/// Runs `target` (every target when `None`) as `plan` says, prints
/// executions, exec/s and the result per target, and fails when any
/// target crashed.
pub fn fuzz(target: Option<&str>, plan: Plan) -> Result<()> {
    let all = targets()?;
    let selected: Vec<String> = match target {
        Some(name) if all.iter().any(|t| t == name) => vec![name.to_owned()],
        Some(name) => {
            return Err(UsageError(format!(
                "unknown fuzz target {name} (available: {})",
                all.join(", ")
            ))
            .into());
        }
        None => all,
    };
    // One build for all: the targets share every dependency.
    let mut cmd = cargo_fuzz(&["build"])?;
    if plan.build == Build::Dev {
        cmd.arg("--dev");
    }
    if let Some(name) = target {
        cmd.arg(name);
    }
    run(&mut cmd)?;
    let mut outcomes = Vec::new();
    for name in &selected {
        outcomes.push(run_target(name, plan)?);
    }
    print_table(&outcomes);
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.failure
                .as_ref()
                .map(|failure| format!("{}: {failure}", o.target))
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("fuzzing found a problem:\n  {}", failed.join("\n  "))
    }
}

fn run_target(name: &str, plan: Plan) -> Result<Outcome> {
    let root = root()?;
    let work = target_dir()?.join("fuzz/corpus").join(name);
    let logs = target_dir()?.join("fuzz/logs");
    for dir in [&work, &logs] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let seeds = root.join("fuzz/corpus").join(name);
    // libFuzzer writes new inputs into the first directory only.
    let mut cmd = cargo_fuzz(&["run", name])?;
    if plan.build == Build::Dev {
        cmd.arg("--dev");
    }
    cmd.arg(&work).arg(&seeds);
    for &(target, dir) in SYSTEM_SEEDS {
        if plan.system_seeds && target == name && Path::new(dir).is_dir() {
            cmd.arg(dir);
        }
    }
    cmd.args([
        "--",
        "-print_final_stats=1",
        &format!("-timeout={INPUT_TIMEOUT_SECS}"),
    ]);
    if let Some(seconds) = plan.seconds {
        cmd.arg(format!("-max_total_time={seconds}"));
    }
    if let Some(runs) = plan.runs {
        cmd.arg(format!("-runs={runs}"));
    }
    let log_path = logs.join(format!("{name}.log"));
    let started = Instant::now();
    let (status, report) = run_logged(&mut cmd, &log_path)?;
    let kind = report.kind.as_deref().unwrap_or("crash");
    let (result, failure) = match (status.success(), &report.artifact) {
        (true, _) => ("no crash".to_owned(), None),
        (false, Some(artifact)) => (
            format!("CRASH ({kind})"),
            Some(format!(
                "{kind} ({}); reproduce with `cargo +{NIGHTLY} fuzz run {name} {artifact}`, log {}",
                describe(status),
                log_path.display()
            )),
        ),
        // Interrupted, or the fuzzer could not start: no input to blame.
        (false, None) => (
            format!("failed ({})", describe(status)),
            Some(format!("{}, log {}", describe(status), log_path.display())),
        ),
    };
    Ok(Outcome {
        target: name.to_owned(),
        executions: report.executions,
        exec_per_sec: report.exec_per_sec,
        seconds: started.elapsed().as_secs_f64(),
        result,
        failure,
    })
}

/// What libFuzzer reported about a run.
#[derive(Default)]
struct Stats {
    executions: Option<u64>,
    exec_per_sec: Option<u64>,
    /// The file a crashing, hanging or leaking input was written to.
    artifact: Option<String>,
    /// libFuzzer's or the sanitizer's name for the failure: `deadly
    /// signal`, `timeout after 25 seconds`, `heap-buffer-overflow …`.
    kind: Option<String>,
}

impl Stats {
    fn read(&mut self, line: &str) {
        let number = |value: &str| value.trim().parse().ok();
        if let Some(value) = line.strip_prefix("stat::number_of_executed_units:") {
            self.executions = number(value);
        } else if let Some(value) = line.strip_prefix("stat::average_exec_per_sec:") {
            self.exec_per_sec = number(value);
        } else if let Some((_, path)) = line.split_once("Test unit written to ") {
            self.artifact = Some(path.trim().to_owned());
        } else if self.kind.is_none() {
            // The first report names the failure; later ones follow from it.
            self.kind = ["libFuzzer", "AddressSanitizer", "LeakSanitizer"]
                .iter()
                .find_map(|tool| line.split_once(&format!("ERROR: {tool}: ")))
                .map(|(_, kind)| kind.trim().to_owned());
        }
    }
}

/// A line libFuzzer prints per input it keeps: in the log, not on the
/// terminal.
fn is_progress(line: &str) -> bool {
    line.strip_prefix('#').is_some_and(|rest| {
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        rest.starts_with("\tNEW") || rest.starts_with("\tREDUCE")
    })
}

/// Runs `cmd`, its standard error copied into `log` and, without the
/// per-input progress lines, onto ours.
fn run_logged(cmd: &mut Command, log: &Path) -> Result<(std::process::ExitStatus, Stats)> {
    let line = display(cmd);
    eprintln!("==> {line}");
    let mut file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let stderr = child.stderr.take().context("the fuzzer has no stderr")?;
    let mut report = Stats::default();
    for text in BufReader::new(stderr).split(b'\n') {
        let text = text.with_context(|| format!("reading the output of `{line}`"))?;
        let text = String::from_utf8_lossy(&text);
        writeln!(file, "{text}").with_context(|| format!("cannot write {}", log.display()))?;
        report.read(&text);
        if !is_progress(&text) {
            eprintln!("{text}");
        }
    }
    let exit = child
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    Ok((exit, report))
}

fn print_table(outcomes: &[Outcome]) {
    let count = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), group_thousands);
    eprintln!(
        "\n{:<16} {:>14} {:>10} {:>8}  result",
        "target", "executions", "exec/s", "seconds"
    );
    for o in outcomes {
        eprintln!(
            "{:<16} {:>14} {:>10} {:>8.0}  {}",
            o.target,
            count(o.executions),
            count(o.exec_per_sec),
            o.seconds,
            o.result
        );
    }
}

/// `12345678` as `12,345,678`.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Stats, group_thousands, is_progress};

    #[test]
    fn final_stats_and_the_artifact_are_read() {
        let mut stats = Stats::default();
        for line in [
            "#1048576\tpulse  cov: 812 ft: 3001 corp: 240/9Kb exec/s: 349525 rss: 45Mb",
            "==12==ERROR: libFuzzer: deadly signal",
            "artifact_prefix='fuzz/artifacts/pickle/'; Test unit written to fuzz/artifacts/pickle/crash-da39a3ee",
            "stat::number_of_executed_units: 10000000",
            "stat::average_exec_per_sec:     163934",
        ] {
            stats.read(line);
        }
        assert_eq!(stats.executions, Some(10_000_000));
        assert_eq!(stats.exec_per_sec, Some(163_934));
        assert_eq!(
            stats.artifact.as_deref(),
            Some("fuzz/artifacts/pickle/crash-da39a3ee")
        );
        assert_eq!(stats.kind.as_deref(), Some("deadly signal"));
        let mut stats = Stats::default();
        for line in [
            "==7==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x6020",
            "==7==ERROR: libFuzzer: deadly signal",
        ] {
            stats.read(line);
        }
        assert_eq!(
            stats.kind.as_deref(),
            Some("heap-buffer-overflow on address 0x6020")
        );
    }

    #[test]
    fn only_per_input_lines_count_as_progress() {
        assert!(is_progress(
            "#12\tNEW    cov: 80 ft: 81 corp: 3/9b lim: 4 exec/s: 0 rss: 30Mb L: 3/3 MS: 1 ChangeBit-"
        ));
        assert!(is_progress("#300\tREDUCE cov: 80 ft: 81 corp: 3/9b"));
        assert!(!is_progress("#65536\tpulse  cov: 80 ft: 81"));
        assert!(!is_progress("#2\tINITED cov: 80 ft: 81"));
        assert!(!is_progress("INFO: Seed: 1234"));
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(10_000_000), "10,000,000");
    }
}
