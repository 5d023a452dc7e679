//! `cargo xtask bench logs`: log filtering throughput, spamwall against
//! `fail2ban-regex` (Debian's fail2ban), in one run.
//!
//! A generated 1,000,000-line mail.log (fixed seed, classic syslog
//! timestamps) with a realistic mix: postscreen `CONNECT`, `PASS OLD/NEW`,
//! `DNSBL rank`, `PREGREET`, `HANGUP`, `DISCONNECT`; smtpd
//! connect/disconnect, `NOQUEUE: reject` (RBL, helo, unknown user), SASL
//! failures, lost connections; cleanup, qmgr and smtp delivery lines;
//! IPv4 and IPv6 clients from the documentation ranges.
//!
//! spamwall: `spamwall test-filter FILE --filter postfix --mode aggressive`
//! over the whole file. fail2ban-regex is about two orders of magnitude
//! slower, so it reads the first [`FAIL2BAN_LINES`] lines only
//! (`fail2ban-regex -o ip SLICE '/etc/fail2ban/filter.d/postfix.conf[mode=aggressive]'`);
//! throughput is compared in lines per second, and the hosts both found on
//! that common slice are compared, the differences listed by the kind of
//! line that matched. Each tool runs several times on its file and the
//! median time counts. Options after `--`: `--lines N` (default 1,000,000),
//! `--fail2ban-lines N` (default 100,000), `--smoke` (a thousand lines,
//! two hundred for fail2ban-regex, one run each). No root needed; every
//! child process is bounded in time. Without fail2ban-regex and its
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
}

/// A client: 85% IPv4 from the three documentation /24s, 15% IPv6 from
/// `2001:db8::/32`; a few hundred busy ones and a long tail.
fn client(rng: &mut Rng) -> IpAddr {
    if rng.below(100) < 85 {
        let net =
            [[192, 0, 2], [198, 51, 100], [203, 0, 113]][usize::try_from(rng.below(3)).unwrap()];
        let host = u8::try_from(1 + rng.below(254)).unwrap();
        IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], host))
    } else {
        let group = u16::try_from(rng.below(64)).unwrap();
        let host = u16::try_from(1 + rng.below(2000)).unwrap();
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, group, 0, 0, 0, 0, host))
    }
}

const MONTH_DAY: &str = "Nov 20";

fn queue_id(rng: &mut Rng) -> String {
    format!("{:010X}", rng.next() & 0xFF_FFFF_FFFF)
}

/// One line of the mix, weights in per mille.
fn line(rng: &mut Rng, second: u64) -> String {
    let stamp = format!(
        "{MONTH_DAY} {:02}:{:02}:{:02} mx",
        (second / 3600) % 24,
        (second / 60) % 60,
        second % 60
    );
    let ip = client(rng);
    let port = 1024 + rng.below(60000);
    let pid = 1000 + rng.below(30000);
    let name = rng.pick(&[
        "unknown",
        "mail.example.com",
        "host-7.example.net",
        "smtp.example.org",
    ]);
    let qid = queue_id(rng);
    let roll = rng.below(1000);
    let text = match roll {
        0..150 => {
            format!("postfix/postscreen[{pid}]: CONNECT from [{ip}]:{port} to [192.0.2.1]:25")
        }
        150..220 => format!("postfix/postscreen[{pid}]: PASS OLD [{ip}]:{port}"),
        220..240 => format!("postfix/postscreen[{pid}]: PASS NEW [{ip}]:{port}"),
        240..270 => format!(
            "postfix/postscreen[{pid}]: DNSBL rank {} for [{ip}]:{port}",
            1 + rng.below(6)
        ),
        270..285 => format!(
            "postfix/postscreen[{pid}]: PREGREET {} after 0.{} from [{ip}]:{port}: EHLO {name}\\r\\n",
            11 + rng.below(30),
            rng.below(99)
        ),
        285..300 => format!(
            "postfix/postscreen[{pid}]: HANGUP after {}.{} from [{ip}]:{port} in tests after SMTP handshake",
            rng.below(10),
            rng.below(9)
        ),
        300..380 => format!("postfix/postscreen[{pid}]: DISCONNECT [{ip}]:{port}"),
        380..480 => format!("postfix/smtpd[{pid}]: connect from {name}[{ip}]"),
        480..580 => format!(
            "postfix/smtpd[{pid}]: disconnect from {name}[{ip}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
        ),
        580..595 => format!(
            "postfix/smtpd[{pid}]: disconnect from {name}[{ip}] ehlo=1 auth=0/1 quit=1 commands=2/3"
        ),
        595..625 => format!(
            "postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {name}[{ip}]: 554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/{ip}; from=<bounce@example.org> to=<user@example.com> proto=ESMTP helo=<{name}>"
        ),
        625..640 => format!(
            "postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {name}[{ip}]: 450 4.7.1 <{name}>: Helo command rejected: Host not found; from=<a@example.org> to=<user@example.com> proto=ESMTP helo=<{name}>"
        ),
        640..660 => format!(
            "postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {name}[{ip}]: 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in local recipient table; from=<a@example.org> to=<nobody@example.com> proto=ESMTP helo=<{name}>"
        ),
        660..690 => format!(
            "postfix/smtpd[{pid}]: warning: {name}[{ip}]: SASL {} authentication failed: UGFzc3dvcmQ6",
            rng.pick(&["LOGIN", "PLAIN"])
        ),
        690..720 => format!(
            "postfix/smtpd[{pid}]: lost connection after {} from {name}[{ip}]",
            rng.pick(&["AUTH", "EHLO", "CONNECT", "RCPT", "DATA"])
        ),
        720..780 => format!("postfix/smtpd[{pid}]: {qid}: client={name}[{ip}]"),
        780..840 => format!(
            "postfix/cleanup[{pid}]: {qid}: message-id=<{}@example.org>",
            rng.next()
        ),
        840..900 => format!(
            "postfix/qmgr[{pid}]: {qid}: from=<sender{}@example.org>, size={}, nrcpt=1 (queue active)",
            rng.below(500),
            500 + rng.below(90000)
        ),
        900..960 => format!(
            "postfix/smtp[{pid}]: {qid}: to=<rcpt{}@example.net>, relay=mx.example.net[203.0.113.25]:25, delay=0.{}, delays=0.01/0/0.1/0.2, dsn=2.0.0, status=sent (250 2.0.0 OK)",
            rng.below(500),
            rng.below(99)
        ),
        960..980 => format!("postfix/qmgr[{pid}]: {qid}: removed"),
        _ => format!(
            "postfix/postscreen[{pid}]: {} from [{ip}]:{port}",
            rng.pick(&[
                "COMMAND PIPELINING after 0.1",
                "NON-SMTP COMMAND",
                "BARE NEWLINE",
                "COMMAND TIME LIMIT",
                "COMMAND COUNT LIMIT"
            ])
        ),
    };
    format!("{stamp} {text}\n")
}

fn generate(path: &Path, lines: usize) -> usize {
    let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(path).unwrap());
    let mut rng = Rng(0x5eed_1e55_c0ff_ee11);
    let mut bytes = 0;
    for i in 0..lines {
        let text = line(&mut rng, 36_000 + (i as u64) / 20);
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
/// after `timeout`.
fn run_bounded(command: &mut Command, timeout: Duration) -> Output {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    let deadline = Instant::now() + timeout;
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
    let read = |mut file: fs::File| {
        let mut bytes = Vec::new();
        std::io::Seek::rewind(&mut file).unwrap();
        std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
        bytes
    };
    Output {
        status,
        stdout: read(out),
        stderr: read(err),
    }
}

/// Runs `command` `runs` times; the output of the last run and the
/// median time (one slow run on a shared machine does not decide).
fn timed(command: &mut Command, runs: usize, timeout: Duration, what: &str) -> (Output, Duration) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let output = run_bounded(command, timeout);
        times.push(started.elapsed());
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

/// The `Hosts:` section of a `test-filter` summary.
fn summary_hosts(stdout: &[u8]) -> BTreeSet<IpAddr> {
    let text = String::from_utf8_lossy(stdout);
    text.split_once("\nHosts:")
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
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

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
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

#[expect(clippy::too_many_lines, reason = "one run, read top to bottom")]
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
    let lines = arg("--lines", bench::size(DEFAULT_LINES, 1_000));
    let f2b_lines = arg("--fail2ban-lines", bench::size(FAIL2BAN_LINES, 200)).min(lines);
    let (spamwall_runs, fail2ban_runs) = (spamwall_runs(), fail2ban_runs());
    let dir = tempfile::Builder::new()
        .prefix("spamwall-bench-logs-")
        .tempdir()
        .unwrap();
    let log = dir.path().join("mail.log");
    let slice = dir.path().join("mail-slice.log");
    let started = Instant::now();
    let bytes = generate(&log, lines);
    generate(&slice, f2b_lines);
    println!(
        "generated {lines} lines ({} MB) in {:.1?}; fail2ban-regex reads the first {f2b_lines}",
        bytes / 1_000_000,
        started.elapsed()
    );
    let bin = spamwall_bin();
    let filter_args = ["--filter", "postfix", "--mode", "aggressive"];

    let (full, spamwall_time) = timed(
        Command::new(&bin)
            .arg("test-filter")
            .arg(&log)
            .args(filter_args),
        spamwall_runs,
        SPAMWALL_TIMEOUT,
        "spamwall test-filter",
    );
    let summary = String::from_utf8_lossy(&full.stdout);
    let counts = summary
        .lines()
        .find(|l| l.starts_with("Lines:"))
        .unwrap_or("(no Lines: line)");
    let spamwall_rate = per_second(lines, spamwall_time);
    println!(
        "spamwall test-filter     {lines:>9} lines in {spamwall_time:>8.2?} (median of {spamwall_runs}): {spamwall_rate:>12.0} lines/s  ({counts})"
    );

    let (slice_run, slice_time) = timed(
        Command::new(&bin)
            .arg("test-filter")
            .arg(&slice)
            .args(filter_args),
        spamwall_runs,
        SPAMWALL_TIMEOUT,
        "spamwall test-filter (slice)",
    );
    let spamwall_hosts = summary_hosts(&slice_run.stdout);
    println!(
        "spamwall test-filter     {f2b_lines:>9} lines in {slice_time:>8.2?} (median of {spamwall_runs}): {:>12.0} lines/s  (the fail2ban slice)",
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
    let f2b_matches = String::from_utf8_lossy(&f2b.stdout).lines().count();
    let f2b_hosts: BTreeSet<IpAddr> = String::from_utf8_lossy(&f2b.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    let f2b_rate = per_second(f2b_lines, f2b_time);
    println!(
        "fail2ban-regex           {f2b_lines:>9} lines in {f2b_time:>8.2?} (median of {fail2ban_runs}): {f2b_rate:>12.0} lines/s  ({f2b_matches} matched)"
    );
    assert!(
        !f2b_hosts.is_empty(),
        "cannot measure fail2ban-regex: it found no host in {f2b_lines} lines; its output:\n{}\n{}",
        String::from_utf8_lossy(&f2b.stdout),
        String::from_utf8_lossy(&f2b.stderr)
    );
    assert!(
        !spamwall_hosts.is_empty(),
        "spamwall test-filter found no host in {f2b_lines} lines: {}",
        String::from_utf8_lossy(&slice_run.stdout)
    );
    if bench::smoke() {
        println!("smoke run: the figures mean nothing");
    }
    let ratio = spamwall_rate / f2b_rate;
    println!(
        "ratio: {ratio:.0}x (target >= {TARGET_RATIO:.0}x: {})",
        if ratio >= TARGET_RATIO {
            "met"
        } else {
            "NOT met"
        }
    );

    // Which kind of line made spamwall find the hosts fail2ban did not.
    let json = run_bounded(
        Command::new(&bin)
            .arg("test-filter")
            .arg(&slice)
            .args(filter_args)
            .arg("--json"),
        SPAMWALL_TIMEOUT,
    );
    let failregex =
        spamwall::logwatch::postfix::failregex(spamwall::logwatch::postfix::Mode::Aggressive);
    let mut kinds: BTreeMap<IpAddr, BTreeSet<&str>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&json.stdout).lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let host: IpAddr = value["host"].as_str().unwrap().parse().unwrap();
        let index = usize::try_from(value["regex"].as_u64().unwrap()).unwrap();
        kinds
            .entry(host)
            .or_default()
            .insert(category(&failregex[index]));
    }
    let only_spamwall: Vec<&IpAddr> = spamwall_hosts.difference(&f2b_hosts).collect();
    let only_f2b: Vec<&IpAddr> = f2b_hosts.difference(&spamwall_hosts).collect();
    println!(
        "hosts on the common slice: spamwall {}, fail2ban-regex {}, both {}; same set: {}",
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
        let mut shown = hosts.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if hosts.len() > 5 {
            let _ = write!(shown, ", … ({} more)", hosts.len() - 5);
        }
        println!("  only spamwall, {kind}: {} hosts: {shown}", hosts.len());
    }
    if !only_f2b.is_empty() {
        let list: Vec<String> = only_f2b.iter().map(ToString::to_string).collect();
        println!(
            "  only fail2ban-regex: {} hosts: {}",
            list.len(),
            list.join(", ")
        );
    }
}
