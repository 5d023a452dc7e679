//! End to end: the real daemon loads blocklist feeds from a real HTTP
//! server (Python's `http.server`, on loopback in the daemon's namespace)
//! and from a file: a first load gets a listed client dropped by XDP, a
//! refresh asks conditionally and gets 304 (also after a restart, from the
//! saved validators), an entry the feed drops is lifted while a longer CLI
//! ban it listed stays, the allowlist wins over the feed, a broken feed
//! keeps its entries and says why in `status`, a 200,000-entry file
//! lands in full, and one feed's bans are listed and lifted by its name.
//!
//! Needs root and the binary (`cargo build -p policy-daemon`, or
//! `SPAMWALL_BIN`); run serially:
//! `cargo test -p spamwall-tests --test feeds -- --test-threads=1`.

use std::{
    fmt::Write as _,
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde_json::Value;
use spamwall::dataplane::{Capacities, Dataplane};
use spamwall_tests::{
    daemon::{Daemon, Settings},
    feed_server::FeedServer,
    netns::{NetnsPair, Side, Subnet},
    require_root,
};

const SMTP: u16 = 25;
/// The big feed's size.
const ENTRIES: u32 = 200_000;
/// Longest a refresh may take to show, with a 1 s refresh interval.
const DEADLINE: Duration = Duration::from_secs(20);

fn feed_table(name: &str, url: &str, format: &str) -> String {
    format!(
        "[[feed]]\nname = \"{name}\"\nurl = \"{url}\"\nformat = \"{format}\"\nrefresh = \"1s\"\nbantime = \"1h\"\n"
    )
}

fn ban_of(daemon: &Daemon, addr: &str) -> Option<Value> {
    daemon.list().into_iter().find(|ban| ban["addr"] == addr)
}

/// Waits (bounded) until `done` holds, naming `what` if it never does.
fn wait(daemon: &Daemon, what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}\nstatus: {}\nbans: {:?}\ndaemon log:\n{}",
            daemon.status(),
            daemon.list(),
            daemon.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn feed_line(daemon: &Daemon) -> String {
    daemon.status()["feeds"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn http_feed_loads_refreshes_lifts_and_survives_failures() {
    if !require_root("http_feed_loads_refreshes_lifts_and_survives_failures") {
        return;
    }
    let mut net = NetnsPair::new(Subnet::test_net_2(150));
    net.listen_both(SMTP);
    let server = FeedServer::start(Some(net.server()));
    let client = IpAddr::from(net.client_v4());
    let server_v4 = IpAddr::from(net.server_v4());
    let listed = format!(
        "{{\"cidr\":\"{client}/32\",\"sblid\":\"SBL1\",\"rir\":\"ripencc\"}}\n\
         {{\"cidr\":\"203.0.113.0/24\",\"sblid\":\"SBL2\",\"rir\":\"arin\"}}\n\
         {{\"cidr\":\"192.0.2.66/32\",\"sblid\":\"SBL3\",\"rir\":\"arin\"}}\n\
         {{\"cidr\":\"198.51.100.9/32\",\"sblid\":\"SBL4\",\"rir\":\"arin\"}}\n\
         {{\"cidr\":\"2001:db8:ff::/48\",\"sblid\":\"SBL5\",\"rir\":\"arin\"}}\n\
         not json\n\
         {{\"type\":\"metadata\",\"timestamp\":1700000000,\"size\":5,\"records\":5}}\n"
    );
    server.serve("drop.json", listed.as_bytes());
    let mut settings = Settings::on(net.server());
    settings.allowlist = vec!["192.0.2.0/24".to_owned()];
    settings.extra = format!(
        "{}[metrics]\nlisten = \"127.0.0.1:9465\"\n",
        feed_table("drop", &server.url("drop.json"), "spamhaus-json")
    );
    let mut daemon = Daemon::start(net.server(), &settings);
    let client_text = client.to_string();

    // First load: listed, in the kernel (the client is dropped), the
    // allowlisted entry refused.
    wait(&daemon, "the first load", || {
        ban_of(&daemon, &client_text).is_some()
    });
    let ban = ban_of(&daemon, &client_text).expect("listed");
    assert_eq!(ban["source"], "feed", "{ban}");
    assert_eq!(ban["reason"], "feed:drop SBL1", "{ban}");
    for entry in ["203.0.113.0/24", "2001:db8:ff::/48", "198.51.100.9"] {
        assert!(ban_of(&daemon, entry).is_some(), "{entry} not banned");
    }
    assert!(
        ban_of(&daemon, "192.0.2.66").is_none(),
        "the allowlist wins"
    );
    let line = feed_line(&daemon);
    assert!(
        line.starts_with("feed:drop (")
            && line.contains("4 entries")
            && line.contains("1 bad lines")
            && line.contains("1 refused"),
        "{line}"
    );
    assert!(
        !net.can_connect(server_v4, SMTP, 1),
        "the listed client is dropped"
    );
    let first = server.requests();
    assert_eq!(first[0].status, 200);
    assert!(first[0].if_none_match.is_none(), "{first:?}");

    // Refresh: a conditional request answered 304.
    wait(&daemon, "a 304 on refresh", || {
        server
            .requests()
            .iter()
            .any(|r| r.status == 304 && r.if_none_match.is_some())
    });

    // A longer CLI ban on a listed entry is neither shortened nor lifted.
    daemon.cli_ok(&["ban", "198.51.100.9", "--for", "30d", "--reason", "by hand"]);
    let shorter = listed
        .replace(
            &format!("{{\"cidr\":\"{client}/32\",\"sblid\":\"SBL1\",\"rir\":\"ripencc\"}}\n"),
            "",
        )
        .replace(
            "{\"cidr\":\"198.51.100.9/32\",\"sblid\":\"SBL4\",\"rir\":\"arin\"}\n",
            "",
        );
    server.serve("drop.json", shorter.as_bytes());
    wait(&daemon, "the dropped entry lifted", || {
        ban_of(&daemon, &client_text).is_none()
    });
    let cli = ban_of(&daemon, "198.51.100.9").expect("the CLI ban stays");
    assert_eq!(cli["source"], "cli", "{cli}");
    assert_eq!(cli["reason"], "by hand", "{cli}");
    assert!(ban_of(&daemon, "203.0.113.0/24").is_some());
    assert!(
        net.can_connect(server_v4, SMTP, 2),
        "the lifted client connects again"
    );

    // A restart asks with the saved validators.
    let before = server.requests().len();
    daemon.kill(libc::SIGKILL);
    daemon.restart();
    wait(&daemon, "the first fetch after the restart", || {
        server.requests().len() > before
    });
    let after = &server.requests()[before];
    assert_eq!(after.status, 304, "{after:?}");
    assert!(after.if_none_match.is_some(), "{after:?}");

    failures_keep_the_entries(&daemon, &server);
    assert!(metric(&net, "spamwall_feed_errors_total{feed=\"drop\"}") >= 2.0);
    assert!((metric(&net, "spamwall_feed_entries{feed=\"drop\"}") - 2.0).abs() < 0.5);
    assert!(
        metric(
            &net,
            "spamwall_feed_last_success_timestamp_seconds{feed=\"drop\"}"
        ) > 1.7e9
    );
}

/// One series of the daemon's metrics, scraped inside its namespace.
fn metric(net: &NetnsPair, series: &str) -> f64 {
    let scrape = net.exec_in(
        Side::Server,
        &["curl", "-sf", "http://127.0.0.1:9465/metrics"],
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&scrape.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// A failing server, then a body where nothing parses: the entries stay,
/// status says why.
fn failures_keep_the_entries(daemon: &Daemon, server: &FeedServer) {
    server.break_with("drop.json", 500);
    wait(daemon, "the error in status", || {
        feed_line(daemon).contains("HTTP status 500")
    });
    assert!(ban_of(daemon, "203.0.113.0/24").is_some(), "entries kept");
    assert!(
        feed_line(daemon).contains("2 entries"),
        "{}",
        feed_line(daemon)
    );

    // A body where nothing parses: the same.
    server.heal("drop.json");
    server.serve("drop.json", b"<html><body>maintenance</body></html>\n");
    wait(daemon, "the parse error in status", || {
        feed_line(daemon).contains("no line is an entry")
    });
    assert!(ban_of(daemon, "2001:db8:ff::/48").is_some(), "entries kept");
    assert!(
        daemon.cli_ok(&["status"]).contains("feed feed:drop"),
        "the status text names the feed"
    );
}

#[test]
fn file_feed_of_200000_entries_lands_in_full() {
    if !require_root("file_feed_of_200000_entries_lands_in_full") {
        return;
    }
    let net = NetnsPair::new(Subnet::test_net_3(150));
    let lists = tempfile::tempdir().expect("a directory for the list");
    let path = lists.path().join("big.txt");
    let mut text = String::from("# a big plain list\n");
    for i in 0..ENTRIES {
        // 10.0.0.1 onwards: listed, never sent to.
        let n = i + 1;
        let _ = writeln!(
            text,
            "10.{}.{}.{} ; entry {i}",
            n >> 16,
            (n >> 8) & 0xff,
            n & 0xff
        );
    }
    std::fs::write(&path, text).expect("writing the list");
    let mut settings = Settings::on(net.server());
    settings.capacity = 262_144;
    settings.extra = feed_table("big", &format!("file://{}", path.display()), "plain");
    let daemon = Daemon::start(net.server(), &settings);
    wait(&daemon, "200,000 entries", || {
        feed_line(&daemon).contains(&format!("{ENTRIES} entries"))
    });
    let stats = daemon.stats();
    assert_eq!(stats["bans_v4"], ENTRIES, "{stats}");
    let bans = daemon.list();
    assert_eq!(bans.len(), ENTRIES as usize);
    assert!(
        bans.iter()
            .all(|ban| ban["source"] == "feed" && ban["reason"] == "feed:big")
    );
    // Every entry is in the kernel maps, read from the pins.
    let maps = Dataplane::load(
        daemon.pin_dir(),
        Capacities {
            v4: 262_144,
            v6: 262_144,
            prefix_v4: 256,
            prefix_v6: 256,
        },
    )
    .expect("opening the pinned maps");
    let missing = (1..=ENTRIES)
        .filter(|n| {
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 | n);
            maps.get(IpNet::from(IpAddr::from(addr)))
                .expect("reading the kernel maps")
                .is_none()
        })
        .count();
    assert_eq!(missing, 0, "entries missing from the kernel maps");
}

/// `list` and `unban --source feed:NAME` reach one feed's bans only: not
/// those of a feed whose name starts the same, nor a CLI ban.
#[test]
fn one_feeds_bans_are_listed_and_lifted_by_its_name() {
    if !require_root("one_feeds_bans_are_listed_and_lifted_by_its_name") {
        return;
    }
    let net = NetnsPair::new(Subnet::test_net_3(151));
    let lists = tempfile::tempdir().expect("a directory for the lists");
    let mut extra = String::new();
    for (name, entries) in [
        ("drop", "198.51.100.1\n198.51.100.2\n198.51.100.0/30\n"),
        ("drop2", "198.51.100.9\n198.51.100.10\n"),
    ] {
        let path = lists.path().join(format!("{name}.txt"));
        std::fs::write(&path, entries).expect("writing a list");
        // Refreshed after the test: a refresh would ban its entries again.
        let table = feed_table(name, &format!("file://{}", path.display()), "plain");
        extra.push_str(&table.replace("refresh = \"1s\"", "refresh = \"1h\""));
    }
    let mut settings = Settings::on(net.server());
    settings.extra = extra;
    let daemon = Daemon::start(net.server(), &settings);
    wait(&daemon, "both feeds loaded", || daemon.list().len() == 5);
    daemon.cli_ok(&["ban", "198.51.100.20", "--reason", "by hand"]);

    let listed = |filter: &str| -> Vec<String> {
        let out = daemon.cli_ok(&["list", "--json", "--source", filter]);
        let bans: Vec<Value> = serde_json::from_str(&out).expect("list --json");
        bans.iter()
            .map(|ban| ban["addr"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        listed("feed:drop"),
        ["198.51.100.0/30", "198.51.100.1", "198.51.100.2"]
    );
    assert_eq!(listed("feed:drop2"), ["198.51.100.10", "198.51.100.9"]);
    assert_eq!(listed("feed").len(), 5);
    assert!(listed("feed:dro").is_empty());

    let bad = daemon.cli(["list", "--source", "feed:no such"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("feed:NAME"));

    let out = daemon.cli_ok(&["unban", "--source", "feed:drop", "--yes", "--json"]);
    let summary: Value = serde_json::from_str(&out).expect("unban --json");
    assert_eq!(summary["source"], "feed:drop", "{summary}");
    assert_eq!(summary["active"], 3, "{summary}");
    assert_eq!(summary["unbanned"], 3, "{summary}");
    assert!(listed("feed:drop").is_empty());
    assert_eq!(listed("feed:drop2").len(), 2);
    assert_eq!(listed("cli"), ["198.51.100.20"]);
}
