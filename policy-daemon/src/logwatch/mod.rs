//! The log watcher: follows mail logs (files or the journal), applies
//! fail2ban-style filters and bans through the ban manager when a rule's
//! `maxretry` is reached within its `findtime`.

pub mod filter;
pub mod postfix;
pub mod rules;
pub mod source;
pub mod watcher;

pub use watcher::Watcher;

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

use filter::{Filter, FilterError, Verdict, parse_line};

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

/// Resolves `--filter`: `postfix` (built-in, with `mode`), a fail2ban
/// filter file path (optionally `PATH[mode=M]`), or one of `user` filters.
pub fn resolve_filter(
    spec: &str,
    mode: Option<&str>,
    user: &[(String, Vec<String>, Vec<String>)],
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
    let data = std::fs::read(path).map_err(read_error)?;
    let now = SystemTime::now();
    // Lines are independent: the file is cut at line boundaries into one
    // chunk per core, scanned in parallel, and the results joined in order.
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let chunks = split_lines(&data, threads);
    let mut first_line = 0_u64;
    let mut starts = Vec::with_capacity(chunks.len());
    for chunk in &chunks {
        starts.push(first_line);
        first_line += line_count(chunk);
    }
    let results: Vec<ChunkScan> = std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .iter()
            .zip(&starts)
            .map(|(chunk, &start)| {
                scope.spawn(move || scan_chunk(chunk, start, filter, now, json, print_missed))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let write_err = TestFilterError::Write;
    let (mut lines, mut matched, mut ignored) = (0_u64, 0_u64, 0_u64);
    let mut hits = vec![0_u64; filter.failregex().len()];
    let mut hosts: BTreeMap<IpAddr, u64> = BTreeMap::new();
    let mut missed_lines = String::new();
    for result in results {
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
        out.write_all(&result.json).map_err(write_err)?;
    }
    if json {
        return Ok(());
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

/// What one chunk of a log held.
#[derive(Debug, Default)]
struct ChunkScan {
    lines: u64,
    matched: u64,
    ignored: u64,
    hits: Vec<u64>,
    hosts: HashMap<IpAddr, u64>,
    missed_lines: String,
    /// The chunk's `--json` output, in line order.
    json: Vec<u8>,
}

fn scan_chunk(
    chunk: &[u8],
    first_line: u64,
    filter: &Filter,
    now: SystemTime,
    json: bool,
    print_missed: bool,
) -> ChunkScan {
    let mut scan = ChunkScan {
        hits: vec![0; filter.failregex().len()],
        ..ChunkScan::default()
    };
    for raw in chunk.split_inclusive(|&b| b == b'\n') {
        scan.lines += 1;
        let raw = String::from_utf8_lossy(raw);
        let line = parse_line(&raw, now);
        match filter.check(&line.text) {
            Verdict::Matched { host, regex } => {
                scan.matched += 1;
                scan.hits[regex] += 1;
                *scan.hosts.entry(host).or_default() += 1;
                if json {
                    let time = line
                        .time
                        .map(|t| humantime::format_rfc3339_micros(t).to_string());
                    let object = serde_json::json!({
                        "line": first_line + scan.lines, "host": host.to_string(), "time": time, "regex": regex,
                    });
                    let _ = writeln!(scan.json, "{object}");
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
    }
    scan
}

/// Cuts `data` into at most `parts` pieces, each ending with a whole line.
fn split_lines(data: &[u8], parts: usize) -> Vec<&[u8]> {
    let mut chunks = Vec::with_capacity(parts);
    let mut rest = data;
    for left in (1..=parts.max(1)).rev() {
        if rest.is_empty() {
            break;
        }
        let target = rest.len() / left;
        let cut = if left == 1 {
            rest.len()
        } else {
            rest[target..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| target + i + 1)
        };
        let (chunk, tail) = rest.split_at(cut);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
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
}

/// A ban rule: `maxretry` matches of `filter` within `findtime` ban the
/// host for `bantime` (escalated for repeat offenders).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub filter: String,
    pub mode: Option<String>,
    /// Default 10 minutes.
    pub findtime: Option<crate::config::Span>,
    /// Default 5.
    pub maxretry: Option<u32>,
    /// Default `ban.bantime`.
    pub bantime: Option<crate::config::BanTime>,
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
    pub fn user_filters(&self) -> Vec<(String, Vec<String>, Vec<String>)> {
        self.filter
            .iter()
            .map(|f| {
                let (mut fail, mut ignore) = (f.failregex.clone(), f.ignoreregex.clone());
                if let Some(file) = &f.file {
                    let (path, params) = filter::split_params(file.to_str().unwrap_or(""));
                    if let Ok(imported) = filter::import_fail2ban(Path::new(path), &params) {
                        fail.extend(imported.failregex);
                        ignore.extend(imported.ignoreregex);
                    }
                }
                (f.name.clone(), fail, ignore)
            })
            .collect()
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
        let user = self.user_filters();
        for (i, f) in self.filter.iter().enumerate() {
            if let Some(file) = &f.file {
                let (path, params) = filter::split_params(file.to_str().unwrap_or(""));
                if let Err(e) = filter::import_fail2ban(Path::new(path), &params) {
                    problems.push(format!("logwatch.filter[{i}].file: {e}"));
                }
            }
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
    fn lines_are_split_whole_and_counted() {
        let data = b"one\ntwo\nthree\nfour";
        for parts in 1..6 {
            let chunks = split_lines(data, parts);
            assert!(chunks.len() <= parts);
            assert_eq!(chunks.concat(), data, "{parts} parts");
            for chunk in &chunks[..chunks.len() - 1] {
                assert!(chunk.ends_with(b"\n"), "{parts} parts: {chunks:?}");
            }
            let total: u64 = chunks.iter().map(|c| line_count(c)).sum();
            assert_eq!(total, 4);
        }
        assert!(split_lines(b"", 4).is_empty());
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
