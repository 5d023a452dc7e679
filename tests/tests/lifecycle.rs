//! End to end: what the daemon promises across its own life — a SIGHUP
//! that changes checks, lists, thresholds and the allowlist in place; a
//! restart that swaps the program into the same link while a banned client
//! floods SYNs and not one gets through; an interface dropped from the
//! configuration detached on restart; the periodic reconciliation of the
//! kernel maps with the store; bans found in the maps adopted into an
//! empty store.
//!
//! Each test has its own namespaces, addresses, control socket and pin
//! directory, and removes them all (also when it fails). Needs root, the
//! binary (`cargo build -p policy-daemon`, or `SPAMWALL_BIN`) and
//! `bpftool`; run serially:
//! `cargo test -p spamwall-tests --test lifecycle -- --test-threads=1`.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::AsRawFd as _,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde_json::Value;
use spamwall::dataplane::{Dataplane, monotonic_now_ns};
use spamwall_tests::{
    TEST_CAPACITIES,
    daemon::{Daemon, Settings, spamwall},
    netns::{NetnsPair, Side, Subnet, run_bounded},
    require_root,
    skip::require,
};
use xdp_common::{BanValue, LINK_PIN_DIR, SOURCE_CLI};

/// The port the listeners serve, as an MTA would.
const SMTP: u16 = 25;
/// `nc -w` for connections expected to complete.
const CONNECT_SECS: u32 = 2;
/// `nc -w` for connections expected to be dropped.
const DROPPED_SECS: u32 = 1;
/// How long a condition the daemon brings about may take to show.
const DEADLINE: Duration = Duration::from_secs(20);

/// A daemon on the server end of a fresh namespace pair, with listeners on
/// port 25. Fields drop in order: the daemon is killed and its pins purged
/// before the namespaces go.
struct Setup {
    daemon: Daemon,
    net: NetnsPair,
    settings: Settings,
}

impl Setup {
    fn new(subnet: Subnet, configure: impl FnOnce(&mut Settings)) -> Self {
        let mut net = NetnsPair::new(subnet);
        net.listen_both(SMTP);
        let mut settings = Settings::on(net.server());
        configure(&mut settings);
        let daemon = Daemon::start(net.server(), &settings);
        Self {
            daemon,
            net,
            settings,
        }
    }

    fn connects(&self) -> bool {
        self.net
            .can_connect(self.net.server_v4().into(), SMTP, CONNECT_SECS)
    }

    fn assert_connects(&self, context: &str) {
        assert!(
            self.connects(),
            "{context}: {} could not connect\nstats: {}\ndaemon log:\n{}",
            self.net.client_v4(),
            self.stats_text(),
            self.daemon.log()
        );
    }

    /// The client's SYN gets no answer and the drop counter moves: a
    /// refusal or a dead listener would not move it.
    fn assert_dropped(&self, context: &str) {
        let before = dropped_v4(&self.daemon);
        assert!(
            !self
                .net
                .can_connect(self.net.server_v4().into(), SMTP, DROPPED_SECS),
            "{context}: {} connected but should be dropped\nstats: {}\ndaemon log:\n{}",
            self.net.client_v4(),
            self.stats_text(),
            self.daemon.log()
        );
        let after = dropped_v4(&self.daemon);
        assert!(
            after > before,
            "{context}: the connection failed but dropped_v4 stayed at {before}\ndaemon log:\n{}",
            self.daemon.log()
        );
    }

    fn stats_text(&self) -> String {
        let output = self.daemon.cli(["stats", "--json"]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

fn dropped_v4(daemon: &Daemon) -> u64 {
    let stats = daemon.stats();
    stats["dropped_v4"]
        .as_u64()
        .unwrap_or_else(|| panic!("stats --json has no dropped_v4: {stats}"))
}

fn listed(daemon: &Daemon) -> Vec<String> {
    daemon
        .list()
        .iter()
        .map(|ban| ban["addr"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls `done` every 50 ms until it holds; panics after [`DEADLINE`]
/// naming `what`, with the daemon's log.
fn wait_for(daemon: &Daemon, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {DEADLINE:?}\ndaemon log:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn bpftool_ready(test: &str) -> bool {
    require(
        test,
        Command::new("bpftool").arg("version").output().is_ok(),
        "bpftool (apt-get install bpftool)",
    )
}

/// `bpftool link show pinned PATH`: the link's id and its program's id.
fn pinned_link(path: &Path) -> (u64, u64) {
    let output = run_bounded(
        Command::new("bpftool")
            .args(["--json", "link", "show", "pinned"])
            .arg(path),
        Duration::from_secs(10),
    );
    assert!(
        output.status.success(),
        "bpftool link show pinned {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let link: Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        link["id"].as_u64().unwrap_or_else(|| panic!("{link}")),
        link["prog_id"].as_u64().unwrap_or_else(|| panic!("{link}")),
    )
}

fn link_pins(daemon: &Daemon) -> Vec<String> {
    let links = daemon.pin_dir().join(LINK_PIN_DIR);
    let mut names: Vec<String> = fs::read_dir(&links)
        .unwrap_or_else(|e| panic!("reading {}: {e}", links.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `spamwall query` against the policy socket `socket` for `client`.
fn query(socket: &Path, client: &str) -> String {
    let server = format!("unix:{}", socket.display());
    let attr = format!("client_address={client}");
    let output = spamwall(["query", "--server", &server, "--attr", &attr]);
    assert!(
        output.status.success(),
        "spamwall query {client}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A policy server on `socket` with a list check read from `list_file`,
/// an inline list check per entry of `inline`, and one threshold.
fn policy_section(socket: &Path, list_file: &Path, inline: &[&str], action: &str) -> String {
    let mut text = format!(
        "[policy]\nlisten = [\"unix:{}\"]\n\n\
         [[policy.check]]\nname = \"from-file\"\ntype = \"list\"\nfile = \"{}\"\nscore = 5\n\n",
        socket.display(),
        list_file.display()
    );
    for (n, client) in inline.iter().enumerate() {
        write!(
            text,
            "[[policy.check]]\nname = \"inline-{n}\"\ntype = \"list\"\nclient = [\"{client}\"]\nscore = 5\n\n"
        )
        .unwrap();
    }
    write!(
        text,
        "[[policy.threshold]]\nscore = 5\naction = \"{action}\"\n"
    )
    .unwrap();
    text
}

/// `kill -HUP` changes the policy checks, a list file, the thresholds and
/// the allowlist (lifting the ban it now covers) while the same process
/// runs on.
#[test]
fn sighup_reloads_checks_lists_thresholds_and_allowlist_in_the_same_process() {
    if !require_root("sighup_reloads_checks_lists_thresholds_and_allowlist_in_the_same_process") {
        return;
    }
    let policy = tempfile::tempdir().unwrap();
    let socket = policy.path().join("policy.sock");
    let list_file = policy.path().join("clients.txt");
    fs::write(&list_file, "192.0.2.60\n").unwrap();
    let mut setup = Setup::new(Subnet::test_net_3(40), |s| {
        s.extra = policy_section(&socket, &list_file, &[], "reject first %IP%");
    });
    let pid = setup.daemon.pid().unwrap();
    let client = setup.net.client_v4().to_string();
    assert_eq!(
        query(&socket, "192.0.2.60"),
        "action=reject first 192.0.2.60"
    );
    assert_eq!(query(&socket, "192.0.2.61"), "action=DUNNO");
    assert_eq!(query(&socket, "192.0.2.62"), "action=DUNNO");
    setup.daemon.cli_ok(&["ban", &client]);
    setup.assert_dropped("banned before the reload");

    fs::write(&list_file, "192.0.2.61\n").unwrap();
    setup.settings.extra =
        policy_section(&socket, &list_file, &["192.0.2.62"], "reject second %IP%");
    setup.settings.allowlist = vec![setup.net.subnet().v4_net()];
    setup.daemon.rewrite_config(&setup.settings);
    setup.daemon.reload();

    assert_eq!(setup.daemon.pid(), Some(pid), "reloaded, not restarted");
    assert_eq!(
        query(&socket, "192.0.2.60"),
        "action=DUNNO",
        "left the list file"
    );
    assert_eq!(
        query(&socket, "192.0.2.61"),
        "action=reject second 192.0.2.61",
        "entered the list file; the threshold's new action"
    );
    assert_eq!(
        query(&socket, "192.0.2.62"),
        "action=reject second 192.0.2.62",
        "a check added by the reload"
    );
    setup.assert_connects("allowlisted by the reload");
    assert!(
        !listed(&setup.daemon).contains(&client),
        "the allowlist lifted the ban"
    );
    let refused = setup.daemon.cli(["ban", &client]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a new ban of an allowlisted address is refused: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(setup.daemon.pid(), Some(pid));
}

/// Sends SYNs from `src` (in namespace `ns`) to `dst`:`port` until `stop`
/// is set, `limit` attempts were made or `longest` passed: one
/// non-blocking connect a millisecond, each socket kept open a moment so
/// the kernel retransmits too. Returns the attempts made and how many
/// connected.
fn flood_syns(
    ns: &str,
    src: Ipv4Addr,
    dst: SocketAddr,
    stop: &Arc<AtomicBool>,
    limit: u32,
    longest: Duration,
) -> thread::JoinHandle<(u32, u32)> {
    let path = format!("/run/netns/{ns}");
    let stop = Arc::clone(stop);
    thread::spawn(move || {
        let netns = fs::File::open(&path).unwrap();
        // SAFETY: a valid namespace descriptor; only this thread moves.
        let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            entered,
            0,
            "setns {path}: {}",
            std::io::Error::last_os_error()
        );
        let started = Instant::now();
        let (mut attempts, mut connected) = (0_u32, 0_u32);
        let mut open: std::collections::VecDeque<socket2::Socket> =
            std::collections::VecDeque::new();
        let settle = |socket: &socket2::Socket| u32::from(socket.peer_addr().is_ok());
        while !stop.load(Ordering::Relaxed) && attempts < limit && started.elapsed() < longest {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )
            .unwrap();
            socket.set_nonblocking(true).unwrap();
            socket.bind(&SocketAddr::from((src, 0)).into()).unwrap();
            // EINPROGRESS: the SYN is on its way.
            let _ = socket.connect(&dst.into());
            attempts += 1;
            open.push_back(socket);
            if open.len() > 64 {
                connected += settle(&open.pop_front().unwrap());
            }
            thread::sleep(Duration::from_millis(1));
        }
        connected += open.iter().map(settle).sum::<u32>();
        (attempts, connected)
    })
}

/// TCP segments the server's namespace has received (`Tcp: InSegs` of
/// its `/proc/net/snmp`): XDP drops before the stack counts.
fn tcp_segments_in(net: &NetnsPair) -> u64 {
    let output = net.exec_in(
        Side::Server,
        &["cat", "/proc/net/snmp"],
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let mut tcp = text.lines().filter(|line| line.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|name| name == "InSegs")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// A banned client floods SYNs while the daemon is stopped and started
/// again: the new program is swapped into the pinned link (same link id,
/// new program id), and the server's TCP stack sees not one segment.
#[test]
fn a_restart_swaps_the_program_in_place_and_lets_no_syn_through() {
    if !require_root("a_restart_swaps_the_program_in_place_and_lets_no_syn_through")
        || !bpftool_ready("a_restart_swaps_the_program_in_place_and_lets_no_syn_through")
    {
        return;
    }
    let mut setup = Setup::new(Subnet::test_net_1(41), |_| {});
    let client = setup.net.client_v4();
    setup.daemon.cli_ok(&["ban", &client.to_string()]);
    setup.assert_dropped("banned");
    let link = setup
        .daemon
        .pin_dir()
        .join(LINK_PIN_DIR)
        .join(format!("{}:native", setup.net.server()));
    let (link_id, old_program) = pinned_link(&link);

    let segments = tcp_segments_in(&setup.net);
    let dropped = dropped_v4(&setup.daemon);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = flood_syns(
        setup.net.client(),
        client,
        SocketAddr::from((setup.net.server_v4(), SMTP)),
        &stop,
        60_000,
        Duration::from_mins(1),
    );
    // Before, during and after the restart: wait until SYNs are counted.
    wait_for(&setup.daemon, "the flood begins", || {
        dropped_v4(&setup.daemon) > dropped + 10
    });
    setup.daemon.kill(libc::SIGTERM);
    setup.daemon.restart();
    let restarted = dropped_v4(&setup.daemon);
    wait_for(&setup.daemon, "the flood meets the new program", || {
        dropped_v4(&setup.daemon) > restarted + 10
    });
    stop.store(true, Ordering::Relaxed);
    let (attempts, connected) = flood.join().unwrap();

    assert_eq!(connected, 0, "{connected} of {attempts} SYNs were answered");
    assert_eq!(
        tcp_segments_in(&setup.net),
        segments,
        "TCP segments reached the server during the restart ({attempts} SYNs sent)"
    );
    let counted = dropped_v4(&setup.daemon) - dropped;
    assert!(
        counted >= u64::from(attempts),
        "{attempts} SYNs sent, {counted} dropped"
    );
    let (new_link_id, new_program) = pinned_link(&link);
    assert_eq!(new_link_id, link_id, "the pinned link is the same");
    assert_ne!(
        new_program, old_program,
        "the restarted daemon's program runs in the link"
    );
    assert_eq!(
        setup.daemon.status()["interfaces"][0]["reused"],
        true,
        "status reports the kept link"
    );
}

/// An interface left out of `xdp.interfaces` loses its link and program
/// on restart; the one still listed keeps enforcing.
#[test]
fn an_interface_removed_from_the_configuration_is_detached_on_restart() {
    if !require_root("an_interface_removed_from_the_configuration_is_detached_on_restart") {
        return;
    }
    let mut net = NetnsPair::new(Subnet::test_net_2(42));
    net.listen(net.server_v4().into(), SMTP);
    let extra = net.add_client(Subnet::test_net_3(43));
    let mut settings = Settings::on(net.server());
    settings.interfaces.push(extra.server_link.clone());
    let mut daemon = Daemon::start(net.server(), &settings);
    let server: IpAddr = net.server_v4().into();
    let extra_connects =
        || spamwall_tests::netns::can_connect(&extra.netns, server, SMTP, CONNECT_SECS);
    daemon.cli_ok(&["ban", &extra.v4().to_string(), &net.client_v4().to_string()]);
    assert!(!extra_connects(), "banned on the second interface");
    assert_eq!(
        link_pins(&daemon),
        [
            format!("{}:native", net.server()),
            format!("{}:native", extra.server_link)
        ]
    );

    daemon.kill(libc::SIGTERM);
    settings.interfaces = vec![net.server().to_owned()];
    daemon.rewrite_config(&settings);
    daemon.restart();

    assert_eq!(link_pins(&daemon), [format!("{}:native", net.server())]);
    let shown = net.exec_in(
        Side::Server,
        &["ip", "-details", "link", "show", "dev", &extra.server_link],
        Duration::from_secs(5),
    );
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        !shown.contains("xdp"),
        "{} still has an XDP program:\n{shown}",
        extra.server_link
    );
    assert!(
        extra_connects(),
        "the banned client of the detached interface is let through\n{}",
        daemon.log()
    );
    assert!(
        !net.can_connect(server, SMTP, DROPPED_SECS),
        "the interface still listed enforces"
    );
    assert!(
        listed(&daemon).contains(&extra.v4().to_string()),
        "the ban stays stored"
    );
}

/// Opens the daemon's pinned maps from the test, as an outside tool would
/// change them. Drop it before the daemon.
fn pinned_maps(daemon: &Daemon) -> Dataplane {
    Dataplane::load(daemon.pin_dir(), TEST_CAPACITIES).expect("opening the pinned maps")
}

fn host(addr: Ipv4Addr) -> IpNet {
    IpNet::from(IpAddr::from(addr))
}

/// With `ban.reconcile_interval` at one second, a ban deleted from the
/// kernel map behind the daemon's back is written back (and counted as an
/// eviction), and an entry the store does not hold is removed. The passes
/// run on their own thread, behind the ban path (niceness 10).
#[test]
fn the_periodic_reconcile_restores_a_deleted_entry_and_removes_a_stray_one() {
    if !require_root("the_periodic_reconcile_restores_a_deleted_entry_and_removes_a_stray_one") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_1(44), |s| {
        "reconcile_interval = \"1s\"".clone_into(&mut s.ban_extra);
    });
    let client = setup.net.client_v4();
    setup.daemon.cli_ok(&["ban", &client.to_string()]);
    setup.assert_dropped("banned");
    let mut maps = pinned_maps(&setup.daemon);
    let stored = maps
        .get(host(client))
        .unwrap()
        .expect("the ban is in the map");

    assert!(maps.remove(host(client)).unwrap(), "deleting the entry");
    let stray = Ipv4Addr::new(192, 0, 2, 99);
    let an_hour = monotonic_now_ns() + 3_600_000_000_000;
    maps.insert(host(stray), BanValue::new(an_hour, SOURCE_CLI, 32, 1))
        .unwrap();
    wait_for(&setup.daemon, "the deleted ban written back", || {
        maps.get(host(client)).unwrap().is_some()
    });
    wait_for(&setup.daemon, "the stray entry removed", || {
        maps.get(host(stray)).unwrap().is_none()
    });
    let restored = maps.get(host(client)).unwrap().unwrap();
    assert_eq!(
        (restored.expires_ns / 1_000_000_000, restored.count),
        (stored.expires_ns / 1_000_000_000, stored.count),
        "written back as stored"
    );
    setup.assert_dropped("after the reconcile");
    assert_eq!(setup.daemon.stats()["evicted"], 1, "counted as an eviction");
    assert_eq!(listed(&setup.daemon), [client.to_string()]);
    drop(maps);
    let pid = setup.daemon.pid().expect("the daemon runs");
    assert_eq!(
        thread_nice(pid, "spamwall-maint"),
        Some(10),
        "the maintenance thread runs at niceness 10"
    );
}

/// The niceness of the thread of `pid` named `name`, if there is one.
fn thread_nice(pid: u32, name: &str) -> Option<i64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads");
    tasks.flatten().find_map(|task| {
        let comm = fs::read_to_string(task.path().join("comm")).ok()?;
        if comm.trim_end() != name {
            return None;
        }
        let stat = fs::read_to_string(task.path().join("stat")).ok()?;
        // Fields after the command's closing parenthesis start at the
        // third (state); niceness is the nineteenth.
        let (_, fields) = stat.rsplit_once(')')?;
        fields.split_whitespace().nth(16)?.parse().ok()
    })
}

/// The store is lost while the pins stay (a new state directory, say):
/// on the next start the bans in the maps are adopted into the store,
/// listed with their expiry, and keep dropping.
#[test]
fn bans_in_the_maps_are_adopted_into_an_empty_store() {
    if !require_root("bans_in_the_maps_are_adopted_into_an_empty_store") {
        return;
    }
    let mut setup = Setup::new(Subnet::test_net_2(45), |_| {});
    let client = setup.net.client_v4().to_string();
    let prefix = "203.0.113.0/24";
    setup
        .daemon
        .cli_ok(&["ban", &client, prefix, "--for", "2h", "--reason", "before"]);
    let before = setup.daemon.list();
    setup.daemon.kill(libc::SIGKILL);
    for entry in fs::read_dir(setup.daemon.state_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("spamwall.db"))
        {
            fs::remove_file(&path).unwrap();
        }
    }
    setup.daemon.restart();

    let after = setup.daemon.list();
    let mut addrs = listed(&setup.daemon);
    addrs.sort();
    assert_eq!(addrs, [client.clone(), prefix.to_owned()], "{after:?}");
    for ban in &before {
        let adopted = after.iter().find(|b| b["addr"] == ban["addr"]).unwrap();
        let expiry =
            |b: &Value| humantime::parse_rfc3339(b["expires_at"].as_str().unwrap()).unwrap();
        let drift = expiry(adopted)
            .duration_since(expiry(ban))
            .unwrap_or_else(|e| e.duration());
        assert!(
            drift <= Duration::from_secs(2),
            "expiry moved by {drift:?}: {ban} -> {adopted}"
        );
        assert_eq!(adopted["source"], "cli", "{adopted}");
    }
    assert!(
        setup
            .daemon
            .log()
            .contains("adopting bans found in the kernel maps"),
        "{}",
        setup.daemon.log()
    );
    setup.assert_dropped("adopted");
}
