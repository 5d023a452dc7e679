//! `spamwall list`: the active bans, filtered by the daemon, printed as
//! they arrive: a JSON array written element by element, or a table of
//! fixed column widths. Memory stays that of one chunk of bans whatever the
//! length of the list.

use std::{
    io::{self, BufWriter, Write as _},
    path::Path,
};

use clap::Args;
use serde::de::IntoDeserializer as _;

use serde::Deserialize as _;

use super::{Failure, printable, unexpected};
use crate::{
    bans::{BanEntry, SourceFilter, parse_target, target_to_string},
    control::{self, ListRequest, ListSort, Request, Response},
    duration::Span,
};

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON: one array of bans
    #[arg(long)]
    pub json: bool,
    /// Only bans made by policy, cli, logwatch, fleet, feed or one feed (feed:NAME)
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<SourceFilter>,
    /// Only bans inside this address or prefix: addresses and prefixes it contains, itself included
    #[arg(long, value_name = "CIDR")]
    pub prefix: Option<String>,
    /// At most N bans
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Order: `packets`, most packets dropped first (with --limit N: the N
    /// bans that dropped most); by address without it
    #[arg(long, value_name = "ORDER", value_parser = parse_sort)]
    pub sort: Option<ListSort>,
    /// Only bans that end within DURATION (90s, 10m, 1h, 1d); permanent bans never do
    #[arg(long, value_name = "DURATION")]
    pub expiring_within: Option<String>,
}

impl ListArgs {
    const fn filtered(&self) -> bool {
        self.source.is_some()
            || self.prefix.is_some()
            || self.limit.is_some()
            || self.expiring_within.is_some()
            || self.sort.is_some()
    }

    /// The streamed request, or a usage error before anything is sent.
    fn request(&self) -> Result<ListRequest, Failure> {
        let prefix = self
            .prefix
            .as_deref()
            .map(|text| {
                parse_target(text)
                    .map(|net| target_to_string(&net))
                    .map_err(|e| Failure::usage(format!("--prefix: {e}; nothing was sent")))
            })
            .transpose()?;
        let expiring_within = self
            .expiring_within
            .as_deref()
            .map(|text| {
                Span::deserialize(text.into_deserializer())
                    .map(|span| span.0.as_secs())
                    .map_err(|e: serde::de::value::Error| {
                        Failure::usage(format!("--expiring-within {text:?}: {e}; nothing was sent"))
                    })
            })
            .transpose()?;
        Ok(ListRequest {
            source: self.source.as_ref().map(|filter| filter.source),
            feed: self.source.as_ref().and_then(|filter| filter.feed.clone()),
            prefix,
            limit: self.limit,
            expiring_within,
            sort: self.sort,
            stream: true,
        })
    }
}

fn parse_sort(text: &str) -> Result<ListSort, String> {
    ListSort::deserialize(text.into_deserializer())
        .map_err(|e: serde::de::value::Error| e.to_string())
}

/// Asks the daemon for the bans and prints them as they come. A list the
/// daemon cuts short fails (exit 1) and never prints the JSON array's end.
pub fn list(socket: &Path, args: &ListArgs) -> Result<(), Failure> {
    let request = args.request()?;
    let mut answers = control::request_lines(socket, &Request::List(request))
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let mut printer = Printer::new(args.json, args.filtered());
    let written = loop {
        let answer = answers
            .next_answer()
            .map_err(|e| Failure::runtime(e.to_string()))?;
        match answer {
            Some(Response::BanChunk { bans }) => {
                if let Err(error) = printer.bans(&bans) {
                    break Err(error);
                }
            }
            Some(Response::ListEnd { listed }) => {
                if listed != printer.count {
                    return Err(Failure::runtime(format!(
                        "the daemon listed {listed} bans but {} arrived",
                        printer.count
                    )));
                }
                break printer.finish();
            }
            // A daemon older than filters and streaming: the whole list.
            Some(Response::Bans { bans }) if !args.filtered() => {
                break printer.bans(&bans).and_then(|()| printer.finish());
            }
            Some(Response::Bans { .. }) => {
                return Err(Failure::runtime(
                    "the daemon is older than `list` filters and listed every ban; \
                     restart it on this version",
                ));
            }
            Some(Response::Error { message }) => {
                return Err(Failure::runtime(format!("the daemon answered: {message}")));
            }
            Some(other) => return Err(unexpected(&other)),
            None => {
                return Err(Failure::runtime(format!(
                    "the daemon closed the connection after {} bans, before the end of the list",
                    printer.count
                )));
            }
        }
    };
    match written {
        // `spamwall list | head` is not an error.
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(error) => Err(Failure::runtime(format!("writing the list: {error}"))),
        Ok(()) => Ok(()),
    }
}

/// Writes bans to standard output as they come, flushed after each chunk.
struct Printer {
    out: BufWriter<io::StdoutLock<'static>>,
    json: bool,
    filtered: bool,
    count: u64,
}

impl Printer {
    fn new(json: bool, filtered: bool) -> Self {
        Self {
            out: BufWriter::with_capacity(64 << 10, io::stdout().lock()),
            json,
            filtered,
            count: 0,
        }
    }

    fn bans(&mut self, bans: &[BanEntry]) -> io::Result<()> {
        for ban in bans {
            if self.json {
                self.out
                    .write_all(if self.count == 0 { b"[\n" } else { b",\n" })?;
                self.out.write_all(json_element(ban)?.as_bytes())?;
            } else {
                if self.count == 0 {
                    self.out.write_all(TABLE_HEADER.as_bytes())?;
                }
                self.out.write_all(ban_row(ban).as_bytes())?;
            }
            self.count += 1;
        }
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        let end = match (self.json, self.count, self.filtered) {
            (true, 0, _) => "[]\n",
            (true, _, _) => "\n]\n",
            (false, 0, false) => "no active bans\n",
            (false, 0, true) => "no active bans match\n",
            (false, _, _) => "",
        };
        self.out.write_all(end.as_bytes())?;
        self.out.flush()
    }
}

/// `ban` as an element of the pretty-printed array: the same text
/// `serde_json::to_string_pretty` gives the whole array, one element at a
/// time (strings are escaped, so every line break is the formatter's).
fn json_element(ban: &BanEntry) -> io::Result<String> {
    let text = serde_json::to_string_pretty(ban).map_err(io::Error::other)?;
    Ok(format!("  {}", text.replace('\n', "\n  ")))
}

/// The header of the human form; the columns have fixed widths, so each
/// row is printed as it arrives.
pub const TABLE_HEADER: &str = concat!(
    "ADDRESS                                  EXPIRES (UTC)         SOURCE    COUNT",
    "      PACKETS  LAST HIT (UTC)        REASON\n"
);

/// One ban as a row of the human form; control characters in the reason
/// are escaped.
pub fn ban_row(ban: &BanEntry) -> String {
    let expires = ban
        .expires_at
        .map_or_else(|| "permanent".to_owned(), crate::clock::rfc3339);
    let last_hit = ban
        .last_hit
        .map_or_else(|| "-".to_owned(), crate::clock::rfc3339);
    format!(
        "{:<40} {:<21} {:<9} {:>5} {:>12}  {:<21} {}\n",
        target_to_string(&ban.addr),
        expires,
        ban.source.to_string(),
        ban.count,
        ban.packets,
        last_hit,
        printable(&ban.reason)
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use clap::Parser as _;

    use super::*;
    use crate::{
        bans::Source,
        cli::{Cli, Command},
    };

    fn entry(addr: &str, reason: &str) -> BanEntry {
        BanEntry {
            addr: parse_target(addr).expect("net"),
            expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_hours(500_000)),
            source: Source::Fleet,
            reason: reason.into(),
            detail: "zen=127.0.0.2".into(),
            count: 2,
            ports: Some(vec![25]),
            packets: 1234,
            last_hit: Some(SystemTime::UNIX_EPOCH + Duration::from_hours(400_000)),
        }
    }

    #[test]
    fn the_header_matches_the_rows() {
        let header = format!(
            "{:<40} {:<21} {:<9} {:>5} {:>12}  {:<21} REASON\n",
            "ADDRESS", "EXPIRES (UTC)", "SOURCE", "COUNT", "PACKETS", "LAST HIT (UTC)"
        );
        assert_eq!(TABLE_HEADER, header);
        let ban = entry("2001:db8::/64", "spam run");
        let row = ban_row(&ban);
        let expires = crate::clock::rfc3339(ban.expires_at.expect("expiry"));
        assert_eq!(row.find(&expires), header.find("EXPIRES"), "{row}");
        assert_eq!(row.find("fleet"), header.find("SOURCE"), "{row}");
        let last_hit = crate::clock::rfc3339(ban.last_hit.expect("hit"));
        assert_eq!(row.find(&last_hit), header.find("LAST HIT"), "{row}");
        assert_eq!(
            row.find("1234").map(|at| at + 4),
            header.find("PACKETS").map(|at| at + 7),
            "{row}"
        );
        assert_eq!(row.find("spam run"), header.find("REASON"), "{row}");
    }

    #[test]
    fn rows_list_every_field_and_no_control_character() {
        let mut ban = entry("2001:db8::/64", "spam run");
        ban.expires_at = None;
        ban.last_hit = None;
        let row = ban_row(&ban);
        for field in [
            "2001:db8::/64",
            "permanent",
            "fleet",
            "2",
            "1234",
            " - ",
            "spam run",
        ] {
            assert!(row.contains(field), "{field} missing: {row}");
        }
        let hostile = entry(
            "192.0.2.7",
            "ok\u{1b}[2J\u{1b}[1;1Hbanned nothing\r\nfake line\u{7}",
        );
        let row = ban_row(&hostile);
        assert_eq!(row.lines().count(), 1, "{row}");
        assert!(!row.trim_end().chars().any(char::is_control), "{row:?}");
        assert!(row.contains("ok\\u{1b}[2J"), "{row}");
    }

    #[test]
    fn elements_printed_one_by_one_make_the_pretty_array() {
        let bans = [
            entry("192.0.2.7", "line\nbreak \"quoted\""),
            entry("2001:db8::/64", ""),
        ];
        let mut text = String::new();
        for (i, ban) in bans.iter().enumerate() {
            text.push_str(if i == 0 { "[\n" } else { ",\n" });
            text.push_str(&json_element(ban).expect("json"));
        }
        text.push_str("\n]");
        assert_eq!(text, serde_json::to_string_pretty(&bans).expect("json"));
        let parsed: Vec<BanEntry> = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed, bans);
    }

    fn parse(args: &[&str]) -> Result<ListArgs, clap::Error> {
        let mut all = vec!["spamwall", "list"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|cli| match cli.command {
            Command::List(args) => args,
            other => panic!("not list: {other:?}"),
        })
    }

    #[test]
    fn filters_become_the_request_and_bad_ones_are_refused_before_sending() {
        let args = parse(&[
            "--json",
            "--source",
            "logwatch",
            "--prefix",
            "2001:DB8::/32",
            "--limit",
            "10",
            "--expiring-within",
            "1h 30m",
            "--sort",
            "packets",
        ])
        .expect("parse");
        assert!(args.json && args.filtered());
        assert_eq!(
            args.request().ok(),
            Some(ListRequest {
                source: Some(Source::Logwatch),
                prefix: Some("2001:db8::/32".into()),
                limit: Some(10),
                expiring_within: Some(5400),
                sort: Some(ListSort::Packets),
                stream: true,
                ..ListRequest::default()
            })
        );
        let one_feed = parse(&["--source", "feed:spamhaus-drop"]).expect("parse");
        assert_eq!(
            one_feed.request().ok(),
            Some(ListRequest {
                source: Some(Source::Feed),
                feed: Some("spamhaus-drop".into()),
                stream: true,
                ..ListRequest::default()
            })
        );
        let plain = parse(&[]).expect("parse");
        assert!(!plain.filtered());
        assert_eq!(
            plain.request().ok(),
            Some(ListRequest {
                stream: true,
                ..ListRequest::default()
            })
        );
        for (args, named) in [
            (&["--prefix", "192.0.2.5/24"][..], "192.0.2.0/24"),
            (&["--prefix", "nope"], "\"nope\""),
            (&["--expiring-within", "soon"], "\"soon\""),
            (&["--expiring-within", "0"], "longer than zero"),
        ] {
            let failure = parse(args).expect("parse").request().expect_err("refused");
            assert_eq!(failure.code, 2);
            assert!(
                failure.message.contains(named) && failure.message.contains("nothing was sent"),
                "{}",
                failure.message
            );
        }
        for bad in [
            &["--source", "martian"][..],
            &["--source", "feed:a b"],
            &["--source", "cli:x"],
            &["--limit", "-1"],
            &["--limit", "ten"],
            &["--sort", "bytes"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
