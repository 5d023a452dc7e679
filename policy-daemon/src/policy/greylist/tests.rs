use std::{
    net::IpAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use super::*;

fn config(delay_ms: u64) -> GreylistConfig {
    GreylistConfig {
        delay: Duration::from_millis(delay_ms),
        auto_allow: 2,
        action: "DEFER_IF_PERMIT greylisted %IP%, retry in %DELAY%".to_owned(),
        ..GreylistConfig::default()
    }
}

fn mail<'a>(client: &str, sender: &'a str, recipient: &'a str) -> Mail<'a> {
    Mail {
        client: Some(client.parse().expect("address")),
        sender: Some(sender),
        recipient: Some(recipient),
        protocol_state: Some("RCPT"),
        ..Mail::default()
    }
}

async fn ask(greylist: &Greylist, mail: &Mail<'_>) -> Answer {
    let ip = mail.client.map(|ip| ip.to_string()).unwrap_or_default();
    greylist
        .decide(mail, &ip, 1.0, "", Instant::now() + Duration::from_secs(1))
        .await
}

#[test]
fn senders_are_keyed_as_postgrey_keys_them() {
    assert_eq!(sender_key("Alice@Example.ORG"), "alice@example.org");
    assert_eq!(
        sender_key("bounce+12345-678@list.example"),
        "bounce@list.example"
    );
    assert_eq!(
        sender_key("prvs=1234abcd=user@example.com"),
        "user@example.com"
    );
    assert_eq!(
        sender_key("news-2024-07-123@x.example"),
        "news-#-#-#@x.example"
    );
    assert_eq!(sender_key("news2024x7@x.example"), "news2024x7@x.example");
    assert_eq!(sender_key("12345@x.example"), "#@x.example");
    assert_eq!(sender_key("a_1@x.example"), "a_1@x.example");
    assert_eq!(sender_key(""), "");
}

#[test]
fn a_triplet_is_keyed_by_its_network() {
    let settings = Settings::new(&GreylistConfig::default(), &[]);
    let net = |ip: &str| settings.network(ip.parse::<IpAddr>().expect("address"));
    assert_eq!(net("198.51.100.7"), net("198.51.100.250"));
    assert_ne!(net("198.51.100.7"), net("198.51.101.7"));
    assert_eq!(net("2001:db8:1:2::1"), net("2001:db8:1:2:ffff::9"));
    assert_ne!(net("2001:db8:1:2::1"), net("2001:db8:1:3::1"));
    let a = key(&net("198.51.100.7"), "a@example.org", "b@example.net");
    assert_eq!(
        a,
        key(&net("198.51.100.9"), "A@example.org", "B@Example.net")
    );
    assert_ne!(
        a,
        key(&net("198.51.100.7"), "a@example.org", "c@example.net")
    );
    // The separator keeps fields apart: "ab"+"c" is not "a"+"bc".
    assert_ne!(
        key(&net("198.51.100.7"), "ab", "c"),
        key(&net("198.51.100.7"), "a", "bc")
    );
}

#[tokio::test]
async fn a_new_triplet_is_deferred_and_its_retry_after_the_delay_passes() {
    let greylist = Greylist::start(&config(150), None, &[], None).expect("greylist");
    let first = mail("198.51.100.7", "a@example.org", "b@example.net");
    let Answer::Defer(action) = ask(&greylist, &first).await else {
        panic!("a new triplet is deferred");
    };
    assert_eq!(
        action,
        "DEFER_IF_PERMIT greylisted 198.51.100.7, retry in 1s"
    );
    assert!(
        matches!(ask(&greylist, &first).await, Answer::Defer(_)),
        "too early"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The same network retries from another address: a provider's pool.
    let retry = mail("198.51.100.99", "a@example.org", "b@example.net");
    assert_eq!(ask(&greylist, &retry).await, Answer::Pass);
    assert_eq!(ask(&greylist, &retry).await, Answer::Pass);
    assert!(
        greylist
            .describe()
            .starts_with("1 triplets, 2 deferred, 2 passed")
    );
}

#[tokio::test]
async fn a_network_that_passed_enough_triplets_skips_greylisting() {
    let greylist = Greylist::start(&config(50), None, &[], None).expect("greylist");
    for rcpt in ["1@example.net", "2@example.net"] {
        let m = mail("203.0.113.5", "a@example.org", rcpt);
        assert!(matches!(ask(&greylist, &m).await, Answer::Defer(_)));
        tokio::time::sleep(Duration::from_millis(70)).await;
        assert_eq!(ask(&greylist, &m).await, Answer::Pass);
        // Passing the same triplet again counts once.
        assert_eq!(ask(&greylist, &m).await, Answer::Pass);
    }
    let fresh = mail("203.0.113.6", "z@example.org", "3@example.net");
    assert_eq!(ask(&greylist, &fresh).await, Answer::Pass, "auto-allowed");
    let elsewhere = mail("203.0.114.6", "z@example.org", "3@example.net");
    assert!(matches!(ask(&greylist, &elsewhere).await, Answer::Defer(_)));
}

#[tokio::test]
async fn allowlisted_clients_and_other_stages_are_never_greylisted() {
    let allow: IpNet = "192.0.2.0/24".parse().expect("net");
    let greylist = Greylist::start(&config(60_000), None, &[allow], None).expect("greylist");
    let allowed = mail("192.0.2.9", "a@example.org", "b@example.net");
    assert_eq!(ask(&greylist, &allowed).await, Answer::Pass);
    let mut data = mail("198.51.100.7", "a@example.org", "b@example.net");
    data.protocol_state = Some("DATA");
    assert_eq!(ask(&greylist, &data).await, Answer::Pass);
    let mut no_rcpt = mail("198.51.100.7", "a@example.org", "b@example.net");
    no_rcpt.recipient = None;
    assert_eq!(ask(&greylist, &no_rcpt).await, Answer::Pass);
    // The null sender is greylisted like any other.
    let bounce = mail("198.51.100.7", "", "b@example.net");
    assert!(matches!(ask(&greylist, &bounce).await, Answer::Defer(_)));
    // A reload that lifts the allowlist greylists the client from then on.
    greylist.reconfigure(&config(60_000), &[]);
    assert!(matches!(ask(&greylist, &allowed).await, Answer::Defer(_)));
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spamwall.db");
    let m = mail("198.51.100.7", "a@example.org", "b@example.net");
    {
        let greylist = Greylist::start(&config(150), Some(&path), &[], None).expect("greylist");
        assert!(matches!(ask(&greylist, &m).await, Answer::Defer(_)));
        greylist.stop();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let greylist = Greylist::start(&config(150), Some(&path), &[], None).expect("restarted");
    assert_eq!(greylist.len(), 1);
    assert_eq!(
        ask(&greylist, &m).await,
        Answer::Pass,
        "the first sighting was kept"
    );
}

/// A fleet whose other host saw every triplet at `at`, or that fails.
#[derive(Debug)]
struct Fleet {
    at: Option<i64>,
    asked: AtomicUsize,
}

impl SharedTriplets for Fleet {
    fn first_seen(
        &self,
        _key: TripletKey,
        now: i64,
        _expire: Duration,
    ) -> BoxFuture<'_, Result<i64, String>> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let answer = self
            .at
            .map(|at| at.min(now))
            .ok_or_else(|| "connection refused".to_owned());
        Box::pin(async move { answer })
    }

    fn describe(&self) -> String {
        "test fleet".to_owned()
    }
}

#[tokio::test]
async fn a_retry_first_seen_by_another_host_passes_and_a_failing_fleet_greylists_locally() {
    let fleet = Arc::new(Fleet {
        at: Some(unix_ms() - 10 * 60_000),
        asked: AtomicUsize::new(0),
    });
    let shared: Arc<dyn SharedTriplets> = fleet.clone();
    let greylist =
        Greylist::start(&GreylistConfig::default(), None, &[], Some(shared)).expect("greylist");
    let m = mail("198.51.100.7", "a@example.org", "b@example.net");
    assert_eq!(ask(&greylist, &m).await, Answer::Pass);
    assert_eq!(ask(&greylist, &m).await, Answer::Pass);
    assert_eq!(
        fleet.asked.load(Ordering::Relaxed),
        1,
        "a passed triplet needs no word from the fleet"
    );
    let down: Arc<dyn SharedTriplets> = Arc::new(Fleet {
        at: None,
        asked: AtomicUsize::new(0),
    });
    let greylist =
        Greylist::start(&GreylistConfig::default(), None, &[], Some(down)).expect("greylist");
    assert!(matches!(ask(&greylist, &m).await, Answer::Defer(_)));
    assert_eq!(greylist.counters.shared_errors.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn the_engine_greylists_what_a_greylist_threshold_reaches_and_a_reject_wins() {
    use crate::{
        config::Config,
        policy::{
            PolicyStats,
            codec::Request,
            dns::{AddressLookup, stub::StubLookup},
            engine::Engine,
        },
    };
    let config = Config::parse(
        r#"
[policy]
[[policy.check]]
name = "trap"
type = "list"
recipient = ["trap@example.net"]
score = 10
[[policy.threshold]]
score = 0
action = "greylist"
[[policy.threshold]]
score = 10
action = "REJECT trapped"
[policy.greylist]
delay = "1h"
"#,
    )
    .expect("config")
    .policy;
    let greylist = Arc::new(
        Greylist::start(config.greylist.as_ref().expect("section"), None, &[], None)
            .expect("greylist"),
    );
    let stub = Arc::new(StubLookup::listing(&[]));
    let engine = Engine::with_lookups(&config, None, Arc::new(PolicyStats::default()), move |_| {
        Ok(Arc::clone(&stub) as Arc<dyn AddressLookup>)
    })
    .expect("engine")
    .with_greylist(Some(greylist));
    let rcpt = |recipient: &str| {
        Request::from_pairs([
            ("request", "smtpd_access_policy"),
            ("protocol_state", "RCPT"),
            ("client_address", "198.51.100.7"),
            ("sender", "a@example.org"),
            ("recipient", recipient),
            ("instance", "g1"),
        ])
    };
    let deadline = || Instant::now() + Duration::from_secs(1);
    let greylisted = engine.decide(&rcpt("b@example.net"), deadline()).await;
    assert_eq!(greylisted.action, "DEFER_IF_PERMIT greylisted, retry in 1h");
    let rejected = engine.decide(&rcpt("trap@example.net"), deadline()).await;
    assert_eq!(rejected.action, "REJECT trapped");
}

#[test]
fn a_greylist_threshold_needs_the_section_and_does_not_ban() {
    let problems = crate::config::Config::parse(
        r#"
[policy]
[[policy.threshold]]
score = 1
action = "greylist"
ban = "1h"
"#,
    )
    .expect_err("refused")
    .to_string();
    assert!(
        problems
            .contains("policy.threshold[0].action: \"greylist\" needs a [policy.greylist] section"),
        "{problems}"
    );
    assert!(problems.contains("policy.threshold[0].ban"), "{problems}");
}
