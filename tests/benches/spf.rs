//! `cargo xtask bench spf`: spamwall's `spf` check against policyd-spf
//! (Debian's `postfix-policyd-spf-python`, on pyspf), both asking the
//! same Knot DNS on a loopback port, driven by the policy benchmark's
//! client: 16 keep-alive connections, RCPT requests as Postfix sends
//! them, two per mail, from 762 client addresses.
//!
//! The senders' domains (`d0.example.net` … `d49.example.net`) publish
//! `v=spf1 ip4:192.0.2.0/24 ip4:203.0.113.0/25 -all`: a third of the
//! clients fail, and a threshold rejects them (`fail = 10`). policyd-spf
//! runs as Postfix runs it, its only setup: `spawn(8)` gives each
//! connection its own process with the socket as standard input and
//! output (here the benchmark accepts and spawns), configured to check
//! MAIL FROM only (`HELO_reject = No_Check`, as spamwall checks HELO only
//! for bounces), reject on `fail`, no header and no debug logging. pyspf
//! caches nothing between requests; spamwall keeps answers for their TTL
//! (that is its setup). Every spamwall answer is checked; policyd-spf's
//! are checked to be one `action=` line, and before the runs a sample of
//! clients is asked of both and their verdicts compared.
//!
//! Options after `--`: `--duration SECS` (default 10), `--smoke`.
//! Needs root (the daemon's bpffs pins), knot and policyd-spf.

#[path = "policy/client.rs"]
#[allow(
    dead_code,
    reason = "shared by the policy benchmarks, each using part of it"
)]
mod client;
#[path = "policy/spamwall.rs"]
mod spamwall;

use std::{
    fmt::Write as _,
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::fd::OwnedFd,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use client::{Budget, CONNECTIONS, Expect};
use spamwall::Spamwall;
use spamwall_tests::{
    PinDir, bench,
    knot::{Knot, Zone},
};

const RATIO_TARGET: f64 = 20.0;
const DOMAINS: usize = 50;
const RECORD: &str = "v=spf1 ip4:192.0.2.0/24 ip4:203.0.113.0/25 -all";
/// Points the policyd-spf it runs at the benchmark's DNS server (pyspf's
/// pydns reads only `/etc/resolv.conf`, which has no port), then runs it
/// as `/usr/bin/policyd-spf CONFIG` would.
const SHIM: &str = r"
import sys
import DNS, spf
DNS.defaults['server'] = [sys.argv[1]]
DNS.defaults['port'] = int(sys.argv[2])
sys.argv = ['policyd-spf', sys.argv[3]]
from spf_engine.policyd_spf import main
sys.exit(main())
";
const POLICYD_SPF_CONF: &str = "debugLevel = 0\n\
    TestOnly = 1\n\
    HELO_reject = No_Check\n\
    Mail_From_reject = Fail\n\
    PermError_reject = False\n\
    TempError_Defer = False\n\
    Header_Type = None\n\
    skip_addresses = 127.0.0.0/8,::ffff:127.0.0.0/104,::1\n";

/// The client addresses in a fixed order, with what each should get.
struct Workload {
    clients: Vec<(Ipv4Addr, Expect)>,
}

impl Workload {
    fn new() -> Self {
        let clients = client::shuffled_clients(|addr| {
            let [a, b, c, host] = addr.octets();
            let pass = [a, b, c] == [192, 0, 2] || ([a, b, c] == [203, 0, 113] && host < 128);
            if pass { Expect::Dunno } else { Expect::Reject }
        });
        Self { clients }
    }

    /// Writes request `n` of connection `conn` into `text`, the sender in
    /// one of [`DOMAINS`] domains; returns what it should get.
    fn client(&self, conn: usize, n: usize) -> (Ipv4Addr, Expect) {
        client::client_of(&self.clients, conn, n)
    }

    fn write_request(&self, conn: usize, n: usize, text: &mut String) -> Expect {
        let (addr, expect) = self.client(conn, n);
        client::write_rcpt(
            text,
            addr,
            conn,
            n,
            format_args!("d{}.example.net", (n / 2) % DOMAINS),
        );
        expect
    }
}

fn main() -> Result<()> {
    bench::require_root("spf bench");
    bench::require_peer(
        "Knot DNS",
        "knotd",
        "apt-get install knot; cargo xtask setup",
    );
    bench::require_peer(
        "policyd-spf",
        "policyd-spf",
        "apt-get install postfix-policyd-spf-python; cargo xtask setup",
    );
    let duration = std::env::args()
        .skip_while(|arg| arg != "--duration")
        .nth(1)
        .map(|secs| secs.parse::<u64>().context("--duration SECS"))
        .transpose()?
        .map_or(
            bench::size(Duration::from_secs(10), Duration::from_secs(1)),
            Duration::from_secs,
        );
    let budget = Budget {
        duration,
        requests: bench::size(10_000_000, 200),
        threads: 2,
        chain_answers: true,
    };
    let mut records = String::new();
    for d in 0..DOMAINS {
        let _ = writeln!(records, "d{d} TXT \"{RECORD}\"");
    }
    let knot = Knot::start(
        &[Zone {
            name: "example.net",
            records: &records,
        }],
        300,
    );
    let workload = Workload::new();
    println!(
        "spf bench: {CONNECTIONS} keep-alive connections, {} client addresses, {DOMAINS} sender \
         domains on one Knot DNS, {}s per run",
        workload.clients.len(),
        duration.as_secs()
    );
    let pin = PinDir::new();
    let spamwall = Spamwall::start(
        &format!(
            "resolver = \"{}\"\n\n\
             [[policy.check]]\nname = \"spf\"\ntype = \"spf\"\nscores = {{ fail = 10 }}\n\n\
             [[policy.threshold]]\nscore = 10\naction = \"reject sender ip %IP% failed SPF (%DETAIL%)\"\n",
            knot.addr()
        ),
        &pin,
    )?;
    let policyd = PolicydSpf::start(knot.addr())?;
    compare_verdicts(&workload, spamwall.addr, policyd.addr)?;

    eprintln!("measuring spamwall on {} …", spamwall.addr);
    let ours = client::measure(spamwall.addr, &workload, budget)
        .with_context(|| format!("spamwall failed; log:\n{}", spamwall.log()))?;
    eprintln!("measuring policyd-spf on {} …", policyd.addr);
    let theirs = client::measure(
        policyd.addr,
        &workload,
        Budget {
            chain_answers: false,
            ..budget
        },
    )
    .context("policyd-spf failed")?;
    drop(policyd);
    drop(spamwall);
    spamwall::report("policyd-spf", &ours, &theirs, RATIO_TARGET)
}

/// Asks both servers about one mail of each of a sample of clients, on a
/// fresh connection each, and requires the same verdict: rejected by
/// spamwall exactly when policyd-spf answers 550.
fn compare_verdicts(workload: &Workload, spamwall: SocketAddr, policyd: SocketAddr) -> Result<()> {
    let samples = bench::size(20, 5);
    for conn in 0..samples {
        let mut request = String::new();
        let expect = workload.write_request(conn, 2 * conn, &mut request);
        let ours = spamwall::ask(spamwall, &request)?;
        let theirs = spamwall::ask(policyd, &request)?;
        let ours_rejects = ours.starts_with("action=reject sender ip");
        let theirs_rejects = theirs.starts_with("action=550");
        ensure!(
            ours_rejects == theirs_rejects && ours_rejects == (expect == Expect::Reject),
            "verdicts differ for {:?}: spamwall {ours:?}, policyd-spf {theirs:?}",
            workload.client(conn, 2 * conn).0
        );
    }
    Ok(())
}

/// policyd-spf as Postfix's `spawn(8)` runs it: one process per
/// connection, the connection as its standard input and output.
struct PolicydSpf {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    children: Arc<Mutex<Vec<Child>>>,
    acceptor: Option<thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl PolicydSpf {
    fn start(dns: SocketAddr) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("policyd-spf-bench-")
            .tempdir()?;
        let conf = dir.path().join("policyd-spf.conf");
        fs::write(&conf, POLICYD_SPF_CONF)?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let children = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (stop, children) = (Arc::clone(&stop), Arc::clone(&children));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((stream, _)) = listener.accept() else {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let _ = stream.set_nonblocking(false);
                    let Ok(output) = stream.try_clone() else {
                        continue;
                    };
                    let child = Command::new("/usr/bin/python3")
                        .args(["-c", SHIM, &dns.ip().to_string(), &dns.port().to_string()])
                        .arg(&conf)
                        .stdin(Stdio::from(OwnedFd::from(stream)))
                        .stdout(Stdio::from(OwnedFd::from(output)))
                        .stderr(Stdio::null())
                        .spawn();
                    if let Ok(child) = child {
                        children
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(child);
                    }
                }
            })
        };
        Ok(Self {
            addr,
            stop,
            children,
            acceptor: Some(acceptor),
            _dir: dir,
        })
    }
}

impl Drop for PolicydSpf {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let children = std::mem::take(
            &mut *self
                .children
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
