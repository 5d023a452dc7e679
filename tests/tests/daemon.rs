//! End to end: the real `spamwall` daemon, attached to a veth in a private
//! network namespace, driven through its CLI, with real TCP connections
//! from a second namespace.
//!
//! Each test has its own namespaces, addresses, control socket and pin
//! directory, and removes them all (also when it fails). Needs root and the
//! binary (`cargo build -p policy-daemon`, or `SPAMWALL_BIN`); run serially:
//! `cargo test -p spamwall-tests --test daemon -- --test-threads=1`.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::Path,
    process::Output,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;
use spamwall::{
    bans::{BanEntry, BanLength},
    control::{Request, Response},
};
use spamwall_tests::{
    daemon::{Daemon, Settings},
    netns::{Ipv6Header, NetnsPair, Side, Subnet, connects_with_ipv6_header},
    require_root,
};
use xdp_common::{LINK_PIN_DIR, MAP_NAMES, PROGRAM_NAME};

/// The port the listeners serve, as an MTA would.
const SMTP: u16 = 25;
/// A port outside `xdp.ports` in the ports test.
const HTTP: u16 = 80;
/// `nc -w` for connections expected to complete: they take milliseconds.
const CONNECT_SECS: u32 = 2;
/// `nc -w` for connections expected to be dropped: the SYN gets no answer.
const DROPPED_SECS: u32 = 1;

/// A daemon on the server end of a fresh namespace pair. Fields drop in
/// order: the daemon is killed and its pins purged before the namespaces
/// go.
struct Setup {
    daemon: Daemon,
    net: NetnsPair,
}

impl Setup {
    /// Namespaces on `subnet`, listeners for `ports` on both server
    /// addresses, and a daemon attached to the server's veth with
    /// `configure` applied to the default settings.
    fn new(subnet: Subnet, ports: &[u16], configure: impl FnOnce(&mut Settings)) -> Self {
        let mut net = NetnsPair::new(subnet);
        for &port in ports {
            net.listen_both(port);
        }
        let mut settings = Settings::on(net.server());
        configure(&mut settings);
        let daemon = Daemon::start(net.server(), &settings);
        Self { daemon, net }
    }

    fn assert_connects(&self, addr: impl Into<IpAddr>, port: u16, context: &str) {
        let addr = addr.into();
        assert!(
            self.net.can_connect(addr, port, CONNECT_SECS),
            "{context}: client {} could not connect to [{addr}]:{port}\nstats: {}\ndaemon log:\n{}",
            self.net.client(),
            self.stats_text(),
            self.daemon.log()
        );
    }

    /// The connection times out and the family's `dropped_*` counter
    /// rises: a refusal (RST) or a dead listener fails the connection
    /// without moving it.
    fn assert_dropped(&self, addr: impl Into<IpAddr>, port: u16, context: &str) {
        let addr = addr.into();
        let name = if addr.is_ipv4() {
            "dropped_v4"
        } else {
            "dropped_v6"
        };
        let before = self.dropped(name);
        assert!(
            !self.net.can_connect(addr, port, DROPPED_SECS),
            "{context}: client {} connected to [{addr}]:{port} but should be dropped\nstats: {}\ndaemon log:\n{}",
            self.net.client(),
            self.stats_text(),
            self.daemon.log()
        );
        let after = self.dropped(name);
        assert!(
            after > before,
            "{context}: the connection to [{addr}]:{port} failed, but {name} stayed at {before}: \
             refused or not listening, not dropped\ndaemon log:\n{}",
            self.daemon.log()
        );
    }

    /// The drop counter `name` (`dropped_v4`, `dropped_v6`): from `stats`
    /// while the daemon runs, else from the pinned counters map, as they
    /// go on counting without it.
    fn dropped(&self, name: &str) -> u64 {
        if self.daemon.pid().is_some() {
            return counter(&self.daemon.stats(), name);
        }
        let pinned = spamwall::dataplane::Dataplane::load(
            self.daemon.pin_dir(),
            spamwall_tests::TEST_CAPACITIES,
        )
        .unwrap_or_else(|e| panic!("opening the pinned maps: {e}"));
        pinned
            .counters()
            .unwrap_or_else(|e| panic!("reading the pinned counters: {e}"))
            .iter()
            .find_map(|(counter, value)| (counter.name() == name).then_some(value))
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// `stats --json` for failure messages; never panics.
    fn stats_text(&self) -> String {
        let output = self.daemon.cli(["stats", "--json"]);
        if output.status.success() {
            String::from_utf8_lossy(&output.stdout).into_owned()
        } else {
            format!("(daemon not answering: {})", stderr(&output))
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("stats --json has no number {name:?}: {stats}"))
}

/// The `list --json` entry for `addr`, if any.
fn listed<'a>(bans: &'a [Value], addr: &str) -> Option<&'a Value> {
    bans.iter().find(|ban| ban["addr"] == addr)
}

fn link_pins(daemon: &Daemon) -> Vec<String> {
    let links = daemon.pin_dir().join(LINK_PIN_DIR);
    let mut names: Vec<String> = std::fs::read_dir(&links)
        .unwrap_or_else(|e| panic!("reading {}: {e}", links.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn ipv4_ban_drops_and_unban_restores() {
    if !require_root("ipv4_ban_drops_and_unban_restores") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_1(1), &[SMTP], |_| {});
    let (server, client) = (setup.net.server_v4(), setup.net.client_v4());
    setup.assert_connects(server, SMTP, "before any ban");

    let banned = setup
        .daemon
        .cli_ok(&["ban", &client.to_string(), "--reason", "e2e v4"]);
    assert!(banned.contains(&format!("banned {client} ")), "{banned}");
    setup.assert_dropped(server, SMTP, "after ban");
    setup.assert_connects(
        setup.net.server_v6(),
        SMTP,
        "IPv6 of a client banned by IPv4",
    );

    let stats = setup.daemon.stats();
    assert!(
        counter(&stats, "dropped_v4") > 0,
        "nothing dropped: {stats}"
    );
    assert_eq!(counter(&stats, "dropped_v6"), 0, "{stats}");
    assert_eq!(counter(&stats, "bans_active"), 1, "{stats}");
    let bans = setup.daemon.list();
    let ban = listed(&bans, &client.to_string()).unwrap_or_else(|| panic!("not listed: {bans:?}"));
    assert_eq!(ban["source"], "cli", "{ban}");
    assert_eq!(ban["reason"], "e2e v4", "{ban}");
    assert_eq!(ban["count"], 1, "{ban}");
    assert!(ban["expires_at"].is_string(), "a 1h ban expires: {ban}");

    let unbanned = setup.daemon.cli_ok(&["unban", &client.to_string()]);
    assert!(
        unbanned.contains(&format!("unbanned {client}")),
        "{unbanned}"
    );
    setup.assert_connects(server, SMTP, "after unban");
    let stats = setup.daemon.stats();
    assert_eq!(counter(&stats, "bans_active"), 0, "{stats}");
    assert!(setup.daemon.list().is_empty());
}

#[test]
fn ipv6_ban_drops_and_unban_restores() {
    if !require_root("ipv6_ban_drops_and_unban_restores") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_2(2), &[SMTP], |_| {});
    let (server, client) = (setup.net.server_v6(), setup.net.client_v6());
    setup.assert_connects(server, SMTP, "before any ban");

    let banned = setup.daemon.cli_ok(&["ban", &client.to_string()]);
    assert!(banned.contains(&format!("banned {client} ")), "{banned}");
    setup.assert_dropped(server, SMTP, "after ban");
    setup.assert_connects(
        setup.net.server_v4(),
        SMTP,
        "IPv4 of a client banned by IPv6",
    );

    let stats = setup.daemon.stats();
    assert!(
        counter(&stats, "dropped_v6") > 0,
        "nothing dropped: {stats}"
    );
    assert_eq!(counter(&stats, "dropped_v4"), 0, "{stats}");
    assert!(listed(&setup.daemon.list(), &client.to_string()).is_some());

    setup.daemon.cli_ok(&["unban", &client.to_string()]);
    setup.assert_connects(server, SMTP, "after unban");
    assert!(setup.daemon.list().is_empty());
}

#[test]
fn prefix_bans_drop_clients_inside() {
    if !require_root("prefix_bans_drop_clients_inside") {
        return;
    }
    // Generic (skb) mode here; the other tests take auto, i.e. native. The
    // prefixes cover the server's own addresses too, which ignore_self
    // would refuse (tested in `own_addresses_are_never_banned`).
    let subnet = Subnet::test_net_3(3);
    let setup = Setup::new(subnet, &[SMTP], |s| {
        s.mode = "skb".to_owned();
        s.ignore_self = false;
    });
    let report = setup.daemon.status();
    assert_eq!(report["interfaces"][0]["mode"], "skb", "{report}");
    let (server_v4, server_v6) = (setup.net.server_v4(), setup.net.server_v6());
    let v4_prefix = format!("{}/25", subnet.v4_host(0));
    let v6_prefix = subnet.v6_net();

    setup.daemon.cli_ok(&["ban", &v4_prefix]);
    setup.assert_dropped(server_v4, SMTP, "client inside a banned /25");
    setup.assert_connects(server_v6, SMTP, "IPv6 while only an IPv4 prefix is banned");
    assert!(
        listed(&setup.daemon.list(), &v4_prefix).is_some(),
        "{v4_prefix} not listed"
    );
    setup.daemon.cli_ok(&["unban", &v4_prefix]);
    setup.assert_connects(server_v4, SMTP, "after unbanning the /25");

    let banned = setup.daemon.cli_ok(&["ban", &v6_prefix]);
    assert!(banned.contains(&v6_prefix), "{banned}");
    setup.assert_dropped(server_v6, SMTP, "client inside a banned /64");
    setup.assert_connects(server_v4, SMTP, "IPv4 while only an IPv6 prefix is banned");
    let stats = setup.daemon.stats();
    assert!(counter(&stats, "dropped_v4") > 0, "{stats}");
    assert!(counter(&stats, "dropped_v6") > 0, "{stats}");
    assert_eq!(counter(&stats, "prefixes_v6"), 1, "{stats}");
    setup.daemon.cli_ok(&["unban", &v6_prefix]);
    setup.assert_connects(server_v6, SMTP, "after unbanning the /64");
}

#[test]
fn bans_and_drops_survive_sigkill_and_restart() {
    if !require_root("bans_and_drops_survive_sigkill_and_restart") {
        return;
    }
    let mut setup = Setup::new(Subnet::test_net_1(4), &[SMTP], |_| {});
    let (server, client) = (setup.net.server_v4(), setup.net.client_v4().to_string());
    setup.daemon.cli_ok(&[
        "ban",
        &client,
        "--for",
        "10m",
        "--reason",
        "before the crash",
    ]);
    // A second ban of the same address counts up.
    setup.daemon.cli_ok(&["ban", &client, "--for", "10m"]);
    let before: Vec<BanEntry> =
        serde_json::from_str(&setup.daemon.cli_ok(&["list", "--json"])).unwrap();
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].count, 2, "{before:?}");
    setup.assert_dropped(server, SMTP, "banned, daemon running");

    let status = setup.daemon.kill(libc::SIGKILL);
    assert!(!status.success(), "SIGKILL: {status}");
    let unreachable = setup.daemon.cli(["status"]);
    assert_eq!(
        unreachable.status.code(),
        Some(1),
        "{}",
        stderr(&unreachable)
    );
    setup.assert_dropped(server, SMTP, "banned, daemon killed");
    assert_eq!(
        link_pins(&setup.daemon),
        [format!("{}:native", setup.net.server())]
    );

    setup.daemon.restart();
    let report = setup.daemon.status();
    assert_eq!(
        report["interfaces"][0]["reused"], true,
        "the pinned link should be kept: {report}"
    );
    assert_eq!(
        link_pins(&setup.daemon),
        [format!("{}:native", setup.net.server())]
    );
    let after: Vec<BanEntry> =
        serde_json::from_str(&setup.daemon.cli_ok(&["list", "--json"])).unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].addr, before[0].addr);
    assert_eq!(after[0].count, before[0].count);
    assert_eq!(after[0].source, before[0].source);
    assert_eq!(
        after[0].reason, before[0].reason,
        "the store keeps the reason"
    );
    let (old, new) = (before[0].expires_at.unwrap(), after[0].expires_at.unwrap());
    let drift = new
        .duration_since(old)
        .or_else(|_| old.duration_since(new))
        .unwrap();
    assert!(
        drift < Duration::from_secs(2),
        "expiry moved by {drift:?} across the restart: {before:?} -> {after:?}"
    );
    assert!(
        new > SystemTime::now() + Duration::from_secs(500),
        "{after:?}"
    );
    setup.assert_dropped(server, SMTP, "banned, daemon restarted");

    setup.daemon.cli_ok(&["unban", &client]);
    setup.assert_connects(server, SMTP, "unbanned after the restart");
    // Ban again: the new daemon enforces on the kept link.
    setup.daemon.cli_ok(&["ban", &client]);
    setup.assert_dropped(server, SMTP, "banned by the restarted daemon");
}

#[test]
fn sigterm_leaves_pins_and_drops_until_detach() {
    if !require_root("sigterm_leaves_pins_and_drops_until_detach") {
        return;
    }
    let mut setup = Setup::new(Subnet::test_net_2(5), &[SMTP], |_| {});
    let (server, client) = (setup.net.server_v4(), setup.net.client_v4().to_string());
    setup.daemon.cli_ok(&["ban", &client]);
    setup.assert_dropped(server, SMTP, "banned, daemon running");

    let status = setup.daemon.kill(libc::SIGTERM);
    assert!(
        status.success(),
        "SIGTERM should exit 0, got {status}\n{}",
        setup.daemon.log()
    );
    // Logged on the way out, through the log writer thread: written
    // before the process ended.
    assert!(
        setup.daemon.log().contains("stopping; the XDP program"),
        "the last line before exit is missing from the log:\n{}",
        setup.daemon.log()
    );
    assert!(
        !setup.daemon.socket().exists(),
        "control socket left behind: {}",
        setup.daemon.socket().display()
    );
    let iface = setup.net.server();
    let links = link_pins(&setup.daemon);
    assert!(
        links
            .iter()
            .any(|name| name.starts_with(&format!("{iface}:"))),
        "no link pin for {iface}: {links:?}"
    );
    let pin_dir = setup.daemon.pin_dir();
    for pin in MAP_NAMES.iter().chain([&PROGRAM_NAME]) {
        assert!(
            pin_dir.join(pin).exists(),
            "{pin} is no longer pinned under {} after SIGTERM",
            pin_dir.display()
        );
    }
    setup.assert_dropped(server, SMTP, "banned, daemon stopped");

    let detached = setup.daemon.detach(&[]);
    assert!(
        detached.status.success(),
        "xdp detach: {}{}",
        stdout(&detached),
        stderr(&detached)
    );
    assert!(
        stdout(&detached).contains(&format!("detached from {iface}")),
        "{}",
        stdout(&detached)
    );
    assert!(link_pins(&setup.daemon).is_empty());
    assert!(!pin_dir.join(PROGRAM_NAME).exists(), "program still pinned");
    setup.assert_connects(server, SMTP, "after xdp detach");
}

#[test]
fn prometheus_endpoint_reports_bans_and_drops() {
    if !require_root("prometheus_endpoint_reports_bans_and_drops") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_1(9), &[SMTP], |s| {
        s.extra = "[metrics]\nlisten = \"127.0.0.1:9465\"\n".to_owned();
    });
    let client = setup.net.client_v4().to_string();
    setup.daemon.cli_ok(&["ban", &client]);
    setup.assert_dropped(setup.net.server_v4(), SMTP, "banned client");
    let scrape = setup.net.exec_in(
        Side::Server,
        &["curl", "-sf", "http://127.0.0.1:9465/metrics"],
        Duration::from_secs(10),
    );
    assert!(scrape.status.success(), "curl: {}", stderr(&scrape));
    let text = stdout(&scrape);
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(line_start))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
    };
    assert!((value("spamwall_bans_active{kind=\"v4\"}") - 1.0).abs() < f64::EPSILON);
    assert!(value("spamwall_xdp_packets_total{outcome=\"dropped_v4\"}") > 0.0);
    assert!((value("spamwall_bans_total{source=\"cli\"}") - 1.0).abs() < f64::EPSILON);
    assert!((value("spamwall_backend_up{backend=\"xdp\"}") - 1.0).abs() < f64::EPSILON);
}

/// A ban that finds the manager held by a bulk ban waits, and the wait
/// is counted in `spamwall_manager_lock_wait_seconds`.
#[test]
fn waits_for_the_ban_manager_are_counted_in_the_metrics() {
    const BULK: u32 = 200_000;
    if !require_root("waits_for_the_ban_manager_are_counted_in_the_metrics") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_3(14), &[], |s| {
        s.capacity = 1 << 18;
        s.extra = "[metrics]\nlisten = \"127.0.0.1:9465\"\n".to_owned();
    });
    let scrape = || {
        let scrape = setup.net.exec_in(
            Side::Server,
            &["curl", "-sf", "http://127.0.0.1:9465/metrics"],
            Duration::from_secs(10),
        );
        assert!(scrape.status.success(), "curl: {}", stderr(&scrape));
        stdout(&scrape)
    };
    let waits = |text: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix("spamwall_manager_lock_wait_seconds_count "))
            .map_or(0, |count| count.trim().parse().unwrap())
    };
    let before = waits(&scrape());
    // 100.64.0.0 onwards: never the test's own addresses.
    let mut list = String::new();
    for n in 0..BULK {
        writeln!(list, "{}", std::net::Ipv4Addr::from(0x6440_0000 + n)).unwrap();
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), list).unwrap();
    let bulk_done = std::sync::atomic::AtomicBool::new(false);
    let singles = std::thread::scope(|scope| {
        let bulk = scope.spawn(|| {
            let banned = setup
                .daemon
                .cli_ok(&["ban", "--file", file.path().to_str().unwrap()]);
            bulk_done.store(true, std::sync::atomic::Ordering::SeqCst);
            banned
        });
        // Single bans over the control socket while the bulk ban's parts
        // hold the manager.
        let mut singles = 0_u32;
        while !bulk_done.load(std::sync::atomic::Ordering::SeqCst) && singles < 10_000 {
            let ban = Request::Ban {
                targets: vec![format!("198.18.0.{}", singles % 250 + 1)],
                length: BanLength::Default,
                reason: "single".into(),
                force: false,
            };
            let answer = spamwall::control::request(setup.daemon.socket(), &ban).unwrap();
            assert!(matches!(answer, Response::Banned { .. }), "{answer:?}");
            singles += 1;
        }
        bulk.join().unwrap();
        singles
    });
    let text = scrape();
    assert!(
        waits(&text) > before,
        "{singles} bans during a bulk ban of {BULK}, none counted as waiting:\n{}",
        text.lines()
            .filter(|line| line.contains("lock_wait"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        text.contains("spamwall_manager_lock_wait_seconds_bucket{le=\"0.001\"}"),
        "the histogram has its buckets:\n{text}"
    );
}

#[test]
fn a_second_daemon_on_the_same_configuration_stops_before_touching_anything() {
    if !require_root("a_second_daemon_on_the_same_configuration_stops_before_touching_anything") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_1(11), &[SMTP], |_| {});
    let client = setup.net.client_v4().to_string();
    setup.daemon.cli_ok(&["ban", &client]);
    let linked_program = || {
        let links = setup.daemon.pin_dir().join(LINK_PIN_DIR);
        let link = std::fs::read_dir(&links)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let out = spamwall_tests::netns::run_bounded(
            std::process::Command::new("bpftool")
                .args(["-j", "link", "show", "pinned"])
                .arg(&link),
            Duration::from_secs(10),
        );
        let info: Value = serde_json::from_slice(&out.stdout).unwrap();
        info["prog_id"].as_u64().unwrap()
    };
    let program_before = linked_program();
    let second = spamwall_tests::netns::run_bounded(
        spamwall_tests::netns::in_netns(setup.net.server(), spamwall_tests::daemon::spamwall_bin())
            .arg("run")
            .arg("--config")
            .arg(setup.daemon.config_path()),
        Duration::from_secs(20),
    );
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("already listening"),
        "{}",
        stderr(&second)
    );
    assert_eq!(
        linked_program(),
        program_before,
        "the link still runs the first daemon's program"
    );
    setup.assert_dropped(setup.net.server_v4(), SMTP, "the ban still holds");
}

#[test]
fn own_addresses_are_never_banned() {
    if !require_root("own_addresses_are_never_banned") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_2(7), &[SMTP], |_| {});
    let server = setup.net.server_v4().to_string();
    let refused = setup.daemon.cli(["ban", &server]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("address of this host"),
        "{}",
        stderr(&refused)
    );
    setup.daemon.cli_ok(&["status"]);
}

#[test]
fn ban_file_reports_bad_lines_and_bans_the_rest() {
    if !require_root("ban_file_reports_bad_lines_and_bans_the_rest") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_3(8), &[SMTP], |_| {});
    let client = setup.net.client_v4().to_string();
    let mut list = String::from("# bots seen by postscreen\n");
    // 1,000 lines, 500 distinct addresses: each appears twice.
    for prefix in ["198.51.100", "192.0.2"] {
        for i in 0..500_u32 {
            writeln!(list, "{prefix}.{} # bot {i}", i % 250 + 1).unwrap();
        }
    }
    list.push_str("not-an-address\n");
    writeln!(list, "{client}\n2001:db8:77::/64").unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &list).unwrap();
    let path = file.path().to_str().unwrap().to_owned();
    let out = setup
        .daemon
        .cli(["ban", "--file", &path, "--reason", "bulk"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad line makes the exit code 2"
    );
    assert!(
        stderr(&out).contains(&format!("{path}:1002:")),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("not-an-address"), "{}", stderr(&out));
    let stats = setup.daemon.stats();
    assert_eq!(counter(&stats, "bans_v4"), 501, "{stats}");
    assert_eq!(counter(&stats, "prefixes_v6"), 1, "{stats}");
    setup.assert_dropped(setup.net.server_v4(), SMTP, "client listed in the file");
}

#[test]
fn allowlisted_targets_are_refused_and_others_still_banned() {
    if !require_root("allowlisted_targets_are_refused_and_others_still_banned") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_1(6), &[SMTP], |s| {
        s.allowlist = vec!["203.0.113.0/24".to_owned(), "198.51.100.7".to_owned()];
    });
    let client = setup.net.client_v4().to_string();

    let mixed = setup.daemon.cli(["ban", "203.0.113.9", &client]);
    assert_eq!(mixed.status.code(), Some(2), "{}", stderr(&mixed));
    let err = stderr(&mixed);
    assert!(err.contains("refused 203.0.113.9"), "{err}");
    assert!(err.contains("allowlist"), "{err}");
    assert!(
        stdout(&mixed).contains(&format!("banned {client} ")),
        "{}",
        stdout(&mixed)
    );
    let bans = setup.daemon.list();
    assert!(listed(&bans, &client).is_some(), "{bans:?}");
    assert!(listed(&bans, "203.0.113.9").is_none(), "{bans:?}");
    setup.assert_dropped(
        setup.net.server_v4(),
        SMTP,
        "the other target of a partly refused ban",
    );

    for target in [
        "127.0.0.1",
        "::1",
        "127.0.0.0/8",
        "198.51.100.0/24",
        "203.0.113.0/25",
    ] {
        let refused = setup.daemon.cli(["ban", target]);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "ban {target}: {}",
            stderr(&refused)
        );
        assert!(
            stderr(&refused).contains(&format!("refused {target}")),
            "ban {target}: {}",
            stderr(&refused)
        );
    }
    assert_eq!(setup.daemon.list().len(), 1, "only {client} is banned");
    setup.daemon.cli_ok(&["status"]);
}

#[test]
fn invalid_address_is_refused_before_anything_is_sent() {
    if !require_root("invalid_address_is_refused_before_anything_is_sent") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_3(7), &[], |_| {});
    let client = setup.net.client_v4().to_string();
    for args in [
        vec!["ban", "192.0.2.300"],
        vec!["ban", &client, "192.0.2.300"],
    ] {
        let output = setup.daemon.cli(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let err = stderr(&output);
        assert!(err.contains("192.0.2.300"), "{args:?}: {err}");
        assert!(err.contains("nothing was sent"), "{args:?}: {err}");
    }
    let bans = setup.daemon.list();
    assert!(
        bans.is_empty(),
        "a call with a bad address banned something: {bans:?}"
    );
    let output = setup.daemon.cli(["unban", "2001:db8::zz"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("2001:db8::zz"),
        "{}",
        stderr(&output)
    );
    setup.daemon.cli_ok(&["status"]);
}

#[test]
fn bans_apply_only_to_configured_ports() {
    if !require_root("bans_apply_only_to_configured_ports") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_1(8), &[SMTP, HTTP], |s| {
        s.ports = vec![SMTP];
    });
    let net = &setup.net;
    let (client_v4, client_v6) = (net.client_v4().to_string(), net.client_v6().to_string());
    setup.daemon.cli_ok(&["ban", &client_v4, &client_v6]);

    for server in [IpAddr::from(net.server_v4()), net.server_v6().into()] {
        setup.assert_dropped(server, SMTP, "banned, enforced port");
        setup.assert_connects(server, HTTP, "banned, port outside xdp.ports");
    }
    let stats = setup.daemon.stats();
    assert!(counter(&stats, "dropped_v4") > 0, "{stats}");
    assert!(counter(&stats, "dropped_v6") > 0, "{stats}");
    assert!(counter(&stats, "out_of_scope_passed") > 0, "{stats}");
}

#[test]
fn ipv6_extension_headers_do_not_escape_the_port_scope() {
    if !require_root("ipv6_extension_headers_do_not_escape_the_port_scope") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_2(10), &[SMTP, HTTP], |s| {
        s.ports = vec![SMTP];
    });
    let net = &setup.net;
    let banned = net.client_v6();
    let clean = net.add_client_v6(3);
    setup.daemon.cli_ok(&["ban", &banned.to_string()]);
    let server = net.server_v6();
    let connects = |src, port, header| {
        let timeout = Duration::from_secs(CONNECT_SECS.into());
        connects_with_ipv6_header(net.client(), src, server, port, header, timeout)
    };
    for header in [Ipv6Header::DestinationOptions, Ipv6Header::HopByHop] {
        assert!(
            !connects(banned, SMTP, header),
            "banned client with a {header:?} header reached the enforced port {SMTP}\nstats: {}\ndaemon log:\n{}",
            setup.stats_text(),
            setup.daemon.log()
        );
        assert!(
            connects(clean, SMTP, header),
            "clean client with a {header:?} header could not connect to port {SMTP}\nstats: {}",
            setup.stats_text()
        );
        assert!(
            connects(banned, HTTP, header),
            "banned client with a {header:?} header could not reach port {HTTP}, outside xdp.ports\nstats: {}",
            setup.stats_text()
        );
    }
    let stats = setup.daemon.stats();
    assert!(counter(&stats, "dropped_v6") > 0, "{stats}");
    assert!(counter(&stats, "out_of_scope_passed") > 0, "{stats}");
}

#[test]
fn an_expired_longer_prefix_does_not_hide_a_live_shorter_one() {
    if !require_root("an_expired_longer_prefix_does_not_hide_a_live_shorter_one") {
        return;
    }
    // The prefixes cover the server's own addresses: ignore_self off.
    let subnet = Subnet::test_net_1(11);
    let setup = Setup::new(subnet, &[SMTP], |s| s.ignore_self = false);
    let (server_v4, server_v6) = (setup.net.server_v4(), setup.net.server_v6());
    let v4_short = subnet.v4_net();
    let v4_long = format!("{}/25", subnet.v4_host(0));
    let v6_short = format!("{}/48", subnet.v6_host(0));
    let v6_long = subnet.v6_net();
    setup
        .daemon
        .cli_ok(&["ban", &v4_short, &v6_short, "--for", "1h"]);
    setup
        .daemon
        .cli_ok(&["ban", &v4_long, &v6_long, "--for", "1s"]);
    // Until the longer bans have ended (reconciliation, which would delete
    // their map entries, runs only once a minute).
    let deadline = Instant::now() + Duration::from_secs(10);
    while listed(&setup.daemon.list(), &v4_long).is_some()
        || listed(&setup.daemon.list(), &v6_long).is_some()
    {
        assert!(
            Instant::now() < deadline,
            "{v4_long} and {v6_long} still listed after 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    setup.assert_dropped(
        server_v4,
        SMTP,
        "client in an expired /25 inside a live /24",
    );
    setup.assert_dropped(
        server_v6,
        SMTP,
        "client in an expired /64 inside a live /48",
    );
    setup.daemon.cli_ok(&["unban", &v4_short, &v6_short]);
    setup.assert_connects(server_v4, SMTP, "after unbanning the /24");
    setup.assert_connects(server_v6, SMTP, "after unbanning the /48");
}

/// Sends one raw control request line, as any member of the socket's group
/// could without the CLI, and returns the answer line.
fn raw_control_request(socket: &Path, line: &str) -> String {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(line.as_bytes()).unwrap();
    stream.write_all(b"\n").unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut answer)
        .unwrap();
    answer
}

#[test]
fn ban_lengths_are_bounded_and_any_stored_expiry_is_listed() {
    if !require_root("ban_lengths_are_bounded_and_any_stored_expiry_is_listed") {
        return;
    }
    let mut setup = Setup::new(Subnet::test_net_3(12), &[SMTP], |_| {});
    let client = setup.net.client_v4().to_string();
    let refused = setup.daemon.cli(["ban", &client, "--for", "10000y"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("10000years"),
        "{}",
        stderr(&refused)
    );
    // Past the CLI, straight to the socket: refused by the ban manager.
    let answer = raw_control_request(
        setup.daemon.socket(),
        &format!(
            r#"{{"command":"ban","targets":["{client}"],"length":{{"for":18446744073709551615}},"reason":"forever and a day"}}"#
        ),
    );
    assert!(
        answer.contains("refused") && answer.contains("exceeds the maximum"),
        "{answer}"
    );
    assert!(setup.daemon.list().is_empty(), "{:?}", setup.daemon.list());

    // Rows no path can write any more, as an older version or a damaged
    // store holds them: listed, counted and enforced, never a panic.
    setup.daemon.kill(libc::SIGTERM);
    let store = spamwall::bans::store::Store::open_in(&setup.daemon.dir().join("state")).unwrap();
    let row = |target: &str, expires_at| spamwall::bans::store::StoredBan {
        target: target.parse().unwrap(),
        expires_at,
        source: spamwall::bans::Source::Cli,
        reason: "stored by hand".to_owned(),
        detail: String::new(),
        count: 1,
        scope: spamwall::bans::BanScope::Default,
        first_banned_at: i64::MIN,
        last_banned_at: i64::MAX,
    };
    store
        .put_bans(&[
            row(&format!("{client}/32"), Some(i64::MAX - 1)),
            row("203.0.113.99/32", Some(i64::MIN)),
        ])
        .unwrap();
    drop(store);
    setup.daemon.restart();
    let bans = setup.daemon.list();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0]["addr"], client.as_str());
    assert_eq!(bans[0]["expires_at"], "9999-12-31T23:59:59Z");
    let human = setup.daemon.cli_ok(&["list"]);
    assert!(human.contains("9999-12-31T23:59:59Z"), "{human}");
    assert_eq!(counter(&setup.daemon.stats(), "bans_active"), 1);
    setup.assert_dropped(setup.net.server_v4(), SMTP, "client with a ban until 9999");
}

#[test]
fn prefixes_wider_than_the_limit_need_force() {
    if !require_root("prefixes_wider_than_the_limit_need_force") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_2(13), &[SMTP], |s| {
        s.ban_extra = "widest_v6 = 48".to_owned();
    });
    for (target, key) in [
        ("10.0.0.0/8", "ban.widest_v4 (/16)"),
        ("2001:db8:e000::/35", "ban.widest_v6 (/48)"),
    ] {
        let refused = setup.daemon.cli(["ban", target]);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{target}: {}",
            stderr(&refused)
        );
        let message = stderr(&refused);
        assert!(
            message.contains(target) && message.contains(key) && message.contains("--force"),
            "{message}"
        );
    }
    let list = setup.daemon.dir().join("wide.txt");
    std::fs::write(
        &list,
        "172.16.0.0/12
",
    )
    .unwrap();
    let refused = setup.daemon.cli(["ban", "--file", list.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("ban.widest_v4"),
        "{}",
        stderr(&refused)
    );
    assert!(setup.daemon.list().is_empty(), "{:?}", setup.daemon.list());
    let forced = setup
        .daemon
        .cli_ok(&["ban", "10.0.0.0/8", "2001:db8:e000::/35", "--force"]);
    assert!(
        forced.contains("10.0.0.0/8") && forced.contains("2001:db8:e000::/35"),
        "{forced}"
    );
    assert_eq!(setup.daemon.list().len(), 2);
}
