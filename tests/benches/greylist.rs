//! `cargo xtask bench greylist`: spamwall's greylisting against postgrey
//! (Debian's package), driven by the policy benchmark's client: 16
//! keep-alive connections, RCPT requests as Postfix sends them, two per
//! mail, from 762 client addresses.
//!
//! Both greylist every mail with a 1 s delay, by host (`v4_prefix = 32`,
//! postgrey `--lookup-by-host`) and without auto-allowing clients
//! (`auto_allow = 0`, `--auto-whitelist-clients=0`), so both do the same
//! work on every request: half the mails come from one-off senders (a
//! new triplet, deferred), half from a pool of 50 list senders whose
//! triplets come back and pass once their delay is over. postgrey runs
//! as its package runs it (one process, its Berkeley DB in a directory
//! of its own, empty whitelist files so that no regex is tried); its
//! database and spamwall's store are on the same file system. Before the
//! runs both are asked about a new triplet, which both must defer, and
//! again after the delay, which both must pass.
//!
//! Options after `--`: `--duration SECS` (default 10), `--smoke`.
//! Needs root (the daemon's bpffs pins) and postgrey.

#[path = "policy/client.rs"]
#[allow(
    dead_code,
    reason = "shared by the policy benchmarks, each using part of it"
)]
mod client;
#[path = "policy/spamwall.rs"]
mod spamwall;

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use client::{Budget, Expect};
use spamwall::Spamwall;
use spamwall_tests::{PinDir, bench, postfix::stop_group_leader};

const RATIO_TARGET: f64 = 20.0;
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Both servers' greylisting delay.
const DELAY: Duration = Duration::from_secs(1);
/// List senders whose triplets come back.
const SENDERS: usize = 50;

/// The client addresses in a fixed order.
struct Workload {
    clients: Vec<(Ipv4Addr, Expect)>,
}

impl Workload {
    fn new() -> Self {
        Self {
            clients: client::shuffled_clients(|_| Expect::Retry),
        }
    }

    fn client(&self, conn: usize, n: usize) -> (Ipv4Addr, Expect) {
        client::client_of(&self.clients, conn, n)
    }

    /// Writes request `n` of connection `conn`: even mails from a list
    /// sender (a triplet that comes back), odd ones from a one-off sender
    /// (a new triplet, always deferred).
    fn write_request(&self, conn: usize, n: usize, text: &mut String) -> Expect {
        let (addr, _) = self.client(conn, n);
        let mail = n / 2;
        if mail.is_multiple_of(2) {
            let list = (mail / 2) % SENDERS;
            client::write_rcpt_from(
                text,
                addr,
                conn,
                n,
                format_args!("news@list{list}.example.net"),
            );
            Expect::Retry
        } else {
            client::write_rcpt_from(
                text,
                addr,
                conn,
                n,
                format_args!("bot{mail}x{conn}@spam.example.org"),
            );
            Expect::Defer
        }
    }
}

fn main() -> Result<()> {
    bench::require_root("greylist bench");
    bench::require_peer(
        "postgrey",
        "postgrey",
        "apt-get install postgrey; cargo xtask setup",
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
    let workload = Workload::new();
    println!(
        "greylist bench: {} keep-alive connections, {} client addresses, delay {}s, \
         by host, no auto-allow, {}s per run",
        client::CONNECTIONS,
        workload.clients.len(),
        DELAY.as_secs(),
        duration.as_secs()
    );
    let pin = PinDir::new();
    let spamwall = Spamwall::start(
        &format!(
            "[[policy.threshold]]\nscore = 0\naction = \"greylist\"\n\n\
             [policy.greylist]\ndelay = \"{}s\"\nv4_prefix = 32\nauto_allow = 0\n\
             action = \"DEFER_IF_PERMIT greylisted, retry in %DELAY%\"\n",
            DELAY.as_secs()
        ),
        &pin,
    )?;
    let postgrey = Postgrey::start()?;
    compare_verdicts(spamwall.addr, postgrey.addr)
        .with_context(|| format!("postgrey log:\n{}", postgrey.log()))?;

    eprintln!("measuring spamwall on {} …", spamwall.addr);
    let ours = client::measure(spamwall.addr, &workload, budget)
        .with_context(|| format!("spamwall failed; log:\n{}", spamwall.log()))?;
    eprintln!("measuring postgrey on {} …", postgrey.addr);
    let theirs = client::measure(
        postgrey.addr,
        &workload,
        Budget {
            chain_answers: false,
            ..budget
        },
    )
    .with_context(|| format!("postgrey failed; log:\n{}", postgrey.log()))?;
    drop(postgrey);
    drop(spamwall);
    spamwall::report("postgrey", &ours, &theirs, RATIO_TARGET)
}

/// A new triplet must be deferred by both, and pass both after the delay.
fn compare_verdicts(spamwall: SocketAddr, postgrey: SocketAddr) -> Result<()> {
    let workload = Workload::new();
    let mut request = String::new();
    // Mail 0 of a connection the load does not use: a list sender.
    workload.write_request(1000, 0, &mut request);
    for (name, addr) in [("spamwall", spamwall), ("postgrey", postgrey)] {
        let answer = spamwall::ask(addr, &request)?;
        ensure!(
            answer
                .to_ascii_lowercase()
                .starts_with("action=defer_if_permit"),
            "{name} did not defer a new triplet: {answer:?}"
        );
    }
    thread::sleep(DELAY + Duration::from_millis(1100));
    for (name, addr) in [("spamwall", spamwall), ("postgrey", postgrey)] {
        let answer = spamwall::ask(addr, &request)?;
        let lower = answer.to_ascii_lowercase();
        ensure!(
            lower == "action=dunno" || lower.starts_with("action=prepend x-greylist"),
            "{name} did not pass the retry after the delay: {answer:?}"
        );
    }
    Ok(())
}

/// postgrey in the foreground on a loopback port, its database in a
/// directory of its own.
struct Postgrey {
    addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Postgrey {
    fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("postgrey-bench-")
            .tempdir()?;
        let db = dir.path().join("db");
        fs::create_dir(&db)?;
        // postgrey drops to its own user, which must own its database.
        let status = Command::new("chown")
            .args(["postgrey:postgrey"])
            .arg(&db)
            .status()?;
        ensure!(
            status.success(),
            "chown postgrey {}: {status}",
            db.display()
        );
        let clients = dir.path().join("whitelist_clients");
        let recipients = dir.path().join("whitelist_recipients");
        fs::write(&clients, "")?;
        fs::write(&recipients, "")?;
        let addr = spamwall_tests::ports::free_tcp();
        let log = fs::File::create(dir.path().join("postgrey.log"))?;
        let child = Command::new("postgrey")
            .arg(format!("--inet={addr}"))
            .arg(format!("--dbdir={}", db.display()))
            .arg(format!("--delay={}", DELAY.as_secs()))
            .args(["--lookup-by-host", "--auto-whitelist-clients=0"])
            .arg(format!("--whitelist-clients={}", clients.display()))
            .arg(format!("--whitelist-recipients={}", recipients.display()))
            .arg(format!(
                "--pidfile={}",
                dir.path().join("postgrey.pid").display()
            ))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting postgrey")?;
        let mut server = Self { addr, child, dir };
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("postgrey exited with {status}; log:\n{}", server.log());
            }
            ensure!(
                started.elapsed() < START_TIMEOUT,
                "postgrey did not listen; log:\n{}",
                server.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("postgrey.log")).unwrap_or_default()
    }
}

impl Drop for Postgrey {
    fn drop(&mut self) {
        stop_group_leader(&mut self.child, STOP_TIMEOUT);
    }
}
