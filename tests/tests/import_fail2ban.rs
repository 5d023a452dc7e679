//! `spamwall import fail2ban` against fail2ban itself: Debian's
//! `/etc/fail2ban`, copied, with the postfix, postfix-rbl and postfix-sasl
//! jails and one custom jail with its own filter enabled in a `jail.local`.
//! One generated mail log (IPv4 and IPv6 clients, some in `ignoreip`, some
//! failing too slowly to be banned) must get the same hosts banned:
//!
//! - fail2ban's side: `fail2ban-client -d` says each jail's maxretry,
//!   findtime and ignoreip as fail2ban computes them, `fail2ban-regex`
//!   with the jail's filter gives each match's host and time, and the
//!   window is applied here;
//! - spamwall's side: the imported rules, `spamwall test-filter --json`
//!   with each rule's filter, the same window, and the imported allowlist.
//!
//! The imported file also passes `spamwall check-config`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use ipnet::IpNet;
use spamwall_tests::{daemon::spamwall, netns::run_bounded, skip::require};

const CUSTOM_FILTER: &str = "\
[INCLUDES]
before = common.conf

[Definition]
_daemon = postfix(-\\w+)?/\\w+(?:/smtp[ds])?
failregex = ^%(__prefix_line)sNOQUEUE: reject: (?:RCPT|EHLO) from \\S+\\[<HOST>\\](?::\\d+)?: 504 5\\.5\\.2 <\\S*>: Helo command rejected:
ignoreregex =
";

const JAIL_LOCAL: &str = "\
[DEFAULT]
ignoreip = 127.0.0.1/8 ::1 198.51.100.7 2001:db8:ff::/48

[sshd]
enabled = false

[postfix]
enabled = true
mode = aggressive

[postfix-rbl]
enabled = true

[postfix-sasl]
enabled = true
maxretry = 3
findtime = 5m

[postfix-helo]
enabled = true
filter = postfix-helo
port = smtp
logpath = %(syslog_mail)s
maxretry = 2
bantime = 1h
";

/// Each jail and the filter fail2ban gives it (jail.conf's `filter`).
const JAILS: &[(&str, &str)] = &[
    ("postfix", "postfix[mode=aggressive]"),
    ("postfix-rbl", "postfix[mode=rbl]"),
    ("postfix-sasl", "postfix[mode=auth]"),
    ("postfix-helo", "postfix-helo"),
];

fn ready(test: &str) -> bool {
    let works = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    };
    require(
        test,
        works("fail2ban-regex") && works("fail2ban-client"),
        "fail2ban-regex and fail2ban-client (package fail2ban)",
    ) && require(
        test,
        Path::new("/etc/fail2ban/jail.conf").is_file(),
        "/etc/fail2ban/jail.conf (package fail2ban)",
    )
}

/// A copy of `/etc/fail2ban` with [`JAIL_LOCAL`] and the custom filter.
fn fail2ban_dir(root: &Path) -> PathBuf {
    let status = Command::new("cp")
        .arg("-r")
        .arg("/etc/fail2ban")
        .arg(root)
        .status()
        .expect("cp");
    assert!(status.success(), "cp -r /etc/fail2ban");
    let dir = root.join("fail2ban");
    std::fs::write(dir.join("jail.local"), JAIL_LOCAL).expect("jail.local");
    std::fs::write(dir.join("filter.d/postfix-helo.conf"), CUSTOM_FILTER).expect("filter");
    dir
}

/// What a client does in the log: the kind of line, how many, how far
/// apart.
struct Client {
    ip: &'static str,
    kind: &'static str,
    count: u32,
    every: u32,
}

const CLIENTS: &[Client] = &[
    // SASL guessing: fast, slow (5 in 4 × 151 s > 5 min), in ignoreip.
    Client {
        ip: "192.0.2.30",
        kind: "auth",
        count: 4,
        every: 20,
    },
    Client {
        ip: "2001:db8::32",
        kind: "auth",
        count: 3,
        every: 37,
    },
    Client {
        ip: "192.0.2.33",
        kind: "auth",
        count: 5,
        every: 151,
    },
    Client {
        ip: "2001:db8:1::34",
        kind: "auth",
        count: 2,
        every: 10,
    },
    Client {
        ip: "198.51.100.7",
        kind: "auth",
        count: 9,
        every: 5,
    },
    Client {
        ip: "2001:db8:ff::9",
        kind: "auth",
        count: 9,
        every: 5,
    },
    // DNSBL rejects: one bans through postfix-rbl.
    Client {
        ip: "203.0.113.20",
        kind: "rbl",
        count: 1,
        every: 1,
    },
    Client {
        ip: "2001:db8:2::21",
        kind: "rbl",
        count: 1,
        every: 1,
    },
    Client {
        ip: "2001:db8:ff::21",
        kind: "rbl",
        count: 2,
        every: 1,
    },
    // Relay attempts: the postfix jail's five.
    Client {
        ip: "192.0.2.40",
        kind: "relay",
        count: 6,
        every: 30,
    },
    Client {
        ip: "2001:db8:3::41",
        kind: "relay",
        count: 5,
        every: 100,
    },
    Client {
        ip: "192.0.2.42",
        kind: "relay",
        count: 4,
        every: 30,
    },
    Client {
        ip: "198.51.100.43",
        kind: "relay",
        count: 7,
        every: 173,
    },
    // Lost connections: aggressive mode only.
    Client {
        ip: "192.0.2.50",
        kind: "lost",
        count: 5,
        every: 9,
    },
    Client {
        ip: "2001:db8:4::51",
        kind: "lost",
        count: 3,
        every: 9,
    },
    // HELO rejects: the custom jail's two, and postfix's normal mode.
    Client {
        ip: "192.0.2.60",
        kind: "helo",
        count: 2,
        every: 40,
    },
    Client {
        ip: "2001:db8:5::61",
        kind: "helo",
        count: 1,
        every: 1,
    },
    Client {
        ip: "198.51.100.62",
        kind: "helo",
        count: 2,
        every: 700,
    },
    Client {
        ip: "198.51.100.7",
        kind: "helo",
        count: 3,
        every: 3,
    },
];

fn line(kind: &str, ip: &str) -> String {
    match kind {
        "auth" => format!(
            "mx postfix/submission/smtpd[1211]: warning: unknown[{ip}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"
        ),
        "rbl" => format!(
            "mx postfix/smtpd[1209]: NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org; from=<a@example.org> to=<c@example.com> proto=ESMTP helo=<x>"
        ),
        "relay" => format!(
            "mx postfix/smtpd[1201]: NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1 <spam@example.net>: Relay access denied; from=<a@example.org> to=<spam@example.net> proto=ESMTP helo=<x>"
        ),
        "lost" => format!("mx postfix/smtpd[1217]: lost connection after AUTH from unknown[{ip}]"),
        "helo" => format!(
            "mx postfix/smtpd[1203]: NOQUEUE: reject: RCPT from unknown[{ip}]: 504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname; from=<a@example.org> to=<c@example.com> proto=ESMTP helo=<localhost>"
        ),
        _ => format!("mx postfix/smtpd[1300]: connect from unknown[{ip}]"),
    }
}

/// The log: every client's lines and a connect line before each, in time
/// order, from 08:00:00 on the first of the month before this one's end.
fn mail_log() -> String {
    let mut events: Vec<(u32, String)> = Vec::new();
    for (n, client) in CLIENTS.iter().enumerate() {
        let start = u32::try_from(n).expect("few") * 7;
        for i in 0..client.count {
            let at = start + i * client.every;
            events.push((at, line("connect", client.ip)));
            events.push((at, line(client.kind, client.ip)));
        }
    }
    events.sort_by_key(|(at, _)| *at);
    let mut log = String::new();
    for (at, text) in events {
        let seconds = 8 * 3600 + at;
        let _ = writeln!(
            log,
            "Dec  1 {:02}:{:02}:{:02} {text}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        );
    }
    log
}

/// Hosts with `maxretry` matches within `findtime` seconds.
fn over_maxretry(
    matches: &BTreeMap<String, Vec<f64>>,
    maxretry: usize,
    findtime: f64,
) -> BTreeSet<String> {
    matches
        .iter()
        .filter(|(_, times)| {
            let mut times = (*times).clone();
            times.sort_by(f64::total_cmp);
            times
                .windows(maxretry)
                .any(|w| w[maxretry - 1] - w[0] <= findtime)
        })
        .map(|(host, _)| host.clone())
        .collect()
}

/// One jail as `fail2ban-client -d` prints it.
#[derive(Debug, Default)]
struct Dumped {
    maxretry: usize,
    findtime: f64,
    ignoreip: Vec<IpNet>,
}

fn seconds(text: &str) -> f64 {
    let text = text.trim_matches('\'');
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let number: f64 = number.parse().unwrap_or_else(|_| panic!("time {text:?}"));
    number
        * match unit {
            "" | "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            other => panic!("unit {other:?} in {text:?}"),
        }
}

fn dump(dir: &Path) -> BTreeMap<String, Dumped> {
    let output = run_bounded(
        Command::new("fail2ban-client").arg("-c").arg(dir).arg("-d"),
        Duration::from_mins(1),
    );
    assert!(
        output.status.success(),
        "fail2ban-client -d: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut jails: BTreeMap<String, Dumped> = BTreeMap::new();
    for row in String::from_utf8_lossy(&output.stdout).lines() {
        let fields: Vec<&str> = row
            .trim_matches(|c| c == '[' || c == ']')
            .split(", ")
            .map(|f| f.trim_matches('\''))
            .collect();
        if fields.len() < 4 || fields[0] != "set" {
            continue;
        }
        let jail = jails.entry(fields[1].to_owned()).or_default();
        match fields[2] {
            "maxretry" => jail.maxretry = fields[3].parse().expect("maxretry"),
            "findtime" => jail.findtime = seconds(fields[3]),
            "addignoreip" => {
                jail.ignoreip = fields[3..]
                    .iter()
                    .map(|entry| {
                        entry
                            .parse::<IpNet>()
                            .map(|net| net.trunc())
                            .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                            .unwrap_or_else(|e| panic!("ignoreip {entry}: {e}"))
                    })
                    .collect();
            }
            _ => {}
        }
    }
    jails
}

/// Host → match times by `fail2ban-regex` with `filter` (a name in the
/// configuration directory, with options).
fn fail2ban_matches(dir: &Path, log: &Path, filter: &str) -> BTreeMap<String, Vec<f64>> {
    let (name, options) = filter.split_once('[').map_or((filter, ""), |(n, o)| (n, o));
    let spec = format!(
        "{}{}{}",
        dir.join("filter.d")
            .join(name)
            .with_extension("conf")
            .display(),
        if options.is_empty() { "" } else { "[" },
        options
    );
    let output = run_bounded(
        Command::new("fail2ban-regex")
            .arg("-o")
            .arg("<ip> <time>")
            .arg(log)
            .arg(&spec),
        Duration::from_mins(2),
    );
    assert!(
        output.status.success(),
        "fail2ban-regex {spec}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut matches: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for row in String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let (host, time) = row
            .trim()
            .split_once(' ')
            .unwrap_or_else(|| panic!("row {row:?}"));
        matches
            .entry(host.to_owned())
            .or_default()
            .push(time.parse().expect("time"));
    }
    matches
}

/// Host → match times by `spamwall test-filter --json` with the imported
/// configuration's filter `filter`.
fn spamwall_matches(config: &Path, log: &Path, filter: &str) -> BTreeMap<String, Vec<f64>> {
    let output = spamwall([
        "--config".as_ref(),
        config.as_os_str(),
        "test-filter".as_ref(),
        "--json".as_ref(),
        "--filter".as_ref(),
        filter.as_ref(),
        log.as_os_str(),
    ]);
    assert!(
        output.status.success(),
        "test-filter {filter}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut matches: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for row in String::from_utf8_lossy(&output.stdout).lines() {
        let entry: serde_json::Value = serde_json::from_str(row).expect("json");
        let host = entry["host"].as_str().expect("host").to_owned();
        // 2026-12-01T08:00:01.000000Z: the day and the time of day.
        let time = entry["time"].as_str().expect("time");
        let day: f64 = time[8..10].parse().expect("day");
        let clock = seconds(&format!("{}h", &time[11..13]))
            + seconds(&format!("{}m", &time[14..16]))
            + time[17..26].parse::<f64>().expect("seconds");
        matches
            .entry(host)
            .or_default()
            .push(day * 86_400.0 + clock);
    }
    matches
}

#[test]
fn imported_jails_ban_the_hosts_fail2ban_bans() {
    if !ready("imported_jails_ban_the_hosts_fail2ban_bans") {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let dir = fail2ban_dir(root.path());
    let log = root.path().join("mail.log");
    std::fs::write(&log, mail_log()).expect("log");

    let output = spamwall([
        "import".as_ref(),
        "fail2ban".as_ref(),
        dir.join("jail.local").as_os_str(),
    ]);
    let toml = String::from_utf8(output.stdout).expect("utf-8");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{toml}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let imported = root.path().join("spamwall.toml");
    std::fs::write(&imported, &toml).expect("write");
    let check = spamwall(["check-config".as_ref(), imported.as_os_str()]);
    assert!(
        check.status.success(),
        "check-config:\n{}\n{toml}",
        String::from_utf8_lossy(&check.stdout)
    );

    let config = spamwall::config::Config::parse(&toml).expect("imported TOML");
    // The jail each rule came from, from the comment before it.
    let rule_jails: Vec<&str> = toml
        .lines()
        .filter_map(|l| l.strip_prefix("# jail "))
        .filter(|l| !l.contains(':'))
        .collect();
    assert_eq!(rule_jails.len(), config.logwatch.rule.len(), "{toml}");
    let dumped = dump(&dir);
    for (jail, filter) in JAILS {
        let reference = &dumped[*jail];
        let mut expected = over_maxretry(
            &fail2ban_matches(&dir, &log, filter),
            reference.maxretry,
            reference.findtime,
        );
        expected.retain(|host| {
            let addr: IpAddr = host.parse().expect("address");
            !reference.ignoreip.iter().any(|net| net.contains(&addr))
        });
        assert!(!expected.is_empty(), "{jail}: fail2ban bans nobody");

        let index = rule_jails
            .iter()
            .position(|j| j == jail)
            .unwrap_or_else(|| panic!("no rule for {jail}:\n{toml}"));
        let rule = &config.logwatch.rule[index];
        let findtime = rule.findtime.expect("findtime").0.as_secs_f64();
        let maxretry = usize::try_from(rule.maxretry.expect("maxretry")).expect("small");
        let mut found = over_maxretry(
            &spamwall_matches(&imported, &log, &rule.filter),
            maxretry,
            findtime,
        );
        found.retain(|host| {
            let addr: IpAddr = host.parse().expect("address");
            config.ban.allowlist.covers(&IpNet::from(addr)).is_none()
        });
        assert_eq!(found, expected, "jail {jail} (rule filter {})", rule.filter);
    }
}

#[test]
fn import_fail2ban_exit_codes() {
    if !ready("import_fail2ban_exit_codes") {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let dir = fail2ban_dir(root.path());
    // sshd is not a mail jail: left to fail2ban, said, exit 2.
    std::fs::write(dir.join("jail.d/ssh.local"), "[sshd]\nenabled = true\n").expect("write");
    let output = spamwall(["import".as_ref(), "fail2ban".as_ref(), dir.as_os_str()]);
    let toml = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{toml}");
    assert!(
        toml.contains("# - jail sshd (filter sshd[mode=normal]): not a mail jail"),
        "{toml}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("not carried over"));
    // An interpolation loop is an error naming file and line, exit 1.
    std::fs::write(
        dir.join("jail.d/loop.local"),
        "[DEFAULT]\na = %(b)s\nb = %(a)s\nsyslog_mail = %(a)s\n",
    )
    .expect("write");
    let output = spamwall(["import".as_ref(), "fail2ban".as_ref(), dir.as_os_str()]);
    let toml = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{toml}");
    assert!(toml.contains("deeper than 10"), "{toml}");
    std::fs::write(
        dir.join("jail.d/broken.conf"),
        "[postfix]\nthis line has no value\n",
    )
    .expect("write");
    let output = spamwall(["import".as_ref(), "fail2ban".as_ref(), dir.as_os_str()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("jail.d/broken.conf:2"), "{stderr}");
}
