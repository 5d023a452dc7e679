//! Postfix's policy delegation protocol (`SMTPD_POLICY_README`): the only
//! module that knows its byte format.
//!
//! A request is `name=value` lines, each ended by `\n`, ended by an empty
//! line. Values may contain `=`; unknown attributes are kept but nothing
//! has to look at them. A reply is `action=…` and an empty line.
//!
//! The [`Decoder`] works on a connection's read buffer: it takes one
//! complete request off its front, or says it needs more bytes, or refuses
//! the input with a [`CodecError`] as soon as the framing breaks (a line
//! without `=`, a limit crossed), so a hostile peer cannot make the buffer
//! grow past `max_request_size`. A well-framed line whose name or value is
//! unusable (invalid UTF-8, control bytes, an empty name) does not break
//! the framing: it is left out of the request and reported as a
//! [`BadAttribute`], and the request is answered as usual.

mod scan;

use std::ops::Range;

use scan::{scan_line, scan_request};

/// Protocol limits, from `[policy]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest line in bytes, without its `\n`.
    pub max_line_length: usize,
    /// Most attributes in one request.
    pub max_attributes: usize,
    /// Largest request in bytes, every line and the final empty one.
    pub max_request_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_length: 4096,
            max_attributes: 100,
            max_request_size: 64 * 1024,
        }
    }
}

/// Why a request was refused: its framing is broken. The connection is
/// closed after any of these: the peer does not speak the protocol, and
/// guessing where the next request starts would be unsafe.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("line {line} has no '=' (expected name=value)")]
    NoEquals { line: usize },
    #[error("line {line} is longer than {limit} bytes")]
    LineTooLong { line: usize, limit: usize },
    #[error("more than {limit} attributes")]
    TooManyAttributes { limit: usize },
    #[error("request larger than {limit} bytes")]
    RequestTooLarge { limit: usize },
    #[error("empty request (an empty line before any attribute)")]
    Empty,
}

/// What is wrong with a well-framed attribute line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttributeProblem {
    #[error("empty attribute name")]
    EmptyName,
    #[error("not valid UTF-8")]
    InvalidUtf8,
    #[error("control byte {0:#04x}")]
    ControlByte(u8),
}

/// An attribute left out of its request, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadAttribute {
    /// Line number within the request, from 1.
    pub line: usize,
    /// The name, escaped and cut to [`MAX_LOGGED_NAME`] characters: safe
    /// to log whatever the peer sent.
    pub name: String,
    pub problem: AttributeProblem,
}

/// Longest attribute name kept in a [`BadAttribute`].
pub const MAX_LOGGED_NAME: usize = 64;

/// One attribute: byte ranges of its name and value in the request text.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Attribute {
    name: Range<u32>,
    value: Range<u32>,
    /// Line number within the request, from 1.
    line: u32,
}

/// A complete policy request: the attributes in the order received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    text: String,
    attributes: Vec<Attribute>,
    bad: Vec<BadAttribute>,
}

impl Request {
    #[cfg(any(test, feature = "test-support"))]
    /// The value of the first attribute called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| &self.text[range(&a.name)] == name)
            .map(|a| &self.text[range(&a.value)])
    }

    /// Every attribute, in order, duplicates included.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attributes
            .iter()
            .map(|a| (&self.text[range(&a.name)], &self.text[range(&a.value)]))
    }

    #[cfg(any(test, feature = "test-support"))]
    /// How many attributes the request has.
    pub fn len(&self) -> usize {
        self.attributes.len()
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Whether the request has no attribute: a decoded one only when
    /// every attribute was left out as bad.
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }

    /// The attributes left out because their name or value was unusable.
    pub fn bad_attributes(&self) -> &[BadAttribute] {
        &self.bad
    }

    #[cfg(any(test, feature = "test-support"))]
    /// A request from `name=value` pairs, for tests and `spamwall query`.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut request = Self {
            text: String::new(),
            attributes: Vec::new(),
            bad: Vec::new(),
        };
        for (name, value) in pairs {
            request.push(name, value);
        }
        request
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Appends the attribute `name=value`.
    fn push(&mut self, name: &str, value: &str) {
        let start = offset(self.text.len());
        self.text.push_str(name);
        let eq = offset(self.text.len());
        self.text.push_str(value);
        self.attributes.push(Attribute {
            name: start..eq,
            value: eq..offset(self.text.len()),
            line: offset(self.attributes.len() + 1),
        });
    }
}

fn range(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

/// Offsets fit in u32: requests are capped far below 4 GiB.
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Writes the reply for `action` (`DUNNO`, `reject text`, …) into `out`.
/// Line breaks in the action would end the reply early; they become
/// spaces.
pub fn encode_reply(action: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"action=");
    out.extend(
        action
            .bytes()
            .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\n\n");
}

/// Largest request text kept for reuse by [`Decoder::recycle`]; Postfix's
/// requests are well under it.
const MAX_SPARE_TEXT: usize = 4096;

/// Incremental request decoder for one connection.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    /// Bytes at the front of the buffer already checked, always at a line
    /// start: complete lines of the request being received.
    scanned: usize,
    /// Bytes after `scanned` already searched for a newline: a line that
    /// arrives a byte at a time is searched once, not once per byte.
    searched: usize,
    /// Attribute lines among the scanned lines, bad ones included.
    attributes: usize,
    /// Bad attribute lines among the scanned lines.
    bad: Vec<BadAttribute>,
    /// Where the bad lines are, to be blanked out of the request text.
    bad_lines: Vec<Range<u32>>,
    /// The other attribute lines; their UTF-8 is checked once for the
    /// whole request when it is taken.
    found: Vec<Attribute>,
    /// Storage of a request already answered, for the next one to take
    /// (see [`Decoder::recycle`]): a connection's requests then allocate
    /// nothing once the first is answered.
    spare: Option<(Vec<u8>, Vec<Attribute>)>,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub const fn new(limits: Limits) -> Self {
        Self {
            limits,
            scanned: 0,
            searched: 0,
            attributes: 0,
            bad: Vec::new(),
            bad_lines: Vec::new(),
            found: Vec::new(),
            spare: None,
        }
    }

    /// Takes back the storage of `request`, answered and no longer
    /// needed, for the next request to use. The storage of a request
    /// larger than [`MAX_SPARE_TEXT`] is let go: a peer's one huge
    /// request does not stay allocated for the connection's life.
    pub fn recycle(&mut self, request: Request) {
        let mut text = request.text.into_bytes();
        if text.capacity() > MAX_SPARE_TEXT {
            return;
        }
        let mut attributes = request.attributes;
        text.clear();
        attributes.clear();
        self.spare = Some((text, attributes));
    }

    /// Whether part of a request has been received and not yet taken.
    pub const fn in_request(&self, buffer: &[u8]) -> bool {
        !buffer.is_empty() || self.scanned > 0
    }

    /// Whether `buffer` holds the end of a request beyond what was
    /// scanned: an empty line. The next [`Decoder::decode`] then needs no
    /// more bytes (it returns that request or refuses the framing).
    pub fn complete_request_buffered(&self, buffer: &[u8]) -> bool {
        let rest = buffer.get(self.scanned..).unwrap_or_default();
        rest.first() == Some(&b'\n')
            || rest.starts_with(b"\r\n")
            || memchr::memmem::find(rest, b"\n\n").is_some()
            || memchr::memmem::find(rest, b"\n\r\n").is_some()
    }

    /// Takes one complete request off the front of `buffer`. `Ok(None)`:
    /// more bytes are needed. After an error the decoder and the buffer are
    /// in no defined state; close the connection.
    pub fn decode(&mut self, buffer: &mut Vec<u8>) -> Result<Option<Request>, CodecError> {
        // Postfix sends a request in one piece, every line clean: then it
        // is taken in one pass; anything else is read line by line below.
        if self.scanned == 0 && self.searched == 0 {
            if let Some(empty_line) = scan_request(buffer, &self.limits, &mut self.found) {
                self.scanned = empty_line;
                self.attributes = self.found.len();
                return Ok(Some(self.take(buffer, empty_line + 1)));
            }
            self.found.clear();
        }
        loop {
            let rest = &buffer[self.scanned..];
            // A line seen whole in one pass: its end, first '=' and first
            // control byte. A line that came in part is searched on for
            // its end alone, then seen whole once.
            let scan = if self.searched == 0 {
                scan_line(rest)
            } else {
                memchr::memchr(b'\n', &rest[self.searched..])
                    .map(|found| scan_line(&rest[..=self.searched + found]))
                    .unwrap_or_default()
            };
            let Some(newline) = scan.newline else {
                self.searched = rest.len();
                if rest.len() > self.limits.max_line_length + 1 {
                    return Err(CodecError::LineTooLong {
                        line: self.attributes + 1,
                        limit: self.limits.max_line_length,
                    });
                }
                if buffer.len() > self.limits.max_request_size {
                    return Err(CodecError::RequestTooLarge {
                        limit: self.limits.max_request_size,
                    });
                }
                return Ok(None);
            };
            self.searched = 0;
            let line_number = self.attributes + 1;
            let mut line = &rest[..newline];
            // Hand-typed requests (telnet, nc -C) end lines with CRLF.
            if let [head @ .., b'\r'] = line {
                line = head;
            }
            let end = self.scanned + newline + 1;
            if end > self.limits.max_request_size {
                return Err(CodecError::RequestTooLarge {
                    limit: self.limits.max_request_size,
                });
            }
            if line.is_empty() {
                if self.attributes == 0 {
                    return Err(CodecError::Empty);
                }
                return Ok(Some(self.take(buffer, end)));
            }
            if line.len() > self.limits.max_line_length {
                return Err(CodecError::LineTooLong {
                    line: line_number,
                    limit: self.limits.max_line_length,
                });
            }
            let Some(equals) = scan.equals else {
                return Err(CodecError::NoEquals { line: line_number });
            };
            self.attributes += 1;
            if self.attributes > self.limits.max_attributes {
                return Err(CodecError::TooManyAttributes {
                    limit: self.limits.max_attributes,
                });
            }
            let start = self.scanned;
            // The '\r' ending a CRLF line is no control byte of it.
            let control = scan.control.filter(|&(at, _)| at < line.len());
            let problem = if equals == 0 {
                Some(AttributeProblem::EmptyName)
            } else {
                control.map(|(_, byte)| AttributeProblem::ControlByte(byte))
            };
            if let Some(problem) = problem {
                self.bad.push(BadAttribute {
                    line: line_number,
                    name: logged_name(&line[..equals]),
                    problem,
                });
                self.bad_lines
                    .push(offset(start)..offset(start + line.len()));
            } else {
                self.found.push(Attribute {
                    name: offset(start)..offset(start + equals),
                    value: offset(start + equals + 1)..offset(start + line.len()),
                    line: offset(line_number),
                });
            }
            self.scanned = end;
        }
    }

    /// Builds the request from the scanned lines, bad ones left out, and
    /// removes it, with its final empty line ending at `end`, from the
    /// buffer.
    fn take(&mut self, buffer: &mut Vec<u8>, end: usize) -> Request {
        let (mut bytes, next_found) = self.spare.take().unwrap_or_else(|| {
            (
                Vec::with_capacity(self.scanned),
                Vec::with_capacity(self.attributes.min(self.limits.max_attributes)),
            )
        });
        let mut attributes = std::mem::replace(&mut self.found, next_found);
        let mut bad = std::mem::take(&mut self.bad);
        bytes.extend_from_slice(&buffer[..self.scanned]);
        for line in self.bad_lines.drain(..) {
            bytes[range(&line)].fill(b' ');
        }
        // One check for the whole request; only when it fails are the
        // lines looked at one by one.
        let text = String::from_utf8(bytes).unwrap_or_else(|error| {
            let mut bytes = error.into_bytes();
            attributes.retain(|attribute| {
                let line = range(&(attribute.name.start..attribute.value.end));
                if std::str::from_utf8(&bytes[line.clone()]).is_ok() {
                    return true;
                }
                bad.push(BadAttribute {
                    line: attribute.line as usize,
                    name: logged_name(&bytes[range(&attribute.name)]),
                    problem: AttributeProblem::InvalidUtf8,
                });
                false
            });
            for problem in &bad {
                if problem.problem == AttributeProblem::InvalidUtf8
                    && let Some(line) = line_range(&bytes, problem.line)
                {
                    bytes[line].fill(b' ');
                }
            }
            bad.sort_by_key(|problem| problem.line);
            String::from_utf8(bytes).unwrap_or_else(|_| {
                attributes.clear();
                String::new()
            })
        });
        buffer.drain(..end);
        self.scanned = 0;
        self.attributes = 0;
        Request {
            text,
            attributes,
            bad,
        }
    }
}

/// The byte range of line `number` (from 1) in `text`, without its line
/// end.
fn line_range(text: &[u8], number: usize) -> Option<Range<usize>> {
    let mut start = 0;
    for _ in 1..number {
        start += memchr::memchr(b'\n', text.get(start..)?)? + 1;
    }
    let len = memchr::memchr(b'\n', text.get(start..)?).unwrap_or(text.len() - start);
    Some(start..start + len)
}

/// `name` as text that is safe to log: invalid UTF-8 replaced, control
/// characters escaped, at most [`MAX_LOGGED_NAME`] characters.
fn logged_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name)
        .chars()
        .take(MAX_LOGGED_NAME)
        .flat_map(char::escape_debug)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], limits: Limits) -> Result<Vec<Request>, CodecError> {
        let mut decoder = Decoder::new(limits);
        let mut buffer = input.to_vec();
        let mut requests = Vec::new();
        while let Some(request) = decoder.decode(&mut buffer)? {
            requests.push(request);
        }
        Ok(requests)
    }

    fn one(input: &[u8]) -> Result<Option<Request>, CodecError> {
        Decoder::new(Limits::default()).decode(&mut input.to_vec())
    }

    #[test]
    fn a_request_keeps_every_attribute_and_values_with_equals() {
        let request = one(b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a=b@example.org\nx_future=1\n\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(request.get("request"), Some("smtpd_access_policy"));
        assert_eq!(request.get("sender"), Some("a=b@example.org"));
        assert_eq!(request.get("x_future"), Some("1"));
        assert_eq!(request.get("recipient"), None);
        assert_eq!(request.len(), 4);
        let names: Vec<&str> = request.attributes().map(|(n, _)| n).collect();
        assert_eq!(names, ["request", "protocol_state", "sender", "x_future"]);
    }

    #[test]
    fn empty_values_crlf_and_duplicates() {
        let request = one(b"sender=\r\nccert_subject=\nsender=second\r\n\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(request.get("sender"), Some(""), "the first one counts");
        assert_eq!(request.len(), 3);
    }

    #[test]
    fn partial_input_needs_more_and_keeps_the_rest() {
        let mut decoder = Decoder::new(Limits::default());
        let mut buffer = b"a=1\nb=".to_vec();
        assert_eq!(decoder.decode(&mut buffer), Ok(None));
        assert!(decoder.in_request(&buffer));
        buffer.extend_from_slice(b"2\n");
        assert_eq!(decoder.decode(&mut buffer), Ok(None));
        buffer.extend_from_slice(b"\nc=3\n\nd=");
        let first = decoder.decode(&mut buffer).expect("ok").expect("first");
        assert_eq!(first.get("b"), Some("2"));
        let second = decoder.decode(&mut buffer).expect("ok").expect("second");
        assert_eq!(second.get("c"), Some("3"));
        assert_eq!(decoder.decode(&mut buffer), Ok(None));
        assert_eq!(buffer, b"d=");
    }

    #[test]
    fn a_request_fed_a_byte_at_a_time_is_the_same_request() {
        let long = "x".repeat(4000);
        let input = format!(
            "request=smtpd_access_policy\r\nhelo_name={long}\nclient_address=192.0.2.1\n\nrequest=smtpd_access_policy\n\n"
        );
        let whole = decode_all(input.as_bytes(), Limits::default()).expect("valid");
        let mut decoder = Decoder::new(Limits::default());
        let mut buffer = Vec::new();
        let mut requests = Vec::new();
        for &byte in input.as_bytes() {
            buffer.push(byte);
            while let Some(request) = decoder.decode(&mut buffer).expect("valid") {
                requests.push(request);
            }
        }
        assert_eq!(requests, whole);
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].get("helo_name"), Some(long.as_str()));
        // The line limit holds however the line arrives.
        let mut decoder = Decoder::new(Limits::default());
        let mut buffer = b"helo_name=".to_vec();
        let error = loop {
            buffer.push(b'x');
            match decoder.decode(&mut buffer) {
                Ok(None) => {}
                Ok(Some(request)) => panic!("no request yet: {request:?}"),
                Err(error) => break error,
            }
        };
        assert!(matches!(error, CodecError::LineTooLong { .. }), "{error}");
        assert!(buffer.len() <= Limits::default().max_line_length + 2);
    }

    #[test]
    fn requests_taken_whole_are_the_requests_read_line_by_line() {
        let limits = Limits {
            max_line_length: 40,
            max_attributes: 6,
            max_request_size: 160,
        };
        let pieces: [&[u8]; 12] = [
            b"a",
            b"name",
            b"=",
            b"==",
            b"value",
            b"\n",
            b"\n",
            b"\r\n",
            b"\t",
            b"\x01",
            b"\xc3\xa9",
            b"\x7f",
        ];
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..rng % 40 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let piece = pieces[usize::try_from(rng % 12).expect("small")];
                input.extend_from_slice(piece);
            }
            // Taken whole where it can be, against every line read alone.
            let whole = decode_all(&input, limits);
            let mut decoder = Decoder::new(limits);
            let mut buffer = Vec::new();
            let mut requests = Vec::new();
            let mut error = None;
            'bytes: for &byte in &input {
                buffer.push(byte);
                loop {
                    match decoder.decode(&mut buffer) {
                        Ok(Some(request)) => requests.push(request),
                        Ok(None) => break,
                        Err(e) => {
                            error = Some(e);
                            break 'bytes;
                        }
                    }
                }
            }
            match (whole, error) {
                (Ok(whole), None) => assert_eq!(whole, requests, "{input:?}"),
                (Err(whole), Some(error)) => assert_eq!(whole, error, "{input:?}"),
                (whole, error) => panic!("{input:?}: whole {whole:?}, by bytes {error:?}"),
            }
        }
    }

    #[test]
    fn recycled_storage_gives_the_same_requests() {
        // The second request is too large for its storage to be kept.
        let long = "x".repeat(MAX_SPARE_TEXT * 3 / 4);
        let mut input = format!("a=1\nb=2\n\nhelo_name={long}\nsender={long}\n\n").into_bytes();
        input.extend_from_slice(b"c=\xff\nd=4\n\ne=5\n\n");
        let whole = decode_all(&input, Limits::default()).expect("valid");
        let mut decoder = Decoder::new(Limits::default());
        let mut buffer = input;
        let mut requests = Vec::new();
        while let Some(request) = decoder.decode(&mut buffer).expect("valid") {
            requests.push(request.clone());
            decoder.recycle(request);
        }
        assert_eq!(requests, whole);
        assert_eq!(requests.len(), 4);
    }

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let requests =
            decode_all(b"n=1\n\nn=2\n\nn=3\n\n", Limits::default()).expect("three requests");
        let values: Vec<&str> = requests.iter().filter_map(|r| r.get("n")).collect();
        assert_eq!(values, ["1", "2", "3"]);
    }

    #[test]
    fn broken_framing_is_refused_with_a_reason() {
        assert_eq!(
            one(b"a=1\nnoequals\n\n"),
            Err(CodecError::NoEquals { line: 2 })
        );
        // Without an '=' the line is not an attribute, whatever its bytes.
        assert_eq!(
            one(b"a=1\n\xff\x00\n\n"),
            Err(CodecError::NoEquals { line: 2 })
        );
        assert_eq!(one(b"\n"), Err(CodecError::Empty));
        let message = CodecError::NoEquals { line: 2 }.to_string();
        assert!(
            message.contains("line 2") && message.contains('='),
            "{message}"
        );
    }

    #[test]
    fn a_bad_name_or_value_leaves_out_that_attribute_only() {
        let request = one(
            b"request=smtpd_access_policy\nhelo_name=\xc3\x28x\nsender=a\x00b@x\n=orphan\nx\x1b[1m=1\nclient_address=192.0.2.7\n\n",
        )
        .expect("well framed")
        .expect("complete");
        assert_eq!(request.get("request"), Some("smtpd_access_policy"));
        assert_eq!(request.get("client_address"), Some("192.0.2.7"));
        assert_eq!(request.get("helo_name"), None);
        assert_eq!(request.get("sender"), None);
        assert_eq!(request.len(), 2);
        assert_eq!(
            request.bad_attributes(),
            [
                BadAttribute {
                    line: 2,
                    name: "helo_name".to_owned(),
                    problem: AttributeProblem::InvalidUtf8,
                },
                BadAttribute {
                    line: 3,
                    name: "sender".to_owned(),
                    problem: AttributeProblem::ControlByte(0),
                },
                BadAttribute {
                    line: 4,
                    name: String::new(),
                    problem: AttributeProblem::EmptyName,
                },
                BadAttribute {
                    line: 5,
                    name: "x\\u{1b}[1m".to_owned(),
                    problem: AttributeProblem::ControlByte(0x1b),
                },
            ]
        );
        assert!(
            one(b"a=tab\there\n\n").is_ok_and(|r| r.is_some_and(|r| r.bad_attributes().is_empty()))
        );
        // A request made only of bad lines is still a request.
        let only_bad = one(b"a=\xff\n\n").expect("framed").expect("complete");
        assert!(only_bad.is_empty());
        assert_eq!(only_bad.bad_attributes().len(), 1);
    }

    #[test]
    fn a_logged_name_is_escaped_and_short() {
        let mut input = b"\x07".repeat(200);
        input.extend_from_slice(b"=1\n\n");
        let request = one(&input).expect("framed").expect("complete");
        let [bad] = request.bad_attributes() else {
            panic!("one bad attribute: {request:?}")
        };
        assert!(!bad.name.contains('\x07'), "{:?}", bad.name);
        assert_eq!(bad.name, r"\u{7}".repeat(MAX_LOGGED_NAME));
    }

    #[test]
    fn bad_lines_still_count_toward_the_limits() {
        let limits = Limits {
            max_line_length: 64,
            max_attributes: 2,
            max_request_size: 1024,
        };
        assert_eq!(
            decode_all(b"a=\xff\nb=\x01\nc=3\n\n", limits).map(|r| r.len()),
            Err(CodecError::TooManyAttributes { limit: 2 })
        );
        let pipelined = decode_all(b"a=\xff\n\nb=2\n\n", limits).expect("two requests");
        assert_eq!(pipelined.len(), 2);
        assert_eq!(pipelined[0].bad_attributes().len(), 1);
        assert!(
            pipelined[1].bad_attributes().is_empty(),
            "reset per request"
        );
        assert_eq!(pipelined[1].get("b"), Some("2"));
    }

    #[test]
    fn limits_are_enforced_before_the_buffer_grows() {
        let limits = Limits {
            max_line_length: 16,
            max_attributes: 3,
            max_request_size: 64,
        };
        // A complete line over the limit.
        assert_eq!(
            decode_all(b"a=0123456789abcdefg\n\n", limits).map(|r| r.len()),
            Err(CodecError::LineTooLong { line: 1, limit: 16 })
        );
        // A line that never ends is refused without waiting for its end.
        let mut decoder = Decoder::new(limits);
        let mut buffer = vec![b'a'; 18];
        assert_eq!(
            decoder.decode(&mut buffer),
            Err(CodecError::LineTooLong { line: 1, limit: 16 })
        );
        // Exactly at the limit is fine.
        let ok = decode_all(b"a=0123456789abcd\n\n", limits).expect("16 bytes");
        assert_eq!(ok.len(), 1);
        assert_eq!(
            decode_all(b"a=1\nb=2\nc=3\nd=4\n\n", limits).map(|r| r.len()),
            Err(CodecError::TooManyAttributes { limit: 3 })
        );
        assert_eq!(
            decode_all(b"a=0123456789\nb=0123456789\nc=0123456789\n\n", limits).map(|r| r.len()),
            Ok(1)
        );
        let big = Limits {
            max_line_length: 16,
            max_attributes: 100,
            max_request_size: 64,
        };
        let input: Vec<u8> = b"a=0123456789abc\n".repeat(5);
        assert_eq!(
            decode_all(&input, big).map(|r| r.len()),
            Err(CodecError::RequestTooLarge { limit: 64 })
        );
    }

    #[test]
    fn replies() {
        let mut out = Vec::new();
        encode_reply("DUNNO", &mut out);
        assert_eq!(out, b"action=DUNNO\n\n");
        out.clear();
        encode_reply("reject a\nb", &mut out);
        assert_eq!(out, b"action=reject a b\n\n");
    }

    /// A small xorshift generator: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_bytes_never_panic_and_never_exceed_the_limits() {
        let limits = Limits {
            max_line_length: 40,
            max_attributes: 8,
            max_request_size: 200,
        };
        let alphabet = b"ab=\n\n\n\r\0\xff\xc3\xa9x=1\t";
        let mut rng = Rng(0x5eed_cafe_f00d);
        for round in 0..20_000 {
            let mut decoder = Decoder::new(limits);
            let mut buffer = Vec::new();
            let len = usize::try_from(rng.next() % 300).expect("small");
            let mostly_text = round % 2 == 0;
            for _ in 0..len {
                let r = rng.next();
                let byte = if mostly_text {
                    alphabet[usize::try_from(r % alphabet.len() as u64).expect("small")]
                } else {
                    r.to_le_bytes()[0]
                };
                buffer.push(byte);
                match decoder.decode(&mut buffer) {
                    Ok(Some(request)) => {
                        let lines = request.len() + request.bad_attributes().len();
                        assert!(lines >= 1 && lines <= limits.max_attributes);
                    }
                    Ok(None) => assert!(buffer.len() <= limits.max_request_size + 1),
                    Err(_) => break,
                }
            }
        }
    }
}
