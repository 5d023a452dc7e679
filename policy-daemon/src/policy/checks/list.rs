//! `list`: allow and deny by client address or prefix, sender, recipient
//! or HELO name. Entries are inline or in a file; a `/regex/` (`/regex/i`
//! for any case) or an exact value (any case); senders and recipients
//! also take `@domain`. An allow match ends the chain with the list's
//! action; a deny match adds the list's score.

use std::{fmt, fs, net::IpAddr};

use foldhash::HashSet;

use ipnet::IpNet;
use regex::RegexSet;

use super::{Hit, Local, Mail, Problems, score};
use crate::{
    bans::parse_target,
    policy::{action::check_action, config::CheckConfig},
};

/// What a list entry is matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListField {
    Client,
    Sender,
    Recipient,
    Helo,
}

impl ListField {
    const ALL: [Self; 4] = [Self::Client, Self::Sender, Self::Recipient, Self::Helo];

    const fn key(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Sender => "sender",
            Self::Recipient => "recipient",
            Self::Helo => "helo",
        }
    }
}

impl fmt::Display for ListField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Prefixes grouped by length: one hash lookup per distinct length, so
/// big lists cost no more than small ones. (foldhash, here and in
/// [`Patterns`]: several times faster than `SipHash` on short keys; the sets
/// hold configured entries only, so no peer chooses what goes in.)
#[derive(Clone, Debug, Default)]
struct Prefixes {
    v4: Vec<(u8, HashSet<u32>)>,
    v6: Vec<(u8, HashSet<u128>)>,
}

impl Prefixes {
    fn insert(&mut self, net: IpNet) {
        match net {
            IpNet::V4(net) => {
                let bits = u32::from(net.network());
                insert_grouped(&mut self.v4, net.prefix_len(), bits);
            }
            IpNet::V6(net) => {
                let bits = u128::from(net.network());
                insert_grouped(&mut self.v6, net.prefix_len(), bits);
            }
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                self.v4
                    .iter()
                    .any(|(len, set)| set.contains(&(bits & mask32(*len))))
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                self.v6
                    .iter()
                    .any(|(len, set)| set.contains(&(bits & mask128(*len))))
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

fn insert_grouped<T: std::hash::Hash + Eq>(groups: &mut Vec<(u8, HashSet<T>)>, len: u8, bits: T) {
    if let Some((_, set)) = groups.iter_mut().find(|(l, _)| *l == len) {
        set.insert(bits);
    } else {
        let mut set = HashSet::default();
        set.insert(bits);
        groups.push((len, set));
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// Exact values (lowercased), `@domain` entries and regexes.
#[derive(Clone, Debug, Default)]
struct Patterns {
    exact: HashSet<String>,
    domains: HashSet<String>,
    regexes: Vec<String>,
    set: Option<RegexSet>,
}

impl Patterns {
    fn add(&mut self, field: ListField, entry: &str) -> Result<(), String> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("empty entry".to_owned());
        }
        if let Some(body) = entry.strip_prefix('/') {
            let (pattern, insensitive) = match body.strip_suffix("/i") {
                Some(pattern) => (pattern, true),
                None => match body.strip_suffix('/') {
                    Some(pattern) => (pattern, false),
                    None => return Err(format!("{entry:?}: a regex ends with / or /i")),
                },
            };
            let pattern = if insensitive {
                format!("(?i){pattern}")
            } else {
                pattern.to_owned()
            };
            regex::Regex::new(&pattern).map_err(|e| format!("invalid regex {entry:?}: {e}"))?;
            self.regexes.push(pattern);
            return Ok(());
        }
        match entry.strip_prefix('@') {
            Some(domain) if field != ListField::Helo => {
                self.domains.insert(domain.to_ascii_lowercase());
            }
            _ => {
                self.exact.insert(entry.to_ascii_lowercase());
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        if !self.regexes.is_empty() {
            self.set = Some(RegexSet::new(&self.regexes).map_err(|e| e.to_string())?);
        }
        Ok(())
    }

    fn matches(&self, value: &str) -> bool {
        if self.set.as_ref().is_some_and(|set| set.is_match(value)) {
            return true;
        }
        if self.exact.is_empty() && self.domains.is_empty() {
            return false;
        }
        let lower = value.to_ascii_lowercase();
        if self.exact.contains(&lower) {
            return true;
        }
        lower
            .rsplit_once('@')
            .is_some_and(|(_, domain)| self.domains.contains(domain))
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.domains.is_empty() && self.regexes.is_empty()
    }
}

/// A compiled `list` check.
#[derive(Clone, Debug, Default)]
pub struct List {
    pub allow: bool,
    pub action: String,
    pub score: f64,
    client: Prefixes,
    sender: Patterns,
    recipient: Patterns,
    helo: Patterns,
}

impl List {
    pub(super) fn compile(check: &CheckConfig, problems: &mut Problems<'_>) -> Self {
        let allow = check.allow.unwrap_or(false);
        let action = check.action.clone().unwrap_or_else(|| "DUNNO".to_owned());
        if !allow && check.action.is_some() {
            problems.push("action", "only an allow list (allow = true) has an action");
        } else if let Err(e) = check_action(&action) {
            problems.push("action", e);
        }
        let mut list = Self {
            allow,
            action,
            score: score(check, problems),
            ..Self::default()
        };
        for field in ListField::ALL {
            let entries = match field {
                ListField::Client => &check.client,
                ListField::Sender => &check.sender,
                ListField::Recipient => &check.recipient,
                ListField::Helo => &check.helo,
            };
            for (i, entry) in entries.iter().flatten().enumerate() {
                if let Err(e) = list.add(field, entry) {
                    problems.push(&format!("{field}[{i}]"), e);
                }
            }
        }
        if let Some(path) = &check.file {
            match fs::read_to_string(path) {
                Ok(text) => {
                    for (number, line) in text.lines().enumerate() {
                        let line = line.split('#').next().unwrap_or("").trim();
                        if line.is_empty() {
                            continue;
                        }
                        if let Err(e) = list.add_line(line) {
                            problems.push(
                                "file",
                                format!("{} line {}: {e}", path.display(), number + 1),
                            );
                        }
                    }
                }
                Err(e) => problems.push("file", format!("cannot read {}: {e}", path.display())),
            }
        }
        for (field, patterns) in [
            (ListField::Sender, &mut list.sender),
            (ListField::Recipient, &mut list.recipient),
            (ListField::Helo, &mut list.helo),
        ] {
            if let Err(e) = patterns.finish() {
                problems.push(field.key(), e);
            }
        }
        if list.client.is_empty()
            && list.sender.is_empty()
            && list.recipient.is_empty()
            && list.helo.is_empty()
            && check.file.is_none()
        {
            problems.push(
                "client",
                "the list has no entries (client, sender, recipient, helo or file)",
            );
        }
        list
    }

    fn add(&mut self, field: ListField, entry: &str) -> Result<(), String> {
        match field {
            ListField::Client => {
                let net = parse_target(entry).map_err(|e| e.to_string())?;
                self.client.insert(net);
                Ok(())
            }
            ListField::Sender => self.sender.add(field, entry),
            ListField::Recipient => self.recipient.add(field, entry),
            ListField::Helo => self.helo.add(field, entry),
        }
    }

    /// A file line: `FIELD VALUE`, or a bare address or prefix.
    fn add_line(&mut self, line: &str) -> Result<(), String> {
        if let Some((word, rest)) = line.split_once(char::is_whitespace)
            && let Some(field) = ListField::ALL.into_iter().find(|f| f.key() == word)
        {
            return self.add(field, rest);
        }
        if parse_target(line).is_ok() {
            return self.add(ListField::Client, line);
        }
        Err(format!(
            "{line:?}: expected an address, a prefix, or FIELD VALUE with FIELD one of client, sender, recipient, helo"
        ))
    }

    /// The first field of `mail` the list matches.
    pub fn matching_field(&self, mail: &Mail<'_>) -> Option<ListField> {
        if mail.client.is_some_and(|ip| self.client.contains(ip)) {
            return Some(ListField::Client);
        }
        if mail
            .sender
            .is_some_and(|s| !s.is_empty() && self.sender.matches(s))
        {
            return Some(ListField::Sender);
        }
        if mail.recipient.is_some_and(|r| self.recipient.matches(r)) {
            return Some(ListField::Recipient);
        }
        if mail.helo.is_some_and(|h| self.helo.matches(h)) {
            return Some(ListField::Helo);
        }
        None
    }

    pub(super) fn evaluate(&self, name: &str, mail: &Mail<'_>) -> Local<'_> {
        match self.matching_field(mail) {
            None => Local::Pass,
            Some(_) if self.allow => Local::Allow(&self.action),
            Some(field) => Local::Hit(Hit::from_parts(self.score, &[name, "=", field.key()])),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::policy::config::CheckType;

    fn config() -> CheckConfig {
        CheckConfig {
            name: "l".into(),
            kind: CheckType::List,
            score: Some(4.0),
            scores: None,
            header: None,
            zone: None,
            timeout: None,
            resolver: None,
            categories: None,
            fields: None,
            rules: None,
            allow: None,
            action: None,
            client: None,
            sender: None,
            recipient: None,
            helo: None,
            file: None,
        }
    }

    fn compile(check: &CheckConfig) -> Result<List, Vec<String>> {
        let mut found = Vec::new();
        let list = List::compile(check, &mut Problems::new("t".into(), &mut found));
        if found.is_empty() {
            Ok(list)
        } else {
            Err(found)
        }
    }

    fn strings(items: &[&str]) -> Option<Vec<String>> {
        let owned: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
        (!owned.is_empty()).then_some(owned)
    }

    #[test]
    fn clients_senders_recipients_and_helos_match() {
        let check = CheckConfig {
            client: strings(&["192.0.2.0/24", "198.51.100.7", "2001:db8::/32"]),
            sender: strings(&[
                "/@partner\\.example$/",
                "Boss@Example.org",
                "@friends.example",
            ]),
            recipient: strings(&["/^postmaster@/i"]),
            helo: strings(&["trusted.example"]),
            ..config()
        };
        let list = compile(&check).expect("valid list");
        let field = |mail: Mail<'_>| list.matching_field(&mail);
        let ip = |text: &str| text.parse().ok();
        assert_eq!(
            field(Mail {
                client: ip("192.0.2.200"),
                ..Mail::default()
            }),
            Some(ListField::Client)
        );
        assert_eq!(
            field(Mail {
                client: ip("198.51.100.7"),
                ..Mail::default()
            }),
            Some(ListField::Client)
        );
        assert_eq!(
            field(Mail {
                client: ip("198.51.100.8"),
                ..Mail::default()
            }),
            None
        );
        assert_eq!(
            field(Mail {
                client: ip("2001:db8:ffff::1"),
                ..Mail::default()
            }),
            Some(ListField::Client)
        );
        assert_eq!(
            field(Mail {
                client: ip("2001:db9::1"),
                ..Mail::default()
            }),
            None
        );
        assert_eq!(
            field(Mail {
                sender: Some("x@partner.example"),
                ..Mail::default()
            }),
            Some(ListField::Sender)
        );
        assert_eq!(
            field(Mail {
                sender: Some("x@partner.example.evil"),
                ..Mail::default()
            }),
            None
        );
        assert_eq!(
            field(Mail {
                sender: Some("boss@example.ORG"),
                ..Mail::default()
            }),
            Some(ListField::Sender)
        );
        assert_eq!(
            field(Mail {
                sender: Some("anyone@Friends.Example"),
                ..Mail::default()
            }),
            Some(ListField::Sender)
        );
        assert_eq!(
            field(Mail {
                sender: Some(""),
                ..Mail::default()
            }),
            None
        );
        assert_eq!(
            field(Mail {
                recipient: Some("PostMaster@x.example"),
                ..Mail::default()
            }),
            Some(ListField::Recipient)
        );
        assert_eq!(
            field(Mail {
                helo: Some("TRUSTED.example"),
                ..Mail::default()
            }),
            Some(ListField::Helo)
        );
    }

    #[test]
    fn allow_ends_the_chain_and_deny_scores() {
        let allow = compile(&CheckConfig {
            allow: Some(true),
            action: Some("OK".into()),
            client: strings(&["192.0.2.0/24"]),
            ..config()
        })
        .expect("allow list");
        let mail = Mail {
            client: "192.0.2.1".parse().ok(),
            ..Mail::default()
        };
        assert_eq!(allow.evaluate("partners", &mail), Local::Allow("OK"));
        let deny = compile(&CheckConfig {
            client: strings(&["192.0.2.0/24"]),
            ..config()
        })
        .expect("deny list");
        assert_eq!(
            deny.evaluate("deny", &mail),
            Local::Hit(Hit::new(4.0, "deny=client"))
        );
    }

    #[test]
    fn entries_from_a_file() {
        let mut file = tempfile::NamedTempFile::new().expect("file");
        writeln!(
            file,
            "# partners\n192.0.2.0/24   # office\n\n2001:db8::1\nsender /@bulk\\.example$/\nhelo spammy.example"
        )
        .expect("write");
        let list = compile(&CheckConfig {
            file: Some(file.path().to_owned()),
            ..config()
        })
        .expect("list from file");
        assert_eq!(
            list.matching_field(&Mail {
                client: "2001:db8::1".parse().ok(),
                ..Mail::default()
            }),
            Some(ListField::Client)
        );
        assert_eq!(
            list.matching_field(&Mail {
                sender: Some("a@bulk.example"),
                ..Mail::default()
            }),
            Some(ListField::Sender)
        );
        assert_eq!(
            list.matching_field(&Mail {
                helo: Some("spammy.example"),
                ..Mail::default()
            }),
            Some(ListField::Helo)
        );
        writeln!(file, "bogus line here").expect("write");
        let problems = compile(&CheckConfig {
            file: Some(file.path().to_owned()),
            ..config()
        })
        .expect_err("bad line");
        assert!(problems[0].contains("line 7"), "{problems:?}");
    }

    #[test]
    fn bad_entries_are_named() {
        let problems = compile(&CheckConfig {
            client: strings(&["192.0.2.1/24", "nope"]),
            sender: strings(&["/[/", "/unterminated"]),
            action: Some("OK".into()),
            ..config()
        })
        .expect_err("bad entries")
        .join("\n");
        for needle in [
            "t.client[0]",
            "t.client[1]",
            "t.sender[0]",
            "t.sender[1]",
            "t.action",
        ] {
            assert!(problems.contains(needle), "{needle} missing in {problems}");
        }
        let problems = compile(&config()).expect_err("empty").join("\n");
        assert!(problems.contains("no entries"), "{problems}");
    }
}
