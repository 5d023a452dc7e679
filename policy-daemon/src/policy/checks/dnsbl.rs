//! `dnsbl`: the client address against a DNS blocklist, IPv4 as reversed
//! octets and IPv6 as reversed nibbles, with optional reply-code
//! categories (mtpolicyd's `RBL` + `RBLAction`).

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use regex::Regex;
use tracing::warn;

use super::{DEFAULT_DNS_TIMEOUT, Hit, Mail, Problems, score, signed};
use crate::listen::LogLimit;
use crate::policy::{
    config::{CategoryConfig, CheckConfig},
    dns::{Dns, DnsError, ipv4_query, ipv6_query},
};

/// Metric of answers that are errors, not listings, by `zone` and `reason`.
pub const METRIC_ERRORS: &str = "spamwall_dnsbl_errors_total";
/// How often one list's error answers are logged at most.
const ERROR_LOG_INTERVAL: Duration = Duration::from_mins(1);

/// Why an answer is an error from the list, not a listing; `None` for a
/// listing. Spamhaus answers `127.255.255.252` for a typo in the zone,
/// `.254` for a query through a public or open resolver, `.255` for too
/// many queries, and its domain list `127.0.1.255` for an IP address
/// queried; any `127.255.255.x` is an error by the same convention, and an
/// answer outside `127.0.0.0/8` is no listing at all (a wildcard, a
/// hijacking resolver).
pub fn refusal(code: Ipv4Addr, domain_list: bool) -> Option<&'static str> {
    let [a, b, c, d] = code.octets();
    match (a, b, c, d) {
        (127, 255, 255, 252) => Some("typo_in_zone"),
        (127, 255, 255, 254) => Some("public_resolver"),
        (127, 255, 255, 255) => Some("rate_limited"),
        (127, 255, 255, _) => Some("error_code"),
        (127, 0, 1, 255) if domain_list => Some("ip_query_refused"),
        (127, ..) => None,
        _ => Some("not_a_listing"),
    }
}

/// How a category recognises reply codes.
#[derive(Clone, Debug)]
pub enum CodeMatch {
    /// Exactly this address.
    Exact(Ipv4Addr),
    /// Any address in this inclusive range.
    Range(Ipv4Addr, Ipv4Addr),
    /// The dotted address matches this regex.
    Regex(Regex),
}

impl CodeMatch {
    /// Parses `127.0.0.N`, `A-B` or `/regex/`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(pattern) = text.strip_prefix('/').and_then(|t| t.strip_suffix('/')) {
            return Regex::new(pattern)
                .map(Self::Regex)
                .map_err(|e| format!("invalid regex {pattern:?}: {e}"));
        }
        if let Some((low, high)) = text.split_once('-') {
            let (Ok(low), Ok(high)) = (low.trim().parse(), high.trim().parse()) else {
                return Err(format!("{text:?} is not a range like 127.0.0.2-127.0.0.8"));
            };
            if low > high {
                return Err(format!("{text:?}: the range is empty"));
            }
            return Ok(Self::Range(low, high));
        }
        text.parse()
            .map(Self::Exact)
            .map_err(|_| format!("{text:?} is neither an address, a range A-B nor a /regex/"))
    }

    /// Whether `code` belongs to the category.
    pub fn matches(&self, code: Ipv4Addr) -> bool {
        match self {
            Self::Exact(addr) => *addr == code,
            Self::Range(low, high) => (*low..=*high).contains(&code),
            Self::Regex(regex) => regex.is_match(&code.to_string()),
        }
    }
}

/// A named reply-code category with its own score.
#[derive(Clone, Debug)]
pub struct Category {
    pub matcher: CodeMatch,
    pub name: String,
    pub score: f64,
}

/// Scoring shared by `dnsbl` and `rhsbl`: the list's score and categories,
/// and what its error answers are.
#[derive(Clone, Debug)]
pub struct Scoring {
    pub score: f64,
    pub categories: Vec<Category>,
    /// The zone, for error reports.
    pub zone: String,
    /// A domain list (`rhsbl`): `127.0.1.255` is an error there.
    pub domain_list: bool,
    /// Error answers are logged at most once per [`ERROR_LOG_INTERVAL`].
    pub errors: Arc<LogLimit>,
}

impl Scoring {
    pub(super) fn compile(check: &CheckConfig, problems: &mut Problems<'_>) -> Self {
        let mut categories = Vec::new();
        for (i, category) in check.categories.iter().flatten().enumerate() {
            if let Some(compiled) = compile_category(category, i, problems) {
                categories.push(compiled);
            }
        }
        Self {
            score: score(check, problems),
            categories,
            zone: check.zone.clone().unwrap_or_default(),
            domain_list: check.kind == crate::policy::config::CheckType::Rhsbl,
            errors: Arc::new(LogLimit::new(ERROR_LOG_INTERVAL)),
        }
    }

    /// The listing codes among `codes`; error answers are counted in
    /// [`METRIC_ERRORS`] and logged, never scored.
    fn listings(&self, codes: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
        let mut listings = Vec::with_capacity(codes.len());
        for &code in codes {
            let Some(reason) = refusal(code, self.domain_list) else {
                listings.push(code);
                continue;
            };
            metrics::counter!(METRIC_ERRORS, "zone" => self.zone.clone(), "reason" => reason)
                .increment(1);
            if let Some(held_back) = self.errors.check() {
                warn!(
                    zone = %self.zone,
                    %code,
                    reason,
                    held_back,
                    "DNS list answered with an error code, not a listing: it counts nothing (check the zone name and that the resolver is your own)"
                );
            }
        }
        listings
    }

    /// The hit for reply `codes` of `what` (`zen`, `dbl(spam.example)`):
    /// each matching category counts once, with its own score, in place of
    /// the list's; codes in no category score the list's score.
    pub fn hit(&self, what: &str, codes: &[Ipv4Addr]) -> Option<Hit> {
        let codes = &self.listings(codes);
        if codes.is_empty() {
            return None;
        }
        let mut score = 0.0;
        let mut detail = String::new();
        for category in &self.categories {
            if let Some(code) = codes.iter().find(|&&code| category.matcher.matches(code)) {
                score += category.score;
                if !detail.is_empty() {
                    detail.push(' ');
                }
                let _ = write!(
                    detail,
                    "{what}/{}={code}({})",
                    category.name,
                    signed(category.score)
                );
            }
        }
        if detail.is_empty() {
            let codes: Vec<String> = codes.iter().map(ToString::to_string).collect();
            return Some(Hit {
                score: self.score,
                detail: format!("{what}={}({})", codes.join(","), signed(self.score)),
                header: None,
            });
        }
        Some(Hit {
            score,
            detail,
            header: None,
        })
    }
}

fn compile_category(
    category: &CategoryConfig,
    i: usize,
    problems: &mut Problems<'_>,
) -> Option<Category> {
    let key = format!("categories[{i}]");
    let name_ok = !category.name.is_empty()
        && category
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        problems.push(
            &key,
            format!(
                "name {:?}: use letters, digits, '-', '_' and '.'",
                category.name
            ),
        );
    }
    if !category.score.is_finite() {
        problems.push(&key, "score must be a finite number");
    }
    match CodeMatch::parse(&category.pattern) {
        Ok(matcher) if name_ok => Some(Category {
            matcher,
            name: category.name.clone(),
            score: category.score,
        }),
        Ok(_) => None,
        Err(e) => {
            problems.push(&key, format!("match {e}"));
            None
        }
    }
}

/// The zone, timeout and resolver of a DNS check.
pub(super) fn zone(check: &CheckConfig, problems: &mut Problems<'_>) -> (String, Duration) {
    let zone = check
        .zone
        .as_deref()
        .map(|z| z.trim().trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default();
    if zone.is_empty() {
        problems.push("zone", format!("a {} check needs a zone", check.kind));
    } else if zone.len() > 200
        || zone
            .split('.')
            .any(|label| label.is_empty() || label.len() > 63)
        || !zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        problems.push("zone", format!("{zone:?} is not a DNS zone name"));
    }
    let timeout = check.timeout.unwrap_or(DEFAULT_DNS_TIMEOUT);
    if timeout.is_zero() {
        problems.push("timeout", "must be longer than 0s");
    }
    (zone, timeout)
}

/// A compiled `dnsbl` check.
#[derive(Clone, Debug)]
pub struct DnsList {
    pub zone: String,
    pub timeout: Duration,
    pub resolver: u16,
    pub scoring: Scoring,
}

impl DnsList {
    pub(super) fn compile(check: &CheckConfig, resolver: u16, problems: &mut Problems<'_>) -> Self {
        let (zone, timeout) = zone(check, problems);
        let scoring = Scoring::compile(check, problems);
        Self {
            zone,
            timeout,
            resolver,
            scoring,
        }
    }

    pub(super) async fn evaluate(
        &self,
        name: &str,
        mail: &Mail<'_>,
        dns: &Dns,
    ) -> Result<Option<Hit>, DnsError> {
        let query = match mail.client {
            None => return Ok(None),
            Some(IpAddr::V4(v4)) => ipv4_query(v4, &self.zone),
            Some(IpAddr::V6(v6)) => ipv6_query(v6, &self.zone),
        };
        let codes = dns.query(self.resolver, query, self.timeout).await?;
        Ok(self.scoring.hit(name, &codes))
    }
}

#[cfg(test)]
#[expect(clippy::float_cmp, reason = "scores are small integers, exact in f64")]
mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().expect("ipv4")
    }

    fn scoring(categories: &[(&str, &str, f64)]) -> Scoring {
        Scoring {
            zone: "zen.test".to_owned(),
            domain_list: false,
            errors: Arc::new(LogLimit::new(ERROR_LOG_INTERVAL)),
            score: 5.0,
            categories: categories
                .iter()
                .map(|(pattern, name, score)| Category {
                    matcher: CodeMatch::parse(pattern).expect("pattern"),
                    name: (*name).to_owned(),
                    score: *score,
                })
                .collect(),
        }
    }

    #[test]
    fn code_matches() {
        let exact = CodeMatch::parse("127.0.0.2").expect("exact");
        assert!(exact.matches(ip("127.0.0.2")) && !exact.matches(ip("127.0.0.3")));
        let range = CodeMatch::parse("127.0.0.2-127.0.0.8").expect("range");
        assert!(range.matches(ip("127.0.0.2")) && range.matches(ip("127.0.0.8")));
        assert!(!range.matches(ip("127.0.0.9")) && !range.matches(ip("127.0.0.1")));
        let regex = CodeMatch::parse(r"/^127\.0\.0\.1[01]$/").expect("regex");
        assert!(regex.matches(ip("127.0.0.10")) && regex.matches(ip("127.0.0.11")));
        assert!(!regex.matches(ip("127.0.0.1")) && !regex.matches(ip("127.0.0.12")));
        for bad in ["127.0.0.300", "127.0.0.8-127.0.0.2", "/(/", "sbl", "1-x"] {
            assert!(CodeMatch::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn categories_replace_the_list_score_and_count_once_each() {
        let scoring = scoring(&[
            ("127.0.0.2", "sbl", 10.0),
            ("127.0.0.10-127.0.0.11", "pbl", 3.0),
        ]);
        assert_eq!(scoring.hit("zen", &[]), None);
        let hit = scoring.hit("zen", &[ip("127.0.0.2")]).expect("sbl");
        assert_eq!(
            (hit.score, hit.detail.as_str()),
            (10.0, "zen/sbl=127.0.0.2(+10)")
        );
        let hit = scoring
            .hit(
                "zen",
                &[ip("127.0.0.10"), ip("127.0.0.11"), ip("127.0.0.2")],
            )
            .expect("both");
        assert_eq!(hit.score, 13.0);
        assert_eq!(hit.detail, "zen/sbl=127.0.0.2(+10) zen/pbl=127.0.0.10(+3)");
        let hit = scoring
            .hit("zen", &[ip("127.0.0.4")])
            .expect("uncategorised");
        assert_eq!((hit.score, hit.detail.as_str()), (5.0, "zen=127.0.0.4(+5)"));
    }

    #[test]
    fn error_answers_are_never_listings() {
        let scoring = scoring(&[("127.0.0.2", "sbl", 10.0)]);
        for code in [
            "127.255.255.252",
            "127.255.255.254",
            "127.255.255.255",
            "127.255.255.1",
            "10.0.0.1",
            "0.0.0.0",
        ] {
            assert_eq!(scoring.hit("zen", &[ip(code)]), None, "{code}");
        }
        assert_eq!(
            refusal(ip("127.255.255.254"), false),
            Some("public_resolver")
        );
        assert_eq!(refusal(ip("127.0.1.255"), false), None);
        assert_eq!(refusal(ip("127.0.1.255"), true), Some("ip_query_refused"));
        // A real listing next to an error code still scores.
        let hit = scoring
            .hit("zen", &[ip("127.255.255.254"), ip("127.0.0.2")])
            .expect("listing");
        assert_eq!(hit.detail, "zen/sbl=127.0.0.2(+10)");
    }
}
