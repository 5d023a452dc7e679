//! `fleet.redis` over TLS with a password (`rediss://:PASSWORD@host:port`),
//! against a real redis-server built with TLS, its certificate signed by a
//! CA the test makes and hands to the daemon through `SSL_CERT_FILE`.

#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use spamwall_tests::{
    daemon::{Daemon, Settings},
    netns::{NetnsPair, Subnet, in_netns, kill_and_reap, run_bounded},
    require_root,
};

const PASSWORD: &str = "fleet-secret";
const PORT: u16 = 16_390;

/// A CA, and a server certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
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
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
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
}

/// redis-server with only a TLS port, inside `netns`; killed on drop.
struct TlsRedis {
    child: Child,
    netns: String,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start(netns: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        make_certificates(dir.path());
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let child = in_netns(netns, "redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &PORT.to_string(),
                "--bind",
                "127.0.0.1",
            ])
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
        self.dir.path().join("ca.pem").to_str().unwrap().to_owned()
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

#[test]
fn bans_are_shared_over_tls_with_a_password() {
    if !require_root("bans_are_shared_over_tls_with_a_password") {
        return;
    }
    let net = NetnsPair::new(Subnet::test_net_3(30));
    let redis = TlsRedis::start(net.server());
    let mut settings = Settings::on(net.server());
    settings.extra = format!(
        "[fleet]\nredis = \"rediss://:{PASSWORD}@127.0.0.1:{PORT}/0\"\nnode = \"tls-node\"\nshare = [\"cli\"]\n"
    );
    settings.env = vec![("SSL_CERT_FILE".to_owned(), redis.ca())];
    let daemon = Daemon::start(net.server(), &settings);

    daemon.cli_ok(&["ban", "198.51.100.50", "--reason", "over tls"]);
    let started = Instant::now();
    loop {
        let score = redis.cli(&["ZSCORE", "spamwall:bans", "198.51.100.50"]);
        if score.as_deref().is_some_and(|s| !s.is_empty()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the ban never reached Redis over TLS; daemon log:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let status = daemon.status();
    let fleet = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "fleet")
        .unwrap_or_else(|| panic!("no fleet entry in {status}"))
        .clone();
    assert_eq!(fleet["active"], true, "{status}");
    assert!(
        !fleet.to_string().contains(PASSWORD),
        "the password leaks into status: {fleet}"
    );
}
