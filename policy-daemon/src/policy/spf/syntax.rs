//! The record grammar of RFC 7208 §4.6.1, §5, §6 and §7.1, checked term
//! by term before `mail-auth` parses the record.
//!
//! `mail-auth`'s parser takes what it can: it stops at an unknown
//! mechanism and keeps the terms before it, reads `ip4:192.0.2.300` and
//! `/33` without complaint, accepts `a:example.com:8080` and a lone `%`.
//! Each of those is a `permerror` (§4.6: a record with a syntax error
//! fails as a whole), so the grammar is checked here first.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use mail_auth::{common::parse::TxtRecordParser as _, spf::Spf};

use crate::policy::cache::TtlCache;

/// A record parsed, or what is wrong with it.
pub type Parsed = Result<Arc<Spf>, Arc<str>>;

/// Records parsed before, by their text: a domain's record is parsed once,
/// not on every mail from it. The text is the key, so an entry is right
/// for as long as it is kept; DNS's TTL still decides which text is asked.
#[derive(Debug)]
pub struct ParsedRecords {
    cache: TtlCache<Box<[u8]>, Parsed>,
}

impl ParsedRecords {
    /// Records kept, about: a few hundred sending domains are most of a
    /// server's mail.
    const CAPACITY: usize = 4096;
    /// Longest record text kept. RFC 7208 §3.4 asks records to fit a
    /// 512-byte UDP answer; a longer one is parsed each time, so a peer's
    /// huge records cannot take much memory.
    const MAX_TEXT: usize = 512;
    /// How long a parsed record is kept, used or not.
    const KEEP: Duration = Duration::from_hours(1);

    pub fn new() -> Self {
        Self {
            cache: TtlCache::new(Self::CAPACITY),
        }
    }

    /// `text` parsed as [`parse_record`] parses it.
    pub fn parse(&self, text: &[u8]) -> Parsed {
        let parse = || parse_record(text).map(Arc::new).map_err(Arc::from);
        if text.len() > Self::MAX_TEXT {
            return parse();
        }
        let now = Instant::now();
        if let Some(parsed) = self.cache.get(text, now, Clone::clone) {
            return parsed;
        }
        let parsed = parse();
        self.cache
            .insert(text.into(), parsed.clone(), now + Self::KEEP, now);
        parsed
    }
}

impl Default for ParsedRecords {
    fn default() -> Self {
        Self::new()
    }
}

/// A `v=spf1` record as DNS gave it, parsed: ASCII, the grammar checked
/// here, then `mail-auth`'s structure. The error says what is wrong.
pub fn parse_record(text: &[u8]) -> Result<Spf, String> {
    let record = std::str::from_utf8(text)
        .ok()
        .filter(|record| record.is_ascii())
        .ok_or("not ASCII")?;
    check_record(record)?;
    Spf::parse(text).map_err(|error| error.to_string())
}

/// Checks `record` (`v=spf1 …`, ASCII); the error names the first term at
/// fault.
pub fn check_record(record: &str) -> Result<(), String> {
    let mut terms = record.split(' ').filter(|term| !term.is_empty());
    terms.next();
    let (mut redirect, mut exp) = (false, false);
    for term in terms {
        check_term(term, &mut redirect, &mut exp).map_err(|why| format!("{term:?}: {why}"))?;
    }
    Ok(())
}

fn check_term(term: &str, redirect: &mut bool, exp: &mut bool) -> Result<(), &'static str> {
    // A modifier is `name=…` with a name of ALPHA *(ALPHA / DIGIT / - _ .).
    if let Some((name, value)) = term.split_once('=')
        && is_modifier_name(name)
    {
        let seen = match name.to_ascii_lowercase().as_str() {
            "redirect" => redirect,
            "exp" => exp,
            _ => return macro_string(value, false),
        };
        if std::mem::replace(seen, true) {
            return Err("redirect= and exp= may each appear once");
        }
        return domain_spec(value);
    }
    let body = term.strip_prefix(['+', '-', '~', '?']).unwrap_or(term);
    let (name, rest) = body
        .find([':', '/'])
        .map_or((body, ""), |at| body.split_at(at));
    match name.to_ascii_lowercase().as_str() {
        "all" if rest.is_empty() => Ok(()),
        "include" | "exists" => domain_spec(rest.strip_prefix(':').ok_or("needs :domain")?),
        "ptr" => match rest.strip_prefix(':') {
            None if rest.is_empty() => Ok(()),
            None => Err("no CIDR length after ptr"),
            Some(spec) => domain_spec(spec),
        },
        "a" | "mx" => {
            let (spec, cidr) = match rest.strip_prefix(':') {
                Some(spec) => spec.find('/').map_or((Some(spec), ""), |at| {
                    let (spec, cidr) = spec.split_at(at);
                    (Some(spec), cidr)
                }),
                None => (None, rest),
            };
            if let Some(spec) = spec {
                domain_spec(spec)?;
            }
            dual_cidr(cidr)
        }
        "ip4" => {
            let network = rest.strip_prefix(':').ok_or("needs :address")?;
            let (addr, cidr) = network.split_once('/').unwrap_or((network, ""));
            if !is_ip4(addr) {
                return Err("not an IPv4 address");
            }
            if network.contains('/') {
                cidr_length(cidr, 32)?;
            }
            Ok(())
        }
        "ip6" => {
            let network = rest.strip_prefix(':').ok_or("needs :address")?;
            let (addr, cidr) = network.split_once('/').unwrap_or((network, ""));
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("not an IPv6 address");
            }
            if network.contains('/') {
                cidr_length(cidr, 128)?;
            }
            Ok(())
        }
        _ => Err("unknown mechanism"),
    }
}

fn is_modifier_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `ip4-network`: four decimal octets, no leading zeros.
fn is_ip4(text: &str) -> bool {
    let octets: Vec<&str> = text.split('.').collect();
    octets.len() == 4
        && octets.iter().all(|octet| {
            !octet.is_empty()
                && octet.len() <= 3
                && octet.bytes().all(|b| b.is_ascii_digit())
                && (octet.len() == 1 || !octet.starts_with('0'))
                && octet.parse::<u16>().is_ok_and(|value| value <= 255)
        })
}

/// A CIDR length without its `/`: decimal, no leading zero, at most `max`.
fn cidr_length(text: &str, max: u8) -> Result<(), &'static str> {
    if text.is_empty()
        || text.len() > 3
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
        || text.parse::<u8>().map_or(true, |length| length > max)
    {
        return Err("bad CIDR length");
    }
    Ok(())
}

/// `[ "/" ip4-cidr-length ] [ "//" ip6-cidr-length ]`, with its slashes.
fn dual_cidr(text: &str) -> Result<(), &'static str> {
    if text.is_empty() {
        return Ok(());
    }
    let (ip4, ip6) = match text.split_once("//") {
        Some((ip4, ip6)) => (ip4, Some(ip6)),
        None => (text, None),
    };
    if !ip4.is_empty() {
        cidr_length(ip4.strip_prefix('/').ok_or("bad CIDR length")?, 32)?;
    }
    if let Some(ip6) = ip6 {
        cidr_length(ip6, 128)?;
    }
    Ok(())
}

/// `domain-spec`: a macro string ending in `.toplabel[.]` or a macro.
fn domain_spec(text: &str) -> Result<(), &'static str> {
    macro_string(text, false)?;
    if text.ends_with('}') || text.ends_with("%%") || text.ends_with("%_") || text.ends_with("%-") {
        return Ok(());
    }
    let text = text.strip_suffix('.').unwrap_or(text);
    let (_, top) = text
        .rsplit_once('.')
        .ok_or("not a fully qualified domain")?;
    let alphanumeric = top.bytes().all(|b| b.is_ascii_alphanumeric());
    let toplabel = !top.is_empty()
        && ((alphanumeric && top.bytes().any(|b| b.is_ascii_alphabetic()))
            || (top.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !top.starts_with('-')
                && !top.ends_with('-')
                && top.contains('-')));
    if toplabel {
        Ok(())
    } else {
        Err("not a fully qualified domain")
    }
}

/// `macro-string` (§7.1): literals `%x21-24 / %x26-7E` and macros;
/// `c`, `r` and `t` only in `exp` text.
fn macro_string(text: &str, explanation: bool) -> Result<(), &'static str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match bytes.get(i + 1) {
                Some(b'%' | b'_' | b'-') => i += 2,
                Some(b'{') => {
                    let end = text[i..].find('}').ok_or("unterminated macro")? + i;
                    macro_expand(&text[i + 2..end], explanation)?;
                    i = end + 1;
                }
                _ => return Err("a % that starts no macro"),
            },
            0x21..=0x7e => i += 1,
            _ => return Err("a character outside printable ASCII"),
        }
    }
    Ok(())
}

/// The inside of `%{…}`: a letter, digits, an optional `r`, delimiters.
fn macro_expand(inside: &str, explanation: bool) -> Result<(), &'static str> {
    let mut chars = inside.chars();
    match chars.next().map(|c| c.to_ascii_lowercase()) {
        Some('s' | 'l' | 'o' | 'd' | 'i' | 'p' | 'h' | 'v') => {}
        Some('c' | 'r' | 't') if explanation => {}
        _ => return Err("unknown macro letter"),
    }
    let rest = chars.as_str();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let mut rest = &rest[digits..];
    rest = rest.strip_prefix(['r', 'R']).unwrap_or(rest);
    if rest
        .chars()
        .all(|c| matches!(c, '.' | '-' | '+' | ',' | '/' | '_' | '='))
    {
        Ok(())
    } else {
        Err("bad macro transformer or delimiter")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_records_pass() {
        for record in [
            "v=spf1",
            "v=spf1 -all",
            "v=spf1  ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx ptr -all ",
            "v=spf1 a:mail.example.org/24//64 mx/28 MX:example.org ~ALL",
            "v=spf1 include:_spf.example.org exists:%{ir}.%{l1r-}.lp._spf.%{d} ?all",
            "v=spf1 redirect=_spf.example.org",
            "v=spf1 exp=explain.%{d} -all",
            "v=spf1 ip4:0.0.0.0/0 foo=bar moo.x-y_z=%{d}",
            "v=spf1 a:%{d} mx:example.org. ptr:example.org",
            "v=spf1 exists:%{i}.%{v}.%{h}._spf.example.org",
        ] {
            assert_eq!(check_record(record), Ok(()), "{record}");
        }
    }

    #[test]
    fn malformed_records_name_the_term() {
        for (record, term) in [
            ("v=spf1 ip4:192.0.2.300 -all", "ip4:192.0.2.300"),
            ("v=spf1 ip4:1.2.03.4 -all", "ip4:1.2.03.4"),
            ("v=spf1 ip4:192.0.2.0/33", "ip4:192.0.2.0/33"),
            ("v=spf1 ip4:192.0.2.0/", "ip4:192.0.2.0/"),
            ("v=spf1 ip6:2001:db8::/129", "ip6:2001:db8::/129"),
            ("v=spf1 ip6:2001:db8:zz::", "ip6:2001:db8:zz::"),
            ("v=spf1 moo -all", "moo"),
            ("v=spf1 =a", "=a"),
            ("v=spf1 a:example.com:8080", "a:example.com:8080"),
            ("v=spf1 a:localhost", "a:localhost"),
            ("v=spf1 a:%{d}.", "a:%{d}."),
            ("v=spf1 -all:3030", "-all:3030"),
            ("v=spf1 redirect=a.test redirect=b.test", "redirect=b.test"),
            ("v=spf1 exists -all", "exists"),
            ("v=spf1 include", "include"),
            ("v=spf1 exists:%{z}.example.org", "exists:%{z}.example.org"),
            ("v=spf1 exists:%{i}%", "exists:%{i}%"),
            ("v=spf1 exists:%{i.example.org", "exists:%{i.example.org"),
            ("v=spf1 a:%{c}.example.org", "a:%{c}.example.org"),
            ("v=spf1 mx//129", "mx//129"),
            ("v=spf1 a/24/64", "a/24/64"),
            ("v=spf1 ptr/24", "ptr/24"),
            ("v=spf1 ip4:192.0.2.1,", "ip4:192.0.2.1,"),
        ] {
            let error = check_record(record).expect_err(record);
            assert!(
                error.starts_with(&format!("{term:?}: ")),
                "{record}: {error}"
            );
        }
    }

    #[test]
    fn a_record_parsed_again_is_the_same_record() {
        let parsed = ParsedRecords::new();
        let long = format!("v=spf1 {}-all", "ip4:192.0.2.1 ".repeat(40));
        for text in [
            "v=spf1 ip4:192.0.2.0/24 -all",
            "v=spf1 ip4:192.0.2.300 -all",
            long.as_str(),
        ] {
            let fresh = parse_record(text.as_bytes());
            for _ in 0..2 {
                let again = parsed.parse(text.as_bytes());
                assert_eq!(
                    again.as_deref().map_err(|e| &**e),
                    fresh.as_ref().map_err(String::as_str),
                    "{text}"
                );
            }
        }
        let first = parsed.parse(b"v=spf1 -all").expect("valid");
        let second = parsed.parse(b"v=spf1 -all").expect("valid");
        assert!(Arc::ptr_eq(&first, &second), "kept, not parsed again");
        let first = parsed.parse(long.as_bytes()).expect("valid");
        let second = parsed.parse(long.as_bytes()).expect("valid");
        assert!(!Arc::ptr_eq(&first, &second), "too long to keep");
    }
}
