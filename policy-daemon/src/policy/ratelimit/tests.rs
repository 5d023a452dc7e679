//! Rate limits in the engine: counting, answers, scores, bans, restart.

use std::{
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use super::*;
use crate::{
    bans::{BanSink, RecordingSink, Source},
    config::{Config, ParseError},
    policy::{
        PolicyStats,
        dns::{AddressLookup, stub::StubLookup},
        engine::Engine,
    },
};

fn engine(policy: &str, state: &Arc<RateState>, sink: &Arc<RecordingSink>) -> Engine {
    engine_with(policy, state, sink, Arc::default())
}

fn engine_with(
    policy: &str,
    state: &Arc<RateState>,
    sink: &Arc<RecordingSink>,
    counters: Arc<PolicyStats>,
) -> Engine {
    let config = Config::parse(policy).expect("config").policy;
    let stub = Arc::new(StubLookup::listing(&[]));
    let limits = RateLimits::new(&config.ratelimit, Arc::clone(state)).expect("limits");
    Engine::with_lookups(
        &config,
        Some(Arc::clone(sink) as Arc<dyn BanSink>),
        counters,
        move |_| Ok(Arc::clone(&stub) as Arc<dyn AddressLookup>),
    )
    .expect("engine")
    .with_rate_limits(limits)
}

fn rcpt(client: &str, instance: &str, extra: &[(&str, &str)]) -> Request {
    let mut pairs = vec![
        ("request", "smtpd_access_policy"),
        ("protocol_state", "RCPT"),
        ("client_address", client),
        ("recipient", "rcpt@example.net"),
        ("instance", instance),
    ];
    pairs.extend_from_slice(extra);
    Request::from_pairs(pairs)
}

fn soon() -> Instant {
    Instant::now() + Duration::from_millis(500)
}

const RCPTS: &str = r#"
[[policy.ratelimit]]
name = "client-rcpts"
key = "client_address"
count = "recipients"
limit = 3
window = "1h"
action = "DEFER_IF_PERMIT too many recipients from %IP%"
"#;

#[tokio::test]
async fn the_recipient_over_the_limit_is_deferred_and_others_are_not() {
    let sink = Arc::new(RecordingSink::default());
    let state = RateState::open(1000, None, None);
    let engine = engine(RCPTS, &state, &sink);
    for i in 0..3 {
        let answer = engine
            .decide(&rcpt("198.51.100.7", &format!("m{i}"), &[]), soon())
            .await;
        assert_eq!(answer.action, "DUNNO", "RCPT {i}");
    }
    let over = engine
        .decide(&rcpt("198.51.100.7", "m3", &[]), soon())
        .await;
    assert_eq!(
        over.action,
        "DEFER_IF_PERMIT too many recipients from 198.51.100.7"
    );
    assert_eq!(over.detail, "ratelimit/client-rcpts=4/3(+0)");
    // Another client has a counter of its own.
    let other = engine
        .decide(&rcpt("198.51.100.8", "m4", &[]), soon())
        .await;
    assert_eq!(other.action, "DUNNO");
    assert!(sink.recorded().is_empty(), "no ban configured");
}

#[tokio::test]
async fn mails_count_each_instance_once_and_defer_every_rcpt_of_the_mail_over() {
    let sink = Arc::new(RecordingSink::default());
    let state = RateState::open(1000, None, None);
    let engine = engine(
        r#"
[[policy.ratelimit]]
name = "sender-mails"
key = "sender"
count = "mails"
limit = 2
window = "10m"
action = "DEFER too many mails from this sender"
"#,
        &state,
        &sink,
    );
    for mail in ["a", "b", "c"] {
        for recipient in 0..3 {
            let answer = engine
                .decide(
                    &rcpt(
                        "198.51.100.9",
                        mail,
                        &[
                            ("sender", "Alice@Example.ORG"),
                            ("recipient", &format!("r{recipient}@x.test")),
                        ],
                    ),
                    soon(),
                )
                .await;
            let expected = if mail == "c" {
                "DEFER too many mails from this sender"
            } else {
                "DUNNO"
            };
            assert_eq!(answer.action, expected, "mail {mail}, RCPT {recipient}");
        }
    }
    // The key compares without case: the same sender, another spelling.
    let again = engine
        .decide(
            &rcpt("192.0.2.1", "d", &[("sender", "alice@example.org")]),
            soon(),
        )
        .await;
    assert_eq!(again.action, "DEFER too many mails from this sender");
}

#[tokio::test]
async fn requests_without_the_key_or_outside_rcpt_are_not_counted() {
    let sink = Arc::new(RecordingSink::default());
    let state = RateState::open(1000, None, None);
    let engine = engine(
        r#"
[[policy.ratelimit]]
name = "sasl"
key = "sasl_username"
limit = 1
window = 60
action = "450 4.7.1 slow down %IP%"
"#,
        &state,
        &sink,
    );
    for i in 0..5 {
        let unauthenticated = engine
            .decide(&rcpt("198.51.100.10", &format!("n{i}"), &[]), soon())
            .await;
        assert_eq!(unauthenticated.action, "DUNNO");
        let empty = engine
            .decide(
                &rcpt("198.51.100.10", "e", &[("sasl_username", "")]),
                soon(),
            )
            .await;
        assert_eq!(empty.action, "DUNNO");
        let at_mail = Request::from_pairs([
            ("protocol_state", "MAIL"),
            ("client_address", "198.51.100.10"),
            ("sasl_username", "bob"),
        ]);
        assert_eq!(engine.decide(&at_mail, soon()).await.action, "DUNNO");
    }
    assert_eq!(state.counters().0, 0);
    let bob = [("sasl_username", "bob")];
    assert_eq!(
        engine
            .decide(&rcpt("198.51.100.10", "s1", &bob), soon())
            .await
            .action,
        "DUNNO"
    );
    assert_eq!(
        engine
            .decide(&rcpt("198.51.100.10", "s2", &bob), soon())
            .await
            .action,
        "450 4.7.1 slow down 198.51.100.10"
    );
}

#[tokio::test]
async fn an_overrun_scores_bans_once_per_window_and_a_harder_threshold_wins() {
    let sink = Arc::new(RecordingSink::default());
    let state = RateState::open(1000, None, None);
    let policy_stats = Arc::new(PolicyStats::default());
    let engine = engine_with(
        r#"
[[policy.check]]
name = "partners"
type = "list"
allow = true
action = "OK"
client = ["192.0.2.0/24"]
[[policy.threshold]]
score = 10
action = "REJECT score %SCORE%: %DETAIL%"
[[policy.ratelimit]]
name = "burst"
limit = 1
window = "1h"
action = "DEFER_IF_PERMIT burst from %IP%"
ban = "1h"
score = 4
[[policy.ratelimit]]
name = "flood"
limit = 2
window = "1h"
action = "DEFER flood"
score = 6
"#,
        &state,
        &sink,
        Arc::clone(&policy_stats),
    );
    let client = "198.51.100.20";
    assert_eq!(
        engine.decide(&rcpt(client, "m", &[]), soon()).await.action,
        "DUNNO"
    );
    // Over `burst` only: its answer, its score, and a ban.
    let second = engine.decide(&rcpt(client, "m", &[]), soon()).await;
    assert_eq!(second.action, "DEFER_IF_PERMIT burst from 198.51.100.20");
    assert_eq!(second.score, 4.0);
    // Over both: 4 + 6 reaches the REJECT threshold, harder than DEFER.
    let third = engine.decide(&rcpt(client, "m", &[]), soon()).await;
    assert_eq!(
        third.action,
        "REJECT score 10: ratelimit/burst=2/1(+4) ratelimit/flood=3/2(+6)"
    );
    // Scores count once per mail.
    let fourth = engine.decide(&rcpt(client, "m", &[]), soon()).await;
    assert_eq!(fourth.score, 10.0);
    let bans = sink.recorded();
    assert_eq!(bans.len(), 1, "one ban per key and window: {bans:?}");
    assert_eq!(bans[0].0.addr(), client.parse::<IpAddr>().expect("ip"));
    assert_eq!(bans[0].1, BanLength::Base(Duration::from_hours(1)));
    assert_eq!(bans[0].2, Source::Policy);
    assert!(
        bans[0]
            .3
            .starts_with("rate limit burst: client_address 198.51.100.20 over 1 in 1h"),
        "{}",
        bans[0].3
    );
    // The allow list answers before any limit counts.
    for _ in 0..5 {
        let partner = engine.decide(&rcpt("192.0.2.5", "p", &[]), soon()).await;
        assert_eq!(partner.action, "OK");
    }
    // A client the ban manager refuses (loopback, for the recording sink)
    // is not banned; the answer stands.
    for _ in 0..2 {
        engine.decide(&rcpt("127.0.0.1", "l", &[]), soon()).await;
    }
    let refused = engine.decide(&rcpt("127.0.0.1", "l", &[]), soon()).await;
    assert!(refused.action.starts_with("REJECT"), "{}", refused.action);
    assert_eq!(sink.recorded().len(), 1);
    assert_eq!(policy_stats.bans_refused.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn counts_survive_a_restart_through_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = dir.path().join("spamwall.db");
    let sink = Arc::new(RecordingSink::default());
    {
        let state = RateState::open(1000, Some(&database), None);
        let engine = engine(RCPTS, &state, &sink);
        for i in 0..3 {
            engine
                .decide(&rcpt("198.51.100.30", &format!("m{i}"), &[]), soon())
                .await;
        }
        state.flush();
    }
    let state = RateState::open(1000, Some(&database), None);
    assert_eq!(state.counters().0, 1);
    let engine = engine(RCPTS, &state, &sink);
    let over = engine
        .decide(&rcpt("198.51.100.30", "m9", &[]), soon())
        .await;
    assert!(
        over.action.starts_with("DEFER_IF_PERMIT"),
        "{}",
        over.action
    );
}

#[test]
fn every_problem_names_its_key() {
    let text = r#"
[policy]
ratelimit_keys = 0
[[policy.ratelimit]]
name = "bad name"
key = "Client-Address"
count = "messages"
limit = 0
window = "forever"
action = "slow down"
score = nan
[[policy.ratelimit]]
name = "ok"
limit = 5
window = "0s"
action = "DEFER"
[[policy.ratelimit]]
name = "ok"
limit = 5
window = "90d"
action = "DEFER"
"#;
    let problems = match Config::parse(text) {
        Err(ParseError::Invalid(problems)) => problems.join("\n"),
        other => panic!("expected problems, got {other:?}"),
    };
    for needle in [
        "policy.ratelimit_keys",
        "policy.ratelimit[0].name",
        "policy.ratelimit[0].key",
        "policy.ratelimit[0].count",
        "policy.ratelimit[0].limit",
        "policy.ratelimit[0].window",
        "policy.ratelimit[0].action",
        "policy.ratelimit[0].score",
        "policy.ratelimit[1].window",
        "policy.ratelimit[2].name",
        "policy.ratelimit[2].window",
    ] {
        assert!(
            problems.contains(needle),
            "missing {needle} in:\n{problems}"
        );
    }
}

#[test]
fn severity_orders_answers() {
    assert_eq!(severity("REJECT no"), 3);
    assert_eq!(severity("554 5.7.1 no"), 3);
    assert_eq!(severity("defer_if_permit later"), 2);
    assert_eq!(severity("450 4.7.1 later"), 2);
    assert_eq!(severity("PREPEND X-A: b"), 1);
    assert_eq!(severity("DUNNO"), 0);
    assert_eq!(severity(""), 0);
}

#[test]
fn long_values_are_counted_by_their_digest() {
    assert_eq!(counter_key("l", "Bob@X.test"), b"l\0bob@x.test");
    let long = "A".repeat(4000);
    let key = counter_key("l", &long);
    assert_eq!(key.len(), 2 + 7 + 64);
    assert!(key.starts_with(b"l\0sha256:"));
    assert_eq!(key, counter_key("l", &long.to_ascii_lowercase()));
    assert_ne!(key, counter_key("l", &"a".repeat(3999)));
}
