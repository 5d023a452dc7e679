//! The literal gate: the literals present in a line name the failregexes
//! that can match it, and only those run: as DFAs split around the host
//! where that decides the host (see `host_span`), else as bounded
//! backtrackers.

use std::net::IpAddr;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::{RegexSet, RegexSetBuilder};
use regex_automata::{
    Anchored, Input, PatternID,
    nfa::thompson::{
        self,
        backtrack::{self, BoundedBacktracker},
    },
    util::{pool::Pool, primitives::NonMaxUsize, syntax},
};

use super::{
    host_span::{Found, HostSpan},
    parse_host,
};

/// The lazy DFA runs a set over a line in one pass, but with the default
/// 2 MiB cache the Unicode classes of a dozen postfix regexes do not fit
/// and matching falls back to the much slower `PikeVM`.
pub(super) const SET_DFA_CACHE: usize = 64 << 20;

pub(super) fn fast_set(patterns: &[String]) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns)
        .unicode(false)
        .dfa_size_limit(SET_DFA_CACHE)
        .build()
}

/// The fast path, for filters whose failregexes are all anchored at the
/// start of the line and each hold literals every match of it contains
/// (fail2ban's and the built-in ones do): the literals found in a line
/// name the failregexes that may match it, and those are tried in order,
/// each by its host DFAs or a backtracker over that regex alone, which
/// also captures the host. A line holding no failregex's literals costs
/// one pass of a small automaton.
#[derive(Debug)]
pub(super) struct Gated {
    /// Literals failregexes require, found leftmost-first (SIMD).
    pub(super) literals: AhoCorasick,
    /// Per literal: the literals an occurrence of it may hide from a
    /// leftmost-first search (those that can share a byte with it,
    /// itself included), all taken as present when it is found.
    pub(super) overlapping: Vec<u64>,
    pub(super) rules: Vec<GatedRule>,
}

#[derive(Debug)]
pub(super) struct GatedRule {
    /// The literals a line must hold, as bits by their id in `literals`.
    pub(super) needs: u64,
    pub(super) backtracker: BoundedBacktracker,
    /// The host by DFAs alone, when the pattern allows it: several times
    /// faster than the backtracker, which stays for what they leave open.
    pub(super) span: Option<HostSpan>,
    /// The slots of the groups holding a host, in the pattern's order.
    pub(super) hosts: Vec<(usize, usize)>,
}

/// What [`Gated::search`] made of a line.
pub(super) enum Gate {
    /// No failregex matches.
    Missed,
    /// The first failregex that matches, and its host if that parsed.
    Found(usize, Option<IpAddr>),
    /// Too long a line for the backtracker: ask the general path.
    Unsure,
}

/// Whether occurrences of `a` and `b` in a text can share a byte.
pub(super) fn can_overlap(a: &[u8], b: &[u8]) -> bool {
    let contains = |outer: &[u8], inner: &[u8]| memchr::memmem::find(outer, inner).is_some();
    let tail_starts =
        |x: &[u8], y: &[u8]| (1..x.len().min(y.len())).any(|k| y.starts_with(&x[x.len() - k..]));
    contains(a, b) || contains(b, a) || tail_starts(a, b) || tail_starts(b, a)
}

/// A failregex's literals for gating: trimmed to letters and digits at
/// both ends (a space or colon at an end would let it overlap most of the
/// others), at least three bytes long.
pub(super) fn gating_literals(pattern: &str) -> Option<Vec<String>> {
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
    pub(super) fn new(patterns: &[String]) -> Option<Self> {
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
            let hosts = backtracker
                .get_nfa()
                .group_info()
                .pattern_names(PatternID::ZERO)
                .enumerate()
                .filter(|(_, name)| name.is_some_and(is_host_group))
                .map(|(group, _)| (group * 2, group * 2 + 1))
                .collect();
            rules.push(GatedRule {
                needs,
                backtracker,
                span: HostSpan::new(pattern),
                hosts,
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

    pub(super) fn scratch(&self) -> GatedScratch {
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

    pub(super) fn search(&self, scratch: &mut GatedScratch, text: &[u8]) -> Gate {
        // Every occurrence a leftmost-first search passes over overlaps
        // one it reports: found, or taken as found.
        let mut found = 0_u64;
        for literal in self.literals.find_iter(text) {
            found |= self.overlapping[literal.pattern().as_usize()];
        }
        self.try_rules(scratch, text, |_, rule| rule.needs & !found == 0)
    }

    /// [`Self::search`] among the failregexes whose bit is set in `rules`
    /// only, for a caller that knows the others cannot match.
    pub(super) fn search_among(&self, scratch: &mut GatedScratch, text: &[u8], rules: u64) -> Gate {
        self.try_rules(scratch, text, |index, _| {
            u32::try_from(index)
                .ok()
                .and_then(|index| rules.checked_shr(index))
                .is_some_and(|bits| bits & 1 == 1)
        })
    }

    /// Tries in order the failregexes `may_match` lets through.
    fn try_rules(
        &self,
        scratch: &mut GatedScratch,
        text: &[u8],
        may_match: impl Fn(usize, &GatedRule) -> bool,
    ) -> Gate {
        let input = Input::new(text).anchored(Anchored::Yes);
        for (index, rule) in self.rules.iter().enumerate() {
            if !may_match(index, rule) {
                continue;
            }
            if let Some(span) = &rule.span {
                match span.find(text) {
                    Found::NoMatch => continue,
                    Found::Host(host) => return Gate::Found(index, parse_host(&text[host])),
                    Found::Unsure => {}
                }
            }
            let (cache, slots) = &mut scratch.rules[index];
            match rule.backtracker.try_search_slots(cache, &input, slots) {
                Ok(None) => {}
                Ok(Some(_)) => {
                    let host = rule
                        .hosts
                        .iter()
                        .find_map(|&(start, end)| Some((slots[start]?, slots[end]?)))
                        .and_then(|(start, end)| parse_host(&text[start.get()..end.get()]));
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
pub(super) struct GatedScratch {
    pub(super) rules: Vec<(backtrack::Cache, Vec<Option<NonMaxUsize>>)>,
}

/// Per-thread state for [`Filter::check_with`].
#[derive(Debug)]
pub struct Scratch {
    pub(super) gated: Option<GatedScratch>,
    /// The line with a space before it, for filters that want one.
    pub(super) spaced: String,
}

impl Scratch {
    /// Scratch that takes the general path only: [`Filter::check_with`]
    /// gives the same verdict with it as with [`Filter::scratch`], which
    /// the tests and the `failregex` fuzz target check.
    #[cfg(any(test, fuzzing))]
    pub fn general() -> Self {
        Self {
            gated: None,
            spaced: String::new(),
        }
    }
}

pub(super) type ScratchPool = Pool<Scratch, Box<dyn Fn() -> Scratch + Send + Sync>>;

/// One literal per pattern for the prefilter: the longest required literal
/// that not every pattern shares (a common one, such as the `postfix`
/// of the syslog prefix, is in every line and filters nothing).
pub(super) fn choose_needles(patterns: &[String]) -> Option<Vec<String>> {
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

/// Consumes the argument of the escape `\\{escape}`: a braced one, or
/// the one character (`\\pL`) or hex digits (`\\x41`) it takes.
fn skip_escape_argument(escape: char, chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    if chars.peek() == Some(&'{') {
        for c in chars.by_ref() {
            if c == '}' {
                break;
            }
        }
        return;
    }
    let digits = match escape {
        'p' | 'P' => {
            chars.next();
            return;
        }
        'x' => 2,
        'u' => 4,
        _ => 8,
    };
    for _ in 0..digits {
        if chars.next_if(char::is_ascii_hexdigit).is_none() {
            break;
        }
    }
}

/// The literals every match of `pattern` contains: runs of plain
/// characters outside any group, not made optional by a quantifier, in a
/// pattern without top-level alternation, at least three characters long.
/// `None` when the pattern changes flags or alternates at the top level.
/// Whether a capture group of a translated failregex holds a host: `host`
/// for the first placeholder, `__host_N` for the N-th after it.
pub(super) fn is_host_group(name: &str) -> bool {
    name == "host"
        || name
            .strip_prefix("__host_")
            .is_some_and(|n| n.parse::<usize>().is_ok())
}

pub(super) fn required_literals(pattern: &str) -> Option<Vec<String>> {
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
                // `\p{Greek}`, `\pL`, `\x{41}`, `\x41`, `\u00e9`: the
                // argument is part of the escape, not text.
                Some(e @ ('p' | 'P' | 'x' | 'u' | 'U')) => {
                    skip_escape_argument(e, &mut chars);
                    None
                }
                _ => None,
            },
            // A counted repetition `{m,n}`: its digits are not text.
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                None
            }
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
            '.' | '^' | '$' | '|' | '?' | '*' | '+' | '}' | '\u{FFFD}' => None,
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
