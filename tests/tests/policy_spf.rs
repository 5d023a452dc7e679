//! The `spf` check against a real authoritative DNS server and a real
//! reference implementation: Knot DNS serves zones holding `ip4`, `ip6`,
//! `a`, `mx`, `ptr`, `include`, `redirect`, `exists`, macro and broken
//! records, lookup-limit chains and void lookups; for every case the
//! result of spamwall's policy server (in-process, on an ephemeral port)
//! must equal pyspf's (Debian's `python3-spf`, `spf.check2`) asking the
//! same server, and the result the case expects.
//!
//! Needs `knot` and `python3-spf` (`cargo xtask setup`); no root. Run:
//! `cargo test -p spamwall-tests --test policy_spf -- --test-threads=1`.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Write as _},
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use spamwall_tests::{
    bench::find_program,
    knot::{Knot, Zone},
    policy_server::PolicyServer,
    skip::require,
};

/// The interpreter Debian's `python3-spf` is installed for.
const PYTHON: &str = "/usr/bin/python3";

/// Each result scores differently, so the detail names it: `spf=fail(+2)`.
const SCORES: &str =
    "{ pass = 1, fail = 2, softfail = 3, neutral = 4, none = 5, temperror = 6, permerror = 7 }";

/// The zone `spf.test`. Clients in records are documentation addresses.
fn spf_zone() -> String {
    let mut zone = String::from(
        r#"
@           A     192.0.2.77
ns          A     127.0.0.1
ip4         TXT   "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.7 -all"
ip6         TXT   "v=spf1 ip6:2001:db8:1::/48 ~all"
a           TXT   "v=spf1 a a:host.spf.test/30 -all"
a           A     192.0.2.10
a           AAAA  2001:db8:a::10
host        A     198.51.100.64
a6          TXT   "v=spf1 a:host6.spf.test//64 -all"
host6       AAAA  2001:db8:6::1
mx          TXT   "v=spf1 mx -all"
mx          MX    10 mx1.spf.test.
mx          MX    20 mx2.spf.test.
mx1         A     203.0.113.1
mx2         A     203.0.113.2
mx2         AAAA  2001:db8:2::2
mxcidr      TXT   "v=spf1 mx:mx.spf.test/24 ?all"
include     TXT   "v=spf1 include:ip4.spf.test include:ip6.spf.test -all"
incnone     TXT   "v=spf1 include:nospf.spf.test -all"
incfail     TXT   "v=spf1 include:fail.spf.test ~all"
nospf       TXT   "google-site-verification=abc"
spf10       TXT   "v=spf10 -all"
fail        TXT   "v=spf1 -all"
softfail    TXT   "v=spf1 ~all"
neutral     TXT   "v=spf1 ?all"
pass        TXT   "v=spf1 +all"
empty       TXT   "v=spf1"
upper       TXT   "V=SPF1 IP4:192.0.2.0/24 -ALL"
split       TXT   "v=spf1 ip4:192.0.2.0/24" " -all"
modifier    TXT   "v=spf1 foo=bar ip4:192.0.2.0/24 -all"
explain     TXT   "v=spf1 -all exp=why.spf.test"
why         TXT   "%{i} is not one of %{d}'s senders"
redirect    TXT   "v=spf1 ip4:203.0.113.99 redirect=ip4.spf.test"
redirnone   TXT   "v=spf1 redirect=nospf.spf.test"
r1          TXT   "v=spf1 redirect=r2.spf.test"
r2          TXT   "v=spf1 redirect=r1.spf.test"
selfinc     TXT   "v=spf1 include:selfinc.spf.test -all"
two         TXT   "v=spf1 -all"
two         TXT   "v=spf1 +all"
badip       TXT   "v=spf1 ip4:192.0.2.300 -all"
badcidr     TXT   "v=spf1 a/33 -all"
unknown     TXT   "v=spf1 moo -all"
percent     TXT   "v=spf1 exists:%{i}% -all"
nofqdn      TXT   "v=spf1 a:localhost -all"
tworedir    TXT   "v=spf1 redirect=ip4.spf.test redirect=ip6.spf.test"
ptr         TXT   "v=spf1 ptr:spf.test -all"
ptrok       A     192.0.2.12
exists      TXT   "v=spf1 exists:%{ir}.%{l}._spf.spf.test -all"
1.113.0.203.alice._spf A 127.0.0.2
d2          TXT   "v=spf1 a:%{d2} -all"
lp          TXT   "v=spf1 exists:%{l1r-}.lp.spf.test -all"
strong.lp   A     127.0.0.2
helo        TXT   "v=spf1 exists:%{h}.helo.spf.test -all"
good.example.helo A 127.0.0.2
v6macro     TXT   "v=spf1 exists:%{ir}.%{v}.v6.spf.test -all"
void2       TXT   "v=spf1 a:nx1.spf.test a:nx2.spf.test ip4:192.0.2.0/24 -all"
void3       TXT   "v=spf1 a:nx1.spf.test a:nx2.spf.test a:nx3.spf.test ip4:192.0.2.0/24 -all"
voidmx      TXT   "v=spf1 mx:nomx.spf.test exists:nx1.spf.test exists:nx2.spf.test +all"
mx11        TXT   "v=spf1 mx:many.spf.test -all"
mx10        TXT   "v=spf1 mx:ten.spf.test -all"
"#,
    );
    // The IPv6 client 2001:db8::1 as `%{ir}.%{v}`.
    let nibbles = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2";
    let _ = writeln!(zone, "{nibbles}.ip6.v6 A 127.0.0.2");
    // Ten `a` terms that query DNS and find an address that is not the
    // client's; an eleventh is one too many.
    let hosts: Vec<String> = (1..=11).map(|i| format!("a:h{i}.spf.test")).collect();
    for i in 1..=11 {
        let _ = writeln!(zone, "h{i} A 198.51.100.{i}");
    }
    let _ = writeln!(zone, "lim10 TXT \"v=spf1 {} -all\"", hosts[..10].join(" "));
    let _ = writeln!(zone, "lim11 TXT \"v=spf1 {} -all\"", hosts.join(" "));
    // A chain of includes: c1 uses 10 lookups, c0 11.
    for i in 0..=10 {
        let _ = writeln!(zone, "c{i} TXT \"v=spf1 include:c{}.spf.test -all\"", i + 1);
    }
    let _ = writeln!(zone, "c11 TXT \"v=spf1 ip4:192.0.2.0/24 -all\"");
    for i in 1..=11 {
        let _ = writeln!(zone, "many MX {i} m{i}.spf.test.");
        let _ = writeln!(zone, "m{i} A 203.0.113.{}", 100 + i);
        if i <= 10 {
            let _ = writeln!(zone, "ten MX {i} m{i}.spf.test.");
        }
    }
    zone
}

/// Reverse names for the `ptr` cases.
const REVERSE_ZONE: &str = "\
10 PTR a.spf.test.
11 PTR nohost.spf.test.
12 PTR ptrok.spf.test.
";

/// One case: client, sender (empty: the null sender), HELO name, and the
/// result RFC 7208 gives.
struct Case {
    client: &'static str,
    sender: &'static str,
    helo: &'static str,
    expected: &'static str,
}

const fn case(
    client: &'static str,
    sender: &'static str,
    helo: &'static str,
    expected: &'static str,
) -> Case {
    Case {
        client,
        sender,
        helo,
        expected,
    }
}

const HELO: &str = "mail.client.example";

#[rustfmt::skip]
const CASES: &[Case] = &[
    // ip4, ip6
    case("192.0.2.1", "alice@ip4.spf.test", HELO, "pass"),
    case("198.51.100.7", "alice@ip4.spf.test", HELO, "pass"),
    case("198.51.100.8", "alice@ip4.spf.test", HELO, "fail"),
    case("2001:db8:1::5", "alice@ip4.spf.test", HELO, "fail"),
    case("2001:db8:1::5", "alice@ip6.spf.test", HELO, "pass"),
    case("2001:db8:2::5", "alice@ip6.spf.test", HELO, "softfail"),
    case("192.0.2.1", "alice@ip6.spf.test", HELO, "softfail"),
    // a, with CIDR lengths
    case("192.0.2.10", "alice@a.spf.test", HELO, "pass"),
    case("198.51.100.66", "alice@a.spf.test", HELO, "pass"),
    case("198.51.100.70", "alice@a.spf.test", HELO, "fail"),
    case("2001:db8:a::10", "alice@a.spf.test", HELO, "pass"),
    case("2001:db8:a::11", "alice@a.spf.test", HELO, "fail"),
    case("2001:db8:6::ffff", "alice@a6.spf.test", HELO, "pass"),
    case("2001:db8:7::1", "alice@a6.spf.test", HELO, "fail"),
    // mx
    case("203.0.113.1", "alice@mx.spf.test", HELO, "pass"),
    case("203.0.113.2", "alice@mx.spf.test", HELO, "pass"),
    case("203.0.113.3", "alice@mx.spf.test", HELO, "fail"),
    case("2001:db8:2::2", "alice@mx.spf.test", HELO, "pass"),
    case("203.0.113.200", "alice@mxcidr.spf.test", HELO, "pass"),
    case("192.0.2.1", "alice@mxcidr.spf.test", HELO, "neutral"),
    case("203.0.113.110", "alice@mx10.spf.test", HELO, "pass"),
    case("203.0.113.1", "alice@mx11.spf.test", HELO, "permerror"),
    // include and redirect
    case("192.0.2.1", "alice@include.spf.test", HELO, "pass"),
    case("2001:db8:1::1", "alice@include.spf.test", HELO, "pass"),
    case("203.0.113.1", "alice@include.spf.test", HELO, "fail"),
    case("192.0.2.1", "alice@incnone.spf.test", HELO, "permerror"),
    case("192.0.2.1", "alice@incfail.spf.test", HELO, "softfail"),
    case("203.0.113.99", "alice@redirect.spf.test", HELO, "pass"),
    case("192.0.2.1", "alice@redirect.spf.test", HELO, "pass"),
    case("203.0.113.1", "alice@redirect.spf.test", HELO, "fail"),
    case("192.0.2.1", "alice@redirnone.spf.test", HELO, "permerror"),
    case("192.0.2.1", "alice@r1.spf.test", HELO, "permerror"),
    case("192.0.2.1", "alice@selfinc.spf.test", HELO, "permerror"),
    // plain results, no record, odd records
    case("192.0.2.1", "alice@fail.spf.test", HELO, "fail"),
    case("192.0.2.1", "alice@softfail.spf.test", HELO, "softfail"),
    case("192.0.2.1", "alice@neutral.spf.test", HELO, "neutral"),
    case("192.0.2.1", "alice@pass.spf.test", HELO, "pass"),
    case("192.0.2.1", "alice@empty.spf.test", HELO, "neutral"),
    case("192.0.2.1", "alice@nx.spf.test", HELO, "none"),
    case("192.0.2.1", "alice@nospf.spf.test", HELO, "none"),
    case("192.0.2.1", "alice@spf10.spf.test", HELO, "none"),
    case("192.0.2.1", "alice@upper.spf.test", HELO, "pass"),
    case("192.0.2.1", "alice@split.spf.test", HELO, "pass"),
    case("198.51.100.1", "alice@split.spf.test", HELO, "fail"),
    case("192.0.2.1", "alice@modifier.spf.test", HELO, "pass"),
    case("192.0.2.1", "alice@explain.spf.test", HELO, "fail"),
    // broken records
    case("192.0.2.1", "alice@two.spf.test", HELO, "permerror"),
    case("192.0.2.1", "alice@badip.spf.test", HELO, "permerror"),
    case("192.0.2.1", "alice@badcidr.spf.test", HELO, "permerror"),
    case("192.0.2.1", "alice@unknown.spf.test", HELO, "permerror"),
    case("192.0.2.1", "alice@percent.spf.test", HELO, "permerror"),
    case("192.0.2.1", "alice@nofqdn.spf.test", HELO, "permerror"),
    case("192.0.2.1", "alice@tworedir.spf.test", HELO, "permerror"),
    // ptr
    case("192.0.2.10", "alice@ptr.spf.test", HELO, "pass"),
    case("192.0.2.12", "alice@ptr.spf.test", HELO, "pass"),
    case("192.0.2.11", "alice@ptr.spf.test", HELO, "fail"),
    case("192.0.2.13", "alice@ptr.spf.test", HELO, "fail"),
    // macros
    case("203.0.113.1", "alice@exists.spf.test", HELO, "pass"),
    case("203.0.113.1", "bob@exists.spf.test", HELO, "fail"),
    case("203.0.113.2", "alice@exists.spf.test", HELO, "fail"),
    case("192.0.2.77", "alice@d2.spf.test", HELO, "pass"),
    case("192.0.2.78", "alice@d2.spf.test", HELO, "fail"),
    case("192.0.2.1", "strong-bad@lp.spf.test", HELO, "pass"),
    case("192.0.2.1", "bad-strong@lp.spf.test", HELO, "fail"),
    case("192.0.2.1", "alice@helo.spf.test", "good.example", "pass"),
    case("192.0.2.1", "alice@helo.spf.test", "bad.example", "fail"),
    case("2001:db8::1", "alice@v6macro.spf.test", HELO, "pass"),
    case("2001:db8::2", "alice@v6macro.spf.test", HELO, "fail"),
    // the lookup limit: 10 terms that query DNS hold, 11 do not
    case("192.0.2.99", "alice@lim10.spf.test", HELO, "fail"),
    case("192.0.2.99", "alice@lim11.spf.test", HELO, "permerror"),
    case("198.51.100.1", "alice@lim11.spf.test", HELO, "pass"),
    case("192.0.2.5", "alice@c1.spf.test", HELO, "pass"),
    case("192.0.2.5", "alice@c0.spf.test", HELO, "permerror"),
    // the void-lookup limit: 2 hold, 3 do not
    case("192.0.2.1", "alice@void2.spf.test", HELO, "pass"),
    case("192.0.2.1", "alice@void3.spf.test", HELO, "permerror"),
    case("192.0.2.1", "alice@voidmx.spf.test", HELO, "permerror"),
    // the null sender: HELO is checked
    case("192.0.2.10", "", "a.spf.test", "pass"),
    case("192.0.2.99", "", "a.spf.test", "fail"),
    case("192.0.2.1", "", "nx.spf.test", "none"),
];

/// A server with one `spf` check asking `dns`, each result scored
/// differently and every mail answered with its detail.
fn start_server(dns: SocketAddr, timeout: &str) -> PolicyServer {
    PolicyServer::start(&format!(
        r#"
[policy]
listen = ["127.0.0.1:0"]
resolver = "{dns}"
request_timeout = "5s"
hostnames = ["mx.receiver.test"]
[[policy.check]]
name = "spf"
type = "spf"
timeout = "{timeout}"
scores = {SCORES}
[[policy.threshold]]
score = 0.5
action = "prepend X-SPF: %DETAIL%"
"#
    ))
}

/// The SPF result of one mail, read from the detail of the answer.
fn spf_result(server: &PolicyServer, case: &Case) -> String {
    let (answer, _) = server.ask(&[
        ("request", "smtpd_access_policy"),
        ("protocol_state", "RCPT"),
        ("client_address", case.client),
        ("helo_name", case.helo),
        ("sender", case.sender),
        ("recipient", "postmaster@receiver.test"),
    ]);
    answer
        .strip_prefix("action=prepend X-SPF: spf=")
        .and_then(|rest| rest.split_once('('))
        .map_or_else(
            || format!("unexpected answer {answer:?}"),
            |(r, _)| r.to_owned(),
        )
}

/// pyspf (`spf.check2`) asking the DNS server at `dns`, one Python process
/// for all `cases`.
fn pyspf(dns: SocketAddr, cases: &[&Case]) -> Vec<String> {
    const SCRIPT: &str = r"
import json, sys
import DNS, spf
DNS.defaults['server'] = [sys.argv[1]]
DNS.defaults['port'] = int(sys.argv[2])
for line in sys.stdin:
    case = json.loads(line)
    result, _ = spf.check2(i=case['i'], s=case['s'], h=case['h'], querytime=3)
    print(result, flush=True)
";
    let mut child = Command::new(PYTHON)
        .args(["-c", SCRIPT, &dns.ip().to_string(), &dns.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {PYTHON}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut results = Vec::new();
    for case in cases {
        let line = serde_json::json!({"i": case.client, "s": case.sender, "h": case.helo});
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let result = lines
            .next()
            .unwrap_or_else(|| panic!("pyspf stopped before {}", case.sender))
            .unwrap();
        results.push(result);
    }
    drop(stdin);
    assert!(child.wait().unwrap().success(), "pyspf failed");
    results
}

fn ready(test: &str) -> bool {
    require(
        test,
        find_program("knotd").is_some()
            && Path::new("/usr/lib/python3/dist-packages/spf.py").exists(),
        "knotd and pyspf (apt-get install knot python3-spf; cargo xtask setup installs them)",
    )
}

#[test]
fn spamwall_and_pyspf_agree_on_every_case() {
    if !ready("spamwall_and_pyspf_agree_on_every_case") {
        return;
    }
    assert!(CASES.len() >= 50, "{} cases", CASES.len());
    let zone = spf_zone();
    let knot = Knot::start(
        &[
            Zone {
                name: "spf.test",
                records: &zone,
            },
            Zone {
                name: "2.0.192.in-addr.arpa",
                records: REVERSE_ZONE,
            },
        ],
        300,
    );
    let server = start_server(knot.addr(), "2s");
    let cases: Vec<&Case> = CASES.iter().collect();
    let reference = pyspf(knot.addr(), &cases);
    let mut wrong = String::new();
    for (case, pyspf) in cases.iter().zip(&reference) {
        let ours = spf_result(&server, case);
        if ours != *pyspf || ours != case.expected {
            let _ = writeln!(
                wrong,
                "{} from {} (HELO {}): spamwall {ours}, pyspf {pyspf}, expected {}",
                if case.sender.is_empty() {
                    "<>"
                } else {
                    case.sender
                },
                case.client,
                case.helo,
                case.expected
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "disagreements:\n{wrong}knotd log:\n{}",
        knot.log()
    );
    // Every answer again, now from spamwall's cache: the same results.
    for case in CASES {
        assert_eq!(
            spf_result(&server, case),
            case.expected,
            "{} (cached)",
            case.sender
        );
    }
}

#[test]
fn a_silent_dns_server_is_temperror_within_the_deadline() {
    if !ready("a_silent_dns_server_is_temperror_within_the_deadline") {
        return;
    }
    // Bound and never read: every query to it times out.
    let black_hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = black_hole.local_addr().unwrap();
    let server = start_server(silent, "300ms");
    let cases = [case("192.0.2.1", "alice@ip4.spf.test", HELO, "temperror")];
    let started = Instant::now();
    assert_eq!(spf_result(&server, &cases[0]), "temperror");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    let reference = pyspf(silent, &[&cases[0]]);
    assert_eq!(reference, ["temperror"]);
}
