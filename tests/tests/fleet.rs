//! The fleet against a real `redis-server`: three daemons, each in its own
//! server namespace with its own veth pair, XDP attach and client
//! namespace. Every pair uses the same addresses (they live in separate
//! namespaces), so the client `192.0.2.2` is "the same bot" knocking on
//! three MX hosts.

use std::{
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use spamwall_tests::{
    daemon::{Daemon, Settings},
    netns::{NetnsPair, Subnet},
    redis::RedisServer,
    require_root,
};

const PORT: u16 = 25;
const BOT: &str = "192.0.2.2";
/// The promise: a ban on one node drops on the others within this.
const PROPAGATION: Duration = Duration::from_secs(1);

/// One MX host: its daemon (dropped first, so its pins go before the
/// namespaces) and its namespaces.
struct Node {
    daemon: Daemon,
    pair: NetnsPair,
}

impl Node {
    fn start(redis: &RedisServer, name: &str, allowlist: &[&str]) -> Self {
        let mut pair = NetnsPair::new(Subnet::test_net_1(1));
        pair.listen(pair.server_v4().into(), PORT);
        let mut settings = Settings::on(pair.server());
        settings.allowlist = allowlist.iter().map(|&a| a.to_owned()).collect();
        settings.extra = format!(
            "[fleet]\nredis = {:?}\nnode = {name:?}\nshare = [\"policy\", \"logwatch\", \"cli\"]\n",
            redis.url()
        );
        let daemon = Daemon::start(pair.server(), &settings);
        Self { daemon, pair }
    }

    fn lists(&self, target: &str) -> Option<serde_json::Value> {
        self.daemon
            .list()
            .into_iter()
            .find(|ban| ban["addr"] == target)
    }

    fn reaches_server(&self) -> bool {
        self.pair
            .can_connect(IpAddr::V4(self.pair.server_v4()), PORT, 1)
    }

    fn fleet_status(&self) -> serde_json::Value {
        let status = self.daemon.status();
        status["backends"]
            .as_array()
            .and_then(|list| list.iter().find(|b| b["name"] == "fleet").cloned())
            .unwrap_or_else(|| panic!("no fleet backend in status: {status}"))
    }
}

/// Polls `check` until it holds or `deadline` passes; how long it took.
fn within(deadline: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if check() {
            return Some(started.elapsed());
        }
        if started.elapsed() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn ready(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    assert!(
        RedisServer::available(),
        "{test}: redis-server is not installed (cargo xtask setup, or apt-get install redis-server)"
    );
    true
}

#[test]
fn a_ban_on_one_node_drops_on_the_others_and_the_unban_follows() {
    if !ready("a_ban_on_one_node_drops_on_the_others_and_the_unban_follows") {
        return;
    }
    let redis = RedisServer::start();
    let a = Node::start(&redis, "mx-a", &[]);
    let b = Node::start(&redis, "mx-b", &[]);
    let c = Node::start(&redis, "mx-c", &[]);
    for node in [&a, &b, &c] {
        assert!(
            node.reaches_server(),
            "the client reaches every server before the ban"
        );
        assert_eq!(
            node.fleet_status()["active"],
            true,
            "{}",
            node.fleet_status()
        );
    }

    a.daemon.cli_ok(&["ban", BOT, "--reason", "fleet test"]);
    for (name, node) in [("B", &b), ("C", &c)] {
        let took = within(PROPAGATION, || node.lists(BOT).is_some());
        assert!(
            took.is_some(),
            "{BOT} banned on A did not reach {name} within {PROPAGATION:?}; log:\n{}",
            node.daemon.log()
        );
        let entry = node.lists(BOT).expect("listed");
        assert_eq!(entry["source"], "fleet", "{entry}");
        assert!(
            entry["reason"].as_str().is_some_and(|r| r.contains("mx-a")),
            "{entry}"
        );
        assert!(!node.reaches_server(), "{name} still lets {BOT} connect");
    }
    assert!(!a.reaches_server());
    // A ignores its own echo: its ban stays a CLI ban.
    assert_eq!(a.lists(BOT).expect("listed on A")["source"], "cli");
    // Fleet bans do not count towards escalation on the receiving nodes.
    assert_eq!(b.lists(BOT).expect("listed on B")["count"], 0);

    a.daemon.cli_ok(&["unban", BOT]);
    for (name, node) in [("B", &b), ("C", &c)] {
        assert!(
            within(PROPAGATION, || node.lists(BOT).is_none()).is_some(),
            "the unban on A did not reach {name}; log:\n{}",
            node.daemon.log()
        );
        assert!(
            node.reaches_server(),
            "{name} still drops {BOT} after the unban"
        );
    }
    // Redis forgets it too, so a late node does not resurrect it.
    let members = redis
        .cli(&["ZRANGE", "spamwall:bans", "0", "-1"])
        .expect("ZRANGE");
    assert!(!members.contains(BOT), "{members}");
}

#[test]
fn a_node_started_later_resyncs_every_active_ban() {
    if !ready("a_node_started_later_resyncs_every_active_ban") {
        return;
    }
    let redis = RedisServer::start();
    let a = Node::start(&redis, "mx-a", &[]);
    a.daemon
        .cli_ok(&["ban", BOT, "198.51.100.9", "--for", "1h"]);
    a.daemon.cli_ok(&["ban", "2001:db8:7::/64", "--for", "0"]);
    a.daemon.cli_ok(&["ban", "203.0.113.5", "--for", "1h"]);
    a.daemon.cli_ok(&["unban", "203.0.113.5"]);
    assert!(
        within(Duration::from_secs(5), || a.fleet_status()["queue_depth"]
            == 0)
        .is_some(),
        "A did not publish its bans: {}",
        a.fleet_status()
    );

    // `status` answers only after the resync: no waiting needed.
    let c = Node::start(&redis, "mx-c", &[]);
    for target in [BOT, "198.51.100.9", "2001:db8:7::/64"] {
        let entry = c
            .lists(target)
            .unwrap_or_else(|| panic!("{target} was not resynced; log:\n{}", c.daemon.log()));
        assert_eq!(entry["source"], "fleet");
    }
    assert!(
        c.lists("203.0.113.5").is_none(),
        "an unbanned target came back"
    );
    assert!(c.lists("2001:db8:7::/64").expect("listed")["expires_at"].is_null());
    let on_a = a.lists("198.51.100.9").expect("on A")["expires_at"].clone();
    let on_c = c.lists("198.51.100.9").expect("on C")["expires_at"].clone();
    assert_eq!(on_a, on_c, "the absolute expiry travels unchanged");
    assert!(!c.reaches_server(), "C does not drop the resynced {BOT}");
    let mut c = c;
    let exit = c.daemon.kill(libc::SIGTERM);
    assert!(exit.success(), "C did not stop cleanly on SIGTERM: {exit}");
}

#[test]
fn bans_made_while_redis_is_down_arrive_when_it_returns() {
    if !ready("bans_made_while_redis_is_down_arrive_when_it_returns") {
        return;
    }
    let mut redis = RedisServer::start();
    let a = Node::start(&redis, "mx-a", &[]);
    let b = Node::start(&redis, "mx-b", &[]);
    redis.stop();
    assert!(
        within(Duration::from_secs(10), || a.fleet_status()["active"]
            == false)
        .is_some(),
        "A did not notice that Redis went away: {}",
        a.fleet_status()
    );

    let targets: Vec<String> = (1..=100).map(|i| format!("198.51.100.{i}")).collect();
    let mut args = vec!["ban", "--reason", "while redis was down"];
    args.extend(targets.iter().map(String::as_str));
    a.daemon.cli_ok(&args);
    assert_eq!(
        a.daemon.list().len(),
        100,
        "local banning goes on without Redis"
    );
    let status = a.fleet_status();
    assert_eq!(status["queue_depth"], 100, "{status}");

    redis.launch();
    let took = within(Duration::from_secs(20), || {
        let listed = b.daemon.list();
        targets
            .iter()
            .all(|t| listed.iter().any(|ban| ban["addr"] == t.as_str()))
    });
    assert!(
        took.is_some(),
        "B does not hold all 100 bans after Redis returned; B has {}; A: {}; log of A:\n{}",
        b.daemon.list().len(),
        a.fleet_status(),
        a.daemon.log()
    );
    assert!(
        within(Duration::from_secs(5), || a.fleet_status()["queue_depth"]
            == 0)
        .is_some(),
        "{}",
        a.fleet_status()
    );
    let stored = redis.cli(&["ZCARD", "spamwall:bans"]).expect("ZCARD");
    assert_eq!(stored.trim(), "100", "the sorted set holds every ban");

    // The queue survives the daemon too: banned while Redis is down, A
    // killed outright, Redis back, A restarted.
    redis.stop();
    a.daemon.cli_ok(&["ban", "203.0.113.200"]);
    let mut a = a;
    a.daemon.kill(libc::SIGKILL);
    redis.launch();
    a.daemon.restart();
    assert!(
        within(Duration::from_secs(10), || b
            .lists("203.0.113.200")
            .is_some())
        .is_some(),
        "a ban queued before A was killed did not reach B; log of A:\n{}",
        a.daemon.log()
    );
}

#[test]
fn the_local_allowlist_wins_over_the_fleet() {
    if !ready("the_local_allowlist_wins_over_the_fleet") {
        return;
    }
    let redis = RedisServer::start();
    let a = Node::start(&redis, "mx-a", &[]);
    let b = Node::start(&redis, "mx-b", &[]);
    let c = Node::start(&redis, "mx-c", &["198.51.100.77"]);
    a.daemon.cli_ok(&["ban", "198.51.100.77"]);
    // A later ban marks the point by which C has seen the first.
    a.daemon.cli_ok(&["ban", "198.51.100.78"]);
    for node in [&b, &c] {
        assert!(
            within(Duration::from_secs(2), || node
                .lists("198.51.100.78")
                .is_some())
            .is_some(),
            "{}",
            node.daemon.log()
        );
    }
    assert!(a.lists("198.51.100.77").is_some());
    assert!(b.lists("198.51.100.77").is_some());
    assert!(
        c.lists("198.51.100.77").is_none(),
        "C banned an address of its allowlist"
    );
    // Nor on a resync: C restarted still refuses it.
    drop(c);
    let c = Node::start(&redis, "mx-c", &["198.51.100.77"]);
    assert!(c.lists("198.51.100.78").is_some());
    assert!(c.lists("198.51.100.77").is_none());
}
