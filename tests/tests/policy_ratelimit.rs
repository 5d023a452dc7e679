//! Rate limits in the whole daemon: the request over the limit is
//! deferred, `mails` counts a mail once and `recipients` every RCPT,
//! counts survive a restart, a limit with `ban` bans through the ban
//! manager (never an allowlisted client), and two daemons sharing a real
//! `redis-server` count together, counting locally while Redis is gone.
//!
//! Requests go through `spamwall query` inside the daemon's namespace.
//! Needs root, redis-server and the binary (`cargo build --release -p
//! policy-daemon`); run serially: `cargo test --release -p spamwall-tests
//! --test policy_ratelimit -- --test-threads=1`.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    thread,
    time::{Duration, Instant},
};

use spamwall_tests::{
    daemon::{Daemon, Settings, spamwall_bin},
    netns::{NetnsPair, Side, Subnet},
    redis::RedisServer,
    require_root,
};

const POLICY: &str = "127.0.0.1:10040";
const DEFER: &str = "action=DEFER_IF_PERMIT too many recipients from";
const POLL: Duration = Duration::from_millis(50);

/// The daemon's `[policy]` with `limits` (TOML) and a metrics endpoint.
fn policy_toml(limits: &str) -> String {
    format!(
        "[policy]\nlisten = [\"{POLICY}\"]\nrequest_timeout = \"5s\"\n{limits}\n\
         [metrics]\nlisten = \"127.0.0.1:9467\"\n"
    )
}

const CLIENT_RCPTS: &str = r#"
[[policy.ratelimit]]
name = "client-rcpts"
key = "client_address"
count = "recipients"
limit = 3
window = "1h"
action = "DEFER_IF_PERMIT too many recipients from %IP%"
"#;

/// Sends one RCPT request with `attrs` to the daemon of `net`; returns the
/// answer line.
fn query(net: &NetnsPair, daemon: &Daemon, attrs: &[(&str, &str)]) -> String {
    let bin = spamwall_bin();
    let mut args = vec![
        bin.to_str().unwrap().to_owned(),
        "query".to_owned(),
        "--server".to_owned(),
        POLICY.to_owned(),
        "--attr".to_owned(),
        "protocol_state=RCPT".to_owned(),
    ];
    for (name, value) in attrs {
        args.push("--attr".to_owned());
        args.push(format!("{name}={value}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = net.exec_in(Side::Server, &args, Duration::from_secs(20));
    assert!(
        output.status.success(),
        "spamwall query failed: {}\ndaemon log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        daemon.log()
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn rcpt(net: &NetnsPair, daemon: &Daemon, client: &str, instance: &str) -> String {
    query(
        net,
        daemon,
        &[("client_address", client), ("instance", instance)],
    )
}

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

#[test]
fn over_the_limit_is_deferred_mails_count_once_and_counts_survive_a_restart() {
    if !require_root("over_the_limit_is_deferred_mails_count_once_and_counts_survive_a_restart") {
        return;
    }
    let net = NetnsPair::new(Subnet::test_net_3(81));
    let mut settings = Settings::on(net.server());
    settings.extra = policy_toml(&format!(
        "{CLIENT_RCPTS}\n\
         [[policy.ratelimit]]\nname = \"sender-mails\"\nkey = \"sender\"\ncount = \"mails\"\n\
         limit = 2\nwindow = \"10m\"\naction = \"DEFER too many mails from this sender\"\n"
    ));
    let mut daemon = Daemon::start(net.server(), &settings);
    // recipients: three RCPTs pass, the fourth is deferred.
    for i in 0..3 {
        assert_eq!(
            rcpt(&net, &daemon, "192.0.2.10", &format!("r{i}")),
            "action=DUNNO",
            "RCPT {i}; log:\n{}",
            daemon.log()
        );
    }
    assert_eq!(
        rcpt(&net, &daemon, "192.0.2.10", "r3"),
        format!("{DEFER} 192.0.2.10")
    );
    // mails: two mails of three RCPTs each pass, every RCPT of the third
    // is deferred; each mail from a client of its own.
    for (mail, client) in [
        ("a", "192.0.2.20"),
        ("b", "192.0.2.21"),
        ("c", "192.0.2.22"),
    ] {
        for recipient in ["x@r.test", "y@r.test", "z@r.test"] {
            let answer = query(
                &net,
                &daemon,
                &[
                    ("client_address", client),
                    ("instance", mail),
                    ("sender", "bulk@sender.test"),
                    ("recipient", recipient),
                ],
            );
            let expected = if mail == "c" {
                "action=DEFER too many mails from this sender"
            } else {
                "action=DUNNO"
            };
            assert_eq!(answer, expected, "mail {mail}, {recipient}");
        }
    }
    let scrape = net.exec_in(
        Side::Server,
        &["curl", "-sf", "http://127.0.0.1:9467/metrics"],
        Duration::from_secs(10),
    );
    let metrics = String::from_utf8_lossy(&scrape.stdout);
    assert!(
        metrics.contains("spamwall_ratelimit_exceeded_total{limit=\"client-rcpts\"} 1"),
        "{metrics}"
    );
    // A clean stop writes the counters; the next start reads them.
    let status = daemon.kill(libc::SIGTERM);
    assert!(status.success(), "{status}; log:\n{}", daemon.log());
    daemon.restart();
    assert_eq!(
        rcpt(&net, &daemon, "192.0.2.10", "r4"),
        format!("{DEFER} 192.0.2.10"),
        "log:\n{}",
        daemon.log()
    );
    assert_eq!(rcpt(&net, &daemon, "192.0.2.11", "r5"), "action=DUNNO");
}

#[test]
fn a_limit_with_ban_bans_through_the_manager_but_never_an_allowlisted_client() {
    if !require_root("a_limit_with_ban_bans_through_the_manager_but_never_an_allowlisted_client") {
        return;
    }
    let net = NetnsPair::new(Subnet::test_net_3(82));
    let mut settings = Settings::on(net.server());
    settings.allowlist = vec!["192.0.2.128/25".to_owned()];
    settings.extra = policy_toml(&CLIENT_RCPTS.replace("limit = 3", "limit = 1\nban = \"1h\""));
    let daemon = Daemon::start(net.server(), &settings);
    for (client, banned) in [("192.0.2.30", true), ("192.0.2.200", false)] {
        assert_eq!(rcpt(&net, &daemon, client, "m1"), "action=DUNNO");
        assert_eq!(
            rcpt(&net, &daemon, client, "m1"),
            format!("{DEFER} {client}"),
            "the answer stands, banned or not"
        );
        let listed = daemon.list().into_iter().find(|ban| ban["addr"] == client);
        match (banned, listed) {
            (true, Some(ban)) => {
                assert_eq!(ban["source"], "policy");
                assert!(
                    ban["reason"].as_str().unwrap().starts_with(
                        "rate limit client-rcpts: client_address 192.0.2.30 over 1 in 1h"
                    ),
                    "{ban}"
                );
            }
            (false, None) => {}
            (_, listed) => panic!(
                "{client}: expected banned = {banned}, listed {listed:?}; log:\n{}",
                daemon.log()
            ),
        }
    }
    // Once per key and window.
    rcpt(&net, &daemon, "192.0.2.30", "m2");
    let count = daemon
        .list()
        .into_iter()
        .find(|ban| ban["addr"] == "192.0.2.30");
    assert_eq!(count.unwrap()["count"], 1);
}

/// A daemon sharing rate limits through `redis`, in a namespace of its own.
fn node(redis: &RedisServer, name: &str, subnet: u16) -> (NetnsPair, Daemon) {
    let net = NetnsPair::new(Subnet::test_net_3(subnet));
    let mut settings = Settings::on(net.server());
    settings.extra = format!(
        "[fleet]\nredis = {:?}\nnode = {name:?}\n{}",
        redis.url(),
        policy_toml(&CLIENT_RCPTS.replace("limit = 3", "limit = 4"))
    );
    let daemon = Daemon::start(net.server(), &settings);
    (net, daemon)
}

#[test]
fn two_daemons_count_together_in_redis_and_alone_while_it_is_gone() {
    if !require_root("two_daemons_count_together_in_redis_and_alone_while_it_is_gone") {
        return;
    }
    assert!(RedisServer::available(), "redis-server is not installed");
    let mut redis = RedisServer::start();
    let (net_a, a) = node(&redis, "mx-a", 83);
    let (net_b, b) = node(&redis, "mx-b", 84);
    let shared = |daemon: &Daemon| daemon.backend("ratelimit").is_some_and(|s| s.active);
    assert!(
        within(Duration::from_secs(5), || shared(&a) && shared(&b)),
        "ratelimit backend not active: {:?}\nlog:\n{}",
        a.backend("ratelimit"),
        a.log()
    );
    let client = "198.51.100.40";
    for (i, (net, daemon)) in [(&net_a, &a), (&net_b, &b), (&net_a, &a), (&net_b, &b)]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            rcpt(net, daemon, client, &format!("m{i}")),
            "action=DUNNO",
            "RCPT {i}"
        );
    }
    // The fifth, on either node, is over the shared limit of four.
    assert_eq!(rcpt(&net_b, &b, client, "m4"), format!("{DEFER} {client}"));

    // Redis gone: requests are still answered, counted locally, and
    // `status` says so.
    redis.stop();
    let other = "198.51.100.41";
    for i in 0..4 {
        assert_eq!(
            rcpt(&net_a, &a, other, &format!("l{i}")),
            "action=DUNNO",
            "local RCPT {i}; log:\n{}",
            a.log()
        );
    }
    assert_eq!(
        rcpt(&net_a, &a, other, "l4"),
        format!("{DEFER} {other}"),
        "the local count holds the limit"
    );
    let status = a.backend("ratelimit").unwrap();
    assert!(!status.active, "{status:?}");
    assert!(status.detail.starts_with("counting locally"), "{status:?}");
    let cli = a.cli_ok(&["status"]);
    assert!(
        cli.contains("backend ratelimit: inactive, counting locally: Redis"),
        "{cli}"
    );
    // The idle node finds out too.
    assert!(
        within(Duration::from_secs(5), || !shared(&b)),
        "{:?}",
        b.backend("ratelimit")
    );

    // Back: shared counting resumes.
    redis.launch();
    assert!(
        within(Duration::from_secs(10), || shared(&a) && shared(&b)),
        "not shared again: {:?}\nlog:\n{}",
        a.backend("ratelimit"),
        a.log()
    );
    let third = "198.51.100.42";
    for (i, (net, daemon)) in [(&net_a, &a), (&net_b, &b), (&net_a, &a), (&net_b, &b)]
        .into_iter()
        .enumerate()
    {
        rcpt(net, daemon, third, &format!("n{i}"));
    }
    assert_eq!(
        rcpt(&net_a, &a, third, "n4"),
        format!("{DEFER} {third}"),
        "log:\n{}",
        a.log()
    );
}
