//! DNS for the checks: A lookups for the blocklists, and the TXT, A,
//! AAAA, MX and PTR records SPF asks for, through hickory-resolver, one
//! resolver per configured server, answers cached with their TTL,
//! "not listed" and "no such record" included, so the request path rarely
//! leaves the process.

use std::{
    fmt,
    future::Future,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_resolver::{
    TokioResolver,
    config::{NameServerConfig, ResolveHosts, ResolverConfig},
    net::{DnsError as HickoryDnsError, NetError, NoRecords, runtime::TokioRuntimeProvider},
    proto::rr::{RData, RecordType as HickoryRecordType},
};

use super::cache::TtlCache;

/// Longest time an answer is kept, whatever its TTL says.
const MAX_TTL: Duration = Duration::from_hours(24);

/// Reply codes of a listed name (`127.0.0.2`, …); empty: not listed.
pub type Codes = Arc<[Ipv4Addr]>;

/// A boxed future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A lookup that did not give an answer. Neither is cached: the next
/// request asks again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("{name}: no answer from {server} within {after:?}")]
    Timeout {
        name: String,
        server: String,
        after: Duration,
    },
    #[error("{name}: {server}: {message}")]
    Failed {
        name: String,
        server: String,
        message: String,
    },
}

/// An answer as the cache takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// A records; empty when the name does not exist or has none.
    pub codes: Vec<Ipv4Addr>,
    /// How long the answer may be kept; `None` when the server gave no
    /// TTL (a negative answer without SOA).
    pub ttl: Option<Duration>,
}

/// The record types SPF looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordType {
    Txt,
    A,
    Aaaa,
    Mx,
    Ptr,
}

/// The records of one answer; empty when the name does not exist or has
/// none of the type (a "void lookup" to SPF).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Records {
    /// TXT records, each one's strings joined.
    Txt(Vec<Box<[u8]>>),
    A(Vec<Ipv4Addr>),
    Aaaa(Vec<Ipv6Addr>),
    /// MX exchanges by preference, then name; PTR names. Lowercase,
    /// without the final dot.
    Names(Vec<String>),
}

impl Records {
    /// No records of the type asked for.
    pub fn empty(kind: RecordType) -> Self {
        match kind {
            RecordType::Txt => Self::Txt(Vec::new()),
            RecordType::A => Self::A(Vec::new()),
            RecordType::Aaaa => Self::Aaaa(Vec::new()),
            RecordType::Mx | RecordType::Ptr => Self::Names(Vec::new()),
        }
    }

    /// Whether the answer holds no record: a void lookup.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Txt(records) => records.is_empty(),
            Self::A(records) => records.is_empty(),
            Self::Aaaa(records) => records.is_empty(),
            Self::Names(records) => records.is_empty(),
        }
    }
}

/// Records as the cache takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordAnswer {
    pub records: Records,
    /// How long the answer may be kept; `None` when the server gave no
    /// TTL (a negative answer without SOA).
    pub ttl: Option<Duration>,
}

/// Something that answers queries: hickory in the daemon, a stub in
/// unit tests.
pub trait AddressLookup: Send + Sync + fmt::Debug {
    /// The A records of the fully qualified `name`.
    fn lookup_a<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Answer, DnsError>>;

    /// The `kind` records of the fully qualified `name`. A lookup that
    /// knows only A records fails here.
    fn lookup_records<'a>(
        &'a self,
        name: &'a str,
        kind: RecordType,
    ) -> BoxFuture<'a, Result<RecordAnswer, DnsError>> {
        Box::pin(async move {
            Err(DnsError::Failed {
                name: name.to_owned(),
                server: format!("{self:?}"),
                message: format!("{kind:?} lookups are not supported"),
            })
        })
    }
}

/// Why a resolver could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("DNS resolver {server}: {message}")]
pub struct ResolverError {
    pub server: String,
    pub message: String,
}

/// hickory-resolver against one server, or the system's configuration.
pub struct HickoryLookup {
    resolver: TokioResolver,
    server: String,
}

impl fmt::Debug for HickoryLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HickoryLookup")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl HickoryLookup {
    /// A resolver asking `server` (UDP, TCP on truncation), or the servers
    /// of `/etc/resolv.conf` when `None`.
    pub fn new(server: Option<SocketAddr>) -> Result<Self, ResolverError> {
        let label =
            server.map_or_else(|| "system (/etc/resolv.conf)".to_owned(), |s| s.to_string());
        let mut builder = match server {
            Some(addr) => {
                let mut name_server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut name_server.connections {
                    connection.port = addr.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![name_server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(|e| ResolverError {
                server: label.clone(),
                message: e.to_string(),
            })?,
        };
        let options = builder.options_mut();
        // The check's own timeout bounds the whole lookup; these only pace
        // retries inside it.
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        options.use_hosts_file = ResolveHosts::Never;
        let resolver = builder.build().map_err(|e| ResolverError {
            server: label.clone(),
            message: e.to_string(),
        })?;
        Ok(Self {
            resolver,
            server: label,
        })
    }
}

impl HickoryLookup {
    /// What a failed lookup of `name` means: no records, with the TTL the
    /// negative answer may be kept for, or an error, which is not cached.
    fn no_records(&self, name: &str, error: NetError) -> Result<Option<Duration>, DnsError> {
        match error {
            NetError::Dns(HickoryDnsError::NoRecordsFound(NoRecords { negative_ttl, .. })) => {
                Ok(negative_ttl.map(|secs| Duration::from_secs(u64::from(secs))))
            }
            error => Err(DnsError::Failed {
                name: name.to_owned(),
                server: self.server.clone(),
                message: error.to_string(),
            }),
        }
    }
}

impl AddressLookup for HickoryLookup {
    fn lookup_a<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Answer, DnsError>> {
        Box::pin(async move {
            match self.resolver.ipv4_lookup(name).await {
                Ok(lookup) => {
                    let codes: Vec<Ipv4Addr> = lookup
                        .answers()
                        .iter()
                        .filter_map(|record| match &record.data {
                            RData::A(a) => Some(a.0),
                            _ => None,
                        })
                        .collect();
                    let ttl = lookup
                        .valid_until()
                        .saturating_duration_since(Instant::now());
                    Ok(Answer {
                        codes,
                        ttl: Some(ttl),
                    })
                }
                Err(error) => self.no_records(name, error).map(|ttl| Answer {
                    codes: Vec::new(),
                    ttl,
                }),
            }
        })
    }

    fn lookup_records<'a>(
        &'a self,
        name: &'a str,
        kind: RecordType,
    ) -> BoxFuture<'a, Result<RecordAnswer, DnsError>> {
        Box::pin(async move {
            let record_type = match kind {
                RecordType::Txt => HickoryRecordType::TXT,
                RecordType::A => HickoryRecordType::A,
                RecordType::Aaaa => HickoryRecordType::AAAA,
                RecordType::Mx => HickoryRecordType::MX,
                RecordType::Ptr => HickoryRecordType::PTR,
            };
            match self.resolver.lookup(name, record_type).await {
                Ok(lookup) => {
                    let answers = lookup.answers();
                    let records = match kind {
                        RecordType::Txt => Records::Txt(
                            answers
                                .iter()
                                .filter_map(|record| match &record.data {
                                    RData::TXT(txt) => Some(txt.txt_data.concat().into()),
                                    _ => None,
                                })
                                .collect(),
                        ),
                        RecordType::A => Records::A(
                            answers
                                .iter()
                                .filter_map(|record| match &record.data {
                                    RData::A(a) => Some(a.0),
                                    _ => None,
                                })
                                .collect(),
                        ),
                        RecordType::Aaaa => Records::Aaaa(
                            answers
                                .iter()
                                .filter_map(|record| match &record.data {
                                    RData::AAAA(aaaa) => Some(aaaa.0),
                                    _ => None,
                                })
                                .collect(),
                        ),
                        RecordType::Mx => {
                            let mut exchanges: Vec<(u16, String)> = answers
                                .iter()
                                .filter_map(|record| match &record.data {
                                    RData::MX(mx) => {
                                        Some((mx.preference, host_name(&mx.exchange.to_ascii())))
                                    }
                                    _ => None,
                                })
                                .collect();
                            exchanges.sort();
                            Records::Names(exchanges.into_iter().map(|(_, name)| name).collect())
                        }
                        RecordType::Ptr => Records::Names(
                            answers
                                .iter()
                                .filter_map(|record| match &record.data {
                                    RData::PTR(ptr) => Some(host_name(&ptr.0.to_ascii())),
                                    _ => None,
                                })
                                .collect(),
                        ),
                    };
                    let ttl = lookup
                        .valid_until()
                        .saturating_duration_since(Instant::now());
                    Ok(RecordAnswer {
                        records,
                        ttl: Some(ttl),
                    })
                }
                Err(error) => self.no_records(name, error).map(|ttl| RecordAnswer {
                    records: Records::empty(kind),
                    ttl,
                }),
            }
        })
    }
}

/// A host name from DNS as SPF compares it: lowercase, no final dot.
fn host_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The resolvers of all checks and their shared answer cache.
#[derive(Debug)]
pub struct Dns {
    resolvers: Vec<(String, Arc<dyn AddressLookup>)>,
    cache: TtlCache<(u16, String), Codes>,
    /// SPF's records, apart from the blocklists' answers so that neither
    /// crowds the other out.
    records: TtlCache<(u16, RecordType, String), Arc<Records>>,
    negative_ttl: Duration,
}

impl Dns {
    /// `resolvers` are addressed by index from the checks; `label` names
    /// each in messages.
    pub fn new(
        resolvers: Vec<(String, Arc<dyn AddressLookup>)>,
        cache_size: usize,
        negative_ttl: Duration,
    ) -> Self {
        Self {
            resolvers,
            cache: TtlCache::new(cache_size),
            records: TtlCache::new(cache_size),
            negative_ttl,
        }
    }

    /// The reply codes for `name` (fully qualified, ending in `.`), from
    /// the cache or from resolver `resolver` within `timeout`.
    pub async fn query(
        &self,
        resolver: u16,
        name: String,
        timeout: Duration,
    ) -> Result<Codes, DnsError> {
        let key = (resolver, name);
        if let Some(codes) = self.cache.get(&key, Instant::now(), Arc::clone) {
            return Ok(codes);
        }
        let Some((label, lookup)) = self.resolvers.get(usize::from(resolver)) else {
            return Err(DnsError::Failed {
                name: key.1,
                server: format!("resolver #{resolver}"),
                message: "not configured".to_owned(),
            });
        };
        let answer = match tokio::time::timeout(timeout, lookup.lookup_a(&key.1)).await {
            Ok(answer) => answer?,
            Err(_) => {
                return Err(DnsError::Timeout {
                    name: key.1,
                    server: label.clone(),
                    after: timeout,
                });
            }
        };
        let ttl = answer.ttl.unwrap_or(self.negative_ttl).min(MAX_TTL);
        let codes: Codes = answer.codes.into();
        if !ttl.is_zero() {
            let now = Instant::now();
            self.cache.insert(key, Arc::clone(&codes), now + ttl, now);
        }
        Ok(codes)
    }
}

impl Dns {
    /// The `kind` records of `name` (fully qualified, ending in `.`,
    /// lowercase), from the cache or from resolver `resolver` within
    /// `timeout`.
    pub async fn records(
        &self,
        resolver: u16,
        kind: RecordType,
        name: String,
        timeout: Duration,
    ) -> Result<Arc<Records>, DnsError> {
        let key = (resolver, kind, name);
        if let Some(records) = self.records.get(&key, Instant::now(), Arc::clone) {
            return Ok(records);
        }
        let Some((label, lookup)) = self.resolvers.get(usize::from(resolver)) else {
            return Err(DnsError::Failed {
                name: key.2,
                server: format!("resolver #{resolver}"),
                message: "not configured".to_owned(),
            });
        };
        let answer = match tokio::time::timeout(timeout, lookup.lookup_records(&key.2, kind)).await
        {
            Ok(answer) => answer?,
            Err(_) => {
                return Err(DnsError::Timeout {
                    name: key.2,
                    server: label.clone(),
                    after: timeout,
                });
            }
        };
        let ttl = answer.ttl.unwrap_or(self.negative_ttl).min(MAX_TTL);
        let records = Arc::new(answer.records);
        if !ttl.is_zero() {
            let now = Instant::now();
            self.records
                .insert(key, Arc::clone(&records), now + ttl, now);
        }
        Ok(records)
    }
}

/// `d.c.b.a.zone.` for IPv4 `a.b.c.d`.
pub fn ipv4_query(addr: Ipv4Addr, zone: &str) -> String {
    let [a, b, c, d] = addr.octets();
    format!("{d}.{c}.{b}.{a}.{zone}.")
}

/// The 32 reversed nibbles of an IPv6 address, then the zone (RFC 5782).
pub fn ipv6_query(addr: Ipv6Addr, zone: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = String::with_capacity(64 + zone.len() + 1);
    for byte in addr.octets().iter().rev() {
        name.push(char::from(HEX[usize::from(byte & 0x0f)]));
        name.push('.');
        name.push(char::from(HEX[usize::from(byte >> 4)]));
        name.push('.');
    }
    name.push_str(zone);
    name.push('.');
    name
}

#[cfg(test)]
pub mod stub {
    //! A scripted resolver for unit tests.

    use std::{collections::HashMap, sync::Mutex};

    use super::*;

    /// Answers from a table; names not in it do not exist. A name mapped
    /// to `None` never answers.
    #[derive(Debug, Default)]
    pub struct StubLookup {
        pub answers: HashMap<String, Option<Vec<Ipv4Addr>>>,
        /// What [`AddressLookup::lookup_records`] answers.
        pub records: HashMap<(String, RecordType), Option<Records>>,
        pub asked: Mutex<Vec<String>>,
    }

    impl StubLookup {
        pub fn listing(entries: &[(&str, &[Ipv4Addr])]) -> Self {
            Self {
                answers: entries
                    .iter()
                    .map(|(name, codes)| ((*name).to_owned(), Some(codes.to_vec())))
                    .collect(),
                records: HashMap::new(),
                asked: Mutex::default(),
            }
        }

        /// A zone of TXT, A, AAAA and MX records, `(name, value)`: a
        /// value starting with `v=` is TXT, `mx:` MX, `ptr:` PTR, and an
        /// address A or AAAA. Names end in `.`.
        pub fn zone(entries: &[(&str, &str)]) -> Self {
            let mut stub = Self::default();
            for (name, value) in entries {
                let (kind, record) = if let Some(host) = value.strip_prefix("mx:") {
                    (RecordType::Mx, Records::Names(vec![host.to_owned()]))
                } else if let Some(host) = value.strip_prefix("ptr:") {
                    (RecordType::Ptr, Records::Names(vec![host.to_owned()]))
                } else if let Ok(ip) = value.parse::<Ipv4Addr>() {
                    (RecordType::A, Records::A(vec![ip]))
                } else if let Ok(ip) = value.parse::<Ipv6Addr>() {
                    (RecordType::Aaaa, Records::Aaaa(vec![ip]))
                } else {
                    (RecordType::Txt, Records::Txt(vec![value.as_bytes().into()]))
                };
                let slot = stub
                    .records
                    .entry(((*name).to_owned(), kind))
                    .or_insert_with(|| Some(Records::empty(kind)));
                match (slot, record) {
                    (Some(Records::Txt(all)), Records::Txt(mut new)) => all.append(&mut new),
                    (Some(Records::A(all)), Records::A(mut new)) => all.append(&mut new),
                    (Some(Records::Aaaa(all)), Records::Aaaa(mut new)) => all.append(&mut new),
                    (Some(Records::Names(all)), Records::Names(mut new)) => all.append(&mut new),
                    _ => {}
                }
            }
            stub
        }

        pub fn asked(&self) -> Vec<String> {
            self.asked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        }
    }

    impl AddressLookup for StubLookup {
        fn lookup_a<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Answer, DnsError>> {
            self.asked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(name.to_owned());
            Box::pin(async move {
                match self.answers.get(name) {
                    Some(Some(codes)) => Ok(Answer {
                        codes: codes.clone(),
                        ttl: Some(Duration::from_mins(1)),
                    }),
                    Some(None) => std::future::pending().await,
                    None => Ok(Answer {
                        codes: Vec::new(),
                        ttl: None,
                    }),
                }
            })
        }

        fn lookup_records<'a>(
            &'a self,
            name: &'a str,
            kind: RecordType,
        ) -> BoxFuture<'a, Result<RecordAnswer, DnsError>> {
            self.asked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("{kind:?} {name}"));
            Box::pin(async move {
                match self.records.get(&(name.to_owned(), kind)) {
                    Some(Some(records)) => Ok(RecordAnswer {
                        records: records.clone(),
                        ttl: Some(Duration::from_mins(1)),
                    }),
                    Some(None) => std::future::pending().await,
                    None => Ok(RecordAnswer {
                        records: Records::empty(kind),
                        ttl: Some(Duration::from_mins(1)),
                    }),
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{stub::StubLookup, *};

    #[test]
    fn query_names() {
        assert_eq!(
            ipv4_query(Ipv4Addr::new(192, 0, 2, 50), "zen.example.test"),
            "50.2.0.192.zen.example.test."
        );
        assert_eq!(
            ipv6_query("2001:db8::1".parse().expect("v6"), "bl.test"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test."
        );
    }

    #[tokio::test]
    async fn spf_records_are_cached_with_their_ttl_empty_answers_too() {
        let mut stub = StubLookup::zone(&[("ex.test.", "v=spf1 -all")]);
        stub.records
            .insert(("stall.test.".to_owned(), RecordType::Txt), None);
        let stub = Arc::new(stub);
        let dns = Dns::new(
            vec![(
                "stub".to_owned(),
                Arc::clone(&stub) as Arc<dyn AddressLookup>,
            )],
            100,
            Duration::from_mins(5),
        );
        let second = Duration::from_secs(1);
        for _ in 0..3 {
            let txt = dns
                .records(0, RecordType::Txt, "ex.test.".to_owned(), second)
                .await
                .expect("answer");
            assert_eq!(*txt, Records::Txt(vec![b"v=spf1 -all".as_slice().into()]));
            let none = dns
                .records(0, RecordType::A, "ex.test.".to_owned(), second)
                .await
                .expect("answer");
            assert!(none.is_empty());
        }
        assert_eq!(stub.asked(), ["Txt ex.test.", "A ex.test."]);
        let stalled = dns
            .records(
                0,
                RecordType::Txt,
                "stall.test.".to_owned(),
                Duration::from_millis(20),
            )
            .await;
        assert!(
            matches!(stalled, Err(DnsError::Timeout { .. })),
            "{stalled:?}"
        );
    }

    #[tokio::test]
    async fn answers_are_cached_positive_and_negative_and_timeouts_are_not() {
        let mut stub = StubLookup::listing(&[("2.0.0.127.bl.", &[Ipv4Addr::new(127, 0, 0, 2)])]);
        stub.answers.insert("stall.bl.".to_owned(), None);
        let stub = Arc::new(stub);
        let dns = Dns::new(
            vec![(
                "stub".to_owned(),
                Arc::clone(&stub) as Arc<dyn AddressLookup>,
            )],
            100,
            Duration::from_mins(5),
        );
        let second = Duration::from_secs(1);
        for _ in 0..3 {
            let codes = dns.query(0, "2.0.0.127.bl.".to_owned(), second).await;
            assert_eq!(codes.as_deref(), Ok(&[Ipv4Addr::new(127, 0, 0, 2)][..]));
            let codes = dns.query(0, "1.0.0.127.bl.".to_owned(), second).await;
            assert_eq!(codes.as_deref(), Ok(&[][..]));
        }
        assert_eq!(stub.asked(), ["2.0.0.127.bl.", "1.0.0.127.bl."]);
        let started = Instant::now();
        let stalled = dns
            .query(0, "stall.bl.".to_owned(), Duration::from_millis(50))
            .await;
        assert!(
            matches!(stalled, Err(DnsError::Timeout { .. })),
            "{stalled:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        let _ = dns
            .query(0, "stall.bl.".to_owned(), Duration::from_millis(10))
            .await;
        assert_eq!(stub.asked().len(), 4, "a timeout is asked again");
    }
}
