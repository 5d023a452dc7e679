//! `cargo xtask bench list`: `spamwall list` with 1,000,000 active bans.
//!
//! The bans go in through `spamwall ban --file` in batches of 250,000, as
//! `bench bans` does. Then `spamwall list --json` and the human `spamwall
//! list` run once each: the time from starting the CLI to the first ban on
//! its standard output and to its end, the CLI's peak resident memory
//! (`wait4`'s `ru_maxrss`) next to that of a one-ban list (`--limit 1`, the
//! CLI's own baseline), and the daemon's resident memory sampled every few
//! milliseconds while it answers, against what it held before
//! (`/proc/PID/status` `VmRSS`). Meanwhile one address is banned again
//! every 20 ms over the control socket: the longest of those bans shows
//! whether a list holds bans up. Targets: the first ban within 100 ms, and
//! at most 32 MiB more memory in the CLI and in the daemon. `--smoke`: a
//! thousand bans.

#![expect(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _},
    net::Ipv4Addr,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use spamwall_tests::{
    bench,
    daemon::{Daemon, Settings, spamwall_bin},
    netns::{NetnsPair, Subnet},
};

/// The first address banned: 100.64.0.0/10 and up, never the test
/// subnets.
const FIRST: u32 = 0x6440_0000;
/// Bans per `ban --file`.
const BATCH: u32 = 250_000;
/// Longest one listing may take before it is killed.
const LIST_DEADLINE: Duration = Duration::from_mins(5);
const MIB: u64 = 1 << 20;

fn main() {
    bench::require_root("bench list");
    let count: u32 = bench::size(1_000_000, 1_000);
    let net = NetnsPair::new(Subnet::test_net_3(63));
    let mut settings = Settings::on(net.server());
    settings.interfaces = Vec::new();
    settings.capacity = (count + 1).next_power_of_two().max(1 << 12);
    let daemon = Daemon::start(net.server(), &settings);
    ban_all(&daemon, count);
    let stats = daemon.stats();
    assert_eq!(
        stats["bans_active"],
        u64::from(count),
        "every address banned: {stats}"
    );

    let idle_ban = (0..20).map(|_| ban_again(daemon.socket())).max().unwrap();
    let baseline = listing(&daemon, &["--json", "--limit", "1"]);
    assert_eq!(baseline.entries, 1, "the baseline lists one ban");
    let json = listing(&daemon, &["--json"]);
    let human = listing(&daemon, &[]);
    for (form, run) in [("--json", &json), ("human", &human)] {
        assert_eq!(
            run.entries,
            u64::from(count),
            "list {form}: {} of {count} bans printed",
            run.entries
        );
    }

    if bench::smoke() {
        println!("smoke run: the figures mean nothing");
    }
    println!("spamwall list with {count} active bans (one run each; 2 CPUs)");
    println!(
        "| form | first ban | total | bans/s | CLI peak RSS | CLI extra over --limit 1 | daemon RSS growth | longest ban meanwhile |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (form, run) in [("list --json", &json), ("list", &human)] {
        println!(
            "| {form} | {:.1} ms | {:.0} ms | {:.0} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} ms |",
            ms(run.first),
            ms(run.total),
            f64::from(count) / run.total.as_secs_f64(),
            mib(run.cli_peak),
            mib(run.cli_peak.saturating_sub(baseline.cli_peak)),
            mib(run.daemon_growth),
            ms(run.longest_ban),
        );
    }
    println!(
        "(the longest of 20 such bans with no list running: {:.1} ms)",
        ms(idle_ban)
    );
    println!(
        "(--limit 1: CLI peak RSS {:.1} MiB, daemon RSS before the lists {:.1} MiB)",
        mib(baseline.cli_peak),
        mib(baseline.daemon_before)
    );
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    for (form, run) in [("list --json", &json), ("list", &human)] {
        println!(
            "target: {form}: first ban within 100 ms: {}",
            verdict(run.first <= Duration::from_millis(100))
        );
        println!(
            "target: {form}: CLI at most 32 MiB more than for one ban: {}",
            verdict(run.cli_peak.saturating_sub(baseline.cli_peak) <= 32 * MIB)
        );
        println!(
            "target: {form}: daemon at most 32 MiB more while it lists: {}",
            verdict(run.daemon_growth <= 32 * MIB)
        );
    }
}

/// Bans `count` addresses from 100.64.0.0/10 (never the test subnets)
/// through `ban --file`, [`BATCH`] at a time.
fn ban_all(daemon: &Daemon, count: u32) {
    let dir = tempfile::tempdir().unwrap();
    let mut start = 0;
    while start < count {
        let end = count.min(start + BATCH);
        let mut list = String::with_capacity((end - start) as usize * 14);
        for i in start..end {
            let _ = writeln!(list, "{}", Ipv4Addr::from(FIRST + i));
        }
        let path = dir.path().join(format!("batch-{start}.txt"));
        std::fs::write(&path, list).unwrap();
        let out = daemon.cli_ok(&["ban", "--file", path.to_str().unwrap(), "--reason", "bench"]);
        assert!(out.contains("banned"), "{out}");
        start = end;
    }
}

/// One `spamwall list` run.
struct Listing {
    entries: u64,
    /// From starting the CLI to the first ban on its output.
    first: Duration,
    total: Duration,
    /// `ru_maxrss` of the CLI, bytes.
    cli_peak: u64,
    daemon_before: u64,
    /// The highest `VmRSS` of the daemon while it listed, less its
    /// `VmRSS` before.
    daemon_growth: u64,
    /// The longest `ban` of one address (a repeat offender, so that the
    /// list's length stays) while the list ran.
    longest_ban: Duration,
}

/// Bans the first address of the bench again over the control socket;
/// returns how long the answer took.
fn ban_again(socket: &std::path::Path) -> Duration {
    let request = spamwall::control::Request::Ban {
        targets: vec![Ipv4Addr::from(FIRST).to_string()],
        length: spamwall::bans::BanLength::Default,
        reason: "bench".to_owned(),
        force: false,
    };
    let started = Instant::now();
    let answer = spamwall::control::request(socket, &request).unwrap();
    let took = started.elapsed();
    assert!(
        matches!(&answer, spamwall::control::Response::Banned { banned, .. } if banned.len() == 1),
        "{answer:?}"
    );
    took
}

/// Runs `spamwall list ARGS…`, reading its output line by line as it
/// comes, while sampling the daemon's memory.
fn listing(daemon: &Daemon, args: &[&str]) -> Listing {
    let pid = daemon.pid().expect("the daemon runs");
    let daemon_before = vm_rss(pid);
    let peak = Arc::new(AtomicU64::new(daemon_before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(vm_rss(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let banner = {
        let (socket, done) = (daemon.socket().to_owned(), Arc::clone(&done));
        thread::spawn(move || {
            let mut longest = Duration::ZERO;
            while !done.load(Ordering::Relaxed) {
                longest = longest.max(ban_again(&socket));
                thread::sleep(Duration::from_millis(20));
            }
            longest
        })
    };
    let json = args.contains(&"--json");
    let started = Instant::now();
    #[expect(clippy::zombie_processes, reason = "reaped by `reap`, for its rusage")]
    let mut child = Command::new(spamwall_bin())
        .arg("--socket")
        .arg(daemon.socket())
        .arg("list")
        .args(args)
        .env_remove("SPAMWALL_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child_pid = libc::pid_t::try_from(child.id()).unwrap();
    let watchdog = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let deadline = Instant::now() + LIST_DEADLINE;
            while !done.load(Ordering::Relaxed) {
                if Instant::now() > deadline {
                    // SAFETY: kill has no memory-safety preconditions; the
                    // child is reaped only after `done` is set.
                    unsafe { libc::kill(child_pid, libc::SIGKILL) };
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let printed = read_output(child.stdout.take().unwrap(), json, started);
    let total = started.elapsed();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    // The output ended: the CLI is done; from here the watchdog leaves
    // its pid alone.
    done.store(true, Ordering::Relaxed);
    let (status, cli_peak) = reap(child_pid);
    sampler.join().unwrap();
    let longest_ban = banner.join().unwrap();
    watchdog.join().unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "spamwall list {args:?} failed (wait status {status}): {stderr}"
    );
    if json {
        assert_eq!(printed.last_line, b"]\n", "list --json ends its array");
    }
    if bench::smoke() && json {
        let value: serde_json::Value = serde_json::from_slice(&printed.text)
            .unwrap_or_else(|e| panic!("list {args:?} is not JSON: {e}"));
        assert_eq!(
            value.as_array().map(Vec::len),
            usize::try_from(printed.entries).ok()
        );
    }
    Listing {
        entries: printed.entries,
        first: printed.first.unwrap_or(total),
        total,
        cli_peak,
        daemon_before,
        daemon_growth: peak.load(Ordering::Relaxed).saturating_sub(daemon_before),
        longest_ban,
    }
}

/// What the CLI printed, read line by line as it came.
struct Printed {
    entries: u64,
    /// When the first ban arrived, from `started`.
    first: Option<Duration>,
    last_line: Vec<u8>,
    /// The whole output, under `--smoke` only.
    text: Vec<u8>,
}

fn read_output(stdout: std::process::ChildStdout, json: bool, started: Instant) -> Printed {
    let mut out = BufReader::with_capacity(1 << 16, stdout);
    let mut printed = Printed {
        entries: 0,
        first: None,
        last_line: Vec::new(),
        text: Vec::new(),
    };
    let mut line = Vec::new();
    let mut lines = 0_u64;
    loop {
        line.clear();
        if out.read_until(b'\n', &mut line).unwrap() == 0 {
            return printed;
        }
        lines += 1;
        let entry = if json {
            line.starts_with(b"    \"addr\": ")
        } else {
            lines > 1 && !line.starts_with(b"no active bans")
        };
        if entry {
            printed.first.get_or_insert_with(|| started.elapsed());
            printed.entries += 1;
        }
        if bench::smoke() {
            printed.text.extend_from_slice(&line);
        }
        printed.last_line.clone_from(&line);
    }
}

/// Waits for `pid` and returns its wait status and peak resident memory in
/// bytes.
fn reap(pid: libc::pid_t) -> (libc::c_int, u64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; both pointers are valid.
    let reaped = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    (status, u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024)
}

/// `VmRSS` of `pid` in bytes.
fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[expect(
    clippy::cast_precision_loss,
    reason = "memory sizes in MiB for a table"
)]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}
