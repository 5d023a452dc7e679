//! `spf`: the SPF result (RFC 7208) of the MAIL FROM domain, or of the
//! HELO name for the null sender, scored per result (policyd-spf's and
//! mtpolicyd's `SPF`). Every result, `pass` and `none` included, is in
//! the mail's detail (`spf=softfail(+3)`) and logged; with `header` the
//! answer that would be `DUNNO` prepends `Received-SPF`.

use std::time::{Duration, Instant};

use tracing::info;

use super::{DEFAULT_DNS_TIMEOUT, Hit, Mail, Problems};
use crate::policy::{
    config::CheckConfig,
    dns::{Dns, DnsError},
    spf::{Lookups, ParsedRecords, Query, SpfResult, check_host, received_spf},
};

/// The longest the end of an SPF evaluation keeps from the request's
/// deadline, so that a stalled lookup still ends as `temperror` in the
/// answer rather than as a check cut off.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// A compiled `spf` check.
#[derive(Debug)]
pub struct SpfCheck {
    /// Longest wait for one lookup.
    pub timeout: Duration,
    pub resolver: u16,
    /// Score by [`SpfResult::index`].
    pub scores: [f64; 7],
    /// Whether a `DUNNO` answer becomes `PREPEND Received-SPF: …`.
    pub header: bool,
    /// The records this check has parsed.
    parsed: ParsedRecords,
}

impl SpfCheck {
    pub(super) fn compile(check: &CheckConfig, resolver: u16, problems: &mut Problems<'_>) -> Self {
        let timeout = check.timeout.unwrap_or(DEFAULT_DNS_TIMEOUT);
        if timeout.is_zero() {
            problems.push("timeout", "must be longer than 0s");
        }
        if check.score.is_some() {
            problems.push(
                "score",
                "an spf check scores each result: use scores = { fail = 10, softfail = 3 }",
            );
        }
        let mut scores = [0.0; 7];
        for (name, score) in check.scores.iter().flatten() {
            let Some(result) = SpfResult::from_name(name) else {
                let known: Vec<&str> = SpfResult::ALL.iter().map(|r| r.name()).collect();
                problems.push(
                    "scores",
                    format!("unknown result {name:?}; known: {}", known.join(", ")),
                );
                continue;
            };
            if score.is_finite() {
                scores[result.index()] = *score;
            } else {
                problems.push(&format!("scores.{name}"), "must be a finite number");
            }
        }
        Self {
            timeout,
            resolver,
            scores,
            header: check.header.unwrap_or(false),
            parsed: ParsedRecords::new(),
        }
    }

    /// Checks the mail's identity; `None` when there is no client address,
    /// no identity (no sender and no HELO), or the request comes before
    /// MAIL FROM (a check wired into `smtpd_client_restrictions` or
    /// `smtpd_helo_restrictions` would otherwise take every mail for a
    /// bounce); the check then runs at a later request of the mail. SPF's
    /// own failures are results (`temperror`, `permerror`), never errors.
    pub(super) async fn evaluate(
        &self,
        name: &str,
        mail: &Mail<'_>,
        dns: &Dns,
        deadline: Instant,
        receiver: &str,
    ) -> Result<Option<Hit>, DnsError> {
        let Some(ip) = mail.client else {
            return Ok(None);
        };
        if mail.protocol_state.is_some_and(before_mail_from) {
            return Ok(None);
        }
        let Some(query) = Query::for_mail(ip, mail.sender, mail.helo) else {
            return Ok(None);
        };
        let lookups = Lookups {
            dns,
            resolver: self.resolver,
            timeout: self.timeout,
            deadline: evaluation_deadline(deadline, Instant::now()),
            parsed: &self.parsed,
        };
        let outcome = check_host(lookups, &query).await;
        info!(
            check = name,
            client = %ip,
            identity = query.identity.name(),
            domain = ?query.domain,
            result = %outcome.result,
            reason = ?outcome.reason,
            lookups = outcome.lookups,
            voids = outcome.voids,
            "SPF"
        );
        let mut hit = Hit::new(
            self.scores[outcome.result.index()],
            &format!("{name}={}", outcome.result),
        );
        if self.header {
            hit.header = Some(received_spf(&query, &outcome, receiver));
        }
        Ok(Some(hit))
    }
}

/// Whether a request in `state` comes before the sender is known.
fn before_mail_from(state: &str) -> bool {
    ["CONNECT", "EHLO", "HELO"]
        .iter()
        .any(|early| state.eq_ignore_ascii_case(early))
}

/// When the evaluation must end: a tenth of the time left before
/// `deadline`, at most [`DEADLINE_MARGIN`], is kept for the answer.
fn evaluation_deadline(deadline: Instant, now: Instant) -> Instant {
    let left = deadline.saturating_duration_since(now);
    deadline
        .checked_sub((left / 10).min(DEADLINE_MARGIN))
        .unwrap_or(deadline)
}

#[cfg(test)]
#[expect(clippy::float_cmp, reason = "scores are small integers, exact in f64")]
mod tests {
    use super::*;
    use crate::config::{Config, ParseError};

    fn problems(text: &str) -> String {
        match Config::parse(text) {
            Err(ParseError::Invalid(problems)) => problems.join("\n"),
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    #[test]
    fn scores_and_header_compile() {
        let config = Config::parse(
            "[[policy.check]]\nname = \"spf\"\ntype = \"spf\"\n\
             scores = { fail = 10, softfail = 3, permerror = 2 }\nheader = true\n\
             timeout = \"3s\"\nresolver = \"127.0.0.1:5353\"\n",
        )
        .expect("valid");
        let mut found = Vec::new();
        let check = SpfCheck::compile(
            &config.policy.check[0],
            0,
            &mut Problems::new("policy.check[0]".to_owned(), &mut found),
        );
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(check.scores, [0.0, 10.0, 3.0, 0.0, 0.0, 0.0, 2.0]);
        assert!(check.header);
        assert_eq!(check.timeout, Duration::from_secs(3));
    }

    #[test]
    fn mistakes_are_named_with_their_key() {
        let all = problems(
            "[[policy.check]]\nname = \"spf\"\ntype = \"spf\"\nscore = 5\n\
             scores = { fial = 10, softfail = nan }\ntimeout = \"0s\"\nzone = \"x.example\"\n\
             [[policy.check]]\nname = \"zen\"\ntype = \"dnsbl\"\nzone = \"zen.example\"\n\
             scores = { fail = 1 }\nheader = true\n",
        );
        for needle in [
            "policy.check[0].score: an spf check scores each result",
            "policy.check[0].scores: unknown result \"fial\"; known: pass, fail, softfail, neutral, none, temperror, permerror",
            "policy.check[0].scores.softfail: must be a finite number",
            "policy.check[0].timeout: must be longer than 0s",
            "policy.check[0].zone: not used by a check of type spf",
            "policy.check[1].scores: not used by a check of type dnsbl",
            "policy.check[1].header: not used by a check of type dnsbl",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let message = Config::parse(
            "[[policy.check]]\nname = \"spf\"\ntype = \"spf\"\nscores = { fail = \"ten\" }\n",
        )
        .expect_err("a string score")
        .to_string();
        assert!(
            message.contains("line 4") && message.contains("invalid type"),
            "{message}"
        );
        let message =
            Config::parse("[[policy.check]]\nname = \"spf\"\ntype = \"spf\"\nheader = \"yes\"\n")
                .expect_err("a string header")
                .to_string();
        assert!(
            message.contains("line 4") && message.contains("invalid type"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn requests_before_mail_from_are_not_checked() {
        let config =
            Config::parse("[[policy.check]]\nname = \"spf\"\ntype = \"spf\"\n").expect("valid");
        let mut found = Vec::new();
        let check = SpfCheck::compile(
            &config.policy.check[0],
            0,
            &mut Problems::new("policy.check[0]".to_owned(), &mut found),
        );
        // No resolver at all: a lookup would fail the check as temperror.
        let dns = Dns::new(Vec::new(), 1, Duration::from_mins(1));
        let soon = Instant::now() + Duration::from_secs(1);
        for state in ["CONNECT", "EHLO", "helo"] {
            let mail = Mail {
                client: Some("192.0.2.1".parse().expect("ip")),
                helo: Some("mx.example.org"),
                sender: Some(""),
                protocol_state: Some(state),
                ..Mail::default()
            };
            let hit = check.evaluate("spf", &mail, &dns, soon, "mx").await;
            assert_eq!(hit, Ok(None), "{state}");
        }
        let bounce = Mail {
            client: Some("192.0.2.1".parse().expect("ip")),
            helo: Some("mx.example.org"),
            sender: Some(""),
            protocol_state: Some("RCPT"),
            ..Mail::default()
        };
        let hit = check.evaluate("spf", &bounce, &dns, soon, "mx").await;
        assert_eq!(
            hit.expect("a result").map(|hit| hit.detail),
            Some("spf=temperror(+0)".to_owned())
        );
    }

    #[test]
    fn the_evaluation_ends_before_the_request_deadline() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        assert_eq!(
            evaluation_deadline(deadline, now) + DEADLINE_MARGIN,
            deadline
        );
        let close = now + Duration::from_millis(50);
        assert_eq!(
            evaluation_deadline(close, now) + Duration::from_millis(5),
            close
        );
        assert_eq!(evaluation_deadline(now, now + Duration::from_secs(1)), now);
    }
}
