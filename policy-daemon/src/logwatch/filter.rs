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

use std::{
    borrow::Cow,
    collections::HashMap,
    fmt::{self, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::LazyLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

// Matching runs on bytes with ASCII classes: log lines are ASCII where it
// matters (addresses, keywords), and byte-sized DFA states make the set
// scan several times faster than Unicode classes would.
use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use regex_automata::{
    Anchored, Input, PatternID,
    nfa::thompson::{
        self,
        backtrack::{self, BoundedBacktracker},
    },
    util::{pool::Pool, primitives::NonMaxUsize, syntax},
};

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

const IP4: &str = r"(?:\d{1,3}\.){3}\d{1,3}";
const IP6: &str = r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?";

/// Expands the placeholders of one failregex; the first one captures `host`.
pub fn expand_placeholders(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 64);
    let mut rest = pattern;
    let mut captured = false;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let found = ["<HOST>", "<ADDR>", "<IP4>", "<IP6>"]
            .into_iter()
            .find(|tag| tail.starts_with(tag));
        let Some(tag) = found else {
            out.push('<');
            rest = &tail[1..];
            continue;
        };
        let body = match tag {
            "<IP4>" => IP4.to_owned(),
            "<IP6>" => IP6.to_owned(),
            _ => format!("(?:{IP4}|{IP6})"),
        };
        let mapped = if tag == "<HOST>" {
            r"(?:::f{4,6}:)?"
        } else {
            ""
        };
        if captured {
            let _ = write!(out, "{mapped}(?:{body})");
        } else {
            let _ = write!(out, "{mapped}(?P<host>{body})");
            captured = true;
        }
        rest = &tail[tag.len()..];
    }
    out.push_str(rest);
    out
}

/// One failregex: the main regex and its lookaround guards.
#[derive(Debug)]
struct Rule {
    regex: Regex,
    /// `(trigger, required)`: see [`split_lookarounds`].
    guards: Vec<(Regex, Option<Regex>)>,
}

impl Rule {
    fn accepts(&self, text: &[u8]) -> bool {
        self.guards.iter().all(|(trigger, required)| {
            !trigger.is_match(text) || required.as_ref().is_some_and(|r| r.is_match(text))
        })
    }
}

/// Splits lookarounds out of a Python regex: the pattern without them, and
/// per lookaround a guard `(trigger, required)`: the line is refused when
/// `trigger` matches and `required` is `None` (`(?!…)`) or does not match
/// (`(?=…)`). Triggers follow only the branch the lookaround sits in.
fn split_lookarounds(pattern: &str) -> (String, Vec<(String, Option<String>)>) {
    // Open groups in `main`: (start, header end, start of current branch).
    let mut stack: Vec<(usize, usize, usize)> = vec![(0, 0, 0)];
    let mut main = String::with_capacity(pattern.len());
    let mut guards = Vec::new();
    let mut in_class = false;
    let mut i = 0;
    let bytes = pattern.as_bytes();
    while i < pattern.len() {
        let rest = &pattern[i..];
        let Some(c) = rest.chars().next() else { break };
        if c == '\\' {
            let next = rest[1..].chars().next().map_or(0, char::len_utf8);
            main.push_str(&rest[..=next]);
            i += 1 + next;
            continue;
        }
        if in_class {
            in_class = c != ']';
            main.push(c);
            i += c.len_utf8();
            continue;
        }
        let positive = rest.starts_with("(?=");
        if positive || rest.starts_with("(?!") {
            let mut depth = 0usize;
            let mut j = i;
            let mut class = false;
            while j < bytes.len() {
                match bytes[j] {
                    b'\\' => j += 1,
                    b'[' if !class => class = true,
                    b']' if class => class = false,
                    b'(' if !class => depth += 1,
                    b')' if !class => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            let body = &pattern[i + 3..j.min(pattern.len())];
            let branch_path = |suffix: &str| {
                let mut p = String::new();
                for (level, &(open, header, branch)) in stack.iter().enumerate() {
                    let until = stack.get(level + 1).map_or(main.len(), |g| g.0);
                    p.push_str(&main[open..header]);
                    p.push_str(&main[branch..until]);
                }
                p.push_str(suffix);
                for _ in 1..stack.len() {
                    p.push(')');
                }
                p
            };
            let with_body = branch_path(&format!("(?:{body})"));
            if positive {
                guards.push((branch_path(""), Some(with_body)));
            } else {
                guards.push((with_body, None));
            }
            i = j + 1;
            continue;
        }
        match c {
            '[' => in_class = true,
            '(' => {
                let open = main.len();
                let mut header = open + 1;
                // `(?:`, `(?i:`, `(?P<name>`: the header ends before any
                // other parenthesis, or this is no group with a header.
                if rest[1..].starts_with('?')
                    && let Some(end) = rest[2..].find([':', '>', '(', ')'])
                    && matches!(rest.as_bytes()[2 + end], b':' | b'>')
                {
                    header = open + 2 + end + 1;
                }
                stack.push((open, header, header));
            }
            ')' if stack.len() > 1 => {
                stack.pop();
            }
            '|' => {
                if let Some(top) = stack.last_mut() {
                    top.2 = main.len() + 1;
                }
            }
            _ => {}
        }
        main.push(c);
        i += c.len_utf8();
    }
    (main, guards)
}

/// Python regex syntax the `regex` crate reads differently: a `[` inside a
/// character class (`[^[]`) is literal in Python, a nested class here.
fn python_to_rust(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    let mut class_start = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                if let Some(next) = chars.next() {
                    out.push(next);
                }
                class_start = false;
                continue;
            }
            '[' if in_class => out.push_str("\\["),
            '[' => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                class_start = true;
                continue;
            }
            ']' if in_class && !class_start => {
                in_class = false;
                out.push(']');
            }
            ']' if in_class => out.push_str("\\]"),
            '&' | '~' if in_class => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
        class_start = false;
    }
    out
}

fn compile(pattern: &str) -> Result<(String, Rule), String> {
    let expanded = expand_placeholders(&python_to_rust(pattern));
    let (main, guards) = split_lookarounds(&expanded);
    let regex = ascii_regex(&main)?;
    let guards = guards
        .into_iter()
        .map(|(trigger, required)| {
            let trigger = ascii_regex(&trigger)?;
            let required = required.map(|r| ascii_regex(&r)).transpose()?;
            Ok::<_, String>((trigger, required))
        })
        .collect::<Result<_, _>>()?;
    Ok((main, Rule { regex, guards }))
}

/// The lazy DFA runs a set over a line in one pass, but with the default
/// 2 MiB cache the Unicode classes of a dozen postfix regexes do not fit
/// and matching falls back to the much slower `PikeVM`.
const SET_DFA_CACHE: usize = 64 << 20;

fn fast_set(patterns: &[String]) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns)
        .unicode(false)
        .dfa_size_limit(SET_DFA_CACHE)
        .build()
}

/// The fast path, for filters whose failregexes are all anchored at the
/// start of the line and each hold literals every match of it contains
/// (fail2ban's and the built-in ones do): the literals found in a line
/// name the failregexes that may match it, and those are tried in order,
/// each by a backtracker over that regex alone, which also captures the
/// host. A line holding no failregex's literals costs one pass of a small
/// automaton.
#[derive(Debug)]
struct Gated {
    /// Literals failregexes require, found leftmost-first (SIMD).
    literals: AhoCorasick,
    /// Per literal: the literals an occurrence of it may hide from a
    /// leftmost-first search (those that can share a byte with it,
    /// itself included), all taken as present when it is found.
    overlapping: Vec<u64>,
    rules: Vec<GatedRule>,
}

#[derive(Debug)]
struct GatedRule {
    /// The literals a line must hold, as bits by their id in `literals`.
    needs: u64,
    backtracker: BoundedBacktracker,
    /// The slots of the `host` group.
    host: Option<(usize, usize)>,
}

/// What [`Gated::search`] made of a line.
enum Gate {
    /// No failregex matches.
    Missed,
    /// The first failregex that matches, and its host if that parsed.
    Found(usize, Option<IpAddr>),
    /// Too long a line for the backtracker: ask the general path.
    Unsure,
}

/// Whether occurrences of `a` and `b` in a text can share a byte.
fn can_overlap(a: &[u8], b: &[u8]) -> bool {
    let contains = |outer: &[u8], inner: &[u8]| memchr::memmem::find(outer, inner).is_some();
    let tail_starts =
        |x: &[u8], y: &[u8]| (1..x.len().min(y.len())).any(|k| y.starts_with(&x[x.len() - k..]));
    contains(a, b) || contains(b, a) || tail_starts(a, b) || tail_starts(b, a)
}

/// A failregex's literals for gating: trimmed to letters and digits at
/// both ends (a space or colon at an end would let it overlap most of the
/// others), at least three bytes long.
fn gating_literals(pattern: &str) -> Option<Vec<String>> {
    Some(
        required_literals(pattern)?
            .iter()
            .map(|l| l.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
            .filter(|l| l.len() >= 3)
            .map(str::to_owned)
            .collect(),
    )
}

impl Gated {
    fn new(patterns: &[String]) -> Option<Self> {
        let syntax = syntax::Config::new().unicode(false).utf8(false);
        let nfa = thompson::Config::new().utf8(false);
        let per_pattern: Vec<Vec<String>> = patterns
            .iter()
            .map(|p| gating_literals(p))
            .collect::<Option<_>>()?;
        // A literal every failregex needs tells them apart from nothing.
        let shared = |literal: &String| {
            patterns.len() > 1 && per_pattern.iter().all(|l| l.contains(literal))
        };
        let mut literals: Vec<String> = Vec::new();
        let mut rules = Vec::with_capacity(patterns.len());
        for (pattern, wanted) in patterns.iter().zip(&per_pattern) {
            let mut needs = 0_u64;
            for literal in wanted.iter().filter(|l| !shared(l)) {
                let id = literals
                    .iter()
                    .position(|l| l == literal)
                    .unwrap_or_else(|| {
                        literals.push(literal.clone());
                        literals.len() - 1
                    });
                needs |= 1_u64.checked_shl(u32::try_from(id).ok()?)?;
            }
            let backtracker = BoundedBacktracker::builder()
                .syntax(syntax)
                .thompson(nfa.clone())
                .build(pattern)
                .ok()?;
            if !backtracker.get_nfa().is_always_start_anchored() {
                return None;
            }
            let host = backtracker
                .get_nfa()
                .group_info()
                .to_index(PatternID::ZERO, "host")
                .map(|group| (group * 2, group * 2 + 1));
            rules.push(GatedRule {
                needs,
                backtracker,
                host,
            });
        }
        let overlapping = literals
            .iter()
            .map(|a| {
                literals
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| can_overlap(a.as_bytes(), b.as_bytes()))
                    .fold(0_u64, |bits, (id, _)| bits | 1 << id)
            })
            .collect();
        let literals = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(&literals)
            .ok()?;
        Some(Self {
            literals,
            overlapping,
            rules,
        })
    }

    fn scratch(&self) -> GatedScratch {
        GatedScratch {
            rules: self
                .rules
                .iter()
                .map(|rule| {
                    let slots = rule.backtracker.get_nfa().group_info().slot_len();
                    (rule.backtracker.create_cache(), vec![None; slots])
                })
                .collect(),
        }
    }

    fn search(&self, scratch: &mut GatedScratch, text: &[u8]) -> Gate {
        // Every occurrence a leftmost-first search passes over overlaps
        // one it reports: found, or taken as found.
        let mut found = 0_u64;
        for literal in self.literals.find_iter(text) {
            found |= self.overlapping[literal.pattern().as_usize()];
        }
        let input = Input::new(text).anchored(Anchored::Yes);
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.needs & !found != 0 {
                continue;
            }
            let (cache, slots) = &mut scratch.rules[index];
            match rule.backtracker.try_search_slots(cache, &input, slots) {
                Ok(None) => {}
                Ok(Some(_)) => {
                    let host = rule.host.and_then(|(start, end)| {
                        parse_host(&text[slots[start]?.get()..slots[end]?.get()])
                    });
                    return Gate::Found(index, host);
                }
                Err(_) => return Gate::Unsure,
            }
        }
        Gate::Missed
    }
}

/// [`Gated`]'s per-regex backtracker caches and slots.
#[derive(Debug)]
struct GatedScratch {
    rules: Vec<(backtrack::Cache, Vec<Option<NonMaxUsize>>)>,
}

/// Per-thread state for [`Filter::check_with`].
#[derive(Debug)]
pub struct Scratch {
    gated: Option<GatedScratch>,
}

impl Scratch {
    /// Scratch that takes the general path only: [`Filter::check_with`]
    /// gives the same verdict with it as with [`Filter::scratch`], which
    /// the tests and the `failregex` fuzz target check.
    #[cfg(any(test, fuzzing))]
    pub fn general() -> Self {
        Self { gated: None }
    }
}

type ScratchPool = Pool<Scratch, Box<dyn Fn() -> Scratch + Send + Sync>>;

/// One literal per pattern for the prefilter: the longest required literal
/// that not every pattern shares (a common one, such as the `postfix`
/// of the syslog prefix, is in every line and filters nothing).
fn choose_needles(patterns: &[String]) -> Option<Vec<String>> {
    let literals: Vec<Vec<String>> = patterns
        .iter()
        .map(|p| required_literals(p))
        .collect::<Option<_>>()?;
    let shared =
        |literal: &String| patterns.len() > 1 && literals.iter().all(|l| l.contains(literal));
    literals
        .iter()
        .map(|candidates| {
            candidates
                .iter()
                .filter(|literal| !shared(literal))
                .max_by_key(|literal| literal.len())
                .cloned()
        })
        .collect()
}

/// The literals every match of `pattern` contains: runs of plain
/// characters outside any group, not made optional by a quantifier, in a
/// pattern without top-level alternation, at least three characters long.
/// `None` when the pattern changes flags or alternates at the top level.
fn required_literals(pattern: &str) -> Option<Vec<String>> {
    let mut found: Vec<String> = Vec::new();
    let mut run = String::new();
    let mut depth = 0_u32;
    let mut in_class = false;
    let mut chars = pattern.chars().peekable();
    let finish = |run: &mut String, found: &mut Vec<String>| {
        if run.len() >= 3 {
            found.push(std::mem::take(run));
        }
        run.clear();
    };
    while let Some(c) = chars.next() {
        if in_class {
            match c {
                '\\' => {
                    chars.next();
                }
                ']' => in_class = false,
                _ => {}
            }
            continue;
        }
        let literal = match c {
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() || e == ' ' => Some(e),
                _ => None,
            },
            '(' => {
                if chars.peek() == Some(&'?') {
                    // `(?i)` changes the flags of everything after it:
                    // give up. `(?i:…)`, `(?:…)`, `(?P<n>…)` are groups.
                    let mut ahead = chars.clone();
                    ahead.next();
                    let mut flags = ahead.skip_while(|f| f.is_ascii_alphabetic() || *f == '-');
                    if flags.next() == Some(')') {
                        return None;
                    }
                }
                depth += 1;
                None
            }
            ')' => {
                depth = depth.saturating_sub(1);
                None
            }
            '[' => {
                in_class = true;
                None
            }
            '|' if depth == 0 => return None,
            // U+FFFD stands for undecodable bytes: the raw line a literal
            // is looked for in holds other bytes there.
            '.' | '^' | '$' | '|' | '?' | '*' | '+' | '{' | '}' | '\u{FFFD}' => None,
            c => Some(c),
        };
        match literal {
            Some(l) if depth == 0 => match chars.peek() {
                // Optional or counted: the character may be absent.
                Some('?' | '*' | '{') => finish(&mut run, &mut found),
                // Repeated: present, but what follows may not be adjacent.
                Some('+') => {
                    run.push(l);
                    finish(&mut run, &mut found);
                }
                _ => run.push(l),
            },
            _ => finish(&mut run, &mut found),
        }
    }
    finish(&mut run, &mut found);
    Some(found)
}

fn ascii_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .build()
        .map_err(|e| e.to_string())
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
    /// The fast path, when the failregexes allow it.
    gated: Option<std::sync::Arc<Gated>>,
    /// Scratch for [`Filter::check`], whichever thread calls it.
    scratch: ScratchPool,
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
        let needles = choose_needles(&mains).and_then(|needles| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(needles)
                .ok()
        });
        let gated = Gated::new(&mains).map(std::sync::Arc::new);
        let for_pool = gated.clone();
        let scratch: ScratchPool = Pool::new(Box::new(move || Scratch {
            gated: for_pool.as_ref().map(|g| g.scratch()),
        }));
        Ok(Self {
            name: name.to_owned(),
            failregex: failregex.to_vec(),
            set,
            rules,
            ignore_set,
            ignore,
            needles,
            gated,
            scratch,
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
    pub fn candidate_lines<'t>(&'t self, text: &'t [u8]) -> CandidateLines<'t> {
        CandidateLines {
            needles: self.needles.as_ref(),
            text,
            at: 0,
        }
    }

    /// Scratch for [`Self::check_with`], one per thread that checks lines.
    pub fn scratch(&self) -> Scratch {
        Scratch {
            gated: self.gated.as_ref().map(|g| g.scratch()),
        }
    }

    /// Checks the text of a line (timestamp already removed).
    pub fn check(&self, text: &str) -> Verdict {
        self.check_with(&mut self.scratch.get(), text)
    }

    /// [`Self::check`] with the caller's scratch (see [`Self::scratch`]):
    /// no shared state, for threads checking many lines.
    pub fn check_with(&self, scratch: &mut Scratch, text: &str) -> Verdict {
        let text = text.as_bytes();
        let found = if let (Some(gated), Some(scratch)) = (&self.gated, &mut scratch.gated) {
            match gated.search(scratch, text) {
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
            let host = parse_host(rule.regex.captures(text)?.name("host")?.as_bytes())?;
            Some((host, index))
        })
    }
}

fn parse_host(text: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// The iterator of [`Filter::candidate_lines`].
#[derive(Debug)]
pub struct CandidateLines<'t> {
    needles: Option<&'t AhoCorasick>,
    text: &'t [u8],
    /// Where the next search starts: always the start of a line.
    at: usize,
}

impl<'t> Iterator for CandidateLines<'t> {
    type Item = (usize, &'t [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.text.get(self.at..).filter(|r| !r.is_empty())?;
        let start = match self.needles {
            None => self.at,
            Some(needles) => {
                let hit = needles.find(rest)?;
                self.at + memchr::memrchr(b'\n', &rest[..hit.start()]).map_or(0, |i| i + 1)
            }
        };
        let end =
            memchr::memchr(b'\n', &self.text[start..]).map_or(self.text.len(), |i| start + i + 1);
        self.at = end;
        Some((start, &self.text[start..end]))
    }
}

/// `::ffff:192.0.2.1` is `192.0.2.1`.
fn canonical(host: IpAddr) -> IpAddr {
    match host {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// A log line split into its time and the text filters see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub time: Option<SystemTime>,
    pub text: Cow<'a, str>,
}

/// Splits a line: journald JSON (`{"__REALTIME_TIMESTAMP":…}`) becomes
/// `IDENT[PID]: MESSAGE`; an RFC 3339 or classic syslog timestamp at the
/// start is removed (as fail2ban does before applying failregex).
pub fn parse_line(line: &str, now: SystemTime) -> LogLine<'_> {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.starts_with('{')
        && let Some(parsed) = parse_journal_json(line)
    {
        return parsed;
    }
    if let Some((time, rest)) = parse_rfc3339_prefix(line) {
        return LogLine {
            time: Some(time),
            text: Cow::Borrowed(rest),
        };
    }
    if let Some((time, rest)) = parse_syslog_prefix(line, now) {
        return LogLine {
            time: Some(time),
            text: Cow::Borrowed(rest),
        };
    }
    LogLine {
        time: None,
        text: Cow::Borrowed(line),
    }
}

fn parse_journal_json(line: &str) -> Option<LogLine<'static>> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let message = match &value["MESSAGE"] {
        serde_json::Value::String(s) => s.clone(),
        // Non-UTF-8 messages come as byte arrays.
        serde_json::Value::Array(bytes) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => return None,
    };
    let micros: Option<u64> = value["__REALTIME_TIMESTAMP"]
        .as_str()
        .and_then(|s| s.parse().ok());
    let ident = value["SYSLOG_IDENTIFIER"].as_str().unwrap_or("");
    let text = match (ident, value["_PID"].as_str()) {
        ("", _) => message,
        (ident, Some(pid)) => format!("{ident}[{pid}]: {message}"),
        (ident, None) => format!("{ident}: {message}"),
    };
    Some(LogLine {
        time: micros.map(|m| UNIX_EPOCH + Duration::from_micros(m)),
        text: Cow::Owned(text),
    })
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A time of day as clocks show it (60 seconds: a leap second). Out of
/// range fields would carry into the next day, or days later.
fn clock_valid(hour: u32, minute: u32, second: u32) -> bool {
    hour <= 23 && minute <= 59 && second <= 60
}

fn from_unix(secs: i64, nanos: u32) -> Option<SystemTime> {
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// `2026-11-22T00:52:44.123456+01:00 rest` (also with a space or `Z`).
fn parse_rfc3339_prefix(line: &str) -> Option<(SystemTime, &str)> {
    let b = line.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    let year = i64::from(digits(line.get(0..4)?)?);
    let month = digits(line.get(5..7)?)?;
    let day = digits(line.get(8..10)?)?;
    let hour = digits(line.get(11..13)?)?;
    let minute = digits(line.get(14..16)?)?;
    let second = digits(line.get(17..19)?)?;
    if b[13] != b':'
        || b[16] != b':'
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !clock_valid(hour, minute, second)
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &line[start..i];
        let frac9: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = frac9.parse().ok()?;
    }
    let mut offset = 0i64;
    match b.get(i) {
        Some(b'Z' | b'z') => i += 1,
        Some(sign @ (b'+' | b'-')) => {
            let hh = i64::from(digits(line.get(i + 1..i + 3)?)?);
            let (mm, len) = if b.get(i + 3) == Some(&b':') {
                (i64::from(digits(line.get(i + 4..i + 6)?)?), 6)
            } else {
                (i64::from(digits(line.get(i + 3..i + 5)?)?), 5)
            };
            if hh > 23 || mm > 59 {
                return None;
            }
            offset = (hh * 60 + mm) * 60;
            if *sign == b'-' {
                offset = -offset;
            }
            i += len;
        }
        _ => return None,
    }
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second)
        - offset;
    let rest = line.get(i..)?.trim_start();
    Some((from_unix(secs, nanos)?, rest))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Nov 22 00:52:44 rest` in local time; the year is the current one, or
/// the previous one when that would put the line in the future.
fn parse_syslog_prefix(line: &str, now: SystemTime) -> Option<(SystemTime, &str)> {
    let month = MONTHS.iter().position(|m| line.starts_with(m))?;
    let rest = line.get(3..)?.strip_prefix(' ')?.trim_start_matches(' ');
    let (day, rest) = rest.split_once(' ')?;
    let day = digits(day)?;
    let clock = rest.get(..8)?;
    let cb = clock.as_bytes();
    if cb[2] != b':' || cb[5] != b':' {
        return None;
    }
    let (hour, minute, second) = (
        digits(&clock[0..2])?,
        digits(&clock[3..5])?,
        digits(&clock[6..8])?,
    );
    if !(1..=31).contains(&day) || !clock_valid(hour, minute, second) {
        return None;
    }
    let mut rest = &rest[8..];
    let mut nanos = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let end = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        let frac9: String = frac[..end]
            .chars()
            .chain(std::iter::repeat('0'))
            .take(9)
            .collect();
        nanos = frac9.parse().ok()?;
        rest = &frac[end..];
    }
    let month = u32::try_from(month).ok()? + 1;
    let now_secs = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    let offset = local_offset(now_secs);
    let secs = syslog_secs(month, day, (hour, minute, second), now_secs, offset);
    Some((from_unix(secs, nanos)?, rest.trim_start()))
}

/// Unix seconds of a syslog stamp (no year, local time) read at `now_secs`
/// in a zone `offset` seconds east of UTC: in the current local year, or
/// the one before when that would put it a day or more ahead (December
/// lines read in January).
fn syslog_secs(
    month: u32,
    day: u32,
    (hour, minute, second): (u32, u32, u32),
    now_secs: i64,
    offset: i64,
) -> i64 {
    let local = |year: i64| {
        days_from_civil(year, month, day) * 86_400
            + i64::from(hour) * 3600
            + i64::from(minute) * 60
            + i64::from(second)
    };
    let year = current_year(now_secs + offset);
    let secs = local(year) - offset;
    if secs >= now_secs + 86_400 {
        local(year - 1) - offset
    } else {
        secs
    }
}

fn current_year(now_secs: i64) -> i64 {
    // Civil-from-days, year only.
    let z = now_secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month_is_jan_or_feb = mp >= 10;
    yoe + era * 400 + i64::from(month_is_jan_or_feb)
}

/// The local time zone's offset from UTC in seconds at `now`.
fn local_offset(now_secs: i64) -> i64 {
    // Every line of a scan is read against the same `now`: remember the
    // last answer instead of asking libc (and its time-zone lock) per line.
    thread_local! {
        static LAST: std::cell::Cell<Option<(i64, i64)>> = const { std::cell::Cell::new(None) };
    }
    if let Some((at, offset)) = LAST.get()
        && at == now_secs
    {
        return offset;
    }
    let offset = local_offset_uncached(now_secs);
    LAST.set(Some((now_secs, offset)));
    offset
}

fn local_offset_uncached(now_secs: i64) -> i64 {
    let time: libc::time_t = now_secs;
    // SAFETY: `tm` is plain data, zero-initialised; localtime_r writes into
    // it and reads only `time`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    let result = unsafe { libc::localtime_r(&raw const time, &raw mut tm) };
    if result.is_null() { 0 } else { tm.tm_gmtoff }
}

/// A fail2ban filter file's `failregex` and `ignoreregex`, interpolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedFilter {
    pub failregex: Vec<String>,
    pub ignoreregex: Vec<String>,
}

type Sections = Vec<(String, Vec<(String, String)>)>;

fn parse_ini(path: &Path, text: &str) -> Result<Sections, FilterError> {
    let mut sections: Sections = Vec::new();
    let mut last_key: Option<(usize, usize)> = None;
    for (number, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if raw.starts_with([' ', '\t']) && !trimmed.is_empty() {
            // Continuation of the previous value.
            if let Some((s, k)) = last_key {
                let value = &mut sections[s].1[k].1;
                if !value.is_empty() {
                    value.push('\n');
                }
                value.push_str(trimmed);
                continue;
            }
        }
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            if trimmed.is_empty() {
                last_key = None;
            }
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            sections.push((name.trim().to_owned(), Vec::new()));
            last_key = None;
            continue;
        }
        let Some(split) = trimmed.find(['=', ':']) else {
            return Err(FilterError::Syntax {
                path: path.to_owned(),
                line: number + 1,
                message: format!("expected `key = value`, found {trimmed:?}"),
            });
        };
        let Some(section) = sections.len().checked_sub(1) else {
            return Err(FilterError::Syntax {
                path: path.to_owned(),
                line: number + 1,
                message: "key outside any [section]".to_owned(),
            });
        };
        let key = trimmed[..split].trim().to_owned();
        let value = trimmed[split + 1..].trim().to_owned();
        let entries = &mut sections[section].1;
        if let Some(k) = entries.iter().position(|(name, _)| *name == key) {
            entries[k].1 = value;
            last_key = Some((section, k));
        } else {
            entries.push((key, value));
            last_key = Some((section, entries.len() - 1));
        }
    }
    Ok(sections)
}

/// Reads a fail2ban filter file (`[INCLUDES] before`/`after` from the same
/// directory, `[DEFAULT]`, `[Definition]`, `[Init]`, `lt_*` sections),
/// applies `params` (e.g. `mode=aggressive`) and interpolates `%(name)s`
/// and `<name>` references. A `prefregex` is folded into each failregex.
pub fn import_fail2ban(
    path: &Path,
    params: &[(String, String)],
) -> Result<ImportedFilter, FilterError> {
    import_fail2ban_text(path, &read_filter_file(path)?, params)
}

/// [`import_fail2ban`] of `text`, the contents of the filter file at
/// `path`: only its includes are read, from `path`'s directory. Any text
/// gives the filter or an error naming the file at fault, never a panic.
pub fn import_fail2ban_text(
    path: &Path,
    text: &str,
    params: &[(String, String)],
) -> Result<ImportedFilter, FilterError> {
    let mut vars: HashMap<String, String> = HashMap::new();
    load_text(path, text, &mut vars, 0)?;
    for (key, value) in params {
        vars.insert(key.clone(), value.clone());
    }
    let interpolation = |message: String| FilterError::Interpolation {
        path: path.to_owned(),
        message,
    };
    let get = |key: &str| -> Result<String, FilterError> {
        let raw = vars.get(key).cloned().unwrap_or_default();
        interpolate(&raw, &vars).map_err(interpolation)
    };
    let prefregex = get("prefregex")?;
    let mut failregex = Vec::new();
    for line in get("failregex")?.lines().filter(|l| !l.trim().is_empty()) {
        failregex.push(fold_prefregex(&prefregex, line.trim()));
    }
    let ignoreregex = get("ignoreregex")?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| fold_prefregex("", l))
        .collect();
    Ok(ImportedFilter {
        failregex,
        ignoreregex,
    })
}

// The import's own regexes, compiled once: compiling them took most of
// an import's time.
static F_TAG: LazyLock<Result<regex::Regex, regex::Error>> =
    LazyLock::new(|| regex::Regex::new(r"</?F-[A-Z0-9_-]+>"));
static PERCENT_REFERENCE: LazyLock<Result<regex::Regex, regex::Error>> =
    LazyLock::new(|| regex::Regex::new(r"%\(([^)]+)\)s"));
static TAG_REFERENCE: LazyLock<Result<regex::Regex, regex::Error>> =
    LazyLock::new(|| regex::Regex::new(r"<([^<>\s]+)>"));

/// `prefregex` `…<F-CONTENT>.+</F-CONTENT>$` around `failregex`.
fn fold_prefregex(prefregex: &str, failregex: &str) -> String {
    let strip_tags = |s: &str| {
        F_TAG
            .as_ref()
            .map_or_else(|_| s.to_owned(), |tag| tag.replace_all(s, "").into_owned())
    };
    if prefregex.is_empty() {
        return strip_tags(failregex);
    }
    let inner = failregex.strip_prefix('^').map_or_else(
        || format!(".*?(?:{})", strip_tags(failregex)),
        |anchored| format!("(?:{})", strip_tags(anchored)),
    );
    let Some(start) = prefregex.find("<F-CONTENT>") else {
        return strip_tags(&format!("{prefregex}{inner}"));
    };
    let end = prefregex
        .find("</F-CONTENT>")
        .map_or(prefregex.len(), |e| e + "</F-CONTENT>".len());
    let after = prefregex[end..]
        .strip_prefix('$')
        .unwrap_or(&prefregex[end..]);
    strip_tags(&format!("{}{inner}{after}", &prefregex[..start]))
}

fn read_filter_file(path: &Path) -> Result<String, FilterError> {
    std::fs::read_to_string(path).map_err(|source| FilterError::Read {
        path: path.to_owned(),
        source,
    })
}

fn load_file(
    path: &Path,
    vars: &mut HashMap<String, String>,
    depth: usize,
) -> Result<(), FilterError> {
    load_text(path, &read_filter_file(path)?, vars, depth)
}

/// Adds the variables of the filter file `path`, whose contents are `text`,
/// and of its includes to `vars`.
fn load_text(
    path: &Path,
    text: &str,
    vars: &mut HashMap<String, String>,
    depth: usize,
) -> Result<(), FilterError> {
    if depth > 8 {
        return Err(FilterError::Interpolation {
            path: path.to_owned(),
            message: "includes nested too deep".to_owned(),
        });
    }
    let sections = parse_ini(path, text)?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let includes = |key: &str| -> Vec<PathBuf> {
        sections
            .iter()
            .filter(|(name, _)| name == "INCLUDES")
            .flat_map(|(_, entries)| entries.iter())
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| {
                v.split_whitespace()
                    .map(|f| dir.join(f))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for before in includes("before") {
        load_file(&before, vars, depth + 1)?;
    }
    // DEFAULT first, then the named sections, so Definition overrides.
    for wanted in ["DEFAULT", "Init", "Definition"] {
        for (name, entries) in &sections {
            if name == wanted {
                for (key, value) in entries {
                    vars.insert(key.clone(), value.clone());
                }
            }
        }
    }
    for (name, entries) in &sections {
        if !matches!(
            name.as_str(),
            "DEFAULT" | "Init" | "Definition" | "INCLUDES"
        ) {
            for (key, value) in entries {
                vars.insert(format!("{name}/{key}"), value.clone());
            }
        }
    }
    vars.entry("logtype".to_owned())
        .or_insert_with(|| "file".to_owned());
    for after in includes("after") {
        if after.exists() {
            load_file(&after, vars, depth + 1)?;
        }
    }
    Ok(())
}

/// Longest a value may grow to as its references are substituted. The
/// largest of Debian's filters, sshd in aggressive mode, needs 12 KB; a
/// value that refers to itself twice doubles with every round.
const MAX_INTERPOLATED: usize = 256 * 1024;

fn interpolate(value: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let percent = PERCENT_REFERENCE.as_ref().map_err(ToString::to_string)?;
    let tag = TAG_REFERENCE.as_ref().map_err(ToString::to_string)?;
    let mut current = value.to_owned();
    for _ in 0..64 {
        let mut changed = false;
        let mut too_long = false;
        // What the round's result can grow to, checked before it is built.
        let mut size = current.len();
        let mut substitute = |c: &regex::Captures<'_>| match vars.get(&c[1]) {
            Some(v) if size + v.len() <= MAX_INTERPOLATED => {
                changed = true;
                size += v.len();
                v.clone()
            }
            Some(_) => {
                too_long = true;
                c[0].to_owned()
            }
            None => c[0].to_owned(),
        };
        let next = percent.replace_all(&current, &mut substitute);
        let next = tag.replace_all(&next, &mut substitute).into_owned();
        if too_long {
            return Err(format!(
                "interpolation of {value:?} grows past {MAX_INTERPOLATED} bytes (a value that refers to itself?)"
            ));
        }
        current = next;
        if !changed {
            return Ok(current);
        }
    }
    Err(format!("interpolation of {value:?} does not end (a loop?)"))
}

/// A filter reference as fail2ban writes it: `postfix[mode=aggressive]`.
pub fn split_params(spec: &str) -> (&str, Vec<(String, String)>) {
    let Some(open) = spec.find('[') else {
        return (spec, Vec::new());
    };
    let inner = spec[open + 1..].trim_end_matches(']');
    let params = inner
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect();
    (&spec[..open], params)
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

#[cfg(test)]
mod tests {
    #[test]
    fn required_literals_are_only_what_every_match_contains() {
        let lit = |pattern: &str| {
            required_literals(pattern).and_then(|found| found.into_iter().max_by_key(String::len))
        };
        assert_eq!(
            lit(r"^(?:\S+\s+)?postfix/\w+: DNSBL rank \d+ for \[(?P<host>[^]]+)\]").as_deref(),
            Some(": DNSBL rank ")
        );
        assert_eq!(
            lit(r"^x: (?i:LOGIN|PLAIN) authentication failed:").as_deref(),
            Some(" authentication failed:")
        );
        assert_eq!(
            lit(r"lost connection after \S+ from").as_deref(),
            Some("lost connection after ")
        );
        assert_eq!(lit(r"abcd?ef").as_deref(), Some("abc"), "d is optional");
        assert_eq!(lit(r"abcde+fgh").as_deref(), Some("abcde"), "e repeats");
        assert_eq!(lit(r"reject\.here:\[x"), Some("reject.here:[x".to_owned()));
        assert_eq!(lit(r"(?i)reject"), None, "flags for the rest");
        assert_eq!(lit(r"alpha one|beta two"), None, "top-level alternation");
        assert_eq!(
            lit(r"(?:alpha|beta) x"),
            None,
            "nothing required is long enough"
        );
        assert_eq!(lit(r"[abc]{2}longword"), Some("longword".to_owned()));
        let needles = choose_needles(&[
            r"^postfix/\w+: a longer literal here".to_owned(),
            r"^postfix/\w+: DNSBL".to_owned(),
        ]);
        assert_eq!(
            needles,
            Some(vec![
                ": a longer literal here".to_owned(),
                ": DNSBL".to_owned()
            ])
        );
        let shared_only =
            choose_needles(&[r"^postfix/\w+ x".to_owned(), r"^postfix/\d+ y".to_owned()]);
        assert_eq!(shared_only, None, "only the shared prefix: no prefilter");
    }

    #[test]
    fn overlap_is_any_shared_byte() {
        assert!(can_overlap(b"from", b"disconnect from"), "contained");
        assert!(can_overlap(b"disconnect from", b"from"), "contains");
        assert!(can_overlap(b"warning:", b": SASL"), "tail meets head");
        assert!(can_overlap(b": SASL", b"warning:"), "head meets tail");
        assert!(can_overlap(b"aba", b"aba"), "itself");
        assert!(can_overlap(b"abab", b"abab"), "itself, shifted");
        assert!(!can_overlap(b"reject", b"from"));
        assert!(!can_overlap(b"DNSBL rank", b"auth=0"));
    }

    #[test]
    fn gating_literals_are_trimmed_to_words() {
        let literals =
            gating_literals(r"^\S+ disconnect from \S+ auth=0/(?:[1-9])").expect("literals");
        assert_eq!(literals, ["disconnect from", "auth=0"]);
        assert_eq!(
            gating_literals(r"^\S+ ab: \S+ x"),
            Some(Vec::new()),
            "too short"
        );
    }

    #[test]
    fn gated_path_agrees_with_the_general_path() {
        let f = filter(
            &[
                r"^\S+ lost connection after(?! DATA) [A-Z]+ from \S*\[<HOST>\]",
                r"^\S+ reject: \S+ from \S*\[<HOST>\]: \d+",
                r"^\S+ reject: \S+ from \S*\[\S+\]: <HOST>",
                r"^\S+ client=\S*\[<HOST>\]",
            ],
            &[],
        );
        assert!(f.gated.is_some(), "anchored with literals: the fast path");
        let long = "a".repeat(100_000);
        let lines = [
            "mx lost connection after AUTH from x[192.0.2.1]".to_owned(),
            // The main regex matches, its guard refuses: general path.
            "mx lost connection after DATA from x[192.0.2.1]".to_owned(),
            "mx reject: RCPT from x[2001:db8::7]: 554".to_owned(),
            // The first regex's host is not an address: the next one.
            "mx reject: RCPT from x[999.0.2.1]: 554".to_owned(),
            "mx reject: RCPT from x[192.0.2.1]: notanaddress".to_owned(),
            format!("mx client={long}[192.0.2.9]"),
            "mx client=x[::ffff:192.0.2.8]".to_owned(),
            "mx nothing to see from x[192.0.2.1]".to_owned(),
            "reject: from lost connection client=".to_owned(),
        ];
        for line in &lines {
            let fast = f.check_with(&mut f.scratch(), line);
            let general = f.check_with(&mut Scratch::general(), line);
            assert_eq!(fast, general, "{}", &line[..line.len().min(80)]);
        }
        assert_eq!(
            f.check(&lines[5]),
            Verdict::Matched {
                host: "192.0.2.9".parse().expect("ip"),
                regex: 3
            },
            "a line too long for the backtracker still matches"
        );
        assert_eq!(f.check(&lines[1]), Verdict::Missed);
        assert_eq!(f.check(&lines[3]), Verdict::Missed);
    }

    #[test]
    fn only_unanchored_filters_take_the_general_path() {
        assert!(filter(&[r"from \S+\[<HOST>\]"], &[]).gated.is_none());
        // Anchored without a literal: gated, tried on every line.
        let bare = filter(&[r"^(?:a|b)+ x \[<HOST>\]"], &[]);
        assert!(bare.gated.is_some());
        assert_eq!(
            bare.check("ab x [192.0.2.1]"),
            Verdict::Matched {
                host: "192.0.2.1".parse().expect("ip"),
                regex: 0
            }
        );
        assert_eq!(bare.check("c x [192.0.2.1]"), Verdict::Missed);
    }

    use super::*;

    fn filter(failregex: &[&str], ignore: &[&str]) -> Filter {
        let f: Vec<String> = failregex.iter().map(|s| (*s).to_owned()).collect();
        let i: Vec<String> = ignore.iter().map(|s| (*s).to_owned()).collect();
        Filter::new("t", &f, &i).expect("compiles")
    }

    #[test]
    fn placeholders_capture_v4_v6_and_mapped() {
        let f = filter(&[r"from \S+\[<HOST>\]"], &[]);
        for (text, host) in [
            ("x from unknown[192.0.2.7]: y", "192.0.2.7"),
            ("x from a.example[2001:db8::5]:25", "2001:db8::5"),
            ("x from unknown[::ffff:198.51.100.9]", "198.51.100.9"),
        ] {
            assert_eq!(
                f.check(text),
                Verdict::Matched {
                    host: host.parse().expect("ip"),
                    regex: 0
                },
                "{text}"
            );
        }
        assert_eq!(f.check("x from unknown[not-an-ip]"), Verdict::Missed);
    }

    #[test]
    fn lookarounds_become_guards() {
        let f = filter(
            &[r"lost connection after(?! DATA) [A-Z]+ from \S*\[<HOST>\]"],
            &[],
        );
        assert!(matches!(
            f.check("lost connection after AUTH from x[192.0.2.1]"),
            Verdict::Matched { .. }
        ));
        assert_eq!(
            f.check("lost connection after DATA from x[192.0.2.1]"),
            Verdict::Missed
        );
    }

    #[test]
    fn a_lookaround_after_a_broken_group_header_is_an_error() {
        // Found by the failregex fuzz target: the header of `(?x` was
        // taken to run to the `:` inside the next group, and splitting out
        // the lookaround sliced backwards and panicked.
        for pattern in [r"(?x(y:(?=a)<HOST>", r"(?P<n(x>(?!y)<HOST>)"] {
            let error = Filter::new("t", &[pattern.to_owned()], &[]).expect_err(pattern);
            assert!(error.to_string().contains("failregex[0]"), "{error}");
        }
        // Headers before nested groups still split as before.
        let f = filter(&[r"^(?i:x(?:y)(?!z))\S* \[<HOST>\]"], &[]);
        assert!(matches!(
            f.check("Xyw [192.0.2.1]"),
            Verdict::Matched { .. }
        ));
        assert_eq!(f.check("xyz [192.0.2.1]"), Verdict::Missed);
    }

    #[test]
    fn ignoreregex_wins() {
        let f = filter(&[r"\[<HOST>\]"], &[r"^ok"]);
        assert_eq!(f.check("ok [192.0.2.1]"), Verdict::Ignored);
    }

    #[test]
    fn timestamps() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_000_000); // 2026-11-18
        let line = parse_line("2026-11-17T10:00:00.123456+00:00 mx postfix/x[1]: hi", now);
        assert_eq!(line.text, "mx postfix/x[1]: hi");
        let since = line
            .time
            .expect("time")
            .duration_since(UNIX_EPOCH)
            .expect("after epoch");
        assert_eq!(since.subsec_micros(), 123_456);
        assert_eq!(
            i64::try_from(since.as_secs()).expect("secs"),
            days_from_civil(2026, 11, 17) * 86_400 + 36_000
        );
        let rfc = parse_line("2026-11-17T10:00:00Z a", now)
            .time
            .expect("time");
        let minus = parse_line("2026-11-17T11:00:00+01:00 a", now)
            .time
            .expect("time");
        assert_eq!(rfc, minus);
        let json = parse_line(
            r#"{"__REALTIME_TIMESTAMP":"1795000000000000","SYSLOG_IDENTIFIER":"postfix/postscreen","_PID":"7","MESSAGE":"PASS OLD [192.0.2.1]:1"}"#,
            now,
        );
        assert_eq!(json.text, "postfix/postscreen[7]: PASS OLD [192.0.2.1]:1");
        assert_eq!(json.time, Some(now));
        let syslog = parse_line("Nov 17 10:00:00 mx postfix/x[1]: hi", now);
        assert_eq!(syslog.text, "mx postfix/x[1]: hi");
        assert!(syslog.time.is_some());
        // December seen in November is last year's.
        let december = parse_line("Dec 31 10:00:00 mx a", now).time.expect("time");
        assert!(december < now);
    }

    #[test]
    fn impossible_dates_and_clocks_are_not_timestamps() {
        // Found by the log_timestamp fuzz target: day 62 of December,
        // read on New Year's Day, landed a month in the future.
        let new_year = UNIX_EPOCH + Duration::from_secs(1_798_765_207); // 2027-01-01T01:00:07Z
        for line in [
            "Dec 62 23:59:59 mx a",
            "Dec 0 10:00:00 mx a",
            "Nov 20 24:00:00 mx a",
            "Nov 20 10:60:00 mx a",
            "Nov 20 10:00:61 mx a",
            "2026-11-17T24:00:00Z mx a",
            "2026-11-17T10:99:00Z mx a",
            "2026-11-17T10:00:61+00:00 mx a",
            "2026-11-17T10:00:00+99:00 mx a",
        ] {
            let parsed = parse_line(line, new_year);
            assert_eq!(parsed.time, None, "{line}");
            assert_eq!(parsed.text, line, "the line is left whole");
        }
        let leap = parse_line("Dec 31 23:59:60 mx a", new_year);
        assert_eq!(leap.text, "mx a", "a leap second is a time");
    }

    #[test]
    fn a_syslog_stamp_a_day_ahead_is_last_years() {
        // Found by the log_timestamp fuzz target: "Jan  2 00:59:60.123"
        // read at one o'clock on New Year's Day is exactly a day ahead (the
        // leap second makes 00:59:60 one o'clock) and stayed in this year,
        // its fraction past the day.
        let utc = 1_795_136_400; // 2026-11-20T01:00:00Z
        let local = u64::try_from(utc - local_offset(utc)).expect("after 1970");
        let now = UNIX_EPOCH + Duration::from_secs(local); // 01:00 here
        let time = parse_line("Nov 21 00:59:60.123 a", now).time.expect("time");
        assert!(time < now, "{time:?} is not last year's");
        let time = parse_line("Nov 21 00:59:59.999 a", now).time.expect("time");
        assert!(time > now, "less than a day ahead stays in this year");
    }

    #[test]
    fn the_year_of_a_syslog_stamp_is_the_local_one() {
        // 00:30 on New Year's Day in Tokyo (UTC+9) is still December in
        // UTC: the year was taken from UTC, so the stamp went back a year.
        let tokyo = 9 * 3600;
        let now = 1_798_731_900; // 2027-01-01T00:45+09:00
        let secs = syslog_secs(1, 1, (0, 30, 0), now, tokyo);
        assert_eq!(now - secs, 15 * 60, "a quarter of an hour ago");
        // West of UTC the new year starts in UTC first.
        let los_angeles = -8 * 3600;
        let now = 1_798_761_600; // 2026-12-31T16:00-08:00
        let secs = syslog_secs(12, 31, (15, 0, 0), now, los_angeles);
        assert_eq!(now - secs, 3600, "an hour ago");
    }

    #[test]
    fn a_value_that_doubles_itself_is_refused() {
        // Found with the filter_import fuzz target: `x = <x><x>` doubled
        // in each of the 64 rounds of interpolation and never finished.
        let path = Path::new("/nonexistent/doubling.conf");
        for text in [
            "[Definition]\nx = <x><x>\nfailregex = ^<x> <HOST>$\n",
            "[Definition]\nx = %(x)s%(x)s\nfailregex = ^%(x)s <HOST>$\n",
        ] {
            let error = import_fail2ban_text(path, text, &[]).expect_err(text);
            let message = error.to_string();
            assert!(
                message.contains("grows past") && message.contains("doubling.conf"),
                "{message}"
            );
        }
        let looping = "[Definition]\na = <b>\nb = <a>\nfailregex = <a> <HOST>\n";
        let error = import_fail2ban_text(path, looping, &[]).expect_err("a loop");
        assert!(error.to_string().contains("does not end"), "{error}");
    }

    #[test]
    fn imports_debians_postfix_filter_in_every_mode() {
        let path = Path::new("/etc/fail2ban/filter.d/postfix.conf");
        if !path.exists() {
            eprintln!("SKIP: no {}", path.display());
            return;
        }
        for mode in ["normal", "rbl", "auth", "ddos", "aggressive", "more"] {
            let imported =
                import_fail2ban(path, &[("mode".to_owned(), mode.to_owned())]).expect("imports");
            let f = Filter::new("postfix", &imported.failregex, &imported.ignoreregex)
                .unwrap_or_else(|e| panic!("mode {mode}: {e}"));
            if mode == "aggressive" {
                let line = parse_line(
                    "Nov 17 10:00:00 mx postfix/smtpd[1]: warning: unknown[192.0.2.9]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
                    SystemTime::now(),
                );
                assert!(
                    matches!(f.check(&line.text), Verdict::Matched { .. }),
                    "{:?}",
                    f.failregex()
                );
            }
        }
    }
}
