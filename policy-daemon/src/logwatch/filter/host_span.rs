//! Where a failregex's host is, found by three DFAs instead of a
//! backtracker: one for the pattern before the host group, one for the
//! group, one for the pattern after it.
//!
//! For a pattern `P (?P<host>H) S` anchored at the start of the line:
//! when `P` matches a prefix of the line at one length only, `e`, every
//! match of the whole pattern has its host start at `e`; when, of the
//! ends `f` of `H` from `e`, exactly one lets `S` match from it, every
//! match has its host at `e..f`, the captures the backtracker finds
//! included. No such end: the pattern does not match. More than one
//! length or end: the backtracker decides, as it did before.

use std::ops::Range;

use regex_automata::{
    Anchored, Input, MatchKind,
    dfa::{Automaton, StartKind, dense},
    nfa::thompson,
    util::{primitives::StateID, syntax},
};

/// A part's DFA may take this much memory, and as much to build: the
/// built-in filters' parts take a few KiB; a user's pattern beyond it
/// stays with the backtracker.
const DFA_SIZE_LIMIT: usize = 1 << 20;

/// The three DFAs of a failregex split around its host group.
#[derive(Debug)]
pub(super) struct HostSpan {
    before: Part,
    host: Part,
    after: Part,
}

/// One part's DFA and its start state when that does not depend on the
/// byte before the walk: `after` is walked from every end of the host,
/// and computing the start state each time cost more than the walk.
/// With it, the bytes a match can start with: most ends of a host are
/// followed by a byte the part after it cannot start with.
#[derive(Debug)]
struct Part {
    dfa: dense::DFA<Vec<u32>>,
    start: Option<StateID>,
    /// Per byte, whether the DFA is still alive after it from `start`.
    first: Option<[bool; 256]>,
}

impl Part {
    fn new(dfa: dense::DFA<Vec<u32>>) -> Self {
        let start = dfa.universal_start_state(Anchored::Yes);
        let first = start.map(|start| {
            let mut first = [false; 256];
            for (byte, alive) in (0..=u8::MAX).zip(&mut first) {
                *alive = !dfa.is_dead_state(dfa.next_state(start, byte));
            }
            first
        });
        Self { dfa, start, first }
    }
}

/// What [`HostSpan::find`] made of a line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// The pattern does not match.
    NoMatch,
    /// The pattern matches and its host is there.
    Host(Range<usize>),
    /// Ambiguous, or a DFA could not go on: ask the backtracker.
    Unsure,
}

/// Stops a walk: enough ends seen.
struct Enough;

impl HostSpan {
    /// `None` when the pattern does not split (see [`split_at_host`]) or
    /// a part does not build as a DFA within [`DFA_SIZE_LIMIT`].
    pub(super) fn new(pattern: &str) -> Option<Self> {
        let (before, host, after) = split_at_host(pattern)?;
        let build = |part: &str, kind: MatchKind| {
            dense::Builder::new()
                .configure(
                    dense::Config::new()
                        .match_kind(kind)
                        .start_kind(StartKind::Anchored)
                        .accelerate(false)
                        .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                        .determinize_size_limit(Some(DFA_SIZE_LIMIT)),
                )
                .syntax(syntax::Config::new().unicode(false).utf8(false))
                .thompson(thompson::Config::new().utf8(false))
                .build(part)
                .ok()
                .map(Part::new)
        };
        Some(Self {
            before: build(before, MatchKind::All)?,
            host: build(host, MatchKind::All)?,
            after: build(after, MatchKind::LeftmostFirst)?,
        })
    }

    pub(super) fn find(&self, text: &[u8]) -> Found {
        let mut start = None;
        let walked = walk(&self.before, text, 0, |end| {
            if start.replace(end).is_some() {
                return Err(Enough);
            }
            Ok(())
        });
        let start = match (walked, start) {
            (Walk::Done, None) => return Found::NoMatch,
            (Walk::Done, Some(start)) => start,
            (Walk::Stopped | Walk::GaveUp, _) => return Found::Unsure,
        };
        let mut host_end = None;
        let mut unsure = false;
        let walked = walk(&self.host, text, start, |end| {
            match walk(&self.after, text, end, |_| Err(Enough)) {
                Walk::Done => Ok(()),
                Walk::Stopped if host_end.replace(end).is_none() => Ok(()),
                Walk::Stopped | Walk::GaveUp => {
                    unsure = true;
                    Err(Enough)
                }
            }
        });
        match (walked, host_end) {
            (Walk::Done, None) => Found::NoMatch,
            (Walk::Done, Some(end)) if !unsure => Found::Host(start..end),
            _ => Found::Unsure,
        }
    }
}

/// How a [`walk`] ended.
enum Walk {
    /// Every match end was reported.
    Done,
    /// The callback asked to stop.
    Stopped,
    /// The DFA could not go on (a quit byte).
    GaveUp,
}

/// Runs `dfa` anchored at `at` and reports every end of a match to
/// `on_end`, in order, until it asks to stop or no match can follow.
fn walk(
    part: &Part,
    text: &[u8],
    at: usize,
    mut on_end: impl FnMut(usize) -> Result<(), Enough>,
) -> Walk {
    // A start state is never a match state (matches show one byte
    // late): dead after the first byte, the walk reports nothing.
    if let (Some(first), Some(&byte)) = (&part.first, text.get(at))
        && !first[usize::from(byte)]
    {
        return Walk::Done;
    }
    let dfa = &part.dfa;
    let start = part.start.map_or_else(
        || dfa.start_state_forward(&Input::new(text).range(at..).anchored(Anchored::Yes)),
        Ok,
    );
    let Ok(mut state) = start else {
        return Walk::GaveUp;
    };
    let mut special = |state, end: usize| {
        if dfa.is_match_state(state) {
            // Matches show one byte late.
            if on_end(end).is_err() {
                return Some(Walk::Stopped);
            }
        } else if dfa.is_dead_state(state) {
            return Some(Walk::Done);
        } else if dfa.is_quit_state(state) {
            return Some(Walk::GaveUp);
        }
        None
    };
    for (offset, &byte) in text[at..].iter().enumerate() {
        state = dfa.next_state(state, byte);
        if dfa.is_special_state(state)
            && let Some(walk) = special(state, at + offset)
        {
            return walk;
        }
    }
    state = dfa.next_eoi_state(state);
    if dfa.is_special_state(state)
        && let Some(walk) = special(state, text.len())
    {
        return walk;
    }
    Walk::Done
}

/// `pattern` cut around its host group `(?P<host>…)`: before, the group,
/// after. `None` unless that group is the only host group, sits at the
/// top level, is not repeated, and the pattern has no top-level
/// alternation and no flag group (`(?i)`) whose reach a cut would change.
pub(super) fn split_at_host(pattern: &str) -> Option<(&str, &str, &str)> {
    const GROUP: &[u8] = b"(?P<host>";
    let bytes = pattern.as_bytes();
    let mut depth = 0_usize;
    let mut class = 0_usize;
    let mut class_start = false;
    let mut group: Option<(usize, Option<usize>)> = None;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let at_class_start = std::mem::take(&mut class_start);
        if class > 0 {
            match byte {
                b'\\' => i += 1,
                b'[' => {
                    class += 1;
                    class_start = true;
                }
                b'^' if at_class_start => class_start = true,
                b']' if !at_class_start => class -= 1,
                _ => {}
            }
            i += 1;
            continue;
        }
        match byte {
            b'\\' => i += 1,
            b'[' => {
                class = 1;
                class_start = true;
            }
            b'(' => {
                let rest = &bytes[i..];
                if rest.starts_with(b"(?P<__host_") {
                    return None;
                }
                if rest.starts_with(GROUP) {
                    if depth != 0 || group.is_some() {
                        return None;
                    }
                    group = Some((i, None));
                } else if rest.starts_with(b"(?") {
                    let flags = rest[2..]
                        .iter()
                        .position(|b| !(b.is_ascii_alphabetic() || *b == b'-'));
                    if flags.is_some_and(|n| rest[2 + n] == b')') {
                        return None;
                    }
                }
                depth += 1;
            }
            b')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0
                    && let Some((_, end @ None)) = &mut group
                {
                    *end = Some(i + 1);
                    if matches!(bytes.get(i + 1), Some(b'?' | b'*' | b'+' | b'{')) {
                        return None;
                    }
                }
            }
            b'|' if depth == 0 => return None,
            _ => {}
        }
        i += 1;
    }
    let (start, end) = group?;
    let end = end?;
    if depth != 0 || class != 0 {
        return None;
    }
    Some((&pattern[..start], &pattern[start..end], &pattern[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_around_a_top_level_host_group_only() {
        assert_eq!(
            split_at_host(r"^a\[(?P<host>\d+)\](?::\d+)?x"),
            Some((r"^a\[", r"(?P<host>\d+)", r"\](?::\d+)?x"))
        );
        assert_eq!(
            split_at_host(r"^[(](?P<host>\d+)[)\]]b"),
            Some((r"^[(]", r"(?P<host>\d+)", r"[)\]]b"))
        );
        assert_eq!(
            split_at_host(r"^[]()](?P<host>\d+)"),
            Some((r"^[]()]", r"(?P<host>\d+)", ""))
        );
        for refused in [
            r"^a(?P<host>\d+)?",
            r"^a(?P<host>\d+)*",
            r"^(?:a(?P<host>\d+))",
            r"^a|(?P<host>\d+)",
            r"^(?i)a(?P<host>\d+)",
            r"^a(?P<host>\d+) (?P<__host_1>\d+)",
            r"^a\(?P<host>\d+\)",
            r"^a[(?P<host>\d+]",
            r"^a\d+",
        ] {
            assert_eq!(split_at_host(refused), None, "{refused}");
        }
    }

    #[test]
    fn finds_the_host_or_says_it_is_unsure() {
        let span = HostSpan::new(r"^(?:\S+\s+)?x\[(?P<host>[\d.]+)\]:? y").expect("splits");
        let text = b"mx x[192.0.2.13]: y";
        assert_eq!(span.find(text), Found::Host(5..15));
        assert_eq!(span.find(b"mx x[192.0.2.13]: z"), Found::NoMatch);
        assert_eq!(span.find(b"x[1] y"), Found::Host(2..3));
        // The host may end at either `]`: the backtracker decides.
        let span = HostSpan::new(r"^\[(?P<host>[^ ]+)\].*").expect("splits");
        assert_eq!(span.find(b"[a]b]"), Found::Unsure);
        // The part before may end at two places.
        let span = HostSpan::new(r"^a*(?P<host>a+)b").expect("splits");
        assert_eq!(span.find(b"aab"), Found::Unsure);
    }
}
