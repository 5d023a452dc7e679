//! The daemon's view of the kernel maps: bulk writes, batched reads, the
//! ban manager's bookkeeping and sweeping, all against the real kernel.

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use spamwall::{
    bans::{
        Allowlist, BanError, BanLength, BanManager, BanPolicy, BanRequest, BanScope, PortScopes,
        Source, XdpBackend, store::Store,
    },
    dataplane::{Capacities, Dataplane, monotonic_now_ns},
};
use spamwall_tests::{PinDir, TEST_CAPACITIES, require_root};
use xdp_common::{BanValue, SOURCE_LOGWATCH};

fn net(text: &str) -> IpNet {
    text.parse().expect("test net")
}

/// A manager over a real dataplane and a store in `state`.
fn manager(pins: &PinDir, state: &std::path::Path, capacities: Capacities) -> BanManager {
    let dataplane = Dataplane::load(pins.path(), capacities).expect("load dataplane");
    let store = Arc::new(Store::open_in(state).expect("open store"));
    let xdp = XdpBackend {
        dataplane: Some(dataplane),
        enforcing: false,
        note: String::new(),
    };
    BanManager::new(
        store,
        xdp,
        None,
        BanPolicy {
            allowlist: Allowlist::new([net("203.0.113.0/24")]),
            default_bantime: Some(Duration::from_mins(10)),
            ..BanPolicy::default()
        },
    )
    .expect("manager")
}

fn cli_ban(target: &str, length: BanLength) -> BanRequest {
    BanRequest {
        target: net(target),
        length,
        source: Source::Cli,
        reason: "test".into(),
        detail: String::new(),
        scope: BanScope::Default,
    }
}

#[test]
fn bulk_insert_and_batched_read_agree() {
    if !require_root("bulk_insert_and_batched_read_agree") {
        return;
    }
    let pins = PinDir::new();
    let capacities = Capacities {
        v4: 300_000,
        v6: 1024,
        ..TEST_CAPACITIES
    };
    let mut dataplane = Dataplane::load(pins.path(), capacities).expect("load dataplane");
    let value = BanValue::new(BanValue::PERMANENT, SOURCE_LOGWATCH, 32, 7);
    let bans: Vec<(IpNet, BanValue)> = (0..100_000_u32)
        .map(|i| {
            (
                IpNet::V4(Ipv4Net::from(Ipv4Addr::from(0x0A00_0000 + i))),
                value,
            )
        })
        .chain((0..10_u16).map(|i| {
            let addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i + 1);
            (IpNet::V6(Ipv6Net::from(addr)), value)
        }))
        .chain([
            (net("198.51.100.0/24"), value),
            (net("2001:db8:1::/48"), value),
        ])
        .collect();
    dataplane.insert_many(&bans).expect("insert_many");

    let mut entries = dataplane.entries().expect("entries");
    assert_eq!(entries.len(), bans.len(), "every ban read back");
    entries.sort_by_key(|(net, _)| *net);
    let mut expected = bans.clone();
    expected.sort_by_key(|(net, _)| *net);
    assert_eq!(entries, expected, "keys and values read back unchanged");
}

#[test]
fn manager_writes_the_maps_and_reconcile_repairs_them() {
    if !require_root("manager_writes_the_maps_and_reconcile_repairs_them") {
        return;
    }
    let pins = PinDir::new();
    let state = tempfile::tempdir().expect("state dir");
    let mut bans = manager(&pins, state.path(), TEST_CAPACITIES);

    let first = bans
        .ban(cli_ban("192.0.2.7/32", BanLength::Default))
        .expect("ban");
    assert_eq!(first.count, 1);
    bans.ban(cli_ban("2001:db8:9::/64", BanLength::Permanent))
        .expect("prefix ban");
    let refused = bans
        .ban(cli_ban("203.0.113.0/25", BanLength::Default))
        .expect_err("allowlisted");
    assert!(matches!(refused, BanError::Allowlisted { .. }), "{refused}");

    let in_map = |bans: &BanManager| -> Vec<IpNet> {
        let mut nets: Vec<IpNet> = bans
            .xdp()
            .dataplane
            .as_ref()
            .expect("dataplane")
            .entries()
            .expect("entries")
            .into_iter()
            .map(|(net, _)| net)
            .collect();
        nets.sort();
        nets
    };
    assert_eq!(in_map(&bans), [net("192.0.2.7/32"), net("2001:db8:9::/64")]);

    // An entry the store does not hold, and a ban that vanished from the map.
    let stray = BanValue::new(BanValue::PERMANENT, 2, 32, 1);
    let dataplane = bans.xdp_mut().dataplane.as_mut().expect("dataplane");
    dataplane
        .insert(net("198.51.100.1/32"), stray)
        .expect("stray");
    dataplane.remove(net("192.0.2.7/32")).expect("remove");
    let report = bans.reconcile(false);
    assert_eq!((report.evicted, report.removed), (1, 1), "{report:?}");
    assert_eq!(bans.stats().evicted, 1);
    assert_eq!(in_map(&bans), [net("192.0.2.7/32"), net("2001:db8:9::/64")]);

    assert!(bans.unban(net("2001:db8:9::/64")).expect("unban"));
    assert!(!bans.unban(net("2001:db8:9::/64")).expect("unban twice"));
    assert_eq!(in_map(&bans), [net("192.0.2.7/32")]);
}

#[test]
fn restart_with_wiped_pins_restores_every_ban() {
    if !require_root("restart_with_wiped_pins_restores_every_ban") {
        return;
    }
    let state = tempfile::tempdir().expect("state dir");
    {
        let pins = PinDir::new();
        let mut bans = manager(&pins, state.path(), TEST_CAPACITIES);
        for target in [
            "192.0.2.1/32",
            "192.0.2.2/32",
            "2001:db8::1/128",
            "198.51.100.0/24",
        ] {
            bans.ban(cli_ban(target, BanLength::Default)).expect("ban");
        }
        // Dropping the pin guard removes the maps: a reboot.
    }
    let pins = PinDir::new();
    let mut bans = manager(&pins, state.path(), TEST_CAPACITIES);
    let report = bans.reconcile(true);
    assert_eq!(report.restored, 4, "{report:?}");
    let restored = bans
        .xdp()
        .dataplane
        .as_ref()
        .expect("dataplane")
        .entries()
        .expect("entries");
    assert_eq!(restored.len(), 4);
    assert!(
        restored
            .iter()
            .all(|(_, value)| value.expires_ns > monotonic_now_ns())
    );
}

#[test]
fn evictions_from_a_small_lru_map_are_detected_and_repaired() {
    if !require_root("evictions_from_a_small_lru_map_are_detected_and_repaired") {
        return;
    }
    let pins = PinDir::new();
    let state = tempfile::tempdir().expect("state dir");
    let small = Capacities {
        v4: 64,
        ..TEST_CAPACITIES
    };
    let mut bans = manager(&pins, state.path(), small);
    let requests: Vec<BanRequest> = (1..=200_u32)
        .map(|i| {
            cli_ban(
                &format!("{}/32", Ipv4Addr::from(0xC633_6400 + i)),
                BanLength::Default,
            )
        })
        .collect();
    let targets: Vec<IpNet> = requests.iter().map(|r| r.target).collect();
    assert!(bans.ban_many(requests).iter().all(Result::is_ok));
    assert_eq!(
        bans.list().expect("list").len(),
        200,
        "the store holds every ban"
    );
    let report = bans.reconcile(false);
    assert!(
        report.evicted > 0,
        "a 64-entry LRU map cannot hold 200 bans: {report:?}"
    );
    assert_eq!(bans.stats().evicted, report.evicted);

    // Down to 20 live bans, which the map holds: whichever of them the
    // LRU evicted are written back, each counted once.
    for target in &targets[20..] {
        assert!(bans.unban(*target).expect("unban"));
    }
    let kept = &targets[..20];
    let in_map = |bans: &BanManager, target: &IpNet| {
        bans.xdp()
            .dataplane
            .as_ref()
            .expect("dataplane")
            .get(*target)
            .expect("lookup")
            .is_some()
    };
    let missing = kept.iter().filter(|t| !in_map(&bans, t)).count() as u64;
    let evicted_before = bans.stats().evicted;
    let report = bans.reconcile(false);
    assert_eq!(report.evicted, missing, "{report:?}");
    assert_eq!(bans.stats().evicted, evicted_before + missing);
    let absent: Vec<&IpNet> = kept.iter().filter(|t| !in_map(&bans, t)).collect();
    assert!(absent.is_empty(), "not written back: {absent:?}");
    let entries = bans
        .xdp()
        .dataplane
        .as_ref()
        .expect("dataplane")
        .entries()
        .expect("entries");
    assert_eq!(entries.len(), 20, "only the live bans: {entries:?}");
}

#[test]
fn a_reload_renumbers_the_scopes_in_the_kernel_and_every_ban_follows() {
    if !require_root("a_reload_renumbers_the_scopes_in_the_kernel_and_every_ban_follows") {
        return;
    }
    let pins = PinDir::new();
    let state = tempfile::tempdir().expect("state dir");
    let mut bans = manager(&pins, state.path(), TEST_CAPACITIES);
    let dnsbl = BanScope::from_ports(&[25]);
    let sasl = BanScope::from_ports(&[465, 587, 993]);
    let base = bans.policy().clone();
    let policy = |named: &[BanScope]| BanPolicy {
        scopes: PortScopes::new(&[25, 465, 587], named).expect("fits"),
        ..base.clone()
    };
    let first = policy(&[dnsbl.clone(), sasl.clone()]);
    bans.set_policy(first);
    bans.ban(BanRequest {
        scope: sasl.clone(),
        ..cli_ban("192.0.2.7/32", BanLength::Default)
    })
    .expect("ban");
    let scopes_in_map = |bans: &BanManager| {
        bans.xdp()
            .dataplane
            .as_ref()
            .expect("dataplane")
            .get(net("192.0.2.7/32"))
            .expect("lookup")
            .expect("in the map")
            .scopes
    };
    assert_eq!(scopes_in_map(&bans), 0b100, "the SASL scope is the third");
    // The DNSBL rule goes: the SASL scope becomes the second, and the ban
    // in the kernel is rewritten to match.
    let second = policy(std::slice::from_ref(&sasl));
    let expected = second.scopes.mask(&sasl);
    bans.set_policy(second);
    assert_eq!(expected, 0b10);
    assert_eq!(scopes_in_map(&bans), expected);
    assert_eq!(
        bans.list().expect("list")[0].ports,
        Some(vec![465, 587, 993]),
        "the store keeps the ports, not the numbering"
    );
}

#[test]
fn the_port_bitmap_of_an_older_version_is_unpinned_at_load() {
    if !require_root("the_port_bitmap_of_an_older_version_is_unpinned_at_load") {
        return;
    }
    let pins = PinDir::new();
    std::fs::create_dir_all(pins.path()).expect("pin dir");
    let old = pins.path().join("xdp_ports");
    // The map an older program pinned: one bit per port.
    let status = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&old)
        .args([
            "type",
            "array",
            "key",
            "4",
            "value",
            "8",
            "entries",
            "1024",
            "name",
            "xdp_ports",
        ])
        .status()
        .expect("bpftool runs");
    assert!(status.success(), "bpftool map create: {status}");
    assert!(old.exists());
    let dataplane = Dataplane::load(pins.path(), TEST_CAPACITIES).expect("load dataplane");
    assert!(!old.exists(), "the retired map's pin is removed");
    assert!(pins.path().join("xdp_port_scopes").exists());
    drop(dataplane);
}
