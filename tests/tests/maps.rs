//! The daemon's view of the kernel maps: bulk writes, batched reads, the
//! ban manager's bookkeeping and sweeping, all against the real kernel.

use std::{net::Ipv4Addr, time::Duration};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use spamwall::{
    bans::{Allowlist, BanError, BanLength, BanManager, BanPolicy, Source},
    dataplane::{Capacities, Dataplane, monotonic_now_ns},
};
use spamwall_tests::{PinDir, TEST_CAPACITIES, require_root};
use xdp_common::{BanValue, SOURCE_LOGWATCH};

fn net(text: &str) -> IpNet {
    text.parse().expect("test net")
}

fn manager(pins: &PinDir) -> BanManager {
    let dataplane = Dataplane::load(pins.path(), TEST_CAPACITIES).expect("load dataplane");
    BanManager::new(
        dataplane,
        BanPolicy {
            allowlist: Allowlist::new([net("203.0.113.0/24")]),
            default_bantime: Some(Duration::from_mins(10)),
        },
    )
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
    let value = BanValue {
        expires_ns: BanValue::PERMANENT,
        source: SOURCE_LOGWATCH,
        count: 7,
    };
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
fn manager_counts_repeats_refuses_allowlisted_and_sweeps_expired() {
    if !require_root("manager_counts_repeats_refuses_allowlisted_and_sweeps_expired") {
        return;
    }
    let pins = PinDir::new();
    let mut bans = manager(&pins);

    let first = bans
        .ban(net("192.0.2.7/32"), BanLength::Default, Source::Cli, "one")
        .expect("ban");
    assert_eq!(first.count, 1);
    assert!(first.expires_at.is_some(), "default bantime applies");
    let again = bans
        .ban(
            net("192.0.2.7/32"),
            BanLength::Permanent,
            Source::Policy,
            "two",
        )
        .expect("ban again");
    assert_eq!(again.count, 2, "a repeated ban counts up");
    assert_eq!(again.expires_at, None, "and takes the new length");
    assert_eq!(again.source, Source::Policy);

    let refused = bans
        .ban(net("203.0.113.0/25"), BanLength::Default, Source::Cli, "x")
        .expect_err("allowlisted");
    assert!(matches!(refused, BanError::Allowlisted { .. }), "{refused}");
    assert!(refused.to_string().contains("203.0.113.0/25"), "{refused}");
    assert!(
        bans.ban(net("127.0.0.2/32"), BanLength::Default, Source::Cli, "x")
            .is_err()
    );

    bans.ban(
        net("2001:db8:9::/64"),
        BanLength::For(Duration::from_mins(1)),
        Source::Cli,
        "p",
    )
    .expect("prefix ban");
    // An entry that has already expired, as if its time ran out.
    let expired = BanValue {
        expires_ns: monotonic_now_ns() - 1_000_000_000,
        source: 2,
        count: 1,
    };
    bans.dataplane_mut()
        .insert(net("198.51.100.1/32"), expired)
        .expect("insert expired");

    let listed: Vec<IpNet> = bans
        .list()
        .expect("list")
        .into_iter()
        .map(|b| b.addr)
        .collect();
    assert_eq!(
        listed,
        [net("192.0.2.7/32"), net("2001:db8:9::/64")],
        "expired bans are not listed"
    );
    let stats = bans.stats().expect("stats");
    assert_eq!(
        (stats.bans_active, stats.bans_v4, stats.prefixes_v6),
        (2, 1, 1)
    );

    assert_eq!(
        bans.sweep().expect("sweep"),
        1,
        "only the expired entry goes"
    );
    assert_eq!(bans.dataplane().entries().expect("entries").len(), 2);

    assert!(bans.unban(net("2001:db8:9::/64")).expect("unban"));
    assert!(
        !bans.unban(net("2001:db8:9::/64")).expect("unban twice"),
        "second unban finds nothing"
    );
}
