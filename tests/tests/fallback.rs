//! The daemon with fail2ban as a backend: as the fallback when XDP cannot
//! be used, and beside XDP when both are configured. Real fail2ban-server,
//! real daemon in a network namespace.

#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{collections::BTreeSet, time::Duration};

use spamwall_tests::{
    daemon::{Daemon, Settings},
    fail2ban::{Fail2banServer, JAIL},
    netns::{NetnsPair, Subnet, can_connect},
    require_root,
};

fn fail2ban_section(server: &Fail2banServer) -> String {
    format!(
        "[fail2ban]\nsocket = {}\njail = \"{JAIL}\"\n",
        serde_json::to_string(server.socket().to_str().unwrap()).unwrap()
    )
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn without_xdp_bans_fall_back_to_fail2ban() {
    if !require_root("without_xdp_bans_fall_back_to_fail2ban") {
        return;
    }
    let fail2ban = Fail2banServer::start();
    let net = NetnsPair::new(Subnet::test_net_1(20));
    let mut settings = Settings::on("no-such-if0");
    settings.extra = fail2ban_section(&fail2ban);
    let daemon = Daemon::start(net.server(), &settings);

    let status = daemon.status();
    let backends = status["backends"].as_array().unwrap();
    assert_eq!(backends[0]["name"], "xdp");
    assert_eq!(backends[0]["active"], false, "{status}");
    assert!(
        backends[0]["detail"]
            .as_str()
            .unwrap()
            .contains("no-such-if0"),
        "{status}"
    );
    assert_eq!(backends[1]["name"], "fail2ban");
    assert_eq!(backends[1]["active"], true, "{status}");
    assert!(
        backends[1]["detail"].as_str().unwrap().contains("fallback"),
        "{status}"
    );

    daemon.cli_ok(&["ban", "192.0.2.77", "2001:db8:20::77"]);
    fail2ban.wait_until_listed(
        &set(&["192.0.2.77", "2001:db8:20::77"]),
        Duration::from_secs(20),
    );
    daemon.cli_ok(&["unban", "192.0.2.77"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fail2ban.cli_banned(JAIL).contains("192.0.2.77") {
        assert!(
            std::time::Instant::now() < deadline,
            "unban never reached fail2ban"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn both_backends_get_every_ban_and_fail2ban_restarts_lose_none() {
    if !require_root("both_backends_get_every_ban_and_fail2ban_restarts_lose_none") {
        return;
    }
    let mut fail2ban = Fail2banServer::start();
    let mut net = NetnsPair::new(Subnet::test_net_2(21));
    net.listen(net.server_v4().into(), 25);
    let mut settings = Settings::on(net.server());
    settings.extra = fail2ban_section(&fail2ban);
    settings.ban_extra = "backends = [\"xdp\", \"fail2ban\"]".to_owned();
    let daemon = Daemon::start(net.server(), &settings);
    let status = daemon.status();
    assert_eq!(status["backends"][0]["active"], true, "{status}");
    assert_eq!(status["backends"][1]["active"], true, "{status}");

    let client = net.client_v4().to_string();
    daemon.cli_ok(&["ban", &client]);
    assert!(
        !can_connect(net.client(), net.server_v4().into(), 25, 1),
        "XDP drops the client"
    );

    // fail2ban goes away while bans keep coming; none is lost.
    fail2ban.stop();
    let queued: Vec<String> = (1..=30).map(|i| format!("203.0.113.{i}")).collect();
    for target in &queued {
        daemon.cli_ok(&["ban", target]);
    }
    let depth = daemon.status()["backends"][1]["queue_depth"]
        .as_u64()
        .unwrap();
    assert!(depth > 0, "bans wait in the queue while fail2ban is down");
    fail2ban.launch();
    let mut expected: BTreeSet<String> = queued.into_iter().collect();
    expected.insert(client);
    fail2ban.wait_until_listed(&expected, Duration::from_mins(1));
}
