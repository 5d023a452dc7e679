//! `spamwall xdp load` (what `cargo xtask load` runs after building) and
//! `spamwall xdp status`, without a daemon, on a veth in test namespaces:
//! the program is attached with its id and mode, a ban written into the
//! pinned map drops the client, and a daemon started later on the same pin
//! directory keeps the link, swaps its own program in and adopts the ban.

use std::{net::IpAddr, path::Path, process::Output, time::Duration};

use ipnet::IpNet;
use spamwall::dataplane::{Capacities, Dataplane, monotonic_now_ns};
use spamwall_tests::{
    daemon::{Daemon, Settings, spamwall, spamwall_bin},
    netns::{NetnsPair, Subnet, in_netns, run_bounded},
    pin::PinDir,
    privilege::require_root,
};
use xdp_common::{BanValue, SOURCE_CLI};

const SMTP: u16 = 25;
/// The daemon harness's map sizes, which the pins must have for it to
/// adopt them.
const CAPACITIES: Capacities = Capacities {
    v4: 4096,
    v6: 4096,
    prefix_v4: 256,
    prefix_v6: 256,
};

fn config(dir: &Path, pin_dir: &Path, interface: &str) -> std::path::PathBuf {
    let path = dir.join("spamwall.toml");
    let text = format!(
        "[daemon]\nbpf_pin_dir = {pin:?}\ncontrol_socket = {socket:?}\nstate_dir = {state:?}\n\
         [xdp]\ninterfaces = [{interface:?}]\nports = [{SMTP}]\n\
         [ban]\ncapacity_v4 = 4096\ncapacity_v6 = 4096\ncapacity_prefix_v4 = 256\ncapacity_prefix_v6 = 256\n",
        pin = pin_dir.display().to_string(),
        socket = dir.join("control.sock").display().to_string(),
        state = dir.join("state").display().to_string(),
    );
    std::fs::write(&path, text).expect("writing the configuration");
    path
}

fn ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn status(config: &Path) -> serde_json::Value {
    let output = spamwall([
        "--config".as_ref(),
        config.as_os_str(),
        "xdp".as_ref(),
        "status".as_ref(),
        "--json".as_ref(),
    ]);
    serde_json::from_str(&ok(&output, "xdp status --json")).expect("status JSON")
}

fn map_entries(status: &serde_json::Value, name: &str) -> u64 {
    status["maps"]
        .as_array()
        .expect("maps")
        .iter()
        .find(|map| map["name"] == name)
        .and_then(|map| map["entries"].as_u64())
        .unwrap_or_else(|| panic!("no map {name} in {status}"))
}

/// Runs `xdp load` in `interface`'s namespace and checks `xdp status`:
/// one link, on `interface`, running the pinned program. Returns the
/// program's and the link's ids.
fn load_and_check(config: &Path, interface: &str) -> (u64, u64) {
    let mut load = in_netns(interface, spamwall_bin());
    load.arg("--config").arg(config).args(["xdp", "load"]);
    let printed = ok(&run_bounded(&mut load, Duration::from_mins(1)), "xdp load");
    let loaded = status(config);
    let program = loaded["program_id"].as_u64().expect("a pinned program");
    assert!(
        printed.contains(&format!("program {program} pinned")),
        "{printed}"
    );
    let links = loaded["links"].as_array().expect("links");
    assert_eq!(links.len(), 1, "{loaded}");
    let link = &links[0];
    assert_eq!(link["interface"], interface, "{loaded}");
    assert_eq!(link["program_id"].as_u64(), Some(program), "{loaded}");
    let mode = link["mode"].as_str().expect("mode").to_owned();
    assert!(mode == "native" || mode == "skb", "{loaded}");
    let link_id = link["link_id"].as_u64().expect("link id");
    assert!(
        printed.contains(&format!("attached to {interface} in {mode} mode")),
        "{printed}"
    );
    (program, link_id)
}

#[test]
fn xdp_load_attaches_without_the_daemon_and_the_daemon_adopts_it() {
    if !require_root("xdp_load_attaches_without_the_daemon_and_the_daemon_adopts_it") {
        return;
    }
    let pin = PinDir::new();
    let mut net = NetnsPair::new(Subnet::test_net_2(170));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), pin.path(), net.server());
    let server: IpAddr = net.server_v4().into();
    net.listen(server, SMTP);
    assert!(
        net.can_connect(server, SMTP, 5),
        "nothing loaded yet: the client connects"
    );

    let nothing = status(&config);
    assert!(
        nothing["program_id"].is_null() && nothing["links"].as_array().is_some_and(Vec::is_empty),
        "{nothing}"
    );

    let (program, link_id) = load_and_check(&config, net.server());
    assert!(
        net.can_connect(server, SMTP, 5),
        "loaded, nobody banned: the client connects"
    );

    // A ban written into the pinned map, as any tool with CAP_BPF could.
    let client = IpNet::from(IpAddr::from(net.client_v4()));
    {
        let mut maps = Dataplane::load(pin.path(), CAPACITIES).expect("opening the pinned maps");
        let an_hour = monotonic_now_ns() + 3_600_000_000_000;
        maps.insert(client, BanValue::new(an_hour, SOURCE_CLI, 32, 1))
            .expect("inserting the ban");
    }
    assert!(
        !net.can_connect(server, SMTP, 2),
        "banned: dropped by the loaded program"
    );
    let banned = status(&config);
    assert_eq!(map_entries(&banned, "bans_v4"), 1, "{banned}");
    assert!(
        banned["counters"]["dropped_v4"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{banned}"
    );
    let human = ok(
        &spamwall([
            "--config".as_ref(),
            config.as_os_str(),
            "xdp".as_ref(),
            "status".as_ref(),
        ]),
        "xdp status",
    );
    assert!(
        human.contains(&format!("program: id {program}"))
            && human.contains("bans_v4")
            && human.contains("dropped_v4"),
        "{human}"
    );

    // The daemon on the same pins: the link stays, its program goes in,
    // the ban is adopted into its store and keeps dropping.
    let daemon = Daemon::start(
        net.server(),
        &Settings {
            ports: vec![SMTP],
            pin_dir: Some(pin.path().to_owned()),
            ..Settings::on(net.server())
        },
    );
    let adopted = status(&config);
    let links = adopted["links"].as_array().expect("links");
    assert_eq!(links.len(), 1, "{adopted}");
    assert_eq!(
        links[0]["link_id"].as_u64(),
        Some(link_id),
        "the link was kept: {adopted}"
    );
    let swapped = adopted["program_id"].as_u64().expect("program");
    assert_ne!(swapped, program, "the daemon's own program: {adopted}");
    assert_eq!(links[0]["program_id"].as_u64(), Some(swapped), "{adopted}");
    assert!(
        !net.can_connect(server, SMTP, 2),
        "still dropped under the daemon\n{}",
        daemon.log()
    );
    let listed = daemon.list();
    assert!(
        listed
            .iter()
            .any(|ban| ban["addr"] == net.client_v4().to_string()),
        "the ban adopted into the store: {listed:?}\n{}",
        daemon.log()
    );
    drop(daemon);
    assert!(
        !pin.path().exists(),
        "the daemon's cleanup detached and purged the pins"
    );
}

#[test]
fn xdp_status_without_cap_bpf_says_what_it_needs() {
    if !require_root("xdp_status_without_cap_bpf_says_what_it_needs") {
        return;
    }
    let pin = PinDir::new();
    let net = NetnsPair::new(Subnet::test_net_2(171));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), pin.path(), net.server());
    let mut load = in_netns(net.server(), spamwall_bin());
    load.arg("--config")
        .arg(&config)
        .args(["xdp", "load", "--mode", "skb"]);
    let printed = ok(
        &run_bounded(&mut load, Duration::from_mins(1)),
        "xdp load --mode skb",
    );
    assert!(printed.contains("in skb mode"), "{printed}");
    assert_eq!(status(&config)["links"][0]["mode"], "skb");

    let mut unprivileged = std::process::Command::new("setpriv");
    unprivileged
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(spamwall_bin())
        .arg("--config")
        .arg(&config)
        .args(["xdp", "status"]);
    let output = run_bounded(&mut unprivileged, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs CAP_BPF"), "{stderr}");

    let detach = spamwall([
        "--config".as_ref(),
        config.as_os_str(),
        "xdp".as_ref(),
        "unload".as_ref(),
    ]);
    let printed = ok(&detach, "xdp unload");
    assert!(
        printed.contains(&format!("detached from {}", net.server())),
        "{printed}"
    );
    assert!(
        status(&config)["links"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}
