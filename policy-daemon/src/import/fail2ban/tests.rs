use std::path::Path;

use super::*;
use crate::config::Config;

/// A fail2ban directory of its own: a `filter.d` with a custom filter
/// (and `common.conf` from Debian's when there), and `jail.conf`.
fn fixture(jail_conf: &str, jail_local: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("filter.d")).expect("mkdir");
    std::fs::write(
        dir.path().join("filter.d/helo.conf"),
        "[Definition]\nfailregex = ^\\S+ postfix/smtpd\\[\\d+\\]: NOQUEUE: reject: RCPT from \\S+\\[<HOST>\\]: 504 .*Helo command rejected\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("jail.conf"), jail_conf).expect("write");
    if let Some(local) = jail_local {
        std::fs::write(dir.path().join("jail.local"), local).expect("write");
    }
    dir
}

fn parses(toml: &str) -> Config {
    Config::parse(toml).unwrap_or_else(|e| panic!("{e:?}\n{toml}"))
}

const JAIL_CONF: &str = "[DEFAULT]\n\
    bantime = 10m\nfindtime = 10m\nmaxretry = 5\nbackend = auto\n\
    ignoreip = 127.0.0.1/8 ::1\nsyslog_mail = /var/log/mail.log\n\
    filter = %(__name__)s\nport = 0:65535\n\
    [helo]\nport = smtp,465,submission\nlogpath = %(syslog_mail)s\n\
    [sshd]\nfilter = sshd\nport = ssh\nlogpath = /var/log/auth.log\n";

#[test]
fn a_custom_mail_jail_is_carried_over_whole() {
    let dir = fixture(
        JAIL_CONF,
        Some(
            "[helo]\nenabled = true\nmaxretry = 2\nbantime = -1\nignoreip = 127.0.0.1/8 192.0.2.0/24 2001:db8::/48\n",
        ),
    );
    let imported = import(&dir.path().join("jail.local")).expect("imports");
    assert_eq!(imported.lost, 0, "{}", imported.toml);
    let config = parses(&imported.toml);
    let rule = &config.logwatch.rule[0];
    assert_eq!(rule.filter, "helo");
    assert_eq!(rule.maxretry, Some(2));
    assert_eq!(rule.ports.as_deref(), Some(&[25, 465, 587][..]));
    assert_eq!(rule.bantime.map(|b| b.0), Some(None));
    assert_eq!(
        config.logwatch.source[0].path.as_deref(),
        Some(Path::new("/var/log/mail.log"))
    );
    assert!(!config.ban.increment);
    let allow: Vec<String> = config
        .ban
        .allowlist
        .entries()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        allow.contains(&"192.0.2.0/24".to_owned()) && allow.contains(&"2001:db8::/48".to_owned()),
        "{allow:?}"
    );
}

#[test]
fn what_is_not_carried_is_a_comment_and_counted() {
    let dir = fixture(
        JAIL_CONF,
        Some(
            "[sshd]\nenabled = true\n[helo]\nenabled = true\nignoreip = mx.example.org\n\
             action = %(banaction)s\n  sendmail-whois\nbanaction = nft\n\
             [missing]\nenabled = true\nfilter = nosuch\nlogpath = /var/log/mail.log\n",
        ),
    );
    let imported = import(dir.path()).expect("imports");
    let toml = &imported.toml;
    assert_eq!(imported.lost, 4, "{toml}");
    for needle in [
        "jail sshd (filter sshd): not a mail jail",
        "ignoreip mx.example.org: a name",
        "jail missing: not carried over: filter nosuch",
        "actions besides the ban (sendmail-whois)",
    ] {
        assert!(toml.contains(needle), "{needle} not in\n{toml}");
    }
    parses(toml);
}

#[test]
fn a_value_cannot_break_out_of_its_comment() {
    let dir = fixture(
        JAIL_CONF,
        Some("[helo]\nenabled = true\ndatepattern = x\n  [xdp]\n  interfaces = [\"evil0\"]\n"),
    );
    let imported = import(dir.path()).expect("imports");
    let config = parses(&imported.toml);
    assert!(config.xdp.interfaces.is_empty(), "{}", imported.toml);
    assert_eq!(imported.lost, 1);
}

#[test]
fn escalation_goes_into_the_ban_section() {
    let dir = fixture(
        JAIL_CONF,
        Some(
            "[helo]\nenabled = true\nbantime.increment = true\nbantime.factor = 2\nbantime.maxtime = 2d\n",
        ),
    );
    let imported = import(dir.path()).expect("imports");
    assert_eq!(imported.lost, 0, "{}", imported.toml);
    let config = parses(&imported.toml);
    assert!(config.ban.increment);
    assert!((config.ban.factor - 2.0).abs() < f64::EPSILON);
    assert_eq!(config.ban.maxtime.0.as_secs(), 172_800);
}

#[test]
fn unreadable_configurations_are_errors_naming_the_place() {
    let dir = fixture(
        JAIL_CONF,
        Some("[helo]\nenabled = true\nmaxretry = %(maxretry)s\n"),
    );
    let imported = import(dir.path()).expect("reads");
    assert!(imported.toml.contains("deeper than"), "{}", imported.toml);
    let dir = fixture(JAIL_CONF, Some("[helo]\nenabled\n"));
    let e = import(dir.path()).expect_err("refused").to_string();
    assert!(e.contains("jail.local:2"), "{e}");
    let e = import(Path::new("/nonexistent/fail2ban"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("/nonexistent/fail2ban"), "{e}");
}

#[test]
fn debians_postfix_jails_when_fail2ban_is_installed() {
    let etc = Path::new("/etc/fail2ban");
    if !etc.join("jail.conf").is_file() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(etc)
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(status.success());
    let root = dir.path().join("fail2ban");
    std::fs::write(
        root.join("jail.local"),
        "[DEFAULT]\nignoreip = 127.0.0.1/8 ::1 198.51.100.7\n[sshd]\nenabled = false\n\
         [postfix]\nenabled = true\nmode = aggressive\n[postfix-rbl]\nenabled = true\n\
         [postfix-sasl]\nenabled = true\n",
    )
    .expect("write");
    let imported = import(&root).expect("imports");
    assert_eq!(imported.lost, 0, "{}", imported.toml);
    let config = parses(&imported.toml);
    let filters: Vec<&str> = config
        .logwatch
        .filter
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        filters,
        ["postfix-aggressive", "postfix-rbl", "postfix-auth"]
    );
    assert_eq!(config.logwatch.rule.len(), 3);
    assert_eq!(config.logwatch.rule[1].maxretry, Some(1));
    assert!(
        config.logwatch.problems().is_empty(),
        "{:?}",
        config.logwatch.problems()
    );
}

#[test]
fn lengths_past_what_spamwall_holds_are_not_carried_as_such() {
    let dir = fixture(
        JAIL_CONF,
        Some(
            "[helo]\nenabled = true\nbantime = 52000w\n[big]\nenabled = true\nfilter = helo\nlogpath = /var/log/mail.log\nfindtime = 99999999w\n",
        ),
    );
    let imported = import(dir.path()).expect("imports");
    let config = parses(&imported.toml);
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    assert_eq!(config.logwatch.rule[0].bantime.map(|b| b.0), Some(None));
    assert_eq!(imported.lost, 2, "{}", imported.toml);
    assert!(
        imported
            .toml
            .contains("jail big: not carried over: findtime"),
        "{}",
        imported.toml
    );
}
