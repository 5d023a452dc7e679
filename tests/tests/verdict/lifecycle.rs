//! A ban's life in the maps: prefixes, expiry by the program's clock,
//! permanent bans, removal, and a reload on the same pin directory.

use super::*;

#[test]
fn ipv4_prefix_ban_covers_the_prefix_only() {
    if !require_root("ipv4_prefix_ban_covers_the_prefix_only") {
        return;
    }
    let mut t = Harness::new();
    t.ban("192.0.2.0/24".parse::<IpNet>().unwrap());
    let inside = Ipv4Addr::new(192, 0, 2, 77);
    let outside = Ipv4Addr::new(192, 0, 3, 77);
    t.expect(
        &v4(inside).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4 inside a banned /24",
    );
    t.expect(
        &v4(Ipv4Addr::new(192, 0, 2, 255)).vlan(7).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "last address of a banned /24, in VLAN",
    );
    t.expect(
        &v4(outside).build(),
        XDP_PASS,
        Counter::Passed,
        "IPv4 just outside a banned /24",
    );
}

#[test]
fn ipv6_prefix_ban_covers_the_prefix_only() {
    if !require_root("ipv6_prefix_ban_covers_the_prefix_only") {
        return;
    }
    let mut t = Harness::new();
    t.ban("2001:db8:1:2::/64".parse::<IpNet>().unwrap());
    let inside: Ipv6Addr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
    let outside: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
    t.expect(
        &v6(inside).build(),
        XDP_DROP,
        Counter::DroppedV6,
        "IPv6 inside a banned /64",
    );
    t.expect(
        &v6(outside).build(),
        XDP_PASS,
        Counter::Passed,
        "IPv6 just outside a banned /64",
    );
}

#[test]
fn expired_ban_passes() {
    if !require_root("expired_ban_passes") {
        return;
    }
    let mut t = Harness::new();
    let past = spamwall::dataplane::monotonic_now_ns() - 1_000_000_000;
    t.ban_with(BANNED_V4, past);
    t.ban_with(BANNED_V6, past);
    t.expect(
        &v4(BANNED_V4).build(),
        XDP_PASS,
        Counter::ExpiredPassed,
        "IPv4 whose ban expired",
    );
    t.expect(
        &v6(BANNED_V6).build(),
        XDP_PASS,
        Counter::ExpiredPassed,
        "IPv6 whose ban expired",
    );
    t.ban_with("198.51.100.0/24".parse::<IpNet>().unwrap(), past);
    let frame = FrameBuilder::ipv4(Ipv4Addr::new(198, 51, 100, 9), DST_V4).build();
    t.expect(
        &frame,
        XDP_PASS,
        Counter::ExpiredPassed,
        "IPv4 whose prefix ban expired",
    );
}

#[test]
fn a_ban_ends_at_its_expiry_by_the_programs_clock() {
    if !require_root("a_ban_ends_at_its_expiry_by_the_programs_clock") {
        return;
    }
    // The program converts the kernel's tick count to the clock expiries
    // are written in; a conversion off by more than a few ticks either
    // drops past the end or passes before it.
    let mut t = Harness::new();
    let end = spamwall::dataplane::monotonic_now_ns() + 300_000_000;
    t.ban_with(BANNED_V4, end);
    t.ban_with(BANNED_V6, end);
    t.expect(
        &v4(BANNED_V4).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4 before its ban ends",
    );
    t.expect(
        &v6(BANNED_V6).build(),
        XDP_DROP,
        Counter::DroppedV6,
        "IPv6 before its ban ends",
    );
    while spamwall::dataplane::monotonic_now_ns() < end + 100_000_000 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    t.expect(
        &v4(BANNED_V4).build(),
        XDP_PASS,
        Counter::ExpiredPassed,
        "IPv4 a tenth of a second after its ban ended",
    );
    t.expect(
        &v6(BANNED_V6).build(),
        XDP_PASS,
        Counter::ExpiredPassed,
        "IPv6 a tenth of a second after its ban ended",
    );
}

#[test]
fn permanent_ban_drops() {
    if !require_root("permanent_ban_drops") {
        return;
    }
    let mut t = Harness::new();
    t.ban_with(BANNED_V4, BanValue::PERMANENT);
    t.ban_with(BANNED_V6, BanValue::PERMANENT);
    t.expect(
        &v4(BANNED_V4).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4 with a permanent ban",
    );
    t.expect(
        &v6(BANNED_V6).build(),
        XDP_DROP,
        Counter::DroppedV6,
        "IPv6 with a permanent ban",
    );
}

#[test]
fn expired_exact_ban_with_live_prefix_is_dropped() {
    if !require_root("expired_exact_ban_with_live_prefix_is_dropped") {
        return;
    }
    let mut t = Harness::new();
    let past = spamwall::dataplane::monotonic_now_ns() - 1_000_000_000;
    t.ban_with(BANNED_V4, past);
    t.ban("192.0.2.0/24".parse::<IpNet>().unwrap());
    t.ban_with(BANNED_V6, past);
    t.ban("2001:db8::/64".parse::<IpNet>().unwrap());
    t.expect(
        &v4(BANNED_V4).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4: expired exact ban, live /24",
    );
    t.expect(
        &v6(BANNED_V6).build(),
        XDP_DROP,
        Counter::DroppedV6,
        "IPv6: expired exact ban, live /64",
    );
}

/// Monotonic time a second ago: an expiry already passed.
fn a_second_ago() -> u64 {
    spamwall::dataplane::monotonic_now_ns() - 1_000_000_000
}

#[test]
fn a_live_prefix_drops_through_expired_longer_ones() {
    if !require_root("a_live_prefix_drops_through_expired_longer_ones") {
        return;
    }
    let mut t = Harness::new();
    let past = a_second_ago();
    // A live /16 under expired /20, /24 and /28, and an expired address.
    t.ban("198.51.0.0/16".parse::<IpNet>().unwrap());
    for expired in ["198.51.96.0/20", "198.51.100.0/24", "198.51.100.0/28"] {
        t.ban_with(expired.parse::<IpNet>().unwrap(), past);
    }
    let client = Ipv4Addr::new(198, 51, 100, 7);
    t.ban_with(client, past);
    t.expect(
        &v4(client).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4 in expired /32, /28, /24, /20 inside a live /16",
    );
    t.expect(
        &v4(Ipv4Addr::new(198, 51, 100, 9)).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4 in an expired /28 inside a live /16",
    );
    // An expired /25 inside a live /24, the shape of the report.
    t.ban("203.0.113.0/24".parse::<IpNet>().unwrap());
    t.ban_with("203.0.113.0/25".parse::<IpNet>().unwrap(), past);
    t.expect(
        &v4(Ipv4Addr::new(203, 0, 113, 5)).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4 in an expired /25 inside a live /24",
    );
    // When every enclosing prefix has expired, the client passes.
    t.ban_with("192.0.2.0/24".parse::<IpNet>().unwrap(), past);
    t.ban_with("192.0.2.0/26".parse::<IpNet>().unwrap(), past);
    t.expect(
        &v4(Ipv4Addr::new(192, 0, 2, 3)).build(),
        XDP_PASS,
        Counter::ExpiredPassed,
        "IPv4 in an expired /26 inside an expired /24",
    );
    // A live longer prefix inside an expired shorter one still drops.
    t.ban("192.0.2.64/26".parse::<IpNet>().unwrap());
    t.expect(
        &v4(Ipv4Addr::new(192, 0, 2, 65)).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4 in a live /26 inside an expired /24",
    );

    t.ban("2001:db8:7::/48".parse::<IpNet>().unwrap());
    t.ban_with("2001:db8:7:1::/64".parse::<IpNet>().unwrap(), past);
    t.ban_with("2001:db8:7:1::/120".parse::<IpNet>().unwrap(), past);
    t.expect(
        &v6("2001:db8:7:1::9".parse().unwrap()).build(),
        XDP_DROP,
        Counter::DroppedV6,
        "IPv6 in expired /120 and /64 inside a live /48",
    );
    t.ban_with("2001:db8:8::/48".parse::<IpNet>().unwrap(), past);
    t.ban_with("2001:db8:8:1::/64".parse::<IpNet>().unwrap(), past);
    t.expect(
        &v6("2001:db8:8:1::9".parse().unwrap()).build(),
        XDP_PASS,
        Counter::ExpiredPassed,
        "IPv6 in an expired /64 inside an expired /48",
    );
}

#[test]
fn every_prefix_length_is_walked() {
    if !require_root("every_prefix_length_is_walked") {
        return;
    }
    // The deepest nesting there can be: a live /0 under an expired prefix
    // of every other length, for both families.
    let mut t = Harness::new();
    let past = a_second_ago();
    let client_v4 = Ipv4Addr::new(203, 0, 113, 200);
    let client_v6: Ipv6Addr = "2001:db8:a:b:c:d:e:f".parse().unwrap();
    for len in 1..=32 {
        let net = ipnet::Ipv4Net::new(client_v4, len).unwrap().trunc();
        t.ban_with(IpNet::V4(net), past);
    }
    for len in 1..=128 {
        let net = ipnet::Ipv6Net::new(client_v6, len).unwrap().trunc();
        t.ban_with(IpNet::V6(net), past);
    }
    t.expect(
        &v4(client_v4).build(),
        XDP_PASS,
        Counter::ExpiredPassed,
        "IPv4 under 32 expired prefixes",
    );
    t.expect(
        &v6(client_v6).build(),
        XDP_PASS,
        Counter::ExpiredPassed,
        "IPv6 under 128 expired prefixes",
    );
    t.ban("0.0.0.0/0".parse::<IpNet>().unwrap());
    t.ban("::/0".parse::<IpNet>().unwrap());
    t.expect(
        &v4(client_v4).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4 under 32 expired prefixes and a live /0",
    );
    t.expect(
        &v6(client_v6).build(),
        XDP_DROP,
        Counter::DroppedV6,
        "IPv6 under 128 expired prefixes and a live /0",
    );
}

#[test]
fn removed_ban_passes() {
    if !require_root("removed_ban_passes") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    t.expect(
        &v4(BANNED_V4).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4, banned",
    );
    assert!(
        t.dataplane
            .remove(IpNet::from(IpAddr::V4(BANNED_V4)))
            .unwrap(),
        "the ban was there"
    );
    t.expect(
        &v4(BANNED_V4).build(),
        XDP_PASS,
        Counter::Passed,
        "IPv4 after its ban was removed",
    );
}

#[test]
fn bans_survive_a_reload_on_the_same_pin_dir() {
    if !require_root("bans_survive_a_reload_on_the_same_pin_dir") {
        return;
    }
    let pin = PinDir::new();
    let value = BanValue::new(
        spamwall::dataplane::monotonic_now_ns() + HOUR_NS,
        SOURCE_CLI,
        32,
        3,
    );
    let net = IpNet::from(IpAddr::V4(BANNED_V4));
    {
        let mut first = load(&pin);
        first.insert(net, value).unwrap();
        expect_verdict(
            &first,
            &v4(BANNED_V4).build(),
            XDP_DROP,
            Counter::DroppedV4,
            "first load",
        );
    }
    let second = load(&pin);
    let kept = second
        .get(net)
        .unwrap()
        .expect("the ban is still in the pinned map");
    // The first load's drop may already have reached the ban's counters
    // (each CPU adds its hits when the tick changes).
    assert_eq!(
        kept,
        value.with_hits_of(&kept),
        "the ban is unchanged in the pinned map"
    );
    assert!(kept.packets <= 1, "one drop counted at most: {kept:?}");
    let dropped_before = counters(&second).get(Counter::DroppedV4);
    assert_eq!(
        dropped_before, 1,
        "the pinned counters kept the first load's drop"
    );
    expect_verdict(
        &second,
        &v4(BANNED_V4).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "after reload",
    );
}

/// `Harness` keeps its pin guard alive; this pins the drop order the
/// cleanup relies on (dataplane first).
#[test]
fn pin_dir_is_removed_after_the_test() {
    if !require_root("pin_dir_is_removed_after_the_test") {
        return;
    }
    let t = Harness::new();
    let path = t.pin.path().to_owned();
    assert!(
        path.join(xdp_common::MAP_BANS_V4).exists(),
        "maps are pinned in {}",
        path.display()
    );
    drop(t);
    assert!(!path.exists(), "{} is removed on drop", path.display());
}
