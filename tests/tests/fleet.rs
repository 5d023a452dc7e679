//! The fleet against a real `redis-server`: three daemons, each in its own
//! server namespace with its own veth pair, XDP attach and client
//! namespace. Every pair uses the same addresses (they live in separate
//! namespaces), so the client `192.0.2.2` is "the same bot" knocking on
//! three MX hosts.
//!
//! A ban arriving is awaited in the node's pinned kernel map, read
//! directly; a backend's state over one control-socket connection. The
//! CLI is asked once the condition holds, for what it shows.

use std::{
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use spamwall::dataplane::Dataplane;
use spamwall_tests::{
    TEST_CAPACITIES,
    daemon::{Daemon, Settings},
    netns::{NetnsPair, Side, Subnet},
    redis::RedisServer,
    require_root,
};

const PORT: u16 = 25;
const BOT: &str = "192.0.2.2";
/// How long a ban may take to reach the other nodes here. README promises
/// milliseconds, which `cargo xtask bench fleet` measures; a test on a
/// loaded machine proves arrival, not speed.
const PROPAGATION: Duration = Duration::from_secs(5);
/// How often a condition is looked at.
const POLL: Duration = Duration::from_millis(50);

/// One MX host: the test's handle on its pinned maps, its daemon (dropped
/// next, so its pins go before the namespaces) and its namespaces.
struct Node {
    maps: Dataplane,
    daemon: Daemon,
    pair: NetnsPair,
}

impl Node {
    fn start(redis: &RedisServer, name: &str, allowlist: &[&str]) -> Self {
        Self::start_with(redis, name, allowlist, "")
    }

    /// A node with more `[fleet]` keys (TOML lines) and a metrics
    /// endpoint on its own loopback.
    fn start_with(redis: &RedisServer, name: &str, allowlist: &[&str], fleet: &str) -> Self {
        let mut pair = NetnsPair::new(Subnet::test_net_1(1));
        pair.listen(pair.server_v4().into(), PORT);
        let mut settings = Settings::on(pair.server());
        settings.allowlist = allowlist.iter().map(|&a| a.to_owned()).collect();
        settings.extra = format!(
            "[fleet]\nredis = {:?}\nnode = {name:?}\nshare = [\"policy\", \"logwatch\", \"cli\"]\n{fleet}\n\
             [metrics]\nlisten = \"127.0.0.1:9465\"\n",
            redis.url()
        );
        let daemon = Daemon::start(pair.server(), &settings);
        let maps = Dataplane::load(daemon.pin_dir(), TEST_CAPACITIES)
            .unwrap_or_else(|e| panic!("opening {name}'s pinned maps: {e}"));
        Self { maps, daemon, pair }
    }

    /// Whether `target` is in the node's kernel maps: read from the pins,
    /// no process started.
    fn enforces(&self, target: &str) -> bool {
        let net: IpNet = target
            .parse()
            .or_else(|_| target.parse::<IpAddr>().map(IpNet::from))
            .unwrap_or_else(|_| panic!("{target} is no address or prefix"));
        self.maps
            .get(net)
            .unwrap_or_else(|e| panic!("reading the kernel maps for {target}: {e}"))
            .is_some()
    }

    /// The fleet backend's state, over one control-socket connection.
    fn fleet(&self) -> spamwall::bans::BackendStatus {
        self.daemon
            .backend("fleet")
            .unwrap_or_else(|| panic!("no fleet backend; log:\n{}", self.daemon.log()))
    }

    /// `spamwall_fleet_rejected_total{reason}` from the node's metrics.
    fn rejected(&self, reason: &str) -> u64 {
        let scrape = self.pair.exec_in(
            Side::Server,
            &["curl", "-sf", "http://127.0.0.1:9465/metrics"],
            Duration::from_secs(10),
        );
        let text = String::from_utf8_lossy(&scrape.stdout);
        let series = format!("spamwall_fleet_rejected_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
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

/// Polls `check` every [`POLL`] until it holds (`true`) or `deadline`
/// passes (`false`).
fn within(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if check() {
            return true;
        }
        if started.elapsed() > deadline {
            return false;
        }
        thread::sleep(POLL);
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
        assert!(
            within(PROPAGATION, || node.enforces(BOT)),
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
            within(PROPAGATION, || !node.enforces(BOT)),
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
        within(Duration::from_secs(5), || a.fleet().queue_depth == Some(0)),
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
    // A permanent ban from another node lasts fleet.max_bantime here (7
    // days by default).
    let capped = c.lists("2001:db8:7::/64").expect("listed")["expires_at"].clone();
    let capped = humantime::parse_rfc3339(capped.as_str().expect("capped, not permanent"))
        .expect("RFC 3339");
    let left = capped
        .duration_since(std::time::SystemTime::now())
        .expect("in the future");
    assert!(
        left > Duration::from_hours(7 * 24) - Duration::from_mins(1)
            && left <= Duration::from_hours(7 * 24) + Duration::from_secs(1),
        "{left:?}"
    );
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
        within(Duration::from_secs(10), || !a.fleet().active),
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
    let arrived = within(Duration::from_secs(20), || {
        targets.iter().all(|target| b.enforces(target))
    });
    assert!(
        arrived,
        "B does not hold all 100 bans after Redis returned; B has {}; A: {}; log of A:\n{}",
        b.daemon.list().len(),
        a.fleet_status(),
        a.daemon.log()
    );
    assert!(
        within(Duration::from_secs(5), || a.fleet().queue_depth == Some(0)),
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
        within(Duration::from_secs(10), || b.enforces("203.0.113.200")),
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
            within(PROPAGATION, || node.enforces("198.51.100.78")),
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

/// A well-formed fleet message, unsigned.
fn message(op: &str, target: &str, expires_at: &str, node: &str, reason: &str) -> String {
    format!(
        r#"{{"op":"{op}","target":"{target}","expires_at":{expires_at},"source":"policy","reason":"{reason}","node":"{node}","id":"{node}-1-0","at":1700000000000}}"#
    )
}

/// Two nodes sharing a secret file; B caps remote bans at an hour.
/// Returns them and the `[fleet]` line naming the secret.
fn signed_nodes(redis: &RedisServer) -> (Node, Node, String) {
    let secret = redis.dir().join("fleet.key");
    std::fs::write(&secret, "a fleet secret of thirty-two byte\n").expect("secret");
    let signed = format!("secret_file = {:?}\n", secret.display().to_string());
    let a = Node::start_with(redis, "mx-a", &[], &signed);
    let b = Node::start_with(
        redis,
        "mx-b",
        &[],
        &format!("{signed}max_bantime = \"1h\"\n"),
    );
    a.daemon.cli_ok(&["ban", "198.51.100.10", "--for", "0"]);
    assert!(
        within(PROPAGATION, || b.enforces("198.51.100.10")),
        "a signed ban did not reach B; log:\n{}",
        b.daemon.log()
    );
    (a, b, signed)
}

/// Bans `marker` on `from` and waits until `to` lists it: everything
/// published before it has been read by then.
fn sync_through(from: &Node, to: &Node, marker: &str) {
    from.daemon.cli_ok(&["ban", marker]);
    assert!(
        within(PROPAGATION, || to.enforces(marker)),
        "{}",
        to.daemon.log()
    );
}

#[test]
fn forged_and_malformed_fleet_messages_change_nothing() {
    if !ready("forged_and_malformed_fleet_messages_change_nothing") {
        return;
    }
    let redis = RedisServer::start();
    let (a, b, signed) = signed_nodes(&redis);
    let publish = |payload: &str| {
        redis
            .cli(&["PUBLISH", "spamwall", payload])
            .unwrap_or_else(|| panic!("redis-cli PUBLISH failed"));
    };
    // The attack of the report: blackhole half the internet, permanently.
    publish(&message("ban", "128.0.0.0/1", "null", "mx-evil", "owned"));
    let stored = redis
        .cli(&["HGET", "spamwall:details", "198.51.100.10"])
        .expect("HGET");
    let stored = stored.trim();
    assert!(
        stored.contains("\"sig\":\""),
        "Redis holds signed JSON: {stored}"
    );
    // A genuine message altered in transit, and a made-up signature.
    publish(&stored.replace("198.51.100.10", "198.51.100.66"));
    publish(&format!(
        "{},\"sig\":\"{}\"}}",
        message("ban", "198.51.100.67", "null", "mx-a", "x").trim_end_matches('}'),
        "0".repeat(64)
    ));
    publish(&"x".repeat(5000));
    for junk in ["not json", "{", "null", "{\"op\":\"ban\"}"] {
        publish(junk);
    }
    sync_through(&a, &b, "198.51.100.11");
    let banned: Vec<String> = b
        .daemon
        .list()
        .iter()
        .map(|ban| ban["addr"].as_str().expect("addr").to_owned())
        .collect();
    assert_eq!(
        banned,
        ["198.51.100.10", "198.51.100.11"],
        "B applied a forgery"
    );
    assert_eq!(b.rejected("unsigned"), 1);
    assert_eq!(b.rejected("bad_signature"), 2);
    assert_eq!(b.rejected("oversized"), 1);
    assert_eq!(b.rejected("malformed"), 4);

    // The resync set is checked the same way: forged entries written
    // straight into Redis are not applied by a node that starts later.
    redis
        .cli(&["ZADD", "spamwall:bans", "+inf", "128.0.0.0/1"])
        .expect("ZADD");
    redis
        .cli(&[
            "HSET",
            "spamwall:details",
            "128.0.0.0/1",
            &message("ban", "128.0.0.0/1", "null", "mx-evil", "owned"),
        ])
        .expect("HSET");
    let c = Node::start_with(&redis, "mx-c", &[], &signed);
    assert!(
        c.lists("198.51.100.10").is_some(),
        "C resynced the signed ban"
    );
    assert!(
        c.lists("128.0.0.0/1").is_none(),
        "C applied a forged resync entry"
    );
    assert_eq!(c.rejected("unsigned"), 1);
    for node in [&a, &b, &c] {
        node.daemon.cli_ok(&["status"]);
    }
}

#[test]
fn signed_fleet_messages_are_still_bounded() {
    if !ready("signed_fleet_messages_are_still_bounded") {
        return;
    }
    let redis = RedisServer::start();
    let (a, b, _) = signed_nodes(&redis);
    // A permanent remote ban lasts at most B's fleet.max_bantime.
    let expires = b.lists("198.51.100.10").expect("listed")["expires_at"].clone();
    let expires = humantime::parse_rfc3339(expires.as_str().expect("capped, not permanent"))
        .expect("RFC 3339");
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .expect("in the future");
    assert!(
        left <= Duration::from_hours(1) + Duration::from_secs(1),
        "{left:?}"
    );

    // A validly signed ban still obeys B's widest-prefix rule, and a
    // validly signed unban lifts only bans that came from the fleet.
    b.daemon
        .cli_ok(&["ban", "203.0.113.9", "--for", "0", "--reason", "local"]);
    a.daemon
        .cli_ok(&["ban", "10.0.0.0/8", "203.0.113.9", "--force", "--for", "1h"]);
    a.daemon.cli_ok(&["unban", "203.0.113.9", "198.51.100.10"]);
    assert!(
        within(PROPAGATION, || !b.enforces("198.51.100.10")),
        "the unban of a fleet ban did not reach B; log:\n{}",
        b.daemon.log()
    );
    let kept = b.lists("203.0.113.9").expect("B's own ban stays");
    assert_eq!(
        (kept["source"].as_str(), kept["reason"].as_str()),
        (Some("cli"), Some("local"))
    );
    assert!(kept["expires_at"].is_null(), "{kept}");
    assert!(
        b.lists("10.0.0.0/8").is_none(),
        "B took a /8 from the fleet"
    );
    assert_eq!(b.rejected("refused"), 1);
}

/// Unix seconds, `offset` from now.
fn unix_in(offset: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    i64::try_from(now).expect("fits") + offset
}

/// Redis stops; while it is down, an active and an expired ban of a third
/// node enter its sorted set with no message published. When Redis
/// returns, both nodes reconnect and resync: they apply the active ban,
/// which they can only have read from the set, and purge the expired one.
#[test]
fn after_a_redis_restart_the_nodes_resync_every_active_ban() {
    if !ready("after_a_redis_restart_the_nodes_resync_every_active_ban") {
        return;
    }
    let mut redis = RedisServer::start();
    let a = Node::start(&redis, "mx-a", &[]);
    let b = Node::start(&redis, "mx-b", &[]);
    sync_through(&a, &b, "198.51.100.30");
    redis.stop();
    for node in [&a, &b] {
        assert!(
            within(Duration::from_secs(10), || !node.fleet().active),
            "Redis went away unnoticed: {}",
            node.fleet_status()
        );
    }

    let entry = |target: &str, expires: i64| {
        let json = message(
            "ban",
            target,
            &expires.to_string(),
            "mx-z",
            "while redis was down",
        );
        [
            vec![
                "ZADD".to_owned(),
                "spamwall:bans".to_owned(),
                expires.to_string(),
                target.to_owned(),
            ],
            vec![
                "HSET".to_owned(),
                "spamwall:details".to_owned(),
                target.to_owned(),
                json,
            ],
        ]
    };
    let mut commands = Vec::new();
    commands.extend(entry("198.51.100.31", unix_in(3600)));
    commands.extend(entry("198.51.100.32", unix_in(-60)));
    redis.edit_stopped(&commands);
    redis.launch();

    for (name, node) in [("A", &a), ("B", &b)] {
        assert!(
            within(Duration::from_secs(20), || node.enforces("198.51.100.31")),
            "{name} did not resync after Redis returned: {}\nlog:\n{}",
            node.fleet_status(),
            node.daemon.log()
        );
        let ban = node.lists("198.51.100.31").expect("listed");
        assert_eq!(ban["source"], "fleet", "{ban}");
        assert!(
            node.lists("198.51.100.32").is_none(),
            "an expired entry applied"
        );
        assert_eq!(node.fleet_status()["active"], true);
    }
    let members = redis
        .cli(&["ZRANGE", "spamwall:bans", "0", "-1"])
        .expect("ZRANGE");
    assert!(members.contains("198.51.100.31"), "{members}");
    assert!(
        !members.contains("198.51.100.32"),
        "the expired entry stays: {members}"
    );
}

/// Every node here has `192.0.2.1` and `2001:db8:1::1`: a fleet ban of one of
/// them, or of a prefix holding one, is refused like a local one, also on
/// a resync; a ban next to them is applied.
#[test]
fn a_fleet_ban_never_covers_the_nodes_own_addresses() {
    if !ready("a_fleet_ban_never_covers_the_nodes_own_addresses") {
        return;
    }
    let redis = RedisServer::start();
    let b = Node::start(&redis, "mx-b", &[]);
    let own = [
        "192.0.2.0/24",
        "192.0.2.1",
        "2001:db8:1::1",
        "2001:db8:1::/64",
        "2001:db8::/32",
    ];
    let forever = "null";
    for target in own {
        redis
            .cli(&[
                "PUBLISH",
                "spamwall",
                &message("ban", target, forever, "mx-z", "own"),
            ])
            .expect("PUBLISH");
    }
    redis
        .cli(&[
            "PUBLISH",
            "spamwall",
            &message("ban", "2001:db8:2::/64", forever, "mx-z", "next door"),
        ])
        .expect("PUBLISH");
    assert!(
        within(PROPAGATION, || b.enforces("2001:db8:2::/64")),
        "{}",
        b.daemon.log()
    );
    let listed: Vec<String> = b
        .daemon
        .list()
        .iter()
        .map(|ban| ban["addr"].as_str().expect("addr").to_owned())
        .collect();
    assert_eq!(listed, ["2001:db8:2::/64"], "B banned its own addresses");
    assert_eq!(b.rejected("refused"), 5);
    assert!(b.reaches_server(), "B drops its own client link");

    // The same entries in the resync set: a node started later refuses
    // them too.
    for target in own {
        redis
            .cli(&["ZADD", "spamwall:bans", "+inf", target])
            .expect("ZADD");
        redis
            .cli(&[
                "HSET",
                "spamwall:details",
                target,
                &message("ban", target, forever, "mx-z", "own"),
            ])
            .expect("HSET");
    }
    let c = Node::start(&redis, "mx-c", &[]);
    let listed: Vec<String> = c
        .daemon
        .list()
        .iter()
        .map(|ban| ban["addr"].as_str().expect("addr").to_owned())
        .collect();
    assert_eq!(listed, Vec::<String>::new(), "C resynced its own addresses");
    assert_eq!(c.rejected("refused"), 5);
}
