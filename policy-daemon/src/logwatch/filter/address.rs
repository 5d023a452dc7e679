//! A failregex's host text as an address: the forms log lines hold
//! (dotted quad; IPv6 groups with at most one `::`) read directly, any
//! other text by the standard library's parser, whose answer is the one
//! that counts: the direct reading accepts only what it accepts, with the
//! same value. The generic parser cost more than matching the line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `text` as an address, as `str::parse::<IpAddr>` reads it.
pub(super) fn parse_host(text: &[u8]) -> Option<IpAddr> {
    dotted_quad(text)
        .map(IpAddr::V4)
        .or_else(|| hex_groups(text).map(IpAddr::V6))
        .or_else(|| std::str::from_utf8(text).ok()?.parse().ok())
}

/// `192.0.2.1`: four numbers of one to three digits, no leading zero,
/// each at most 255.
fn dotted_quad(text: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0_u8; 4];
    let (mut index, mut value, mut digits) = (0, 0_u16, 0);
    for &byte in text {
        match byte {
            b'.' if digits > 0 && index < 3 => {
                octets[index] = u8::try_from(value).ok()?;
                (index, value, digits) = (index + 1, 0, 0);
            }
            // A fourth digit, or a digit after a leading zero.
            b'0'..=b'9' if digits < 3 && !(digits == 1 && value == 0) => {
                value = value * 10 + u16::from(byte - b'0');
                digits += 1;
            }
            _ => return None,
        }
    }
    if index != 3 || digits == 0 {
        return None;
    }
    octets[3] = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
}

/// `2001:db8::1`: groups of one to four hex digits, eight of them, or at
/// most seven around one `::`.
fn hex_groups(text: &[u8]) -> Option<Ipv6Addr> {
    let mut groups = [0_u16; 8];
    let (mut count, mut value, mut digits) = (0, 0_u16, 0);
    // How many groups come before the `::`.
    let mut gap = None;
    let mut at = 0;
    if text.starts_with(b"::") {
        gap = Some(0);
        at = 2;
    }
    while let Some(&byte) = text.get(at) {
        at += 1;
        let digit = match byte {
            b':' => {
                if digits == 0 || count == 8 {
                    return None;
                }
                groups[count] = value;
                (count, value, digits) = (count + 1, 0, 0);
                match text.get(at) {
                    Some(b':') if gap.is_none() => {
                        gap = Some(count);
                        at += 1;
                    }
                    Some(b':') | None => return None,
                    Some(_) => {}
                }
                continue;
            }
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => return None,
        };
        if digits == 4 {
            return None;
        }
        value = value << 4 | u16::from(digit);
        digits += 1;
    }
    if digits > 0 {
        *groups.get_mut(count)? = value;
        count += 1;
    } else if gap != Some(count) {
        // Empty, or ending in a single `:`.
        return None;
    }
    match gap {
        None => (count == 8).then_some(Ipv6Addr::from(groups)),
        Some(_) if count > 7 => None,
        Some(head) => {
            let mut address = [0_u16; 8];
            address[..head].copy_from_slice(&groups[..head]);
            address[8 - (count - head)..].copy_from_slice(&groups[head..count]);
            Some(Ipv6Addr::from(address))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    fn standard(text: &[u8]) -> Option<IpAddr> {
        std::str::from_utf8(text).ok()?.parse().ok()
    }

    /// Every string of up to `len` bytes from `alphabet`.
    fn every_string(alphabet: &[u8], len: usize, each: &mut impl FnMut(&[u8])) {
        fn grow(text: &mut Vec<u8>, alphabet: &[u8], len: usize, each: &mut impl FnMut(&[u8])) {
            each(text);
            if text.len() == len {
                return;
            }
            for &b in alphabet {
                text.push(b);
                grow(text, alphabet, len, each);
                text.pop();
            }
        }
        grow(&mut Vec::with_capacity(len), alphabet, len, each);
    }

    #[test]
    fn reads_every_short_text_as_the_standard_parser_does() {
        let mut check = |text: &[u8]| {
            assert_eq!(
                parse_host(text),
                standard(text),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        };
        every_string(b"0129.", 7, &mut check);
        every_string(b"0a:F.", 7, &mut check);
        every_string(b"0:", 10, &mut check);
    }

    #[test]
    fn reads_addresses_and_near_misses_as_the_standard_parser_does() {
        let mut texts: Vec<String> = [
            "192.0.2.1",
            "255.255.255.255",
            "256.0.0.1",
            "01.2.3.4",
            "0.0.0.0",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            "1.2.3.4.",
            "1234.1.1.1",
            "::",
            "::1",
            "1::",
            "2001:db8::1",
            "2001:DB8:0:0:8:800:200C:417A",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8::",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7",
            "1::2::3",
            ":1::",
            "1:::2",
            "12345::",
            "::ffff:192.0.2.1",
            "::192.0.2.1",
            "1:2:3:4:5:6:1.2.3.4",
            "",
            ":",
            ".",
            "fe80::1%eth0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Pseudo-random addresses and near misses: up to ten groups of
        // up to five digits, one separator perhaps doubled, a dotted tail.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % below).expect("small")
        };
        for _ in 0..200_000 {
            let dotted = next(3) == 0;
            let mut text = String::new();
            if dotted {
                // Three to five numbers up to 299, a few with a zero first.
                let groups = 3 + next(3);
                for group in 0..groups {
                    if group > 0 {
                        text.push('.');
                    }
                    if next(10) == 0 {
                        text.push('0');
                    }
                    if next(20) > 0 {
                        text.push_str(&next(300).to_string());
                    }
                }
                texts.push(text);
                continue;
            }
            let groups = next(11);
            let doubled = next(groups as u64 + 2);
            for group in 0..groups {
                if group > 0 {
                    text.push(':');
                }
                if group == doubled {
                    text.push(':');
                }
                for _ in 0..next(6) {
                    text.push(char::from(b"0123456789abcdefABCDEF"[next(22)]));
                }
            }
            if next(4) == 0 {
                let _ = write!(
                    text,
                    ":{}.{}.{}.{}",
                    next(300),
                    next(300),
                    next(300),
                    next(300)
                );
            }
            texts.push(text);
        }
        let mut v4_v6 = [0, 0];
        for text in &texts {
            let host = parse_host(text.as_bytes());
            assert_eq!(host, standard(text.as_bytes()), "{text:?}");
            match host {
                Some(IpAddr::V4(_)) => v4_v6[0] += 1,
                Some(IpAddr::V6(_)) => v4_v6[1] += 1,
                None => {}
            }
        }
        // Addresses, not only near misses.
        assert!(v4_v6.iter().all(|&n| n > 1_000), "{v4_v6:?}");
    }
}
