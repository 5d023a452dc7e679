//! The `Received-SPF` header (RFC 7208 §9.1) Postfix prepends when the
//! answer is `PREPEND`.
//!
//! The sender and the HELO name come from the client: whatever they hold,
//! the header stays one line of printable ASCII (no CR, LF or NUL to end
//! the policy answer or start a header of the client's choosing), every
//! value bounded, quotes and parentheses escaped where they would end a
//! quoted string or a comment.

use std::fmt::Write as _;

use super::{Identity, Outcome, Query, SpfResult};

/// Longest value (sender, HELO name, receiver) written into the header.
pub const MAX_VALUE: usize = 255;

/// `Received-SPF: RESULT (COMMENT) client-ip=…; envelope-from="…";
/// helo=…; receiver=…; identity=…;` without the line ending.
pub fn received_spf(query: &Query, outcome: &Outcome, receiver: &str) -> String {
    let sender = printable(&query.sender);
    let helo = printable(&query.helo);
    let receiver = printable(receiver);
    let ip = query.ip;
    let who = match query.identity {
        Identity::MailFrom => format!("domain of {sender}"),
        Identity::Helo => format!("domain of {helo}"),
    };
    let comment = match outcome.result {
        SpfResult::Pass => format!("{who} designates {ip} as permitted sender"),
        SpfResult::Fail => format!("{who} does not designate {ip} as permitted sender"),
        SpfResult::SoftFail => {
            format!("{who} discourages use of {ip} as permitted sender")
        }
        SpfResult::Neutral => format!("{ip} is neither permitted nor denied by {who}"),
        SpfResult::None => format!("{who} does not publish SPF"),
        SpfResult::TempError => format!("temporary error looking up {who}"),
        SpfResult::PermError => format!("permanent error in the SPF record of {who}"),
    };
    let mut header = format!(
        "Received-SPF: {} ({}: {}) client-ip={ip}; envelope-from=",
        outcome.result,
        escape(&receiver, b"()\\"),
        escape(&comment, b"()\\"),
    );
    quoted(&mut header, &sender);
    header.push_str("; helo=");
    if is_dot_atom(&helo) {
        header.push_str(&helo);
    } else {
        quoted(&mut header, &helo);
    }
    header.push_str("; receiver=");
    if is_dot_atom(&receiver) {
        header.push_str(&receiver);
    } else {
        quoted(&mut header, &receiver);
    }
    let _ = write!(header, "; identity={};", query.identity.name());
    header
}

/// `text` as printable ASCII: anything else (controls, CR, LF, NUL, DEL,
/// non-ASCII) becomes `?`; at most [`MAX_VALUE`] characters.
fn printable(text: &str) -> String {
    text.chars()
        .take(MAX_VALUE)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// `text` with a backslash before each of `special`.
fn escape(text: &str, special: &[u8]) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if u8::try_from(c).is_ok_and(|b| special.contains(&b)) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Appends `text` as a quoted-string (RFC 5322 §3.2.4).
fn quoted(out: &mut String, text: &str) {
    out.push('"');
    out.push_str(&escape(text, b"\"\\"));
    out.push('"');
}

/// Whether `text` is a dot-atom (RFC 5322 §3.2.3) and can go unquoted.
fn is_dot_atom(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(result: SpfResult) -> Outcome {
        Outcome {
            result,
            reason: String::new(),
            lookups: 0,
            voids: 0,
        }
    }

    #[test]
    fn the_header_follows_rfc_7208() {
        let query = Query::for_mail(
            "192.0.2.1".parse().expect("ip"),
            Some("myname@example.com"),
            Some("foo.example.com"),
        )
        .expect("query");
        assert_eq!(
            received_spf(&query, &outcome(SpfResult::Pass), "mybox.example.org"),
            "Received-SPF: pass (mybox.example.org: domain of myname@example.com designates \
             192.0.2.1 as permitted sender) client-ip=192.0.2.1; \
             envelope-from=\"myname@example.com\"; helo=foo.example.com; \
             receiver=mybox.example.org; identity=mailfrom;"
        );
        let bounce = Query::for_mail(
            "2001:db8::1".parse().expect("ip"),
            Some(""),
            Some("mx.example.net"),
        )
        .expect("query");
        let header = received_spf(&bounce, &outcome(SpfResult::SoftFail), "mx");
        assert!(
            header.starts_with("Received-SPF: softfail (mx: domain of mx.example.net "),
            "{header}"
        );
        assert!(
            header.ends_with(
                "client-ip=2001:db8::1; envelope-from=\"postmaster@mx.example.net\"; \
                 helo=mx.example.net; receiver=mx; identity=helo;"
            ),
            "{header}"
        );
    }

    #[test]
    fn client_values_cannot_break_the_line_or_the_fields() {
        let query = Query::for_mail(
            "198.51.100.7".parse().expect("ip"),
            Some("evil\r\nX-Injected: yes\0\"; receiver=forged (x)@example.org"),
            Some(&format!("bad\nhelo ({})\u{e9}", "h".repeat(1000))),
        )
        .expect("query");
        for result in SpfResult::ALL {
            let header = received_spf(&query, &outcome(result), "mx.example.net");
            assert!(
                header.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
                "{header:?}"
            );
            assert!(header.len() < 1200, "{}", header.len());
            assert!(
                header.contains(
                    r#"envelope-from="evil??X-Injected: yes?\"; receiver=forged (x)@example.org";"#
                ),
                "{header}"
            );
            assert!(
                header.ends_with("; receiver=mx.example.net; identity=mailfrom;"),
                "{header}"
            );
            assert!(
                header.contains("helo=\"bad?helo ("),
                "quoted, not a dot-atom: {header}"
            );
            assert!(
                header.contains(r#"yes?"; receiver=forged \(x\)@example.org designates"#)
                    || result != SpfResult::Pass,
                "the comment escapes parentheses: {header}"
            );
        }
    }
}
