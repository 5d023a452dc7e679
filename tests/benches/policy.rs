//! Policy-server throughput and latency: spamwall against mtpolicyd 2.05
//! (Debian's package), same load, same chain, same DNS, in one run.
//!
//! `cargo xtask bench policy` (root: `spamwall run` loads its XDP program
//! and pins maps even with no interface). Options after `--`:
//! `--duration SECS` (measured time per server, default 10),
//! `--requests N` (cap per connection, default 100,000),
//! `--only spamwall|mtpolicyd` and `--smoke` (at most a second and 20
//! requests per connection). Without mtpolicyd, or when a server answers
//! nothing, the benchmark fails.
//!
//! Load: [`CONNECTIONS`] keep-alive TCP connections on loopback, one
//! thread each, sending `request=smtpd_access_policy` RCPT requests as
//! Postfix does (two RCPTs per mail, one `instance` per mail) from a fixed
//! mix of client addresses, waiting for each answer before the next
//! request. Every answer is checked against the expected action.
//!
//! Chain, identical on both servers: an allow list (`192.0.2.0/26`,
//! `198.51.100.0/28`), two DNSBLs on one local rbldnsd (`bl1.test`: all of
//! `198.51.100.0/24` and `203.0.113.0/25`; `bl2.test`: `198.51.100.0/24`),
//! 5 points each, and a reject at 10. So `198.51.100.16`–`.255` are
//! rejected; everything else gets DUNNO. spamwall caches DNS answers for
//! their TTL (rbldnsd's 60 s) as it would in production; mtpolicyd without
//! a session cache looks each request up again, as it would too.
//!
//! mtpolicyd runs in the foreground (`-f`) with a generated config in a
//! temporary directory: a `<VirtualHost>` with a `Condition` plugin on
//! `client_address` (a regex; `RegexList` would need `File::Slurp`, which
//! the package does not pull in) answering `dunno`, two `RBL` plugins in
//! passive mode with a score, and `ScoreAction` with the reject template.
//! No `<SessionCache>` (the built-in "None" cache: no memcached), no
//! per-request log (`log_level=0`), 20 preforked children so each
//! connection has one. Its RBL plugin resolves through `Net::DNS`, which
//! reads `RES_NAMESERVERS` and `RES_OPTIONS` from the environment after
//! `/etc/resolv.conf`: `RES_NAMESERVERS=127.0.0.1 RES_OPTIONS=port:PORT`
//! points it at rbldnsd without touching the system resolver.
//!
//! Everything started is stopped by pid (SIGTERM, then SIGKILL to its
//! process group) and spamwall's pins are purged on exit, also on error.

use std::{
    env,
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Barrier,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use spamwall_tests::{
    PinDir, bench,
    daemon::spamwall_bin,
    postfix::stop_group_leader,
    rbldnsd::{Rbldnsd, Zone},
};

/// Keep-alive connections, as many Postfix smtpd processes.
const CONNECTIONS: usize = 16;
/// Unmeasured requests per connection before the clock starts: DNS
/// caches, preforked children and allocators warm up.
const WARMUP_REQUESTS: usize = 20;
/// Default cap on measured requests per connection.
const DEFAULT_REQUESTS: usize = 100_000;
/// Default measured time per server.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// How long one answer may take before the run fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to accept connections after its start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

const REJECT_TEMPLATE: &str = "reject sender ip %IP% is blocked (score=%SCORE%";
const BL1: &str = ":127.0.0.2:listed in bl1\n198.51.100.0/24\n203.0.113.0/25\n";
const BL2: &str = ":127.0.0.2:listed in bl2\n198.51.100.0/24\n";
const ALLOW: [&str; 2] = ["192.0.2.0/26", "198.51.100.0/28"];
/// [`ALLOW`] as one regex, for mtpolicyd's `Condition` plugin.
const ALLOW_REGEX: &str = r"^(192\.0\.2\.([0-9]|[1-5][0-9]|6[0-3])|198\.51\.100\.([0-9]|1[0-5]))$";

fn main() -> Result<()> {
    bench::require_root("policy bench");
    let options = Options::from_args()?;
    if options.runs("mtpolicyd") {
        bench::require_peer(
            "mtpolicyd",
            "mtpolicyd",
            "apt-get install mtpolicyd; cargo xtask setup installs it",
        );
    }
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
    println!(
        "policy bench: {CONNECTIONS} keep-alive connections, {} client addresses \
         ({} rejected), at most {}s and {} requests per connection per server",
        workload.addresses,
        workload.rejected_addresses,
        options.duration.as_secs(),
        options.requests
    );

    let mut results: Vec<(&str, Load)> = Vec::new();
    if options.runs("spamwall") {
        let pin = PinDir::new();
        let server = Server::spamwall(rbldnsd.addr(), &pin)?;
        let result = measure(&server, &workload, &options);
        // The daemon goes before its pins.
        drop(server);
        drop(pin);
        results.push(("spamwall", result?));
    }
    if options.runs("mtpolicyd") {
        let server = Server::mtpolicyd(rbldnsd.addr())?;
        results.push(("mtpolicyd 2.05", measure(&server, &workload, &options)?));
    }
    drop(rbldnsd);

    println!();
    if bench::smoke() {
        println!("smoke run: the figures mean nothing");
    }
    println!(
        "{:<16} {:>9} {:>11} {:>10} {:>10} {:>7}",
        "server", "requests", "req/s", "p50", "p99", "wrong"
    );
    for (name, load) in &results {
        println!(
            "{name:<16} {:>9} {:>11.0} {:>10} {:>10} {:>7}",
            load.requests,
            load.throughput(),
            millis(load.percentile(50)),
            millis(load.percentile(99)),
            load.wrong
        );
    }
    if let [(_, spamwall), (_, mtpolicyd)] = results.as_slice() {
        let ratio = spamwall.throughput() / mtpolicyd.throughput();
        println!();
        println!("throughput ratio spamwall/mtpolicyd: {ratio:.1}x (target >= 20x)");
        println!(
            "spamwall p99: {} (target <= 2 ms)",
            millis(spamwall.percentile(99))
        );
    }
    for (name, load) in &results {
        ensure!(
            load.requests > 0,
            "cannot measure {name}: no request was answered"
        );
        if let Some(example) = &load.first_wrong {
            bail!(
                "{name} gave {} unexpected answers, e.g. {example}",
                load.wrong
            );
        }
    }
    Ok(())
}

/// Command-line options (`cargo bench` adds `--bench`, which is ignored).
struct Options {
    duration: Duration,
    requests: usize,
    /// `--only spamwall|mtpolicyd`: measure one server.
    only: Option<String>,
}

impl Options {
    fn from_args() -> Result<Self> {
        // --smoke: a second of load at most, a few hundred requests.
        let mut options = Self {
            duration: bench::size(DEFAULT_DURATION, Duration::from_secs(1)),
            requests: bench::size(DEFAULT_REQUESTS, 20),
            only: None,
        };
        let mut args = env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--duration" => {
                    let secs: u64 = args
                        .next()
                        .context("--duration needs seconds")?
                        .parse()
                        .context("--duration needs whole seconds")?;
                    options.duration = Duration::from_secs(secs);
                }
                "--requests" => {
                    options.requests = args
                        .next()
                        .context("--requests needs a number")?
                        .parse()
                        .context("--requests needs a number")?;
                }
                "--only" => {
                    let name = args.next().context("--only needs spamwall or mtpolicyd")?;
                    ensure!(
                        matches!(name.as_str(), "spamwall" | "mtpolicyd"),
                        "--only takes spamwall or mtpolicyd, not {name:?}"
                    );
                    options.only = Some(name);
                }
                _ => {}
            }
        }
        ensure!(options.requests > 0, "--requests must be at least 1");
        Ok(options)
    }

    fn runs(&self, server: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == server)
    }
}

/// What a request should get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Reject,
    Dunno,
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
        let mut clients = Vec::new();
        for net in [[192, 0, 2], [198, 51, 100], [203, 0, 113]] {
            for host in 1..=254_u8 {
                let addr = Ipv4Addr::new(net[0], net[1], net[2], host);
                let expect = if net == [198, 51, 100] && host >= 16 {
                    Expect::Reject
                } else {
                    Expect::Dunno
                };
                clients.push((addr, expect));
            }
        }
        // A fixed shuffle (LCG), so runs are comparable.
        let mut state: u64 = 0x5eed;
        for i in (1..clients.len()).rev() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let j = usize::try_from(state >> 33).expect("31 bits fit usize") % (i + 1);
            clients.swap(i, j);
        }
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

    /// The client of request `n` on connection `conn`.
    fn client(&self, conn: usize, n: usize) -> (Ipv4Addr, Expect) {
        self.clients[(conn * 97 + n / 2) % self.clients.len()]
    }

    /// Request `n` of connection `conn`: mail `n / 2`, RCPT `n % 2`.
    fn request(&self, conn: usize, n: usize) -> (String, Expect) {
        let mail = n / 2;
        let (addr, expect) = self.client(conn, n);
        let text = format!(
            "request=smtpd_access_policy\n\
             protocol_state=RCPT\n\
             protocol_name=ESMTP\n\
             client_address={addr}\n\
             client_name=unknown\n\
             reverse_client_name=unknown\n\
             client_port={port}\n\
             helo_name=mail{mail}.example.net\n\
             sender=sender{mail}@example.net\n\
             recipient=user{rcpt}@example.test\n\
             recipient_count={rcpt}\n\
             queue_id=\n\
             instance={conn:x}.{mail:x}.bench\n\
             size=0\n\
             server_address=127.0.0.1\n\
             server_port=25\n\
             stress=\n\
             \n",
            port = 40_000 + mail % 20_000,
            rcpt = n % 2,
        );
        (text, expect)
    }
}

/// A policy server under test, stopped by pid on drop.
struct Server {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
    /// Kept until the server is gone: its config and log live here.
    _dir: tempfile::TempDir,
}

impl Server {
    /// `spamwall run` with only the policy server: no interface, pins in
    /// `pin`, the chain on `resolver`.
    fn spamwall(resolver: SocketAddr, pin: &PinDir) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("spamwall-bench-")
            .tempdir()?;
        let addr = free_port()?;
        let quote = |path: &Path| format!("{:?}", path.to_str().unwrap_or_default());
        let allow = ALLOW.map(|net| format!("{net:?}")).join(", ");
        let config = format!(
            "[daemon]\n\
             control_socket = {socket}\n\
             state_dir = {state}\n\
             bpf_pin_dir = {pin}\n\n\
             [xdp]\n\
             interfaces = []\n\n\
             [policy]\n\
             listen = [\"{addr}\"]\n\
             resolver = \"{resolver}\"\n\n\
             [[policy.check]]\n\
             name = \"allow\"\n\
             type = \"list\"\n\
             allow = true\n\
             action = \"DUNNO\"\n\
             client = [{allow}]\n\n\
             [[policy.check]]\n\
             name = \"bl1\"\n\
             type = \"dnsbl\"\n\
             zone = \"bl1.test\"\n\
             score = 5\n\n\
             [[policy.check]]\n\
             name = \"bl2\"\n\
             type = \"dnsbl\"\n\
             zone = \"bl2.test\"\n\
             score = 5\n\n\
             [[policy.threshold]]\n\
             score = 10\n\
             action = \"{REJECT_TEMPLATE}, %DETAIL%)\"\n",
            socket = quote(&dir.path().join("control.sock")),
            state = quote(&dir.path().join("state")),
            pin = quote(pin.path()),
        );
        let path = dir.path().join("spamwall.toml");
        fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        let mut command = Command::new(spamwall_bin());
        command
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env_remove("SPAMWALL_CONFIG");
        Self::spawn("spamwall", command, addr, dir)
    }

    /// mtpolicyd in the foreground with the equivalent chain (see the
    /// module documentation).
    fn mtpolicyd(resolver: SocketAddr) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mtpolicyd-bench-")
            .tempdir()?;
        let addr = free_port()?;
        let port = addr.port();
        let config = format!(
            "# Generated by spamwall's policy bench.\n\
             user=root\n\
             group=root\n\
             pid_file=\"{pid}\"\n\
             log_level=0\n\
             port=\"{addr}\"\n\
             min_servers=20\n\
             min_spare_servers=2\n\
             max_spare_servers=24\n\
             max_servers=25\n\
             max_requests=100000\n\
             keepalive_timeout=0\n\
             max_keepalive=0\n\
             request_timeout=20\n\
             <VirtualHost {port}>\n\
             \x20 name=\"bench\"\n\
             \x20 <Plugin allow>\n\
             \x20   module = \"Condition\"\n\
             \x20   key = \"client_address\"\n\
             \x20   re_match = \"{ALLOW_REGEX}\"\n\
             \x20   action = \"dunno\"\n\
             \x20 </Plugin>\n\
             \x20 <Plugin bl1>\n\
             \x20   module = \"RBL\"\n\
             \x20   mode = \"passive\"\n\
             \x20   domain = \"bl1.test\"\n\
             \x20   score = 5\n\
             \x20 </Plugin>\n\
             \x20 <Plugin bl2>\n\
             \x20   module = \"RBL\"\n\
             \x20   mode = \"passive\"\n\
             \x20   domain = \"bl2.test\"\n\
             \x20   score = 5\n\
             \x20 </Plugin>\n\
             \x20 <Plugin reject>\n\
             \x20   module = \"ScoreAction\"\n\
             \x20   threshold = 10\n\
             \x20   action = \"{REJECT_TEMPLATE}%SCORE_DETAIL%)\"\n\
             \x20 </Plugin>\n\
             </VirtualHost>\n",
            pid = dir.path().join("mtpolicyd.pid").display(),
        );
        let path = dir.path().join("mtpolicyd.conf");
        fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        let mut command = Command::new("mtpolicyd");
        command
            .arg("-c")
            .arg(&path)
            .arg("-f")
            .env("RES_NAMESERVERS", resolver.ip().to_string())
            .env("RES_OPTIONS", format!("port:{}", resolver.port()));
        Self::spawn("mtpolicyd", command, addr, dir)
    }

    /// Starts `command` in its own process group, logging into `dir`, and
    /// waits (bounded) until `addr` accepts connections.
    fn spawn(
        name: &'static str,
        mut command: Command,
        addr: SocketAddr,
        dir: tempfile::TempDir,
    ) -> Result<Self> {
        let log = dir.path().join(format!("{name}.log"));
        let out = fs::File::create(&log)?;
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} ({command:?})"))?;
        let mut server = Self {
            name,
            addr,
            child,
            log,
            _dir: dir,
        };
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("{name} exited with {status}; log:\n{}", server.log());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "{name} did not accept on {addr} within {START_TIMEOUT:?}; log:\n{}",
                    server.log()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM; mtpolicyd's parent stops its preforked children. Then
        // SIGKILL to the process group for anything left.
        stop_group_leader(&mut self.child, STOP_TIMEOUT);
    }
}

/// A loopback address with a TCP port that was free a moment ago.
fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The outcome of one load run.
struct Load {
    requests: usize,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    wrong: usize,
    first_wrong: Option<String>,
}

impl Load {
    #[expect(
        clippy::cast_precision_loss,
        reason = "request counts are far below 2^52"
    )]
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: usize) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (self.latencies.len() * p).div_ceil(100).max(1);
        self.latencies[rank - 1]
    }
}

/// One connection's share of a run.
struct ConnectionLoad {
    latencies: Vec<Duration>,
    wrong: usize,
    first_wrong: Option<String>,
}

/// Runs the load against `server` and checks every answer.
fn measure(server: &Server, workload: &Workload, options: &Options) -> Result<Load> {
    eprintln!("measuring {} on {} …", server.name, server.addr);
    let barrier = Barrier::new(CONNECTIONS + 1);
    let (elapsed, results) = thread::scope(|scope| {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|conn| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let warmed = Connection::open(server.addr, conn).and_then(|mut connection| {
                        for n in 0..WARMUP_REQUESTS {
                            connection.ask(workload, n)?;
                        }
                        Ok(connection)
                    });
                    // Everyone passes the barrier once, even after an error.
                    barrier.wait();
                    warmed.and_then(|mut connection| connection.run(workload, options))
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let results: Vec<Result<ConnectionLoad>> = workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a load thread panicked")))
            })
            .collect();
        (started.elapsed(), results)
    });
    let mut total = Load {
        requests: 0,
        elapsed,
        latencies: Vec::new(),
        wrong: 0,
        first_wrong: None,
    };
    for result in results {
        let connection =
            result.with_context(|| format!("{} failed; log:\n{}", server.name, server.log()))?;
        total.requests += connection.latencies.len();
        total.latencies.extend(connection.latencies);
        total.wrong += connection.wrong;
        total.first_wrong = total.first_wrong.or(connection.first_wrong);
    }
    total.latencies.sort_unstable();
    Ok(total)
}

/// One keep-alive connection, as one Postfix smtpd process holds.
struct Connection {
    conn: usize,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    answer: String,
}

impl Connection {
    fn open(addr: SocketAddr, conn: usize) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, ANSWER_TIMEOUT)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Self {
            conn,
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            answer: String::new(),
        })
    }

    /// Sends request `n` and reads its answer; returns what was expected
    /// and the `action=…` line.
    fn ask(&mut self, workload: &Workload, n: usize) -> Result<(Expect, &str)> {
        let conn = self.conn;
        let (request, expect) = workload.request(conn, n);
        self.writer.write_all(request.as_bytes())?;
        self.answer.clear();
        // One `action=…` line, then the empty line.
        for _ in 0..2 {
            let read = self
                .reader
                .read_line(&mut self.answer)
                .with_context(|| format!("connection {conn}: reading answer {n}"))?;
            ensure!(
                read > 0,
                "connection {conn}: closed by the server at request {n} (answer so far {:?})",
                self.answer
            );
        }
        ensure!(
            self.answer.ends_with("\n\n"),
            "connection {conn}: request {n}: malformed answer {:?}",
            self.answer
        );
        Ok((expect, self.answer.trim_end()))
    }

    /// Measured requests until the count or the time is up.
    fn run(&mut self, workload: &Workload, options: &Options) -> Result<ConnectionLoad> {
        let started = Instant::now();
        let mut load = ConnectionLoad {
            latencies: Vec::with_capacity(options.requests.min(1 << 20)),
            wrong: 0,
            first_wrong: None,
        };
        let conn = self.conn;
        let mut n = WARMUP_REQUESTS;
        while load.latencies.len() < options.requests && started.elapsed() < options.duration {
            let sent = Instant::now();
            let (expect, action) = self.ask(workload, n)?;
            let elapsed = sent.elapsed();
            if !answer_matches(action, expect) {
                load.wrong += 1;
                if load.first_wrong.is_none() {
                    let (addr, _) = workload.client(conn, n);
                    load.first_wrong = Some(format!("{addr}: expected {expect:?}, got {action:?}"));
                }
            }
            load.latencies.push(elapsed);
            n += 1;
        }
        Ok(load)
    }
}

fn answer_matches(action: &str, expect: Expect) -> bool {
    let action = action.to_ascii_lowercase();
    match expect {
        Expect::Reject => action.starts_with("action=reject sender ip"),
        Expect::Dunno => action == "action=dunno",
    }
}

/// A duration in milliseconds with three decimals.
fn millis(duration: Duration) -> String {
    let mut text = String::new();
    write!(text, "{:.3} ms", duration.as_secs_f64() * 1000.0).expect("writing to a String");
    text
}
