//! The policy server's DNS checks against a real rbldnsd: IPv4 and IPv6
//! clients, reply-code categories, RHSBL on sender and HELO, a list whose
//! server never answers, the answer cache; and the whole daemon answering
//! `spamwall query` and banning through the ban manager.
//!
//! rbldnsd (Debian's package) serves the zones on a loopback port; the
//! policy server runs in-process on an ephemeral port. The daemon test
//! needs root and the binary (`cargo build -p policy-daemon`). Run
//! serially: `cargo test -p spamwall-tests --test policy_dns -- --test-threads=1`.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use spamwall_tests::{
    daemon::{Daemon, Settings, spamwall_bin},
    netns::{NetnsPair, Side, Subnet},
    policy_server::PolicyServer as Server,
    rbldnsd::{Rbldnsd, Zone},
    require_root,
};

/// IPv4 list: .50 in SBL, .51 in PBL, .52 with an uncategorised code;
/// .53 to .56 answered with Spamhaus's error codes and an answer outside
/// 127.0.0.0/8, none of them a listing.
const ZEN_V4: &str = ":127.0.0.2:Listed in SBL\n\
    192.0.2.50\n\
    192.0.2.51 :127.0.0.10:Listed in PBL\n\
    192.0.2.52 :127.0.0.4:Listed in XBL\n\
    192.0.2.53 :127.255.255.254:Query via public/open resolver\n\
    192.0.2.54 :127.255.255.252:Typing error in DNSBL name\n\
    192.0.2.55 :127.255.255.255:Excessive number of queries\n\
    192.0.2.56 :10.0.0.1:Not a listing\n";
/// The clients [`ZEN_V4`] answers with an error, not a listing.
const ERROR_ANSWERS: [&str; 4] = ["192.0.2.53", "192.0.2.54", "192.0.2.55", "192.0.2.56"];
/// IPv6 list: one address and one /64.
const ZEN_V6: &str = ":127.0.0.2:Listed in SBL\n\
    2001:db8:50::1\n\
    2001:db8:51::/64 :127.0.0.10:Listed in PBL\n";
/// Domain list.
const DBL: &str = ":127.0.1.2:Spam domain\nspam.example\n";

fn zones() -> [Zone<'static>; 3] {
    [
        Zone {
            name: "zen.test",
            kind: "ip4set",
            data: ZEN_V4,
        },
        Zone {
            name: "zen.test",
            kind: "ip6trie",
            data: ZEN_V6,
        },
        Zone {
            name: "dbl.test",
            kind: "dnset",
            data: DBL,
        },
    ]
}

/// The chain under test, asking `dns`; `extra` adds checks or settings.
fn policy_toml(dns: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[policy]
listen = ["127.0.0.1:0"]
resolver = "{dns}"
request_timeout = "1s"
{extra}
[[policy.check]]
name = "zen"
type = "dnsbl"
zone = "zen.test"
score = 5
categories = [ {{ match = "127.0.0.2", name = "sbl", score = 10 }}, {{ match = "/^127\\.0\\.0\\.1[01]$/", name = "pbl", score = 3 }} ]
[[policy.check]]
name = "dbl"
type = "rhsbl"
zone = "dbl.test"
fields = ["sender", "helo"]
score = 4
[[policy.threshold]]
score = 10
action = "reject sender ip %IP% is blocked (score=%SCORE%, %DETAIL%)"
[[policy.threshold]]
score = 3
action = "prepend X-Spamwall-Score: %SCORE% (%DETAIL%)"
"#
    )
}

/// The verdict on one client, as the server answers it.
trait Action {
    fn action(&self, client: &str) -> String;
}

impl Action for Server {
    fn action(&self, client: &str) -> String {
        self.ask(&[("client_address", client)]).0
    }
}

#[test]
fn ipv4_clients_listed_not_listed_and_categories() {
    let rbldnsd = Rbldnsd::start(&zones());
    let server = Server::start(&policy_toml(rbldnsd.addr(), ""));
    assert_eq!(
        server.action("192.0.2.50"),
        "action=reject sender ip 192.0.2.50 is blocked (score=10, zen/sbl=127.0.0.2(+10))",
        "rbldnsd log:\n{}",
        rbldnsd.log()
    );
    assert_eq!(
        server.action("192.0.2.51"),
        "action=prepend X-Spamwall-Score: 3 (zen/pbl=127.0.0.10(+3))"
    );
    assert_eq!(
        server.action("192.0.2.52"),
        "action=prepend X-Spamwall-Score: 5 (zen=127.0.0.4(+5))",
        "a code in no category scores the list's score"
    );
    assert_eq!(server.action("192.0.2.99"), "action=DUNNO");
    for client in ERROR_ANSWERS {
        assert_eq!(
            server.action(client),
            "action=DUNNO",
            "{client}: an error answer is no listing"
        );
    }
    assert_eq!(
        server.action("::ffff:192.0.2.50").split(' ').nth(3),
        Some("192.0.2.50")
    );
}

#[test]
fn ipv6_clients_listed_and_not_listed() {
    let rbldnsd = Rbldnsd::start(&zones());
    let server = Server::start(&policy_toml(rbldnsd.addr(), ""));
    assert_eq!(
        server.action("2001:db8:50::1"),
        "action=reject sender ip 2001:db8:50::1 is blocked (score=10, zen/sbl=127.0.0.2(+10))",
        "rbldnsd log:\n{}",
        rbldnsd.log()
    );
    assert_eq!(
        server.action("2001:db8:51::abcd"),
        "action=prepend X-Spamwall-Score: 3 (zen/pbl=127.0.0.10(+3))"
    );
    assert_eq!(server.action("2001:db8:50::2"), "action=DUNNO");
    assert_eq!(server.action("2001:db8:52::1"), "action=DUNNO");
}

#[test]
fn rhsbl_on_sender_and_helo_and_scores_per_mail() {
    let rbldnsd = Rbldnsd::start(&zones());
    let server = Server::start(&policy_toml(rbldnsd.addr(), ""));
    let (answer, _) = server.ask(&[
        ("client_address", "198.51.100.7"),
        ("sender", "bob@Spam.Example"),
        ("helo_name", "mx.clean.example"),
    ]);
    assert_eq!(
        answer,
        "action=prepend X-Spamwall-Score: 4 (dbl(spam.example)=127.0.1.2(+4))"
    );
    let (answer, _) = server.ask(&[
        ("client_address", "198.51.100.7"),
        ("sender", "alice@clean.example"),
        ("helo_name", "spam.example"),
    ]);
    assert!(
        answer.contains("dbl(spam.example)=127.0.1.2(+4)"),
        "{answer}"
    );
    // A listed client with a listed sender: both add up to a reject, and
    // the next RCPT of the same mail counts neither again.
    let mail = [
        ("client_address", "192.0.2.51"),
        ("sender", "bob@spam.example"),
        ("instance", "b2c.6789.1"),
        ("recipient", "a@ours.example"),
    ];
    let (first, _) = server.ask(&mail);
    let mut second_rcpt = mail;
    second_rcpt[3] = ("recipient", "b@ours.example");
    let (second, _) = server.ask(&second_rcpt);
    let expected = "action=prepend X-Spamwall-Score: 7 (zen/pbl=127.0.0.10(+3) dbl(spam.example)=127.0.1.2(+4))";
    assert_eq!(first, expected);
    assert_eq!(second, expected, "each check counts once per mail");
    let (clean, _) = server.ask(&[
        ("client_address", "198.51.100.7"),
        ("sender", "alice@clean.example"),
        ("helo_name", "mx.clean.example"),
    ]);
    assert_eq!(clean, "action=DUNNO");
}

#[test]
fn a_list_that_never_answers_is_cut_off_and_the_other_still_scores() {
    let rbldnsd = Rbldnsd::start(&zones());
    // A bound UDP socket that never replies: queries to it time out.
    let black_hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hole = black_hole.local_addr().unwrap();
    let slow = format!(
        "[[policy.check]]\nname = \"slow\"\ntype = \"dnsbl\"\nzone = \"slow.test\"\nresolver = \"{hole}\"\ntimeout = \"5s\"\nscore = 50\n\
         [[policy.check]]\nname = \"unserved\"\ntype = \"dnsbl\"\nzone = \"not-served.test\"\nscore = 50\n"
    );
    // The extra checks come after [policy]'s keys, before zen and dbl.
    let toml = policy_toml(rbldnsd.addr(), "").replacen(
        "[[policy.check]]",
        &format!("{slow}[[policy.check]]"),
        1,
    );
    let server = Server::start(&toml);
    let (answer, took) = server.ask(&[("client_address", "192.0.2.50")]);
    assert_eq!(
        answer,
        "action=reject sender ip 192.0.2.50 is blocked (score=10, zen/sbl=127.0.0.2(+10))"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "answered after {took:?}; the deadline is 1 s"
    );
    let (answer, took) = server.ask(&[("client_address", "192.0.2.99")]);
    assert_eq!(answer, "action=DUNNO", "fail-open: nothing fired");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(
        server
            .stats
            .deadline_answers
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    drop(black_hole);
}

/// A list whose answers live one second ([`BRIEF_TTL`]): 192.0.2.60 is
/// listed with 127.0.0.2, until [`BRIEF_CHANGED`] lists it with 127.0.0.3.
const BRIEF: &str = "$TTL 1\n:127.0.0.2:Listed briefly\n192.0.2.60\n";
/// [`BRIEF`] after the list changed.
const BRIEF_CHANGED: &str = "$TTL 1\n:127.0.0.3:Listed anew\n192.0.2.60\n";
/// The TTL of [`BRIEF`]'s answers.
const BRIEF_TTL: Duration = Duration::from_secs(1);

/// Answers come from the cache while their TTL lasts: the second asking
/// sends rbldnsd no query (its query log says so), for a listing and for
/// a clean client alike. An answer of one second expires: once the list
/// changed, the new listing is answered, asked from rbldnsd anew.
#[test]
fn answers_are_cached_with_their_ttl() {
    let mut zones = zones().to_vec();
    zones.push(Zone {
        name: "brief.test",
        kind: "ip4set",
        data: BRIEF,
    });
    let rbldnsd = Rbldnsd::start_logging_queries(&zones);
    let toml = format!(
        "{}\n[[policy.check]]\nname = \"brief\"\ntype = \"dnsbl\"\nzone = \"brief.test\"\nscore = 20\n",
        policy_toml(rbldnsd.addr(), "")
    );
    let server = Server::start(&toml);

    // zen.test answers live 60 s (rbldnsd's -t), its "not listed" the
    // policy's dns_negative_ttl of 5 minutes.
    let listed = server.action("192.0.2.50");
    let clean = server.action("192.0.2.99");
    assert!(listed.starts_with("action=reject"), "{listed}");
    assert_eq!(clean, "action=DUNNO");
    let asked = |client: &str| rbldnsd.queries(&format!("{client}.zen.test"));
    assert_eq!(
        (asked("50.2.0.192"), asked("99.2.0.192")),
        (1, 1),
        "one query each; rbldnsd log:\n{}",
        rbldnsd.log()
    );
    for _ in 0..3 {
        assert_eq!(server.action("192.0.2.50"), listed);
        assert_eq!(server.action("192.0.2.99"), clean);
    }
    assert_eq!(
        (asked("50.2.0.192"), asked("99.2.0.192")),
        (1, 1),
        "answers within their TTL were asked again; rbldnsd log:\n{}",
        rbldnsd.log()
    );

    let before = server.action("192.0.2.60");
    assert!(before.contains("brief=127.0.0.2(+20)"), "{before}");
    rbldnsd.replace(zones.len() - 1, BRIEF_CHANGED);
    let brief_queries = rbldnsd.queries("60.2.0.192.brief.test");
    // The change shows once the cached answer's second is over; asking
    // more often than the TTL keeps the cache busy without refreshing it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let answer = server.action("192.0.2.60");
        if answer.contains("brief=127.0.0.3(+20)") {
            break answer;
        }
        assert!(
            answer.contains("brief=127.0.0.2(+20)"),
            "neither the old nor the new listing: {answer}"
        );
        assert!(
            Instant::now() < deadline,
            "the old listing is still answered 10 s after the change, its TTL being {BRIEF_TTL:?}; \
             rbldnsd log:\n{}",
            rbldnsd.log()
        );
        std::thread::sleep(BRIEF_TTL / 4);
    };
    assert!(after.starts_with("action=reject"), "{after}");
    assert!(
        rbldnsd.queries("60.2.0.192.brief.test") > brief_queries,
        "the new listing did not come from rbldnsd"
    );
    // zen.test's answers are still the cached ones.
    assert_eq!(
        (asked("50.2.0.192"), asked("99.2.0.192")),
        (1, 1),
        "rbldnsd log:\n{}",
        rbldnsd.log()
    );
}

/// `spamwall run` with a policy listener, in a network namespace with
/// rbldnsd; `spamwall query` there gets the templated reject and the
/// client is banned with source `policy`.
/// The Prometheus text the daemon in `net`'s server side serves at `addr`.
fn scrape_metrics(net: &NetnsPair, addr: &str) -> String {
    let scrape = net.exec_in(
        Side::Server,
        &["curl", "-sf", &format!("http://{addr}/metrics")],
        Duration::from_secs(10),
    );
    assert!(
        scrape.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&scrape.stderr)
    );
    String::from_utf8(scrape.stdout).unwrap()
}

/// Seven requests answered, in the Prometheus metrics too, and the error
/// answers counted by zone and reason and logged once.
fn assert_metrics(net: &NetnsPair, daemon: &Daemon) {
    let text = scrape_metrics(net, "127.0.0.1:9466");
    for line in [
        "spamwall_policy_requests_total 7",
        "spamwall_policy_request_duration_seconds_count 7",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    for reason in [
        "public_resolver",
        "typo_in_zone",
        "rate_limited",
        "not_a_listing",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("spamwall_dnsbl_errors_total{")
                    && l.contains("zone=\"zen.test\"")
                    && l.contains(&format!("reason=\"{reason}\""))
                    && l.ends_with(" 1")),
            "no error count for {reason} in:\n{text}"
        );
    }
    let errors_logged = daemon
        .log()
        .lines()
        .filter(|l| l.contains("answered with an error code"))
        .count();
    assert_eq!(
        errors_logged,
        1,
        "logged once per interval:\n{}",
        daemon.log()
    );
}

#[test]
fn the_daemon_answers_spamwall_query_and_bans() {
    if !require_root("the_daemon_answers_spamwall_query_and_bans") {
        return;
    }
    let net = NetnsPair::new(Subnet::test_net_3(61));
    let rbldnsd = Rbldnsd::start_in(net.server(), &zones());
    let mut settings = Settings::on(net.server());
    settings.allowlist = vec!["2001:db8:50::/48".to_owned()];
    settings.extra = policy_toml(rbldnsd.addr(), "")
        .replace("127.0.0.1:0", "127.0.0.1:10040")
        .replace(
            "action = \"reject sender ip %IP% is blocked (score=%SCORE%, %DETAIL%)\"",
            "action = \"reject sender ip %IP% is blocked (score=%SCORE%, %DETAIL%)\"\nban = \"1h\"",
        );
    settings
        .extra
        .push_str("\n[metrics]\nlisten = \"127.0.0.1:9466\"\n");
    let daemon = Daemon::start(net.server(), &settings);
    let bin = spamwall_bin();
    let bin = bin.to_str().unwrap();
    let listed = "192.0.2.50";
    let query = |client: &str| {
        let output = net.exec_in(
            Side::Server,
            &[
                bin,
                "query",
                "--server",
                "127.0.0.1:10040",
                "--attr",
                &format!("client_address={client}"),
                "--attr",
                &format!("instance=e2e.{client}"),
                "--attr",
                "protocol_state=RCPT",
            ],
            Duration::from_secs(20),
        );
        assert!(
            output.status.success(),
            "spamwall query failed: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            daemon.log()
        );
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(
        query(listed),
        "action=reject sender ip 192.0.2.50 is blocked (score=10, zen/sbl=127.0.0.2(+10))\n",
        "daemon log:\n{}",
        daemon.log()
    );
    let bans = daemon.list();
    let ban = bans
        .iter()
        .find(|b| b["addr"] == listed)
        .unwrap_or_else(|| panic!("{listed} not banned: {bans:?}\nlog:\n{}", daemon.log()));
    assert_eq!(ban["source"], "policy");
    assert!(
        ban["reason"]
            .as_str()
            .unwrap()
            .contains("zen/sbl=127.0.0.2(+10)"),
        "{ban}"
    );
    assert_eq!(query("192.0.2.99"), "action=DUNNO\n");
    for client in ERROR_ANSWERS {
        assert_eq!(query(client), "action=DUNNO\n", "{client}");
    }

    // The allowlist wins on the policy path too: the answer stands, the
    // ban is refused.
    let allowlisted = "2001:db8:50::1";
    assert!(query(allowlisted).starts_with("action=reject sender ip 2001:db8:50::1 is blocked"));
    let bans = daemon.list();
    assert!(
        !bans.iter().any(|b| b["addr"] == allowlisted),
        "an allowlisted client was banned: {bans:?}"
    );
    assert!(daemon.stats()["policy_requests"].as_u64().unwrap() >= 2);
    assert_metrics(&net, &daemon);

    // A connection error names the address and exits 1.
    let output = net.exec_in(
        Side::Server,
        &[
            bin,
            "query",
            "--server",
            "127.0.0.1:1",
            "--attr",
            "client_address=192.0.2.1",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("127.0.0.1:1"));
}
