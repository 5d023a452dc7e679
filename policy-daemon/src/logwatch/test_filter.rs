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
    filter::{Filter, Scratch, Verdict, parse_line},
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

/// Runs a filter over a log file like fail2ban-regex: a summary (per-regex
/// hits, `Lines: N, matched M, missed K, ignored I`, hosts) or, with
/// `json`, one object per matched line.
///
/// A regular file is cut into one byte range per core, each read and
/// scanned in blocks of whole lines: memory stays small whatever the size
/// of the log, and the file is read as far as it reached when the run
/// began. Anything else (a pipe, `/dev/stdin`) is read through once.
pub fn test_filter(
    path: &Path,
    filter: &Filter,
    json: bool,
    print_missed: bool,
    out: &mut dyn Write,
) -> Result<(), TestFilterError> {
    let read_error = |source| TestFilterError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    let now = SystemTime::now();
    let options = ScanOptions {
        filter,
        now,
        json,
        print_missed,
    };
    let results: Vec<io::Result<ChunkScan>> = if metadata.is_file() {
        let size = metadata.len();
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let parts = u64::try_from(threads).unwrap_or(1).min(size / MIN_PART + 1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..parts)
                .map(|k| {
                    let (file, options) = (&file, &options);
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
    } else {
        let mut reader = &file;
        let mut scan = ChunkScan::new(filter);
        let mut scratch = filter.scratch();
        vec![
            lines::read_lines(
                |buf| io::Read::read(&mut reader, buf),
                WHOLE_LINES,
                |chunk| scan_chunk(chunk, &mut scan, &mut scratch, &options),
            )
            .map(|_| scan),
        ]
    };
    let write_err = TestFilterError::Write;
    let (mut lines, mut matched, mut ignored) = (0_u64, 0_u64, 0_u64);
    let mut hits = vec![0_u64; filter.failregex().len()];
    let mut hosts: BTreeMap<IpAddr, u64> = BTreeMap::new();
    let mut missed_lines = String::new();
    let mut json_out = Vec::new();
    for result in results {
        let result = result.map_err(read_error)?;
        for hit in &result.json {
            let object = serde_json::json!({
                "line": lines + hit.line,
                "host": hit.host.to_string(),
                "time": hit.time.map(crate::clock::rfc3339_micros),
                "regex": hit.regex,
            });
            let _ = writeln!(json_out, "{object}");
        }
        lines += result.lines;
        matched += result.matched;
        ignored += result.ignored;
        for (total, count) in hits.iter_mut().zip(&result.hits) {
            *total += count;
        }
        for (host, count) in result.hosts {
            *hosts.entry(host).or_default() += count;
        }
        missed_lines.push_str(&result.missed_lines);
    }
    if json {
        return out.write_all(&json_out).map_err(write_err);
    }
    let missed = lines - matched - ignored;
    let mut text = format!("Filter: {}\n\nFailregex: {matched} total\n", filter.name());
    for (index, count) in hits.iter().enumerate() {
        let _ = writeln!(text, "|  {index}) [{count}] {}", filter.failregex()[index]);
    }
    let _ = writeln!(
        text,
        "\nLines: {lines}, matched {matched}, missed {missed}, ignored {ignored}\n\nHosts: {}",
        hosts.len()
    );
    for (host, count) in &hosts {
        let _ = writeln!(text, "  {host} ({count})");
    }
    if print_missed {
        let _ = write!(text, "\nMissed lines:\n{missed_lines}");
    }
    out.write_all(text.as_bytes()).map_err(write_err)
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
    json: bool,
    print_missed: bool,
}

/// A matched line for `--json`, numbered within its worker's range.
#[derive(Debug)]
struct JsonHit {
    line: u64,
    host: IpAddr,
    time: Option<SystemTime>,
    regex: usize,
}

/// What one worker's range of a log held.
#[derive(Debug, Default)]
struct ChunkScan {
    lines: u64,
    matched: u64,
    ignored: u64,
    hits: Vec<u64>,
    hosts: foldhash::HashMap<IpAddr, u64>,
    missed_lines: String,
    json: Vec<JsonHit>,
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
        json,
        print_missed,
    } = options;
    let Chunk::Lines(chunk) = chunk else { return };
    let first_line = scan.lines;
    scan.lines += lines::line_count(chunk);
    // Journald JSON lines are rebuilt before matching and missed lines
    // are wanted one by one: both need every line. Otherwise only the
    // lines holding a literal some failregex needs are looked at.
    let every_line = print_missed
        || chunk.first() == Some(&b'{')
        || memchr::memmem::find(chunk, b"\n{").is_some();
    let (mut counted_to, mut lines_before) = (0, 0_u64);
    let mut check = |offset: usize, raw: &[u8]| {
        // Checking is cheaper than the lossy decoder's walk.
        let raw =
            std::str::from_utf8(raw).map_or_else(|_| String::from_utf8_lossy(raw), Cow::Borrowed);
        let line = parse_line(&raw, now);
        match filter.check_with(scratch, &line.text) {
            Verdict::Matched { host, regex } => {
                scan.matched += 1;
                scan.hits[regex] += 1;
                *scan.hosts.entry(host).or_default() += 1;
                if json {
                    lines_before +=
                        memchr::memchr_iter(b'\n', &chunk[counted_to..offset]).count() as u64;
                    counted_to = offset;
                    scan.json.push(JsonHit {
                        line: first_line + lines_before + 1,
                        host,
                        time: line.time,
                        regex,
                    });
                }
            }
            Verdict::Ignored => scan.ignored += 1,
            Verdict::Missed => {
                if print_missed {
                    scan.missed_lines
                        .push_str(raw.trim_end_matches(['\n', '\r']));
                    scan.missed_lines.push('\n');
                }
            }
        }
    };
    if every_line {
        let mut offset = 0;
        for raw in chunk.split_inclusive(|&b| b == b'\n') {
            check(offset, raw);
            offset += raw.len();
        }
    } else {
        for (offset, raw) in filter.candidate_lines(chunk) {
            check(offset, raw);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use crate::logwatch::{UserFilter, resolve_filter};

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
        test_filter(&log, &filter, true, false, &mut out).expect("runs");
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
        test_filter(&log, &filter, false, false, &mut out).expect("runs");
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
        test_filter(&fifo, &filter, false, false, &mut out).expect("runs");
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
        test_filter(&log, &filter, false, true, &mut out).expect("runs");
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
        test_filter(&log, &filter, true, false, &mut out).expect("runs");
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
        test_filter(&log, &mine, false, false, &mut out).expect("runs");
        assert!(String::from_utf8_lossy(&out).contains("192.0.2.3"));
    }
}
