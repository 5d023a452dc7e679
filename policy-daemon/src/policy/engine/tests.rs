#![expect(clippy::float_cmp, reason = "scores are small integers, exact in f64")]

use std::net::Ipv4Addr;

use super::*;
use crate::{
    bans::RecordingSink,
    config::Config,
    policy::{config::ThresholdConfig, dns::stub::StubLookup},
};

const CONFIG: &str = r#"
[policy]
resolver = "127.0.0.1:5353"
[[policy.check]]
name = "partners"
type = "list"
allow = true
action = "OK"
client = ["192.0.2.0/24"]
[[policy.check]]
name = "zen"
type = "dnsbl"
zone = "zen.test"
score = 5
categories = [ { match = "127.0.0.2", name = "sbl", score = 10 } ]
[[policy.check]]
name = "helo"
type = "helo"
score = 2
[[policy.check]]
name = "stall"
type = "dnsbl"
zone = "stall.test"
timeout = "30s"
[[policy.check]]
name = "rcpt"
type = "list"
recipient = ["/^trap@/"]
score = 4
[[policy.threshold]]
score = 15
action = "reject %IP% blocked (score=%SCORE%, %DETAIL%)"
ban = "1h"
[[policy.threshold]]
score = 5
action = "prepend X-Spamwall: %SCORE% (%DETAIL%)"
"#;

fn engine(sink: &Arc<RecordingSink>) -> (Engine, Arc<StubLookup>) {
    let config = Config::parse(CONFIG).expect("config").policy;
    let mut stub = StubLookup::listing(&[
        ("50.100.51.198.zen.test.", &[Ipv4Addr::new(127, 0, 0, 2)]),
        ("51.100.51.198.zen.test.", &[Ipv4Addr::new(127, 0, 0, 4)]),
    ]);
    stub.answers
        .insert("52.100.51.198.stall.test.".to_owned(), None);
    let stub = Arc::new(stub);
    let lookup = Arc::clone(&stub);
    let engine = Engine::with_lookups(
        &config,
        Some(Arc::clone(sink) as Arc<dyn BanSink>),
        Arc::new(PolicyStats::default()),
        move |_| Ok(Arc::clone(&lookup) as Arc<dyn AddressLookup>),
    )
    .expect("engine");
    (engine, stub)
}

fn request(client: &str, helo: &str, recipient: &str, instance: &str) -> Request {
    Request::from_pairs([
        ("request", "smtpd_access_policy"),
        ("protocol_state", "RCPT"),
        ("client_address", client),
        ("helo_name", helo),
        ("recipient", recipient),
        ("instance", instance),
    ])
}

fn soon() -> Instant {
    Instant::now() + Duration::from_millis(300)
}

#[tokio::test]
async fn scores_add_up_across_the_rcpts_of_one_mail_each_check_once() {
    let sink = Arc::new(RecordingSink::default());
    let (engine, _) = engine(&sink);
    // 198.51.100.51 answers 127.0.0.4: uncategorised, +5; bad HELO +2.
    let first = engine
        .decide(
            &request("198.51.100.51", "desktop", "a@x.test", "m1"),
            soon(),
        )
        .await;
    assert_eq!(first.score, 7.0);
    assert_eq!(first.detail, "zen=127.0.0.4(+5) helo-not-fqdn(+2)");
    assert_eq!(
        first.action,
        "prepend X-Spamwall: 7 (zen=127.0.0.4(+5) helo-not-fqdn(+2))"
    );
    // Same mail, next RCPT: zen and helo are not counted again.
    let second = engine
        .decide(
            &request("198.51.100.51", "desktop", "b@x.test", "m1"),
            soon(),
        )
        .await;
    assert_eq!(second.score, 7.0);
    // A trap recipient adds its score once and crosses the reject line.
    let third = engine
        .decide(
            &request("198.51.100.51", "desktop", "trap@x.test", "m1"),
            soon(),
        )
        .await;
    assert_eq!(third.score, 11.0);
    let fourth = engine
        .decide(
            &request("198.51.100.51", "desktop", "trap@x.test", "m1"),
            soon(),
        )
        .await;
    assert_eq!(fourth.score, 11.0, "the trap list counts once per mail");
    // Another mail from the same client starts from zero.
    let other = engine
        .decide(
            &request("198.51.100.51", "mx.sender.example", "a@x.test", "m2"),
            soon(),
        )
        .await;
    assert_eq!(other.score, 5.0);
    assert!(sink.recorded().is_empty());
}

#[tokio::test]
async fn a_long_instance_keeps_its_own_score_past_the_keys_inline_bytes() {
    let sink = Arc::new(RecordingSink::default());
    let (engine, _) = engine(&sink);
    // Keys longer than the cache keeps in place move to the heap; two
    // that differ only in their last byte are still two mails.
    let common = "i".repeat(4000);
    let (one, two) = (format!("{common}1"), format!("{common}2"));
    let score = async |recipient: &str, instance: &str| {
        engine
            .decide(
                &request("198.51.100.51", "desktop", recipient, instance),
                soon(),
            )
            .await
            .score
    };
    assert_eq!(score("a@x.test", &one).await, 7.0);
    assert_eq!(score("trap@x.test", &one).await, 11.0);
    assert_eq!(
        score("b@x.test", &one).await,
        11.0,
        "the same long instance is the same mail"
    );
    assert_eq!(
        score("b@x.test", &two).await,
        7.0,
        "an instance differing in its last byte is another mail"
    );
}

#[tokio::test]
async fn the_reject_threshold_renders_its_template_and_bans_once_per_mail() {
    let sink = Arc::new(RecordingSink::default());
    let (engine, _) = engine(&sink);
    let mut answers = Vec::new();
    for rcpt in ["a@x.test", "b@x.test", "c@x.test"] {
        answers.push(
            engine
                .decide(
                    &request("198.51.100.50", "[198.51.100.99]", rcpt, "m3"),
                    soon(),
                )
                .await,
        );
    }
    // sbl +10, helo ip-mismatch +2, trap not hit: 12 < 15, so prepend …
    assert_eq!(answers[0].score, 12.0);
    assert!(
        answers[0].action.starts_with("prepend X-Spamwall: 12"),
        "{}",
        answers[0].action
    );
    // … until the trap recipient: 16 ≥ 15.
    let rejected = engine
        .decide(
            &request("198.51.100.50", "[198.51.100.99]", "trap@x.test", "m3"),
            soon(),
        )
        .await;
    assert_eq!(
        rejected.action,
        "reject 198.51.100.50 blocked (score=16, zen/sbl=127.0.0.2(+10) helo-ip-mismatch(+2) rcpt=recipient(+4))"
    );
    let again = engine
        .decide(
            &request("198.51.100.50", "[198.51.100.99]", "d@x.test", "m3"),
            soon(),
        )
        .await;
    assert!(again.action.starts_with("reject "), "{}", again.action);
    let bans = sink.recorded();
    assert_eq!(bans.len(), 1, "one ban per mail: {bans:?}");
    let (target, length, source, reason) = &bans[0];
    assert_eq!(target.to_string(), "198.51.100.50/32");
    assert_eq!(*length, BanLength::Base(Duration::from_hours(1)));
    assert_eq!(*source, Source::Policy);
    assert!(reason.contains("zen/sbl=127.0.0.2(+10)"), "{reason}");
}

#[tokio::test]
async fn an_allow_match_ends_the_chain_without_dns() {
    let sink = Arc::new(RecordingSink::default());
    let (engine, stub) = engine(&sink);
    let decision = engine
        .decide(
            &request("192.0.2.9", "desktop", "trap@x.test", "m4"),
            soon(),
        )
        .await;
    assert_eq!(decision.action, "OK");
    assert!(stub.asked().is_empty(), "{:?}", stub.asked());
}

#[tokio::test]
async fn a_stalled_check_is_cut_off_at_the_deadline_and_the_rest_counts() {
    let sink = Arc::new(RecordingSink::default());
    let (engine, _) = engine(&sink);
    let started = Instant::now();
    // stall.test never answers for .52; the HELO check still counts.
    let decision = engine
        .decide(
            &request("198.51.100.52", "desktop", "a@x.test", "m5"),
            soon(),
        )
        .await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(600), "took {took:?}");
    assert!(decision.incomplete);
    assert_eq!(decision.score, 2.0);
    assert_eq!(decision.action, DUNNO);
}

#[tokio::test]
async fn clean_clients_get_dunno_and_leave_no_state() {
    let sink = Arc::new(RecordingSink::default());
    let (engine, _) = engine(&sink);
    let decision = engine
        .decide(
            &request("203.0.113.1", "mx.ok.example", "a@x.test", "m6"),
            soon(),
        )
        .await;
    assert_eq!(decision.action, DUNNO);
    assert!(engine.mails.is_empty());
    // No instance at all (e.g. spamwall query): scored alone.
    let lone = Request::from_pairs([("client_address", "198.51.100.51")]);
    assert_eq!(engine.decide(&lone, soon()).await.score, 5.0);
}

#[tokio::test]
async fn spf_prepends_its_header_once_per_mail_and_scores_a_fail() {
    let config = Config::parse(
        r#"
[policy]
hostnames = ["mx.example.net"]
[[policy.check]]
name = "spf"
type = "spf"
scores = { fail = 10, softfail = 3 }
header = true
[[policy.threshold]]
score = 10
action = "reject SPF: %DETAIL%"
"#,
    )
    .expect("config")
    .policy;
    let stub = Arc::new(StubLookup::zone(&[(
        "example.org.",
        "v=spf1 ip4:192.0.2.0/24 -all",
    )]));
    let engine = Engine::with_lookups(&config, None, Arc::new(PolicyStats::default()), {
        let stub = Arc::clone(&stub);
        move |_| Ok(Arc::clone(&stub) as Arc<dyn AddressLookup>)
    })
    .expect("engine");
    let rcpt = |client: &str, instance: &str| {
        Request::from_pairs([
            ("request", "smtpd_access_policy"),
            ("protocol_state", "RCPT"),
            ("client_address", client),
            ("helo_name", "mail.example.org"),
            ("sender", "alice@example.org"),
            ("recipient", "bob@example.net"),
            ("instance", instance),
        ])
    };
    let first = engine.decide(&rcpt("192.0.2.10", "s1"), soon()).await;
    assert_eq!(first.detail, "spf=pass(+0)");
    assert_eq!(
        first.action,
        "PREPEND Received-SPF: pass (mx.example.net: domain of alice@example.org designates \
         192.0.2.10 as permitted sender) client-ip=192.0.2.10; \
         envelope-from=\"alice@example.org\"; helo=mail.example.org; \
         receiver=mx.example.net; identity=mailfrom;"
    );
    let second = engine.decide(&rcpt("192.0.2.10", "s1"), soon()).await;
    assert_eq!(second.action, DUNNO, "one header per mail");
    let failed = engine.decide(&rcpt("198.51.100.9", "s2"), soon()).await;
    assert_eq!(failed.action, "reject SPF: spf=fail(+10)");
    assert_eq!(failed.score, 10.0);
}

#[test]
fn addresses_are_written_as_display_writes_them() {
    assert_eq!(address_text(None), "");
    for text in [
        "0.0.0.0",
        "255.255.255.255",
        "10.0.100.9",
        "1.20.3.200",
        "198.51.100.99",
        "2001:db8::1",
        "::ffff:192.0.2.1",
    ] {
        let ip: IpAddr = text.parse().expect("address");
        assert_eq!(address_text(Some(ip)), ip.to_string());
    }
}

#[test]
fn thresholds_are_ordered_highest_first() {
    let configs = [
        ThresholdConfig {
            score: 5.0,
            action: "prepend X-A: b".into(),
            ban: None,
            ports: None,
        },
        ThresholdConfig {
            score: 10.0,
            action: "reject".into(),
            ban: None,
            ports: None,
        },
    ];
    let table = Thresholds::compile(&configs, false).expect("table");
    assert_eq!(table.reached(4.9).map(|(i, _)| i), None);
    assert_eq!(table.reached(5.0).map(|(_, t)| t.score), Some(5.0));
    assert_eq!(table.reached(12.0).map(|(_, t)| t.score), Some(10.0));
}
