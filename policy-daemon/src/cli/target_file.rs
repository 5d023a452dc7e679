//! Reading a list of targets, one per line, as a stream: a file of any
//! size is read in bounded memory, and a line too long to be a target is
//! reported without being kept.

use std::io::{self, BufRead, Read as _};

use ipnet::IpNet;

use crate::bans::parse_target;

/// Longest line taken as a possible target, with a comment after it.
pub const MAX_LINE: usize = 512;

/// One target line: its number (from 1), its text without the comment,
/// and the target or what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetLine {
    pub line: usize,
    pub text: String,
    pub target: Result<IpNet, String>,
}

/// The target lines of `reader`; blank lines and `#` comments (whole-line
/// or trailing) are skipped, as `ban --file` does.
pub struct TargetLines<R> {
    reader: R,
    line: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> TargetLines<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            line: 0,
            buf: Vec::new(),
        }
    }
}

impl<R: BufRead> Iterator for TargetLines<R> {
    type Item = io::Result<TargetLine>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
            match (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.buf)
            {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) => return Some(Err(error)),
            }
            self.line += 1;
            let line = self.line;
            if self.buf.last() != Some(&b'\n') && self.buf.len() > MAX_LINE {
                if let Err(error) = self.reader.skip_until(b'\n') {
                    return Some(Err(error));
                }
                let start: String = String::from_utf8_lossy(&self.buf)
                    .chars()
                    .take(40)
                    .collect();
                return Some(Ok(TargetLine {
                    line,
                    text: format!("{start}…"),
                    target: Err(format!("line longer than {MAX_LINE} bytes")),
                }));
            }
            let Ok(text) = std::str::from_utf8(&self.buf) else {
                return Some(Ok(TargetLine {
                    line,
                    text: String::from_utf8_lossy(&self.buf).trim().to_owned(),
                    target: Err("not UTF-8 text".to_owned()),
                }));
            };
            let content = text
                .split_once('#')
                .map_or(text, |(before, _)| before)
                .trim();
            if content.is_empty() {
                continue;
            }
            return Some(Ok(TargetLine {
                line,
                text: content.to_owned(),
                target: parse_target(content).map_err(|e| e.to_string()),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8]) -> Vec<TargetLine> {
        TargetLines::new(text)
            .collect::<io::Result<_>>()
            .expect("reading memory")
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_and_bad_lines_numbered() {
        let read = lines(
            b"# header\n192.0.2.1\n\n  2001:db8::/64  # a prefix\nnope\r\n::ffff:198.51.100.7",
        );
        let summary: Vec<(usize, &str, bool)> = read
            .iter()
            .map(|l| (l.line, l.text.as_str(), l.target.is_ok()))
            .collect();
        assert_eq!(
            summary,
            [
                (2, "192.0.2.1", true),
                (4, "2001:db8::/64", true),
                (5, "nope", false),
                (6, "::ffff:198.51.100.7", true),
            ]
        );
        assert_eq!(read[3].target, Ok("198.51.100.7/32".parse().expect("net")));
    }

    #[test]
    fn an_endless_line_is_reported_without_being_kept() {
        let mut text = vec![b'1'; 10 * MAX_LINE];
        text.extend_from_slice(b"\n\xff\xfe\n192.0.2.9\n");
        let read = lines(&text);
        assert_eq!(read.len(), 3, "{read:?}");
        assert_eq!(read[0].line, 1);
        assert_eq!(
            read[0].target,
            Err(format!("line longer than {MAX_LINE} bytes"))
        );
        assert!(read[0].text.len() < 50, "{}", read[0].text);
        assert_eq!(read[1].target, Err("not UTF-8 text".to_owned()));
        assert_eq!((read[2].line, read[2].text.as_str()), (3, "192.0.2.9"));
    }
}
