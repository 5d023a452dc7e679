//! `rhsbl`: domains from the mail (sender domain, HELO name, reverse
//! client name) against a domain blocklist (mtpolicyd's DBL). All domains
//! of one request are looked up at once; the check fires once, with the
//! highest-scoring listed domain.

use std::{net::IpAddr, time::Duration};

use super::{
    Hit, Mail, Problems,
    dnsbl::{Scoring, zone},
};
use crate::policy::{
    config::{CheckConfig, DomainField},
    dns::{Dns, DnsError},
    join::JoinAll,
};

/// The fields looked up when a check names none.
const DEFAULT_FIELDS: [DomainField; 3] = [
    DomainField::Sender,
    DomainField::Helo,
    DomainField::ReverseClientName,
];

/// A compiled `rhsbl` check.
#[derive(Clone, Debug)]
pub struct DomainList {
    pub zone: String,
    pub timeout: Duration,
    pub resolver: u16,
    pub fields: Vec<DomainField>,
    pub scoring: Scoring,
}

impl DomainList {
    pub(super) fn compile(check: &CheckConfig, resolver: u16, problems: &mut Problems<'_>) -> Self {
        let (zone, timeout) = zone(check, problems);
        let fields = check
            .fields
            .clone()
            .unwrap_or_else(|| DEFAULT_FIELDS.to_vec());
        if fields.is_empty() {
            problems.push(
                "fields",
                "name at least one of sender, helo, reverse_client_name, client_name",
            );
        }
        Self {
            zone,
            timeout,
            resolver,
            fields,
            scoring: Scoring::compile(check, problems),
        }
    }

    /// The distinct domains of `mail` this check looks up, lowercased.
    pub fn domains(&self, mail: &Mail<'_>) -> Vec<String> {
        let mut domains: Vec<String> = Vec::with_capacity(self.fields.len());
        for field in &self.fields {
            let value = match field {
                DomainField::Sender => mail
                    .sender
                    .and_then(|sender| sender.rsplit_once('@'))
                    .map(|(_, domain)| domain),
                DomainField::Helo => mail.helo,
                DomainField::ReverseClientName => mail.reverse_client_name,
                DomainField::ClientName => mail.client_name,
            };
            let Some(domain) = value.and_then(domain_name) else {
                continue;
            };
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        domains
    }

    pub(super) async fn evaluate(
        &self,
        name: &str,
        mail: &Mail<'_>,
        dns: &Dns,
    ) -> Result<Option<Hit>, DnsError> {
        let domains = self.domains(mail);
        if domains.is_empty() {
            return Ok(None);
        }
        let lookups = domains.iter().map(|domain| {
            dns.query(
                self.resolver,
                format!("{domain}.{}.", self.zone),
                self.timeout,
            )
        });
        let mut join = JoinAll::new(lookups);
        (&mut join).await;
        let answers = join.into_outputs();
        let mut best: Option<Hit> = None;
        let mut first_error = None;
        for (domain, answer) in domains.iter().zip(answers) {
            match answer {
                Some(Ok(codes)) => {
                    let hit = self.scoring.hit(&format!("{name}({domain})"), &codes);
                    if let Some(hit) = hit
                        && best.as_ref().is_none_or(|b| hit.score > b.score)
                    {
                        best = Some(hit);
                    }
                }
                Some(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                None => {}
            }
        }
        match (best, first_error) {
            (Some(hit), _) => Ok(Some(hit)),
            (None, Some(error)) => Err(error),
            (None, None) => Ok(None),
        }
    }
}

/// A name worth looking up: a dotted DNS name, not an address literal,
/// not `unknown`; lowercased, without a final dot.
fn domain_name(text: &str) -> Option<String> {
    let name = text.trim().trim_end_matches('.');
    if name.is_empty()
        || name.eq_ignore_ascii_case("unknown")
        || name.starts_with('[')
        || name.parse::<IpAddr>().is_ok()
        || !name.contains('.')
        || name.len() > 190
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name
            .split('.')
            .any(|label| label.is_empty() || label.len() > 63)
    {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_taken_from_the_configured_fields_once_each() {
        let list = DomainList {
            zone: "dbl.test".into(),
            timeout: Duration::from_secs(1),
            resolver: 0,
            fields: DEFAULT_FIELDS.to_vec(),
            scoring: Scoring {
                score: 3.0,
                categories: Vec::new(),
                zone: "dbl.test".to_owned(),
                domain_list: true,
                errors: std::sync::Arc::new(crate::listen::LogLimit::new(Duration::from_mins(1))),
            },
        };
        let mail = Mail {
            sender: Some("Bob@Spam.Example"),
            helo: Some("spam.example."),
            reverse_client_name: Some("host.other.example"),
            ..Mail::default()
        };
        assert_eq!(list.domains(&mail), ["spam.example", "host.other.example"]);
        let mail = Mail {
            sender: Some(""),
            helo: Some("[192.0.2.1]"),
            reverse_client_name: Some("unknown"),
            ..Mail::default()
        };
        assert!(list.domains(&mail).is_empty());
        assert_eq!(domain_name("localhost"), None);
        assert_eq!(domain_name("192.0.2.1"), None);
        assert_eq!(domain_name("bad name.example"), None);
    }
}
