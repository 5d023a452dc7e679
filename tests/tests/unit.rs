//! End to end: the real `spamwall` daemon as `packaging/spamwall.service`
//! runs it, as a non-root user with only the unit's capabilities and under
//! the unit's system call filter, attached to a veth in a private network
//! namespace, with every part that makes system calls of its own on.
//!
//! Needs root (to create the namespaces and drop to the unit's user) and
//! the binary (`cargo build -p policy-daemon`, or `SPAMWALL_BIN`).

#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use serde_json::Value;
use spamwall_tests::{
    daemon::{Daemon, Settings},
    netns::{NetnsPair, Side, Subnet},
    rbldnsd::{Rbldnsd, Zone},
    require_root,
    seccomp::SyscallFilter,
};

/// The port the listener serves, as an MTA would.
const SMTP: u16 = 25;
/// `nc -w` for connections expected to complete: they take milliseconds.
const CONNECT_SECS: u32 = 2;
/// `nc -w` for connections expected to be dropped: the SYN gets no answer.
const DROPPED_SECS: u32 = 1;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `list --json` entry for `addr`, if any.
fn listed<'a>(bans: &'a [Value], addr: &str) -> Option<&'a Value> {
    bans.iter().find(|ban| ban["addr"] == addr)
}

/// The policy listener and metrics endpoint of the unit-restrictions test.
const UNIT_POLICY: &str = "127.0.0.1:10041";
const UNIT_METRICS: &str = "127.0.0.1:9467";

/// Settings as packaging/spamwall.service runs the daemon: user 65534 with
/// the unit's three capabilities, under the unit's own `SystemCallFilter=`
/// (read from the unit file; any call outside it kills the daemon), with
/// every part that makes system calls of its own switched on: the policy
/// server with a DNS check on `resolver`, metrics, a log file at
/// `mail_log` and a journal source (which spawns `journalctl`).
fn unit_settings(net: &NetnsPair, resolver: std::net::SocketAddr, mail_log: &Path) -> Settings {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/spamwall.service");
    let mut settings = Settings::on(net.server());
    settings.run_as = Some("65534".to_owned());
    settings.syscall_filter = Some(SyscallFilter::of_unit(
        &unit,
        Path::new(env!("CARGO_BIN_EXE_seccomp-exec")),
    ));
    settings.extra = format!(
        "[policy]\nlisten = [\"{UNIT_POLICY}\"]\nresolver = \"{resolver}\"\n\n\
         [[policy.check]]\nname = \"bl\"\ntype = \"dnsbl\"\nzone = \"bl.test\"\nscore = 10\n\n\
         [[policy.threshold]]\nscore = 10\naction = \"reject %IP% listed\"\nban = \"1h\"\n\n\
         [metrics]\nlisten = \"{UNIT_METRICS}\"\n\n\
         [[logwatch.source]]\nname = \"mail\"\npath = \"{}\"\n\n\
         [[logwatch.source]]\nname = \"journal\"\njournal = [\"postfix.service\"]\n\n\
         [[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"rbl\"\nmaxretry = 1\n",
        mail_log.display(),
    );
    settings
}

/// What a failure message needs when the daemon ran under the filter.
fn filter_context(daemon: &Daemon) -> String {
    format!(
        "(a call outside the unit's SystemCallFilter kills the daemon with SIGSYS; \
         `dmesg | grep syscall=` names it)\ndaemon log:\n{}",
        daemon.log()
    )
}

/// Polls `done` every 100 ms for up to 10 s; panics naming `what`.
fn wait_until(daemon: &Daemon, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 10 s\n{}",
            filter_context(daemon)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `spamwall query` for `client` against the unit-restrictions daemon.
fn unit_query(net: &NetnsPair, daemon: &Daemon, client: &str) -> String {
    let bin = spamwall_tests::daemon::spamwall_bin();
    let attr = format!("client_address={client}");
    let args = [
        bin.to_str().unwrap(),
        "query",
        "--server",
        UNIT_POLICY,
        "--attr",
        &attr,
    ];
    let output = net.exec_in(Side::Server, &args, Duration::from_secs(20));
    assert!(
        output.status.success(),
        "spamwall query: {}\n{}",
        stderr(&output),
        filter_context(daemon)
    );
    stdout(&output)
}

/// A postscreen `DNSBL rank` line for `client`, stamped now as syslog
/// writes it (local time).
fn postscreen_dnsbl_line_now(client: &str) -> String {
    let stamp = std::process::Command::new("date")
        .arg("+%b %e %H:%M:%S")
        .output()
        .unwrap();
    format!(
        "{} mx postfix/postscreen[1]: DNSBL rank 3 for [{client}]:4242\n",
        String::from_utf8_lossy(&stamp.stdout).trim_end()
    )
}

/// As packaging/spamwall.service runs it (see [`unit_settings`]): XDP load
/// and attach, the store, bans, the control socket, the policy server
/// asking a DNS list, metrics, the log watcher, SIGHUP and SIGTERM all
/// work for a non-root user with only the unit's capabilities and under
/// the unit's system call filter.
#[test]
fn runs_unprivileged_with_only_the_unit_capabilities() {
    if !require_root("runs_unprivileged_with_only_the_unit_capabilities") {
        return;
    }
    let mut net = NetnsPair::new(Subnet::test_net_2(10));
    net.listen_both(SMTP);
    let rbldnsd = Rbldnsd::start_in(
        net.server(),
        &[Zone {
            name: "bl.test",
            kind: "ip4set",
            data: ":127.0.0.2:Listed\n192.0.2.50\n",
        }],
    );
    let logs = tempfile::tempdir().unwrap();
    std::fs::set_permissions(logs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mail_log = logs.path().join("mail.log");
    let mut daemon = Daemon::start(
        net.server(),
        &unit_settings(&net, rbldnsd.addr(), &mail_log),
    );
    let pid = daemon.pid().unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        let line = proc_status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace()
            .skip(1)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        field("Uid:").iter().all(|uid| uid == "65534"),
        "{proc_status}"
    );
    assert_eq!(field("Seccomp:"), ["2"], "a seccomp filter is installed");

    let (server, client) = (IpAddr::from(net.server_v4()), net.client_v4().to_string());
    assert!(
        net.can_connect(server, SMTP, CONNECT_SECS),
        "before the ban"
    );
    daemon.cli_ok(&["ban", &client]);
    assert!(
        !net.can_connect(server, SMTP, DROPPED_SECS),
        "banned by an unprivileged daemon\n{}",
        filter_context(&daemon)
    );
    let report = daemon.status();
    assert_eq!(report["backends"][0]["active"], true, "{report}");

    let query = |client: &str| unit_query(&net, &daemon, client);
    assert_eq!(query("192.0.2.50"), "action=reject 192.0.2.50 listed\n");
    assert_eq!(query("192.0.2.51"), "action=DUNNO\n");
    assert!(listed(&daemon.list(), "192.0.2.50").is_some(), "policy ban");

    // A postscreen line bans through the log watcher.
    std::fs::write(&mail_log, postscreen_dnsbl_line_now("198.51.100.77")).unwrap();
    wait_until(&daemon, "log watcher ban of 198.51.100.77", || {
        listed(&daemon.list(), "198.51.100.77").is_some()
    });

    let metrics_url = format!("http://{UNIT_METRICS}/metrics");
    let scrape = net.exec_in(
        Side::Server,
        &["curl", "-sf", &metrics_url],
        Duration::from_secs(10),
    );
    assert!(
        stdout(&scrape).contains("spamwall_policy_requests_total 2"),
        "metrics: {}{}\n{}",
        stdout(&scrape),
        stderr(&scrape),
        filter_context(&daemon)
    );

    // SIGHUP reloads; SIGTERM stops cleanly, not by SIGSYS.
    // SAFETY: kill has no memory-safety preconditions; `pid` is our child.
    let hup = unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap(), libc::SIGHUP) };
    assert_eq!(hup, 0);
    wait_until(&daemon, "reload after SIGHUP", || {
        daemon
            .log()
            .contains("policy checks and thresholds reloaded")
    });
    assert_eq!(query("192.0.2.50"), "action=reject 192.0.2.50 listed\n");
    let status = daemon.kill(libc::SIGTERM);
    assert!(
        status.success(),
        "exit status {status}\n{}",
        filter_context(&daemon)
    );
}
