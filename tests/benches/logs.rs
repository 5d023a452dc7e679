//! `cargo xtask bench logs`: log filtering throughput, spamwall against
//! `fail2ban-regex` (Debian's fail2ban), in one run, on three log mixes.
//!
//! Each mix is a generated mail.log (fixed seed, classic syslog
//! timestamps, 1,000,000 lines) of realistic Postfix lines: postscreen
//! `CONNECT`, `PASS OLD/NEW`, `DNSBL rank`, `PREGREET`, `HANGUP`,
//! `DISCONNECT` and protocol violations; smtpd connect/disconnect, TLS,
//! `NOQUEUE: reject` (RBL, helo, unknown user, relay), SASL failures,
//! lost connections, unresolvable client names; cleanup, qmgr, smtp and
//! Dovecot delivery lines; IPv4 and IPv6 clients from the documentation
//! ranges. The mixes:
//!
//! - `noise`: a quiet day, about 4% of lines matching;
//! - `attack`: a SASL brute force and a spam run, about 40% matching;
//! - `ipv6`: nine clients in ten on IPv6 (short and full addresses),
//!   about 30% matching.
//!
//! spamwall: `spamwall test-filter FILE --filter postfix --mode aggressive
//! --json` over the whole file (one JSON object per matched line).
//! fail2ban-regex is about two orders of magnitude slower, so it reads the
//! first [`FAIL2BAN_LINES`] lines only (`fail2ban-regex -o ip SLICE
//! '/etc/fail2ban/filter.d/postfix.conf[mode=aggressive]'`: one address
//! per matched line, its leanest output); throughput is compared in lines
//! per second, and the hosts both found on that common slice are
//! compared, the differences listed by the kind of line that matched.
//! Each tool runs several times on its file and the median time counts.
//! Options after `--`: `--lines N` (default 1,000,000), `--fail2ban-lines
//! N` (default 100,000), `--mix NAME` (one mix only), `--smoke` (a
//! thousand lines, two hundred for fail2ban-regex, one run each). No root
//! needed; every child process is bounded in time, one mix's files are
//! removed before the next is written. Without fail2ban-regex and its
//! postfix filter, or when either tool finds no host, the benchmark fails.

#![expect(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::{
    collections::{BTreeMap, BTreeSet},
    env,
    fmt::Write as _,
    fs,
    io::{BufWriter, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    process::{Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use spamwall_tests::{bench, daemon::spamwall_bin, netns::kill_and_reap};

const DEFAULT_LINES: usize = 1_000_000;
const FAIL2BAN_LINES: usize = 100_000;
const FAIL2BAN_FILTER: &str = "/etc/fail2ban/filter.d/postfix.conf[mode=aggressive]";
const SPAMWALL_TIMEOUT: Duration = Duration::from_mins(5);
const FAIL2BAN_TIMEOUT: Duration = Duration::from_mins(15);
const TARGET_RATIO: f64 = 50.0;
/// Each tool runs this often on its file; the median time counts.
fn spamwall_runs() -> usize {
    bench::size(5, 1)
}

fn fail2ban_runs() -> usize {
    bench::size(3, 1)
}

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[usize::try_from(self.below(items.len() as u64)).unwrap()]
    }

    fn percent(&mut self, share: u64) -> bool {
        self.below(100) < share
    }
}

/// The kinds of line a mix is made of; the `Match` ones are what the
/// aggressive postfix filter matches.
#[derive(Clone, Copy, Debug)]
enum Kind {
    // Traffic.
    PsConnect,
    PsPassOld,
    PsPassNew,
    PsDisconnect,
    SmtpdConnect,
    SmtpdTls,
    SmtpdDisconnect,
    SmtpdClient,
    NoResolve,
    LostAfterData,
    Cleanup,
    QmgrFrom,
    SmtpSent,
    DovecotSaved,
    QmgrRemoved,
    // What a filter matches.
    DnsblRank,
    Pregreet,
    Hangup,
    PsViolation,
    RejectRbl,
    RejectHelo,
    RejectUser,
    RejectRelay,
    SaslFailed,
    LostConnection,
    DisconnectAuthFailed,
}

/// A log mix: its client population and its kinds of line, with weights.
struct Mix {
    name: &'static str,
    about: &'static str,
    /// Share of clients on IPv6, in percent.
    ipv6: u64,
    kinds: &'static [(Kind, u64)],
    seed: u64,
}

const MIXES: &[Mix] = &[
    Mix {
        name: "noise",
        about: "mostly noise: a quiet day, few matching lines",
        ipv6: 15,
        seed: 0x5eed_1e55_c0ff_ee11,
        kinds: &[
            (Kind::PsConnect, 140),
            (Kind::PsPassOld, 100),
            (Kind::PsPassNew, 15),
            (Kind::PsDisconnect, 110),
            (Kind::SmtpdConnect, 100),
            (Kind::SmtpdTls, 70),
            (Kind::SmtpdDisconnect, 95),
            (Kind::SmtpdClient, 70),
            (Kind::NoResolve, 3),
            (Kind::LostAfterData, 2),
            (Kind::Cleanup, 70),
            (Kind::QmgrFrom, 70),
            (Kind::SmtpSent, 60),
            (Kind::DovecotSaved, 15),
            (Kind::QmgrRemoved, 50),
            (Kind::DnsblRank, 6),
            (Kind::Pregreet, 3),
            (Kind::Hangup, 3),
            (Kind::PsViolation, 1),
            (Kind::RejectRbl, 5),
            (Kind::RejectHelo, 1),
            (Kind::RejectUser, 2),
            (Kind::RejectRelay, 1),
            (Kind::SaslFailed, 8),
            (Kind::LostConnection, 6),
            (Kind::DisconnectAuthFailed, 4),
        ],
    },
    Mix {
        name: "attack",
        about: "attack-heavy: a SASL brute force and a spam run",
        ipv6: 15,
        seed: 0xa77a_c4ed_0bad_f00d,
        kinds: &[
            (Kind::PsConnect, 120),
            (Kind::PsPassOld, 40),
            (Kind::PsDisconnect, 80),
            (Kind::SmtpdConnect, 130),
            (Kind::SmtpdTls, 30),
            (Kind::SmtpdDisconnect, 50),
            (Kind::SmtpdClient, 20),
            (Kind::NoResolve, 30),
            (Kind::LostAfterData, 10),
            (Kind::Cleanup, 20),
            (Kind::QmgrFrom, 20),
            (Kind::SmtpSent, 20),
            (Kind::DovecotSaved, 10),
            (Kind::QmgrRemoved, 20),
            (Kind::DnsblRank, 35),
            (Kind::Pregreet, 15),
            (Kind::Hangup, 15),
            (Kind::PsViolation, 10),
            (Kind::RejectRbl, 30),
            (Kind::RejectHelo, 10),
            (Kind::RejectUser, 15),
            (Kind::RejectRelay, 10),
            (Kind::SaslFailed, 140),
            (Kind::LostConnection, 60),
            (Kind::DisconnectAuthFailed, 60),
        ],
    },
    Mix {
        name: "ipv6",
        about: "IPv6-heavy: nine clients in ten on IPv6",
        ipv6: 90,
        seed: 0x1b6e_5eed_cafe_d00d,
        kinds: &[
            (Kind::PsConnect, 130),
            (Kind::PsPassOld, 70),
            (Kind::PsPassNew, 10),
            (Kind::PsDisconnect, 100),
            (Kind::SmtpdConnect, 90),
            (Kind::SmtpdTls, 50),
            (Kind::SmtpdDisconnect, 60),
            (Kind::SmtpdClient, 40),
            (Kind::NoResolve, 15),
            (Kind::LostAfterData, 5),
            (Kind::Cleanup, 40),
            (Kind::QmgrFrom, 40),
            (Kind::SmtpSent, 30),
            (Kind::DovecotSaved, 10),
            (Kind::QmgrRemoved, 30),
            (Kind::DnsblRank, 40),
            (Kind::Pregreet, 20),
            (Kind::Hangup, 15),
            (Kind::PsViolation, 5),
            (Kind::RejectRbl, 30),
            (Kind::RejectHelo, 10),
            (Kind::RejectUser, 15),
            (Kind::RejectRelay, 5),
            (Kind::SaslFailed, 80),
            (Kind::LostConnection, 40),
            (Kind::DisconnectAuthFailed, 40),
        ],
    },
];

/// A client: IPv4 from the three documentation /24s or IPv6 from
/// `2001:db8::/32`, short (`2001:db8:12::3a`) or a full interface
/// identifier as SLAAC makes them; a few hundred busy ones and a long tail.
fn client(rng: &mut Rng, ipv6: u64) -> IpAddr {
    if rng.percent(ipv6) {
        let group = u16::try_from(rng.below(64)).unwrap();
        let host = u16::try_from(1 + rng.below(2000)).unwrap();
        if rng.percent(50) {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, group, 0, 0, 0, 0, host))
        } else {
            let id = u64::from(host).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 << 63;
            let word = |shift: u32| u16::try_from((id >> shift) & 0xffff).unwrap();
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                group,
                0x1f,
                word(48),
                word(32),
                word(16),
                word(0),
            ))
        }
    } else {
        let net =
            [[192, 0, 2], [198, 51, 100], [203, 0, 113]][usize::try_from(rng.below(3)).unwrap()];
        let host = u8::try_from(1 + rng.below(254)).unwrap();
        IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], host))
    }
}

const MONTH_DAY: &str = "Nov 20";

fn queue_id(rng: &mut Rng) -> String {
    format!("{:010X}", rng.next() & 0xFF_FFFF_FFFF)
}

fn pick_kind(rng: &mut Rng, mix: &Mix) -> Kind {
    let total: u64 = mix.kinds.iter().map(|(_, w)| w).sum();
    let mut roll = rng.below(total);
    for &(kind, weight) in mix.kinds {
        if roll < weight {
            return kind;
        }
        roll -= weight;
    }
    unreachable!("the roll is below the total")
}

/// One line of `mix`.
#[expect(clippy::too_many_lines, reason = "one arm per kind of line")]
fn line(rng: &mut Rng, mix: &Mix, second: u64) -> String {
    let stamp = format!(
        "{MONTH_DAY} {:02}:{:02}:{:02} mx",
        (second / 3600) % 24,
        (second / 60) % 60,
        second % 60
    );
    let ip = client(rng, mix.ipv6);
    let port = 1024 + rng.below(60000);
    let pid = 1000 + rng.below(30000);
    let name = rng.pick(&[
        "unknown",
        "mail.example.com",
        "host-7.example.net",
        "smtp.example.org",
    ]);
    let qid = queue_id(rng);
    let text = match pick_kind(rng, mix) {
        Kind::PsConnect => {
            format!("postfix/postscreen[{pid}]: CONNECT from [{ip}]:{port} to [192.0.2.1]:25")
        }
        Kind::PsPassOld => format!("postfix/postscreen[{pid}]: PASS OLD [{ip}]:{port}"),
        Kind::PsPassNew => format!("postfix/postscreen[{pid}]: PASS NEW [{ip}]:{port}"),
        Kind::PsDisconnect => format!("postfix/postscreen[{pid}]: DISCONNECT [{ip}]:{port}"),
        Kind::SmtpdConnect => format!("postfix/smtpd[{pid}]: connect from {name}[{ip}]"),
        Kind::SmtpdTls => format!(
            "postfix/smtpd[{pid}]: Anonymous TLS connection established from {name}[{ip}]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256"
        ),
        Kind::SmtpdDisconnect => format!(
            "postfix/smtpd[{pid}]: disconnect from {name}[{ip}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
        ),
        Kind::SmtpdClient => format!("postfix/smtpd[{pid}]: {qid}: client={name}[{ip}]"),
        Kind::NoResolve => format!(
            "postfix/smtpd[{pid}]: warning: hostname {name} does not resolve to address {ip}: Name or service not known"
        ),
        Kind::LostAfterData => format!(
            "postfix/smtpd[{pid}]: lost connection after DATA ({} bytes) from {name}[{ip}]",
            rng.below(90000)
        ),
        Kind::Cleanup => format!(
            "postfix/cleanup[{pid}]: {qid}: message-id=<{}@example.org>",
            rng.next()
        ),
        Kind::QmgrFrom => format!(
            "postfix/qmgr[{pid}]: {qid}: from=<sender{}@example.org>, size={}, nrcpt=1 (queue active)",
            rng.below(500),
            500 + rng.below(90000)
        ),
        Kind::SmtpSent => format!(
            "postfix/smtp[{pid}]: {qid}: to=<rcpt{}@example.net>, relay=mx.example.net[203.0.113.25]:25, delay=0.{}, delays=0.01/0/0.1/0.2, dsn=2.0.0, status=sent (250 2.0.0 OK)",
            rng.below(500),
            rng.below(99)
        ),
        Kind::DovecotSaved => format!(
            "dovecot: lmtp(user{})<{pid}><{}>: msgid=<{}@example.org>: saved mail to INBOX",
            rng.below(50),
            qid.to_lowercase(),
            rng.next()
        ),
        Kind::QmgrRemoved => format!("postfix/qmgr[{pid}]: {qid}: removed"),
        Kind::DnsblRank => format!(
            "postfix/postscreen[{pid}]: DNSBL rank {} for [{ip}]:{port}",
            1 + rng.below(6)
        ),
        Kind::Pregreet => format!(
            "postfix/postscreen[{pid}]: PREGREET {} after 0.{} from [{ip}]:{port}: EHLO {name}\\r\\n",
            11 + rng.below(30),
            rng.below(99)
        ),
        Kind::Hangup => format!(
            "postfix/postscreen[{pid}]: HANGUP after {}.{} from [{ip}]:{port} in tests after SMTP handshake",
            rng.below(10),
            rng.below(9)
        ),
        Kind::PsViolation => format!(
            "postfix/postscreen[{pid}]: {} from [{ip}]:{port}",
            rng.pick(&[
                "COMMAND PIPELINING after 0.1",
                "NON-SMTP COMMAND",
                "BARE NEWLINE",
                "COMMAND TIME LIMIT",
                "COMMAND COUNT LIMIT"
            ])
        ),
        Kind::RejectRbl => format!(
            "postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {name}[{ip}]: 554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/{ip}; from=<bounce@example.org> to=<user@example.com> proto=ESMTP helo=<{name}>"
        ),
        Kind::RejectHelo => format!(
            "postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {name}[{ip}]: 450 4.7.1 <{name}>: Helo command rejected: Host not found; from=<a@example.org> to=<user@example.com> proto=ESMTP helo=<{name}>"
        ),
        Kind::RejectUser => format!(
            "postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {name}[{ip}]: 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in local recipient table; from=<a@example.org> to=<nobody@example.com> proto=ESMTP helo=<{name}>"
        ),
        Kind::RejectRelay => format!(
            "postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {name}[{ip}]: 454 4.7.1 <victim@example.net>: Relay access denied; from=<a@example.org> to=<victim@example.net> proto=ESMTP helo=<{name}>"
        ),
        Kind::SaslFailed => format!(
            "postfix/smtpd[{pid}]: warning: {name}[{ip}]: SASL {} authentication failed: {}",
            rng.pick(&["LOGIN", "PLAIN"]),
            rng.pick(&["UGFzc3dvcmQ6", "authentication failure"])
        ),
        Kind::LostConnection => format!(
            "postfix/smtpd[{pid}]: lost connection after {} from {name}[{ip}]",
            rng.pick(&["AUTH", "AUTH", "EHLO", "CONNECT", "RCPT", "UNKNOWN"])
        ),
        Kind::DisconnectAuthFailed => format!(
            "postfix/smtpd[{pid}]: disconnect from {name}[{ip}] ehlo=1 auth=0/1 quit=1 commands=2/3"
        ),
    };
    format!("{stamp} {text}\n")
}

fn generate(path: &Path, mix: &Mix, lines: usize) -> usize {
    let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(path).unwrap());
    let mut rng = Rng(mix.seed);
    let mut bytes = 0;
    for i in 0..lines {
        let text = line(&mut rng, mix, 36_000 + (i as u64) / 20);
        bytes += text.len();
        out.write_all(text.as_bytes()).unwrap();
    }
    out.flush().unwrap();
    // On disk before anything is timed: write-back running under a
    // measured reader would slow it down.
    out.get_ref().sync_all().unwrap();
    bytes
}

/// Runs `command` with stdout and stderr in files (the reports are large:
/// a pipe read only at exit would stall the child), killing it by pid
/// after `timeout`; its output and how long it ran (reading its report
/// back is not its work).
fn run_bounded(command: &mut Command, timeout: Duration) -> (Output, Duration) {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    let deadline = started + timeout;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            kill_and_reap(&mut child);
            panic!("{command:?} did not finish within {timeout:?}; killed");
        }
        // Fine-grained: the wait is part of what is timed.
        std::thread::sleep(Duration::from_millis(1));
    };
    let elapsed = started.elapsed();
    let read = |mut file: fs::File| {
        let mut bytes = Vec::new();
        std::io::Seek::rewind(&mut file).unwrap();
        std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
        bytes
    };
    let output = Output {
        status,
        stdout: read(out),
        stderr: read(err),
    };
    (output, elapsed)
}

/// Runs `command` `runs` times; the output of the last run and the
/// median time (one slow run on a shared machine does not decide).
fn timed(command: &mut Command, runs: usize, timeout: Duration, what: &str) -> (Output, Duration) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs.max(1) {
        let (output, elapsed) = run_bounded(command, timeout);
        times.push(elapsed);
        assert!(
            output.status.success(),
            "{what} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        last = Some(output);
    }
    times.sort();
    (last.unwrap(), times[times.len() / 2])
}

/// What kind of line a spamwall failregex matches, from its text.
fn category(regex: &str) -> &'static str {
    [
        ("DNSBL rank", "postscreen DNSBL rank"),
        ("PREGREET", "postscreen PREGREET/HANGUP"),
        (
            "COMMAND (?:TIME",
            "postscreen COMMAND TIME/COUNT/LENGTH LIMIT",
        ),
        ("COMMAND PIPELINING", "postscreen COMMAND PIPELINING"),
        ("NON-SMTP", "postscreen NON-SMTP COMMAND"),
        ("BARE NEWLINE", "postscreen BARE NEWLINE"),
        ("lost connection", "smtpd lost connection"),
        ("auth=0", "smtpd disconnect auth=0/N"),
        ("SASL", "SASL authentication failed"),
        ("blocked", "RBL reject"),
        ("reject", "smtpd reject"),
    ]
    .into_iter()
    .find(|(needle, _)| regex.contains(needle))
    .map_or("other", |(_, label)| label)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = env::args().collect();
    args.iter().position(|a| a == name).map(|i| {
        args.get(i + 1)
            .unwrap_or_else(|| panic!("{name} takes a value"))
            .clone()
    })
}

fn number(name: &str, default: usize) -> usize {
    arg(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} takes a number"))
    })
}

#[expect(
    clippy::cast_precision_loss,
    reason = "line counts fit an f64 exactly enough"
)]
fn per_second(lines: usize, elapsed: Duration) -> f64 {
    lines as f64 / elapsed.as_secs_f64()
}

#[expect(
    clippy::cast_precision_loss,
    reason = "line counts fit an f64 exactly enough"
)]
fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// What one mix measured, for the closing table.
struct Row {
    mix: &'static str,
    lines: usize,
    matched: usize,
    spamwall_rate: f64,
    f2b_rate: f64,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.spamwall_rate / self.f2b_rate
    }

    fn verdict(&self) -> &'static str {
        if self.ratio() >= TARGET_RATIO {
            "met"
        } else {
            "NOT met"
        }
    }
}

/// The `--json` objects of a `test-filter` run: per host, the kinds of
/// line it was matched in.
fn json_hosts(stdout: &[u8]) -> BTreeMap<IpAddr, BTreeSet<&'static str>> {
    let failregex =
        spamwall::logwatch::postfix::failregex(spamwall::logwatch::postfix::Mode::Aggressive);
    let mut kinds: BTreeMap<IpAddr, BTreeSet<&str>> = BTreeMap::new();
    for line in String::from_utf8_lossy(stdout).lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let host: IpAddr = value["host"].as_str().unwrap().parse().unwrap();
        let index = usize::try_from(value["regex"].as_u64().unwrap()).unwrap();
        kinds
            .entry(host)
            .or_default()
            .insert(category(&failregex[index]));
    }
    kinds
}

/// Generates `mix` in `dir`, times both tools on it and compares the hosts
/// they found on the common slice.
#[expect(clippy::too_many_lines, reason = "one mix, read top to bottom")]
fn measure(mix: &Mix, dir: &Path, lines: usize, f2b_lines: usize) -> Row {
    let (spamwall_runs, fail2ban_runs) = (spamwall_runs(), fail2ban_runs());
    let log = dir.join(format!("{}.log", mix.name));
    let slice = dir.join(format!("{}-slice.log", mix.name));
    let started = Instant::now();
    let bytes = generate(&log, mix, lines);
    generate(&slice, mix, f2b_lines);
    println!(
        "\nmix {}: {} ({lines} lines, {} MB, generated in {:.1?})",
        mix.name,
        mix.about,
        bytes / 1_000_000,
        started.elapsed()
    );
    let bin = spamwall_bin();
    let spamwall = |file: &Path| {
        let mut command = Command::new(&bin);
        command.arg("test-filter").arg(file).args([
            "--filter",
            "postfix",
            "--mode",
            "aggressive",
            "--json",
        ]);
        command
    };

    let (full, spamwall_time) = timed(
        &mut spamwall(&log),
        spamwall_runs,
        SPAMWALL_TIMEOUT,
        "spamwall test-filter --json",
    );
    let matched = full.stdout.split_inclusive(|&b| b == b'\n').count();
    drop(full);
    let spamwall_rate = per_second(lines, spamwall_time);
    println!(
        "  spamwall test-filter --json {lines:>9} lines in {spamwall_time:>8.2?} (median of {spamwall_runs}): {spamwall_rate:>10.0} lines/s  ({matched} matched, {:.1}%)",
        percent(matched, lines)
    );

    let (slice_run, slice_time) = timed(
        &mut spamwall(&slice),
        spamwall_runs,
        SPAMWALL_TIMEOUT,
        "spamwall test-filter --json (slice)",
    );
    let kinds = json_hosts(&slice_run.stdout);
    let spamwall_hosts: BTreeSet<IpAddr> = kinds.keys().copied().collect();
    println!(
        "  spamwall test-filter --json {f2b_lines:>9} lines in {slice_time:>8.2?} (median of {spamwall_runs}): {:>10.0} lines/s  (the fail2ban slice)",
        per_second(f2b_lines, slice_time)
    );

    let (f2b, f2b_time) = timed(
        Command::new("fail2ban-regex")
            .args(["-o", "ip"])
            .arg(&slice)
            .arg(FAIL2BAN_FILTER),
        fail2ban_runs,
        FAIL2BAN_TIMEOUT,
        "fail2ban-regex",
    );
    fs::remove_file(&log).unwrap();
    fs::remove_file(&slice).unwrap();
    let f2b_text = String::from_utf8_lossy(&f2b.stdout);
    let f2b_matches = f2b_text.lines().count();
    let f2b_hosts: BTreeSet<IpAddr> = f2b_text
        .lines()
        .filter_map(|l| l.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    let f2b_rate = per_second(f2b_lines, f2b_time);
    println!(
        "  fail2ban-regex              {f2b_lines:>9} lines in {f2b_time:>8.2?} (median of {fail2ban_runs}): {f2b_rate:>10.0} lines/s  ({f2b_matches} matched)"
    );
    assert!(
        !f2b_hosts.is_empty(),
        "cannot measure fail2ban-regex: it found no host in {f2b_lines} lines of mix {}; its output:\n{f2b_text}\n{}",
        mix.name,
        String::from_utf8_lossy(&f2b.stderr)
    );
    assert!(
        !spamwall_hosts.is_empty(),
        "spamwall test-filter found no host in {f2b_lines} lines of mix {}",
        mix.name
    );
    let row = Row {
        mix: mix.name,
        lines,
        matched,
        spamwall_rate,
        f2b_rate,
    };
    println!(
        "  ratio: {:.0}x (target >= {TARGET_RATIO:.0}x: {})",
        row.ratio(),
        row.verdict()
    );

    // Which kind of line made spamwall find the hosts fail2ban did not.
    let only_spamwall: Vec<&IpAddr> = spamwall_hosts.difference(&f2b_hosts).collect();
    let only_f2b: Vec<&IpAddr> = f2b_hosts.difference(&spamwall_hosts).collect();
    println!(
        "  hosts on the common slice: spamwall {}, fail2ban-regex {}, both {}; same set: {}",
        spamwall_hosts.len(),
        f2b_hosts.len(),
        spamwall_hosts.intersection(&f2b_hosts).count(),
        if only_spamwall.is_empty() && only_f2b.is_empty() {
            "yes"
        } else {
            "no"
        }
    );
    let mut by_kind: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for host in &only_spamwall {
        let label = kinds.get(host).map_or_else(
            || "?".to_owned(),
            |k| k.iter().copied().collect::<Vec<_>>().join(" + "),
        );
        by_kind.entry(label).or_default().push(host.to_string());
    }
    for (kind, hosts) in &by_kind {
        let mut shown = hosts.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        if hosts.len() > 3 {
            let _ = write!(shown, ", … ({} more)", hosts.len() - 3);
        }
        println!("    only spamwall, {kind}: {} hosts: {shown}", hosts.len());
    }
    if !only_f2b.is_empty() {
        let list: Vec<String> = only_f2b.iter().map(ToString::to_string).collect();
        println!(
            "    only fail2ban-regex: {} hosts: {}",
            list.len(),
            list.join(", ")
        );
    }
    row
}

fn main() {
    bench::require_peer(
        "fail2ban-regex",
        "fail2ban-regex",
        "apt-get install fail2ban; cargo xtask setup installs it",
    );
    let filter_file = FAIL2BAN_FILTER
        .split_once('[')
        .map_or(FAIL2BAN_FILTER, |(file, _)| file);
    assert!(
        Path::new(filter_file).is_file(),
        "cannot measure fail2ban-regex: its filter {filter_file} is missing (apt-get install fail2ban)"
    );
    let lines = number("--lines", bench::size(DEFAULT_LINES, 1_000));
    let f2b_lines = number("--fail2ban-lines", bench::size(FAIL2BAN_LINES, 200)).min(lines);
    let only = arg("--mix");
    let mixes: Vec<&Mix> = MIXES
        .iter()
        .filter(|mix| only.as_deref().is_none_or(|name| name == mix.name))
        .collect();
    assert!(
        !mixes.is_empty(),
        "unknown mix {:?} (noise, attack, ipv6)",
        only.unwrap_or_default()
    );
    let dir = tempfile::Builder::new()
        .prefix("spamwall-bench-logs-")
        .tempdir()
        .unwrap();
    println!(
        "spamwall: test-filter FILE --filter postfix --mode aggressive --json on {lines} lines; \
         fail2ban-regex -o ip SLICE '{FAIL2BAN_FILTER}' on the first {f2b_lines}"
    );
    let rows: Vec<Row> = mixes
        .into_iter()
        .map(|mix| measure(mix, dir.path(), lines, f2b_lines))
        .collect();
    if bench::smoke() {
        println!("\nsmoke run: the figures mean nothing");
    }
    println!(
        "\n{:<8} {:>9} {:>8} {:>17} {:>22} {:>7}  target >= {TARGET_RATIO:.0}x",
        "mix", "lines", "matched", "spamwall lines/s", "fail2ban-regex lines/s", "ratio"
    );
    for row in &rows {
        println!(
            "{:<8} {:>9} {:>7.1}% {:>17.0} {:>22.0} {:>6.0}x  {}",
            row.mix,
            row.lines,
            percent(row.matched, row.lines),
            row.spamwall_rate,
            row.f2b_rate,
            row.ratio(),
            row.verdict()
        );
    }
}
