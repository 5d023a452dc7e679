//! Greylisting end to end with a real Postfix, a real spamwall daemon and,
//! for two MX hosts, a real `redis-server`.
//!
//! Topology: a server namespace (Postfix on 192.0.2.1:25, spamwall's
//! policy listener on its loopback) and a client namespace sending with
//! `swaks`. Every mail scores 0 and the threshold at 0 greylists, so each
//! new triplet is deferred with 450 until the delay has passed.
//!
//! Needs root, Postfix, swaks, redis-server and the `spamwall` binary;
//! run serially: `cargo test -p spamwall-tests --test policy_greylist --
//! --test-threads=1`.

use std::{
    net::IpAddr,
    process::Output,
    thread,
    time::{Duration, Instant},
};

use spamwall_tests::{
    daemon::{Daemon, Settings, spamwall},
    netns::{NetnsPair, Subnet},
    postfix::{self, Postfix},
    redis::RedisServer,
    require_root,
};

/// `swaks --timeout` per SMTP step.
const SWAKS_SECS: u32 = 5;
/// How long a delivery may take once queued.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// spamwall's policy listener inside the server namespace.
const POLICY_PORT: u16 = 10040;
/// `policy.greylist.delay`: short, so the test waits little.
const DELAY: Duration = Duration::from_secs(3);
const FROM: &str = "sender@remote.test";
const TO: &str = "user@example.test";

fn transcript(output: &Output) -> String {
    format!(
        "exit {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A policy section that greylists every mail, plus `more` (e.g. `[fleet]`).
fn greylisting(more: &str) -> String {
    format!(
        "[policy]\n\
         listen = [\"127.0.0.1:{POLICY_PORT}\"]\n\n\
         [[policy.threshold]]\n\
         score = 0\n\
         action = \"greylist\"\n\n\
         [policy.greylist]\n\
         delay = \"{}s\"\n\
         action = \"DEFER_IF_PERMIT greylisted, retry in %DELAY%\"\n\n\
         {more}",
        DELAY.as_secs()
    )
}

/// Sends one mail and asserts Postfix deferred it for greylisting.
fn assert_greylisted(pair: &NetnsPair, server: IpAddr, logs: &dyn Fn() -> String) {
    let output = postfix::swaks(pair.client(), server, FROM, TO, SWAKS_SECS);
    let text = transcript(&output);
    assert!(
        !output.status.success() && text.contains("450 4.7.1") && text.contains("greylisted"),
        "the mail was not deferred with 450 for greylisting:\n{text}\n{}",
        logs()
    );
}

/// Sends one mail and asserts it was queued and delivered as the
/// `count`th mail.
fn assert_delivered(
    pair: &NetnsPair,
    server: IpAddr,
    postfix: &Postfix,
    count: usize,
    logs: &dyn Fn() -> String,
) {
    let output = postfix::swaks(pair.client(), server, FROM, TO, SWAKS_SECS);
    let text = transcript(&output);
    assert!(
        output.status.success() && text.contains("250 2.0.0 Ok: queued"),
        "the retry after the delay was not queued:\n{text}\n{}",
        logs()
    );
    assert!(
        postfix.wait_delivered(count, DELIVERY_TIMEOUT),
        "the retry was not delivered\n{}",
        logs()
    );
}

/// Waits until `DELAY` has passed since `since`.
fn wait_out_the_delay(since: Instant) {
    let left = (DELAY + Duration::from_millis(300)).saturating_sub(since.elapsed());
    thread::sleep(left);
}

/// The scenario: a greylisted mail is deferred with 450, an early
/// retry too, and the retry after the delay is delivered, across a daemon
/// restart in between: the first sighting is kept in the store.
#[test]
fn a_greylisted_mail_is_deferred_then_its_retry_after_the_delay_delivered() {
    const NAME: &str = "a_greylisted_mail_is_deferred_then_its_retry_after_the_delay_delivered";
    if !require_root(NAME) {
        return;
    }
    let pair = NetnsPair::new(Subnet::test_net_1(51));
    let server: IpAddr = pair.server_v4().into();
    let mut settings = Settings::on(pair.server());
    settings.extra = greylisting("");
    let mut daemon = Daemon::start(pair.server(), &settings);
    let mut postfix_settings = postfix::Settings::on(server);
    postfix_settings.policy = Some(format!("inet:127.0.0.1:{POLICY_PORT}"));
    let postfix = Postfix::start(pair.server(), &postfix_settings);
    let logs = || {
        format!(
            "Postfix log:\n{}\nspamwall log:\n{}",
            postfix.log(),
            daemon.log()
        )
    };

    let first = Instant::now();
    assert_greylisted(&pair, server, &logs);
    assert_greylisted(&pair, server, &logs);
    let status = daemon.status();
    let line = status["greylist"].as_str().unwrap_or_default().to_owned();
    assert!(
        line.starts_with("1 triplets, 2 deferred, 0 passed"),
        "status: {status}"
    );

    daemon.kill(libc::SIGTERM);
    daemon.restart();
    wait_out_the_delay(first);
    let logs = || {
        format!(
            "Postfix log:\n{}\nspamwall log:\n{}",
            postfix.log(),
            daemon.log()
        )
    };
    assert_delivered(&pair, server, &postfix, 1, &logs);
    daemon.wait_log("greylisting passed", |log| {
        log.contains("greylisting passed")
    });
}

/// Two MX hosts sharing Redis: the mail is greylisted on A; A goes away
/// and B, with its own store, takes the retry: B finds A's first sighting
/// in Redis and the mail is delivered. The classic multi-MX failure,
/// where every host greylists on its own, does not happen.
#[test]
fn greylisted_on_one_mx_and_retried_on_another_is_delivered() {
    const NAME: &str = "greylisted_on_one_mx_and_retried_on_another_is_delivered";
    if !require_root(NAME) {
        return;
    }
    let redis = RedisServer::start();
    let pair = NetnsPair::new(Subnet::test_net_1(52));
    let server: IpAddr = pair.server_v4().into();
    let node = |name: &str| {
        let mut settings = Settings::on(pair.server());
        settings.extra = greylisting(&format!(
            "[fleet]\nredis = {:?}\nnode = {name:?}\n",
            redis.url()
        ));
        settings
    };
    let mut postfix_settings = postfix::Settings::on(server);
    postfix_settings.policy = Some(format!("inet:127.0.0.1:{POLICY_PORT}"));
    let postfix = Postfix::start(pair.server(), &postfix_settings);

    let mut a = Daemon::start(pair.server(), &node("mx-a"));
    let first = Instant::now();
    {
        let logs = || format!("Postfix log:\n{}\nA's log:\n{}", postfix.log(), a.log());
        assert_greylisted(&pair, server, &logs);
    }
    let keys = redis
        .cli(&["--scan", "--pattern", "spamwall:grey:*"])
        .unwrap_or_default();
    assert_eq!(keys.lines().count(), 1, "one triplet in Redis: {keys:?}");
    a.kill(libc::SIGTERM);
    drop(a);

    let b = Daemon::start(pair.server(), &node("mx-b"));
    wait_out_the_delay(first);
    let logs = || format!("Postfix log:\n{}\nB's log:\n{}", postfix.log(), b.log());
    assert_delivered(&pair, server, &postfix, 1, &logs);
    let status = b.status();
    let line = status["greylist"].as_str().unwrap_or_default();
    assert!(
        line.contains("0 deferred, 1 passed") && line.contains("shared through"),
        "status: {status}"
    );
}

/// Redis gone: greylisting goes on locally, `status` says so, and the
/// retry on the same host still passes after the delay.
#[test]
fn with_redis_gone_greylisting_goes_on_locally_and_says_so() {
    const NAME: &str = "with_redis_gone_greylisting_goes_on_locally_and_says_so";
    if !require_root(NAME) {
        return;
    }
    let mut redis = RedisServer::start();
    let pair = NetnsPair::new(Subnet::test_net_1(53));
    let server: IpAddr = pair.server_v4().into();
    let mut settings = Settings::on(pair.server());
    settings.extra = greylisting(&format!("[fleet]\nredis = {:?}\n", redis.url()));
    let daemon = Daemon::start(pair.server(), &settings);
    let mut postfix_settings = postfix::Settings::on(server);
    postfix_settings.policy = Some(format!("inet:127.0.0.1:{POLICY_PORT}"));
    let postfix = Postfix::start(pair.server(), &postfix_settings);
    let logs = || {
        format!(
            "Postfix log:\n{}\nspamwall log:\n{}",
            postfix.log(),
            daemon.log()
        )
    };
    redis.stop();
    let first = Instant::now();
    assert_greylisted(&pair, server, &logs);
    let status = daemon.status();
    let line = status["greylist"].as_str().unwrap_or_default();
    assert!(
        line.contains("DOWN, greylisting locally"),
        "status: {status}\n{}",
        logs()
    );
    wait_out_the_delay(first);
    assert_delivered(&pair, server, &postfix, 1, &logs);
}

/// `check-config` names every greylisting mistake by its key, and refuses
/// a `greylist` threshold without the section.
#[test]
fn check_config_names_each_greylisting_mistake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spamwall.toml");
    std::fs::write(
        &path,
        "[policy]\n\
         [[policy.threshold]]\nscore = 1\naction = \"greylist\"\nban = \"1h\"\n\
         [policy.greylist]\ndelay = \"2d\"\nexpire = \"1d\"\nv4_prefix = 40\n\
         action = \"REJECT greylisted\"\n",
    )
    .expect("writing the configuration");
    let output = spamwall([std::ffi::OsStr::new("check-config"), path.as_os_str()]);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "accepted:\n{errors}");
    for key in [
        "policy.greylist.expire",
        "policy.greylist.v4_prefix",
        "policy.greylist.action: \"REJECT\" does not defer",
        "policy.threshold[0].ban: a greylisting threshold does not ban",
    ] {
        assert!(errors.contains(key), "{key:?} missing:\n{errors}");
    }
    std::fs::write(
        &path,
        "[policy]\n[[policy.threshold]]\nscore = 0\naction = \"greylist\"\n",
    )
    .expect("writing the configuration");
    let output = spamwall([std::ffi::OsStr::new("check-config"), path.as_os_str()]);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        errors.contains("\"greylist\" needs a [policy.greylist] section"),
        "{errors}"
    );
}
