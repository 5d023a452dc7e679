//! The systemd drop-ins shipped in `packaging/drop-ins/`: each verifies with
//! the unit, and each gives the daemon, run as the unit runs it (its user,
//! only its capabilities), the access it is for: the mail log through
//! `SupplementaryGroups=adm`, fail2ban's root-only socket through
//! `User=root`. Without the drop-in the same daemon is refused.
//!
//! Needs root for the daemon tests; run serially:
//! `cargo test -p spamwall-tests --test drop_ins -- --test-threads=1`.

#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    fs,
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use spamwall_tests::{
    daemon::{Daemon, Settings, spamwall_bin},
    fail2ban::{Fail2banServer, JAIL},
    netns::{NetnsPair, Subnet},
    require_root,
};

/// Longest wait for a ban to show where it is expected.
const DEADLINE: Duration = Duration::from_secs(20);

fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(file)
}

/// The values of `key=` in a unit or drop-in, in order, an empty
/// assignment (a reset) included.
fn values(path: &Path, key: &str) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let prefix = format!("{key}=");
    text.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

const DROP_INS: [&str; 3] = ["mail-log.conf", "journal.conf", "fail2ban.conf"];

#[test]
fn every_drop_in_verifies_with_the_unit() {
    let unit = fs::read_to_string(packaging("spamwall.service")).unwrap();
    let bin = spamwall_bin();
    let local = unit
        .replace("/usr/sbin/spamwall", bin.to_str().unwrap())
        .replace("User=spamwall", "User=daemon")
        .replace("Group=spamwall", "Group=daemon");
    for drop_in in DROP_INS {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("spamwall.service"), &local).unwrap();
        let drop_ins = dir.path().join("spamwall.service.d");
        fs::create_dir(&drop_ins).unwrap();
        fs::copy(packaging("drop-ins").join(drop_in), drop_ins.join(drop_in)).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.path().join("spamwall.service"))
            .output()
            .expect("running systemd-analyze (package systemd)");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && !report.contains("spamwall.service"),
            "{drop_in}: systemd-analyze verify:\n{report}"
        );
    }
    // The fail2ban drop-in replaces the pin directory's owner with its own
    // user, and nothing else of the start step.
    let fail2ban = packaging("drop-ins/fail2ban.conf");
    let pre = values(&fail2ban, "ExecStartPre");
    let unit_pre = values(&packaging("spamwall.service"), "ExecStartPre");
    assert_eq!(pre.len(), 2, "a reset, then the step: {pre:?}");
    assert_eq!(pre[0], "", "the unit's step is reset first");
    assert_eq!(
        pre[1],
        unit_pre[0]
            .replace("-o spamwall -g spamwall", "-o root -g root")
            .replace("spamwall:spamwall", "root:root")
    );
}

/// A postscreen DNSBL line for `client`, stamped now.
fn dnsbl_line(client: IpAddr) -> String {
    let stamp = Command::new("date")
        .arg("+%b %e %H:%M:%S")
        .output()
        .expect("running date");
    format!(
        "{} mx postfix/postscreen[4242]: DNSBL rank 3 for [{client}]:40001\n",
        String::from_utf8_lossy(&stamp.stdout).trim_end()
    )
}

/// A mail log as Debian's rsyslog keeps it: `root:adm`, mode 0640, in a
/// directory anybody may enter.
fn debian_mail_log() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("spamwall-drop-in-")
        .tempdir()
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("mail.log");
    fs::write(
        &log,
        "Nov 20 10:00:00 mx postfix/master[1]: daemon started -- version 3.7.11\n",
    )
    .unwrap();
    let adm = nix_group("adm");
    std::os::unix::fs::chown(&log, Some(0), Some(adm)).unwrap();
    fs::set_permissions(&log, fs::Permissions::from_mode(0o640)).unwrap();
    (dir, log)
}

fn nix_group(name: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", name])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':')
        .nth(2)
        .and_then(|gid| gid.parse().ok())
        .unwrap_or_else(|| panic!("group {name} not found: {line:?}"))
}

fn logwatch_settings(net: &NetnsPair, log: &Path, groups: Vec<String>) -> Settings {
    let mut settings = Settings::on(net.server());
    settings.run_as = Some("65534".to_owned());
    settings.groups = groups;
    settings.extra = format!(
        "[[logwatch.source]]\nname = \"mail\"\npath = {}\n\n\
         [[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"rbl\"\nmaxretry = 1\n",
        serde_json::to_string(log.to_str().unwrap()).unwrap()
    );
    settings
}

fn wait_listed(daemon: &Daemon, client: IpAddr) {
    let deadline = Instant::now() + DEADLINE;
    let addr = client.to_string();
    while !daemon.list().iter().any(|ban| ban["addr"] == addr.as_str()) {
        assert!(
            Instant::now() < deadline,
            "{client} not banned within {DEADLINE:?}; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_mail_log_drop_in_lets_the_service_user_read_the_log() {
    if !require_root("the_mail_log_drop_in_lets_the_service_user_read_the_log") {
        return;
    }
    let (_dir, log) = debian_mail_log();
    let net = NetnsPair::new(Subnet::test_net_3(58));
    let client = IpAddr::from(net.client_v4());

    // Without the drop-in the service user cannot open the log.
    let refused = Daemon::start(net.server(), &logwatch_settings(&net, &log, Vec::new()));
    let deadline = Instant::now() + DEADLINE;
    while !refused.log().contains("Permission denied") {
        assert!(
            Instant::now() < deadline,
            "no permission error logged for {}; log:\n{}",
            log.display(),
            refused.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(refused);

    let groups = values(&packaging("drop-ins/mail-log.conf"), "SupplementaryGroups");
    assert_eq!(groups, ["adm"]);
    let daemon = Daemon::start(net.server(), &logwatch_settings(&net, &log, groups));
    fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut file| std::io::Write::write_all(&mut file, dnsbl_line(client).as_bytes()))
        .unwrap();
    wait_listed(&daemon, client);
}

#[test]
fn the_fail2ban_drop_in_reaches_fail2ban_with_only_the_unit_capabilities() {
    if !require_root("the_fail2ban_drop_in_reaches_fail2ban_with_only_the_unit_capabilities") {
        return;
    }
    let fail2ban = Fail2banServer::start();
    let net = NetnsPair::new(Subnet::test_net_3(59));
    let settings_as = |user: &str| {
        let mut settings = Settings::on(net.server());
        settings.run_as = Some(user.to_owned());
        "backends = [\"xdp\", \"fail2ban\"]".clone_into(&mut settings.ban_extra);
        settings.extra = format!(
            "[fail2ban]\nsocket = {}\njail = \"{JAIL}\"\n",
            serde_json::to_string(fail2ban.socket().to_str().unwrap()).unwrap()
        );
        settings
    };

    // The unit's own user cannot reach the root-only socket.
    let refused = Daemon::start(net.server(), &settings_as("65534"));
    refused.cli_ok(&["ban", "192.0.2.70"]);
    // Until the backend has tried, its detail says "not tried yet": wait
    // for the refusal itself.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = refused.status();
        let detail = status["backends"]
            .as_array()
            .and_then(|all| all.iter().find(|b| b["name"] == "fail2ban"))
            .and_then(|backend| backend["detail"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if detail.contains("not connected") && detail.contains("ermission denied") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "as the unit's user, fail2ban's socket was not refused: {detail}\nlog:\n{}",
            refused.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(refused);

    let users = values(&packaging("drop-ins/fail2ban.conf"), "User");
    assert_eq!(users, ["root"]);
    let daemon = Daemon::start(net.server(), &settings_as("0"));
    daemon.cli_ok(&["ban", "192.0.2.71"]);
    fail2ban.wait_until_listed(
        &std::iter::once("192.0.2.71".to_owned()).collect(),
        DEADLINE,
    );
    drop(daemon);
}
