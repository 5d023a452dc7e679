//! fail2ban's value syntaxes: times, booleans, port lists, `ignoreip`
//! entries and `name[key=value, …]` references.

use std::net::IpAddr;

use ipnet::IpNet;

/// A fail2ban time (`600`, `10m`, `1h30m`, `2 days`, `-1`) in seconds;
/// units it knows that spamwall cannot match exactly (months, years) and
/// anything else are refused with the reason.
pub fn seconds(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Ok(n);
    }
    if let Ok(n) = text.parse::<f64>()
        && n.is_finite()
        && n.abs() < 1e15
    {
        #[expect(clippy::cast_possible_truncation, reason = "bounded just above")]
        return Ok(n.round() as i64);
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.trim_start().is_empty() {
        rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a time fail2ban's way (600, 10m, 1h30m)"
            ));
        }
        let number: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].to_ascii_lowercase();
        rest = &rest[unit_len..];
        let scale = match unit.as_str() {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "mi" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "wk" | "week" | "weeks" => 604_800,
            _ => {
                return Err(format!(
                    "{text:?}: the unit {unit:?} (months and years have no exact length in spamwall; write days)"
                ));
            }
        };
        total = number
            .checked_mul(scale)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| format!("{text:?}: too long"))?;
    }
    Ok(total)
}

/// Seconds as spamwall writes a length: the largest unit that divides it.
pub fn span(seconds: i64) -> String {
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds % size == 0 {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// Python's `getboolean`.
pub fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        other => Err(format!(
            "{other:?} is not a boolean (true/false, yes/no, on/off, 1/0)"
        )),
    }
}

/// A jail's `port`: the ports, `None` for all of them (`0:65535`).
pub fn ports(text: &str, services: &str) -> Result<Option<Vec<u16>>, String> {
    let mut ports = Vec::new();
    for item in text
        .split([',', ' ', '\n', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if let Some((low, high)) = item.split_once(':') {
            let low = port(low, services)?;
            let high = port(high, services)?;
            if low <= 1 && high == u16::MAX {
                return Ok(None);
            }
            return Err(format!(
                "the range {item}: a rule takes single ports (or 0:65535 for all)"
            ));
        }
        let number = port(item, services)?;
        if !ports.contains(&number) {
            ports.push(number);
        }
    }
    if ports.is_empty() {
        return Ok(None);
    }
    Ok(Some(ports))
}

/// Port names fail2ban's jails use, for hosts without `/etc/services`.
const WELL_KNOWN: &[(&str, u16)] = &[
    ("ssh", 22),
    ("smtp", 25),
    ("http", 80),
    ("pop3", 110),
    ("imap", 143),
    ("imap2", 143),
    ("https", 443),
    ("smtps", 465),
    ("submissions", 465),
    ("submission", 587),
    ("imaps", 993),
    ("pop3s", 995),
    ("sieve", 4190),
];

fn port(name: &str, services: &str) -> Result<u16, String> {
    if let Ok(number) = name.parse::<u16>() {
        return Ok(number);
    }
    let lower = name.to_ascii_lowercase();
    if let Some((_, number)) = WELL_KNOWN.iter().find(|(n, _)| *n == lower) {
        return Ok(*number);
    }
    // /etc/services: "name port/proto [aliases…]".
    for line in services.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let (Some(service), Some(spec)) = (fields.next(), fields.next()) else {
            continue;
        };
        if (service == lower || fields.any(|alias| alias == lower))
            && let Some((number, "tcp")) = spec.split_once('/')
            && let Ok(number) = number.parse()
        {
            return Ok(number);
        }
    }
    Err(format!(
        "the port {name:?} is neither a number nor a known service name"
    ))
}

/// One `ignoreip` entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Ignored {
    /// An address or network; loopback is left out (always allowed).
    Net(IpNet),
    Loopback,
    /// A name fail2ban resolves; spamwall's allowlist holds addresses.
    Name(String),
}

/// An `ignoreip` entry: an address, `addr/len`, `addr/netmask`, or a name.
pub fn ignored(entry: &str) -> Ignored {
    let net = if let Some((addr, len)) = entry.split_once('/') {
        let Ok(addr) = addr.parse::<IpAddr>() else {
            return Ignored::Name(entry.to_owned());
        };
        let prefix = len.parse::<u8>().ok().or_else(|| {
            // A dotted netmask, e.g. 255.255.255.0.
            let mask = len.parse::<std::net::Ipv4Addr>().ok()?;
            let bits = u32::from(mask);
            (bits.leading_ones() + bits.trailing_zeros() == 32)
                .then(|| u8::try_from(bits.leading_ones()).ok())
                .flatten()
        });
        match prefix.and_then(|p| IpNet::new(addr, p).ok()) {
            Some(net) => net.trunc(),
            None => return Ignored::Name(entry.to_owned()),
        }
    } else if let Ok(addr) = entry.parse::<IpAddr>() {
        IpNet::from(addr)
    } else {
        return Ignored::Name(entry.to_owned());
    };
    let loopback = match net {
        IpNet::V4(v4) => v4.prefix_len() >= 8 && v4.network().is_loopback(),
        IpNet::V6(v6) => v6.prefix_len() == 128 && v6.network().is_loopback(),
    };
    if loopback {
        Ignored::Loopback
    } else {
        Ignored::Net(net)
    }
}

/// fail2ban's `name[key=value, key="value", …]`: the name and its options.
pub fn reference(spec: &str) -> Result<(String, Vec<(String, String)>), String> {
    let spec = spec.trim();
    let Some(open) = spec.find('[') else {
        return Ok((spec.to_owned(), Vec::new()));
    };
    let name = spec[..open].trim().to_owned();
    let Some(inner) = spec[open + 1..].trim_end().strip_suffix(']') else {
        return Err(format!("{spec:?}: `[` without a closing `]`"));
    };
    let mut options = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            return Err(format!("{spec:?}: expected key=value at {rest:?}"));
        };
        let key = rest[..eq].trim().to_owned();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!("{spec:?}: {key:?} is not an option name"));
        }
        let after = rest[eq + 1..].trim_start();
        let (value, tail) = if let Some(quote @ ('"' | '\'')) = after.chars().next() {
            let Some(end) = after[1..].find(quote) else {
                return Err(format!("{spec:?}: unterminated quote"));
            };
            (&after[1..=end], &after[end + 2..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        options.push((key, value.trim().to_owned()));
        rest = tail.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok((name, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_fail2ban_writes_them() {
        for (text, want) in [
            ("600", 600),
            ("10m", 600),
            ("1h30m", 5400),
            ("2 days", 172_800),
            ("-1", -1),
            ("1w", 604_800),
            ("1.5", 2),
        ] {
            assert_eq!(seconds(text), Ok(want), "{text}");
        }
        assert!(seconds("1mo").is_err());
        assert!(seconds("soon").is_err());
        assert!(seconds("99999999999999999999d").is_err());
        assert_eq!(span(600), "10m");
        assert_eq!(span(86_400 * 14), "2w");
        assert_eq!(span(90), "90s");
    }

    #[test]
    fn ports_by_number_name_and_range() {
        let services = "foo 2525/tcp bar # x\nfoo 2525/udp\n";
        assert_eq!(
            ports("smtp,465,submission", ""),
            Ok(Some(vec![25, 465, 587]))
        );
        assert_eq!(ports("bar, foo", services), Ok(Some(vec![2525])));
        assert_eq!(ports("0:65535", ""), Ok(None));
        assert!(ports("1000:2000", "").is_err());
        assert!(ports("nosuch", "").is_err());
    }

    #[test]
    fn ignoreip_entries() {
        assert_eq!(ignored("127.0.0.1/8"), Ignored::Loopback);
        assert_eq!(ignored("::1"), Ignored::Loopback);
        assert_eq!(
            ignored("192.0.2.9/24"),
            Ignored::Net("192.0.2.0/24".parse().expect("net"))
        );
        assert_eq!(
            ignored("198.51.100.0/255.255.255.0"),
            Ignored::Net("198.51.100.0/24".parse().expect("net"))
        );
        assert_eq!(
            ignored("2001:db8::7"),
            Ignored::Net("2001:db8::7/128".parse().expect("net"))
        );
        assert_eq!(
            ignored("mx.example.org"),
            Ignored::Name("mx.example.org".into())
        );
        assert_eq!(
            ignored("192.0.2.1/99"),
            Ignored::Name("192.0.2.1/99".into())
        );
    }

    #[test]
    fn references_with_quoted_options() {
        assert_eq!(
            reference("postfix[mode=aggressive]"),
            Ok(("postfix".into(), vec![("mode".into(), "aggressive".into())]))
        );
        assert_eq!(
            reference(r#"x[a="1,2", b='y']"#),
            Ok((
                "x".into(),
                vec![("a".into(), "1,2".into()), ("b".into(), "y".into())]
            ))
        );
        assert_eq!(reference("sshd"), Ok(("sshd".into(), vec![])));
        assert!(reference("x[a=1").is_err());
        assert!(reference("x[=1]").is_err());
    }
}
