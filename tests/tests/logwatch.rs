//! End to end: the real daemon follows a mail log in a temporary directory,
//! and a postscreen `DNSBL rank` line appended to it gets the client
//! dropped by XDP on the server's veth; after a SIGKILL and a restart the
//! log is resumed where it was, not read again.
//!
//! Needs root and the binary (`cargo build -p policy-daemon`, or
//! `SPAMWALL_BIN`); run serially:
//! `cargo test -p spamwall-tests --test logwatch -- --test-threads=1`.

use std::{
    fs::OpenOptions,
    io::Write as _,
    net::IpAddr,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use spamwall_tests::{
    daemon::{Daemon, Settings},
    netns::{NetnsPair, Subnet},
    require_root,
};

const SMTP: u16 = 25;
/// How long a ban may take from the appended line to the kernel map: a
/// poll interval (250 ms) plus the ban, with a wide margin.
const BAN_DEADLINE: Duration = Duration::from_secs(10);

/// A classic syslog postscreen line for `client`, stamped now (local time,
/// as syslog writes it).
fn dnsbl_line(client: IpAddr, port: u16) -> String {
    let output = Command::new("date")
        .arg("+%b %e %H:%M:%S")
        .output()
        .expect("running date");
    let stamp = String::from_utf8(output.stdout).expect("date prints UTF-8");
    let client = match client {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => v6.to_string(),
    };
    format!(
        "{} mx postfix/postscreen[4242]: DNSBL rank 3 for [{client}]:{port}",
        stamp.trim_end()
    )
}

fn append(log: &Path, line: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
    writeln!(file, "{line}").unwrap_or_else(|e| panic!("appending to {}: {e}", log.display()));
}

fn ban_of(daemon: &Daemon, addr: IpAddr) -> Option<Value> {
    let addr = addr.to_string();
    daemon
        .list()
        .into_iter()
        .find(|ban| ban["addr"] == addr.as_str())
}

/// Waits (bounded) until `addr` is listed as a logwatch ban with `line` as
/// its reason and the client can no longer reach `server`.
fn assert_banned_and_dropped(
    daemon: &Daemon,
    net: &NetnsPair,
    addr: IpAddr,
    server: IpAddr,
    line: &str,
) -> Value {
    let started = Instant::now();
    loop {
        if let Some(ban) = ban_of(daemon, addr)
            && !net.can_connect(server, SMTP, 1)
        {
            assert_eq!(ban["source"], "logwatch", "{ban}");
            assert_eq!(ban["reason"], line, "{ban}");
            return ban;
        }
        assert!(
            started.elapsed() < BAN_DEADLINE,
            "{addr} not banned and dropped within {BAN_DEADLINE:?} of `{line}`\nbans: {:?}\ndaemon log:\n{}",
            daemon.list(),
            daemon.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn appended_dnsbl_line_gets_the_client_dropped_and_restart_resumes() {
    if !require_root("appended_dnsbl_line_gets_the_client_dropped_and_restart_resumes") {
        return;
    }
    let logs = tempfile::Builder::new()
        .prefix("spamwall-logwatch-")
        .tempdir()
        .expect("creating a temporary directory");
    let log = logs.path().join("mail.log");
    append(
        &log,
        "Nov 20 10:00:00 mx postfix/master[1]: daemon started -- version 3.7.11",
    );
    let mut net = NetnsPair::new(Subnet::test_net_3(53));
    net.listen_both(SMTP);
    let mut settings = Settings::on(net.server());
    settings.extra = format!(
        "[[logwatch.source]]\nname = \"mail\"\npath = {}\n\n\
         [[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"rbl\"\nmaxretry = 1\n",
        serde_json::to_string(log.to_str().expect("UTF-8 path")).expect("quoted")
    );
    let mut daemon = Daemon::start(net.server(), &settings);
    let (server_v4, server_v6) = (IpAddr::from(net.server_v4()), IpAddr::from(net.server_v6()));
    let (client_v4, client_v6) = (IpAddr::from(net.client_v4()), IpAddr::from(net.client_v6()));
    assert!(
        net.can_connect(server_v4, SMTP, 2) && net.can_connect(server_v6, SMTP, 2),
        "the client must connect before any ban; log:\n{}",
        daemon.log()
    );

    let first = dnsbl_line(client_v4, 40001);
    append(&log, &first);
    let ban = assert_banned_and_dropped(&daemon, &net, client_v4, server_v4, &first);
    assert_eq!(ban["count"], 1, "{ban}");
    assert!(
        net.can_connect(server_v6, SMTP, 2),
        "only the IPv4 address is banned; the client's IPv6 still connects"
    );

    // The position is saved right after the line is processed; leave that
    // a moment, then kill without a chance to save anything more.
    thread::sleep(Duration::from_millis(750));
    daemon.kill(libc::SIGKILL);
    // Written while the daemon is down: read on restart.
    let second = dnsbl_line(client_v6, 40002);
    append(&log, &second);
    daemon.restart();
    assert_banned_and_dropped(&daemon, &net, client_v6, server_v6, &second);

    // And after the restart: another address of the namespace's subnet.
    let other = IpAddr::from(net.subnet().v4_host(77));
    let third = dnsbl_line(other, 40003);
    append(&log, &third);
    let started = Instant::now();
    let ban = loop {
        if let Some(ban) = ban_of(&daemon, other) {
            break ban;
        }
        assert!(
            started.elapsed() < BAN_DEADLINE,
            "{other} not banned within {BAN_DEADLINE:?}; log:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ban["source"], "logwatch");
    assert_eq!(ban["reason"], third.as_str());

    // The first line was not read again: its address was banned once.
    let first_ban = ban_of(&daemon, client_v4).expect("the first ban is still active");
    assert_eq!(
        first_ban["count"], 1,
        "the first line was read twice: {first_ban}"
    );
    let log_text = daemon.log();
    let bans_logged = log_text
        .lines()
        .filter(|l| l.contains("logwatch ban") && l.contains(&format!("host={client_v4}")))
        .count();
    assert_eq!(bans_logged, 1, "daemon log:\n{log_text}");
    assert!(
        !net.can_connect(server_v4, SMTP, 1),
        "still dropped after the restart"
    );
}
