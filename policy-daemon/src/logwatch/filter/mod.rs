//! fail2ban-style filters: `failregex` lines with `<HOST>`, `<ADDR>`,
//! `<IP4>`, `<IP6>` placeholders, `ignoreregex`, timestamps, and import of
//! fail2ban filter files.
//!
//! A filter is compiled once. When every failregex is anchored at the
//! start of the line and holds literals (fail2ban's and the built-in ones
//! do), the literals found in a line name the regexes that may match, and
//! those are tried in order (see [`Gated`]). Otherwise, or when a regex's
//! guards or host refuse the line, a [`RegexSet`] finds which regexes
//! match in one pass, then those run again in order to capture the host.
//! Lookarounds (`(?!…)`, `(?=…)`), which the `regex` crate lacks, are
//! split into guard regexes checked after a match.

mod address;
mod gate;
mod host_span;
mod import;
#[cfg(test)]
mod tests;
mod timestamp;
mod translate;

use std::{fmt, net::IpAddr, path::PathBuf};

// Matching runs on bytes with ASCII classes: log lines are ASCII where it
// matters (addresses, keywords), and byte-sized DFA states make the set
// scan several times faster than Unicode classes would.
use aho_corasick::{AhoCorasick, Input, MatchKind};
use regex::bytes::RegexSet;
use regex_automata::util::pool::Pool;

/// A filter that cannot be built, naming the file, line or regex at fault.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("filter {filter}: failregex[{index}] {pattern:?}: {message}")]
    Regex {
        filter: String,
        index: usize,
        pattern: String,
        message: String,
    },
    #[error("filter {filter}: ignoreregex[{index}] {pattern:?}: {message}")]
    IgnoreRegex {
        filter: String,
        index: usize,
        pattern: String,
        message: String,
    },
    #[error("filter {filter}: no failregex")]
    Empty { filter: String },
    #[error("cannot read filter file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("filter file {path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("filter file {path}: {message}")]
    Interpolation { path: PathBuf, message: String },
}

/// A compiled filter.
#[derive(Debug)]
pub struct Filter {
    name: String,
    failregex: Vec<String>,
    set: RegexSet,
    rules: Vec<Rule>,
    ignore_set: Option<RegexSet>,
    ignore: Vec<Rule>,
    /// Literals one of which every matching line contains: a line with
    /// none of them is missed without running the set. `None` when some
    /// failregex has no literal it always needs.
    needles: Option<AhoCorasick>,
    /// Per needle, the failregexes whose needle may hide under an
    /// occurrence of it (see [`CandidateLines`]); `None` beyond 64.
    needle_rules: Option<Vec<u64>>,
    /// The fast path, when the failregexes allow it.
    gated: Option<std::sync::Arc<Gated>>,
    /// Scratch for [`Filter::check`], whichever thread calls it.
    scratch: ScratchPool,
    /// Lines are matched with a space before them (see
    /// [`Filter::with_date_separator`]).
    date_separator: bool,
}

/// What a filter made of a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A failregex matched: the host and the index of the regex.
    Matched { host: IpAddr, regex: usize },
    /// A failregex matched but an ignoreregex too.
    Ignored,
    /// No failregex matched (or the host was not an address).
    Missed,
}

impl Filter {
    /// Compiles `failregex` and `ignoreregex` (fail2ban syntax).
    pub fn new(
        name: &str,
        failregex: &[String],
        ignoreregex: &[String],
    ) -> Result<Self, FilterError> {
        if failregex.is_empty() {
            return Err(FilterError::Empty {
                filter: name.to_owned(),
            });
        }
        let mut mains = Vec::new();
        let mut rules = Vec::new();
        for (index, pattern) in failregex.iter().enumerate() {
            let (main, rule) = compile(pattern).map_err(|message| FilterError::Regex {
                filter: name.to_owned(),
                index,
                pattern: pattern.clone(),
                message,
            })?;
            mains.push(main);
            rules.push(rule);
        }
        let set = fast_set(&mains).map_err(|e| FilterError::Regex {
            filter: name.to_owned(),
            index: 0,
            pattern: String::new(),
            message: e.to_string(),
        })?;
        let mut ignore_mains = Vec::new();
        let mut ignore = Vec::new();
        for (index, pattern) in ignoreregex.iter().enumerate() {
            let (main, rule) = compile(pattern).map_err(|message| FilterError::IgnoreRegex {
                filter: name.to_owned(),
                index,
                pattern: pattern.clone(),
                message,
            })?;
            ignore_mains.push(main);
            ignore.push(rule);
        }
        let ignore_set = if ignore.is_empty() {
            None
        } else {
            Some(
                fast_set(&ignore_mains).map_err(|e| FilterError::IgnoreRegex {
                    filter: name.to_owned(),
                    index: 0,
                    pattern: String::new(),
                    message: e.to_string(),
                })?,
            )
        };
        // Leftmost-first lets the automaton use its SIMD (Teddy) searcher;
        // whether a line holds any literal at all does not depend on it.
        // Leading white space left out: the raw line a needle is looked
        // for in may separate its date from the text by a tab, or have no
        // date before a text that a fail2ban filter sees with a space in
        // front (see `with_date_separator`).
        let needles = choose_needles(&mains).and_then(|needles| {
            let needles: Vec<String> = needles.iter().map(|n| n.trim_start().to_owned()).collect();
            if needles.iter().any(String::is_empty) {
                return None;
            }
            let automaton = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(&needles)
                .ok()?;
            Some((automaton, needles))
        });
        // One needle per failregex, in order: needle `i` is failregex `i`'s.
        let needle_rules = needles.as_ref().and_then(|(_, needles)| {
            if needles.len() > 64 {
                return None;
            }
            let rules = needles
                .iter()
                .map(|a| {
                    needles
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| can_overlap(a.as_bytes(), b.as_bytes()))
                        .fold(0_u64, |bits, (rule, _)| bits | 1 << rule)
                })
                .collect();
            Some(rules)
        });
        let needles = needles.map(|(automaton, _)| automaton);
        let gated = Gated::new(&mains).map(std::sync::Arc::new);
        let for_pool = gated.clone();
        let scratch: ScratchPool = Pool::new(Box::new(move || Scratch {
            gated: for_pool.as_ref().map(|g| g.scratch()),
            spaced: String::new(),
        }));
        Ok(Self {
            name: name.to_owned(),
            failregex: failregex.to_vec(),
            set,
            rules,
            ignore_set,
            ignore,
            needles,
            needle_rules,
            gated,
            scratch,
            date_separator: false,
        })
    }

    /// The filter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The failregex lines as given.
    pub fn failregex(&self) -> &[String] {
        &self.failregex
    }

    /// The lines of `text` (newline-separated) a failregex might match,
    /// each with its byte offset and its newline: the lines holding one of
    /// the prefilter's literals, found in one pass over the whole text, or
    /// every line when the filter has no prefilter. A line left out is
    /// [`Verdict::Missed`] for sure, so a log is scanned without touching
    /// most of its lines one by one.
    ///
    /// Journald JSON lines are rebuilt before matching (the text a filter
    /// sees is not the raw line), so give only plain log text here.
    pub fn candidate_lines<'t>(
        &'t self,
        text: &'t [u8],
    ) -> impl Iterator<Item = (usize, &'t [u8])> + 't {
        self.candidates(text).map(|c| (c.offset, c.line))
    }

    /// [`Self::candidate_lines`], each line with the failregexes it may
    /// match, found by the same pass: give both to
    /// [`Self::check_candidate`].
    pub fn candidates<'t>(&'t self, text: &'t [u8]) -> CandidateLines<'t> {
        CandidateLines {
            needles: self.needles.as_ref(),
            needle_rules: self.needle_rules.as_deref(),
            text,
            at: 0,
        }
    }

    /// Scratch for [`Self::check_with`], one per thread that checks lines.
    pub fn scratch(&self) -> Scratch {
        Scratch {
            gated: self.gated.as_ref().map(|g| g.scratch()),
            spaced: String::new(),
        }
    }

    /// Checks the text of a line (timestamp already removed).
    pub fn check(&self, text: &str) -> Verdict {
        self.check_with(&mut self.scratch.get(), text)
    }

    /// [`Self::check`] with the caller's scratch (see [`Self::scratch`]):
    /// no shared state, for threads checking many lines.
    pub fn check_with(&self, scratch: &mut Scratch, text: &str) -> Verdict {
        self.check_candidate(scratch, text, RuleHint::ANY)
    }

    /// [`Self::check_with`] for the text of a line [`Self::candidates`]
    /// gave, with the failregexes it found the line may match: the same
    /// verdict, without looking for the gate's literals again.
    pub fn check_candidate(&self, scratch: &mut Scratch, text: &str, rules: RuleHint) -> Verdict {
        if self.date_separator {
            let mut spaced = std::mem::take(&mut scratch.spaced);
            spaced.clear();
            spaced.push(' ');
            spaced.push_str(text);
            let verdict = self.check_text(scratch, &spaced, rules);
            scratch.spaced = spaced;
            return verdict;
        }
        self.check_text(scratch, text, rules)
    }

    /// Matches lines as fail2ban does: fail2ban cuts the date out of a
    /// line and leaves the space after it, which some of its filters
    /// require (exim's `^%(pid)s `). For filters imported from fail2ban
    /// files; spamwall's own filters see the text without that space.
    #[must_use]
    pub fn with_date_separator(mut self) -> Self {
        self.date_separator = true;
        self
    }

    fn check_text(&self, scratch: &mut Scratch, text: &str, rules: RuleHint) -> Verdict {
        let text = text.as_bytes();
        let found = if let (Some(gated), Some(scratch)) = (&self.gated, &mut scratch.gated) {
            let gate = match rules.0 {
                Some(rules) => gated.search_among(scratch, text, rules),
                None => gated.search(scratch, text),
            };
            match gate {
                Gate::Missed => return Verdict::Missed,
                // The first that matches: done unless its host is not an
                // address or a guard refuses the line; then the others
                // are tried.
                Gate::Found(index, Some(host)) if self.rules[index].accepts(text) => {
                    Some((host, index))
                }
                Gate::Found(..) | Gate::Unsure => self.first_accepted(text),
            }
        } else {
            if let Some(needles) = &self.needles
                && !needles.is_match(text)
            {
                return Verdict::Missed;
            }
            self.first_accepted(text)
        };
        let Some((host, regex)) = found else {
            return Verdict::Missed;
        };
        if let Some(ignore_set) = &self.ignore_set {
            let ignored = ignore_set.matches(text);
            if ignored.iter().any(|i| self.ignore[i].accepts(text)) {
                return Verdict::Ignored;
            }
        }
        Verdict::Matched {
            host: canonical(host),
            regex,
        }
    }

    /// The first failregex, in order, that matches, passes its guards and
    /// captures an address, with that address.
    fn first_accepted(&self, text: &[u8]) -> Option<(IpAddr, usize)> {
        let matches = self.set.matches(text);
        if !matches.matched_any() {
            return None;
        }
        matches.iter().find_map(|index| {
            let rule = &self.rules[index];
            if !rule.accepts(text) {
                return None;
            }
            let captures = rule.regex.captures(text)?;
            let host = rule.hosts.iter().find_map(|&group| captures.get(group))?;
            let host = parse_host(host.as_bytes())?;
            Some((host, index))
        })
    }
}

/// The failregexes a line may match, as [`Filter::candidates`] found
/// them: a bit per failregex, `None` for any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleHint(Option<u64>);

impl RuleHint {
    /// Any failregex may match.
    pub const ANY: Self = Self(None);
}

/// A line [`Filter::candidates`] gave.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'t> {
    /// Where the line starts in the text.
    pub offset: usize,
    /// The line with its newline.
    pub line: &'t [u8],
    /// The failregexes it may match.
    pub rules: RuleHint,
}

/// The iterator of [`Filter::candidates`]. Its needles are searched
/// leftmost-first, one per failregex: an occurrence the search passes
/// over overlaps one it reports, so a line's failregexes are those whose
/// needle the reported ones may hide (each hides itself).
#[derive(Debug)]
pub struct CandidateLines<'t> {
    needles: Option<&'t AhoCorasick>,
    needle_rules: Option<&'t [u64]>,
    text: &'t [u8],
    /// Where the next search starts: always the start of a line.
    at: usize,
}

impl<'t> Iterator for CandidateLines<'t> {
    type Item = Candidate<'t>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.text.get(self.at..).filter(|r| !r.is_empty())?;
        let line_end = |start: usize| {
            memchr::memchr(b'\n', &self.text[start..]).map_or(self.text.len(), |i| start + i + 1)
        };
        let (start, end, rules) = match self.needles {
            None => (self.at, line_end(self.at), RuleHint::ANY),
            Some(needles) => {
                let hit = needles.find(rest)?;
                let start =
                    self.at + memchr::memrchr(b'\n', &rest[..hit.start()]).map_or(0, |i| i + 1);
                let end = line_end(start);
                let rules = self.needle_rules.and_then(|needle_rules| {
                    let mut rules = needle_rules[hit.pattern().as_usize()];
                    let mut at = self.at + hit.end();
                    // A needle holding a newline: any failregex.
                    if at > end {
                        return None;
                    }
                    while let Some(hit) = needles.find(Input::new(self.text).span(at..end)) {
                        rules |= needle_rules[hit.pattern().as_usize()];
                        at = hit.end();
                    }
                    Some(rules)
                });
                (start, end, RuleHint(rules))
            }
        };
        self.at = end;
        Some(Candidate {
            offset: start,
            line: &self.text[start..end],
            rules,
        })
    }
}

/// `::ffff:192.0.2.1` is `192.0.2.1`.
fn canonical(host: IpAddr) -> IpAddr {
    match host {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Matched { host, regex } => write!(f, "matched {host} (failregex {regex})"),
            Self::Ignored => f.write_str("ignored"),
            Self::Missed => f.write_str("missed"),
        }
    }
}

use address::parse_host;
pub use gate::Scratch;
use gate::{Gate, Gated, ScratchPool, can_overlap, choose_needles, fast_set};
pub use import::{
    ImportedFilter, fail2ban_files, import_fail2ban, import_fail2ban_text, split_params,
};
pub use timestamp::{
    JournalEntry, LogLine, StampCache, has_timestamp, parse_journal_entry, parse_line,
};
pub use translate::expand_placeholders;
use translate::{Rule, compile};
