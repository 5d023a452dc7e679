//! `helo`: HELO/EHLO sanity. Fires once, with the first rule that applies:
//! `ours` (claims one of our host names or addresses), `bare-ip` (an
//! address without brackets), `ip-mismatch` (an address literal that is
//! not the client), `not-fqdn` (no dot, or not a host name at all).

use super::{Context, Hit, Local, Mail, Problems, parse_ip, rules, score};
use crate::policy::config::CheckConfig;

/// The rules of the `helo` check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeloRule {
    Ours,
    BareIp,
    IpMismatch,
    NotFqdn,
}

const RULES: [(&str, HeloRule); 4] = [
    ("ours", HeloRule::Ours),
    ("bare-ip", HeloRule::BareIp),
    ("ip-mismatch", HeloRule::IpMismatch),
    ("not-fqdn", HeloRule::NotFqdn),
];

impl HeloRule {
    const fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::BareIp => "bare-ip",
            Self::IpMismatch => "ip-mismatch",
            Self::NotFqdn => "not-fqdn",
        }
    }
}

/// A compiled `helo` check.
#[derive(Clone, Debug)]
pub struct Helo {
    pub score: f64,
    pub rules: Vec<HeloRule>,
}

impl Helo {
    pub(super) fn compile(check: &CheckConfig, problems: &mut Problems<'_>) -> Self {
        Self {
            score: score(check, problems),
            rules: rules(check, &RULES, problems),
        }
    }

    /// The first enabled rule `helo` breaks, if any.
    pub fn broken_rule(&self, mail: &Mail<'_>, context: Context<'_>) -> Option<HeloRule> {
        let helo = mail.helo?.trim();
        let bracketed = helo.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let literal = bracketed.map_or_else(|| parse_ip(helo), parse_ip);
        let name = helo.trim_end_matches('.');
        let ours = match literal {
            Some(ip) => {
                (mail.client != Some(ip) && mail.server.and_then(parse_ip) == Some(ip))
                    || context.hostnames.iter().any(|h| parse_ip(h) == Some(ip))
            }
            None => context
                .hostnames
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name)),
        };
        let breaks = |rule: HeloRule| match rule {
            HeloRule::Ours => ours,
            HeloRule::BareIp => bracketed.is_none() && literal.is_some(),
            HeloRule::IpMismatch => {
                bracketed.is_some() && literal.is_some() && literal != mail.client
            }
            HeloRule::NotFqdn => {
                (bracketed.is_some() && literal.is_none())
                    || (bracketed.is_none() && literal.is_none() && !is_fqdn(name))
            }
        };
        // The order of RULES, not of the configuration, decides which one
        // is reported: the strongest evidence first.
        RULES
            .iter()
            .map(|(_, rule)| *rule)
            .find(|rule| self.rules.contains(rule) && breaks(*rule))
    }

    pub(super) fn evaluate(&self, name: &str, mail: &Mail<'_>, context: Context<'_>) -> Local<'_> {
        match self.broken_rule(mail, context) {
            Some(rule) => Local::Hit(Hit::new(self.score, &format!("{name}-{}", rule.name()))),
            None => Local::Pass,
        }
    }
}

/// A dotted host name: letters, digits, hyphens (and underscores, which
/// real hosts use), no empty label, a top-level label that is not numeric.
fn is_fqdn(name: &str) -> bool {
    let mut labels = name.split('.');
    let valid = name.contains('.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    valid
        && labels
            .next_back()
            .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(helo: &str, client: &str, server: &str) -> Option<HeloRule> {
        let check = Helo {
            score: 2.0,
            rules: RULES.iter().map(|(_, r)| *r).collect(),
        };
        let hostnames = ["mx.example.org".to_owned(), "198.51.100.25".to_owned()];
        let mail = Mail {
            helo: Some(helo),
            client: client.parse().ok(),
            server: Some(server),
            ..Mail::default()
        };
        check.broken_rule(
            &mail,
            Context {
                hostnames: &hostnames,
                receiver: "mx.example",
            },
        )
    }

    #[test]
    fn helo_rules() {
        let client = "192.0.2.7";
        let server = "192.0.2.25";
        assert_eq!(rule("mail.client.example", client, server), None);
        assert_eq!(rule("mail.client.example.", client, server), None);
        assert_eq!(rule("[192.0.2.7]", client, server), None, "its own literal");
        assert_eq!(rule("[IPv6:2001:db8::7]", "2001:db8::7", server), None);
        assert_eq!(rule("desktop", client, server), Some(HeloRule::NotFqdn));
        assert_eq!(
            rule("bad_host name.example", client, server),
            Some(HeloRule::NotFqdn)
        );
        assert_eq!(
            rule("host..example", client, server),
            Some(HeloRule::NotFqdn)
        );
        assert_eq!(rule("[garbage]", client, server), Some(HeloRule::NotFqdn));
        assert_eq!(rule("192.0.2.7", client, server), Some(HeloRule::BareIp));
        assert_eq!(
            rule("[192.0.2.8]", client, server),
            Some(HeloRule::IpMismatch)
        );
        assert_eq!(rule("MX.Example.Org", client, server), Some(HeloRule::Ours));
        assert_eq!(rule("[192.0.2.25]", client, server), Some(HeloRule::Ours));
        assert_eq!(rule("192.0.2.25", client, server), Some(HeloRule::Ours));
        assert_eq!(
            rule("[198.51.100.25]", client, server),
            Some(HeloRule::Ours)
        );
    }

    #[test]
    fn only_enabled_rules_fire_and_details_name_the_rule() {
        let check = Helo {
            score: 2.0,
            rules: vec![HeloRule::NotFqdn],
        };
        let no_hosts: [String; 0] = [];
        let context = Context {
            hostnames: &no_hosts,
            receiver: "mx.example",
        };
        let mail = Mail {
            helo: Some("192.0.2.7"),
            ..Mail::default()
        };
        assert_eq!(check.evaluate("helo", &mail, context), Local::Pass);
        let mail = Mail {
            helo: Some("desktop"),
            ..Mail::default()
        };
        assert_eq!(
            check.evaluate("helo", &mail, context),
            Local::Hit(Hit::new(2.0, "helo-not-fqdn"))
        );
        let mail = Mail::default();
        assert_eq!(
            check.evaluate("helo", &mail, context),
            Local::Pass,
            "no HELO yet"
        );
    }
}
