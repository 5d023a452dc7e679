//! Policy-server throughput and latency: spamwall against the floor (a
//! server that answers DUNNO and does nothing else) and against
//! mtpolicyd 2.05 (Debian's package), same client, same load, same
//! chain, in one run.
//!
//! `cargo xtask bench policy` (root: `spamwall run` loads its XDP program
//! and pins maps even with no interface). Options after `--`:
//! `--duration SECS` (measured time per run, default 10),
//! `--requests N` (cap per connection and run, default 10,000,000),
//! `--rounds N` (floor and spamwall on the local chain, alternated,
//! each round on freshly started servers, default 3; the median round
//! counts, and every round is printed), `--client-threads N` (default 2),
//! `--only floor|spamwall|mtpolicyd`, `--local` (the local chain only:
//! no mtpolicyd, no DNS) and `--smoke` (one round, at most a
//! second and 20 requests per connection per run). Without mtpolicyd,
//! unbound, gcc or valgrind, or when a server answers nothing, the
//! benchmark fails.
//!
//! Load ([`client`]): [`client::CONNECTIONS`] keep-alive TCP connections
//! on loopback, each waiting for the answer before its next request,
//! shared by two epoll threads; `request=smtpd_access_policy` RCPT
//! requests as Postfix sends them (two RCPTs per mail, one `instance` per
//! mail) from a fixed mix of client addresses. Every answer is checked
//! against the expected action.
//!
//! Chain, identical on both servers: an allow list (`192.0.2.0/26`,
//! `198.51.100.0/28`), two blocklists of 5 points each (`bl1`: all of
//! `198.51.100.0/24` and `203.0.113.0/25`; `bl2`: `198.51.100.0/24`) and
//! a reject at 10. So `198.51.100.16`–`.255` are rejected; everything
//! else gets DUNNO. Each row of the table says where the blocklists live:
//!
//! - `local`: in the server, no DNS (spamwall `list` checks with a score,
//!   mtpolicyd `Condition` plugins with a regex and a score). The floor
//!   runs here too.
//! - `unbound`: DNSBLs on a local rbldnsd, which both servers ask through
//!   one local caching resolver, Debian's unbound, on a loopback port
//!   (a stub zone per list pointing at rbldnsd, every other name
//!   forwarded to rbldnsd too, so nothing leaves loopback). spamwall's
//!   own DNS cache is cut to its minimum (`dns_cache_size = 1`) so that,
//!   like mtpolicyd, it asks unbound for every lookup.
//! - `own cache`: spamwall as deployed, its DNS cache in front of
//!   rbldnsd, no unbound; its ratio is against mtpolicyd's `unbound`
//!   row, mtpolicyd's fastest DNS setup.
//!
//! spamwall runs at its default log level (`info`): it logs a line for
//! each rejected mail, as in production.
//!
//! Each row also gives the server's CPU time per answered request, user
//! space and kernel apart: what every process of the server's process
//! group spent during the run (`/proc/PID/stat`, a preforking server's
//! reaped children included), divided by the requests answered. Client
//! and server share the machine's CPUs, so throughput also depends on
//! where the scheduler runs them; CPU time per request is the cost of
//! the server's own work.
//!
//! Whenever spamwall runs, the bench also counts its instructions per
//! request with callgrind on the local chain, every thread included: two
//! daemons under valgrind answer 100 and 400 requests per connection
//! after their start, and the difference of their totals over the
//! difference of their requests is one request's cost (start, warm-up
//! and stop cancel out). It does so at the default log level and without
//! the engine's line per rejected mail. A count, unlike a time, does not
//! move with the machine's load, so it shows a change to the request path
//! that throughput on a small, busy machine cannot resolve.
//!
//! The floor is a C program compiled with gcc at bench time
//! (`policy/floor.c`): one accepting thread and as many epoll worker
//! threads as spamwall's runtime has (one per CPU), non-blocking sockets,
//! one read per wake-up, the requests in it counted by their empty line
//! and answered `action=DUNNO` with one write. Its throughput is the most
//! any policy server can get from this client on this machine; spamwall's
//! share of it is the cost of its work.
//!
//! mtpolicyd runs in the foreground (`-f`) with a generated config in a
//! temporary directory: a `<VirtualHost>` with a `Condition` plugin on
//! `client_address` (a regex; `RegexList` would need `File::Slurp`, which
//! the package does not pull in) answering `dunno`, the two lists as
//! `Condition` plugins with a score or as `RBL` plugins in passive mode
//! with a score, and `ScoreAction` with the reject template. No
//! `<SessionCache>` (the built-in "None" cache: no memcached), no
//! per-request log (`log_level=0`), 20 preforked children so each
//! connection has one. Its RBL plugin resolves through `Net::DNS`, which
//! reads `RES_NAMESERVERS` and `RES_OPTIONS` from the environment after
//! `/etc/resolv.conf`: `RES_NAMESERVERS=127.0.0.1 RES_OPTIONS=port:PORT`
//! points it at unbound without touching the system resolver.
//!
//! Everything started is stopped by pid (SIGTERM, then SIGKILL to its
//! process group) and spamwall's pins are purged on exit, also on error.

#[path = "policy/client.rs"]
#[allow(
    dead_code,
    reason = "shared by the policy benchmarks, each using part of it"
)]
mod client;
#[path = "policy/servers.rs"]
mod servers;
#[path = "policy/unbound.rs"]
mod unbound;

use std::{
    env,
    fmt::Write as _,
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use client::{Budget, CONNECTIONS, Expect, Load};
use servers::Server;
use spamwall_tests::{
    PinDir,
    bench::{self, CpuTime},
    rbldnsd::{Rbldnsd, Zone},
};
use unbound::Unbound;

/// Default cap on measured requests per connection and run.
const DEFAULT_REQUESTS: usize = 10_000_000;
/// Default measured time per run.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Default rounds of floor and spamwall on the local chain.
const DEFAULT_ROUNDS: usize = 3;
/// Default load threads.
const DEFAULT_CLIENT_THREADS: usize = 2;
/// How long a server may take to accept connections after its start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests per connection in the two callgrind runs of each log level.
const INSTRUCTION_RUNS: [usize; 2] = [100, 400];
/// How long spamwall under callgrind, many times slower, may take to
/// start, to answer a run and to write its counts on exit.
const CALLGRIND_TIMEOUT: Duration = Duration::from_mins(5);
/// Targets: spamwall's share of the floor, its p99 on the local chain,
/// its throughput against mtpolicyd's.
const FLOOR_SHARE_TARGET: f64 = 0.80;
const P99_TARGET: Duration = Duration::from_millis(1);
const MTPOLICYD_RATIO_TARGET: f64 = 20.0;

const FLOOR_SOURCE: &str = include_str!("policy/floor.c");
const REJECT_TEMPLATE: &str = "reject sender ip %IP% is blocked (score=%SCORE%";
const BL1: &str = ":127.0.0.2:listed in bl1\n198.51.100.0/24\n203.0.113.0/25\n";
const BL2: &str = ":127.0.0.2:listed in bl2\n198.51.100.0/24\n";
const BL1_NETS: [&str; 2] = ["198.51.100.0/24", "203.0.113.0/25"];
const BL2_NETS: [&str; 1] = ["198.51.100.0/24"];
const ALLOW: [&str; 2] = ["192.0.2.0/26", "198.51.100.0/28"];
/// [`ALLOW`] as one regex, for mtpolicyd's `Condition` plugin.
const ALLOW_REGEX: &str = r"^(192\.0\.2\.([0-9]|[1-5][0-9]|6[0-3])|198\.51\.100\.([0-9]|1[0-5]))$";
/// [`BL1_NETS`] and [`BL2_NETS`] as regexes.
const BL1_REGEX: &str =
    r"^(198\.51\.100\.[0-9]+|203\.0\.113\.([0-9]|[1-9][0-9]|1[01][0-9]|12[0-7]))$";
const BL2_REGEX: &str = r"^198\.51\.100\.[0-9]+$";

/// Where a chain's blocklists live.
#[derive(Clone, Copy, Debug)]
enum Chain {
    /// In the server: no DNS.
    Local,
    /// DNSBLs through the shared unbound at this address.
    Unbound(SocketAddr),
    /// DNSBLs on rbldnsd at this address, behind spamwall's own cache.
    OwnCache(SocketAddr),
}

impl Chain {
    const fn label(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Unbound(_) => "unbound",
            Self::OwnCache(_) => "own cache",
        }
    }
}

/// One line of the table.
struct Row {
    setup: &'static str,
    server: &'static str,
    load: Load,
    /// The server's CPU time over the run (every process of its group).
    cpu: CpuTime,
}

impl Row {
    fn new(setup: &'static str, server: &'static str, (load, cpu): (Load, CpuTime)) -> Self {
        Self {
            setup,
            server,
            load,
            cpu,
        }
    }

    /// The server's CPU time per answered request.
    fn cpu_per_request(&self) -> CpuTime {
        let requests = u32::try_from(self.load.requests.max(1)).unwrap_or(u32::MAX);
        CpuTime {
            user: self.cpu.user / requests,
            system: self.cpu.system / requests,
        }
    }
}

fn main() -> Result<()> {
    bench::require_root("policy bench");
    let options = Options::from_args()?;
    if options.runs("floor") {
        bench::require_peer("the floor", "gcc", "apt-get install gcc");
    }
    if options.runs("mtpolicyd") {
        bench::require_peer(
            "mtpolicyd",
            "mtpolicyd",
            "apt-get install mtpolicyd; cargo xtask setup installs it",
        );
    }
    bench::require_peer(
        "the shared resolver",
        "unbound",
        "apt-get install unbound; cargo xtask setup installs it",
    );
    let workload = Workload::new();
    let rbldnsd = Rbldnsd::start(&[
        Zone {
            name: "bl1.test",
            kind: "ip4set",
            data: BL1,
        },
        Zone {
            name: "bl2.test",
            kind: "ip4set",
            data: BL2,
        },
    ]);
    let unbound = Unbound::start(rbldnsd.addr())?;
    println!(
        "policy bench: {CONNECTIONS} keep-alive connections on {} client threads, \
         {} client addresses ({} rejected), at most {}s and {} requests per connection per run",
        options.budget.threads,
        workload.addresses,
        workload.rejected_addresses,
        options.budget.duration.as_secs(),
        options.budget.requests
    );

    let pin = PinDir::new();
    let mut rows = measure_local(&options, &workload, &pin)?;
    let instructions = if options.runs("spamwall") {
        Some(measure_instructions(&options, &workload, &pin)?)
    } else {
        None
    };
    if options.local {
        print_table(&rows);
        print_instructions(instructions.as_ref());
        return check_rows(&rows);
    }
    rows.extend(measure_dns(
        &options,
        &workload,
        &pin,
        unbound.addr,
        rbldnsd.addr(),
    )?);
    drop(pin);
    drop(unbound);
    drop(rbldnsd);

    print_table(&rows);
    print_instructions(instructions.as_ref());
    check_rows(&rows)
}

/// The local chain: floor and spamwall alternated round by round, so
/// both see the same machine (the median round of each counts), then
/// mtpolicyd. Each round starts both servers afresh: on a small machine
/// a server's throughput depends on where the scheduler puts its threads
/// next to the client's, which holds for a process's life, so rounds of
/// one process would all show the same placement. Every round's figure
/// is printed, with the spread.
fn measure_local(options: &Options, workload: &Workload, pin: &PinDir) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut floor_rounds = Vec::new();
    let mut spamwall_rounds = Vec::new();
    for round in 0..options.rounds {
        for (name, rounds) in [
            ("floor", &mut floor_rounds),
            ("spamwall", &mut spamwall_rounds),
        ] {
            if !options.runs(name) {
                continue;
            }
            eprintln!(
                "round {}/{}: {name} on the local chain …",
                round + 1,
                options.rounds,
            );
            let server = if name == "floor" {
                Server::floor()?
            } else {
                Server::spamwall(Chain::Local, pin)?
            };
            rounds.push(server.measure(workload, options.budget)?);
            // A daemon goes before its pins.
            drop(server);
        }
    }
    for (name, rounds) in [("floor", &floor_rounds), ("spamwall", &spamwall_rounds)] {
        if !rounds.is_empty() {
            let each: Vec<String> = rounds
                .iter()
                .map(|(load, _)| format!("{:.0}", load.throughput()))
                .collect();
            println!("local {name}, req/s by round: {}", each.join(", "));
        }
    }
    if floor_rounds.len() == spamwall_rounds.len() && !floor_rounds.is_empty() {
        let shares: Vec<f64> = floor_rounds
            .iter()
            .zip(&spamwall_rounds)
            .map(|((floor, _), (spamwall, _))| 100.0 * spamwall.throughput() / floor.throughput())
            .collect();
        let low = shares.iter().copied().fold(f64::INFINITY, f64::min);
        let high = shares.iter().copied().fold(0.0, f64::max);
        println!("local spamwall/floor by round: {low:.0}% to {high:.0}%");
    }
    for (name, rounds) in [("floor", floor_rounds), ("spamwall", spamwall_rounds)] {
        if let Some(run) = median(rounds) {
            rows.push(Row::new("local", name, run));
        }
    }
    if options.runs("mtpolicyd") && !options.local {
        let server = Server::mtpolicyd(Chain::Local)?;
        rows.push(Row::new(
            "local",
            "mtpolicyd 2.05",
            server.measure(workload, options.budget)?,
        ));
    }
    Ok(rows)
}

/// The DNS chains: both servers through unbound, and spamwall's own
/// cache on rbldnsd.
fn measure_dns(
    options: &Options,
    workload: &Workload,
    pin: &PinDir,
    unbound: SocketAddr,
    rbldnsd: SocketAddr,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for chain in [Chain::Unbound(unbound), Chain::OwnCache(rbldnsd)] {
        if options.runs("spamwall") {
            let server = Server::spamwall(chain, pin)?;
            let run = server.measure(workload, options.budget);
            drop(server);
            rows.push(Row::new(chain.label(), "spamwall", run?));
        }
        if options.runs("mtpolicyd") && matches!(chain, Chain::Unbound(_)) {
            let server = Server::mtpolicyd(chain)?;
            rows.push(Row::new(
                chain.label(),
                "mtpolicyd 2.05",
                server.measure(workload, options.budget)?,
            ));
        }
    }
    Ok(rows)
}

/// spamwall's instructions per answered request on the local chain, at
/// its default log level and without the engine's line per rejected
/// mail ([`WITHOUT_MAIL_LINES`]).
struct Instructions {
    default_level: f64,
    without_mail_lines: f64,
}

/// The default log level but for the policy engine, whose only line at
/// `info` is the one per rejected mail.
const WITHOUT_MAIL_LINES: &str = "info,spamwall::policy::engine=warn";

/// Counts [`Instructions`] with callgrind: for each log level, two
/// daemons under valgrind answer [`INSTRUCTION_RUNS`] requests per
/// connection after their start, and the difference between their
/// instruction totals, over the difference between their answered
/// requests, is the cost of one request: the start, the warm-up and the
/// stop cancel out. Every thread counts, the log writer's too. Unlike
/// time, the count does not move with the machine's load.
fn measure_instructions(
    options: &Options,
    workload: &Workload,
    pin: &PinDir,
) -> Result<Instructions> {
    bench::require_peer(
        "the instruction count",
        "valgrind",
        "apt-get install valgrind",
    );
    let runs = bench::size(INSTRUCTION_RUNS, [5, 15]);
    let per_request = |level: &str| -> Result<f64> {
        let mut counted = Vec::new();
        for requests in runs {
            eprintln!(
                "counting spamwall's instructions (SPAMWALL_LOG={level}, {requests} requests per connection) …"
            );
            let dir = tempfile::Builder::new()
                .prefix("spamwall-callgrind-")
                .tempdir()?;
            let out = dir.path().join("callgrind.out");
            let mut server = Server::spamwall_with(Chain::Local, pin, |spamwall| {
                let mut valgrind = Command::new("valgrind");
                valgrind
                    .args(["--tool=callgrind", "--quiet"])
                    .arg(format!("--callgrind-out-file={}", out.display()))
                    .arg(spamwall.get_program())
                    .args(spamwall.get_args());
                for (name, value) in spamwall.get_envs() {
                    match value {
                        Some(value) => valgrind.env(name, value),
                        None => valgrind.env_remove(name),
                    };
                }
                valgrind.env("SPAMWALL_LOG", level);
                valgrind
            })?;
            // Both runs start alike to the end: their starts cancel out.
            server.wait_logged("spamwall ready", CALLGRIND_TIMEOUT)?;
            let budget = Budget {
                duration: CALLGRIND_TIMEOUT,
                requests,
                ..options.budget
            };
            let (load, _) = server.measure(workload, budget)?;
            ensure!(
                load.requests == requests * CONNECTIONS,
                "spamwall under callgrind answered {} requests, not {}",
                load.requests,
                requests * CONNECTIONS
            );
            server.stop(CALLGRIND_TIMEOUT);
            counted.push((load.requests, callgrind_total(&out)?));
        }
        let [(fewer, less), (more, most)] = counted[..] else {
            bail!("callgrind ran {} times, not twice", counted.len());
        };
        ensure!(
            more > fewer,
            "both callgrind runs answered {fewer} requests"
        );
        #[expect(
            clippy::cast_precision_loss,
            reason = "instruction and request counts are far below 2^52"
        )]
        Ok(most.saturating_sub(less) as f64 / (more - fewer) as f64)
    };
    Ok(Instructions {
        default_level: per_request("info")?,
        without_mail_lines: per_request(WITHOUT_MAIL_LINES)?,
    })
}

/// The instruction total callgrind wrote into `out` (its `summary:` line).
fn callgrind_total(out: &Path) -> Result<u64> {
    let text = fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("summary:"))
        .with_context(|| format!("no summary line in {}", out.display()))?
        .trim()
        .parse()
        .with_context(|| format!("the summary line of {}", out.display()))
}

fn print_instructions(instructions: Option<&Instructions>) {
    let Some(counted) = instructions else {
        return;
    };
    println!(
        "local: spamwall's instructions per request (callgrind, every thread): {:.0} at its \
         default log level, {:.0} without the line per rejected mail (SPAMWALL_LOG={WITHOUT_MAIL_LINES})",
        counted.default_level, counted.without_mail_lines
    );
}

/// Fails unless every row measured something and every answer was right.
fn check_rows(rows: &[Row]) -> Result<()> {
    for row in rows {
        ensure!(
            row.load.requests > 0,
            "cannot measure {} ({}): no request was answered",
            row.server,
            row.setup
        );
        if let Some(example) = &row.load.first_wrong {
            bail!(
                "{} ({}) gave {} unexpected answers, e.g. {example}",
                row.server,
                row.setup,
                row.load.wrong
            );
        }
    }
    Ok(())
}

/// The round with the median throughput.
fn median(mut rounds: Vec<(Load, CpuTime)>) -> Option<(Load, CpuTime)> {
    if rounds.is_empty() {
        return None;
    }
    rounds.sort_by(|(a, _), (b, _)| a.throughput().total_cmp(&b.throughput()));
    let middle = rounds.len() / 2;
    Some(rounds.swap_remove(middle))
}

fn print_table(rows: &[Row]) {
    println!();
    if bench::smoke() {
        println!("smoke run: the figures mean nothing");
    }
    println!(
        "{:<10} {:<16} {:>9} {:>11} {:>10} {:>10} {:>7} {:>12} {:>12}",
        "setup", "server", "requests", "req/s", "p50", "p99", "wrong", "user/req", "kernel/req"
    );
    for row in rows {
        let cpu = row.cpu_per_request();
        println!(
            "{:<10} {:<16} {:>9} {:>11.0} {:>10} {:>10} {:>7} {:>12} {:>12}",
            row.setup,
            row.server,
            row.load.requests,
            row.load.throughput(),
            millis(row.load.percentile(50)),
            millis(row.load.percentile(99)),
            row.load.wrong,
            micros(cpu.user),
            micros(cpu.system)
        );
    }
    let row = |setup: &str, server: &str| {
        rows.iter()
            .find(|row| row.setup == setup && row.server.starts_with(server))
    };
    let find = |setup: &str, server: &str| row(setup, server).map(|row| &row.load);
    println!();
    if let (Some(spamwall), Some(floor)) = (row("local", "spamwall"), row("local", "floor")) {
        println!(
            "local: spamwall/floor {:.0}% (target >= {:.0}%), spamwall p99 {} (target <= {})",
            100.0 * spamwall.load.throughput() / floor.load.throughput(),
            100.0 * FLOOR_SHARE_TARGET,
            millis(spamwall.load.percentile(99)),
            millis(P99_TARGET)
        );
        let (spamwall, floor) = (spamwall.cpu_per_request(), floor.cpu_per_request());
        println!(
            "local: CPU per request, user space + kernel: spamwall {} + {}, the floor {} + {}",
            micros(spamwall.user),
            micros(spamwall.system),
            micros(floor.user),
            micros(floor.system),
        );
    }
    for (setup, against) in [
        ("local", "local"),
        ("unbound", "unbound"),
        ("own cache", "unbound"),
    ] {
        if let (Some(spamwall), Some(mtpolicyd)) =
            (find(setup, "spamwall"), find(against, "mtpolicyd"))
        {
            println!(
                "{setup}: spamwall/mtpolicyd ({against}) {:.1}x (target >= {MTPOLICYD_RATIO_TARGET:.0}x)",
                spamwall.throughput() / mtpolicyd.throughput()
            );
        }
    }
}

/// Command-line options (`cargo bench` adds `--bench`, which is ignored).
struct Options {
    budget: Budget,
    rounds: usize,
    /// `--only floor|spamwall|mtpolicyd`: measure one server.
    only: Option<String>,
    /// `--local`: only the local chain.
    local: bool,
}

impl Options {
    fn from_args() -> Result<Self> {
        // --smoke: a second of load at most, a few hundred requests.
        let mut options = Self {
            budget: Budget {
                duration: bench::size(DEFAULT_DURATION, Duration::from_secs(1)),
                requests: bench::size(DEFAULT_REQUESTS, 20),
                threads: DEFAULT_CLIENT_THREADS,
                chain_answers: true,
            },
            rounds: bench::size(DEFAULT_ROUNDS, 1),
            only: None,
            local: false,
        };
        let mut args = env::args().skip(1);
        let number = |args: &mut dyn Iterator<Item = String>, flag: &str| -> Result<usize> {
            args.next()
                .with_context(|| format!("{flag} needs a number"))?
                .parse()
                .with_context(|| format!("{flag} needs a whole number"))
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--duration" => {
                    let secs = number(&mut args, "--duration")?;
                    options.budget.duration = Duration::from_secs(secs as u64);
                }
                "--requests" => options.budget.requests = number(&mut args, "--requests")?,
                "--rounds" => options.rounds = number(&mut args, "--rounds")?,
                "--client-threads" => {
                    options.budget.threads = number(&mut args, "--client-threads")?;
                }
                "--local" => options.local = true,
                "--only" => {
                    let name = args
                        .next()
                        .context("--only needs floor, spamwall or mtpolicyd")?;
                    ensure!(
                        matches!(name.as_str(), "floor" | "spamwall" | "mtpolicyd"),
                        "--only takes floor, spamwall or mtpolicyd, not {name:?}"
                    );
                    options.only = Some(name);
                }
                _ => {}
            }
        }
        ensure!(options.budget.requests > 0, "--requests must be at least 1");
        ensure!(options.rounds > 0, "--rounds must be at least 1");
        ensure!(
            (1..=CONNECTIONS).contains(&options.budget.threads),
            "--client-threads takes 1 to {CONNECTIONS}"
        );
        Ok(options)
    }

    fn runs(&self, server: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == server)
    }
}

/// The client addresses, in a fixed pseudo-random order, with what each
/// should get.
struct Workload {
    clients: Vec<(Ipv4Addr, Expect)>,
    addresses: usize,
    rejected_addresses: usize,
}

impl Workload {
    fn new() -> Self {
        let clients = client::shuffled_clients(|addr| {
            let [a, b, c, host] = addr.octets();
            if [a, b, c] == [198, 51, 100] && host >= 16 {
                Expect::Reject
            } else {
                Expect::Dunno
            }
        });
        let rejected_addresses = clients
            .iter()
            .filter(|(_, expect)| *expect == Expect::Reject)
            .count();
        Self {
            addresses: clients.len(),
            rejected_addresses,
            clients,
        }
    }

    /// Writes request `n` of connection `conn` into `text`; returns what
    /// it should get.
    fn client(&self, conn: usize, n: usize) -> (Ipv4Addr, Expect) {
        client::client_of(&self.clients, conn, n)
    }

    fn write_request(&self, conn: usize, n: usize, text: &mut String) -> Expect {
        let (addr, expect) = self.client(conn, n);
        client::write_rcpt(text, addr, conn, n, "example.net");
        expect
    }
}

/// A duration in microseconds with two decimals.
fn micros(duration: Duration) -> String {
    format!("{:.2} µs", duration.as_secs_f64() * 1e6)
}

/// A duration in milliseconds with three decimals.
fn millis(duration: Duration) -> String {
    let mut text = String::new();
    write!(text, "{:.3} ms", duration.as_secs_f64() * 1000.0).expect("writing to a String");
    text
}
