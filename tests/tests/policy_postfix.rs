//! End to end with a real Postfix: `check_policy_service` points at a
//! policy server in Postfix's network namespace, clients send mail with
//! `swaks` from two other namespaces.
//!
//! Topology: a server namespace (Postfix on 192.0.2.1:25, the policy server
//! on its loopback, rbldnsd on its loopback) with two veth links: the
//! *listed* client 192.0.2.2 and the *clean* client 198.51.100.2, which
//! routes to 192.0.2.1 over its own link. Nothing leaves the namespaces:
//! Postfix does no DNS, and the DNSBL is the local rbldnsd; the SPF test
//! serves its zone from Knot DNS on the same loopback instead.
//!
//! Needs root, Postfix, swaks, rbldnsd, knot and the `spamwall` binary
//! (`cargo build -p policy-daemon`, or `SPAMWALL_BIN`); run serially:
//! `cargo test -p spamwall-tests --test policy_postfix -- --test-threads=1`.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    net::{IpAddr, Ipv4Addr},
    os::unix::{fs::PermissionsExt as _, net::UnixListener},
    path::Path,
    process::Output,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;
use spamwall_tests::{
    daemon::{Daemon, Settings},
    knot::{self, Knot},
    netns::{ExtraClient, NetnsPair, Subnet, can_connect},
    postfix::{self, Postfix, SMTP_PORT},
    rbldnsd::{Rbldnsd, Zone},
    require_root,
};

/// `swaks --timeout` per SMTP step.
const SWAKS_SECS: u32 = 5;
/// `nc -w` for the connection XDP must drop.
const DROPPED_SECS: u32 = 2;
/// How long a delivery may take once queued.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the ban may take to show up in `spamwall list`.
const BAN_TIMEOUT: Duration = Duration::from_secs(5);
/// spamwall's policy listener inside the server namespace.
const POLICY_PORT: u16 = 10040;
/// The DNSBL zone the test rbldnsd serves.
const ZONE: &str = "bl.test";
const FROM: &str = "a@b.test";
const TO: &str = "user@example.test";

/// Postfix, a policy server and two clients. Fields drop in declaration
/// order: processes first, the namespaces last.
struct Net {
    pair: NetnsPair,
    clean: ExtraClient,
}

impl Net {
    fn new() -> Self {
        let mut pair = NetnsPair::new(Subnet::test_net_1(41));
        let clean = pair.add_client(Subnet::test_net_2(42));
        Self { pair, clean }
    }

    fn server(&self) -> IpAddr {
        self.pair.server_v4().into()
    }

    fn listed(&self) -> Ipv4Addr {
        self.pair.client_v4()
    }
}

fn transcript(output: &Output) -> String {
    format!(
        "exit {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A stand-in policy server on a UNIX socket in Postfix's `private`
/// directory: rejects `reject_addr` with a fixed text, answers DUNNO
/// otherwise, and records every request. It proves the Postfix wiring
/// without spamwall. One thread per connection; every thread stops on drop
/// or after [`StubPolicy::LIFETIME`].
struct StubPolicy {
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<HashMap<String, String>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl StubPolicy {
    const LIFETIME: Duration = Duration::from_mins(2);
    const MAX_CONNECTIONS: usize = 16;
    const REJECT_TEXT: &str = "stub policy says no";

    fn start(path: &Path, reject_addr: IpAddr) -> Self {
        let listener = UnixListener::bind(path).unwrap();
        // smtpd runs as `postfix` and needs write permission to connect.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let stop = Arc::clone(&stop);
            let requests = Arc::clone(&requests);
            thread::spawn(move || {
                let started = Instant::now();
                let mut workers = Vec::new();
                while !stop.load(Ordering::Relaxed)
                    && started.elapsed() < Self::LIFETIME
                    && workers.len() < Self::MAX_CONNECTIONS
                {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let stop = Arc::clone(&stop);
                            let requests = Arc::clone(&requests);
                            workers.push(thread::spawn(move || {
                                Self::serve(stream, &stop, &requests, reject_addr);
                            }));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(20)),
                    }
                }
                for worker in workers {
                    let _ = worker.join();
                }
            })
        };
        Self {
            stop,
            requests,
            acceptor: Some(acceptor),
        }
    }

    fn serve(
        stream: std::os::unix::net::UnixStream,
        stop: &AtomicBool,
        requests: &Mutex<Vec<HashMap<String, String>>>,
        reject_addr: IpAddr,
    ) {
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut request = HashMap::new();
        let mut line = String::new();
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Self::LIFETIME {
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) if line.ends_with('\n') => {
                    let text = line.trim_end();
                    if text.is_empty() {
                        let reject = request.get("client_address").map(String::as_str)
                            == Some(reject_addr.to_string().as_str());
                        let action = if reject {
                            format!("REJECT {}", Self::REJECT_TEXT)
                        } else {
                            "DUNNO".to_owned()
                        };
                        if writer
                            .write_all(format!("action={action}\n\n").as_bytes())
                            .is_err()
                        {
                            return;
                        }
                        requests.lock().unwrap().push(std::mem::take(&mut request));
                    } else if let Some((name, value)) = text.split_once('=') {
                        request.insert(name.to_owned(), value.to_owned());
                    }
                    line.clear();
                }
                // A partial line or a read timeout: keep what we have.
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    }

    fn requests(&self) -> Vec<HashMap<String, String>> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for StubPolicy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// The harness itself: Postfix in the namespace asks a stub policy server
/// at RCPT, rejects the client it names and delivers the other's mail.
#[test]
fn postfix_consults_a_stub_policy_service() {
    if !require_root("postfix_consults_a_stub_policy_service") {
        return;
    }
    let net = Net::new();
    let mut settings = postfix::Settings::on(net.server());
    settings.policy = Some("unix:private/stub".to_owned());
    let postfix = Postfix::start(net.pair.server(), &settings);
    let stub = StubPolicy::start(
        &postfix.queue_dir().join("private/stub"),
        net.listed().into(),
    );

    let rejected = postfix::swaks(net.pair.client(), net.server(), FROM, TO, SWAKS_SECS);
    let text = transcript(&rejected);
    assert!(
        !rejected.status.success(),
        "listed client was not rejected:\n{text}"
    );
    assert!(
        text.contains(StubPolicy::REJECT_TEXT),
        "no policy reject text in:\n{text}\nPostfix log:\n{}",
        postfix.log()
    );

    let accepted = postfix::swaks(&net.clean.netns, net.server(), FROM, TO, SWAKS_SECS);
    let text = transcript(&accepted);
    assert!(
        accepted.status.success() && text.contains("250 2.0.0 Ok: queued"),
        "clean client's mail was not queued:\n{text}\nPostfix log:\n{}",
        postfix.log()
    );
    assert!(
        postfix.wait_delivered(1, DELIVERY_TIMEOUT),
        "clean client's mail was not delivered; Postfix log:\n{}",
        postfix.log()
    );

    let requests = stub.requests();
    let clients: Vec<&str> = requests
        .iter()
        .map(|r| r.get("client_address").map_or("", String::as_str))
        .collect();
    assert_eq!(
        clients,
        [net.listed().to_string(), net.clean.v4().to_string()],
        "{requests:?}"
    );
    for request in &requests {
        assert_eq!(request["request"], "smtpd_access_policy", "{request:?}");
        assert_eq!(request["protocol_state"], "RCPT", "{request:?}");
        assert_eq!(request["recipient"], TO, "{request:?}");
        assert_eq!(request["sender"], FROM, "{request:?}");
    }
}

/// The `[policy]` section: one DNSBL on the namespace's rbldnsd, a reject
/// threshold that bans.
fn policy_toml(resolver: std::net::SocketAddr) -> String {
    format!(
        "[policy]\n\
         listen = [\"127.0.0.1:{POLICY_PORT}\"]\n\
         resolver = \"{resolver}\"\n\n\
         [[policy.check]]\n\
         name = \"testbl\"\n\
         type = \"dnsbl\"\n\
         zone = \"{ZONE}\"\n\
         score = 10\n\n\
         [[policy.threshold]]\n\
         score = 10\n\
         action = \"reject sender ip %IP% is blocked (score=%SCORE%, %DETAIL%)\"\n\
         ban = \"1h\"\n"
    )
}

/// The scenario: a client listed in the DNSBL is rejected with the
/// templated text and banned, its next connection to port 25 is dropped by
/// XDP, and a clean client's mail is delivered.
#[test]
fn listed_client_is_rejected_and_banned_clean_client_delivers() {
    const NAME: &str = "listed_client_is_rejected_and_banned_clean_client_delivers";
    if !require_root(NAME) {
        return;
    }
    let net = Net::new();
    let listed = net.listed();
    let dataset = format!(":127.0.0.2:Listed in test list\n{listed}\n");
    let rbldnsd = Rbldnsd::start_in(
        net.pair.server(),
        &[Zone {
            name: ZONE,
            kind: "ip4set",
            data: &dataset,
        }],
    );
    let mut daemon_settings = Settings::on(net.pair.server());
    daemon_settings
        .interfaces
        .push(net.clean.server_link.clone());
    daemon_settings.extra = policy_toml(rbldnsd.addr());
    let daemon = Daemon::start(net.pair.server(), &daemon_settings);
    let mut settings = postfix::Settings::on(net.server());
    settings.policy = Some(format!("inet:127.0.0.1:{POLICY_PORT}"));
    let postfix = Postfix::start(net.pair.server(), &settings);
    let logs = || {
        format!(
            "Postfix log:\n{}\nspamwall log:\n{}\nrbldnsd log:\n{}",
            postfix.log(),
            daemon.log(),
            rbldnsd.log()
        )
    };

    // Before any mail both clients reach port 25 through XDP.
    for (netns, who) in [
        (net.pair.client(), "listed"),
        (net.clean.netns.as_str(), "clean"),
    ] {
        assert!(
            can_connect(netns, net.server(), SMTP_PORT, DROPPED_SECS),
            "{who} client cannot reach port 25 before any mail\n{}",
            logs()
        );
    }

    let rejected = postfix::swaks(net.pair.client(), net.server(), FROM, TO, SWAKS_SECS);
    let text = transcript(&rejected);
    assert!(
        !rejected.status.success(),
        "listed client was not rejected:\n{text}\n{}",
        logs()
    );
    let expected = format!("sender ip {listed} is blocked (score=10");
    assert!(
        text.contains(&expected) && text.contains("testbl"),
        "no templated reject text ({expected}…testbl…) in:\n{text}\n{}",
        logs()
    );

    let ban = wait_for_ban(&daemon, &listed.to_string());
    let ban = ban.unwrap_or_else(|| {
        panic!(
            "{listed} is not in spamwall list within {BAN_TIMEOUT:?}\n{}",
            logs()
        )
    });
    assert_eq!(ban["source"], "policy", "{ban}");
    assert!(
        !can_connect(net.pair.client(), net.server(), SMTP_PORT, DROPPED_SECS),
        "banned client {listed} still connects to port 25\nstats: {}\n{}",
        daemon.cli_ok(&["stats", "--json"]),
        logs()
    );

    let accepted = postfix::swaks(&net.clean.netns, net.server(), FROM, TO, SWAKS_SECS);
    let text = transcript(&accepted);
    assert!(
        accepted.status.success() && text.contains("250 2.0.0 Ok: queued"),
        "clean client's mail was not queued:\n{text}\n{}",
        logs()
    );
    assert!(
        postfix.wait_delivered(1, DELIVERY_TIMEOUT),
        "clean client's mail was not delivered\n{}",
        logs()
    );
    let bans = daemon.list();
    let clean = net.clean.v4().to_string();
    assert!(
        bans.iter().all(|ban| ban["addr"] != clean.as_str()),
        "clean client {clean} was banned: {bans:?}"
    );
}

/// SPF end to end: `spf.test` publishes `ip4:` the clean client `-all`
/// on a Knot DNS in the server's namespace. The other client, not in the
/// record, sends as `@spf.test`: `fail` scores 10 and the threshold
/// rejects it; the clean client's mail is delivered with the
/// `Received-SPF: pass` header spamwall had Postfix prepend.
#[test]
fn spf_fail_is_rejected_by_threshold_and_a_listed_client_delivers() {
    const NAME: &str = "spf_fail_is_rejected_by_threshold_and_a_listed_client_delivers";
    const SENDER: &str = "alice@spf.test";
    if !require_root(NAME) {
        return;
    }
    let net = Net::new();
    let clean = net.clean.v4();
    let records = format!("@ TXT \"v=spf1 ip4:{clean} -all\"\nns A 127.0.0.1\n");
    let knot = Knot::start_in(
        net.pair.server(),
        &[knot::Zone {
            name: "spf.test",
            records: &records,
        }],
        300,
    );
    let mut daemon_settings = Settings::on(net.pair.server());
    daemon_settings.extra = format!(
        "[policy]\n\
         listen = [\"127.0.0.1:{POLICY_PORT}\"]\n\
         resolver = \"{}\"\n\
         hostnames = [\"mx.example.test\"]\n\n\
         [[policy.check]]\n\
         name = \"spf\"\n\
         type = \"spf\"\n\
         scores = {{ fail = 10, softfail = 3 }}\n\
         header = true\n\n\
         [[policy.threshold]]\n\
         score = 10\n\
         action = \"reject SPF check failed: %DETAIL%\"\n",
        knot.addr()
    );
    let daemon = Daemon::start(net.pair.server(), &daemon_settings);
    let mut settings = postfix::Settings::on(net.server());
    settings.policy = Some(format!("inet:127.0.0.1:{POLICY_PORT}"));
    let postfix = Postfix::start(net.pair.server(), &settings);
    let logs = || {
        format!(
            "Postfix log:\n{}\nspamwall log:\n{}\nknotd log:\n{}",
            postfix.log(),
            daemon.log(),
            knot.log()
        )
    };

    let rejected = postfix::swaks(net.pair.client(), net.server(), SENDER, TO, SWAKS_SECS);
    let text = transcript(&rejected);
    assert!(
        !rejected.status.success() && text.contains("SPF check failed: spf=fail(+10)"),
        "the client outside the record was not rejected for SPF:\n{text}\n{}",
        logs()
    );

    let accepted = postfix::swaks(&net.clean.netns, net.server(), SENDER, TO, SWAKS_SECS);
    let text = transcript(&accepted);
    assert!(
        accepted.status.success() && text.contains("250 2.0.0 Ok: queued"),
        "the client in the record was not queued:\n{text}\n{}",
        logs()
    );
    assert!(
        postfix.wait_delivered(1, DELIVERY_TIMEOUT),
        "the client in the record was not delivered\n{}",
        logs()
    );
    let messages = postfix.messages();
    let header = format!(
        "Received-SPF: pass (mx.example.test: domain of {SENDER} designates {clean} as \
         permitted sender) client-ip={clean}; envelope-from=\"{SENDER}\"; helo=client.test; \
         receiver=mx.example.test; identity=mailfrom;"
    );
    assert!(
        messages.len() == 1 && messages[0].contains(&header),
        "the delivered mail has no {header:?}:\n{messages:?}\n{}",
        logs()
    );
}

/// Polls `list --json` (bounded) for a ban of `addr`.
fn wait_for_ban(daemon: &Daemon, addr: &str) -> Option<Value> {
    let started = Instant::now();
    loop {
        if let Some(ban) = daemon.list().into_iter().find(|ban| ban["addr"] == addr) {
            return Some(ban);
        }
        if started.elapsed() >= BAN_TIMEOUT {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Postfix fails open around spamwall with the shipped snippet's
/// `smtpd_policy_service_default_action = DUNNO`: the clean client's
/// mail is delivered when spamwall answers late (a DNS list that never
/// answers, cut off by `request_timeout`), when it does not answer at all
/// (stopped with SIGSTOP: Postfix's own timeout) and when it is gone.
#[test]
fn postfix_keeps_delivering_when_spamwall_is_slow_frozen_or_gone() {
    const NAME: &str = "postfix_keeps_delivering_when_spamwall_is_slow_frozen_or_gone";
    if !require_root(NAME) {
        return;
    }
    let net = Net::new();
    // No host has this address: every query to it goes unanswered.
    let silent = std::net::SocketAddr::from((net.pair.subnet().v4_host(250), 53));
    let mut daemon_settings = Settings::on(net.pair.server());
    daemon_settings.extra =
        policy_toml(silent).replace("resolver =", "request_timeout = \"1s\"\nresolver =");
    let mut daemon = Daemon::start(net.pair.server(), &daemon_settings);
    let mut settings = postfix::Settings::on(net.server());
    settings.policy = Some(format!("inet:127.0.0.1:{POLICY_PORT}"));
    // The shipped snippet's own setting, so the test fails if it changes.
    let snippet = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/postfix-main.cf.snippet"),
    )
    .expect("reading the Postfix snippet");
    let default_action = snippet
        .lines()
        .find(|line| line.starts_with("smtpd_policy_service_default_action"))
        .expect("the snippet sets smtpd_policy_service_default_action");
    assert_eq!(
        default_action, "smtpd_policy_service_default_action = DUNNO",
        "the snippet fails open"
    );
    settings.main_cf = format!(
        "{default_action}\n\
         smtpd_policy_service_timeout = 3s\n\
         smtpd_policy_service_try_limit = 1\n"
    );
    let postfix = Postfix::start(net.pair.server(), &settings);
    let send = |delivered: usize, what: &str, log: &dyn Fn() -> String| {
        let output = postfix::swaks(&net.clean.netns, net.server(), FROM, TO, 15);
        let text = transcript(&output);
        assert!(
            output.status.success() && text.contains("250 2.0.0 Ok: queued"),
            "{what}: the mail was not queued:\n{text}\nPostfix log:\n{}\n{}",
            postfix.log(),
            log()
        );
        // A server reply (swaks marks them `<-` or `<**`), not the
        // message's own headers, whose time may read 451.
        let tempfail = text.lines().any(|line| {
            line.strip_prefix("<**")
                .or_else(|| line.strip_prefix("<-"))
                .is_some_and(|reply| reply.trim_start().starts_with("451"))
        });
        assert!(!tempfail, "{what}: a tempfail:\n{text}");
        assert!(
            postfix.wait_delivered(delivered, DELIVERY_TIMEOUT),
            "{what}: not delivered\nPostfix log:\n{}\n{}",
            postfix.log(),
            log()
        );
    };

    send(1, "a check that never answers", &|| daemon.log());
    let stats = daemon.stats();
    assert_eq!(stats["policy_requests"], 1, "spamwall answered: {stats}");

    let pid = libc::pid_t::try_from(daemon.pid().unwrap()).unwrap();
    // SAFETY: kill(2) on the daemon this test started, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    send(2, "spamwall stopped (SIGSTOP)", &|| String::new());
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    daemon.cli_ok(&["status"]);

    daemon.kill(libc::SIGKILL);
    send(3, "spamwall not running", &|| String::new());
}
