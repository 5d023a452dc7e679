//! The `spamwall` binary's configuration checks and client error paths:
//! exit codes (0 ok, 1 runtime, 2 usage or configuration) and messages
//! that name the culprit. No daemon and no privilege needed; runs the real
//! binary (`cargo build -p policy-daemon`, or `SPAMWALL_BIN`).
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use spamwall_tests::{
    daemon::{spamwall, spamwall_bin},
    netns::run_bounded,
};

/// A temporary directory holding configuration files.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("spamwall-cli-")
                .tempdir()
                .unwrap(),
        }
    }

    /// Writes `name` with `text`; returns its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A socket path nothing listens on.
    fn missing_socket(&self) -> PathBuf {
        self.dir.path().join("nobody-home.sock")
    }

    /// A complete, valid configuration whose socket is [`Files::missing_socket`].
    fn good_config(&self) -> PathBuf {
        let text = format!(
            "[daemon]\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\n\
             bpf_pin_dir = \"/sys/fs/bpf/spamwall-cli-unused\"\n\n\
             [xdp]\ninterfaces = [\"eth0\"]\nmode = \"skb\"\nports = [25, 587]\n\n\
             [ban]\nbantime = \"10m\"\nallowlist = [\"203.0.113.0/24\", \"2001:db8::/48\"]\n",
            self.missing_socket().display(),
            self.dir.path().join("state").display()
        );
        self.write("good.toml", &text)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code and returns stderr.
fn expect_code(output: &Output, code: i32, what: &str) -> String {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}: expected exit {code}\nstdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stderr)
}

fn assert_names(haystack: &str, needles: &[&str], what: &str) {
    for needle in needles {
        assert!(
            haystack.contains(needle),
            "{what}: {needle:?} missing from:\n{haystack}"
        );
    }
}

/// `check-config` on a file with `body`: exit 2, and stderr names every
/// needle.
fn assert_config_refused(body: &str, needles: &[&str]) {
    let files = Files::new();
    let path = files.write("bad.toml", body);
    let output = spamwall([Path::new("check-config"), &path]);
    let err = expect_code(&output, 2, &format!("check-config on {body:?}"));
    assert_names(&err, needles, &format!("check-config on {body:?}"));
    assert!(
        err.contains(path.to_str().unwrap()),
        "the message should name the file {}:\n{err}",
        path.display()
    );
}

#[test]
fn check_config_accepts_a_good_file() {
    let files = Files::new();
    let path = files.good_config();
    let output = spamwall([Path::new("check-config"), &path]);
    expect_code(&output, 0, "check-config on a good file");
    let out = text(&output.stdout);
    assert_names(
        &out,
        &[
            "OK",
            "eth0",
            "skb",
            "25, 587",
            "10m",
            files.missing_socket().to_str().unwrap(),
        ],
        "check-config summary",
    );
    // The global --config flag names the file too.
    let output = spamwall([Path::new("--config"), &path, Path::new("check-config")]);
    expect_code(&output, 0, "--config FILE check-config");
}

#[test]
fn check_config_accepts_an_empty_file() {
    let files = Files::new();
    let path = files.write("empty.toml", "");
    let output = spamwall([Path::new("check-config"), &path]);
    expect_code(&output, 0, "check-config on an empty file");
}

#[test]
fn unknown_key_is_named_with_its_line() {
    assert_config_refused(
        "[xdp]\ninterfaces = [\"eth0\"]\ncolour = \"red\"\n",
        &["colour", "line 3"],
    );
    assert_config_refused("[daemon]\n\n[xpd]\n", &["xpd", "line 3"]);
}

#[test]
fn bad_mode_is_named_with_the_choices() {
    assert_config_refused(
        "[xdp]\nmode = \"turbo\"\n",
        &["turbo", "line 2", "auto", "native", "skb"],
    );
}

#[test]
fn bad_allowlist_entry_is_named() {
    assert_config_refused(
        "[ban]\nallowlist = [\"203.0.113.0/24\", \"not-an-ip\"]\n",
        &["not-an-ip", "line 2"],
    );
}

#[test]
fn bad_values_are_named_with_their_line() {
    assert_config_refused("[ban]\nbantime = \"forever\"\n", &["forever", "line 2"]);
    assert_config_refused("[xdp]\nports = [70000]\n", &["line 2"]);
    assert_config_refused("[xdp]\ninterfaces = \"eth0\"\n", &["line 2"]);
}

#[test]
fn relative_paths_and_other_problems_are_all_reported() {
    assert_config_refused(
        "[daemon]\nstate_dir = \"relative/state\"\ncontrol_socket = \"control.sock\"\n\
         [xdp]\ninterfaces = [\"eth0\", \"eth0\"]\nports = [0]\n",
        &[
            "daemon.state_dir",
            "relative/state",
            "daemon.control_socket",
            "not an absolute path",
            "listed twice",
            "xdp.ports",
        ],
    );
}

#[test]
fn missing_config_file_is_named() {
    let files = Files::new();
    let path = files.dir.path().join("absent.toml");
    let output = spamwall([Path::new("check-config"), &path]);
    let err = expect_code(&output, 2, "check-config on a missing file");
    assert_names(&err, &[path.to_str().unwrap()], "missing config");
}

#[test]
fn client_verbs_without_a_daemon_name_the_socket() {
    let files = Files::new();
    let socket = files.missing_socket();
    let socket_text = socket.to_str().unwrap();
    for verb in [
        &["status"][..],
        &["status", "--json"],
        &["list", "--json"],
        &["stats", "--json"],
        &["ban", "192.0.2.7"],
        &["unban", "2001:db8::7"],
        &["explain", "192.0.2.7"],
        &["unban", "--source", "cli", "--yes"],
    ] {
        let mut args = vec!["--socket", socket_text];
        args.extend_from_slice(verb);
        let err = expect_code(&spamwall(&args), 1, &format!("{verb:?} without a daemon"));
        assert_names(
            &err,
            &[&format!(
                "cannot reach the spamwall daemon at {socket_text}"
            )],
            &format!("{verb:?}"),
        );
    }
}

#[test]
fn socket_comes_from_the_configuration() {
    let files = Files::new();
    let config = files.good_config();
    let socket = files.missing_socket();
    let wanted = format!("cannot reach the spamwall daemon at {}", socket.display());

    let output = spamwall([Path::new("--config"), &config, Path::new("status")]);
    let err = expect_code(&output, 1, "--config FILE status");
    assert_names(&err, &[&wanted], "--config FILE status");

    let mut command = Command::new(spamwall_bin());
    command.arg("status").env("SPAMWALL_CONFIG", &config);
    let output = run_bounded(&mut command, std::time::Duration::from_secs(10));
    let err = expect_code(&output, 1, "SPAMWALL_CONFIG=FILE status");
    assert_names(&err, &[&wanted], "SPAMWALL_CONFIG=FILE status");
}

#[test]
fn broken_configuration_stops_client_verbs() {
    let files = Files::new();
    let config = files.write("broken.toml", "[daemon]\nsocket = \"/tmp/x\"\n");
    let output = spamwall([Path::new("--config"), &config, Path::new("status")]);
    let err = expect_code(&output, 2, "status with a broken --config");
    assert_names(&err, &["socket", "line 2"], "status with a broken --config");
}

#[test]
fn invalid_addresses_are_refused_before_connecting() {
    let files = Files::new();
    let socket = files.missing_socket();
    let socket_text = socket.to_str().unwrap();
    // Exit 2, not 1: the CLI never got as far as the (absent) socket.
    for (targets, named) in [
        (&["192.0.2.300"][..], &["\"192.0.2.300\""][..]),
        (&["192.0.2.7", "nope"], &["\"nope\""]),
        (
            &["2001:db8::zz", "198.51.100.1/33"],
            &["2001:db8::zz", "198.51.100.1/33"],
        ),
    ] {
        for verb in ["ban", "unban"] {
            let mut args = vec!["--socket", socket_text, verb];
            args.extend_from_slice(targets);
            let what = format!("{verb} {targets:?}");
            let err = expect_code(&spamwall(&args), 2, &what);
            assert_names(&err, named, &what);
            assert_names(&err, &["nothing was sent"], &what);
            assert!(
                !err.contains("cannot reach"),
                "{what} tried to connect:\n{err}"
            );
        }
    }
}

#[test]
fn unban_and_explain_refuse_what_they_cannot_act_on_before_connecting() {
    let files = Files::new();
    let socket = files.missing_socket();
    let socket_text = socket.to_str().unwrap();
    for (args, named) in [
        (
            &["unban", "--source", "cli"][..],
            "unban --source cli lifts every ban from cli: confirm with --yes (standard input is not a terminal to ask on); nothing was sent",
        ),
        (
            &["unban", "192.0.2.7", "--yes"],
            "--yes confirms `unban --source`",
        ),
        (
            &["explain", "fe80::1%eth0"],
            "\"fe80::1%eth0\" has a scope id (%eth0); give the address without it: fe80::1; nothing was sent",
        ),
        (
            &["explain", "192.0.2.5/24"],
            "192.0.2.5/24 has host bits set; the prefix is 192.0.2.0/24; nothing was sent",
        ),
        (
            &["unban", "--source", "martian", "--yes"],
            "\"martian\" is not a ban source (policy, cli, logwatch, fleet, feed or feed:NAME",
        ),
        (
            &["unban", "192.0.2.7", "--source", "cli"],
            "cannot be used with",
        ),
    ] {
        let mut all = vec!["--socket", socket_text];
        all.extend_from_slice(args);
        let err = expect_code(&spamwall(&all), 2, &format!("{args:?}"));
        assert_names(&err, &[named], &format!("{args:?}"));
        assert!(
            !err.contains("cannot reach"),
            "{args:?} tried to connect:\n{err}"
        );
    }
    // A file that cannot be read is named, before anything is sent.
    let absent = files.dir.path().join("absent.txt");
    let err = expect_code(
        &spamwall([
            "--socket",
            socket_text,
            "unban",
            "--file",
            absent.to_str().unwrap(),
        ]),
        2,
        "unban --file of a missing file",
    );
    assert_names(
        &err,
        &[&format!("cannot read {}", absent.display())],
        "unban --file",
    );
}

#[test]
fn bad_ban_length_is_named() {
    let files = Files::new();
    let socket = files.missing_socket();
    for length in [
        "soon",
        "10 parsecs",
        "-5m",
        "10000y",
        "10y 1s",
        "18446744073709551615",
    ] {
        // `--for=VALUE`, so that clap takes `-5m` as the value.
        let output = spamwall([
            "--socket",
            socket.to_str().unwrap(),
            "ban",
            "192.0.2.7",
            &format!("--for={length}"),
        ]);
        let err = expect_code(&output, 2, &format!("--for {length}"));
        assert_names(&err, &["--for", length], &format!("--for {length}"));
        assert!(
            !err.contains("cannot reach"),
            "--for {length} tried to connect:\n{err}"
        );
    }
}

#[test]
fn help_and_usage_errors() {
    for args in [
        &["--help"][..],
        &["ban", "--help"],
        &["xdp", "detach", "--help"],
        &["--version"],
    ] {
        let output = spamwall(args);
        expect_code(&output, 0, &format!("{args:?}"));
        assert!(!output.stdout.is_empty(), "{args:?} printed nothing");
    }
    let help = text(&spamwall(["--help"]).stdout);
    assert_names(
        &help,
        &[
            "run",
            "ban",
            "unban",
            "list",
            "stats",
            "status",
            "check-config",
            "xdp",
        ],
        "--help",
    );
    for args in [
        &[][..],
        &["frobnicate"],
        &["ban"],
        &["unban"],
        &["xdp", "detach", "--iface", "eth0", "--purge"],
    ] {
        expect_code(&spamwall(args), 2, &format!("{args:?}"));
    }
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    spamwall_tests::daemon::assert_version_names_a_commit(&spamwall_bin());
}

#[test]
fn completions_print_a_script_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _spamwall"),
        ("zsh", "#compdef spamwall"),
        ("fish", "complete -c spamwall"),
    ] {
        let output = spamwall(["completions", shell]);
        let script = expect_code(&output, 0, shell);
        assert!(
            script.is_empty(),
            "completions {shell} wrote to stderr: {script}"
        );
        let script = text(&output.stdout);
        assert!(script.contains(marker), "completions {shell}:\n{script}");
        assert!(
            script.contains("check-config"),
            "completions {shell}:\n{script}"
        );
    }
    let output = spamwall(["completions", "tcsh"]);
    let err = expect_code(&output, 2, "completions tcsh");
    assert_names(&err, &["tcsh", "bash", "zsh", "fish"], "completions tcsh");
}

/// A reject line whose HELO name and quoted sender each hold a
/// `from name[address]` of the client's choosing; the real client is
/// 192.0.2.10.
const STEERING_LINE: &str = "Nov 28 10:00:00 mx postfix/smtpd[1234]: NOQUEUE: reject: RCPT from unknown[192.0.2.10]: 554 5.7.1 <x@example.com>: Relay access denied; from=<\"from b[203.0.113.9]\"@example.org> to=<x@example.com> proto=ESMTP helo=<c from d[192.0.2.44]>";

/// The example configuration's custom filter, uncommented, with nothing
/// else: the filter an operator would start from.
fn example_filter_config(files: &Files) -> PathBuf {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/spamwall.toml"),
    )
    .unwrap();
    let block: Vec<&str> = example
        .lines()
        .skip_while(|line| *line != "#[[logwatch.filter]]")
        .take_while(|line| line.starts_with('#') && !line.starts_with("# ["))
        .filter(|line| !line.starts_with("# "))
        .map(|line| &line[1..])
        .collect();
    assert!(
        block.iter().any(|line| line.starts_with("failregex")),
        "no custom filter in the example: {block:?}"
    );
    files.write("example-filter.toml", &(block.join("\n") + "\n"))
}

/// The hosts `spamwall ARGS` (a `test-filter --json`) reports.
fn hosts_matched(args: &[&str]) -> Vec<String> {
    let output = spamwall(args);
    expect_code(&output, 0, &format!("{args:?}"));
    text(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|hit| hit["host"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_client_cannot_steer_a_filter_to_another_address() {
    let files = Files::new();
    let log = files.write("mail.log", &format!("{STEERING_LINE}\n"));
    let log = log.to_str().unwrap();
    assert_eq!(
        hosts_matched(&["test-filter", log, "--filter", "postfix", "--json"]),
        ["192.0.2.10"],
        "built-in filter"
    );
    let config = example_filter_config(&files);
    let check = spamwall(["check-config", config.to_str().unwrap()]);
    let warnings = expect_code(&check, 0, "check-config of the example filter");
    assert!(!warnings.contains("warning"), "{warnings}");
    assert_eq!(
        hosts_matched(&[
            "--config",
            config.to_str().unwrap(),
            "test-filter",
            log,
            "--filter",
            "mine",
            "--json",
        ]),
        ["192.0.2.10"],
        "the example's custom filter"
    );
}

#[test]
fn check_config_warns_about_a_filter_a_client_can_steer() {
    let files = Files::new();
    let config = files.write(
        "loose.toml",
        "[[logwatch.filter]]\nname = \"loose\"\nfailregex = ['^.* reject: .* from \\S+\\[<HOST>\\]', 'reject: \\S+ from \\S+\\[<HOST>\\]']\n",
    );
    let check = spamwall(["check-config", config.to_str().unwrap()]);
    let stderr = expect_code(&check, 0, "a loose filter is allowed");
    assert_names(
        &stderr,
        &[
            "warning: logwatch.filter[0] (loose): failregex 1 reaches <HOST> through a greedy",
            "warning: logwatch.filter[0] (loose): failregex 2 is not anchored",
        ],
        "check-config warnings",
    );
    // The loose filter matches the HELO's address: what the warning is about.
    let log = files.write("mail.log", &format!("{STEERING_LINE}\n"));
    assert_eq!(
        hosts_matched(&[
            "--config",
            config.to_str().unwrap(),
            "test-filter",
            log.to_str().unwrap(),
            "--filter",
            "loose",
            "--json",
        ]),
        ["192.0.2.44"]
    );
}

#[test]
fn check_config_reports_every_mistake_at_once() {
    let files = Files::new();
    let path = files.write(
        "many.toml",
        "[xdp]\nmode = \"turbo\"\ncolour = \"red\"\n\
         [ban]\nallowlist = [\"nope\", \"192.0.2.0/24\", \"also-not\"]\nbantime = \"forever\"\n\
         [daemon]\nstate_dir = \"relative\"\n\
         [[policy.check]]\ntype = \"helo\"\n",
    );
    let output = spamwall([Path::new("check-config"), &path]);
    let err = expect_code(&output, 2, "check-config on many mistakes");
    assert_names(
        &err,
        &[
            &format!("spamwall: config {}:\n", path.display()),
            "\n  xdp.mode: line 2, column 8: unknown variant `turbo`",
            "\n  xdp.colour: line 3, column 1: unknown field `colour`",
            "\n  ban.allowlist: line 5, column 13: allowlist entry \"nope\" is not an IP address or CIDR prefix; allowlist entry \"also-not\"",
            "\n  ban.bantime: line 6, column 11: invalid duration \"forever\"",
            "\n  policy.check[0]: line 9, column 1: missing field `name`",
            "\n  daemon.state_dir: relative is not an absolute path",
        ],
        "every mistake",
    );
    assert!(
        text(&output.stdout).is_empty(),
        "no summary for a broken file"
    );
}

/// A configuration that deserves every warning: a missing interface,
/// a rule with nothing to read, a failregex without a host and one a
/// client can steer, a DNS list asked through the resolv.conf given.
const WARNED: &str = "[xdp]\ninterfaces = [\"nosuch0\"]\n\
     [[policy.check]]\nname = \"zen\"\ntype = \"dnsbl\"\nzone = \"zen.example\"\n\
     [[logwatch.filter]]\nname = \"mine\"\nfailregex = ['^x from \\S+', 'reject: \\S+ from \\S+\\[<HOST>\\]']\n\
     [[logwatch.rule]]\nfilter = \"mine\"\n";

#[test]
fn check_config_warns_and_strict_refuses_the_warnings() {
    let files = Files::new();
    let path = files.write("warned.toml", WARNED);
    let resolv = files.write("resolv.conf", "nameserver 127.0.0.53\nnameserver 8.8.8.8\n");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "check-config".to_owned(),
            path.to_str().unwrap().to_owned(),
            "--resolv-conf".to_owned(),
            resolv.to_str().unwrap().to_owned(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let expected = [
        "spamwall: warning: logwatch.filter[0] (mine): failregex 1 has no <HOST> (nor <ADDR>, <IP4>, <IP6>): a line it matches bans nobody: ^x from \\S+\n",
        "spamwall: warning: logwatch.filter[0] (mine): failregex 2 is not anchored with `^`",
        "spamwall: warning: logwatch.rule[0] (mine): no [[logwatch.source]] to read: the rule never sees a line",
        "spamwall: warning: xdp.interfaces: nosuch0 does not exist on this host (/sys/class/net has no nosuch0)",
        &format!(
            "spamwall: warning: policy.resolver: not set: the nameservers of {} answer the DNS list checks (zen), and 8.8.8.8 is public: DNS lists such as Spamhaus refuse",
            resolv.display()
        ),
    ];
    let output = spamwall(args(&[]));
    let err = expect_code(&output, 0, "warnings alone");
    assert_names(&err, &expected, "check-config warnings");
    assert_eq!(err.matches("warning:").count(), expected.len(), "{err}");
    assert!(
        text(&output.stdout).starts_with(&format!("{}: OK\n", path.display())),
        "{}",
        text(&output.stdout)
    );

    let output = spamwall(args(&["--strict"]));
    let err = expect_code(&output, 2, "--strict with warnings");
    assert_names(&err, &expected, "check-config --strict");
    assert!(
        err.ends_with(&format!(
            "spamwall: config {}: 5 warnings and --strict\n",
            path.display()
        )),
        "{err}"
    );

    // A local resolver, an existing interface and a source: nothing left.
    let clean = files.write(
        "clean.toml",
        "[xdp]\ninterfaces = [\"lo\", \"nosuch0\"]\n[policy]\nresolver = \"127.0.0.1\"\n\
         [[policy.check]]\nname = \"zen\"\ntype = \"dnsbl\"\nzone = \"zen.example\"\n",
    );
    let output = spamwall([
        "check-config",
        clean.to_str().unwrap(),
        "--strict",
        "--resolv-conf",
        resolv.to_str().unwrap(),
    ]);
    let err = expect_code(&output, 2, "a missing interface next to lo");
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    let only_lo = files.write("lo.toml", "[xdp]\ninterfaces = [\"lo\"]\n");
    let output = spamwall(["check-config", only_lo.to_str().unwrap()]);
    let err = expect_code(&output, 0, "lo alone");
    assert_names(
        &err,
        &["spamwall: warning: xdp.interfaces: lo is the only interface"],
        "lo alone",
    );
    let output = spamwall(["check-config", only_lo.to_str().unwrap(), "--strict"]);
    expect_code(&output, 2, "lo alone, --strict");
}

#[test]
fn check_config_json_has_errors_warnings_and_a_summary() {
    let files = Files::new();
    let resolv = files.write("resolv.conf", "nameserver 1.1.1.1\n");
    let path = files.write("warned.toml", WARNED);
    let json = |path: &Path, strict: bool, code: i32| -> serde_json::Value {
        let mut args = vec![
            "check-config",
            path.to_str().unwrap(),
            "--json",
            "--resolv-conf",
            resolv.to_str().unwrap(),
        ];
        if strict {
            args.push("--strict");
        }
        let output = spamwall(args);
        expect_code(&output, code, &format!("--json on {}", path.display()));
        assert!(output.stderr.is_empty(), "{}", text(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let report = json(&path, false, 0);
    assert_eq!(report["ok"], true);
    assert_eq!(report["path"], path.to_str().unwrap());
    assert_eq!(report["errors"], serde_json::json!([]));
    assert_eq!(report["warnings"].as_array().unwrap().len(), 5, "{report}");
    let summary = &report["summary"];
    assert_eq!(summary["interfaces"], serde_json::json!(["nosuch0"]));
    assert_eq!(summary["backends"], serde_json::json!(["xdp"]));
    assert_eq!(
        summary["allowlist"],
        serde_json::json!(["127.0.0.0/8", "::1/128"])
    );
    assert_eq!(
        summary["policy"]["listen"],
        serde_json::json!(["127.0.0.1:10040"])
    );
    assert_eq!(summary["policy"]["checks"][0]["name"], "zen");
    assert_eq!(summary["policy"]["checks"][0]["type"], "dnsbl");
    assert_eq!(summary["logwatch"]["rules"][0]["filter"], "mine");
    assert_eq!(summary["logwatch"]["rules"][0]["maxretry"], 5);
    assert_eq!(summary["logwatch"]["sources"], serde_json::json!([]));
    assert_eq!(summary["fleet"], serde_json::Value::Null);
    assert_eq!(summary["metrics"], serde_json::Value::Null);
    assert_eq!(json(&path, true, 2)["ok"], false);

    let broken = files.write("broken.toml", "[xdp]\nmode = \"turbo\"\nports = [0]\n");
    let report = json(&broken, false, 2);
    assert_eq!(report["ok"], false);
    let errors: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{report}");
    assert!(errors[0].starts_with("xdp.mode: line 2, column 8: unknown variant `turbo`"));
    assert!(errors[1].starts_with("xdp.ports: port 0 cannot be enforced"));

    let report = json(&files.dir.path().join("absent.toml"), false, 2);
    assert_eq!(report["ok"], false);
    assert_eq!(report["summary"], serde_json::Value::Null);
    assert!(
        report["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("cannot read it: "),
        "{report}"
    );
    let syntax = files.write("syntax.toml", "[xdp\n");
    let report = json(&syntax, false, 2);
    assert_eq!(report["errors"].as_array().unwrap().len(), 1, "{report}");
    assert!(
        report["errors"][0].as_str().unwrap().starts_with("line 1"),
        "{report}"
    );
}

/// A postscreen log: a listed line, the same without a timestamp, a line
/// with neither a timestamp nor a match, a timed line no failregex takes.
const POSTSCREEN_LOG: &str = "Nov 20 10:01:03 mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.2]:4567\n\
     mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.3]:4567\n\
     garbage without a date\n\
     Nov 20 10:01:04 mx postfix/postscreen[9]: PASS OLD [192.0.2.4]:4567\n";

const NO_TIMESTAMP: &str = "no timestamp spamwall reads (syslog, RFC 3339 or journal JSON): the daemon counts it as logged when read";

/// `spamwall ARGS` with `input` on standard input.
fn spamwall_with_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(spamwall_bin())
        .args(args)
        .env_remove("SPAMWALL_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    output
}

#[test]
fn test_filter_counts_and_lists_lines_without_a_timestamp() {
    let files = Files::new();
    let log = files.write("mail.log", POSTSCREEN_LOG);
    let log = log.to_str().unwrap();
    let output = spamwall(["test-filter", log, "--mode", "rbl"]);
    expect_code(&output, 0, "test-filter");
    let out = text(&output.stdout);
    assert_names(
        &out,
        &[
            "\nLines: 4, matched 2, missed 2, ignored 0, without timestamp 2\n",
            "  2 lines without a timestamp spamwall reads",
            "--print-missed lists them",
            "\nHosts: 2\n  192.0.2.2 (1)\n  192.0.2.3 (1)\n",
        ],
        "summary",
    );
    // The failregexes by their text.
    assert!(
        out.lines()
            .any(|l| l.starts_with("|  1) [2] ^") && l.contains("DNSBL rank")),
        "{out}"
    );
    let output = spamwall(["test-filter", log, "--mode", "rbl", "--print-missed"]);
    expect_code(&output, 0, "test-filter --print-missed");
    assert!(
        text(&output.stdout).ends_with(&format!(
            "\nMissed lines:\n\
             |  2: {NO_TIMESTAMP}: mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.3]:4567\n\
             |  3: no failregex matched; {NO_TIMESTAMP}: garbage without a date\n\
             |  4: no failregex matched: Nov 20 10:01:04 mx postfix/postscreen[9]: PASS OLD [192.0.2.4]:4567\n"
        )),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn test_filter_prints_matched_lines() {
    let files = Files::new();
    let log = files.write("mail.log", POSTSCREEN_LOG);
    let output = spamwall([
        "test-filter",
        log.to_str().unwrap(),
        "--mode",
        "rbl",
        "--print-matched",
    ]);
    expect_code(&output, 0, "test-filter --print-matched");
    let out = text(&output.stdout);
    assert!(
        out.ends_with(
            "\nMatched lines:\n\
             |  1: 192.0.2.2 (failregex 1): Nov 20 10:01:03 mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.2]:4567\n\
             |  2: 192.0.2.3 (failregex 1): mx postfix/postscreen[9]: DNSBL rank 3 for [192.0.2.3]:4567\n"
        ),
        "{out}"
    );
    assert!(!out.contains("Missed lines:"), "{out}");
}

#[test]
fn test_filter_json_carries_missed_lines_and_reads_standard_input() {
    let output = spamwall_with_stdin(
        &[
            "test-filter",
            "-",
            "--mode",
            "rbl",
            "--json",
            "--print-missed",
        ],
        POSTSCREEN_LOG,
    );
    expect_code(&output, 0, "test-filter - --json --print-missed");
    let objects: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(u64, &str, Option<&str>, Option<&str>)> = objects
        .iter()
        .map(|o| {
            (
                o["line"].as_u64().unwrap(),
                o["result"].as_str().unwrap(),
                o["host"].as_str(),
                o["reason"].as_str(),
            )
        })
        .collect();
    let both = format!("no failregex matched; {NO_TIMESTAMP}");
    assert_eq!(
        summary,
        [
            (1, "matched", Some("192.0.2.2"), None),
            (2, "matched", Some("192.0.2.3"), Some(NO_TIMESTAMP)),
            (3, "missed", None, Some(both.as_str())),
            (4, "missed", None, Some("no failregex matched")),
        ]
    );
    assert!(
        objects[0]["failregex"]
            .as_str()
            .unwrap()
            .contains("DNSBL rank")
    );
    assert_eq!(objects[0]["regex"], 1);
    assert!(objects[0]["time"].is_string() && objects[1]["time"].is_null());
    assert_eq!(objects[2]["text"], "garbage without a date");

    // `-` in the summary form too, and an empty input.
    let output = spamwall_with_stdin(&["test-filter", "-", "--mode", "rbl"], POSTSCREEN_LOG);
    expect_code(&output, 0, "test-filter -");
    assert!(
        text(&output.stdout)
            .contains("\nLines: 4, matched 2, missed 2, ignored 0, without timestamp 2\n"),
        "{}",
        text(&output.stdout)
    );
    let output = spamwall_with_stdin(&["test-filter", "-"], "");
    expect_code(&output, 0, "test-filter - on nothing");
    assert!(text(&output.stdout).contains("\nLines: 0, matched 0"));
}

/// A stand-in daemon on a socket in `files`: reads one request line and
/// answers with `answer` as is, then closes.
fn fake_daemon(files: &Files, answer: &'static str) -> (PathBuf, std::thread::JoinHandle<String>) {
    use std::io::{BufRead as _, Write as _};
    let socket = files.dir.path().join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut request = String::new();
        reader.read_line(&mut request).unwrap();
        reader.get_mut().write_all(answer.as_bytes()).unwrap();
        request
    });
    (socket, server)
}

#[test]
fn a_list_cut_short_fails_and_never_looks_whole() {
    const CHUNK: &str = concat!(
        r#"{"result":"ban_chunk","bans":[{"addr":"192.0.2.7","expires_at":null,"#,
        r#""source":"cli","reason":"r","count":1}]}"#,
        "\n"
    );
    for (answer, named) in [
        (
            concat!(
                r#"{"result":"ban_chunk","bans":[{"addr":"192.0.2.7","expires_at":null,"#,
                r#""source":"cli","reason":"r","count":1}]}"#,
                "\n",
                r#"{"result":"error","message":"ban store: disk I/O error"}"#,
                "\n"
            ),
            "the daemon answered: ban store: disk I/O error",
        ),
        (CHUNK, "before the end of the list"),
        (
            concat!(
                r#"{"result":"ban_chunk","bans":[{"addr":"192.0.2.7","expires_at":null,"#,
                r#""source":"cli","reason":"r","count":1}]}"#,
                "\n",
                r#"{"result":"ban_chunk","bans":[{"addr":"#
            ),
            "closed in the middle of an answer",
        ),
        (
            concat!(
                r#"{"result":"ban_chunk","bans":[{"addr":"192.0.2.7","expires_at":null,"#,
                r#""source":"cli","reason":"r","count":1}]}"#,
                "\n",
                r#"{"result":"list_end","listed":2}"#,
                "\n"
            ),
            "listed 2 bans but 1 arrived",
        ),
    ] {
        for json in [true, false] {
            let files = Files::new();
            let (socket, server) = fake_daemon(&files, answer);
            let mut args = vec!["--socket", socket.to_str().unwrap(), "list"];
            if json {
                args.push("--json");
            }
            let output = spamwall(&args);
            let err = expect_code(&output, 1, &format!("{args:?} answered {answer:?}"));
            assert_names(&err, &[named], &format!("{answer:?}"));
            let out = text(&output.stdout);
            assert!(
                out.contains("192.0.2.7"),
                "the first chunk is printed:\n{out}"
            );
            if json {
                assert!(
                    serde_json::from_str::<serde_json::Value>(&out).is_err(),
                    "a list cut short parses as JSON:\n{out}"
                );
            }
            let request = server.join().unwrap();
            assert!(
                request.contains(r#""command":"list""#) && request.contains(r#""stream":true"#),
                "{request}"
            );
        }
    }
    // A whole list from the same stand-in is one array.
    let files = Files::new();
    let (socket, server) = fake_daemon(
        &files,
        concat!(
            r#"{"result":"ban_chunk","bans":[{"addr":"192.0.2.7","expires_at":null,"#,
            r#""source":"cli","reason":"r","count":1}]}"#,
            "\n",
            r#"{"result":"list_end","listed":1}"#,
            "\n"
        ),
    );
    let output = spamwall(["--socket", socket.to_str().unwrap(), "list", "--json"]);
    expect_code(&output, 0, "a whole list");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value[0]["addr"], "192.0.2.7");
    server.join().unwrap();
}
