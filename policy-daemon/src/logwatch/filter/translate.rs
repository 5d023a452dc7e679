//! Translating fail2ban's failregex syntax to Rust regexes: the host
//! placeholders, Python's syntax, and lookarounds split into guards.

use std::fmt::Write as _;

use regex::bytes::{Regex, RegexBuilder};

use super::gate::is_host_group;

pub(super) const IP4: &str = r"(?:\d{1,3}\.){3}\d{1,3}";

pub(super) const IP6: &str =
    r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?";

/// Expands the placeholders of one failregex. Each captures its own
/// group (`host`, then `__host_1`, …), as fail2ban's `<IP4>`, `<IP6>` and
/// `<HOST>` do: in `\[(?:IPv6:<IP6>|<IP4>)\]` the host is whichever
/// took part in the match, the first in the pattern when several did.
pub fn expand_placeholders(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 64);
    let mut rest = pattern;
    let mut captured = 0_usize;
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
        if captured == 0 {
            let _ = write!(out, "{mapped}(?P<host>{body})");
        } else {
            let _ = write!(out, "{mapped}(?P<__host_{captured}>{body})");
        }
        captured += 1;
        rest = &tail[tag.len()..];
    }
    out.push_str(rest);
    out
}

/// One failregex: the main regex and its lookaround guards.
#[derive(Debug)]
pub(super) struct Rule {
    pub(super) regex: Regex,
    /// The capture groups holding a host, in the pattern's order.
    pub(super) hosts: Vec<usize>,
    /// See [`split_lookarounds`].
    pub(super) guards: Vec<Guard>,
}

/// A lookaround as a check after the match: the line is refused when
/// `trigger` matches and `required` is `None` or does not match.
#[derive(Debug)]
pub(super) struct Guard {
    pub(super) trigger: Regex,
    /// The longest literal every match of `trigger` holds: a line without
    /// it (most lines, the lookaround's text being rare) is not searched.
    pub(super) trigger_literal: Option<memchr::memmem::Finder<'static>>,
    pub(super) required: Option<Regex>,
}

impl Rule {
    pub(super) fn accepts(&self, text: &[u8]) -> bool {
        self.guards.iter().all(|guard| {
            let triggered = guard
                .trigger_literal
                .as_ref()
                .is_none_or(|literal| literal.find(text).is_some())
                && guard.trigger.is_match(text);
            !triggered || guard.required.as_ref().is_some_and(|r| r.is_match(text))
        })
    }
}

/// A lookaround split out of a pattern, as text.
pub(super) struct SplitGuard {
    pub(super) trigger: String,
    pub(super) required: Option<String>,
    /// The lookaround's body when every match of `trigger` holds a match
    /// of it, read with the pattern's top-level flags.
    pub(super) trigger_body: Option<String>,
}

/// Splits lookarounds out of a Python regex: the pattern without them, and
/// per lookaround a guard `(trigger, required)`: the line is refused when
/// `trigger` matches and `required` is `None` (`(?!…)`) or does not match
/// (`(?=…)`). Triggers follow only the branch the lookaround sits in.
pub(super) fn split_lookarounds(pattern: &str) -> (String, Vec<SplitGuard>) {
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
                guards.push(SplitGuard {
                    trigger: branch_path(""),
                    required: Some(with_body),
                    trigger_body: None,
                });
            } else {
                guards.push(SplitGuard {
                    trigger: with_body,
                    required: None,
                    // Outside any group, no group's flags reach the body.
                    trigger_body: (stack.len() == 1).then(|| body.to_owned()),
                });
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
/// character class (`[^[]`) is literal in Python, a nested class here; a
/// `{` that does not start a repetition (`{{`, `{[^}]+}`) and any `}`
/// outside one are literal in Python, errors here; `{,n}` is `{0,n}`.
pub(super) fn python_to_rust(pattern: &str) -> String {
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
            '{' if !in_class => {
                // A repetition is short: look no further than its `}`.
                let rest: String = chars.clone().take(MAX_REPETITION_TEXT).collect();
                if let Some((repetition, len)) = python_repetition(&rest) {
                    out.push_str(&repetition);
                    for _ in 0..len {
                        chars.next();
                    }
                } else {
                    out.push_str("\\{");
                }
            }
            '}' if !in_class => out.push_str("\\}"),
            _ => out.push(c),
        }
        class_start = false;
    }
    out
}

/// The longest `m,n}` read as a repetition after a `{`.
const MAX_REPETITION_TEXT: usize = 24;

/// After a `{`, Python's repetition `m}`, `m,}`, `,n}`, `m,n}` or `,}`:
/// the repetition as the `regex` crate writes it and how many characters
/// of `rest` it takes. `None`: the `{` is a literal brace.
fn python_repetition(rest: &str) -> Option<(String, usize)> {
    let close = rest.find('}')?;
    let body = &rest[..close];
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit() || b == b',') {
        return None;
    }
    let (min, max) = match body.split_once(',') {
        None => (body, Some(body)),
        Some((min, max)) if !max.contains(',') => (min, (!max.is_empty()).then_some(max)),
        Some(_) => return None,
    };
    let min = if min.is_empty() { "0" } else { min };
    let repetition = match max {
        Some(max) if max == min && !body.contains(',') => format!("{{{min}}}"),
        Some(max) => format!("{{{min},{max}}}"),
        None => format!("{{{min},}}"),
    };
    Some((repetition, close + 1))
}

pub(super) fn compile(pattern: &str) -> Result<(String, Rule), String> {
    if has_unescaped(pattern, "(?(") {
        return Err(
            "uses a conditional group `(?(name)yes|no)`, which spamwall's regex engine does not \
             support; write the alternatives as separate failregex lines"
                .to_owned(),
        );
    }
    if has_unescaped(pattern, "(?P=") {
        return Err(
            "uses a backreference `(?P=name)`, which spamwall's regex engine does not support \
             (matching stays linear in the line's length); match the text again with its own pattern"
                .to_owned(),
        );
    }
    let expanded = expand_placeholders(&python_to_rust(pattern));
    let (main, guards) = split_lookarounds(&expanded);
    let regex = ascii_regex(&main)?;
    let guards = guards
        .into_iter()
        .map(|guard| {
            let SplitGuard {
                trigger,
                required,
                trigger_body,
            } = guard;
            // No literal at all when the trigger changes flags (then the
            // body's would not be read as written either).
            let trigger_literal = super::gate::required_literals(&trigger)
                .map(|mut literals| {
                    literals.extend(
                        trigger_body
                            .as_deref()
                            .and_then(super::gate::required_literals)
                            .unwrap_or_default(),
                    );
                    literals
                })
                .and_then(|literals| literals.into_iter().max_by_key(String::len))
                .map(|literal| memchr::memmem::Finder::new(literal.as_bytes()).into_owned());
            let trigger = ascii_regex(&trigger)?;
            let required = required.map(|r| ascii_regex(&r)).transpose()?;
            Ok::<_, String>(Guard {
                trigger,
                trigger_literal,
                required,
            })
        })
        .collect::<Result<_, _>>()?;
    let hosts = regex
        .capture_names()
        .enumerate()
        .filter(|(_, name)| name.is_some_and(is_host_group))
        .map(|(group, _)| group)
        .collect();
    Ok((
        main,
        Rule {
            regex,
            hosts,
            guards,
        },
    ))
}

/// Whether `pattern` holds `syntax` (e.g. Python's `(?P=`) whose `(` is
/// not escaped.
fn has_unescaped(pattern: &str, syntax: &str) -> bool {
    pattern.match_indices(syntax).any(|(at, _)| {
        pattern[..at]
            .bytes()
            .rev()
            .take_while(|&b| b == b'\\')
            .count()
            % 2
            == 0
    })
}

pub(super) fn ascii_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .build()
        .map_err(|e| e.to_string())
}
