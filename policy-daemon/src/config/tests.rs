use super::*;

fn invalid(text: &str) -> Vec<String> {
    match Config::parse(text) {
        Err(ParseError::Invalid(problems)) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// Why `text` was refused, as one string: a key with an unknown name,
/// a wrong type or a bad value.
fn syntax(text: &str) -> String {
    match Config::parse(text) {
        Err(error) => error.to_string(),
        Ok(config) => panic!("expected an error, got {config:?}"),
    }
}

#[test]
fn every_mistake_is_reported_at_once_with_its_key_and_line() {
    let problems = invalid(
        "[xdp]\nmode = \"turbo\"\ncolour = \"red\"\n\
         [ban]\nallowlist = [\"nope\", \"192.0.2.0/24\", \"also-not\"]\nbantime = \"forever\"\n\
         [daemon]\nstate_dir = \"relative\"\n\
         [[policy.check]]\ntype = \"helo\"\n\
         [[policy.check]]\nname = \"zen\"\ntype = \"dnsbl\"\nzone = \"zen.example\"\ntimeout = \"soon\"\n\
         [[policy.check]]\nname = \"x\"\ntype = \"dnsbl\"\n\
         [xpd]\n",
    );
    let all = problems.join("\n");
    for needle in [
        "xdp.mode: line 2, column 8: unknown variant `turbo`",
        "xdp.colour: line 3, column 1: unknown field `colour`",
        "ban.allowlist: line 5, column 13: allowlist entry \"nope\"",
        "allowlist entry \"also-not\"",
        "ban.bantime: line 6, column 11:",
        "policy.check[0]: line 9, column 1: missing field `name`",
        "policy.check[1].timeout: line 15",
        "xpd: line 19",
        // Validation still runs, with the file's own indexes.
        "daemon.state_dir: relative is not an absolute path",
        "policy.check[2].zone",
    ] {
        assert!(all.contains(needle), "{needle:?} missing from:\n{all}");
    }
    assert!(!all.contains("policy.check[1].zone"), "{all}");
    assert!(
        problems[0].starts_with("xdp.mode") && problems[1].starts_with("xdp.colour"),
        "in the file's order: {all}"
    );
}

#[test]
fn empty_file_gives_documented_defaults() {
    let config = Config::parse("").expect("empty config");
    assert_eq!(
        config.daemon.control_socket,
        Path::new("/run/spamwall/control.sock")
    );
    assert_eq!(config.daemon.state_dir, Path::new("/var/lib/spamwall"));
    assert_eq!(config.daemon.bpf_pin_dir, Path::new("/sys/fs/bpf/spamwall"));
    assert!(config.xdp.interfaces.is_empty());
    assert_eq!(config.xdp.mode, AttachMode::Auto);
    assert!(config.xdp.ports.is_empty());
    assert_eq!(config.ban.bantime, BanTime(Some(Duration::from_hours(1))));
    assert_eq!(config.ban.backends, vec![Backend::Xdp]);
    assert_eq!(config.ban.capacity_v4, 1 << 20);
    assert!(
        config
            .ban
            .allowlist
            .covers(&"127.0.0.1/32".parse().expect("net"))
            .is_some()
    );
    assert!(
        config
            .ban
            .allowlist
            .covers(&"::1/128".parse().expect("net"))
            .is_some()
    );
}

#[test]
fn full_example_parses() {
    let config = Config::parse(
        r#"
        [daemon]
        control_socket = "/tmp/s.sock"
        [xdp]
        interfaces = ["eth0", "eth1.100"]
        mode = "skb"
        ports = [25, 465, 587]
        [ban]
        bantime = "10m"
        allowlist = ["192.0.2.0/24", "2001:db8::1"]
        capacity_v4 = 1000
        "#,
    )
    .expect("valid config");
    assert_eq!(config.xdp.interfaces, ["eth0", "eth1.100"]);
    assert_eq!(config.xdp.mode, AttachMode::Skb);
    assert_eq!(config.xdp.ports, [25, 465, 587]);
    assert_eq!(config.ban.bantime, BanTime(Some(Duration::from_mins(10))));
    assert_eq!(config.ban.capacities().v4, 1000);
    let allow = &config.ban.allowlist;
    assert!(
        allow
            .covers(&"192.0.2.77/32".parse().expect("net"))
            .is_some()
    );
    assert!(
        allow
            .covers(&"2001:db8::1/128".parse().expect("net"))
            .is_some()
    );
    assert!(
        allow
            .covers(&"127.0.0.1/32".parse().expect("net"))
            .is_some(),
        "loopback stays allowed"
    );
    assert!(
        allow
            .covers(&"198.51.100.1/32".parse().expect("net"))
            .is_none()
    );
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let message = syntax("[xdp]\ninterfaces = []\ncolour = \"red\"\n");
    assert!(message.contains("colour"), "{message}");
    assert!(message.contains("line 3"), "{message}");
}

#[test]
fn unknown_section_is_named() {
    let message = syntax("[xpd]\n");
    assert!(message.contains("xpd"), "{message}");
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn wrong_type_is_named() {
    let message = syntax("[xdp]\nports = \"25\"\n");
    assert!(message.contains("line 2"), "{message}");
    let message = syntax("[xdp]\nports = [70000]\n");
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn bad_mode_lists_the_choices() {
    let message = syntax("[xdp]\nmode = \"turbo\"\n");
    assert!(
        message.contains("turbo") && message.contains("skb"),
        "{message}"
    );
}

#[test]
fn bad_allowlist_entry_is_named() {
    let message = syntax("[ban]\nallowlist = [\"10.0.0.0/8\", \"not-an-ip\"]\n");
    assert!(message.contains("not-an-ip"), "{message}");
}

#[test]
fn durations() {
    assert_eq!("90s".parse(), Ok(BanTime(Some(Duration::from_secs(90)))));
    assert_eq!(
        "1w".parse(),
        Ok(BanTime(Some(Duration::from_hours(7 * 24))))
    );
    assert_eq!("3600".parse(), Ok(BanTime(Some(Duration::from_hours(1)))));
    assert_eq!("permanent".parse(), Ok(BanTime(None)));
    assert_eq!("0".parse(), Ok(BanTime(None)));
    assert!("soon".parse::<BanTime>().is_err_and(|e| e.contains("soon")));
    let config = Config::parse("[ban]\nbantime = 0\n").expect("integer bantime");
    assert_eq!(config.ban.bantime, BanTime(None));
    let message = syntax("[ban]\nmaxtime = \"permanent\"\n");
    assert!(
        message.contains("\"permanent\""),
        "a span has an end: {message}"
    );
    let message = syntax("[ban]\nbantime = \"forever\"\n");
    assert!(
        message.contains("forever") && message.contains("line 2"),
        "{message}"
    );
}

#[test]
fn ban_lengths_beyond_the_maximum_are_refused_on_every_key() {
    assert_eq!(
        "10y".parse(),
        Ok(BanTime(Some(crate::clock::MAX_BAN_LENGTH)))
    );
    for text in ["10y 1s", "10000y", "20000000000000"] {
        let error = text.parse::<BanTime>().expect_err(text);
        assert!(error.contains("exceeds the maximum of 10years"), "{error}");
    }
    let message = syntax("[ban]\nbantime = \"10000y\"\n");
    assert!(
        message.contains("10000years") && message.contains("line 2"),
        "{message}"
    );
    let message = syntax("[ban]\nbantime = 18446744073709551615\n");
    assert!(message.contains("exceeds the maximum"), "{message}");
    let problems = invalid("[ban]\nmaxtime = \"99y\"\n");
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("ban.maxtime:") && p.contains("99years")),
        "{problems:?}"
    );
    let message = syntax(
        "[policy]\n[[policy.threshold]]\nscore = 5\naction = \"REJECT\"\nban = \"99999y\"\n",
    );
    assert!(message.contains("99999years"), "{message}");
    // Every other length of time is bounded too, so no timer overflows.
    for text in [
        "[ban]\nhistory_age = 18446744073709551615\n",
        "[policy]\nidle_timeout = \"500000y\"\n",
        "[fail2ban]\nreconcile_interval = \"101y\"\n",
    ] {
        let message = syntax(text);
        assert!(message.contains("longest setting"), "{text}: {message}");
    }
}

#[test]
fn the_reconcile_interval_defaults_to_a_minute_and_is_never_zero() {
    let config = Config::parse("").expect("defaults");
    assert_eq!(config.ban.reconcile_interval.0, Duration::from_mins(1));
    let config = Config::parse("[ban]\nreconcile_interval = \"2s\"\n").expect("2s");
    assert_eq!(config.ban.reconcile_interval.0, Duration::from_secs(2));
    let message = syntax("[ban]\nreconcile_interval = 0\n");
    assert!(message.contains("must be longer than zero"), "{message}");
}

#[test]
fn the_widest_prefix_bounds_aggregation_too() {
    let config = Config::parse("").expect("defaults");
    assert_eq!((config.ban.widest_v4, config.ban.widest_v6), (16, 32));
    let problems = invalid(
        "[ban]\nwidest_v4 = 33\nwidest_v6 = 48\naggregate_threshold = 3\naggregate_v4_prefix = 8\naggregate_v6_prefix = 40\n",
    );
    for needle in [
        "ban.widest_v4: must be at most 32",
        "ban.aggregate_v4_prefix: /8 is wider than ban.widest_v4 (/33)",
        "ban.aggregate_v6_prefix: /40 is wider than ban.widest_v6 (/48)",
    ] {
        assert!(
            problems.iter().any(|p| p == needle),
            "{needle}: {problems:?}"
        );
    }
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let problems = invalid(
        r#"
        [daemon]
        state_dir = "relative/dir"
        [xdp]
        interfaces = ["eth0", "eth0", "this-name-is-too-long"]
        ports = [0, 25]
        [ban]
        backends = ["xdp", "xdp"]
        capacity_v6 = 0
        "#,
    );
    let all = problems.join("\n");
    for needle in [
        "daemon.state_dir",
        "listed twice",
        "this-name-is-too-long",
        "xdp.ports",
        "xdp is listed twice",
        "ban.capacity_v6",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn rules_and_thresholds_scope_their_bans_to_their_own_ports() {
    let config = Config::parse(
        r#"
        [xdp]
        ports = [25, 465, 587]
        [[logwatch.rule]]
        filter = "postfix"
        mode = "auth"
        ports = [993, 587, 465]
        [[logwatch.rule]]
        filter = "postfix"
        mode = "rbl"
        ports = [25]
        [[policy.threshold]]
        score = 15
        action = "reject"
        ban = "1h"
        ports = [25]
        "#,
    )
    .expect("valid");
    let scopes = config.ban_policy().scopes;
    assert_eq!(
        scopes.describe(),
        vec![
            Some(vec![25, 465, 587]),
            Some(vec![465, 587, 993]),
            Some(vec![25])
        ]
    );
    let problems = invalid(
        r#"
        [[logwatch.rule]]
        filter = "postfix"
        ports = [0]
        [[policy.threshold]]
        score = 5
        action = "prepend X-Spam: yes"
        ports = [25]
        "#,
    )
    .join("\n");
    assert!(
        problems.contains("logwatch.rule[0].ports: port 0"),
        "{problems}"
    );
    assert!(
        problems.contains("policy.threshold[0].ports: only a threshold with `ban`"),
        "{problems}"
    );
    let many = (1..=8)
        .map(|port| format!("[[logwatch.rule]]\nfilter = \"postfix\"\nports = [{port}]\n"))
        .collect::<Vec<_>>()
        .concat();
    let problems = invalid(&format!("[xdp]\nports = [25]\n{many}")).join("\n");
    assert!(problems.contains("9 distinct port scopes"), "{problems}");
}

#[test]
fn ban_lifecycle_keys_parse_into_the_manager_policy() {
    let config = Config::parse(
        r#"
        [ban]
        bantime = "10m"
        increment = true
        factor = 2.0
        maxtime = "1d"
        history_age = "30d"
        ignore_self = false
        aggregate_threshold = 5
        aggregate_window = "5m"
        aggregate_v6_prefix = 56
        backends = ["xdp", "fail2ban"]
        [fail2ban]
        socket = "/run/fail2ban/fail2ban.sock"
        jail = "postfix-bots"
        [metrics]
        listen = "127.0.0.1:9465"
        "#,
    )
    .expect("valid config");
    let policy = config.ban.policy();
    assert_eq!(policy.default_bantime, Some(Duration::from_mins(10)));
    let escalation = policy.escalation.expect("increment on");
    assert!((escalation.factor - 2.0).abs() < f64::EPSILON);
    assert_eq!(escalation.max, Duration::from_hours(24));
    assert_eq!(policy.history_age, Duration::from_hours(24 * 30));
    assert!(!policy.ignore_self);
    let aggregation = policy.aggregation.expect("aggregation on");
    assert_eq!(
        (
            aggregation.threshold,
            aggregation.v4_prefix,
            aggregation.v6_prefix
        ),
        (5, 24, 56)
    );
    assert_eq!(
        config.fail2ban.expect("section").settings().jail,
        "postfix-bots"
    );
    assert_eq!(config.metrics.listen.as_deref(), Some("127.0.0.1:9465"));
    assert!(Config::parse("").expect("defaults").fail2ban.is_none());
}

#[test]
fn ban_lifecycle_problems_are_named() {
    let problems = invalid(
        "[ban]\nfactor = -1.0\naggregate_v4_prefix = 40\n[metrics]\nlisten = \"nowhere\"\n[fail2ban]\njail = \"two words\"\n",
    );
    let all = problems.join("\n");
    for needle in [
        "ban.factor",
        "ban.aggregate_v4_prefix",
        "metrics.listen",
        "fail2ban.jail",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    let message = syntax("[ban]\nmaxtime = 0\n");
    assert!(
        message.contains("longer than zero") && message.contains("line 2"),
        "{message}"
    );
}

#[test]
fn host_warnings_name_missing_interfaces_and_loopback_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir(dir.path().join("eth0")).expect("mkdir");
    let host = HostPaths {
        net_class: dir.path().to_owned(),
        resolv_conf: dir.path().join("resolv.conf"),
    };
    let config = Config::parse("[xdp]\ninterfaces = [\"eth0\", \"eht1\"]\n").expect("valid");
    assert!(config.warnings().is_empty());
    assert_eq!(
        config.host_warnings(&host),
        [format!(
            "xdp.interfaces: eht1 does not exist on this host ({} has no eht1): the daemon cannot attach to it",
            dir.path().display()
        )]
    );
    let config = Config::parse("[xdp]\ninterfaces = [\"lo\"]\n").expect("valid");
    assert_eq!(config.warnings().len(), 1);
    assert!(
        config.warnings()[0].starts_with("xdp.interfaces: lo is the only interface"),
        "{:?}",
        config.warnings()
    );
    let config = Config::parse("[xdp]\ninterfaces = [\"lo\", \"eth0\"]\n").expect("valid");
    assert!(config.warnings().is_empty());
}

#[test]
fn config_path_resolution_prefers_the_flag() {
    assert_eq!(
        resolve_path(Some(Path::new("/x.toml"))),
        Path::new("/x.toml")
    );
}
