//! `spamwall list` against the real daemon in a network namespace: the
//! filters (`--source`, `--prefix` for IPv4 and IPv6, `--expiring-within`,
//! `--limit`), the JSON as one valid array across the daemon's chunks, the
//! human form, and the one-line answer an older CLI reads. Bans of other
//! sources are written into the store, which `list` reads. Needs root and
//! the binary (`cargo build -p policy-daemon`, or `SPAMWALL_BIN`); run
//! serially: `cargo test -p spamwall-tests --test list -- --test-threads=1`.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{fmt::Write as _, net::Ipv4Addr};

use serde_json::Value;
use spamwall::{
    bans::{BanScope, Source, store::Store, store::StoredBan},
    control::{ListRequest, Request, Response},
};
use spamwall_tests::{
    daemon::{Daemon, Settings},
    netns::{NetnsPair, Subnet},
    require_root,
};

/// A daemon on the server end of a fresh namespace pair; fields drop in
/// order, the daemon before its namespaces.
struct Setup {
    daemon: Daemon,
    _net: NetnsPair,
}

impl Setup {
    fn new() -> Self {
        let net = NetnsPair::new(Subnet::test_net_3(62));
        let mut settings = Settings::on(net.server());
        settings.capacity = 1 << 14;
        let daemon = Daemon::start(net.server(), &settings);
        Self { daemon, _net: net }
    }

    /// `list --json ARGS…`: the addresses, after checking that the output
    /// is one array of whole ban objects.
    fn listed(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        let out = self.daemon.cli_ok(&all);
        let value: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("list {args:?}: not one JSON value ({e}):\n{out}"));
        let Value::Array(bans) = value else {
            panic!("list {args:?}: not an array:\n{out}");
        };
        bans.iter()
            .map(|ban| {
                for field in ["addr", "expires_at", "source", "reason", "count"] {
                    assert!(ban.get(field).is_some(), "{field} missing from {ban}");
                }
                ban["addr"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// Writes bans of other sources straight into the store.
    fn store_bans(&self, bans: &[(&str, Option<i64>, Source)]) {
        let store = Store::open_in(self.daemon.state_dir()).unwrap();
        let now = spamwall::clock::unix_now();
        let rows: Vec<StoredBan> = bans
            .iter()
            .map(|&(target, expires_in, source)| StoredBan {
                target: spamwall::bans::parse_target(target).unwrap(),
                expires_at: expires_in.map(|secs| now + secs),
                source,
                reason: format!("{source} ban"),
                detail: String::new(),
                count: 1,
                scope: BanScope::Default,
                first_banned_at: now,
                last_banned_at: now,
            })
            .collect();
        store.put_bans(&rows).unwrap();
    }
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

#[test]
fn filters_select_the_bans_and_the_json_stays_one_array() {
    if !require_root("filters_select_the_bans_and_the_json_stays_one_array") {
        return;
    }
    let setup = Setup::new();
    assert!(setup.listed(&[]).is_empty());
    assert_eq!(setup.daemon.cli_ok(&["list"]), "no active bans\n");
    ban_a_mix(&setup);

    let all = setup.listed(&[]);
    assert_eq!(
        all,
        [
            "198.51.100.0/28",
            "198.51.100.200",
            "198.51.100.201",
            "198.51.100.64/26",
            "198.51.100.7",
            "198.51.100.99",
            "2001:db8:50::1",
            "2001:db8:5:0:1::/80",
            "2001:db8:5::/64",
            "2001:db8:5::1",
        ],
        "every active ban, in the order of its text; the ended policy ban not"
    );
    assert_eq!(all, sorted(all.clone()));
    assert_eq!(
        setup.listed(&["--source", "fleet"]),
        ["198.51.100.64/26", "2001:db8:50::1"]
    );
    assert_eq!(
        setup.listed(&["--source", "policy"]),
        ["2001:db8:5:0:1::/80"]
    );
    assert_eq!(
        setup.listed(&["--prefix", "198.51.100.0/28"]),
        ["198.51.100.0/28", "198.51.100.7"]
    );
    assert_eq!(
        setup.listed(&["--prefix", "198.51.100.64/26"]),
        ["198.51.100.64/26", "198.51.100.99"]
    );
    assert_eq!(
        setup.listed(&["--prefix", "198.51.100.7"]),
        ["198.51.100.7"]
    );
    assert_eq!(
        setup.listed(&["--prefix", "2001:db8:5::/48"]),
        ["2001:db8:5:0:1::/80", "2001:db8:5::/64", "2001:db8:5::1"]
    );
    assert_eq!(
        setup.listed(&["--prefix", "2001:db8:5::/64"]),
        ["2001:db8:5:0:1::/80", "2001:db8:5::/64", "2001:db8:5::1"]
    );
    assert_eq!(
        setup.listed(&["--prefix", "2001:db8::/32"]).len(),
        4,
        "the whole documentation prefix"
    );
    // Permanent bans never expire within anything.
    assert_eq!(
        setup.listed(&["--expiring-within", "15m"]),
        ["198.51.100.200", "2001:db8:50::1"]
    );
    assert_eq!(setup.listed(&["--expiring-within", "10y"]).len(), 8);
    assert_eq!(setup.listed(&["--limit", "3"]), all[..3]);
    assert!(setup.listed(&["--limit", "0"]).is_empty());
    assert_eq!(
        setup.listed(&[
            "--source",
            "cli",
            "--prefix",
            "198.51.100.0/24",
            "--expiring-within",
            "2h",
            "--limit",
            "2"
        ]),
        ["198.51.100.0/28", "198.51.100.200"]
    );

    human_form_refusal_and_an_older_client(&setup, &all);
}

/// Bans of every source, IPv4 and IPv6, addresses and prefixes, ending
/// soon, later, never, and already.
fn ban_a_mix(setup: &Setup) {
    setup.daemon.cli_ok(&[
        "ban",
        "198.51.100.7",
        "198.51.100.0/28",
        "2001:db8:5::/64",
        "2001:db8:5::1",
        "--for",
        "1h",
        "--reason",
        "cli run",
    ]);
    setup
        .daemon
        .cli_ok(&["ban", "198.51.100.200", "--for", "10m"]);
    setup
        .daemon
        .cli_ok(&["ban", "198.51.100.201", "--for", "permanent"]);
    setup.store_bans(&[
        ("198.51.100.64/26", Some(3600), Source::Fleet),
        ("2001:db8:50::1", Some(60), Source::Fleet),
        ("198.51.100.99", None, Source::Logwatch),
        ("192.0.2.1", Some(-60), Source::Policy),
        ("2001:db8:5:0:1::/80", Some(7200), Source::Policy),
    ]);
}

/// The human form, a prefix refused before sending, and the one-line answer
/// an older CLI reads, on the bans of the test above (`all` in order).
fn human_form_refusal_and_an_older_client(setup: &Setup, all: &[String]) {
    // The human form: a header and a row per ban, as they come.
    let human = setup.daemon.cli_ok(&["list", "--source", "fleet"]);
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), 3, "{human}");
    assert!(
        lines[0].starts_with("ADDRESS") && lines[0].ends_with("REASON"),
        "{human}"
    );
    assert!(
        lines[1].starts_with("198.51.100.64/26") && lines[1].contains("fleet ban"),
        "{human}"
    );
    assert_eq!(
        setup
            .daemon
            .cli_ok(&["list", "--source", "policy", "--prefix", "10.0.0.0/8"]),
        "no active bans match\n"
    );

    // A prefix that is not one is refused before anything is sent.
    let output = setup.daemon.cli(["list", "--prefix", "198.51.100.5/24"]);
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("198.51.100.0/24") && err.contains("nothing was sent"),
        "{err}"
    );

    // An older CLI asks without `stream` and reads one line: every ban.
    let Response::Bans { bans } = setup.daemon.request(&Request::List(ListRequest::default()))
    else {
        panic!("an older CLI's list is not answered with bans");
    };
    let old: Vec<String> = bans
        .iter()
        .map(|ban| spamwall::bans::target_to_string(&ban.addr))
        .collect();
    assert_eq!(old, all);
}

#[test]
fn a_list_longer_than_a_chunk_is_one_array_without_repeats() {
    if !require_root("a_list_longer_than_a_chunk_is_one_array_without_repeats") {
        return;
    }
    let setup = Setup::new();
    let count: u32 = 10_000;
    let mut file = String::new();
    for i in 0..count {
        // 100.64.0.0/10: never the test subnets.
        let _ = writeln!(file, "{}", Ipv4Addr::from(0x6440_0000 + i));
    }
    let path = setup.daemon.dir().join("bots.txt");
    std::fs::write(&path, file).unwrap();
    setup
        .daemon
        .cli_ok(&["ban", "--file", path.to_str().unwrap(), "--reason", "bulk"]);
    let all = setup.listed(&[]);
    assert_eq!(all.len(), count as usize);
    assert_eq!(all, sorted(all.clone()), "in the order of the text");
    let mut unique = all.clone();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "no ban listed twice");
    assert_eq!(setup.listed(&["--limit", "5000"]), all[..5000]);
    assert_eq!(
        setup.listed(&["--prefix", "100.64.0.0/24"]).len(),
        256,
        "a /24 of the file"
    );
    let human = setup.daemon.cli_ok(&["list"]);
    assert_eq!(
        human.lines().count(),
        count as usize + 1,
        "a header and a row each"
    );
}
