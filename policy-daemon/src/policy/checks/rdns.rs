//! `rdns`: reverse DNS of the client as Postfix resolved it. `none`: no
//! PTR name at all (`client_name` and `reverse_client_name` are
//! `unknown`); `mismatch`: a PTR name that does not resolve back to the
//! client (`reverse_client_name` set, `client_name` `unknown`).

use super::{Hit, Local, Mail, Problems, rules, score};
use crate::policy::config::CheckConfig;

/// The rules of the `rdns` check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RdnsRule {
    None,
    Mismatch,
}

const RULES: [(&str, RdnsRule); 2] = [("none", RdnsRule::None), ("mismatch", RdnsRule::Mismatch)];

/// A compiled `rdns` check.
#[derive(Clone, Debug)]
pub struct Rdns {
    pub score: f64,
    pub rules: Vec<RdnsRule>,
}

impl Rdns {
    pub(super) fn compile(check: &CheckConfig, problems: &mut Problems<'_>) -> Self {
        Self {
            score: score(check, problems),
            rules: rules(check, &RULES, problems),
        }
    }

    /// The rule the client breaks, if enabled. A request without
    /// `client_name` (not from smtpd) breaks none.
    pub fn broken_rule(&self, mail: &Mail<'_>) -> Option<RdnsRule> {
        let unknown = |name: Option<&str>| name.is_none_or(|n| n.eq_ignore_ascii_case("unknown"));
        if !mail.client_name?.eq_ignore_ascii_case("unknown") {
            return None;
        }
        let rule = if unknown(mail.reverse_client_name) {
            RdnsRule::None
        } else {
            RdnsRule::Mismatch
        };
        self.rules.contains(&rule).then_some(rule)
    }

    pub(super) fn evaluate(&self, name: &str, mail: &Mail<'_>) -> Local<'_> {
        match self.broken_rule(mail) {
            Some(RdnsRule::None) => Local::Hit(Hit::new(self.score, &format!("{name}-none"))),
            Some(RdnsRule::Mismatch) => {
                Local::Hit(Hit::new(self.score, &format!("{name}-mismatch")))
            }
            None => Local::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail<'a>(client_name: Option<&'a str>, reverse: Option<&'a str>) -> Mail<'a> {
        Mail {
            client_name,
            reverse_client_name: reverse,
            ..Mail::default()
        }
    }

    #[test]
    fn rdns_rules() {
        let check = Rdns {
            score: 2.0,
            rules: vec![RdnsRule::None, RdnsRule::Mismatch],
        };
        assert_eq!(
            check.broken_rule(&mail(Some("mx.example"), Some("mx.example"))),
            None
        );
        assert_eq!(check.broken_rule(&mail(None, None)), None, "not from smtpd");
        assert_eq!(
            check.broken_rule(&mail(Some("unknown"), Some("unknown"))),
            Some(RdnsRule::None)
        );
        assert_eq!(
            check.broken_rule(&mail(Some("unknown"), None)),
            Some(RdnsRule::None)
        );
        assert_eq!(
            check.broken_rule(&mail(Some("unknown"), Some("dyn-1-2-3-4.isp.example"))),
            Some(RdnsRule::Mismatch)
        );
        assert_eq!(
            check.evaluate("rdns", &mail(Some("unknown"), Some("x.example"))),
            Local::Hit(Hit::new(2.0, "rdns-mismatch"))
        );
        let only_none = Rdns {
            score: 2.0,
            rules: vec![RdnsRule::None],
        };
        assert_eq!(
            only_none.broken_rule(&mail(Some("unknown"), Some("x.example"))),
            None
        );
    }
}
