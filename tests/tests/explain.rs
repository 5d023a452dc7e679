//! `explain`, `unban` of covered addresses, `unban --file` and `--source`,
//! and `ban`/`unban --json`, against the real daemon in a network
//! namespace: what the store, the allowlist and the kernel maps hold, as
//! the CLI prints it. Needs root and the binary (`cargo build -p
//! policy-daemon`, or `SPAMWALL_BIN`); run serially:
//! `cargo test -p spamwall-tests --test explain -- --test-threads=1`.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    io::Write as _,
    process::{Command, Output, Stdio},
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Value, json};
use spamwall_tests::{
    daemon::{CLI_TIMEOUT, Daemon, Settings, spamwall_bin},
    netns::{NetnsPair, Subnet, kill_and_reap},
    require_root,
};

/// A daemon on the server end of a fresh namespace pair; fields drop in
/// order, the daemon before its namespaces.
struct Setup {
    daemon: Daemon,
    _net: NetnsPair,
}

impl Setup {
    fn new(subnet: Subnet, configure: impl FnOnce(&mut Settings)) -> Self {
        let net = NetnsPair::new(subnet);
        let mut settings = Settings::on(net.server());
        configure(&mut settings);
        let daemon = Daemon::start(net.server(), &settings);
        Self { daemon, _net: net }
    }

    /// Runs `spamwall ARGS`; asserts exit `code`; returns stdout and
    /// stderr.
    fn run(&self, args: &[&str], code: i32) -> (String, String) {
        let output = self.daemon.cli(args);
        self.expect(&output, args, code)
    }

    fn expect(&self, output: &Output, args: &[&str], code: i32) -> (String, String) {
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        let err = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(code),
            "spamwall {args:?}: expected exit {code}\nstdout: {out}\nstderr: {err}\ndaemon log:\n{}",
            self.daemon.log()
        );
        (out, err)
    }

    /// `spamwall ARGS` parsed as JSON, with exit `code`.
    fn json(&self, args: &[&str], code: i32) -> Value {
        let (out, _) = self.run(args, code);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{out}"))
    }

    /// `spamwall ARGS` with `input` on standard input (bounded).
    fn run_with_stdin(&self, args: &[&str], input: &str, code: i32) -> (String, String) {
        let mut child = Command::new(spamwall_bin())
            .arg("--socket")
            .arg(self.daemon.socket())
            .args(args)
            .env_remove("SPAMWALL_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let deadline = Instant::now() + CLI_TIMEOUT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                kill_and_reap(&mut child);
                panic!("spamwall {args:?} did not finish within {CLI_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        writer.join().unwrap();
        let output = child.wait_with_output().unwrap();
        self.expect(&output, args, code)
    }
}

fn time(value: &Value) -> SystemTime {
    humantime::parse_rfc3339(
        value
            .as_str()
            .unwrap_or_else(|| panic!("not a time: {value}")),
    )
    .unwrap()
}

fn seconds_apart(a: SystemTime, b: SystemTime) -> u64 {
    a.duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap()
        .as_secs()
}

#[test]
fn explain_names_the_ban_the_prefix_the_allowlist_and_the_kernel_entries() {
    if !require_root("explain_names_the_ban_the_prefix_the_allowlist_and_the_kernel_entries") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_1(91), |s| {
        s.ports = vec![25];
        s.allowlist = vec!["203.0.113.0/24".to_owned()];
    });
    setup.run(&["ban", "198.51.100.0/24", "--reason", "bulk"], 0);
    setup.run(
        &["ban", "198.51.100.7", "--reason", "exact", "--for", "2h"],
        0,
    );
    explain_exact_ban(&setup);
    explain_covered_address(&setup);
    explain_prefix_allowlisted_and_clean(&setup);
    explain_lifted_and_bad_inputs(&setup);
}

/// The exact ban, the prefix over it, and both kernel entries.
fn explain_exact_ban(setup: &Setup) {
    let exact = setup.json(&["explain", "198.51.100.7", "--json"], 0);
    assert_eq!(exact["input"], "198.51.100.7");
    assert_eq!(exact["target"], "198.51.100.7");
    assert_eq!(exact["verdict"], "banned", "{exact:#}");
    let ban = &exact["ban"];
    assert_eq!(
        (&ban["addr"], &ban["source"], &ban["reason"], &ban["count"]),
        (
            &json!("198.51.100.7"),
            &json!("cli"),
            &json!("exact"),
            &json!(1)
        ),
        "{exact:#}"
    );
    assert_eq!(exact["covered_by"][0]["addr"], "198.51.100.0/24");
    assert_eq!(exact["covered_by"][0]["reason"], "bulk");
    assert_eq!(exact["allowlisted_by"], Value::Null);
    assert_eq!(exact["fail2ban"], Value::Null);
    assert_eq!(exact["ports"], json!([25]));
    // Banned once: the next ban at the default length is escalated.
    assert_eq!(exact["next_bantime"], "2h");
    let kernel = &exact["kernel"];
    assert_eq!(
        (
            &kernel["available"],
            &kernel["enforcing"],
            &kernel["dropped"]
        ),
        (&json!(true), &json!(true), &json!(true)),
        "{kernel:#}"
    );
    let entries = kernel["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{kernel:#}");
    assert_eq!(
        (&entries[0]["map"], &entries[0]["key"], &entries[0]["live"]),
        (&json!("bans_v4"), &json!("198.51.100.7"), &json!(true))
    );
    assert_eq!(
        (&entries[0]["source"], &entries[0]["count"]),
        (&json!("cli"), &json!(1))
    );
    // The kernel's monotonic expiry, back on the wall clock, is the ban's.
    assert!(
        seconds_apart(time(&entries[0]["expires_at"]), time(&ban["expires_at"])) <= 2,
        "{exact:#}"
    );
    assert_eq!(
        (&entries[1]["map"], &entries[1]["key"], &entries[1]["live"]),
        (&json!("prefix_v4"), &json!("198.51.100.0/24"), &json!(true))
    );
}

/// An IPv4-mapped address inside the prefix: read as IPv4, covered.
fn explain_covered_address(setup: &Setup) {
    let inside = setup.json(&["explain", "::ffff:198.51.100.9", "--json"], 0);
    assert_eq!(inside["input"], "::ffff:198.51.100.9");
    assert_eq!(inside["target"], "198.51.100.9");
    assert_eq!(inside["verdict"], "covered", "{inside:#}");
    assert_eq!(inside["ban"], Value::Null);
    assert_eq!(inside["covered_by"][0]["addr"], "198.51.100.0/24");
    let entries = inside["kernel"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{inside:#}");
    assert_eq!(entries[0]["key"], "198.51.100.0/24");
    assert_eq!(inside["kernel"]["dropped"], true);

    let (text, _) = setup.run(&["explain", "198.51.100.9"], 0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "198.51.100.9 is blocked by the ban on 198.51.100.0/24: it has no ban of its own"
    );
    assert_eq!(lines[1], "ban:        none of its own");
    assert!(
        lines[2].starts_with("covered by: 198.51.100.0/24 by cli, \"bulk\", until "),
        "{text}"
    );
    assert!(
        text.contains("\nkernel:     prefix_v4 198.51.100.0/24: live, until "),
        "{text}"
    );
    assert!(
        text.contains("\n            its packets are dropped\n"),
        "{text}"
    );
    assert!(text.contains("\nfail2ban:   not configured\n"), "{text}");
    assert!(
        text.contains(
            "\nports:      bans without ports of their own apply to destination ports 25 only (xdp.ports); other traffic passes\n"
        ),
        "{text}"
    );
}

/// A prefix as the target: its own ban and the bans inside it; an
/// allowlisted address; a clean one.
fn explain_prefix_allowlisted_and_clean(setup: &Setup) {
    let prefix = setup.json(&["explain", "198.51.100.0/24", "--json"], 0);
    assert_eq!(prefix["verdict"], "banned");
    assert_eq!(prefix["inside"], 1);
    assert_eq!(prefix["inside_first"][0]["addr"], "198.51.100.7");
    assert_eq!(prefix["kernel"]["entries"][0]["key"], "198.51.100.0/24");

    let (text, _) = setup.run(&["explain", "203.0.113.5"], 0);
    assert!(
        text.starts_with(
            "203.0.113.5 is not banned: the allowlist entry 203.0.113.0/24 protects it\n"
        ),
        "{text}"
    );
    let allowed = setup.json(&["explain", "203.0.113.5", "--json"], 0);
    assert_eq!(allowed["verdict"], "allowlisted");
    assert_eq!(allowed["allowlisted_by"], "203.0.113.0/24");

    let clean = setup.json(&["explain", "2001:db8:ff::1", "--json"], 0);
    assert_eq!(clean["verdict"], "not_banned");
    assert_eq!(clean["kernel"]["entries"], json!([]));
    assert_eq!(clean["kernel"]["dropped"], false);
    let (text, _) = setup.run(&["explain", "2001:db8:ff::1"], 0);
    assert!(text.starts_with("2001:db8:ff::1 is not banned\n"), "{text}");
    assert!(text.contains("\nkernel:     no map entry\n"), "{text}");
}

/// Unbanned: no kernel entry of its own, and the history that still
/// counts; inputs that are not a target get a clear answer and send
/// nothing.
fn explain_lifted_and_bad_inputs(setup: &Setup) {
    setup.run(&["unban", "198.51.100.7"], 0);
    let lifted = setup.json(&["explain", "198.51.100.7", "--json"], 0);
    assert_eq!(lifted["verdict"], "covered");
    assert_eq!(lifted["history"]["count"], 1);
    assert_eq!(lifted["kernel"]["entries"].as_array().unwrap().len(), 1);
    assert_eq!(lifted["next_bantime"], "2h");
    for (input, named) in [
        (
            "fe80::1%eth0",
            "has a scope id (%eth0); give the address without it: fe80::1",
        ),
        ("198.51.100.5/24", "the prefix is 198.51.100.0/24"),
        ("mail.example.com", "is not an IP address or CIDR prefix"),
    ] {
        let (_, err) = setup.run(&["explain", input], 2);
        assert!(
            err.contains(named) && err.contains("nothing was sent"),
            "{input}: {err}"
        );
    }
}

#[test]
fn unban_names_the_prefix_that_still_blocks_and_json_gives_each_result() {
    if !require_root("unban_names_the_prefix_that_still_blocks_and_json_gives_each_result") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_1(92), |_| {});
    setup.run(&["ban", "198.51.100.0/24", "--reason", "bulk"], 0);

    let (out, err) = setup.run(&["unban", "198.51.100.9"], 1);
    assert_eq!(out, "");
    assert!(
        err.starts_with(
            "spamwall: 198.51.100.9 is not banned itself: it is covered by the ban on 198.51.100.0/24 (cli, \"bulk\", until "
        ) && err.ends_with(", count 1); `spamwall unban 198.51.100.0/24` lifts that\n"),
        "{err}"
    );

    let banned = setup.json(&["ban", "--json", "198.51.100.7", "127.0.0.1"], 2);
    assert_eq!(banned[0]["target"], "198.51.100.7");
    assert_eq!(banned[0]["result"], "banned");
    assert_eq!(banned[0]["ban"]["source"], "cli");
    assert_eq!(banned[0]["ban"]["count"], 1);
    assert_eq!(banned[1]["target"], "127.0.0.1");
    assert_eq!(banned[1]["result"], "refused");
    assert!(
        banned[1]["reason"]
            .as_str()
            .unwrap()
            .contains("is in the allowlist (127.0.0.0/8)"),
        "{banned:#}"
    );

    let unbanned = setup.json(
        &[
            "unban",
            "--json",
            "198.51.100.7",
            "198.51.100.9",
            "203.0.113.77",
        ],
        1,
    );
    let results: Vec<(&str, &str)> = unbanned
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["target"].as_str().unwrap(), o["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        results,
        [
            ("198.51.100.7", "unbanned"),
            ("198.51.100.9", "covered"),
            ("203.0.113.77", "not_banned"),
        ]
    );
    assert_eq!(unbanned[0]["covered_by"]["addr"], "198.51.100.0/24");
    assert_eq!(unbanned[1]["covered_by"]["addr"], "198.51.100.0/24");
    assert_eq!(unbanned[1]["covered_by"]["reason"], "bulk");

    // Lifted, but the prefix still blocks it: said, and not a failure.
    setup.run(&["ban", "198.51.100.7"], 0);
    let (out, err) = setup.run(&["unban", "198.51.100.7"], 0);
    assert_eq!(out, "unbanned 198.51.100.7\n");
    assert!(
        err.starts_with("spamwall: 198.51.100.7 is still blocked by the ban on 198.51.100.0/24"),
        "{err}"
    );

    let (out, _) = setup.run(&["unban", "198.51.100.0/24", "203.0.113.77"], 0);
    assert_eq!(
        out,
        "unbanned 198.51.100.0/24\n203.0.113.77 was not banned\n"
    );
}

#[test]
fn unban_file_and_source_undo_a_bulk_ban() {
    if !require_root("unban_file_and_source_undo_a_bulk_ban") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_1(93), |_| {});
    let addresses: Vec<String> = (0..1500)
        .map(|i| format!("10.1.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let file = setup.daemon.dir().join("bad-list.txt");
    std::fs::write(
        &file,
        format!("# a bad list\n{}\nnot-an-address\n", addresses.join("\n")),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (out, err) = setup.run(&["ban", "--file", file, "--reason", "oops"], 2);
    assert_eq!(out, format!("banned 1500 from {file}\n"));
    assert!(
        err.contains(":1502: \"not-an-address\" is not an IP address"),
        "{err}"
    );
    assert_eq!(setup.daemon.list().len(), 1500);

    // --source without --yes, and nobody at a terminal to ask: refused.
    let (_, err) = setup.run(&["unban", "--source", "cli"], 2);
    assert!(err.contains("confirm with --yes"), "{err}");
    assert!(err.contains("nothing was sent"), "{err}");
    assert_eq!(setup.daemon.list().len(), 1500);

    // The first thousand from standard input, with a comment, an address
    // that was never banned and a line that is not one.
    let input = format!(
        "{}\n10.200.0.1  # never banned\nnope\n",
        addresses[..1000].join("\n")
    );
    let (out, err) = setup.run_with_stdin(&["unban", "--file", "-"], &input, 2);
    assert_eq!(out, "unbanned 1000 from -; 1 not banned\n");
    assert_eq!(
        err,
        "spamwall: -:1002: \"nope\" is not an IP address or CIDR prefix; skipped\n"
    );
    assert_eq!(setup.daemon.list().len(), 500);
    let gone = setup.json(&["explain", &addresses[0], "--json"], 0);
    assert_eq!(gone["verdict"], "not_banned");
    assert_eq!(gone["kernel"]["entries"], json!([]));

    let json_input = format!("{}\n10.200.0.1\n", addresses[1000]);
    let results = setup.run_with_stdin(&["unban", "--json", "--file", "-"], &json_input, 0);
    let results: Value = serde_json::from_str(&results.0).unwrap();
    assert_eq!(
        results,
        json!([
            {"target": addresses[1000], "result": "unbanned"},
            {"target": "10.200.0.1", "result": "not_banned"},
        ])
    );

    let done = setup.json(&["unban", "--source", "cli", "--yes", "--json"], 0);
    assert_eq!(
        done,
        json!({"source": "cli", "active": 499, "unbanned": 499})
    );
    assert!(setup.daemon.list().is_empty());
    let still = setup.json(&["explain", &addresses[1499], "--json"], 0);
    assert_eq!(still["kernel"]["entries"], json!([]));
    let (out, _) = setup.run(&["unban", "--source", "cli", "--yes"], 0);
    assert_eq!(out, "no active bans made by cli\n");
    let (out, _) = setup.run(&["unban", "--source", "logwatch", "--yes"], 0);
    assert_eq!(out, "no active bans made by logwatch\n");
}
