//! Reading a feed's body: a plain list of addresses and prefixes, or
//! Spamhaus's DROP JSON (one object a line). Both are read leniently, a
//! line at a time: a bad line is counted and skipped, and only a body in
//! which nothing parses is an error.

use ipnet::IpNet;
use serde::Deserialize;

use super::config::FeedFormat;
use crate::bans::parse_target;

/// The longest tag (Spamhaus's `sblid`) kept with an entry.
const MAX_TAG: usize = 32;

/// What a feed's body lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Each listed target with its tag (`SBL256894`, or empty), in order;
    /// a target listed twice appears twice.
    pub entries: Vec<(IpNet, String)>,
    /// Lines that were neither an entry, a comment nor blank.
    pub bad_lines: usize,
    /// The first bad line: its number (from 1) and why.
    pub first_bad: Option<(usize, String)>,
}

/// Why a body gives no entries at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("no line is an entry ({bad} bad lines; line {line}: {why})")]
    NothingParsed {
        bad: usize,
        line: usize,
        why: String,
    },
}

/// Parses `body` as `format`. An empty list (no entry and no bad line) is
/// a valid answer: the feed lists nothing today.
pub fn parse(format: FeedFormat, body: &[u8]) -> Result<Parsed, ParseError> {
    let text = std::str::from_utf8(body).map_err(|e| ParseError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parsed = Parsed::default();
    for (number, line) in text.lines().enumerate() {
        let outcome = match format {
            FeedFormat::Plain => plain_line(line),
            FeedFormat::SpamhausJson => spamhaus_line(line),
        };
        match outcome {
            Line::Entry(target, tag) => parsed.entries.push((target, tag)),
            Line::Skip => {}
            Line::Bad(why) => {
                parsed.bad_lines += 1;
                if parsed.first_bad.is_none() {
                    parsed.first_bad = Some((number + 1, why));
                }
            }
        }
    }
    match &parsed.first_bad {
        Some((line, why)) if parsed.entries.is_empty() => Err(ParseError::NothingParsed {
            bad: parsed.bad_lines,
            line: *line,
            why: why.clone(),
        }),
        _ => Ok(parsed),
    }
}

enum Line {
    Entry(IpNet, String),
    Skip,
    Bad(String),
}

/// `192.0.2.0/24 ; SBL123` or `2001:db8::1  # note`: the first word of
/// what precedes a `#` or `;` comment.
fn plain_line(line: &str) -> Line {
    let content = line.split(['#', ';']).next().unwrap_or("").trim();
    let Some(word) = content.split_whitespace().next() else {
        return Line::Skip;
    };
    match parse_target(word) {
        Ok(target) => Line::Entry(target, String::new()),
        Err(error) => Line::Bad(shorten(&error.to_string())),
    }
}

#[derive(Deserialize)]
struct SpamhausLine<'a> {
    #[serde(default, borrow)]
    cidr: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    sblid: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

/// `{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}`; the
/// closing `{"type":"metadata",…}` line is skipped.
fn spamhaus_line(line: &str) -> Line {
    let line = line.trim();
    if line.is_empty() {
        return Line::Skip;
    }
    let object: SpamhausLine<'_> = match serde_json::from_str(line) {
        Ok(object) => object,
        Err(error) => return Line::Bad(shorten(&format!("not a JSON object: {error}"))),
    };
    match (object.cidr, object.kind) {
        (Some(cidr), _) => match parse_target(&cidr) {
            Ok(target) => Line::Entry(target, object.sblid.map(|id| tag(&id)).unwrap_or_default()),
            Err(error) => Line::Bad(shorten(&error.to_string())),
        },
        (None, Some(kind)) if kind == "metadata" => Line::Skip,
        (None, _) => Line::Bad("no \"cidr\" field".to_owned()),
    }
}

/// A tag as kept in a ban's reason: printable ASCII without spaces, at
/// most [`MAX_TAG`] characters.
fn tag(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_graphic)
        .take(MAX_TAG)
        .collect()
}

/// An error about a line, cut to a length a status line can show.
fn shorten(text: &str) -> String {
    const MAX: usize = 120;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        parse_target(text).expect("target")
    }

    #[test]
    fn plain_lists_take_addresses_prefixes_and_both_comment_styles() {
        let body = b"# a list\n192.0.2.0/24 ; SBL1\n\n  2001:db8::1  # one host\n; only a comment\n198.51.100.7\r\n";
        let parsed = parse(FeedFormat::Plain, body).expect("parses");
        let targets: Vec<IpNet> = parsed.entries.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            targets,
            [net("192.0.2.0/24"), net("2001:db8::1"), net("198.51.100.7")]
        );
        assert_eq!(parsed.bad_lines, 0);
    }

    #[test]
    fn plain_bad_lines_are_counted_and_skipped() {
        let body = b"192.0.2.1\nnot-an-address\n192.0.3.0/23\n198.51.100.0/24\n";
        let parsed = parse(FeedFormat::Plain, body).expect("parses");
        assert_eq!(parsed.entries.len(), 2);
        assert_eq!(parsed.bad_lines, 2);
        let (line, why) = parsed.first_bad.expect("first bad line");
        assert_eq!(line, 2);
        assert!(why.contains("not-an-address"), "{why}");
    }

    #[test]
    fn a_body_where_nothing_parses_is_an_error_but_an_empty_one_is_not() {
        let error = parse(FeedFormat::Plain, b"<html>\n<body>oops</body>\n").expect_err("html");
        assert!(
            matches!(
                error,
                ParseError::NothingParsed {
                    bad: 2,
                    line: 1,
                    ..
                }
            ),
            "{error}"
        );
        let empty = parse(FeedFormat::Plain, b"# nothing listed today\n\n").expect("empty");
        assert!(empty.entries.is_empty());
        assert_eq!(
            parse(FeedFormat::SpamhausJson, b"").expect("empty"),
            Parsed::default()
        );
    }

    #[test]
    fn a_body_that_is_not_utf8_is_refused_with_its_offset() {
        assert_eq!(
            parse(FeedFormat::Plain, b"192.0.2.1\n\xff\xfe"),
            Err(ParseError::NotUtf8 { offset: 10 })
        );
    }

    #[test]
    fn spamhaus_drop_json_keeps_the_sblid_and_skips_the_metadata() {
        let body = br#"{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}
{"cidr":"2001:db8::/32","sblid":"SBL 1\u0000x","rir":"ripencc"}
{"cidr":"1.19.0.0/16"}
{"cidr":"1.10.16.1/20","sblid":"SBL9"}
not json
{"rir":"arin"}
{"type":"metadata","timestamp":1700000000,"size":4,"records":4,"copyright":"(c)","terms":"t"}
"#;
        let parsed = parse(FeedFormat::SpamhausJson, body).expect("parses");
        assert_eq!(
            parsed.entries,
            [
                (net("1.10.16.0/20"), "SBL256894".to_owned()),
                (net("2001:db8::/32"), "SBL1x".to_owned()),
                (net("1.19.0.0/16"), String::new()),
            ]
        );
        assert_eq!(parsed.bad_lines, 3);
        assert_eq!(parsed.first_bad.expect("bad").0, 4);
    }

    #[test]
    fn long_tags_and_errors_are_cut() {
        let long = "S".repeat(500);
        let body = format!("{{\"cidr\":\"192.0.2.0/24\",\"sblid\":\"{long}\"}}\n");
        let parsed = parse(FeedFormat::SpamhausJson, body.as_bytes()).expect("parses");
        assert_eq!(parsed.entries[0].1.len(), MAX_TAG);
        let bad = format!("{}\n192.0.2.1\n", "x".repeat(10_000));
        let parsed = parse(FeedFormat::Plain, bad.as_bytes()).expect("parses");
        assert!(parsed.first_bad.expect("bad").1.chars().count() <= 121);
    }
}
