//! `cargo xtask bench bans`: bulk bans end to end next to fail2ban, the
//! daemon's memory with a million bans, and the ban path's latency while
//! the daemon counts and reconciles a million bans.
//!
//! 1. Bulk: `spamwall ban --file` with 300,000 addresses — the size of a
//!    distributed attack a postscreen user reported — against a running
//!    daemon: file read, control socket, validation, the `SQLite` store
//!    (committed before the answer), and the kernel maps. Then the same
//!    file again (every address a repeat offender), then 1,000,000 new
//!    addresses into a second daemon. fail2ban: the same kind of bans
//!    through its control socket, one `banip` each over one persistent
//!    connection, into a jail whose action is empty (fail2ban runs no
//!    command at all) and with its own `SQLite` database, as spamwall keeps
//!    its own — the fastest fail2ban bans and still keeps them.
//! 2. Memory: the second daemon's resident set (`VmRSS`) idle, with
//!    1,000,000 active bans a second after the bulk ban, and after a
//!    restart with reconciliation every second; the kernel maps are not in
//!    it. Target: at most 64 MiB more.
//! 3. Latency: with those 1,000,000 bans, single `ban` requests over the
//!    control socket, one after another: the median of a quiet run, then
//!    the slowest while another client asks `stats` without pause, then
//!    the slowest while the daemon reconciles every second. Target: the
//!    slowest at most twice the quiet median. Twice: with the store on
//!    disk (every ban's commit synced, as in production), then in a third
//!    daemon with its store on tmpfs, where no disk sync adds its own
//!    delays and what remains is waiting inside the daemon. Each row also
//!    gives, from the daemon's `spamwall_manager_lock_wait_seconds`
//!    histogram, how many times in that run a short hold of the ban
//!    manager had to wait for it and the bucket of the longest wait: the
//!    part of a slow ban spent waiting behind a walk, apart from the
//!    machine's own delays (a thread waiting for a CPU). The short holds
//!    are the bans, and now and then one of the daemon's own (the start and
//!    end of a reconciliation pass, a metrics scrape); the walks of
//!    `stats` and reconciliation take steps, which are not counted.
//!
//! `--smoke`: a thousand addresses, twenty fail2ban bans and a few
//! requests. Without fail2ban the benchmark fails. `--only bulk`: the
//! bulk rows alone (spamwall's side); `--only latency`: the latency rows
//! alone (the million bans are still loaded first, untimed).

#![expect(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use spamwall::{
    bans::BanLength,
    control::{Request, Response},
};
use spamwall_tests::{
    bench,
    daemon::{Daemon, Settings},
    fail2ban::{Fail2banServer, JAIL},
    netns::{NetnsPair, Side, Subnet},
};

const MIB: f64 = 1024.0 * 1024.0;
/// The daemons' metrics endpoint, inside the benchmark's namespace.
const METRICS: &str = "127.0.0.1:9466";

fn main() {
    bench::require_root("bench bans");
    let only = Only::from_args();
    if only.fail2ban() {
        bench::require_peer(
            "fail2ban",
            "fail2ban-server",
            "apt-get install fail2ban; cargo xtask setup installs it",
        );
    }
    let bulk: u32 = bench::size(300_000, 1_000);
    let million: u32 = bench::size(1_000_000, 2_000);
    let fail2ban_bans: u32 = bench::size(5_000, 20);
    let singles: u32 = bench::size(300, 5);
    let net = NetnsPair::new(Subnet::test_net_2(42));
    let mut settings = Settings::on(net.server());
    settings.interfaces = Vec::new();
    settings.capacity = 1 << 21;
    settings.extra = format!("[metrics]\nlisten = \"{METRICS}\"\n");

    // 1. Bulk, 300,000.
    let (fresh, repeat) = if only.bulk() {
        let daemon = Daemon::start(net.server(), &settings);
        let file = address_file(0x6440_0000, bulk);
        let fresh = timed(|| daemon.cli_ok(&["ban", "--file", path(&file), "--reason", "bench"]));
        let stats = daemon.stats();
        assert_eq!(
            stats["bans_v4"],
            u64::from(bulk),
            "every address banned: {stats}"
        );
        let repeat = timed(|| daemon.cli_ok(&["ban", "--file", path(&file), "--reason", "bench"]));
        drop(daemon);
        (fresh, repeat)
    } else {
        (Duration::ZERO, Duration::ZERO)
    };

    // 1b and 2. A million into a new daemon; its memory.
    let mut daemon = Daemon::start(net.server(), &settings);
    let pid = daemon.pid().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let idle = Memory::of(pid);
    let file = address_file(0x6500_0000, million);
    let big = timed(|| daemon.cli_ok(&["ban", "--file", path(&file), "--reason", "bench"]));
    drop(file);
    let stats = daemon.stats();
    assert_eq!(
        stats["bans_v4"],
        u64::from(million),
        "every address banned: {stats}"
    );
    if !only.latency() {
        print_bulk(bulk, fresh, repeat, million, big);
        return;
    }
    // The daemon gives memory back half a second after a burst.
    std::thread::sleep(Duration::from_secs(1));
    let banned = Memory::of(pid);

    // 3. Latency with the store on disk.
    let mut address = 0x0a00_0000_u32;
    let (on_disk, pid) = latencies(&net, &mut daemon, &mut settings, &mut address, singles);
    let busy = Memory::of(pid);
    drop(daemon);

    // Again with the store in memory (tmpfs): what is left without the
    // disk's syncs is the daemon's own waiting.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let mut settings = Settings {
        state_dir: Some(shm.path().join("state")),
        ban_extra: String::new(),
        ..settings
    };
    let mut daemon = Daemon::start(net.server(), &settings);
    let file = address_file(0x6500_0000, million);
    daemon.cli_ok(&["ban", "--file", path(&file), "--reason", "bench"]);
    drop(file);
    std::thread::sleep(Duration::from_secs(1));
    let (in_memory, _) = latencies(&net, &mut daemon, &mut settings, &mut address, singles);
    drop(daemon);

    if only.bulk() {
        print_bulk(bulk, fresh, repeat, million, big);
    }
    if only.fail2ban() {
        let f2b = fail2ban(fail2ban_bans);
        println!(
            "| fail2ban banip, one persistent connection, empty action, own database | {fail2ban_bans} | {:.0} ms | {:.0} | |",
            ms(f2b),
            rate(fail2ban_bans, f2b)
        );
        println!(
            "ratio spamwall/fail2ban (bans/s, {bulk} new): {:.0}x",
            rate(bulk, fresh) / rate(fail2ban_bans, f2b)
        );
    }
    print_memory(million, &idle, &banned, &busy);
    print_latency(million, singles, &on_disk, &in_memory);
}

/// Which parts `--only PART` asks for: every part without it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Only {
    All,
    Bulk,
    Latency,
}

impl Only {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        match args
            .iter()
            .position(|arg| arg == "--only")
            .map(|at| args.get(at + 1).map(String::as_str))
        {
            None => Self::All,
            Some(Some("bulk")) => Self::Bulk,
            Some(Some("latency")) => Self::Latency,
            Some(other) => panic!("--only takes bulk or latency, not {other:?}"),
        }
    }

    fn bulk(self) -> bool {
        self != Self::Latency
    }

    fn latency(self) -> bool {
        self != Self::Bulk
    }

    fn fail2ban(self) -> bool {
        self == Self::All
    }
}

/// `count` bans through fail2ban's control socket, one persistent
/// connection; checks the jail holds them all.
fn fail2ban(count: u32) -> Duration {
    let server = Fail2banServer::start();
    let mut client = server.client();
    let targets: Vec<IpNet> = (0..count)
        .map(|i| IpNet::from(std::net::IpAddr::from(Ipv4Addr::from(0x6440_0000 + i))))
        .collect();
    let started = Instant::now();
    for target in &targets {
        client.ban(JAIL, *target).unwrap();
    }
    let elapsed = started.elapsed();
    let held = server.cli_banned(JAIL).len();
    assert_eq!(
        held,
        count as usize,
        "cannot measure fail2ban: its jail holds {held} of the {count} bans sent; log:\n{}",
        server.log()
    );
    elapsed
}

/// Single bans with `million` active: quiet, while another client asks
/// `stats` without pause, then after a restart with reconciliation every
/// second. Returns the runs and the restarted daemon's pid.
fn latencies(
    net: &NetnsPair,
    daemon: &mut Daemon,
    settings: &mut Settings,
    address: &mut u32,
    singles: u32,
) -> (LatencyRuns, u32) {
    let quiet = ban_latencies(net, daemon.socket(), address, singles, None);
    let under_stats = ban_latencies(
        net,
        daemon.socket(),
        address,
        singles,
        Some(&Request::Stats),
    );
    settings.ban_extra = "reconcile_interval = \"1s\"\n".into();
    daemon.rewrite_config(settings);
    daemon.kill_within(libc::SIGTERM, Duration::from_secs(30));
    daemon.restart();
    let pid = daemon.pid().unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let reconciling = ban_latencies(net, daemon.socket(), address, singles, None);
    (
        LatencyRuns {
            quiet,
            under_stats,
            reconciling,
        },
        pid,
    )
}

/// The three latency runs of one daemon.
struct LatencyRuns {
    quiet: Latencies,
    under_stats: Latencies,
    reconciling: Latencies,
}

fn rate(n: u32, d: Duration) -> f64 {
    f64::from(n) / d.as_secs_f64()
}

/// The bulk rows; fail2ban's row and the ratio follow when measured.
fn print_bulk(bulk: u32, fresh: Duration, repeat: Duration, million: u32, big: Duration) {
    if bench::smoke() {
        println!("smoke run: the figures mean nothing");
    }
    println!("bulk bans, end to end (one run each; 2 CPUs)");
    println!("| system | bans | time | bans/s | target |");
    println!("|---|---:|---:|---:|---|");
    println!(
        "| spamwall ban --file (new addresses) | {bulk} | {:.0} ms | {:.0} | <= 500 ms: {} |",
        ms(fresh),
        rate(bulk, fresh),
        met(fresh <= Duration::from_millis(500))
    );
    println!(
        "| spamwall ban --file (all repeat offenders) | {bulk} | {:.0} ms | {:.0} | |",
        ms(repeat),
        rate(bulk, repeat)
    );
    println!(
        "| spamwall ban --file (new addresses) | {million} | {:.0} ms | {:.0} | <= 2 s: {} |",
        ms(big),
        rate(million, big),
        met(big <= Duration::from_secs(2))
    );
}

fn print_memory(million: u32, idle: &Memory, banned: &Memory, busy: &Memory) {
    println!();
    let grown = busy.rss.max(banned.rss).saturating_sub(idle.rss);
    println!("daemon memory (VmRSS; the kernel maps are not in it)");
    println!("| state | VmRSS | peak (VmHWM) |");
    println!("|---|---:|---:|");
    println!(
        "| idle, no bans | {:.1} MiB | {:.1} MiB |",
        mib(idle.rss),
        mib(idle.hwm)
    );
    println!(
        "| {million} active bans, 1 s after `ban --file` | {:.1} MiB | {:.1} MiB |",
        mib(banned.rss),
        mib(banned.hwm)
    );
    println!(
        "| {million} active bans, restarted, reconciling every second, banned through | {:.1} MiB | {:.1} MiB |",
        mib(busy.rss),
        mib(busy.hwm)
    );
    println!(
        "grown by at most {:.1} MiB ({:.0} bytes a ban); target <= 64 MiB: {}",
        mib(grown),
        mib(grown) * MIB / f64::from(million),
        met(grown <= 64 << 20)
    );
}

fn print_latency(million: u32, singles: u32, on_disk: &LatencyRuns, in_memory: &LatencyRuns) {
    println!();
    println!("single `ban` over the control socket with {million} active bans ({singles} each)");
    println!(
        "| store | while | median | p99 | slowest | slowest / quiet median | waits for the manager (longest) |"
    );
    println!("|---|---|---:|---:|---:|---:|---|");
    for (store, runs) in [("disk (synced commits)", on_disk), ("tmpfs", in_memory)] {
        let median = runs.quiet.median();
        for (label, run) in [
            ("quiet", &runs.quiet),
            ("another client asks stats without pause", &runs.under_stats),
            ("the daemon reconciles every second", &runs.reconciling),
        ] {
            println!(
                "| {store} | {label} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} | {} |",
                ms(run.median()),
                ms(run.p99()),
                ms(run.max()),
                run.max().as_secs_f64() / median.as_secs_f64(),
                run.waits
            );
        }
    }
    for (store, runs) in [("disk", on_disk), ("tmpfs", in_memory)] {
        let worst = runs.under_stats.max().max(runs.reconciling.max());
        println!(
            "target ({store}): slowest under stats or reconciliation <= 2x quiet median: {} \
             (the quiet run's own slowest: {:.1}x)",
            met(worst <= runs.quiet.median() * 2),
            runs.quiet.max().as_secs_f64() / runs.quiet.median().as_secs_f64()
        );
    }
}

/// A file of `count` consecutive addresses from `first` (100.64.0.0/10
/// and up: never the test subnets).
fn address_file(first: u32, count: u32) -> tempfile::NamedTempFile {
    let mut list = String::with_capacity(count as usize * 14);
    for i in 0..count {
        let _ = writeln!(list, "{}", Ipv4Addr::from(first + i));
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &list).unwrap();
    file
}

fn path(file: &tempfile::NamedTempFile) -> &str {
    file.path().to_str().unwrap()
}

/// Bans `count` new addresses one request at a time; with `noise`,
/// another client sends it without pause meanwhile.
fn ban_latencies(
    net: &NetnsPair,
    socket: &Path,
    address: &mut u32,
    count: u32,
    noise: Option<&Request>,
) -> Latencies {
    let stop = AtomicBool::new(false);
    let waits_before = LockWaits::scrape(net);
    let times = std::thread::scope(|scope| {
        if let Some(noise) = noise {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let answer = spamwall::control::request(socket, noise).unwrap();
                    assert!(!matches!(answer, Response::Error { .. }), "{answer:?}");
                }
            });
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut times = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let request = Request::Ban {
                targets: vec![Ipv4Addr::from(*address).to_string()],
                length: BanLength::Default,
                reason: "bench".into(),
                force: false,
            };
            *address += 1;
            let started = Instant::now();
            let answer = spamwall::control::request(socket, &request).unwrap();
            times.push(started.elapsed());
            assert!(
                matches!(&answer, Response::Banned { banned, .. } if banned.len() == 1),
                "{answer:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        times.sort_unstable();
        times
    });
    Latencies {
        times,
        waits: LockWaits::scrape(net).since(&waits_before),
    }
}

/// Sorted request times, and the waits for the manager meanwhile.
struct Latencies {
    times: Vec<Duration>,
    waits: LockWaitsSince,
}

impl Latencies {
    fn median(&self) -> Duration {
        self.times[self.times.len() / 2]
    }

    fn p99(&self) -> Duration {
        self.times[(self.times.len() * 99 / 100).min(self.times.len() - 1)]
    }

    fn max(&self) -> Duration {
        *self.times.last().unwrap()
    }
}

/// The daemon's `spamwall_manager_lock_wait_seconds` histogram: per
/// bucket bound (seconds), how many waits were at most that long.
struct LockWaits(Vec<(f64, u64)>);

impl LockWaits {
    const BUCKET: &str = "spamwall_manager_lock_wait_seconds_bucket{le=\"";

    fn scrape(net: &NetnsPair) -> Self {
        let url = format!("http://{METRICS}/metrics");
        let scrape = net.exec_in(
            Side::Server,
            &["curl", "-sf", &url],
            Duration::from_secs(10),
        );
        assert!(scrape.status.success(), "scraping {url} failed");
        let text = String::from_utf8_lossy(&scrape.stdout);
        // No wait yet: no histogram, every count zero.
        Self(
            text.lines()
                .filter_map(|line| line.strip_prefix(Self::BUCKET))
                .filter_map(|rest| {
                    let (bound, count) = rest.split_once("\"} ")?;
                    let bound = if bound == "+Inf" {
                        f64::INFINITY
                    } else {
                        bound.parse().ok()?
                    };
                    Some((bound, count.trim().parse().ok()?))
                })
                .collect(),
        )
    }

    /// The waits since `before` (a scrape of the same daemon, its buckets
    /// in the same order, `+Inf` last): how many, and the bucket of the
    /// longest.
    fn since(&self, before: &Self) -> LockWaitsSince {
        let earlier = |at: usize| before.0.get(at).map_or(0, |&(_, count)| count);
        let last = self.0.len().saturating_sub(1);
        let total = self.0.last().map_or(0, |&(_, count)| count) - earlier(last);
        let mut longest = None;
        let mut above = 0.0;
        for (at, &(bound, count)) in self.0.iter().enumerate() {
            if count - earlier(at) == total {
                longest = Some((above, bound));
                break;
            }
            above = bound;
        }
        LockWaitsSince { total, longest }
    }
}

/// Waits for the manager in one run: how many, and the bounds of the
/// bucket the longest fell in (seconds).
struct LockWaitsSince {
    total: u64,
    longest: Option<(f64, f64)>,
}

impl std::fmt::Display for LockWaitsSince {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.longest {
            Some((above, at_most)) if self.total > 0 && at_most.is_finite() => write!(
                f,
                "{} ({:.3}-{:.3} ms)",
                self.total,
                above * 1000.0,
                at_most * 1000.0
            ),
            Some((above, _)) if self.total > 0 => {
                write!(f, "{} (over {:.0} ms)", self.total, above * 1000.0)
            }
            _ => f.write_str("0"),
        }
    }
}

/// A process's resident set now and at its peak, in bytes.
struct Memory {
    rss: u64,
    hwm: u64,
}

impl Memory {
    fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .unwrap()
                * 1024
        };
        Self {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
        }
    }
}

fn timed(f: impl FnOnce() -> String) -> Duration {
    let started = Instant::now();
    let out = f();
    let elapsed = started.elapsed();
    assert!(out.contains("banned"), "{out}");
    elapsed
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[expect(clippy::cast_precision_loss, reason = "a figure to print")]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

const fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}
