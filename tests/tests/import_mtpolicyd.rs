//! `spamwall import mtpolicyd` against mtpolicyd itself: the real
//! mtpolicyd 2.05 (Debian's package) with a configuration, and the real
//! `spamwall run` with its import, answer the same policy requests with
//! the same kind of answer (accept: `DUNNO`, `OK`, `PREPEND`; defer:
//! `DEFER…`, `4NN`; reject: `REJECT`, `5NN`).
//!
//! Configurations: Debian's `/etc/mtpolicyd/mtpolicyd.conf` (its ports,
//! user and paths moved into a temporary directory, nothing else changed)
//! and the fixtures in `tests/fixtures/mtpolicyd`. Both servers ask one
//! rbldnsd on loopback for every DNS name: mtpolicyd through
//! `RES_NAMESERVERS`/`RES_OPTIONS` (read by `Net::DNS`, which its RBL,
//! DBL and SPF plugins use), spamwall through `policy.resolver`. Nothing
//! leaves loopback. mtpolicyd's greylisting tickets live in a memcached of
//! the test's own, its auto-whitelist in `SQLite` in the temporary
//! directory, and its `Fail2Ban` plugin bans through a real
//! `fail2ban-server` of the test's own, whose jail the test reads.
//!
//! Greylisting is compared on the first attempt, an early retry and a
//! retry after the delay. mtpolicyd 2.05 always waits 300 s (it never
//! hands `min_retry_wait` to its ticket backend), so its ticket is aged
//! in memcached instead of waiting, and spamwall's imported `delay` is
//! cut to 2 s.
//!
//! Needs root (`spamwall run` pins its BPF maps), mtpolicyd, memcached,
//! rbldnsd, fail2ban, geoip-database and the binary:
//! `cargo build --release -p policy-daemon && CI=true cargo test --release
//! -p spamwall-tests --test import_mtpolicyd -- --test-threads=1`.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use spamwall::policy::{ListenAddr, client};
use spamwall_tests::{
    PinDir,
    daemon::{spamwall, spamwall_bin},
    fail2ban::{Fail2banServer, JAIL},
    ports::free_tcp,
    postfix::stop_group_leader,
    rbldnsd::{Rbldnsd, Zone},
    require_root,
    skip::require,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/mtpolicyd");
const DEBIAN_CONF: &str = "/etc/mtpolicyd/mtpolicyd.conf";
/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one answer may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// spamwall's greylisting delay in the test.
const DELAY: Duration = Duration::from_secs(2);

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// A process started by the test, in its own process group, logging to a
/// file; stopped by pid on drop.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> Self {
        let out = fs::File::create(&log).expect("log file");
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({command:?}): {e}"));
        Self { name, child, log }
    }

    /// Waits until `addr` accepts TCP connections.
    fn wait_accepting(&mut self, addr: SocketAddr) {
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status}:\n{}", self.name, self.log());
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "{} did not accept on {addr} within {START_TIMEOUT:?}:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        stop_group_leader(&mut self.child, Duration::from_secs(5));
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The DNS data both servers see.
fn zones() -> Vec<Zone<'static>> {
    let list = |name, data| Zone {
        name,
        kind: "ip4set",
        data,
    };
    vec![
        // Fixtures.
        list(
            "zen.test",
            ":127.0.0.2:SBL\n198.51.100.2\n198.51.100.3\n198.51.100.4 :127.0.0.4:XBL\n203.0.113.7 :127.0.0.4:XBL\n",
        ),
        list(
            "bl2.test",
            ":127.0.0.2:bl2\n198.51.100.2\n198.51.100.4\n198.51.100.5\n203.0.113.7\n",
        ),
        Zone {
            name: "dbl.test",
            kind: "dnset",
            data: ":127.0.1.2:spam domain\nspam.test\n",
        },
        list(
            "bl.test",
            ":127.0.0.2:bl\n192.0.2.20\n192.0.2.100\n198.51.100.200\n198.51.100.100\n203.0.113.25\n203.0.113.27\n198.51.100.5\n198.51.100.6\n192.0.2.15\n",
        ),
        list("pbl.test", ":127.0.0.10:pbl\n203.0.113.26\n"),
        list("hard.test", ":127.0.0.2:hard\n198.51.100.6\n"),
        // Debian's example, under the real list names.
        list("list.dnswl.org", ":127.0.10.0:dnswl\n198.51.100.50\n"),
        list(
            "zen.spamhaus.org",
            ":127.0.0.2:SBL\n198.51.100.30\n198.51.100.50\n198.51.100.40 :127.0.0.4:XBL\n198.51.100.70 :127.0.0.4:XBL\n198.51.100.60 :127.0.0.10:PBL\n",
        ),
        Zone {
            name: "dbl.spamhaus.org",
            kind: "dnset",
            data: ":127.0.1.2:spam domain\nspam.example.test\n",
        },
        list(
            "dnsbl.sorbs.net",
            ":127.0.0.2:sorbs\n198.51.100.30\n198.51.100.50\n",
        ),
        list("ix.dnsbl.manitu.net", ":127.0.0.2:manitu\n198.51.100.70\n"),
        list(
            "bl.spamcop.net",
            ":127.0.0.2:spamcop\n198.51.100.30\n198.51.100.50\n",
        ),
        list("drone.abuse.ch", ":127.0.0.2:abuse.ch\n198.51.100.40\n"),
        list("db.wpbl.info", ":127.0.0.2:wpbl\n"),
        list("bb.barracudacentral.org", ":127.0.0.2:barracuda\n"),
        Zone {
            name: "example.test",
            kind: "generic",
            data: "@ TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n",
        },
    ]
}

/// A memcached of the test's own, for mtpolicyd's greylisting tickets.
struct Memcached {
    port: u16,
    _process: Process,
}

impl Memcached {
    fn start(dir: &Path) -> Self {
        let port = free_tcp().port();
        let mut process = Process::spawn(
            "memcached",
            Command::new("memcached").args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-u",
                "root",
            ]),
            dir.join("memcached.log"),
        );
        process.wait_accepting(local(port));
        Self {
            port,
            _process: process,
        }
    }

    /// Sends one command, reads until `end` ends a line.
    fn command(&self, command: &str, end: &str) -> String {
        let mut stream =
            TcpStream::connect_timeout(&local(self.port), ASK_TIMEOUT).expect("memcached");
        stream.set_read_timeout(Some(ASK_TIMEOUT)).expect("timeout");
        stream
            .write_all(command.as_bytes())
            .expect("memcached write");
        let mut reader = BufReader::new(stream);
        let mut reply = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line).expect("memcached read") > 0 {
            reply.push_str(&line);
            if line.trim_end() == end || line.starts_with("ERROR") {
                break;
            }
            line.clear();
        }
        reply
    }

    /// Makes mtpolicyd's ticket for `key` valid now, as if its 300 s had
    /// passed.
    fn age_ticket(&self, key: &str) {
        let found = self.command(&format!("get {key}\r\n"), "END");
        assert!(
            found.starts_with("VALUE "),
            "no ticket for {key}: {found:?}"
        );
        let past = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            - 1;
        let value = past.to_string();
        let stored = self.command(
            &format!("set {key} 0 3600 {}\r\n{value}\r\n", value.len()),
            "STORED",
        );
        assert_eq!(stored.trim_end(), "STORED", "memcached set {key}");
    }
}

/// Both servers for one mtpolicyd configuration, and what they share.
struct Pair {
    mtpolicyd: Process,
    mtpolicyd_addr: SocketAddr,
    spamwall: Process,
    spamwall_addr: SocketAddr,
    control: PathBuf,
    imported: String,
}

impl Pair {
    /// Imports `conf` (expecting exit `code`), checks the output with
    /// `check-config`, and starts both servers on `dns`.
    fn start(conf: &Path, port: u16, dir: &Path, dns: SocketAddr, pin: &PinDir, code: i32) -> Self {
        let output = spamwall(["import".as_ref(), "mtpolicyd".as_ref(), conf.as_os_str()]);
        let imported = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(
            output.status.code(),
            Some(code),
            "import of {}:\n{imported}{}",
            conf.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let plain = dir.join("imported.toml");
        fs::write(&plain, &imported).expect("write import");
        let check = spamwall(["check-config".as_ref(), plain.as_os_str()]);
        assert!(
            check.status.success(),
            "check-config on the import of {}:\n{}{}\n{imported}",
            conf.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );

        let mut mtpolicyd = Process::spawn(
            "mtpolicyd",
            Command::new("mtpolicyd")
                .arg("-c")
                .arg(conf)
                .arg("-f")
                .env("RES_NAMESERVERS", dns.ip().to_string())
                .env("RES_OPTIONS", format!("port:{}", dns.port())),
            dir.join("mtpolicyd.log"),
        );
        let mtpolicyd_addr = local(port);
        mtpolicyd.wait_accepting(mtpolicyd_addr);

        let spamwall_addr = local(free_tcp().port());
        let control = dir.join("control.sock");
        let mut config = format!(
            "[daemon]\ncontrol_socket = {:?}\nstate_dir = {:?}\nbpf_pin_dir = {:?}\n\n[xdp]\ninterfaces = []\n\n",
            control.display().to_string(),
            dir.join("state").display().to_string(),
            pin.path().display().to_string(),
        );
        for line in imported.lines() {
            if line.starts_with("listen = ") {
                let _ = writeln!(
                    config,
                    "listen = [\"{spamwall_addr}\"]\nresolver = \"{dns}\""
                );
            } else if line.starts_with("delay = ") {
                let _ = writeln!(config, "delay = \"{}s\"", DELAY.as_secs());
            } else {
                let _ = writeln!(config, "{line}");
            }
        }
        let path = dir.join("spamwall.toml");
        fs::write(&path, config).expect("write spamwall config");
        let mut spamwall = Process::spawn(
            "spamwall",
            Command::new(spamwall_bin())
                .arg("run")
                .arg("--config")
                .arg(&path)
                .env_remove("SPAMWALL_CONFIG"),
            dir.join("spamwall.log"),
        );
        spamwall.wait_accepting(spamwall_addr);
        Self {
            mtpolicyd,
            mtpolicyd_addr,
            spamwall,
            spamwall_addr,
            control,
            imported,
        }
    }

    /// Asks both servers; each answer with its kind.
    fn ask(&self, request: &Request) -> [(String, &'static str); 2] {
        let attributes = request.attributes();
        [self.mtpolicyd_addr, self.spamwall_addr].map(|addr| {
            let answer = client::query(&ListenAddr::Tcp(addr), &attributes, ASK_TIMEOUT)
                .unwrap_or_else(|e| {
                    panic!(
                        "{addr}: {e}\nmtpolicyd:\n{}\nspamwall:\n{}",
                        self.mtpolicyd.log(),
                        self.spamwall.log()
                    )
                });
            let kind = kind(&answer);
            (answer, kind)
        })
    }

    /// Asks both servers every request and compares each answer's kind
    /// with the expected one; panics with every difference.
    fn compare(&self, requests: &[(Request, &'static str)]) {
        let mut wrong = String::new();
        for (request, expected) in requests {
            for ((answer, kind), server) in
                self.ask(request).into_iter().zip(["mtpolicyd", "spamwall"])
            {
                if kind != *expected {
                    let _ = writeln!(
                        wrong,
                        "{}: {server} answered {answer:?} ({kind}), expected {expected}",
                        request.label
                    );
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{wrong}\nimported:\n{}\nmtpolicyd log:\n{}\nspamwall log:\n{}",
            self.imported,
            self.mtpolicyd.log(),
            self.spamwall.log()
        );
    }
}

/// The kind of an access(5) answer: accept, defer or reject.
fn kind(answer: &str) -> &'static str {
    let action = answer
        .trim()
        .strip_prefix("action=")
        .unwrap_or(answer)
        .trim();
    let word = action
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    match word.as_str() {
        "" | "DUNNO" | "OK" | "PREPEND" => "accept",
        "DEFER" | "DEFER_IF_PERMIT" | "DEFER_IF_REJECT" => "defer",
        "REJECT" => "reject",
        code if code.len() == 3 && code.starts_with('4') => "defer",
        code if code.len() == 3 && code.starts_with('5') => "reject",
        _ => "other",
    }
}

/// One RCPT request as Postfix sends it.
struct Request {
    label: &'static str,
    client: &'static str,
    sender: &'static str,
    helo: &'static str,
    instance: String,
}

impl Request {
    fn new(label: &'static str, client: &'static str, sender: &'static str) -> Self {
        Self {
            label,
            client,
            sender,
            helo: "mail.example.test",
            instance: format!("mt{}", INSTANCE.fetch_add(1, Ordering::Relaxed)),
        }
    }

    fn helo(mut self, helo: &'static str) -> Self {
        self.helo = helo;
        self
    }

    fn attributes(&self) -> Vec<(String, String)> {
        [
            ("request", "smtpd_access_policy"),
            ("protocol_state", "RCPT"),
            ("protocol_name", "ESMTP"),
            ("client_address", self.client),
            ("client_name", "unknown"),
            ("reverse_client_name", "unknown"),
            ("helo_name", self.helo),
            ("sender", self.sender),
            ("recipient", "user@example.test"),
            ("recipient_count", "0"),
            ("instance", &self.instance),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
    }
}

/// Everything a test starts before the two servers.
struct Setup {
    dir: tempfile::TempDir,
    port: u16,
    rbldnsd: Rbldnsd,
    pin: PinDir,
}

impl Setup {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_tcp().port(),
            rbldnsd: Rbldnsd::start(&zones()),
            pin: PinDir::new(),
        }
    }

    /// A fixture with its placeholders filled, written into the
    /// temporary directory.
    fn fixture(&self, name: &str, memcached: Option<u16>) -> PathBuf {
        let text = fs::read_to_string(Path::new(FIXTURES).join(name)).expect("fixture");
        let text = text
            .replace("@PORT@", &self.port.to_string())
            .replace("@DIR@", &self.dir.path().display().to_string())
            .replace("@MEMCACHED@", &memcached.unwrap_or_default().to_string());
        let path = self.dir.path().join(name);
        fs::write(&path, text).expect("write fixture");
        path
    }

    fn pair(&self, conf: &Path, code: i32) -> Pair {
        Pair::start(
            conf,
            self.port,
            self.dir.path(),
            self.rbldnsd.addr(),
            &self.pin,
            code,
        )
    }
}

fn ready(name: &str) -> bool {
    require_root(name)
        && require(
            name,
            Command::new("mtpolicyd").arg("--help").output().is_ok(),
            "mtpolicyd (apt-get install mtpolicyd)",
        )
}

#[test]
fn rbl_scoring_with_a_ban_at_15_answers_as_mtpolicyd() {
    const NAME: &str = "rbl_scoring_with_a_ban_at_15_answers_as_mtpolicyd";
    if !ready(NAME) {
        return;
    }
    let setup = Setup::new();
    // mtpolicyd's `Fail2Ban` plugin bans through a real fail2ban-server.
    let fail2ban = Fail2banServer::start();
    let conf = setup.fixture("rbl-ban.conf", None);
    let text = fs::read_to_string(&conf)
        .expect("fixture")
        .replace(
            "@FAIL2BAN_SOCKET@",
            &fail2ban.socket().display().to_string(),
        )
        .replace("@FAIL2BAN_JAIL@", JAIL);
    fs::write(&conf, text).expect("write fixture");
    let pair = setup.pair(&conf, 0);
    pair.compare(&[
        (
            Request::new("sbl and bl2: 15", "198.51.100.2", "a@example.test"),
            "reject",
        ),
        (
            Request::new("sbl: 10", "198.51.100.3", "a@example.test"),
            "defer",
        ),
        (
            Request::new("xbl and bl2: 10", "198.51.100.4", "a@example.test"),
            "defer",
        ),
        (
            Request::new("bl2: 5", "198.51.100.5", "a@example.test"),
            "accept",
        ),
        (
            Request::new("dbl, xbl, bl2: 15", "203.0.113.7", "x@spam.test"),
            "reject",
        ),
        (
            Request::new("clean", "192.0.2.1", "a@example.test"),
            "accept",
        ),
    ]);
    // Both banned the two clients that reached 15, and no other.
    let in_jail = fail2ban.cli_banned(JAIL);
    let list = spamwall([
        "--socket".as_ref(),
        pair.control.as_os_str(),
        "list".as_ref(),
        "--json".as_ref(),
    ]);
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    for banned in ["198.51.100.2", "203.0.113.7"] {
        assert!(
            in_jail.contains(banned),
            "mtpolicyd did not ban {banned} in fail2ban: {in_jail:?}\n{}",
            fail2ban.log()
        );
        assert!(
            listed.contains(banned),
            "spamwall did not ban {banned}: {listed}"
        );
    }
    for clean in ["198.51.100.3", "198.51.100.4", "198.51.100.5", "192.0.2.1"] {
        assert!(
            !in_jail.contains(clean),
            "mtpolicyd banned {clean}: {in_jail:?}"
        );
        assert!(!listed.contains(clean), "spamwall banned {clean}: {listed}");
    }
}

#[test]
fn cidr_allow_lists_answer_as_mtpolicyd() {
    const NAME: &str = "cidr_allow_lists_answer_as_mtpolicyd";
    if !ready(NAME) {
        return;
    }
    let setup = Setup::new();
    let conf = setup.fixture("cidr-allow.conf", None);
    let pair = setup.pair(&conf, 0);
    pair.compare(&[
        (
            Request::new("our /26, listed", "192.0.2.20", "a@example.test"),
            "accept",
        ),
        (
            Request::new("our /26, bad HELO", "192.0.2.20", "a@example.test").helo("localhost"),
            "accept",
        ),
        (
            Request::new("past our /26, listed", "192.0.2.100", "a@example.test"),
            "reject",
        ),
        (
            Request::new("our /25, listed", "198.51.100.200", "a@example.test"),
            "accept",
        ),
        (
            Request::new("below our /25, listed", "198.51.100.100", "a@example.test"),
            "reject",
        ),
        (
            Request::new("backup MX, listed", "203.0.113.25", "a@example.test"),
            "accept",
        ),
        (
            Request::new("pbl", "203.0.113.26", "a@example.test"),
            "reject",
        ),
        (
            Request::new(
                "partner sender, listed",
                "203.0.113.27",
                "x@partner.example.test",
            ),
            "accept",
        ),
        (
            Request::new("bad HELO", "203.0.113.28", "a@example.test").helo("host.invalid"),
            "reject",
        ),
        (
            Request::new("clean", "203.0.113.29", "a@example.test"),
            "accept",
        ),
    ]);
}

#[test]
fn greylisting_defers_then_passes_as_mtpolicyd() {
    const NAME: &str = "greylisting_defers_then_passes_as_mtpolicyd";
    if !ready(NAME) {
        return;
    }
    let setup = Setup::new();
    let memcached = Memcached::start(setup.dir.path());
    let conf = setup.fixture("greylist.conf", Some(memcached.port));
    let pair = setup.pair(&conf, 0);
    let first = Instant::now();
    pair.compare(&[
        (
            Request::new("bl: 5, first attempt", "198.51.100.5", "a@example.test"),
            "defer",
        ),
        (
            Request::new("bl and hard: 15", "198.51.100.6", "a@example.test"),
            "reject",
        ),
        (
            Request::new("partner, listed", "192.0.2.15", "a@example.test"),
            "accept",
        ),
        (
            Request::new("clean", "203.0.113.9", "a@example.test"),
            "accept",
        ),
    ]);
    pair.compare(&[(
        Request::new("bl: 5, early retry", "198.51.100.5", "a@example.test"),
        "defer",
    )]);
    memcached.age_ticket("a@example.test,198.51.100.5,user@example.test");
    thread::sleep((DELAY + Duration::from_millis(300)).saturating_sub(first.elapsed()));
    pair.compare(&[(
        Request::new(
            "bl: 5, retry after the delay",
            "198.51.100.5",
            "a@example.test",
        ),
        "accept",
    )]);
}

#[test]
fn debians_example_configuration_answers_as_mtpolicyd() {
    const NAME: &str = "debians_example_configuration_answers_as_mtpolicyd";
    if !ready(NAME)
        || !require(NAME, Path::new(DEBIAN_CONF).is_file(), DEBIAN_CONF)
        || !require(
            NAME,
            Path::new("/usr/share/GeoIP/GeoIP.dat").is_file(),
            "geoip-database (its GeoIP plugins)",
        )
    {
        return;
    }
    let setup = Setup::new();
    let memcached = Memcached::start(setup.dir.path());
    let dir = setup.dir.path().display().to_string();
    let mut text = fs::read_to_string(DEBIAN_CONF).expect("Debian's configuration");
    for (from, to) in [
        ("user=mtpolicyd", "user=root".to_owned()),
        ("group=mtpolicyd", "group=root".to_owned()),
        (
            "#pid_file=\"/var/run/mtpolicyd/mtpolicyd.pid\"",
            format!("pid_file=\"{dir}/mtpolicyd.pid\""),
        ),
        (
            "port=\"127.0.0.1:12345\"",
            format!("port=\"127.0.0.1:{}\"", setup.port),
        ),
        (
            "<VirtualHost 12345>",
            format!("<VirtualHost {}>", setup.port),
        ),
        ("127.0.0.1:11211", format!("127.0.0.1:{}", memcached.port)),
        (
            "/var/lib/mtpolicyd/mtpolicyd.sqlite",
            format!("{dir}/mtpolicyd.sqlite"),
        ),
    ] {
        assert!(text.contains(from), "{DEBIAN_CONF} no longer has {from:?}");
        text = text.replace(from, &to);
    }
    let conf = setup.dir.path().join("mtpolicyd.conf");
    fs::write(&conf, text).expect("write");
    // GeoIP and the score of a passed greylisting are not carried over.
    let pair = setup.pair(&conf, 2);
    pair.compare(&[
        (
            Request::new("SPF pass", "192.0.2.10", "a@example.test"),
            "accept",
        ),
        (
            Request::new("SPF fail", "198.51.100.20", "a@example.test"),
            "reject",
        ),
        (
            Request::new(
                "sbl, sorbs, spamcop: 15",
                "198.51.100.30",
                "c@nospf.example.test",
            ),
            "reject",
        ),
        (
            Request::new(
                "xbl, abuse.ch: 8, greylisted",
                "198.51.100.40",
                "c@nospf.example.test",
            ),
            "defer",
        ),
        (
            Request::new(
                "dnswl first, then 15",
                "198.51.100.50",
                "c@nospf.example.test",
            ),
            "accept",
        ),
        (
            Request::new("pbl: 3, tagged", "198.51.100.60", "c@nospf.example.test"),
            "accept",
        ),
        (
            Request::new(
                "dbl sender, xbl, manitu: 15",
                "198.51.100.70",
                "x@spam.example.test",
            ),
            "reject",
        ),
    ]);
}
