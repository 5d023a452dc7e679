//! Rate limits end to end with a real Postfix: `check_policy_service`
//! points at spamwall in Postfix's network namespace, and a client sends
//! one mail to three recipients with `swaks` from another namespace. With
//! a limit of two recipients per client, the third RCPT is answered 4xx
//! (`DEFER_IF_PERMIT`) and the first two are delivered.
//!
//! Needs root, Postfix, swaks and the `spamwall` binary (`cargo build
//! --release -p policy-daemon`, or `SPAMWALL_BIN`); run serially:
//! `cargo test --release -p spamwall-tests --test policy_ratelimit_postfix
//! -- --test-threads=1`.

use std::time::Duration;

use spamwall_tests::{
    daemon::{Daemon, Settings},
    netns::{NetnsPair, Subnet},
    postfix::{self, Postfix},
    require_root,
};

const SWAKS_SECS: u32 = 5;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const POLICY_PORT: u16 = 10040;

#[test]
fn the_recipient_over_the_limit_is_deferred_by_postfix() {
    if !require_root("the_recipient_over_the_limit_is_deferred_by_postfix") {
        return;
    }
    let net = NetnsPair::new(Subnet::test_net_1(91));
    let server = std::net::IpAddr::V4(net.server_v4());
    let client = net.client_v4();
    let mut settings = Settings::on(net.server());
    settings.extra = format!(
        "[policy]\nlisten = [\"127.0.0.1:{POLICY_PORT}\"]\n\
         [[policy.ratelimit]]\nname = \"client-rcpts\"\nkey = \"client_address\"\n\
         count = \"recipients\"\nlimit = 2\nwindow = \"1h\"\n\
         action = \"DEFER_IF_PERMIT too many recipients from %IP%\"\n"
    );
    let daemon = Daemon::start(net.server(), &settings);
    let mut postfix_settings = postfix::Settings::on(server);
    postfix_settings.policy = Some(format!("inet:127.0.0.1:{POLICY_PORT}"));
    let postfix = Postfix::start(net.server(), &postfix_settings);
    let logs = || {
        format!(
            "Postfix log:\n{}\nspamwall log:\n{}",
            postfix.log(),
            daemon.log()
        )
    };
    let output = postfix::swaks(
        net.client(),
        server,
        "sender@client.test",
        "one@example.test,two@example.test,three@example.test",
        SWAKS_SECS,
    );
    let text = format!(
        "exit {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let deferred = text
        .lines()
        .find(|line| line.contains("three@example.test") && line.contains("<** "))
        .unwrap_or_else(|| panic!("the third RCPT was not refused:\n{text}\n{}", logs()));
    assert!(
        deferred.contains("450 4.7.1")
            && deferred.contains(&format!("too many recipients from {client}")),
        "not a 4xx with the limit's text: {deferred}\n{text}"
    );
    assert_eq!(
        text.matches("<-  250 2.1.5").count(),
        2,
        "the first two RCPTs were not both accepted:\n{text}"
    );
    assert!(
        output.status.success() && text.contains("250 2.0.0 Ok: queued"),
        "the mail to the accepted recipients was not queued:\n{text}\n{}",
        logs()
    );
    assert!(
        postfix.wait_delivered(2, DELIVERY_TIMEOUT),
        "the accepted recipients were not delivered\n{}",
        logs()
    );
    assert!(daemon.list().is_empty(), "no ban configured");
}
