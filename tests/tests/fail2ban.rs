//! spamwall's fail2ban client and backend against a real fail2ban-server.
//!
//! Each test starts its own server in a temporary directory (see
//! `spamwall_tests::fail2ban`); the jail's action runs `true`, so nothing
//! here touches a firewall and no privilege is needed. Bans are checked
//! with fail2ban's own `fail2ban-client status`, not with spamwall's
//! decoder. Run with `--test-threads=1` like the other integration tests.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use spamwall::bans::fail2ban::{
    BanOutcome, Fail2banBackend, Fail2banError, Fail2banSettings, OutboxStore, UnbanOutcome,
};
use spamwall_tests::fail2ban::{Fail2banServer, FileOutbox, JAIL};

/// Longest wait for deliveries and for fail2ban's list to catch up.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

fn net(text: &str) -> IpNet {
    spamwall::bans::parse_target(text).unwrap_or_else(|e| panic!("{e}"))
}

fn texts<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    items.into_iter().map(str::to_owned).collect()
}

/// `n` distinct test addresses, every fourth one IPv6.
fn addresses(n: u32) -> Vec<IpNet> {
    (0..n)
        .map(|i| {
            let addr: IpAddr = if i % 4 == 3 {
                format!("2001:db8:f2b::{i:x}").parse().expect("v6")
            } else {
                format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256 + 1)
                    .parse()
                    .expect("v4")
            };
            IpNet::from(addr)
        })
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn start_backend(settings: Fail2banSettings, outbox: &Arc<FileOutbox>) -> Fail2banBackend {
    Fail2banBackend::start(settings, Arc::clone(outbox)).unwrap_or_else(|e| panic!("{e}"))
}

fn flush(backend: &Fail2banBackend, server: &Fail2banServer) {
    assert!(
        backend.flush(DELIVERY_TIMEOUT),
        "bans not delivered within {DELIVERY_TIMEOUT:?}: {:?}\nfail2ban log:\n{}",
        backend.health(),
        server.log()
    );
}

#[test]
fn client_bans_unbans_and_reads_the_jail() {
    let server = Fail2banServer::start();
    let mut client = server.client();
    client.ping().expect("ping");

    assert_eq!(
        client.ban(JAIL, net("192.0.2.7")).expect("ban"),
        BanOutcome::Banned
    );
    assert_eq!(
        client.ban(JAIL, net("192.0.2.7")).expect("duplicate ban"),
        BanOutcome::AlreadyBanned
    );
    assert_eq!(
        client.ban(JAIL, net("2001:db8::7")).expect("ban v6"),
        BanOutcome::Banned
    );
    assert!(
        client
            .is_banned(JAIL, net("2001:db8::7"))
            .expect("is_banned")
    );
    assert!(!client.is_banned(JAIL, net("192.0.2.8")).expect("is_banned"));

    let expected = texts(["192.0.2.7", "2001:db8::7"]);
    assert_eq!(server.cli_banned(JAIL), expected);
    let banned: BTreeSet<String> = client.banned(JAIL).expect("banned").into_iter().collect();
    assert_eq!(banned, expected);
    let status = client.status(JAIL).expect("status");
    assert_eq!(
        (status.currently_banned, status.total_banned),
        (2, 2),
        "{status:?}"
    );
    assert_eq!(status.banned.into_iter().collect::<BTreeSet<_>>(), expected);

    assert_eq!(
        client.unban(JAIL, net("192.0.2.7")).expect("unban"),
        UnbanOutcome::Unbanned
    );
    assert_eq!(
        client.unban(JAIL, net("192.0.2.7")).expect("unban again"),
        UnbanOutcome::NotBanned
    );
    assert_eq!(server.cli_banned(JAIL), texts(["2001:db8::7"]));
}

#[test]
fn backend_bans_reach_fail2ban_and_unban_lifts_them() {
    let server = Fail2banServer::start();
    let outbox = Arc::new(FileOutbox::open(server.dir().join("outbox")));
    let backend = start_backend(server.settings(), &outbox);
    for target in [
        "192.0.2.7",
        "2001:db8::7",
        "192.0.2.7",
        "198.51.100.0/24",
        "2001:db8:1:2::/64",
    ] {
        backend.ban(net(target)).expect("queue ban");
    }
    flush(&backend, &server);
    let all = texts([
        "192.0.2.7",
        "2001:db8::7",
        "198.51.100.0/24",
        "2001:db8:1:2::/64",
    ]);
    assert_eq!(server.cli_banned(JAIL), all);
    let health = backend.health();
    assert_eq!((health.delivered, health.queue_depth), (5, 0), "{health:?}");
    assert!(
        health.connected && health.last_error.is_none(),
        "{health:?}"
    );

    backend.unban(net("192.0.2.7")).expect("queue unban");
    backend.unban(net("198.51.100.0/24")).expect("queue unban");
    flush(&backend, &server);
    assert_eq!(
        server.cli_banned(JAIL),
        texts(["2001:db8::7", "2001:db8:1:2::/64"])
    );
    assert!(outbox.pending().expect("outbox").is_empty());
}

#[test]
fn an_unknown_jail_is_a_clear_error() {
    let server = Fail2banServer::start();
    let mut client = server.client();
    let error = client
        .ban("nojail", net("192.0.2.7"))
        .expect_err("no such jail");
    assert!(
        matches!(&error, Fail2banError::UnknownJail { jail, .. } if jail == "nojail"),
        "{error:?}"
    );
    let message = error.to_string();
    for needle in [
        "\"nojail\"",
        "set nojail banip 192.0.2.7",
        &server.socket().display().to_string(),
    ] {
        assert!(
            message.contains(needle),
            "{message:?} does not mention {needle:?}"
        );
    }
    // The connection stays usable.
    client.ping().expect("ping after the error");

    // The backend keeps the ban queued and says why.
    let outbox = Arc::new(FileOutbox::open(server.dir().join("outbox")));
    let settings = Fail2banSettings {
        jail: "nojail".into(),
        ..server.settings()
    };
    let backend = start_backend(settings, &outbox);
    backend.ban(net("192.0.2.7")).expect("queue ban");
    wait_for("the backend to report the error", DELIVERY_TIMEOUT, || {
        backend
            .health()
            .last_error
            .is_some_and(|e| e.contains("no jail \"nojail\""))
    });
    let health = backend.health();
    assert_eq!(health.queue_depth, 1, "{health:?}");
    assert_eq!(outbox.pending().expect("outbox").len(), 1);
    assert!(server.cli_banned(JAIL).is_empty());
}

#[test]
fn a_restart_in_the_middle_of_a_stream_of_bans_loses_none() {
    let mut server = Fail2banServer::start();
    let outbox = Arc::new(FileOutbox::open(server.dir().join("outbox")));
    let backend = start_backend(server.settings(), &outbox);
    let targets = addresses(200);
    let restarted = thread::scope(|scope| {
        let server = &mut server;
        let backend = &backend;
        // Restart (`fail2ban-client stop`, as systemctl does) once 50 bans were delivered,
        // while the stream goes on.
        let restarter = scope.spawn(move || {
            wait_for("50 deliveries", DELIVERY_TIMEOUT, || {
                backend.health().delivered >= 50
            });
            let at = backend.health().delivered;
            server.restart();
            at
        });
        for target in &targets {
            backend.ban(*target).expect("queue ban");
            thread::sleep(Duration::from_millis(5));
        }
        restarter.join().expect("restart thread")
    });
    assert!(
        restarted < 200,
        "the restart came after the stream ended ({restarted} delivered)"
    );
    flush(&backend, &server);
    let health = backend.health();
    assert_eq!(
        (health.delivered, health.queue_depth),
        (200, 0),
        "{health:?}"
    );
    assert!(health.errors > 0, "the outage went unnoticed: {health:?}");

    let expected: BTreeSet<String> = targets
        .iter()
        .map(spamwall::bans::target_to_string)
        .collect();
    let listed = server.wait_until_listed(&expected, DELIVERY_TIMEOUT);
    assert_eq!(listed, expected);
    // spamwall's decoder reads the same 200 entries.
    let decoded: BTreeSet<String> = server
        .client()
        .banned(JAIL)
        .expect("banned")
        .into_iter()
        .collect();
    assert_eq!(decoded, expected);
    assert!(outbox.pending().expect("outbox").is_empty());
}

#[test]
fn bans_queue_while_fail2ban_is_down_and_arrive_when_it_returns() {
    let mut server = Fail2banServer::start();
    let outbox = Arc::new(FileOutbox::open(server.dir().join("outbox")));
    let backend = start_backend(server.settings(), &outbox);
    wait_for("the first probe", DELIVERY_TIMEOUT, || {
        backend.health().connected
    });
    server.kill();

    let targets = addresses(20);
    for target in &targets {
        backend.ban(*target).expect("queue ban");
    }
    wait_for("a failed delivery", DELIVERY_TIMEOUT, || {
        backend.health().errors > 0
    });
    let health = backend.health();
    assert!(!health.connected, "{health:?}");
    assert_eq!(health.queue_depth, 20, "{health:?}");
    let error = health.last_error.expect("last error while down");
    assert!(
        error.contains(&server.socket().display().to_string()),
        "{error}"
    );
    assert_eq!(outbox.pending().expect("outbox").len(), 20);

    server.launch();
    flush(&backend, &server);
    let expected: BTreeSet<String> = targets
        .iter()
        .map(spamwall::bans::target_to_string)
        .collect();
    server.wait_until_listed(&expected, DELIVERY_TIMEOUT);
    let health = backend.health();
    assert!(
        health.connected && health.last_error.is_none(),
        "{health:?}"
    );
    assert_eq!(health.delivered, 20);
}

#[test]
fn queued_bans_survive_a_restart_of_the_backend() {
    let mut server = Fail2banServer::configure();
    let path = server.dir().join("outbox");
    let targets = addresses(10);
    {
        let outbox = Arc::new(FileOutbox::open(&path));
        let backend = start_backend(server.settings(), &outbox);
        for target in &targets {
            backend.ban(*target).expect("queue ban");
        }
        backend.unban(targets[0]).expect("queue unban");
        wait_for("a failed delivery", DELIVERY_TIMEOUT, || {
            backend.health().errors > 0
        });
        assert_eq!(backend.health().queue_depth, 11);
        backend.shutdown();
    }
    server.launch();
    let outbox = Arc::new(FileOutbox::open(&path));
    assert_eq!(outbox.pending().expect("outbox").len(), 11);
    let backend = start_backend(server.settings(), &outbox);
    flush(&backend, &server);
    let expected: BTreeSet<String> = targets[1..]
        .iter()
        .map(spamwall::bans::target_to_string)
        .collect();
    // The unban queued last was applied last.
    assert_eq!(
        server.wait_until_listed(&expected, DELIVERY_TIMEOUT),
        expected
    );
    assert!(outbox.pending().expect("outbox").is_empty());
}

#[test]
fn the_client_reconnects_after_fail2ban_restarts() {
    let mut server = Fail2banServer::start();
    let mut client = server.client();
    client.ping().expect("first ping");
    assert!(client.is_connected());
    server.restart();
    // The old connection is dead; the client notices and reconnects.
    client.ping().expect("ping after the restart");
    assert_eq!(
        client.ban(JAIL, net("192.0.2.9")).expect("ban"),
        BanOutcome::Banned
    );
    server.kill();
    let error = client.ping().expect_err("fail2ban is gone");
    assert!(matches!(error, Fail2banError::Connect { .. }), "{error:?}");
}
