//! Per-ban hit counters and the XDP dry run, end to end: the real daemon
//! attached to a veth in a private network namespace, real TCP SYNs from a
//! second namespace, read back through `list --json` and `stats --json`.
//!
//! Needs root and the binary (`cargo build --release -p policy-daemon`);
//! run serially: `cargo test -p spamwall-tests --test hits -- --test-threads=1`.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    fmt::Write as _,
    net::IpAddr,
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;
use spamwall_tests::{
    daemon::{Daemon, Settings},
    netns::{NetnsPair, Subnet},
    require_root,
};

const SMTP: u16 = 25;
/// `nc -w` for connections expected to complete.
const CONNECT_SECS: u32 = 2;
/// `nc -w` for connections expected to be dropped.
const DROPPED_SECS: u32 = 1;

/// A daemon on the server end of a fresh namespace pair; the daemon goes
/// before the namespaces.
struct Setup {
    daemon: Daemon,
    net: NetnsPair,
    settings: Settings,
}

impl Setup {
    fn new(subnet: Subnet, configure: impl FnOnce(&mut Settings, &NetnsPair)) -> Self {
        let mut net = NetnsPair::new(subnet);
        net.listen_both(SMTP);
        let mut settings = Settings::on(net.server());
        configure(&mut settings, &net);
        let daemon = Daemon::start(net.server(), &settings);
        Self {
            daemon,
            net,
            settings,
        }
    }

    fn connects(&self) -> bool {
        self.net
            .can_connect(IpAddr::V4(self.net.server_v4()), SMTP, CONNECT_SECS)
    }

    fn dropped(&self) -> bool {
        !self
            .net
            .can_connect(IpAddr::V4(self.net.server_v4()), SMTP, DROPPED_SECS)
    }

    fn client(&self) -> String {
        self.net.client_v4().to_string()
    }

    /// The client's `list --json` entry.
    /// The client's ban kept the counters it had (`before`) through
    /// `what` (`after`), and the client's next drop adds to them.
    fn assert_counting_on(&self, before: &Value, after: &Value, what: &str) {
        assert!(
            packets(after) >= packets(before),
            "counters lost on {what}: {before} then {after}"
        );
        assert!(self.dropped(), "the client connected after {what}");
        let again = self.entry();
        assert!(packets(&again) > packets(after), "{after} then {again}");
    }

    fn entry(&self) -> Value {
        let bans = self.daemon.list();
        bans.iter()
            .find(|ban| ban["addr"] == self.client().as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{} not listed: {bans:?}", self.client()))
    }
}

fn packets(entry: &Value) -> u64 {
    entry["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no packet count: {entry}"))
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("stats --json has no number {name:?}: {stats}"))
}

/// `last_hit` is an RFC 3339 time within the last minute.
fn assert_recent_hit(entry: &Value) {
    let text = entry["last_hit"]
        .as_str()
        .unwrap_or_else(|| panic!("no last_hit: {entry}"));
    let at = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let now = SystemTime::now();
    assert!(
        at <= now + Duration::from_secs(1)
            && now.duration_since(at).unwrap_or_default() < Duration::from_mins(1),
        "last_hit {text} is not recent"
    );
}

/// A feed's refresh extends the bans it still lists in place, reading
/// their kernel entries' counters while the store is written (the path a
/// batch of 1,024 or more takes): the drops counted before it stay, and
/// the next drop adds to them.
#[test]
fn a_feed_refresh_keeps_the_counters_of_the_bans_it_extends() {
    if !require_root("a_feed_refresh_keeps_the_counters_of_the_bans_it_extends") {
        return;
    }
    let lists = tempfile::tempdir().unwrap();
    let path = lists.path().join("listed.txt");
    let setup = Setup::new(Subnet::test_net_3(163), |settings, net| {
        let mut text = format!("{}\n", net.client_v4());
        for n in 1..2_000_u32 {
            // 10.0.0.1 onwards: listed, never sent to.
            writeln!(text, "10.0.{}.{}", n >> 8, n & 0xff).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        settings.extra = format!(
            "[[feed]]\nname = \"listed\"\nurl = \"file://{}\"\nformat = \"plain\"\nrefresh = \"1s\"\nbantime = \"1h\"\n",
            path.display()
        );
    });
    let started = Instant::now();
    while setup.daemon.list().len() < 2_000 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the feed did not load: {}",
            setup.daemon.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(setup.dropped(), "the listed client connected");
    let hit = setup.entry();
    assert!(packets(&hit) >= 1, "a dropped SYN was not counted: {hit}");
    // A refresh a second later moves the expiry on.
    let started = Instant::now();
    let extended = loop {
        let entry = setup.entry();
        if entry["expires_at"] != hit["expires_at"] {
            break entry;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no refresh extended {hit}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        extended["count"], hit["count"],
        "an offence counted: {extended}"
    );
    setup.assert_counting_on(&hit, &extended, "the refresh");
}

/// Packets from a banned client raise its ban's `packets` and set
/// `last_hit`; a longer ban on the same address keeps them; `--sort
/// packets --limit 1` puts it first, ahead of a ban that dropped nothing.
#[test]
fn drops_are_counted_in_the_ban_and_kept_across_an_extension() {
    if !require_root("drops_are_counted_in_the_ban_and_kept_across_an_extension") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_3(160), |_, _| {});
    let client = setup.client();
    setup
        .daemon
        .cli_ok(&["ban", &client, "--for", "1h", "--reason", "counted"]);
    // Banned before the client sent anything: nothing counted yet.
    let fresh = setup.entry();
    assert_eq!(packets(&fresh), 0, "{fresh}");
    assert!(fresh["last_hit"].is_null(), "{fresh}");
    assert!(setup.dropped(), "the banned client connected");
    let hit = setup.entry();
    assert!(packets(&hit) >= 1, "a dropped SYN was not counted: {hit}");
    assert_recent_hit(&hit);
    let human = setup.daemon.cli_ok(&["list"]);
    assert!(
        human.contains("PACKETS") && human.contains("LAST HIT"),
        "{human}"
    );

    // Extended: the counters stay, and the next drop adds to them.
    setup
        .daemon
        .cli_ok(&["ban", &client, "--for", "2h", "--reason", "extended"]);
    let extended = setup.entry();
    assert_eq!(extended["count"], 2, "{extended}");
    setup.assert_counting_on(&hit, &extended, "the extension");

    let quiet = "203.0.113.77".to_owned();
    setup.daemon.cli_ok(&["ban", &quiet, "--reason", "quiet"]);
    let top = setup
        .daemon
        .cli_ok(&["list", "--json", "--sort", "packets", "--limit", "1"]);
    let top: Vec<Value> = serde_json::from_str(&top).unwrap();
    assert_eq!(top.len(), 1, "{top:?}");
    assert_eq!(top[0]["addr"], client.as_str(), "{top:?}");
    let both = setup
        .daemon
        .cli_ok(&["list", "--json", "--sort", "packets"]);
    let both: Vec<Value> = serde_json::from_str(&both).unwrap();
    let order: Vec<&str> = both.iter().filter_map(|ban| ban["addr"].as_str()).collect();
    assert_eq!(order, [client.as_str(), quiet.as_str()], "{both:?}");
}

/// `[xdp] dry_run`: a banned client still connects, what would have been
/// dropped is counted in `would_drop_v4` and in the ban (nothing in
/// `dropped_v4`), `status` and the metrics say so; a reload without it
/// drops the client again.
#[test]
fn dry_run_counts_what_it_would_drop_and_passes_it() {
    if !require_root("dry_run_counts_what_it_would_drop_and_passes_it") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_3(161), |s, _| {
        s.xdp_extra = "dry_run = true\n".to_owned();
    });
    let client = setup.client();
    setup
        .daemon
        .cli_ok(&["ban", &client, "--reason", "dry run"]);
    assert!(setup.connects(), "a banned client was dropped in a dry run");
    let stats = setup.daemon.stats();
    assert!(
        counter(&stats, "would_drop_v4") > 0,
        "nothing counted: {stats}"
    );
    assert_eq!(counter(&stats, "dropped_v4"), 0, "{stats}");
    let entry = setup.entry();
    assert!(packets(&entry) > 0, "{entry}");
    assert_recent_hit(&entry);
    let shown = setup.daemon.cli_ok(&["status"]);
    assert!(
        shown.contains("dry run: banned sources are counted"),
        "{shown}"
    );
    assert_eq!(setup.daemon.status()["dry_run"], true);
    let human = setup.daemon.cli_ok(&["stats"]);
    assert!(human.contains("would_drop_v4"), "{human}");

    let mut settings = setup.settings.clone();
    settings.xdp_extra.clear();
    setup.daemon.rewrite_config(&settings);
    setup.daemon.reload();
    assert_eq!(setup.daemon.status()["dry_run"], false);
    let before = counter(&setup.daemon.stats(), "dropped_v4");
    assert!(setup.dropped(), "connected after a reload without dry run");
    let stats = setup.daemon.stats();
    assert!(counter(&stats, "dropped_v4") > before, "{stats}");
}

/// Pins of an older version, whose ban values carry no counters and whose
/// counter map is smaller: the daemon starts, replaces them, restores the
/// bans from its store, and drops the banned client.
#[test]
fn maps_of_an_older_version_are_replaced_and_bans_restored() {
    if !require_root("maps_of_an_older_version_are_replaced_and_bans_restored") {
        return;
    }
    let mut setup = Setup::new(Subnet::test_net_3(162), |_, _| {});
    let client = setup.client();
    setup
        .daemon
        .cli_ok(&["ban", &client, "--reason", "upgrade"]);
    assert!(setup.dropped(), "banned client connected");
    setup.daemon.kill(libc::SIGTERM);
    let pins = setup.daemon.pin_dir().to_owned();
    for (name, kind, key, value, entries) in [
        (xdp_common::MAP_BANS_V4, "lru_hash", "4", "16", "4096"),
        (xdp_common::MAP_BANS_V6, "lru_hash", "16", "16", "4096"),
        (xdp_common::MAP_STATS, "percpu_array", "4", "8", "7"),
    ] {
        let path = pins.join(name);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let status = Command::new("bpftool")
            .args(["map", "create"])
            .arg(&path)
            .args([
                "type", kind, "key", key, "value", value, "entries", entries, "name", name,
            ])
            .status()
            .expect("bpftool runs");
        assert!(status.success(), "bpftool map create {name}: {status}");
    }
    setup.daemon.restart();
    assert!(
        setup.dropped(),
        "banned client connected after the upgrade\n{}",
        setup.daemon.log()
    );
    let entry = setup.entry();
    assert!(packets(&entry) >= 1, "{entry}");
    let stats = setup.daemon.stats();
    assert!(counter(&stats, "dropped_v4") >= 1, "{stats}");
    assert_eq!(counter(&stats, "would_drop_v4"), 0, "{stats}");
}
