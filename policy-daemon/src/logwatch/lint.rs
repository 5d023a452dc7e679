//! Warnings about failregexes a log line's author can steer.
//!
//! A Postfix reject line names the client first and then text the client
//! chose: `RCPT from x[192.0.2.1]: 554 …; from=<sender> to=<…> helo=<…>`.
//! A failregex that is not anchored at the start of the line, or that
//! reaches `<HOST>` through a greedy `.*`, matches the *last* `[address]`
//! on the line: a bot that says `HELO c from d[203.0.113.9]` gets someone
//! else banned. fail2ban's own filters anchor every failregex with `^` and
//! reach the host with `\S+` or a lazy `.*?`.

/// The host tags of a failregex.
const HOST_TAGS: [&str; 4] = ["<HOST>", "<ADDR>", "<IP4>", "<IP6>"];

/// Whether `failregex` captures no host at all: no host tag and no
/// `host` group. A line it matches bans nobody.
pub fn has_no_host(failregex: &str) -> bool {
    !HOST_TAGS.iter().any(|tag| failregex.contains(tag))
        && !failregex.contains("(?P<host>")
        && !failregex.contains("(?<host>")
}

/// What is wrong with how `failregex` reaches its host, if anything.
pub fn host_not_anchored(failregex: &str) -> Option<&'static str> {
    let host = HOST_TAGS
        .iter()
        .filter_map(|tag| failregex.find(tag))
        .min()?;
    if !failregex.starts_with('^') {
        return Some(
            "is not anchored with `^`: it can match a host a client wrote later in the line",
        );
    }
    if greedy_wildcard(&failregex[..host]) {
        return Some(
            "reaches <HOST> through a greedy `.*` or `.+`: it matches the last address on the line, which a client can write (use `\\S+` or a lazy `.*?`)",
        );
    }
    None
}

/// Whether `pattern` has an unescaped `.` outside a class, repeated by `*`
/// or `+` without a `?` that makes it lazy.
fn greedy_wildcard(pattern: &str) -> bool {
    let bytes = pattern.as_bytes();
    let mut i = 0;
    let mut in_class = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'.' if !in_class => {
                let repeated = matches!(bytes.get(i + 1), Some(b'*' | b'+'));
                let lazy = bytes.get(i + 2) == Some(&b'?');
                if repeated && !lazy {
                    return true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchored_regexes_pass() {
        for regex in [
            r"^\S+ reject: RCPT from \S+\[<HOST>\]",
            r"^.*? from [^\[\s]*\[<HOST>\]",
            r"^(?:\S+\s+)?postfix/smtpd\[\d+\]: warning: [-._\w]+\[<HOST>\]: SASL",
            r"^x [.*] \.* \[<HOST>\] .* after the host is fine",
            r"^no host at all .*",
        ] {
            assert_eq!(host_not_anchored(regex), None, "{regex}");
        }
    }

    #[test]
    fn the_built_in_filter_passes_in_every_mode() {
        for mode in crate::logwatch::postfix::Mode::ALL {
            for regex in crate::logwatch::postfix::failregex(mode) {
                assert_eq!(host_not_anchored(&regex), None, "{mode}: {regex}");
            }
        }
    }

    #[test]
    fn a_failregex_without_a_host_is_found() {
        assert!(has_no_host(r"^\S+ reject: RCPT from \S+\[\S+\]"));
        for regex in [
            r"^x \[<HOST>\]",
            r"^x \[<IP6>\]",
            r"^x (?P<host>\S+)",
            r"^x (?<host>\S+)",
        ] {
            assert!(!has_no_host(regex), "{regex}");
        }
    }

    #[test]
    fn unanchored_and_greedy_regexes_are_named() {
        let unanchored = host_not_anchored(r"reject: .* from \S+\[<HOST>\]").expect("warned");
        assert!(unanchored.contains('^'), "{unanchored}");
        for regex in [
            r"^.* reject: .* from \S+\[<HOST>\]",
            r"^.+ \[<ADDR>\]",
            r"^(?:a|.*) \[<IP4>\]",
        ] {
            let warning = host_not_anchored(regex).expect(regex);
            assert!(warning.contains("greedy"), "{regex}: {warning}");
        }
    }
}
