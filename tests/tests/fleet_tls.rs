//! `fleet.redis` over TLS with a password (`rediss://:PASSWORD@host:port`),
//! against a real redis-server built with TLS, its certificate signed by a
//! CA the test makes and hands to the daemon through `SSL_CERT_FILE`.
//!
//! Redis and node A share the server namespace and talk over its
//! loopback; every other node runs in a client namespace of its own, on a
//! veth link to the server namespace, and reaches Redis at the server's
//! end of that link. The server certificate names all those addresses.

#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use spamwall::dataplane::Dataplane;
use spamwall_tests::{
    TEST_CAPACITIES,
    daemon::{Daemon, Settings},
    netns::{ExtraClient, NetnsPair, Subnet, in_netns, kill_and_reap, run_bounded},
    require_root,
};

const PASSWORD: &str = "fleet-secret";
const PORT: u16 = 16_390;
/// How long a ban may take to reach another node here: a deadline for a
/// loaded machine, not a speed.
const PROPAGATION: Duration = Duration::from_secs(5);

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 and `addresses`
/// signed by it; and a second CA (`other-ca.pem`) that signed nothing.
fn make_certificates(dir: &Path, addresses: &[String]) {
    let openssl = |args: &[&str]| {
        let out = run_bounded(
            Command::new("openssl").args(args).current_dir(dir),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=spamwall test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    let names: Vec<String> = std::iter::once("127.0.0.1")
        .chain(addresses.iter().map(String::as_str))
        .map(|address| format!("IP:{address}"))
        .collect();
    std::fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName={}\n", names.join(",")),
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "other-ca.key",
        "-out",
        "other-ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=spamwall test CA that signed nothing",
    ]);
}

/// redis-server with only a TLS port, inside `netns`, on its loopback
/// and on `addresses`; killed on drop.
struct TlsRedis {
    child: Child,
    netns: String,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start(netns: &str, addresses: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        make_certificates(dir.path(), addresses);
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let child = in_netns(netns, "redis-server")
            .args(["--port", "0", "--tls-port", &PORT.to_string(), "--bind"])
            .arg("127.0.0.1")
            .args(addresses)
            .args([
                "--tls-cert-file",
                &path("server.pem"),
                "--tls-key-file",
                &path("server.key"),
            ])
            .args([
                "--tls-ca-cert-file",
                &path("ca.pem"),
                "--tls-auth-clients",
                "no",
            ])
            .args([
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &path(""),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let redis = Self {
            child,
            netns: netns.to_owned(),
            dir,
        };
        let started = Instant::now();
        while redis.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server with TLS did not answer"
            );
            thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn ca(&self) -> String {
        self.file("ca.pem")
    }

    /// A CA that did not sign the server's certificate.
    fn other_ca(&self) -> String {
        self.file("other-ca.pem")
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn cli(&self, args: &[&str]) -> Option<String> {
        let out = run_bounded(
            in_netns(&self.netns, "redis-cli")
                .args([
                    "--tls",
                    "--cacert",
                    &self.ca(),
                    "-p",
                    &PORT.to_string(),
                    "-a",
                    PASSWORD,
                    "--no-auth-warning",
                ])
                .args(args),
            Duration::from_secs(10),
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// Redis with TLS and a password, node A in the server namespace, and
/// two client links for further nodes: 198.51.100.0/24 and 192.0.2.0/24.
/// Fields drop in order: Redis, then the namespaces.
struct Fleet {
    redis: TlsRedis,
    extra: [ExtraClient; 2],
    net: NetnsPair,
}

impl Fleet {
    fn start() -> Self {
        let mut net = NetnsPair::new(Subnet::test_net_3(30));
        let extra = [
            net.add_client(Subnet::test_net_2(31)),
            net.add_client(Subnet::test_net_1(32)),
        ];
        let addresses: Vec<String> = extra
            .iter()
            .map(|link| link.subnet.v4_host(1).to_string())
            .collect();
        let redis = TlsRedis::start(net.server(), &addresses);
        Self { redis, extra, net }
    }

    /// A node's settings: on `link` (the server namespace when `None`),
    /// connecting with `password` and trusting `ca`.
    fn node(&self, name: &str, link: Option<&ExtraClient>, password: &str, ca: &str) -> Daemon {
        let (netns, host) = match link {
            Some(link) => (link.netns.as_str(), link.subnet.v4_host(1).to_string()),
            None => (self.net.server(), "127.0.0.1".to_owned()),
        };
        let mut settings = Settings::on(netns);
        settings.extra = format!(
            "[fleet]\nredis = \"rediss://:{password}@{host}:{PORT}/0\"\nnode = \"{name}\"\nshare = [\"cli\"]\n"
        );
        settings.env = vec![("SSL_CERT_FILE".to_owned(), ca.to_owned())];
        Daemon::start(netns, &settings)
    }

    /// Whether Redis holds `target` in the fleet's sorted set.
    fn stored(&self, target: &str) -> bool {
        self.redis
            .cli(&["ZSCORE", "spamwall:bans", target])
            .is_some_and(|score| !score.is_empty())
    }
}

/// The daemon's fleet backend, from `status --json`.
fn fleet_status(daemon: &Daemon) -> serde_json::Value {
    let status = daemon.status();
    status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "fleet")
        .unwrap_or_else(|| panic!("no fleet entry in {status}"))
        .clone()
}

/// Whether `target` is in the kernel maps pinned by `daemon`.
fn enforces(maps: &Dataplane, target: &str) -> bool {
    let net: IpNet = target
        .parse()
        .or_else(|_| target.parse::<std::net::IpAddr>().map(IpNet::from))
        .unwrap();
    maps.get(net).unwrap().is_some()
}

/// Polls `check` every 50 ms until it holds or `deadline` passes.
fn within(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    true
}

/// A ban made on A before B started reaches B by the resync, one made
/// later by the channel: both in B's kernel map, over TLS with the
/// password, which status does not show.
#[test]
fn bans_are_shared_over_tls_with_a_password() {
    if !require_root("bans_are_shared_over_tls_with_a_password") {
        return;
    }
    let fleet = Fleet::start();
    let a = fleet.node("tls-a", None, PASSWORD, &fleet.redis.ca());
    a.cli_ok(&["ban", "198.51.100.50", "--reason", "over tls"]);
    assert!(
        within(PROPAGATION, || fleet.stored("198.51.100.50")),
        "the ban never reached Redis over TLS; daemon log:\n{}",
        a.log()
    );

    // B's status answers once its resync is done: no waiting needed.
    let b = fleet.node("tls-b", Some(&fleet.extra[0]), PASSWORD, &fleet.redis.ca());
    let maps = Dataplane::load(b.pin_dir(), TEST_CAPACITIES).unwrap();
    assert!(
        enforces(&maps, "198.51.100.50"),
        "B did not resync A's ban over TLS: {}\nlog:\n{}",
        fleet_status(&b),
        b.log()
    );
    a.cli_ok(&["ban", "2001:db8:ee::51", "--reason", "over tls, live"]);
    assert!(
        within(PROPAGATION, || enforces(&maps, "2001:db8:ee::51")),
        "A's ban did not reach B's kernel map over TLS: {}\nlog:\n{}",
        fleet_status(&b),
        b.log()
    );
    let listed = b.list();
    let entry = listed
        .iter()
        .find(|ban| ban["addr"] == "2001:db8:ee::51")
        .unwrap_or_else(|| panic!("not listed on B: {listed:?}"));
    assert_eq!(entry["source"], "fleet", "{entry}");

    for (name, daemon) in [("A", &a), ("B", &b)] {
        let fleet = fleet_status(daemon);
        assert_eq!(fleet["active"], true, "{name}: {fleet}");
        assert!(
            !fleet.to_string().contains(PASSWORD),
            "{name}: the password leaks into status: {fleet}"
        );
        // The log is written in order: once a ban made now is in it, so is
        // every line before it.
        let marker = format!("192.0.2.{}", if name == "A" { 201 } else { 202 });
        daemon.cli_ok(&["ban", &marker, "--reason", "log marker"]);
        let log = daemon.wait_log(&format!("{name}: the marker ban"), |log| {
            log.contains(&format!("target={marker} "))
        });
        assert!(
            !log.contains(PASSWORD),
            "{name}: the password leaks into the log"
        );
    }
    drop(maps);
}

/// A node that does not trust Redis's certificate, and one with the
/// wrong password, stay unconnected: status and log say why, and neither
/// takes a ban A made before they started, which a connected node
/// resyncs before it is ready.
#[test]
fn a_wrong_ca_or_a_wrong_password_connects_no_node() {
    if !require_root("a_wrong_ca_or_a_wrong_password_connects_no_node") {
        return;
    }
    let fleet = Fleet::start();
    let a = fleet.node("tls-a", None, PASSWORD, &fleet.redis.ca());
    a.cli_ok(&["ban", "198.51.100.50"]);
    assert!(
        within(PROPAGATION, || fleet.stored("198.51.100.50")),
        "{}",
        a.log()
    );
    let wrong_password = "not-the-fleet-secret";
    let cases = [
        (
            "wrong CA",
            fleet.node(
                "tls-untrusting",
                Some(&fleet.extra[0]),
                PASSWORD,
                &fleet.redis.other_ca(),
            ),
            "invalid peer certificate",
        ),
        (
            "wrong password",
            fleet.node(
                "tls-wrong-password",
                Some(&fleet.extra[1]),
                wrong_password,
                &fleet.redis.ca(),
            ),
            "authentication failed",
        ),
    ];
    for (case, node, why) in &cases {
        let status = fleet_status(node);
        assert_eq!(status["active"], false, "{case}: {status}");
        let detail = status["detail"].as_str().unwrap().to_ascii_lowercase();
        assert!(
            detail.contains("not connected") && detail.contains(why),
            "{case}: status does not say why: {status}"
        );
        let log = node.wait_log(&format!("{case}: why"), |log| {
            log.to_ascii_lowercase().contains(why)
        });
        assert!(
            !log.contains(PASSWORD) && !log.contains(wrong_password),
            "{case}: a password leaks into the log:\n{log}"
        );
        assert_eq!(node.list(), Vec::<serde_json::Value>::new(), "{case}");
        let maps = Dataplane::load(node.pin_dir(), TEST_CAPACITIES).unwrap();
        assert!(!enforces(&maps, "198.51.100.50"), "{case}");
    }
}
