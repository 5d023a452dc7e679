//! The daemon with fail2ban as a backend: as the fallback when XDP cannot
//! be used, and beside XDP when both are configured. Real fail2ban-server,
//! real daemon in a network namespace.

#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use spamwall::bans::store::Store;
use spamwall_tests::{
    daemon::{Daemon, Settings},
    fail2ban::{Fail2banServer, JAIL},
    netns::{NetnsPair, Subnet, can_connect},
    require_root,
};

fn fail2ban_section(server: &Fail2banServer) -> String {
    format!(
        "[fail2ban]\nsocket = {}\njail = \"{JAIL}\"\n",
        serde_json::to_string(server.socket().to_str().unwrap()).unwrap()
    )
}

/// The jail is compared with the store this often in the expiry tests.
const RECONCILE_SECS: u64 = 2;
/// Longest wait for the jail to show a change the daemon makes: a
/// reconciliation period plus delivery, generous for a loaded machine.
const JAIL_TIMEOUT: Duration = Duration::from_secs(20);

/// A daemon using fail2ban as its only backend (XDP left out), reconciling
/// the jail every [`RECONCILE_SECS`].
fn fail2ban_daemon(fail2ban: &Fail2banServer, net: &NetnsPair) -> Daemon {
    let mut settings = Settings::on(net.server());
    "backends = [\"fail2ban\"]".clone_into(&mut settings.ban_extra);
    settings.extra = format!(
        "{}reconcile_interval = \"{RECONCILE_SECS}s\"\n",
        fail2ban_section(fail2ban)
    );
    Daemon::start(net.server(), &settings)
}

/// Polls fail2ban's own client until `target` is (`listed`) or is not in
/// the jail; panics after [`JAIL_TIMEOUT`].
fn wait_jail(fail2ban: &Fail2banServer, daemon: &Daemon, target: &str, listed: bool, what: &str) {
    let deadline = Instant::now() + JAIL_TIMEOUT;
    while fail2ban.cli_banned(JAIL).contains(target) != listed {
        assert!(
            Instant::now() < deadline,
            "{what}: {target} {} the jail after {JAIL_TIMEOUT:?}: {:?}\ndaemon log:\n{}",
            if listed {
                "never entered"
            } else {
                "never left"
            },
            fail2ban.cli_banned(JAIL),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sleeps until `at` has passed: waiting for a ban's expiry, which is a
/// point in time, not a condition any process reports.
fn sleep_past(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now + Duration::from_millis(200));
    }
}

/// `fail2ban-client set JAIL ACTION TARGET`, bypassing spamwall.
fn jail_command(fail2ban: &Fail2banServer, action: &str, target: &str) {
    let output = spamwall_tests::netns::run_bounded(
        std::process::Command::new("fail2ban-client")
            .arg("-c")
            .arg(fail2ban.conf_dir())
            .arg("-s")
            .arg(fail2ban.socket())
            .args(["set", JAIL, action, target]),
        Duration::from_secs(10),
    );
    assert!(
        output.status.success(),
        "fail2ban-client set {JAIL} {action} {target}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The fail2ban backend's queue depth, from `status --json`.
fn fail2ban_queue_depth(daemon: &Daemon) -> u64 {
    let status = daemon.status();
    status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|backend| backend["name"] == "fail2ban")
        .and_then(|backend| backend["queue_depth"].as_u64())
        .unwrap_or_else(|| panic!("no fail2ban queue depth in status: {status}"))
}

/// Polls `status` until fail2ban's queue is empty; panics after
/// [`JAIL_TIMEOUT`].
fn wait_queue_empty(daemon: &Daemon) {
    let deadline = Instant::now() + JAIL_TIMEOUT;
    while fail2ban_queue_depth(daemon) > 0 {
        assert!(
            Instant::now() < deadline,
            "fail2ban's queue not empty after {JAIL_TIMEOUT:?}\ndaemon log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn without_xdp_bans_fall_back_to_fail2ban() {
    if !require_root("without_xdp_bans_fall_back_to_fail2ban") {
        return;
    }
    let fail2ban = Fail2banServer::start();
    let net = NetnsPair::new(Subnet::test_net_1(20));
    let mut settings = Settings::on("no-such-if0");
    settings.extra = fail2ban_section(&fail2ban);
    let daemon = Daemon::start(net.server(), &settings);

    let status = daemon.status();
    let backends = status["backends"].as_array().unwrap();
    assert_eq!(backends[0]["name"], "xdp");
    assert_eq!(backends[0]["active"], false, "{status}");
    assert!(
        backends[0]["detail"]
            .as_str()
            .unwrap()
            .contains("no-such-if0"),
        "{status}"
    );
    assert_eq!(backends[1]["name"], "fail2ban");
    assert_eq!(backends[1]["active"], true, "{status}");
    assert!(
        backends[1]["detail"].as_str().unwrap().contains("fallback"),
        "{status}"
    );

    daemon.cli_ok(&["ban", "192.0.2.77", "2001:db8:20::77"]);
    fail2ban.wait_until_listed(
        &set(&["192.0.2.77", "2001:db8:20::77"]),
        Duration::from_secs(20),
    );
    daemon.cli_ok(&["unban", "192.0.2.77"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fail2ban.cli_banned(JAIL).contains("192.0.2.77") {
        assert!(Instant::now() < deadline, "unban never reached fail2ban");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn both_backends_get_every_ban_and_fail2ban_restarts_lose_none() {
    if !require_root("both_backends_get_every_ban_and_fail2ban_restarts_lose_none") {
        return;
    }
    let mut fail2ban = Fail2banServer::start();
    let mut net = NetnsPair::new(Subnet::test_net_2(21));
    net.listen(net.server_v4().into(), 25);
    let mut settings = Settings::on(net.server());
    settings.extra = fail2ban_section(&fail2ban);
    settings.ban_extra = "backends = [\"xdp\", \"fail2ban\"]".to_owned();
    let daemon = Daemon::start(net.server(), &settings);
    let status = daemon.status();
    assert_eq!(status["backends"][0]["active"], true, "{status}");
    assert_eq!(status["backends"][1]["active"], true, "{status}");

    let client = net.client_v4().to_string();
    daemon.cli_ok(&["ban", &client]);
    assert!(
        !can_connect(net.client(), net.server_v4().into(), 25, 1),
        "XDP drops the client"
    );

    // fail2ban goes away while bans keep coming: each waits in the queue.
    fail2ban.stop();
    let queued: Vec<String> = (1..=30).map(|i| format!("203.0.113.{i}")).collect();
    for target in &queued {
        daemon.cli_ok(&["ban", target]);
    }
    assert_eq!(
        fail2ban_queue_depth(&daemon),
        30,
        "one queued operation per ban made while fail2ban is down"
    );
    fail2ban.launch();
    let mut expected: BTreeSet<String> = queued.into_iter().collect();
    expected.insert(client);
    fail2ban.wait_until_listed(&expected, Duration::from_mins(1));

    // fail2ban restarts in the middle of a stream of bans: none is lost.
    let stream: Vec<String> = (1..=40)
        .map(|i| format!("198.51.100.{}", 100 + i))
        .collect();
    for (n, target) in stream.iter().enumerate() {
        if n == 20 {
            fail2ban.restart();
        }
        daemon.cli_ok(&["ban", target]);
    }
    expected.extend(stream);
    fail2ban.wait_until_listed(&expected, Duration::from_mins(1));
    wait_queue_empty(&daemon);
}

#[test]
fn fail2ban_bans_end_at_expiry_also_across_a_restart() {
    if !require_root("fail2ban_bans_end_at_expiry_also_across_a_restart") {
        return;
    }
    // The test jail's own bantime is an hour: whatever leaves it sooner was
    // lifted by spamwall.
    let fail2ban = Fail2banServer::start();
    let net = NetnsPair::new(Subnet::test_net_1(22));
    let mut daemon = fail2ban_daemon(&fail2ban, &net);

    let ends = Instant::now() + Duration::from_secs(3);
    daemon.cli_ok(&["ban", "192.0.2.88", "--for", "3s"]);
    daemon.cli_ok(&["ban", "192.0.2.99", "--for", "1h"]);
    wait_jail(&fail2ban, &daemon, "192.0.2.88", true, "a 3 s ban");
    wait_jail(
        &fail2ban,
        &daemon,
        "192.0.2.88",
        false,
        "a 3 s ban at expiry",
    );
    assert!(Instant::now() >= ends, "lifted before its expiry");
    assert!(
        fail2ban.cli_banned(JAIL).contains("192.0.2.99"),
        "the 1 h ban stays"
    );

    // Expires while the daemon is stopped: lifted when it starts again.
    let ends = Instant::now() + Duration::from_secs(3);
    daemon.cli_ok(&["ban", "2001:db8:22::88", "--for", "3s"]);
    wait_jail(
        &fail2ban,
        &daemon,
        "2001:db8:22::88",
        true,
        "a 3 s IPv6 ban",
    );
    daemon.kill(libc::SIGTERM);
    sleep_past(ends);
    assert!(
        fail2ban.cli_banned(JAIL).contains("2001:db8:22::88"),
        "nothing else lifts it while the daemon is down"
    );
    daemon.restart();
    wait_jail(
        &fail2ban,
        &daemon,
        "2001:db8:22::88",
        false,
        "a ban that expired while the daemon was down",
    );
    assert!(fail2ban.cli_banned(JAIL).contains("192.0.2.99"));
}

#[test]
fn the_fail2ban_jail_is_reconciled_both_ways() {
    if !require_root("the_fail2ban_jail_is_reconciled_both_ways") {
        return;
    }
    let mut fail2ban = Fail2banServer::start();
    let net = NetnsPair::new(Subnet::test_net_2(23));
    let daemon = fail2ban_daemon(&fail2ban, &net);
    daemon.cli_ok(&["ban", "198.51.100.23", "203.0.113.0/28"]);
    wait_jail(&fail2ban, &daemon, "203.0.113.0/28", true, "a prefix ban");

    // Someone lifts a ban behind spamwall's back, and adds one.
    jail_command(&fail2ban, "unbanip", "198.51.100.23");
    jail_command(&fail2ban, "banip", "192.0.2.66");
    wait_jail(
        &fail2ban,
        &daemon,
        "198.51.100.23",
        true,
        "a missing ban re-sent",
    );
    wait_jail(
        &fail2ban,
        &daemon,
        "192.0.2.66",
        false,
        "a stray entry lifted",
    );

    // Expires while fail2ban is down: the unban waits and is delivered.
    let ends = Instant::now() + Duration::from_secs(3);
    daemon.cli_ok(&["ban", "203.0.113.77", "--for", "3s"]);
    wait_jail(&fail2ban, &daemon, "203.0.113.77", true, "a 3 s ban");
    fail2ban.stop();
    sleep_past(ends);
    fail2ban.launch();
    // fail2ban restores its bans from its database a moment after start;
    // an unban delivered before that is undone, and the reconciliation
    // lifts the entry again.
    fail2ban.wait_until_listed(&set(&["198.51.100.23", "203.0.113.0/28"]), JAIL_TIMEOUT);
    wait_jail(
        &fail2ban,
        &daemon,
        "203.0.113.77",
        false,
        "a ban that expired while fail2ban was down",
    );
}

#[test]
fn an_allowlist_entry_lifts_bans_everywhere_on_reload_and_at_start() {
    if !require_root("an_allowlist_entry_lifts_bans_everywhere_on_reload_and_at_start") {
        return;
    }
    let fail2ban = Fail2banServer::start();
    let mut net = NetnsPair::new(Subnet::test_net_3(24));
    net.listen(net.server_v4().into(), 25);
    let mut settings = Settings::on(net.server());
    settings.ban_extra = "backends = [\"xdp\", \"fail2ban\"]".to_owned();
    settings.extra = format!(
        "{}reconcile_interval = \"{RECONCILE_SECS}s\"\n",
        fail2ban_section(&fail2ban)
    );
    let mut daemon = Daemon::start(net.server(), &settings);
    let client = net.client_v4().to_string();
    let server = net.server_v4().into();
    // The operator bans their own office network by mistake, inside a
    // wider prefix, next to a real offender.
    daemon.cli_ok(&["ban", &client, "198.51.0.0/16", "192.0.2.5"]);
    assert!(
        !can_connect(net.client(), server, 25, 1),
        "banned client connected"
    );
    fail2ban.wait_until_listed(
        &set(&[client.as_str(), "198.51.0.0/16", "192.0.2.5"]),
        JAIL_TIMEOUT,
    );

    settings.allowlist = vec!["203.0.113.0/24".to_owned(), "198.51.100.0/24".to_owned()];
    daemon.rewrite_config(&settings);
    daemon.reload();
    assert!(
        can_connect(net.client(), server, 25, 2),
        "the allowlisted client is still dropped\n{}",
        daemon.log()
    );
    let listed: Vec<String> = daemon
        .list()
        .iter()
        .map(|ban| ban["addr"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ["192.0.2.5"]);
    wait_jail(&fail2ban, &daemon, &client, false, "an allowlisted address");
    wait_jail(
        &fail2ban,
        &daemon,
        "198.51.0.0/16",
        false,
        "a prefix over an allowlisted one",
    );
    assert!(fail2ban.cli_banned(JAIL).contains("192.0.2.5"));
    daemon.wait_log("the line naming the entry that lifted the ban", |log| {
        log.lines().any(|line| {
            line.contains("allowlist covers it")
                && line.contains(&format!("target={client}"))
                && line.contains("entry=203.0.113.0/24")
        })
    });

    // Present at start: lifted before anything is served, the pinned map
    // entry included.
    settings.allowlist.clear();
    daemon.rewrite_config(&settings);
    daemon.reload();
    daemon.cli_ok(&["ban", &client]);
    assert!(!can_connect(net.client(), server, 25, 1), "banned again");
    daemon.kill(libc::SIGTERM);
    assert!(
        !can_connect(net.client(), server, 25, 1),
        "the pinned ban holds while the daemon is stopped"
    );
    settings.allowlist = vec![format!("{client}/32")];
    daemon.rewrite_config(&settings);
    daemon.restart();
    assert!(
        can_connect(net.client(), server, 25, 2),
        "allowlisted at start, still dropped\n{}",
        daemon.log()
    );
    assert!(
        daemon
            .list()
            .iter()
            .all(|ban| ban["addr"] != client.as_str())
    );
    wait_jail(&fail2ban, &daemon, &client, false, "allowlisted at start");
}

/// XDP enforces and fail2ban idles as the fallback; then a reload leaves
/// XDP no interface to enforce on, and every ban active at that moment —
/// not one that ended before — goes to fail2ban. The jail is reconciled
/// only hourly here, so what arrives was queued by the takeover.
#[test]
fn the_fallback_queues_every_active_ban_when_it_takes_over() {
    if !require_root("the_fallback_queues_every_active_ban_when_it_takes_over") {
        return;
    }
    let fail2ban = Fail2banServer::start();
    let mut net = NetnsPair::new(Subnet::test_net_1(25));
    net.listen(net.server_v4().into(), 25);
    let mut settings = Settings::on(net.server());
    settings.extra = format!(
        "{}reconcile_interval = \"1h\"\n",
        fail2ban_section(&fail2ban)
    );
    let daemon = Daemon::start(net.server(), &settings);
    let status = daemon.status();
    assert_eq!(status["backends"][0]["active"], true, "{status}");
    assert_eq!(status["backends"][1]["active"], false, "{status}");

    let client = net.client_v4().to_string();
    let active = [
        client.as_str(),
        "203.0.113.0/28",
        "2001:db8:25::77",
        "198.51.100.9",
    ];
    let mut ban = vec!["ban"];
    ban.extend(active);
    daemon.cli_ok(&ban);
    daemon.cli_ok(&["ban", "198.51.100.10"]);
    daemon.cli_ok(&["unban", "198.51.100.10"]);
    assert!(
        !can_connect(net.client(), net.server_v4().into(), 25, 1),
        "XDP drops the client"
    );
    assert!(
        fail2ban.cli_banned(JAIL).is_empty(),
        "an idle fallback gets nothing"
    );

    settings.interfaces = vec!["no-such-if0".to_owned()];
    daemon.rewrite_config(&settings);
    daemon.reload();
    let status = daemon.status();
    assert_eq!(status["backends"][0]["active"], false, "{status}");
    assert_eq!(status["backends"][1]["active"], true, "{status}");
    let listed = fail2ban.wait_until_listed(&set(&active), JAIL_TIMEOUT);
    assert_eq!(listed, set(&active), "exactly the active bans");
    daemon.cli_ok(&["ban", "198.51.100.11"]);
    wait_jail(
        &fail2ban,
        &daemon,
        "198.51.100.11",
        true,
        "a ban after the takeover",
    );
}

/// Operations queued while fail2ban is down are rows of the store's
/// `outbox` table: a SIGKILL of the daemon leaves every one there, and the
/// restarted daemon delivers them once fail2ban is back.
#[test]
fn queued_fail2ban_operations_survive_a_sigkill_of_the_daemon() {
    if !require_root("queued_fail2ban_operations_survive_a_sigkill_of_the_daemon") {
        return;
    }
    let mut fail2ban = Fail2banServer::start();
    let net = NetnsPair::new(Subnet::test_net_2(26));
    let mut settings = Settings::on(net.server());
    "backends = [\"fail2ban\"]".clone_into(&mut settings.ban_extra);
    settings.extra = format!(
        "{}reconcile_interval = \"1h\"\n",
        fail2ban_section(&fail2ban)
    );
    let mut daemon = Daemon::start(net.server(), &settings);
    daemon.cli_ok(&["ban", "198.51.100.50"]);
    wait_jail(
        &fail2ban,
        &daemon,
        "198.51.100.50",
        true,
        "before the outage",
    );

    fail2ban.stop();
    let queued: Vec<String> = (1..=20).map(|i| format!("203.0.113.{i}")).collect();
    let mut ban = vec!["ban"];
    ban.extend(queued.iter().map(String::as_str));
    daemon.cli_ok(&ban);
    daemon.cli_ok(&["unban", "198.51.100.50"]);
    assert_eq!(fail2ban_queue_depth(&daemon), 21);
    daemon.kill(libc::SIGKILL);

    let store = Store::open_in(daemon.state_dir()).unwrap();
    let pending: BTreeSet<(String, String)> = store
        .outbox_pending("fail2ban")
        .unwrap()
        .into_iter()
        .map(|row| (row.op, row.target))
        .collect();
    drop(store);
    let mut expected: BTreeSet<(String, String)> = queued
        .iter()
        .map(|target| ("ban".to_owned(), target.clone()))
        .collect();
    expected.insert(("unban".to_owned(), "198.51.100.50".to_owned()));
    assert_eq!(pending, expected, "the outbox after the SIGKILL");

    fail2ban.launch();
    daemon.restart();
    fail2ban.wait_until_listed(&queued.iter().cloned().collect(), JAIL_TIMEOUT);
    wait_jail(
        &fail2ban,
        &daemon,
        "198.51.100.50",
        false,
        "the queued unban",
    );
    wait_queue_empty(&daemon);
}
