//! End to end: the real daemon follows a mail log in a temporary directory,
//! and a postscreen `DNSBL rank` line appended to it gets the client
//! dropped by XDP on the server's veth; after a SIGKILL and a restart the
//! log is resumed where it was, not read again. The same through a real
//! systemd-journald: lines a unit logs get their client banned, another
//! unit's do not, and a restart resumes after the saved cursor.
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
use spamwall::bans::store::{LogPosition, Store};
use spamwall_tests::{
    daemon::{Daemon, Settings},
    journald::Journald,
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

/// A mail log in a temporary directory (removed with the guard), holding
/// one line of history.
fn mail_log() -> (tempfile::TempDir, std::path::PathBuf) {
    let logs = tempfile::Builder::new()
        .prefix("spamwall-logwatch-")
        .tempdir()
        .expect("creating a temporary directory");
    let log = logs.path().join("mail.log");
    append(
        &log,
        "Nov 20 10:00:00 mx postfix/master[1]: daemon started -- version 3.7.11",
    );
    (logs, log)
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
    let (_logs, log) = mail_log();
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

    // Killed without a chance to save anything more, once the position
    // after the line is in the store.
    let end = std::fs::metadata(&log).expect("the log exists").len();
    wait_saved(&daemon, "mail", "the end of the log", |p| p.offset == end);
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
    let ban = wait_banned(&daemon, other, "the line after the restart");
    assert_eq!(ban["source"], "logwatch");
    assert_eq!(ban["reason"], third.as_str());

    // The first line was not read again: its address was banned once.
    let first_ban = ban_of(&daemon, client_v4).expect("the first ban is still active");
    assert_eq!(
        first_ban["count"], 1,
        "the first line was read twice: {first_ban}"
    );
    let log_text = daemon.wait_log("the ban of the first line", |log| {
        log.contains("logwatch ban")
    });
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

/// Waits (bounded) until the position the daemon saved for `source` in its
/// store satisfies `done`; `what` names the position awaited.
fn wait_saved(daemon: &Daemon, source: &str, what: &str, done: impl Fn(&LogPosition) -> bool) {
    let store = Store::open_in(daemon.state_dir()).expect("opening the daemon's store");
    let started = Instant::now();
    loop {
        let saved = store
            .logwatch_position(source)
            .expect("reading the saved position");
        if saved.as_ref().is_some_and(&done) {
            return;
        }
        assert!(
            started.elapsed() < BAN_DEADLINE,
            "position of {source} at {what} not saved within {BAN_DEADLINE:?}: {saved:?}\ndaemon log:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The cursor of the last journal entry of `unit` in the namespace.
fn last_cursor(journald: &Journald, unit: &str) -> String {
    let output = spamwall_tests::netns::run_bounded(
        Command::new("journalctl")
            .arg(format!("--namespace={}", journald.namespace()))
            .args(["-u", unit, "-o", "json", "-n", "1", "--no-pager"]),
        Duration::from_secs(10),
    );
    let entry: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "journalctl's last entry of {unit} is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    entry["__CURSOR"]
        .as_str()
        .expect("a journal entry has a cursor")
        .to_owned()
}

/// A postscreen `DNSBL rank` message as Postfix logs it through syslog.
fn dnsbl_message(client: IpAddr, port: u16) -> String {
    format!("DNSBL rank 3 for [{client}]:{port}")
}

/// Waits until `addr` is banned; the ban.
fn wait_banned(daemon: &Daemon, addr: IpAddr, what: &str) -> Value {
    let started = Instant::now();
    loop {
        if let Some(ban) = ban_of(daemon, addr) {
            return ban;
        }
        assert!(
            started.elapsed() < BAN_DEADLINE,
            "{addr} not banned within {BAN_DEADLINE:?} of {what}\nbans: {:?}\ndaemon log:\n{}",
            daemon.list(),
            daemon.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The cursor of `unit`'s entry whose message is `message`, once journald
/// has written it.
fn cursor_of(journald: &Journald, unit: &str, message: &str) -> Option<String> {
    let output = spamwall_tests::netns::run_bounded(
        Command::new("journalctl")
            .arg(format!("--namespace={}", journald.namespace()))
            .args(["-u", unit, "-o", "json", "--no-pager"])
            .arg(format!("MESSAGE={message}")),
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let entry: Value = serde_json::from_str(text.lines().next()?).ok()?;
    entry["__CURSOR"].as_str().map(str::to_owned)
}

/// The pids of the `journalctl` processes the daemon started: the
/// children of its threads.
fn journalctl_pids(daemon: &Daemon) -> Vec<u32> {
    let Some(pid) = daemon.pid() else {
        return Vec::new();
    };
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|child| child.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/comm"))
                .is_ok_and(|comm| comm.trim() == "journalctl")
        })
        .collect()
}

/// Whether `pid` still runs (exists and is not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Waits until the daemon follows `unit`'s journal: logs a probe line
/// (which no filter matches) and polls the cursor the daemon saves until
/// it is the probe's, with a fresh probe each second, because a
/// `journalctl` that has not yet taken "now" never sees an earlier line.
fn wait_following(daemon: &Daemon, journald: &mut Journald, unit: &str) {
    let store = Store::open_in(daemon.state_dir()).expect("opening the daemon's store");
    let started = Instant::now();
    for n in 0_u32.. {
        let probe = format!("spamwall test probe {n}");
        journald.log(unit, "spamwall-test", &probe);
        let window = Instant::now() + Duration::from_secs(1);
        while Instant::now() < window {
            let saved = store
                .logwatch_position("journal")
                .expect("reading the saved position")
                .and_then(|position| position.cursor);
            if saved.is_some() && saved == cursor_of(journald, unit, &probe) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        assert!(
            started.elapsed() < BAN_DEADLINE,
            "the daemon does not follow {unit}'s journal after {BAN_DEADLINE:?}; log:\n{}",
            daemon.log()
        );
    }
}

/// The `[logwatch]` of a journal source on `unit` in `journald`'s
/// namespace, banning on the first postscreen DNSBL line.
fn journal_settings(net: &NetnsPair, journald: &Journald, unit: &str) -> Settings {
    let mut settings = Settings::on(net.server());
    settings.extra = format!(
        "[[logwatch.source]]\nname = \"journal\"\njournal = [\"{unit}\"]\n\
         journal_namespace = \"{}\"\n\n\
         [[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"rbl\"\nmaxretry = 1\n",
        journald.namespace()
    );
    settings
}

#[test]
fn journal_lines_of_the_unit_ban_and_restart_resumes_after_the_cursor() {
    if !require_root("journal_lines_of_the_unit_ban_and_restart_resumes_after_the_cursor") {
        return;
    }
    let mut journald = Journald::start();
    let net = NetnsPair::new(Subnet::test_net_3(54));
    let settings = journal_settings(&net, &journald, "postfix@-.service");
    let mut daemon = Daemon::start(net.server(), &settings);
    wait_following(&daemon, &mut journald, "postfix@-.service");
    let host = |n: u8| IpAddr::from(net.subnet().v4_host(n));

    // Postfix's unit logs: banned, with the line as journald gave it.
    let first = dnsbl_message(host(81), 40001);
    journald.log("postfix@-.service", "postfix/postscreen", &first);
    let ban = wait_banned(&daemon, host(81), "the unit's line");
    assert_eq!(ban["source"], "logwatch", "{ban}");
    let reason = ban["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with("postfix/postscreen[") && reason.ends_with(&format!("]: {first}")),
        "{ban}"
    );

    // Another unit's line is not this source's; the next line of the
    // unit, logged after it, shows it was passed over.
    journald.log(
        "other.service",
        "postfix/postscreen",
        &dnsbl_message(host(82), 40002),
    );
    journald.log(
        "postfix@-.service",
        "postfix/postscreen",
        &dnsbl_message(host(83), 40003),
    );
    wait_banned(&daemon, host(83), "the unit's second line");
    assert!(
        ban_of(&daemon, host(82)).is_none(),
        "another unit's line banned its client: {:?}",
        daemon.list()
    );

    // Killed outright once the cursor is saved; a line logged while it
    // is down is read on restart, the earlier ones are not read again.
    let last = last_cursor(&journald, "postfix@-.service");
    wait_saved(&daemon, "journal", "the unit's last entry", |p| {
        p.cursor.as_deref() == Some(last.as_str())
    });
    daemon.kill(libc::SIGKILL);
    journald.log(
        "postfix@-.service",
        "postfix/postscreen",
        &dnsbl_message(host(84), 40004),
    );
    daemon.restart();
    wait_banned(
        &daemon,
        host(84),
        "the line logged while the daemon was down",
    );
    for n in [81, 83] {
        let ban = ban_of(&daemon, host(n)).expect("still banned");
        assert_eq!(ban["count"], 1, "a line was read twice: {ban}");
    }
}

/// The unit whose journal the tests follow, as Debian's Postfix names it.
const UNIT: &str = "postfix@-.service";

/// A `journalctl` that dies is started again, after the saved cursor, so a
/// line logged while none ran still bans; a daemon killed outright takes
/// its `journalctl` with it.
#[test]
fn journalctl_is_restarted_after_it_dies_and_dies_with_the_daemon() {
    if !require_root("journalctl_is_restarted_after_it_dies_and_dies_with_the_daemon") {
        return;
    }
    let mut journald = Journald::start();
    let net = NetnsPair::new(Subnet::test_net_1(55));
    let mut daemon = Daemon::start(net.server(), &journal_settings(&net, &journald, UNIT));
    wait_following(&daemon, &mut journald, UNIT);
    let host = |n: u8| IpAddr::from(net.subnet().v4_host(n));
    let first = match journalctl_pids(&daemon)[..] {
        [pid] => pid,
        ref pids => panic!("expected one journalctl, found {pids:?}"),
    };

    // SAFETY: kill(2) on the journalctl the daemon under test started.
    let killed = unsafe { libc::kill(i32::try_from(first).expect("pid fits"), libc::SIGKILL) };
    assert_eq!(
        killed,
        0,
        "kill {first}: {}",
        std::io::Error::last_os_error()
    );
    journald.log(UNIT, "postfix/postscreen", &dnsbl_message(host(91), 40091));
    // The restart waits 5 s; the ban arrives after it.
    let deadline = Instant::now() + BAN_DEADLINE;
    let second = loop {
        if let [pid] = journalctl_pids(&daemon)[..]
            && pid != first
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "no new journalctl within {BAN_DEADLINE:?} of killing {first}; log:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert!(!running(first), "the killed journalctl {first} runs");
    wait_banned(&daemon, host(91), "a line logged while journalctl was dead");
    assert!(
        daemon
            .log()
            .contains("journalctl exited; starting it again"),
        "{}",
        daemon.log()
    );

    daemon.kill(libc::SIGKILL);
    let deadline = Instant::now() + BAN_DEADLINE;
    while running(second) {
        assert!(
            Instant::now() < deadline,
            "journalctl {second} outlived the daemon by {BAN_DEADLINE:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_fail_line_smuggled_past_the_line_limit_bans_nothing() {
    if !require_root("a_fail_line_smuggled_past_the_line_limit_bans_nothing") {
        return;
    }
    let (_logs, log) = mail_log();
    let net = NetnsPair::new(Subnet::test_net_2(54));
    let mut settings = Settings::on(net.server());
    settings.extra = format!(
        "[[logwatch.source]]\nname = \"mail\"\npath = {}\n\n\
         [[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"rbl\"\nmaxretry = 1\n",
        serde_json::to_string(log.to_str().expect("UTF-8 path")).expect("quoted")
    );
    let daemon = Daemon::start(net.server(), &settings);
    // Whoever gets 100 KiB into one line (a long HELO or sender repeated
    // by a milter, say) puts a complete fail line after the 64 KiB limit.
    // Written in two goes, so the follower sees the limit crossed before
    // the forged part arrives: that is where a cut would start a new line.
    let victim = IpAddr::from(net.client_v4());
    let padding = format!(
        "Nov 20 10:00:01 mx postfix/smtpd[2]: {}",
        "A".repeat(70 << 10)
    );
    let mut file = OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
    file.write_all(padding.as_bytes())
        .expect("appending the padding");
    let started = Instant::now();
    while !daemon.log().contains("dropped=1") {
        assert!(
            started.elapsed() < BAN_DEADLINE,
            "the over-long line was not reported as dropped; daemon log:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    append(
        &log,
        &format!("{}{}", "A".repeat(30 << 10), dnsbl_line(victim, 40010)),
    );
    // A genuine line after it: once it is banned, the long one was read.
    let marker = IpAddr::from(net.subnet().v4_host(99));
    let genuine = dnsbl_line(marker, 40011);
    append(&log, &genuine);
    let ban = wait_banned(&daemon, marker, "the line after the long one");
    assert_eq!(ban["reason"], genuine.as_str());
    assert!(
        ban_of(&daemon, victim).is_none(),
        "the smuggled line banned {victim}: {:?}",
        daemon.list()
    );
    daemon.wait_log("the over-long lines dropped", |log| {
        log.contains("over-long log lines dropped whole")
    });
}

#[test]
fn a_rule_with_its_own_ports_bans_the_client_from_those_ports_only() {
    const SUBMISSION: u16 = 587;
    if !require_root("a_rule_with_its_own_ports_bans_the_client_from_those_ports_only") {
        return;
    }
    let (_logs, log) = mail_log();
    let mut net = NetnsPair::new(Subnet::test_net_3(57));
    net.listen_both(SMTP);
    net.listen_both(SUBMISSION);
    let mut settings = Settings::on(net.server());
    settings.ports = vec![SMTP, SUBMISSION];
    settings.extra = format!(
        "[[logwatch.source]]\nname = \"mail\"\npath = {}\n\n\
         [[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"rbl\"\nmaxretry = 1\nports = [25]\n",
        serde_json::to_string(log.to_str().expect("UTF-8 path")).expect("quoted")
    );
    let daemon = Daemon::start(net.server(), &settings);
    let server = IpAddr::from(net.server_v4());
    let client = IpAddr::from(net.client_v4());
    assert!(
        net.can_connect(server, SMTP, 2) && net.can_connect(server, SUBMISSION, 2),
        "the client must connect before any ban; log:\n{}",
        daemon.log()
    );
    let line = dnsbl_line(client, 40001);
    append(&log, &line);
    let ban = assert_banned_and_dropped(&daemon, &net, client, server, &line);
    assert_eq!(ban["ports"], serde_json::json!([25]), "{ban}");
    assert!(
        net.can_connect(server, SUBMISSION, 2),
        "a DNSBL listing bans from port 25 only: submission still connects; log:\n{}",
        daemon.log()
    );
    let dropped = daemon.stats()["dropped_v4"].as_u64().unwrap_or(0);
    assert!(
        dropped > 0,
        "the SMTP attempt was dropped by XDP: {dropped}"
    );
    let status = daemon.status();
    assert_eq!(
        status["port_scopes"],
        serde_json::json!([[25, 587], [25]]),
        "{status}"
    );
    assert_eq!(
        status["log_sources"],
        serde_json::json!([format!("mail: {}", log.display())]),
        "{status}"
    );
    let text = daemon.cli_ok(&["status"]);
    assert!(
        text.contains("\nports: 25, 587\nports of rules and thresholds: 25\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("\nlog source mail: {}\n", log.display())),
        "{text}"
    );
}
