//! The log watcher: follows mail logs (files or the journal), applies
//! fail2ban-style filters and bans through the ban manager when a rule's
//! `maxretry` is reached within its `findtime`.

pub mod filter;
mod lint;
pub mod postfix;
mod rules;
mod source;
mod watcher;

pub use watcher::Watcher;

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fmt::Write as _,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

use filter::{Filter, FilterError, Scratch, Verdict, parse_line};

/// A `test-filter` run that could not happen, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TestFilterError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the report: {0}")]
    Write(std::io::Error),
    #[error("{0}")]
    Usage(String),
}

/// A user filter: its name, failregex and ignoreregex lines.
pub type UserFilter = (String, Vec<String>, Vec<String>);

/// Resolves `--filter`: `postfix` (built-in, with `mode`), a fail2ban
/// filter file path (optionally `PATH[mode=M]`), or one of `user` filters.
pub fn resolve_filter(
    spec: &str,
    mode: Option<&str>,
    user: &[UserFilter],
) -> Result<Filter, TestFilterError> {
    let (name, mut params) = filter::split_params(spec);
    if let Some(mode) = mode {
        params.retain(|(k, _)| k != "mode");
        params.push(("mode".to_owned(), mode.to_owned()));
    }
    let param_mode = params
        .iter()
        .find(|(k, _)| k == "mode")
        .map(|(_, v)| v.as_str());
    if name == "postfix" {
        let mode = param_mode
            .unwrap_or("more")
            .parse::<postfix::Mode>()
            .map_err(TestFilterError::Usage)?;
        return Ok(postfix::filter(mode)?);
    }
    if let Some((name, fail, ignore)) = user.iter().find(|(n, _, _)| n == name) {
        return Ok(Filter::new(name, fail, ignore)?);
    }
    if name.contains('/') || Path::new(name).extension().is_some_and(|e| e == "conf") {
        let imported = filter::import_fail2ban(Path::new(name), &params)?;
        return Ok(Filter::new(
            spec,
            &imported.failregex,
            &imported.ignoreregex,
        )?);
    }
    Err(TestFilterError::Usage(format!(
        "unknown filter {name:?}: use `postfix`, a fail2ban filter file path, or a [[logwatch.filter]] name from --config"
    )))
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
    let file = std::fs::File::open(path).map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    let now = SystemTime::now();
    let options = ScanOptions {
        filter,
        now,
        json,
        print_missed,
    };
    let results: Vec<std::io::Result<ChunkScan>> = if metadata.is_file() {
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
                    w.join().unwrap_or_else(|_| {
                        Err(std::io::Error::other("a scanning thread panicked"))
                    })
                })
                .collect()
        })
    } else {
        let mut reader = &file;
        let mut scan = ChunkScan::new(filter);
        let mut scratch = filter.scratch();
        vec![
            read_lines(
                |buf| std::io::Read::read(&mut reader, buf),
                false,
                u64::MAX,
                BLOCK,
                |block| scan_chunk(block, &mut scan, &mut scratch, &options),
            )
            .map(|()| scan),
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

/// How much of a log a worker reads at once (more for a longer line).
const BLOCK: usize = 1 << 20;

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

/// Scans the lines that start in `range` of a file of `size` bytes.
fn scan_range(
    file: &std::fs::File,
    range: std::ops::Range<u64>,
    size: u64,
    options: &ScanOptions<'_>,
) -> std::io::Result<ChunkScan> {
    use std::os::unix::fs::FileExt as _;
    let mut scan = ChunkScan::new(options.filter);
    let mut scratch = options.filter.scratch();
    read_range(
        |buf, at| file.read_at(buf, at),
        range,
        size,
        BLOCK,
        |block| scan_chunk(block, &mut scan, &mut scratch, options),
    )?;
    Ok(scan)
}

/// [`read_lines`] for the lines that start in `range` of `size` bytes
/// read with `read_at`.
fn read_range(
    read_at: impl Fn(&mut [u8], u64) -> std::io::Result<usize>,
    range: std::ops::Range<u64>,
    size: u64,
    block: usize,
    scan: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    // From the byte before the range: whether a line starts at its first.
    let mut at = range.start.saturating_sub(1);
    let owned = range.end - at;
    read_lines(
        |buf| {
            let left = size.saturating_sub(at);
            let want = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
            let n = read_at(&mut buf[..want], at)?;
            at += n as u64;
            Ok(n)
        },
        range.start > 0,
        owned,
        block,
        scan,
    )
}

/// Feeds `scan` blocks of whole lines from `read`: the lines that start
/// in the first `owned` bytes, the last of them read to its end. With
/// `skip_first`, the bytes up to the first newline belong to the range
/// before (read starts one byte early, so a newline there means a line
/// starts right at the range). A last line without a newline counts.
fn read_lines(
    mut read: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
    skip_first: bool,
    owned: u64,
    block: usize,
    mut scan: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut buf = vec![0_u8; block.max(1)];
    let (mut filled, mut base) = (0_usize, 0_u64);
    let mut skipping = skip_first;
    loop {
        if filled == buf.len() {
            // A line longer than the buffer.
            buf.resize(buf.len() * 2, 0);
        }
        let n = loop {
            match read(&mut buf[filled..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        let eof = n == 0;
        filled += n;
        let data = &buf[..filled];
        let mut start = 0;
        if skipping {
            if let Some(i) = memchr::memchr(b'\n', data) {
                start = i + 1;
                skipping = false;
            } else if eof {
                return Ok(());
            } else {
                base += filled as u64;
                filled = 0;
                continue;
            }
        }
        let whole = if eof {
            filled
        } else {
            memchr::memrchr(b'\n', &data[start..]).map_or(start, |i| start + i + 1)
        };
        // Lines from `limit` on are the next range's.
        let limit = usize::try_from(owned.saturating_sub(base)).unwrap_or(usize::MAX);
        if limit <= start {
            return Ok(());
        }
        if limit <= whole {
            let end = memchr::memchr(b'\n', &data[limit - 1..whole]).map_or(whole, |i| limit + i);
            scan(&data[start..end]);
            return Ok(());
        }
        scan(&data[start..whole]);
        if eof {
            return Ok(());
        }
        buf.copy_within(whole..filled, 0);
        base += whole as u64;
        filled -= whole;
    }
}

/// Scans a block of whole lines into `scan`.
fn scan_chunk(
    chunk: &[u8],
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
    let first_line = scan.lines;
    scan.lines += line_count(chunk);
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

/// Lines in a chunk, counting an unterminated last line.
fn line_count(chunk: &[u8]) -> u64 {
    let newlines = memchr::memchr_iter(b'\n', chunk).count() as u64;
    newlines + u64::from(!chunk.is_empty() && !chunk.ends_with(b"\n"))
}

/// `[logwatch]`: log sources, user filters and ban rules.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogwatchConfig {
    /// `[[logwatch.source]]`.
    pub source: Vec<SourceConfig>,
    /// `[[logwatch.rule]]`.
    pub rule: Vec<RuleConfig>,
    /// `[[logwatch.filter]]`.
    pub filter: Vec<FilterConfig>,
}

/// A followed log: a file (`path`) or journal units (`journal`).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    pub path: Option<PathBuf>,
    pub journal: Option<Vec<String>>,
    /// The journal namespace the units log to (their `LogNamespace=`);
    /// default the system journal.
    pub journal_namespace: Option<String>,
}

/// What systemd accepts as a journal namespace (`LogNamespace=`).
fn journal_namespace_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A ban rule: `maxretry` matches of `filter` within `findtime` ban the
/// host for `bantime` (escalated for repeat offenders).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub filter: String,
    pub mode: Option<String>,
    /// Default 10 minutes.
    pub findtime: Option<crate::duration::Span>,
    /// Default 5.
    pub maxretry: Option<u32>,
    /// Default `ban.bantime`.
    pub bantime: Option<crate::duration::BanTime>,
    /// Only lines of this source; default all.
    pub source: Option<String>,
}

/// A user filter: inline regexes or a fail2ban filter file.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    pub name: String,
    #[serde(default)]
    pub failregex: Vec<String>,
    #[serde(default)]
    pub ignoreregex: Vec<String>,
    pub file: Option<PathBuf>,
}

impl LogwatchConfig {
    /// User filters as `(name, failregex, ignoreregex)`; file filters are
    /// imported (an unreadable file gives an empty filter, reported by
    /// [`Self::problems`]).
    pub fn user_filters(&self) -> Vec<UserFilter> {
        self.load_user_filters().0
    }

    /// [`Self::user_filters`] and the import problems, each file read once.
    fn load_user_filters(&self) -> (Vec<UserFilter>, Vec<String>) {
        let mut problems = Vec::new();
        let filters = self
            .filter
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let (mut fail, mut ignore) = (f.failregex.clone(), f.ignoreregex.clone());
                if let Some(file) = &f.file {
                    let (path, params) = filter::split_params(file.to_str().unwrap_or(""));
                    match filter::import_fail2ban(Path::new(path), &params) {
                        Ok(imported) => {
                            fail.extend(imported.failregex);
                            ignore.extend(imported.ignoreregex);
                        }
                        Err(e) => problems.push(format!("logwatch.filter[{i}].file: {e}")),
                    }
                }
                (f.name.clone(), fail, ignore)
            })
            .collect();
        (filters, problems)
    }

    /// What is allowed but risky, each naming its key: failregexes whose
    /// host a client can choose ([`lint::host_not_anchored`]).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (i, (name, failregex, _)) in self.user_filters().iter().enumerate() {
            for (j, regex) in failregex.iter().enumerate() {
                if let Some(problem) = lint::host_not_anchored(regex) {
                    warnings.push(format!(
                        "logwatch.filter[{i}] ({name}): failregex {} {problem}: {regex}",
                        j + 1
                    ));
                }
            }
        }
        warnings
    }

    /// Every problem, each naming its key (`logwatch.rule[1].filter`).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, source) in self.source.iter().enumerate() {
            if source.journal.as_ref().is_some_and(Vec::is_empty) {
                problems.push(format!(
                    "logwatch.source[{i}].journal: name at least one unit"
                ));
            }
            if source.path.as_ref().is_some_and(|p| !p.is_absolute()) {
                problems.push(format!("logwatch.source[{i}].path: must be absolute"));
            }
            if let Some(namespace) = &source.journal_namespace {
                if source.journal.is_none() {
                    problems.push(format!(
                        "logwatch.source[{i}].journal_namespace: only for a `journal` source"
                    ));
                }
                if !journal_namespace_valid(namespace) {
                    problems.push(format!(
                        "logwatch.source[{i}].journal_namespace: {namespace:?} is not a namespace name (letters, digits, `-`, `_`, `.`; at most 64)"
                    ));
                }
            }
            if source.path.is_some() == source.journal.is_some() {
                problems.push(format!(
                    "logwatch.source[{i}]: give exactly one of `path` or `journal`"
                ));
            }
            if self.source[..i].iter().any(|s| s.name == source.name) {
                problems.push(format!(
                    "logwatch.source[{i}].name: {:?} is used twice",
                    source.name
                ));
            }
        }
        let (user, import_problems) = self.load_user_filters();
        problems.extend(import_problems);
        for (i, f) in self.filter.iter().enumerate() {
            if f.name == "postfix" {
                problems.push(format!("logwatch.filter[{i}].name: `postfix` is built in"));
            }
            if let Err(e) = Filter::new(&f.name, &user[i].1, &user[i].2) {
                problems.push(format!("logwatch.filter[{i}]: {e}"));
            }
        }
        for (i, rule) in self.rule.iter().enumerate() {
            if let Err(e) = resolve_filter(&rule.filter, rule.mode.as_deref(), &user) {
                problems.push(format!("logwatch.rule[{i}].filter: {e}"));
            }
            if rule.maxretry == Some(0) {
                problems.push(format!("logwatch.rule[{i}].maxretry: must be at least 1"));
            }
            if let Some(source) = &rule.source
                && !self.source.iter().any(|s| &s.name == source)
            {
                problems.push(format!(
                    "logwatch.rule[{i}].source: no source named {source:?}"
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_read_every_line_once_and_whole() {
        let long = format!("{}\n", "x".repeat(40));
        let samples: Vec<Vec<u8>> = [
            "",
            "a",
            "a\n",
            "\n\n\n",
            "one\ntwo\nthree\nfour",
            "one\ntwo\nthree\nfour\n",
            &format!("{long}short\n{long}{long}tail"),
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        for data in &samples {
            let size = data.len() as u64;
            for parts in 1..=7_u64 {
                for block in [1, 2, 3, 7, 64] {
                    let mut seen: Vec<Vec<u8>> = Vec::new();
                    for k in 0..parts {
                        let range = size * k / parts..size * (k + 1) / parts;
                        let read_at = |buf: &mut [u8], at: u64| {
                            let at = usize::try_from(at).expect("small");
                            let n = buf.len().min(data.len().saturating_sub(at));
                            buf[..n].copy_from_slice(&data[at..at + n]);
                            Ok(n)
                        };
                        read_range(read_at, range, size, block, |b| seen.push(b.to_vec()))
                            .expect("reads");
                    }
                    let what = format!(
                        "{:?} in {parts} parts, block {block}",
                        String::from_utf8_lossy(data)
                    );
                    assert_eq!(seen.concat(), *data, "{what}");
                    let lines: u64 = seen.iter().map(|b| line_count(b)).sum();
                    assert_eq!(lines, line_count(data), "{what}");
                    for b in &seen[..seen.len().saturating_sub(1)] {
                        assert!(b.is_empty() || b.ends_with(b"\n"), "{what}: {seen:?}");
                    }
                }
            }
        }
    }

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
        let data = b"one\ntwo\nthree";
        let mut reader = &data[..];
        let mut seen = Vec::new();
        read_lines(
            |buf| std::io::Read::read(&mut reader, buf),
            false,
            u64::MAX,
            2,
            |b| seen.extend_from_slice(b),
        )
        .expect("reads");
        assert_eq!(seen, data);
    }

    use super::*;
    use crate::config::{Config, ParseError};

    #[test]
    fn three_line_rule_parses() {
        let config: Config = toml::from_str(
            "[[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"rbl\"\nmaxretry = 1\n",
        )
        .expect("deserializes");
        assert_eq!(config.logwatch.rule[0].maxretry, Some(1));
        let problems = config.logwatch.problems();
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn journal_namespace_is_checked() {
        let Err(ParseError::Invalid(problems)) = Config::parse(
            "[[logwatch.source]]\nname = \"a\"\npath = \"/var/log/mail.log\"\njournal_namespace = \"mail\"\n\
             [[logwatch.source]]\nname = \"b\"\njournal = [\"postfix@-.service\"]\njournal_namespace = \"../x\"\n",
        ) else {
            panic!("expected problems");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("logwatch.source[0].journal_namespace: only for a `journal` source"),
            "{all}"
        );
        assert!(
            all.contains("logwatch.source[1].journal_namespace: \"../x\""),
            "{all}"
        );
        assert!(journal_namespace_valid("mail") && journal_namespace_valid("spamwall-test.1"));
        assert!(!journal_namespace_valid("") && !journal_namespace_valid("a/b"));
    }

    #[test]
    fn an_unreadable_filter_file_names_its_key_and_path() {
        let Err(ParseError::Invalid(problems)) = Config::parse(
            "[[logwatch.filter]]\nname = \"mine\"\nfile = \"/nonexistent/mine.conf\"\n",
        ) else {
            panic!("expected problems");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("logwatch.filter[0].file") && all.contains("/nonexistent/mine.conf"),
            "{all}"
        );
    }

    #[test]
    fn bad_rule_names_its_key() {
        let Err(ParseError::Invalid(problems)) = Config::parse(
            "[[logwatch.rule]]\nfilter = \"postfix\"\n[[logwatch.rule]]\nfilter = \"nope\"\nmaxretry = 0\n",
        ) else {
            panic!("expected problems");
        };
        let all = problems.join("\n");
        assert!(all.contains("logwatch.rule[1].filter"), "{all}");
        assert!(all.contains("logwatch.rule[1].maxretry"), "{all}");
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
        let user = vec![(
            "mine".to_owned(),
            vec![r"PASS OLD \[<HOST>\]".to_owned()],
            Vec::new(),
        )];
        let mine = resolve_filter("mine", None, &user).expect("user filter");
        let mut out = Vec::new();
        test_filter(&log, &mine, false, false, &mut out).expect("runs");
        assert!(String::from_utf8_lossy(&out).contains("192.0.2.3"));
    }
}
