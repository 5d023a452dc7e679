//! `spamwall test-filter`: a filter run over a log like fail2ban-regex,
//! one byte range of the file per core.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fmt::Write as _,
    fs::File,
    io::{self, Write},
    net::IpAddr,
    ops::Range,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::{
    filter::{Filter, RuleHint, Scratch, StampCache, Verdict, has_timestamp},
    lines::{self, Chunk, Last, Options},
};

/// A `test-filter` run that could not happen, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TestFilterError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing the report: {0}")]
    Write(io::Error),
}

/// What a `test-filter` run prints besides the summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// One JSON object per matched line (and per missed line with
    /// `print_missed`) instead of the summary.
    pub json: bool,
    /// List the matched lines, with host and failregex.
    pub print_matched: bool,
    /// List the lines no failregex matched and those without a timestamp
    /// spamwall reads, each with its reason.
    pub print_missed: bool,
}

/// Why a line is listed under `--print-missed`.
const NO_FAILREGEX: &str = "no failregex matched";
const NO_TIMESTAMP: &str = "no timestamp spamwall reads (syslog, RFC 3339 or journal JSON): the daemon counts it as logged when read";

/// Runs a filter over a log like fail2ban-regex: a summary (per-regex
/// hits, `Lines: N, matched M, missed K, ignored I, without timestamp T`,
/// hosts, and the lines `report` asks for) or, with `report.json`, one
/// object per line.
///
/// `-` reads standard input. A regular file is cut into one byte range
/// per core, each read and scanned in blocks of whole lines: memory stays
/// small whatever the size of the log, and the file is read as far as it
/// reached when the run began. Anything else (a pipe, `/dev/stdin`) is
/// read through once.
pub fn test_filter(
    path: &Path,
    filter: &Filter,
    report: Report,
    out: &mut dyn Write,
) -> Result<(), TestFilterError> {
    let stdin = path == Path::new("-");
    let read_error = |source| TestFilterError::Read {
        path: if stdin {
            PathBuf::from("standard input")
        } else {
            path.to_owned()
        },
        source,
    };
    let options = ScanOptions {
        filter,
        now: SystemTime::now(),
        report,
        failregex_json: filter
            .failregex()
            .iter()
            .map(|regex| json_string(regex))
            .collect(),
    };
    let results = if stdin {
        vec![read_through(io::stdin().lock(), &options)]
    } else {
        let file = File::open(path).map_err(read_error)?;
        let metadata = file.metadata().map_err(read_error)?;
        if metadata.is_file() {
            scan_file(&file, metadata.len(), &options)
        } else {
            vec![read_through(&file, &options)]
        }
    };
    let write_err = TestFilterError::Write;
    let mut total = ChunkScan::new(filter);
    let (mut matched_lines, mut missed_lines) = (String::new(), String::new());
    for result in results {
        let result = result.map_err(read_error)?;
        if report.json {
            result.json.write_to(total.lines, out).map_err(write_err)?;
            total.lines += result.lines;
            continue;
        }
        for shown in &result.shown {
            let line = total.lines + shown.line;
            list_line(report, line, shown, &mut matched_lines, &mut missed_lines);
        }
        total.lines += result.lines;
        total.matched += result.matched;
        total.ignored += result.ignored;
        total.untimed += result.untimed;
        for (sum, count) in total.hits.iter_mut().zip(&result.hits) {
            *sum += count;
        }
        for (host, count) in result.hosts {
            *total.hosts.entry(host).or_default() += count;
        }
    }
    if report.json {
        return Ok(());
    }
    let hosts: BTreeMap<IpAddr, u64> = total.hosts.into_iter().collect();
    let missed = total.lines - total.matched - total.ignored;
    let mut text = format!(
        "Filter: {}\n\nFailregex: {} total\n",
        filter.name(),
        total.matched
    );
    for (index, count) in total.hits.iter().enumerate() {
        let _ = writeln!(text, "|  {index}) [{count}] {}", filter.failregex()[index]);
    }
    let _ = writeln!(
        text,
        "\nLines: {}, matched {}, missed {missed}, ignored {}, without timestamp {}",
        total.lines, total.matched, total.ignored, total.untimed
    );
    if total.untimed > 0 && !report.print_missed {
        let _ = writeln!(
            text,
            "  {} line{} without a timestamp spamwall reads (syslog, RFC 3339 or journal JSON): the daemon counts such a line as logged when read; --print-missed lists them",
            total.untimed,
            if total.untimed == 1 { "" } else { "s" }
        );
    }
    let _ = writeln!(text, "\nHosts: {}", hosts.len());
    for (host, count) in &hosts {
        let _ = writeln!(text, "  {host} ({count})");
    }
    if report.print_matched {
        let _ = write!(text, "\nMatched lines:\n{matched_lines}");
    }
    if report.print_missed {
        let _ = write!(text, "\nMissed lines:\n{missed_lines}");
    }
    out.write_all(text.as_bytes()).map_err(write_err)
}

/// Scans a regular file of `size` bytes, one range per core.
fn scan_file(file: &File, size: u64, options: &ScanOptions<'_>) -> Vec<io::Result<ChunkScan>> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let parts = u64::try_from(threads).unwrap_or(1).min(size / MIN_PART + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..parts)
            .map(|k| {
                let range = size * k / parts..size * (k + 1) / parts;
                scope.spawn(move || scan_range(file, range, size, options))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                // A range left out would be a wrong count: fail the run.
                w.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a scanning thread panicked")))
            })
            .collect()
    })
}

/// Scans a stream from start to end.
fn read_through(mut reader: impl io::Read, options: &ScanOptions<'_>) -> io::Result<ChunkScan> {
    let mut scan = ChunkScan::new(options.filter);
    let mut scratch = options.filter.scratch();
    lines::read_lines(
        |buf| reader.read(buf),
        WHOLE_LINES,
        |chunk| scan_chunk(chunk, &mut scan, &mut scratch, options),
    )
    .map(|_| scan)
}

/// Adds a listed line to the matched or missed list of the summary: a
/// matched line without a timestamp goes to both.
fn list_line(report: Report, line: u64, shown: &Shown, matched: &mut String, missed: &mut String) {
    let Some(text) = &shown.text else { return };
    let text = escape_controls(text);
    if let Outcome::Matched { host, regex } = shown.outcome {
        if report.print_missed && shown.time.is_none() {
            let _ = writeln!(missed, "|  {line}: {NO_TIMESTAMP}: {text}");
        }
        if report.print_matched {
            let _ = writeln!(matched, "|  {line}: {host} (failregex {regex}): {text}");
        }
    } else {
        let reason = missed_reason(shown.time.is_none());
        let _ = writeln!(missed, "|  {line}: {reason}: {text}");
    }
}

fn missed_reason(untimed: bool) -> Cow<'static, str> {
    if untimed {
        Cow::Owned(format!("{NO_FAILREGEX}; {NO_TIMESTAMP}"))
    } else {
        Cow::Borrowed(NO_FAILREGEX)
    }
}

/// `text` with control characters written as escapes (`\u{1b}`): a log
/// line is written by whoever Postfix logs about and must not move the
/// terminal's cursor.
fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_unicode().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect(),
    )
}

/// `text` as a JSON string, quoted and escaped.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Appends `n` in decimal: cheaper than the formatting machinery, and
/// called for every listed line.
fn push_decimal(bytes: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0_u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    bytes.extend_from_slice(&digits[at..]);
}

/// Appends an octet in decimal.
fn push_octet(bytes: &mut Vec<u8>, n: u8) {
    let digits = [b'0' + n / 100, b'0' + n / 10 % 10, b'0' + n % 10];
    let skip = if n >= 100 {
        0
    } else if n >= 10 {
        1
    } else {
        2
    };
    bytes.extend_from_slice(&digits[skip..]);
}

/// Appends a group of an IPv6 address in lower-case hex, without leading
/// zeros.
fn push_hex_group(bytes: &mut Vec<u8>, group: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let len = (16 - group.leading_zeros()).div_ceil(4).max(1) as usize;
    let mut digits = [0_u8; 4];
    for (index, digit) in digits[..len].iter_mut().rev().enumerate() {
        *digit = HEX[usize::from((group >> (4 * index)) & 0xf)];
    }
    bytes.extend_from_slice(&digits[..len]);
}

/// Appends `host` as `Display` writes it (RFC 5952 for IPv6: the longest
/// run of two or more zero groups, the first of equals, as `::`), without
/// the formatter, which cost more than matching the line.
fn push_host(bytes: &mut Vec<u8>, host: IpAddr) {
    match host {
        IpAddr::V4(v4) => {
            for (index, octet) in v4.octets().into_iter().enumerate() {
                if index > 0 {
                    bytes.push(b'.');
                }
                push_octet(bytes, octet);
            }
        }
        // `::ffff:192.0.2.1`: the formatter's own notation.
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            let _ = write!(bytes, "{host}");
        }
        IpAddr::V6(v6) => {
            let groups = v6.segments();
            let (mut zeros, mut run) = (0..0, 0..0);
            for (index, &group) in groups.iter().enumerate() {
                if group != 0 {
                    continue;
                }
                if run.end != index {
                    run = index..index;
                }
                run.end = index + 1;
                if run.len() > zeros.len() {
                    zeros = run.clone();
                }
            }
            let push_groups = |bytes: &mut Vec<u8>, groups: &[u16]| {
                for (index, &group) in groups.iter().enumerate() {
                    if index > 0 {
                        bytes.push(b':');
                    }
                    push_hex_group(bytes, group);
                }
            };
            if zeros.len() > 1 {
                push_groups(bytes, &groups[..zeros.start]);
                bytes.extend_from_slice(b"::");
                push_groups(bytes, &groups[zeros.end..]);
            } else {
                push_groups(bytes, &groups);
            }
        }
    }
}

/// The `--json` objects of one worker's lines, written as they are found
/// but without their line numbers: those count from the lines of the
/// ranges before, known once every worker is done.
#[derive(Debug, Default)]
struct JsonObjects {
    bytes: Vec<u8>,
    /// Per object, its line number within the range and where in `bytes`
    /// the number goes.
    numbers: Vec<(u64, usize)>,
    /// The last time written and its text: lines come many to a second.
    last_time: Option<(SystemTime, String)>,
}

impl JsonObjects {
    /// Adds the object of a listed line, its keys in order as before:
    /// `failregex`, `host`, `line`, `reason`, `regex`, `result`, `text`,
    /// `time`.
    fn push(
        &mut self,
        failregex_json: &[String],
        line: u64,
        outcome: Outcome,
        time: Option<SystemTime>,
        text: Option<&str>,
    ) {
        let bytes = &mut self.bytes;
        match outcome {
            Outcome::Matched { host, regex } => {
                bytes.extend_from_slice(b"{\"failregex\":");
                bytes.extend_from_slice(failregex_json[regex].as_bytes());
                bytes.extend_from_slice(b",\"host\":\"");
                push_host(bytes, host);
                bytes.extend_from_slice(b"\",\"line\":");
                self.numbers.push((line, bytes.len()));
                if text.is_some() && time.is_none() {
                    bytes.extend_from_slice(b",\"reason\":");
                    bytes.extend_from_slice(json_string(NO_TIMESTAMP).as_bytes());
                }
                bytes.extend_from_slice(b",\"regex\":");
                push_decimal(bytes, regex as u64);
                bytes.extend_from_slice(b",\"result\":\"matched\"");
            }
            Outcome::Missed => {
                bytes.extend_from_slice(b"{\"line\":");
                self.numbers.push((line, bytes.len()));
                bytes.extend_from_slice(b",\"reason\":");
                bytes.extend_from_slice(json_string(&missed_reason(time.is_none())).as_bytes());
                bytes.extend_from_slice(b",\"result\":\"missed\"");
            }
        }
        if let Some(text) = text {
            bytes.extend_from_slice(b",\"text\":");
            bytes.extend_from_slice(json_string(text).as_bytes());
        }
        bytes.extend_from_slice(b",\"time\":");
        match time {
            None => bytes.extend_from_slice(b"null"),
            Some(time) => {
                let last = match &mut self.last_time {
                    Some((at, text)) if *at == time => text,
                    last => {
                        // Digits, `-`, `:`, `T`, `.` and `Z`: nothing
                        // to escape.
                        let text = format!("\"{}\"", crate::clock::rfc3339_micros(time));
                        &mut last.insert((time, text)).1
                    }
                };
                bytes.extend_from_slice(last.as_bytes());
            }
        }
        bytes.extend_from_slice(b"}\n");
    }

    /// Writes the objects, numbering lines from `lines_before`.
    fn write_to(&self, lines_before: u64, out: &mut dyn Write) -> io::Result<()> {
        let mut written = 0;
        let mut number = Vec::with_capacity(20);
        for &(line, at) in &self.numbers {
            out.write_all(&self.bytes[written..at])?;
            number.clear();
            push_decimal(&mut number, lines_before + line);
            out.write_all(&number)?;
            written = at;
        }
        out.write_all(&self.bytes[written..])
    }
}

/// A file smaller than this per core is not worth another thread.
const MIN_PART: u64 = 1 << 20;

/// How a log is read: in blocks of 1 MiB (more for a longer line), every
/// line whatever its length, the last one even without its `\n`.
const WHOLE_LINES: Options = Options {
    skip_first: false,
    owned: u64::MAX,
    block: 1 << 20,
    max_line: None,
    last: Last::Line,
};

/// What every worker of a `test-filter` run shares.
struct ScanOptions<'f> {
    filter: &'f Filter,
    now: SystemTime,
    report: Report,
    /// The failregexes as JSON strings, escaped once.
    failregex_json: Vec<String>,
}

/// What became of a listed line.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Matched { host: IpAddr, regex: usize },
    Missed,
}

/// A line to list, numbered within its worker's range.
#[derive(Debug)]
struct Shown {
    line: u64,
    outcome: Outcome,
    time: Option<SystemTime>,
    /// The line without its newline, when it is to be printed.
    text: Option<String>,
}

/// What one worker's range of a log held.
#[derive(Debug, Default)]
struct ChunkScan {
    lines: u64,
    matched: u64,
    ignored: u64,
    /// Lines without a timestamp spamwall reads.
    untimed: u64,
    hits: Vec<u64>,
    hosts: foldhash::HashMap<IpAddr, u64>,
    /// The lines to list, in order.
    shown: Vec<Shown>,
    /// With `--json`, the objects of the lines to list, in order.
    json: JsonObjects,
}

impl ChunkScan {
    fn new(filter: &Filter) -> Self {
        Self {
            hits: vec![0; filter.failregex().len()],
            ..Self::default()
        }
    }
}

/// Scans the lines that start in `range` of a file of `size` bytes (the
/// size when the run began: what is appended later is not read).
fn scan_range(
    file: &File,
    range: Range<u64>,
    size: u64,
    options: &ScanOptions<'_>,
) -> io::Result<ChunkScan> {
    let mut scan = ChunkScan::new(options.filter);
    let mut scratch = options.filter.scratch();
    // From the byte before the range: whether a line starts at its first.
    let mut at = range.start.saturating_sub(1);
    let owned = range.end - at;
    lines::read_lines(
        |buf| {
            let left = size.saturating_sub(at);
            let want = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
            let n = file.read_at(&mut buf[..want], at)?;
            at += n as u64;
            Ok(n)
        },
        Options {
            skip_first: range.start > 0,
            owned,
            ..WHOLE_LINES
        },
        |chunk| scan_chunk(chunk, &mut scan, &mut scratch, options),
    )?;
    Ok(scan)
}

/// `raw` as text: checking is cheaper than the lossy decoder's walk.
fn decode(raw: &[u8]) -> Cow<'_, str> {
    std::str::from_utf8(raw).map_or_else(|_| String::from_utf8_lossy(raw), Cow::Borrowed)
}

/// Scans a block of whole lines into `scan`.
fn scan_chunk(
    chunk: Chunk<'_>,
    scan: &mut ChunkScan,
    scratch: &mut Scratch,
    options: &ScanOptions<'_>,
) {
    let &ScanOptions {
        filter,
        now,
        report,
        ..
    } = options;
    let Chunk::Lines(chunk) = chunk else { return };
    let first_line = scan.lines;
    // Journald JSON lines are rebuilt before matching and missed lines
    // are wanted one by one: both need every line. Otherwise only the
    // lines holding a literal some failregex needs are looked at, and
    // the others only for their timestamp.
    let every_line = report.print_missed
        || chunk.first() == Some(&b'{')
        || memchr::memmem::find(chunk, b"\n{").is_some();
    let (mut counted_to, mut lines_before) = (0, 0_u64);
    let mut stamps = StampCache::default();
    let mut check = |offset: usize, raw: &[u8], rules: RuleHint| {
        let raw = decode(raw);
        let line = stamps.parse_line(&raw, now);
        if every_line && line.time.is_none() {
            scan.untimed += 1;
        }
        let verdict = filter.check_candidate(scratch, &line.text, rules);
        let untimed_shown = report.print_missed && line.time.is_none();
        let (outcome, with_text) = match verdict {
            Verdict::Matched { host, regex } => {
                scan.matched += 1;
                // The summary's counts: `--json` prints none.
                if !report.json {
                    scan.hits[regex] += 1;
                    *scan.hosts.entry(host).or_default() += 1;
                }
                if !(report.json || report.print_matched || untimed_shown) {
                    return;
                }
                (
                    Outcome::Matched { host, regex },
                    report.print_matched || untimed_shown,
                )
            }
            Verdict::Ignored => {
                scan.ignored += 1;
                return;
            }
            Verdict::Missed if report.print_missed => (Outcome::Missed, true),
            Verdict::Missed => return,
        };
        lines_before += memchr::memchr_iter(b'\n', &chunk[counted_to..offset]).count() as u64;
        counted_to = offset;
        let number = first_line + lines_before + 1;
        let text = with_text.then(|| raw.trim_end_matches(['\n', '\r']));
        if report.json {
            scan.json
                .push(&options.failregex_json, number, outcome, line.time, text);
            return;
        }
        scan.shown.push(Shown {
            line: number,
            outcome,
            time: line.time,
            text: text.map(str::to_owned),
        });
    };
    if every_line {
        let mut offset = 0;
        for raw in chunk.split_inclusive(|&b| b == b'\n') {
            check(offset, raw, RuleHint::ANY);
            offset += raw.len();
        }
    } else {
        for candidate in filter.candidates(chunk) {
            check(candidate.offset, candidate.line, candidate.rules);
        }
    }
    // The lines before the last one listed are counted already.
    scan.lines = first_line + lines_before + lines::line_count(&chunk[counted_to..]);
    if !every_line && !report.json {
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', chunk).chain([chunk.len()]) {
            if start < chunk.len() && !has_timestamp(&chunk[start..end], now) {
                scan.untimed += 1;
            }
            start = end + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use crate::logwatch::{UserFilter, resolve_filter};

    const JSON: Report = Report {
        json: true,
        print_matched: false,
        print_missed: false,
    };
    const MISSED: Report = Report {
        json: false,
        print_matched: false,
        print_missed: true,
    };

    #[test]
    fn a_large_log_is_numbered_across_ranges() {
        // Several MiB: one range per core, each read in blocks.
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("mail.log");
        let mut text = String::new();
        let mut expected = Vec::new();
        for i in 1..=60_000_u64 {
            if i % 7 == 0 {
                let _ = writeln!(
                    text,
                    "Nov 20 10:01:03 mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.{}]:4567",
                    i % 250
                );
                expected.push(i);
            } else {
                let _ = writeln!(
                    text,
                    "Nov 20 10:01:03 mx postfix/postscreen[9]: PASS OLD [198.51.100.{}]:4567",
                    i % 250
                );
            }
        }
        assert!(text.len() as u64 > 3 * MIN_PART);
        std::fs::write(&log, &text).expect("write");
        let filter = resolve_filter("postfix", Some("rbl"), &[]).expect("filter");
        let mut out = Vec::new();
        test_filter(&log, &filter, JSON, &mut out).expect("runs");
        let numbers: Vec<u64> = String::from_utf8(out)
            .expect("utf8")
            .lines()
            .map(|l| {
                let value: serde_json::Value = serde_json::from_str(l).expect("json");
                value["line"].as_u64().expect("number")
            })
            .collect();
        assert_eq!(numbers, expected);
        let mut out = Vec::new();
        test_filter(&log, &filter, Report::default(), &mut out).expect("runs");
        let summary = String::from_utf8(out).expect("utf8");
        assert!(
            summary.contains(&format!(
                "Lines: 60000, matched {}, missed {}, ignored 0",
                expected.len(),
                60_000 - expected.len()
            )),
            "{summary}"
        );
    }

    #[test]
    fn hosts_and_numbers_are_written_as_display_writes_them() {
        let mut hosts: Vec<IpAddr> = [
            "0.0.0.0",
            "192.0.2.10",
            "255.255.255.255",
            "2001:db8::1",
            "::",
            "::1",
            "1::",
            "1:0:2:0:0:3:0:4",
            "1:0:0:2:0:0:3:4",
            "0:0:1:0:0:0:0:1",
            "1:2:3:4:5:6:7:8",
            "1:0:2:3:4:5:6:7",
            "ffff:abcd:f0:f00:1000::",
            "::ffff:192.0.2.1",
            "::192.0.2.1",
            "64:ff9b::192.0.2.1",
        ]
        .iter()
        .map(|host| host.parse().expect("address"))
        .collect();
        // Every mix of zero and non-zero groups, with groups of each width.
        for zeros in 0..=u8::MAX {
            let groups: Vec<u16> = (0..8_u16)
                .map(|i| {
                    if zeros & (1 << i) == 0 {
                        0
                    } else {
                        [0xf, 0xab, 0x1cd, 0xbeef][usize::from(i % 4)]
                    }
                })
                .collect();
            let groups: [u16; 8] = groups.try_into().expect("eight groups");
            hosts.push(IpAddr::from(groups));
        }
        for host in hosts {
            let mut bytes = Vec::new();
            push_host(&mut bytes, host);
            assert_eq!(String::from_utf8(bytes).expect("utf8"), host.to_string());
        }
        for n in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut bytes = Vec::new();
            push_decimal(&mut bytes, n);
            assert_eq!(bytes, n.to_string().into_bytes());
        }
    }

    #[test]
    fn a_pipe_is_read_through() {
        let filter = resolve_filter("postfix", Some("rbl"), &[]).expect("filter");
        let mut out = Vec::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("log");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                std::fs::write(
                    fifo,
                    "Nov 20 10:01:03 mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.2]:4567\nno newline",
                )
            })
        };
        test_filter(&fifo, &filter, Report::default(), &mut out).expect("runs");
        writer.join().expect("writer").expect("writes");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("Lines: 2, matched 1, missed 1"), "{text}");
    }

    #[test]
    fn user_filter_and_test_filter_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("mail.log");
        std::fs::write(
            &log,
            "Nov 20 10:01:03 mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.2]:4567\n\
             Nov 20 10:01:04 mx postfix/postscreen[9]: PASS OLD [192.0.2.3]:4567\n",
        )
        .expect("write");
        let filter = resolve_filter("postfix", Some("rbl"), &[]).expect("filter");
        let mut out = Vec::new();
        test_filter(&log, &filter, MISSED, &mut out).expect("runs");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("Lines: 2, matched 1, missed 1, ignored 0"),
            "{text}"
        );
        assert!(
            text.contains("192.0.2.2 (1)") && text.contains("PASS OLD"),
            "{text}"
        );
        let mut out = Vec::new();
        test_filter(&log, &filter, JSON, &mut out).expect("runs");
        let value: serde_json::Value =
            serde_json::from_slice(out.split(|b| *b == b'\n').next().expect("line")).expect("json");
        assert_eq!(value["line"], 1);
        assert_eq!(value["host"], "192.0.2.2");
        assert_eq!(value["regex"], 1);
        assert!(value["time"].is_string());
        let user = vec![UserFilter {
            name: "mine".to_owned(),
            failregex: vec![r"PASS OLD \[<HOST>\]".to_owned()],
            ..UserFilter::default()
        }];
        let mine = resolve_filter("mine", None, &user).expect("user filter");
        let mut out = Vec::new();
        test_filter(&log, &mine, Report::default(), &mut out).expect("runs");
        assert!(String::from_utf8_lossy(&out).contains("192.0.2.3"));
    }
    /// Two matched lines (one without a timestamp), a missed one without a
    /// timestamp, a missed one with.
    const MIXED: &str = "Nov 20 10:01:03 mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.2]:4567\n\
         mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.3]:4567\n\
         garbage \u{1b}[2J without a date\n\
         Nov 20 10:01:04 mx postfix/postscreen[9]: PASS OLD [192.0.2.4]:4567\n";

    fn run(report: Report) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("mail.log");
        std::fs::write(&log, MIXED).expect("write");
        let filter = resolve_filter("postfix", Some("rbl"), &[]).expect("filter");
        let mut out = Vec::new();
        test_filter(&log, &filter, report, &mut out).expect("runs");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn lines_without_a_timestamp_are_counted_and_listed_with_the_reason() {
        let text = run(Report::default());
        assert!(
            text.contains("\nLines: 4, matched 2, missed 2, ignored 0, without timestamp 2\n  2 lines without a timestamp spamwall reads"),
            "{text}"
        );
        assert!(!text.contains("Missed lines:") && !text.contains("Matched lines:"));
        let text = run(MISSED);
        assert!(
            text.ends_with(&format!(
                "\nMissed lines:\n\
                 |  2: {NO_TIMESTAMP}: mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.3]:4567\n\
                 |  3: {NO_FAILREGEX}; {NO_TIMESTAMP}: garbage \\u{{1b}}[2J without a date\n\
                 |  4: {NO_FAILREGEX}: Nov 20 10:01:04 mx postfix/postscreen[9]: PASS OLD [192.0.2.4]:4567\n"
            )),
            "{text}"
        );
        assert!(text.contains("without timestamp 2\n\nHosts: 2\n"), "{text}");
    }

    #[test]
    fn matched_lines_are_printed_with_host_and_failregex() {
        let text = run(Report {
            print_matched: true,
            ..Report::default()
        });
        assert!(
            text.ends_with(
                "\nMatched lines:\n\
                 |  1: 192.0.2.2 (failregex 1): Nov 20 10:01:03 mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.2]:4567\n\
                 |  2: 192.0.2.3 (failregex 1): mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.3]:4567\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn json_lists_missed_lines_with_their_reason() {
        let text = run(Report {
            json: true,
            print_matched: false,
            print_missed: true,
        });
        let objects: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(objects.len(), 4, "{text}");
        let filter = resolve_filter("postfix", Some("rbl"), &[]).expect("filter");
        assert_eq!(objects[0]["result"], "matched");
        assert_eq!(objects[0]["host"], "192.0.2.2");
        assert_eq!(objects[0]["regex"], 1);
        assert_eq!(objects[0]["failregex"], filter.failregex()[1].as_str());
        assert!(objects[0]["time"].is_string() && objects[0].get("text").is_none());
        assert_eq!(objects[1]["line"], 2);
        assert!(objects[1]["time"].is_null());
        assert_eq!(objects[1]["reason"], NO_TIMESTAMP);
        assert_eq!(objects[2]["result"], "missed");
        assert_eq!(objects[2]["text"], "garbage \u{1b}[2J without a date");
        assert_eq!(
            objects[2]["reason"],
            format!("{NO_FAILREGEX}; {NO_TIMESTAMP}")
        );
        assert_eq!(objects[3]["line"], 4);
        assert_eq!(objects[3]["reason"], NO_FAILREGEX);
        assert!(objects[3]["time"].is_string());
        // Without --print-missed, matched lines only, as before.
        let text = run(JSON);
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
