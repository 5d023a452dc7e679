//! `cargo xtask`: set-up, build, run, test and benchmark orchestration for
//! spamwall. Orchestration only: everything real happens in child processes.

mod cmd;
mod deb;
mod fuzz;
mod setup;

use std::env;
use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::cmd::{display, run};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "spamwall development tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (idempotent; apt and bpffs need root)
    Setup,
    /// Build the whole workspace
    Build {
        /// Build with the release profile
        #[arg(long)]
        release: bool,
    },
    /// Build the Debian package target/debian/spamwall_VERSION-1_ARCH.deb (prints its path)
    Deb,
    /// Build the daemon and run it in the foreground with packaging/spamwall.toml
    Run {
        /// Extra arguments for `spamwall run`
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build the XDP program and load, pin and attach it without the daemon
    /// (`spamwall xdp load`), on the pin directory and maps the daemon uses
    Load {
        /// Interface to attach to [default: xdp.interfaces of the configuration]
        #[arg(long, value_name = "IFACE")]
        iface: Vec<String>,
        /// auto (native, then skb), native or skb [default: xdp.mode]
        #[arg(long, value_name = "MODE")]
        mode: Option<String>,
        /// Configuration naming the pin directory, interfaces and ports
        /// [default: packaging/spamwall.toml]
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// fmt, clippy, unit tests, a fuzzing smoke run, the (root, serial)
    /// integration tests, then every benchmark once with `--smoke`
    Test {
        /// Only fmt, clippy and the unit tests
        #[arg(long, conflicts_with = "args")]
        unit: bool,
        /// Extra arguments for the integration test run (e.g. a test filter)
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Fuzz the parsers with cargo-fuzz (nightly): every target, or one
    Fuzz {
        /// Target name (a file in `fuzz/fuzz_targets`); default all
        target: Option<String>,
        /// Seconds per target [default: 60, or no limit with --runs]
        #[arg(long, value_name = "SECS")]
        time: Option<u64>,
        /// Stop a target after this many executions
        #[arg(long, value_name = "N")]
        runs: Option<u64>,
        /// Build unoptimised, as the smoke run of `cargo xtask test` does
        #[arg(long)]
        dev: bool,
    },
    /// Run a benchmark
    Bench {
        /// Benchmark name (available: xdp, policy, bans, fleet, logs, list, spf, greylist, feeds)
        name: String,
        /// Extra arguments for the benchmark binary (`--smoke`: a few
        /// items, to see that it still runs)
        #[arg(last = true)]
        args: Vec<String>,
    },
}

/// A benchmark `cargo xtask bench NAME` can run, and `cargo xtask test`
/// runs once with `--smoke`.
struct Bench {
    name: &'static str,
    package: &'static str,
    target: &'static str,
    /// The step's label in `cargo xtask test`.
    smoke_label: &'static str,
}

const BENCHES: &[Bench] = &[
    Bench {
        name: "xdp",
        package: "spamwall-tests",
        target: "xdp",
        smoke_label: "benchmark smoke: xdp",
    },
    Bench {
        name: "policy",
        package: "spamwall-tests",
        target: "policy",
        smoke_label: "benchmark smoke: policy",
    },
    Bench {
        name: "bans",
        package: "spamwall-tests",
        target: "bans",
        smoke_label: "benchmark smoke: bans",
    },
    Bench {
        name: "fleet",
        package: "spamwall-tests",
        target: "fleet",
        smoke_label: "benchmark smoke: fleet",
    },
    Bench {
        name: "feeds",
        package: "spamwall-tests",
        target: "feeds",
        smoke_label: "benchmark smoke: feeds",
    },
    Bench {
        name: "logs",
        package: "spamwall-tests",
        target: "logs",
        smoke_label: "benchmark smoke: logs",
    },
    Bench {
        name: "list",
        package: "spamwall-tests",
        target: "list",
        smoke_label: "benchmark smoke: list",
    },
    Bench {
        name: "spf",
        package: "spamwall-tests",
        target: "spf",
        smoke_label: "benchmark smoke: spf",
    },
    Bench {
        name: "greylist",
        package: "spamwall-tests",
        target: "greylist",
        smoke_label: "benchmark smoke: greylist",
    },
];

/// A usage error: reported like any error, but exits with code 2.
#[derive(Debug)]
struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match prepend_cargo_bin_to_path().and_then(|()| dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn dispatch(task: Task) -> Result<()> {
    match task {
        Task::Setup => setup::setup(),
        Task::Build { release } => build(release),
        Task::Deb => deb::deb().map(drop),
        Task::Run { args } => run_daemon(&args),
        Task::Load {
            iface,
            mode,
            config,
        } => load(&iface, mode.as_deref(), config.as_deref()),
        Task::Test { unit, args } => test(unit, &args),
        Task::Fuzz {
            target,
            time,
            runs,
            dev,
        } => run_fuzz(target.as_deref(), time, runs, dev),
        Task::Bench { name, args } => bench(&name, &args),
    }
}

/// Child processes (aya-build in particular) must find bpf-linker, which
/// `cargo install` puts in `~/.cargo/bin`.
fn prepend_cargo_bin_to_path() -> Result<()> {
    let bin = setup::cargo_bin()?;
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    if dirs.first() == Some(&bin) {
        return Ok(());
    }
    dirs.insert(0, bin);
    let path = env::join_paths(dirs).context("cannot prepend ~/.cargo/bin to PATH")?;
    // SAFETY: called from main before any other thread is started.
    unsafe { env::set_var("PATH", path) };
    Ok(())
}

/// The workspace root: the parent of xtask's manifest directory.
fn root() -> Result<&'static Path> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask's manifest directory has no parent")
}

fn target_dir() -> Result<PathBuf> {
    let root = root()?;
    Ok(match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    })
}

/// The daemon binary the integration tests and benchmarks drive.
fn spamwall_bin() -> Result<PathBuf> {
    Ok(target_dir()?.join("release/spamwall"))
}

/// `cargo ARGS` from the workspace root.
fn cargo(args: &[&str]) -> Result<Command> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root()?).args(args);
    Ok(cmd)
}

fn build_daemon() -> Result<()> {
    run(&mut cargo(&["build", "--release", "-p", "policy-daemon"])?)
}

fn build(release: bool) -> Result<()> {
    setup::ensure()?;
    let mut cmd = cargo(&["build"])?;
    if release {
        cmd.arg("--release");
    }
    run(cmd.arg("--workspace"))
}

fn run_daemon(args: &[String]) -> Result<()> {
    setup::ensure()?;
    build_daemon()?;
    let root = root()?;
    let mut cmd = Command::new(spamwall_bin()?);
    cmd.current_dir(root)
        .arg("run")
        .arg("--config")
        .arg(root.join("packaging/spamwall.toml"))
        .args(args);
    let line = display(&cmd);
    eprintln!("==> {line}");
    // exec: signals (Ctrl-C, SIGTERM) and the exit status are the daemon's own.
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot exec `{line}`"))
}

/// `cargo xtask load`: builds the daemon, whose build compiles the XDP
/// program into it, then runs its `xdp load`.
fn load(interfaces: &[String], mode: Option<&str>, config: Option<&Path>) -> Result<()> {
    setup::ensure()?;
    build_daemon()?;
    let root = root()?;
    let config = config.map_or_else(|| root.join("packaging/spamwall.toml"), Path::to_owned);
    let mut cmd = Command::new(spamwall_bin()?);
    cmd.current_dir(root)
        .arg("--config")
        .arg(&config)
        .args(["xdp", "load"]);
    for interface in interfaces {
        cmd.args(["--iface", interface]);
    }
    if let Some(mode) = mode {
        cmd.args(["--mode", mode]);
    }
    run(&mut cmd)
}

/// `cargo xtask fuzz`: 60 s per target unless `--time` or `--runs` say
/// otherwise.
fn run_fuzz(target: Option<&str>, time: Option<u64>, runs: Option<u64>, dev: bool) -> Result<()> {
    setup::ensure()?;
    fuzz::fuzz(
        target,
        fuzz::Plan {
            seconds: time.or(if runs.is_some() { None } else { Some(60) }),
            runs,
            build: if dev {
                fuzz::Build::Dev
            } else {
                fuzz::Build::Release
            },
            system_seeds: true,
        },
    )
}

/// A step of `cargo xtask test`.
enum TestStep {
    Command(Command),
    FuzzSmoke,
}

fn test(unit: bool, args: &[String]) -> Result<()> {
    setup::ensure()?;
    let mut steps = vec![
        (
            "format",
            TestStep::Command(cargo(&["fmt", "--all", "--", "--check"])?),
        ),
        (
            "format (fuzz targets)",
            TestStep::Command(cargo(&[
                "fmt",
                "--manifest-path",
                "fuzz/Cargo.toml",
                "--",
                "--check",
            ])?),
        ),
        (
            "clippy",
            TestStep::Command(cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?),
        ),
        (
            "unit tests",
            TestStep::Command(cargo(&[
                "test",
                "--workspace",
                "--exclude",
                "spamwall-tests",
            ])?),
        ),
    ];
    if !unit {
        steps.push(("fuzz smoke", TestStep::FuzzSmoke));
        steps.push((
            "release build",
            TestStep::Command(cargo(&["build", "--release", "-p", "policy-daemon"])?),
        ));
        let mut integration = cargo(&["test", "-p", "spamwall-tests", "--", "--test-threads=1"])?;
        integration.env("SPAMWALL_BIN", spamwall_bin()?).args(args);
        steps.push(("integration tests", TestStep::Command(integration)));
        // Each benchmark once in its smoke mode (a few seconds each, in
        // the test profile already built): one that no longer starts or
        // measures fails here, not on the day its figures are wanted.
        for bench in BENCHES {
            let mut smoke = cargo(&[
                "test",
                "-p",
                bench.package,
                "--bench",
                bench.target,
                "--",
                "--smoke",
            ])?;
            smoke.env("SPAMWALL_BIN", spamwall_bin()?);
            steps.push((bench.smoke_label, TestStep::Command(smoke)));
        }
    }
    let total = steps.len();
    for (index, (label, step)) in steps.into_iter().enumerate() {
        match step {
            TestStep::Command(mut cmd) => run(&mut cmd),
            TestStep::FuzzSmoke => fuzz::smoke(),
        }
        .with_context(|| format!("test step {}/{total} ({label}) failed", index + 1))?;
    }
    eprintln!("test: all {total} steps passed");
    Ok(())
}

fn bench(name: &str, args: &[String]) -> Result<()> {
    let Some(bench) = BENCHES.iter().find(|bench| bench.name == name) else {
        let available: Vec<&str> = BENCHES.iter().map(|bench| bench.name).collect();
        return Err(UsageError(format!(
            "unknown benchmark {name} (available: {})",
            available.join(", ")
        ))
        .into());
    };
    setup::ensure()?;
    build_daemon()?;
    let mut cmd = cargo(&["bench", "-p", bench.package, "--bench", bench.target])?;
    cmd.env("SPAMWALL_BIN", spamwall_bin()?);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    run(&mut cmd)
}
