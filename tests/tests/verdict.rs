//! Verdicts of the XDP program on crafted frames, through
//! `BPF_PROG_TEST_RUN` against the real maps.
//!
//! Each test loads its own dataplane in its own pin directory and checks,
//! besides the action, that exactly the expected counter moved by one.
//! Needs root; run serially: `cargo test -p spamwall-tests --test verdict
//! -- --test-threads=1`.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use spamwall::bans::{BanScope, PortScopes};
use spamwall::dataplane::{Dataplane, DataplaneError};
use spamwall_tests::{
    PinDir, TEST_CAPACITIES, XDP_DROP, XDP_PASS,
    frames::{
        self, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, ETH_P_LOCAL_EXPERIMENTAL, Extension, FrameBuilder,
        IPPROTO_ESP, IPPROTO_GRE, IPV4_HLEN, IPV6_NONXT,
    },
    require_root,
};
use xdp_common::{BanValue, Counter, SOURCE_CLI};

const BANNED_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLEAN_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const DST_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const BANNED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const CLEAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const DST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xff);

const HOUR_NS: u64 = 3_600 * 1_000_000_000;

/// A dataplane in its own pin directory; fields drop in order, so the
/// program and maps are closed before the pins are removed.
struct Harness {
    dataplane: Dataplane,
    pin: PinDir,
}

impl Harness {
    fn new() -> Self {
        let pin = PinDir::new();
        let dataplane = load(&pin);
        Self { dataplane, pin }
    }

    /// Bans `net` for an hour.
    fn ban(&mut self, net: impl Banned) {
        let expires_ns = spamwall::dataplane::monotonic_now_ns() + HOUR_NS;
        self.ban_with(net, expires_ns);
    }

    fn ban_with(&mut self, net: impl Banned, expires_ns: u64) {
        let net = net.net();
        let value = BanValue::new(expires_ns, SOURCE_CLI, net.prefix_len(), 1);
        self.dataplane
            .insert(net, value)
            .unwrap_or_else(|e| panic!("banning {net}: {e}"));
    }

    /// Bans `net` for an hour in the scopes `scopes` (one bit each).
    fn ban_in(&mut self, net: impl Banned, scopes: u8) {
        let net = net.net();
        let expires_ns = spamwall::dataplane::monotonic_now_ns() + HOUR_NS;
        let value = BanValue::new(expires_ns, SOURCE_CLI, net.prefix_len(), 1).with_scopes(scopes);
        self.dataplane
            .insert(net, value)
            .unwrap_or_else(|e| panic!("banning {net}: {e}"));
    }

    /// Writes the port scopes the daemon would for `xdp.ports` and the
    /// rules' own `ports`; returns them to compute ban masks.
    fn set_scopes(&mut self, default: &[u16], named: &[BanScope]) -> PortScopes {
        let scopes = PortScopes::new(default, named).unwrap();
        let (table, all_traffic) = scopes.kernel_table();
        self.dataplane
            .set_port_scopes(&table, all_traffic)
            .unwrap_or_else(|e| panic!("set_port_scopes: {e}"));
        scopes
    }

    fn set_ports(&mut self, ports: &[u16]) {
        self.dataplane
            .set_ports(ports)
            .unwrap_or_else(|e| panic!("set_ports({ports:?}): {e}"));
    }

    /// Runs `frame` once and checks the action and that `counter`, and only
    /// it, moved by one.
    fn expect(&self, frame: &[u8], action: u32, counter: Counter, what: &str) {
        expect_verdict(&self.dataplane, frame, action, counter, what);
    }
}

/// What a test can ban: an address (a host route) or a prefix.
trait Banned {
    fn net(self) -> IpNet;
}

impl Banned for Ipv4Addr {
    fn net(self) -> IpNet {
        IpNet::from(IpAddr::V4(self))
    }
}

impl Banned for Ipv6Addr {
    fn net(self) -> IpNet {
        IpNet::from(IpAddr::V6(self))
    }
}

impl Banned for IpNet {
    fn net(self) -> IpNet {
        self
    }
}

fn load(pin: &PinDir) -> Dataplane {
    Dataplane::load(pin.path(), TEST_CAPACITIES)
        .unwrap_or_else(|e| panic!("loading the dataplane in {}: {e}", pin.path().display()))
}

fn counters(dataplane: &Dataplane) -> spamwall::dataplane::PacketCounters {
    dataplane
        .counters()
        .unwrap_or_else(|e| panic!("reading counters: {e}"))
}

fn expect_verdict(dataplane: &Dataplane, frame: &[u8], action: u32, counter: Counter, what: &str) {
    let before = counters(dataplane);
    let run = dataplane
        .test_run(frame, 1)
        .unwrap_or_else(|e| panic!("{what}: BPF_PROG_TEST_RUN on {} bytes: {e}", frame.len()));
    let after = counters(dataplane);
    assert_eq!(
        run.action, action,
        "{what}: action {} (1 = DROP, 2 = PASS), expected {action}; frame {frame:02x?}",
        run.action
    );
    for other in Counter::ALL {
        let moved = after.get(other) - before.get(other);
        let wanted = u64::from(other == counter);
        assert_eq!(
            moved, wanted,
            "{what}: counter {other:?} moved by {moved}, expected {wanted} (the packet should count as {counter:?})"
        );
    }
}

fn v4(src: Ipv4Addr) -> FrameBuilder {
    FrameBuilder::ipv4(src, DST_V4)
}

fn v6(src: Ipv6Addr) -> FrameBuilder {
    FrameBuilder::ipv6(src, DST_V6)
}

#[test]
fn ipv4_banned_source_is_dropped() {
    if !require_root("ipv4_banned_source_is_dropped") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    t.expect(
        &v4(BANNED_V4).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4 TCP from a banned source",
    );
    t.expect(
        &v4(BANNED_V4).icmp().build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4 ICMP from a banned source",
    );
}

#[test]
fn ipv4_clean_source_passes() {
    if !require_root("ipv4_clean_source_passes") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    t.expect(
        &v4(CLEAN_V4).build(),
        XDP_PASS,
        Counter::Passed,
        "IPv4 from a clean source",
    );
    // The destination is never what is matched.
    t.expect(
        &FrameBuilder::ipv4(CLEAN_V4, BANNED_V4).build(),
        XDP_PASS,
        Counter::Passed,
        "IPv4 to a banned address",
    );
}

#[test]
fn ipv6_banned_source_is_dropped() {
    if !require_root("ipv6_banned_source_is_dropped") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V6);
    t.expect(
        &v6(BANNED_V6).build(),
        XDP_DROP,
        Counter::DroppedV6,
        "IPv6 TCP from a banned source",
    );
    t.expect(
        &v6(BANNED_V6).icmp().build(),
        XDP_DROP,
        Counter::DroppedV6,
        "ICMPv6 from a banned source",
    );
}

#[test]
fn ipv6_clean_source_passes() {
    if !require_root("ipv6_clean_source_passes") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V6);
    t.expect(
        &v6(CLEAN_V6).build(),
        XDP_PASS,
        Counter::Passed,
        "IPv6 from a clean source",
    );
    t.expect(
        &FrameBuilder::ipv6(CLEAN_V6, BANNED_V6).build(),
        XDP_PASS,
        Counter::Passed,
        "IPv6 to a banned address",
    );
}

#[test]
fn vlan_8021q_banned_source_is_dropped() {
    if !require_root("vlan_8021q_banned_source_is_dropped") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    t.ban(BANNED_V6);
    t.expect(
        &v4(BANNED_V4).vlan(100).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4 in 802.1Q, banned",
    );
    t.expect(
        &v6(BANNED_V6).vlan(100).build(),
        XDP_DROP,
        Counter::DroppedV6,
        "IPv6 in 802.1Q, banned",
    );
    t.expect(
        &v4(CLEAN_V4).vlan(100).build(),
        XDP_PASS,
        Counter::Passed,
        "IPv4 in 802.1Q, clean",
    );
}

#[test]
fn qinq_banned_source_is_dropped() {
    if !require_root("qinq_banned_source_is_dropped") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    t.ban(BANNED_V6);
    t.expect(
        &v4(BANNED_V4).qinq(10, 20).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4 in QinQ, banned",
    );
    t.expect(
        &v6(BANNED_V6).qinq(10, 20).build(),
        XDP_DROP,
        Counter::DroppedV6,
        "IPv6 in QinQ, banned",
    );
    t.expect(
        &v4(CLEAN_V4).qinq(10, 20).build(),
        XDP_PASS,
        Counter::Passed,
        "IPv4 in QinQ, clean",
    );
    // Two 802.1Q tags are parsed as well.
    let double_q = v4(BANNED_V4).vlan(10).vlan(20).build();
    t.expect(
        &double_q,
        XDP_DROP,
        Counter::DroppedV4,
        "IPv4 in two 802.1Q tags, banned",
    );
}

#[test]
fn three_vlan_tags_are_not_parsed() {
    if !require_root("three_vlan_tags_are_not_parsed") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    let frame = v4(BANNED_V4).qinq(10, 20).vlan(30).build();
    t.expect(
        &frame,
        XDP_PASS,
        Counter::NonIpPassed,
        "IPv4 behind three VLAN tags",
    );
}

#[test]
fn ipv4_with_options_is_matched() {
    if !require_root("ipv4_with_options_is_matched") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    for ihl in 6..=15 {
        let what = format!("IPv4 with IHL {ihl}, banned");
        t.expect(
            &v4(BANNED_V4).ihl(ihl).build(),
            XDP_DROP,
            Counter::DroppedV4,
            &what,
        );
        let what = format!("IPv4 with IHL {ihl} in QinQ, banned");
        t.expect(
            &v4(BANNED_V4).ihl(ihl).qinq(1, 2).build(),
            XDP_DROP,
            Counter::DroppedV4,
            &what,
        );
    }
    t.expect(
        &v4(CLEAN_V4).ihl(15).build(),
        XDP_PASS,
        Counter::Passed,
        "IPv4 with IHL 15, clean",
    );
}

#[test]
fn ipv4_short_ihl_is_malformed() {
    if !require_root("ipv4_short_ihl_is_malformed") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    for ihl in 0..5 {
        let what = format!("IPv4 with IHL {ihl} from a banned source");
        t.expect(
            &v4(BANNED_V4).ihl(ihl).build(),
            XDP_PASS,
            Counter::MalformedPassed,
            &what,
        );
    }
}

#[test]
fn ip_version_must_match_the_ethertype() {
    if !require_root("ip_version_must_match_the_ethertype") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    t.ban(BANNED_V6);
    let mut frame = v4(BANNED_V4).build();
    frame[ETH_HLEN] = 0x65; // version 6, IHL 5
    t.expect(
        &frame,
        XDP_PASS,
        Counter::MalformedPassed,
        "IPv4 EtherType with version 6",
    );
    let mut frame = v6(BANNED_V6).build();
    frame[ETH_HLEN] = 0x40;
    t.expect(
        &frame,
        XDP_PASS,
        Counter::MalformedPassed,
        "IPv6 EtherType with version 4",
    );
}

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
fn port_scope_limits_enforcement() {
    if !require_root("port_scope_limits_enforcement") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    t.ban(BANNED_V6);
    t.set_ports(&[25]);
    t.expect(
        &v4(BANNED_V4).tcp(25).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "banned, TCP to 25",
    );
    t.expect(
        &v4(BANNED_V4).tcp(80).build(),
        XDP_PASS,
        Counter::OutOfScopePassed,
        "banned, TCP to 80",
    );
    t.expect(
        &v4(BANNED_V4).udp(25).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "banned, UDP to 25",
    );
    t.expect(
        &v4(BANNED_V4).icmp().build(),
        XDP_PASS,
        Counter::OutOfScopePassed,
        "banned, ICMP",
    );
    let first_fragment = v4(BANNED_V4).tcp(25).more_fragments().build();
    t.expect(
        &first_fragment,
        XDP_DROP,
        Counter::DroppedV4,
        "banned, first IPv4 fragment to 25",
    );
    let options = v4(BANNED_V4).ihl(15).tcp(25).build();
    t.expect(
        &options,
        XDP_DROP,
        Counter::DroppedV4,
        "banned, IHL 15, TCP to 25",
    );
    t.expect(
        &v4(BANNED_V4).vlan(5).tcp(25).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "banned, 802.1Q, TCP to 25",
    );
    t.expect(
        &v4(CLEAN_V4).tcp(25).build(),
        XDP_PASS,
        Counter::Passed,
        "clean, TCP to 25",
    );
    t.expect(
        &v6(BANNED_V6).tcp(25).build(),
        XDP_DROP,
        Counter::DroppedV6,
        "IPv6 banned, TCP to 25",
    );
    t.expect(
        &v6(BANNED_V6).udp(25).build(),
        XDP_DROP,
        Counter::DroppedV6,
        "IPv6 banned, UDP to 25",
    );
    t.expect(
        &v6(BANNED_V6).tcp(80).build(),
        XDP_PASS,
        Counter::OutOfScopePassed,
        "IPv6 banned, TCP to 80",
    );
    t.expect(
        &v6(BANNED_V6).icmp().build(),
        XDP_PASS,
        Counter::OutOfScopePassed,
        "IPv6 banned, ICMPv6",
    );
}

/// Frames whose destination port cannot be established, each with a
/// description: a banned source fails closed on them, a clean one passes.
fn portless_frames(v4_src: Ipv4Addr, v6_src: Ipv6Addr) -> Vec<(Vec<u8>, &'static str)> {
    let hop = Extension::HOP_BY_HOP;
    let mut too_long = v6(v6_src);
    for _ in 0..9 {
        too_long = too_long.extension(Extension::DESTINATION_OPTIONS);
    }
    let dstopts_tcp = v6(v6_src).extension(hop).tcp(25).build();
    vec![
        (
            v4(v4_src).tcp(25).fragment_offset(185).build(),
            "IPv4 later fragment",
        ),
        (
            frames::truncated(&v4(v4_src).tcp(25).build(), ETH_HLEN + IPV4_HLEN + 3),
            "IPv4 TCP header cut before the port",
        ),
        (
            v4(v4_src).protocol(IPPROTO_GRE).build(),
            "IPv4 GRE (a tunnel's inner packet has a port)",
        ),
        (
            v6(v6_src)
                .extension(Extension::Fragment {
                    offset: 185,
                    more: false,
                })
                .tcp(25)
                .build(),
            "IPv6 later fragment",
        ),
        (
            too_long.tcp(25).build(),
            "IPv6 chain of nine extension headers",
        ),
        (
            v6(v6_src)
                .extension(Extension::DestinationOptions { units: 200 })
                .tcp(25)
                .build(),
            "IPv6 extension header reaching past the walk's limit",
        ),
        (
            frames::truncated(&dstopts_tcp, dstopts_tcp.len() - 20 - 4),
            "IPv6 extension header cut short",
        ),
        (
            v6(v6_src).protocol(IPPROTO_ESP).build(),
            "IPv6 ESP (encrypted, no port)",
        ),
        (
            v6(v6_src).extension(hop).protocol(IPV6_NONXT).build(),
            "IPv6 hop-by-hop then No Next Header",
        ),
        (
            v6(v6_src).protocol(253).build(),
            "IPv6 experimental next header 253",
        ),
    ]
}

#[test]
fn port_scope_fails_closed_for_banned_sources_only() {
    if !require_root("port_scope_fails_closed_for_banned_sources_only") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    t.ban(BANNED_V6);
    t.set_ports(&[25]);
    for (frame, what) in portless_frames(BANNED_V4, BANNED_V6) {
        let counter = if frame[12..14] == ETH_P_IP.to_be_bytes() {
            Counter::DroppedV4
        } else {
            Counter::DroppedV6
        };
        t.expect(&frame, XDP_DROP, counter, &format!("banned, {what}"));
    }
    for (frame, what) in portless_frames(CLEAN_V4, CLEAN_V6) {
        t.expect(&frame, XDP_PASS, Counter::Passed, &format!("clean, {what}"));
    }
}

#[test]
fn ipv6_extension_headers_are_walked_to_the_port() {
    if !require_root("ipv6_extension_headers_are_walked_to_the_port") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V6);
    t.set_ports(&[25]);
    let every_kind = [
        Extension::HOP_BY_HOP,
        Extension::Routing,
        Extension::FIRST_FRAGMENT,
        Extension::DESTINATION_OPTIONS,
        Extension::Authentication,
    ];
    let mut chains: Vec<(Vec<Extension>, String)> = every_kind
        .iter()
        .map(|&e| (vec![e], format!("{e:?}")))
        .collect();
    chains.push((every_kind.to_vec(), "all five kinds in a row".to_owned()));
    chains.push((
        vec![Extension::DESTINATION_OPTIONS; 8],
        "eight destination options headers, the most walked".to_owned(),
    ));
    chains.push((
        vec![
            Extension::HopByHop { units: 20 },
            Extension::DestinationOptions { units: 40 },
        ],
        "long option headers (496 bytes)".to_owned(),
    ));
    for (chain, what) in chains {
        let build = |src: Ipv6Addr, port: u16, udp: bool| {
            let mut frame = v6(src);
            for &extension in &chain {
                frame = frame.extension(extension);
            }
            if udp {
                frame.udp(port)
            } else {
                frame.tcp(port)
            }
            .build()
        };
        t.expect(
            &build(BANNED_V6, 25, false),
            XDP_DROP,
            Counter::DroppedV6,
            &format!("banned, {what}, TCP to 25"),
        );
        t.expect(
            &build(BANNED_V6, 25, true),
            XDP_DROP,
            Counter::DroppedV6,
            &format!("banned, {what}, UDP to 25"),
        );
        t.expect(
            &build(BANNED_V6, 80, false),
            XDP_PASS,
            Counter::OutOfScopePassed,
            &format!("banned, {what}, TCP to 80"),
        );
        t.expect(
            &build(CLEAN_V6, 25, false),
            XDP_PASS,
            Counter::Passed,
            &format!("clean, {what}, TCP to 25"),
        );
    }
    let icmp = v6(BANNED_V6)
        .extension(Extension::DESTINATION_OPTIONS)
        .icmp()
        .build();
    t.expect(
        &icmp,
        XDP_PASS,
        Counter::OutOfScopePassed,
        "banned, destination options then ICMPv6",
    );
    let vlan = v6(BANNED_V6)
        .qinq(3, 4)
        .extension(Extension::HOP_BY_HOP)
        .tcp(25)
        .build();
    t.expect(
        &vlan,
        XDP_DROP,
        Counter::DroppedV6,
        "banned, QinQ, hop-by-hop, TCP to 25",
    );
}

#[test]
fn unscoped_extension_headers_change_nothing() {
    if !require_root("unscoped_extension_headers_change_nothing") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V6);
    for (frame, what) in portless_frames(CLEAN_V4, BANNED_V6)
        .into_iter()
        .filter(|(frame, _)| frame[12..14] == ETH_P_IPV6.to_be_bytes())
    {
        t.expect(
            &frame,
            XDP_DROP,
            Counter::DroppedV6,
            &format!("no port scope, banned, {what}"),
        );
    }
}

#[test]
fn port_scope_with_several_ports() {
    if !require_root("port_scope_with_several_ports") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    t.set_ports(&[25, 465, 587, 65_535]);
    for port in [25, 465, 587, 65_535] {
        let what = format!("banned, TCP to enforced port {port}");
        t.expect(
            &v4(BANNED_V4).tcp(port).build(),
            XDP_DROP,
            Counter::DroppedV4,
            &what,
        );
    }
    for port in [0, 24, 26, 64, 143, 65_534] {
        let what = format!("banned, TCP to port {port}, not enforced");
        t.expect(
            &v4(BANNED_V4).tcp(port).build(),
            XDP_PASS,
            Counter::OutOfScopePassed,
            &what,
        );
    }
}

#[test]
fn clearing_ports_enforces_all_traffic() {
    if !require_root("clearing_ports_enforces_all_traffic") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    t.ban(BANNED_V6);
    t.set_ports(&[25]);
    t.expect(
        &v4(BANNED_V4).tcp(80).build(),
        XDP_PASS,
        Counter::OutOfScopePassed,
        "scoped, TCP to 80",
    );
    t.set_ports(&[]);
    t.expect(
        &v4(BANNED_V4).tcp(80).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "unscoped, TCP to 80",
    );
    t.expect(
        &v4(BANNED_V4).icmp().build(),
        XDP_DROP,
        Counter::DroppedV4,
        "unscoped, ICMP",
    );
    let later_fragment = v4(BANNED_V4).fragment_offset(185).build();
    t.expect(
        &later_fragment,
        XDP_DROP,
        Counter::DroppedV4,
        "unscoped, non-first fragment",
    );
    t.expect(
        &v6(BANNED_V6).tcp(80).build(),
        XDP_DROP,
        Counter::DroppedV6,
        "unscoped, IPv6 TCP to 80",
    );
}

#[test]
fn frame_shorter_than_ethernet_is_refused_by_the_kernel() {
    if !require_root("frame_shorter_than_ethernet_is_refused_by_the_kernel") {
        return;
    }
    let t = Harness::new();
    let frame = frames::truncated(&v4(BANNED_V4).build(), ETH_HLEN - 1);
    let before = counters(&t.dataplane);
    match t.dataplane.test_run(&frame, 1) {
        Err(DataplaneError::TestRun { source }) => assert_eq!(
            source.raw_os_error(),
            Some(libc::EINVAL),
            "a 13-byte frame: expected EINVAL, got {source}"
        ),
        other => panic!("a 13-byte frame: expected the kernel to refuse it, got {other:?}"),
    }
    assert_eq!(
        counters(&t.dataplane),
        before,
        "a refused frame moves no counter"
    );
}

#[test]
fn truncated_frames_pass_as_malformed() {
    if !require_root("truncated_frames_pass_as_malformed") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    t.ban(BANNED_V6);
    let cases = [
        (
            frames::ethernet(ETH_P_IP, &[]),
            "Ethernet header only, IPv4 EtherType",
        ),
        (
            frames::ethernet(ETH_P_IPV6, &[]),
            "Ethernet header only, IPv6 EtherType",
        ),
        // The source address is complete, the header is not.
        (
            frames::truncated(&v4(BANNED_V4).build(), ETH_HLEN + 16),
            "IPv4 header cut at 16 bytes",
        ),
        (
            frames::truncated(&v4(BANNED_V4).build(), ETH_HLEN + 1),
            "IPv4 header cut at 1 byte",
        ),
        (
            frames::truncated(&v4(BANNED_V4).ihl(15).build(), ETH_HLEN + 40),
            "IPv4 options cut short",
        ),
        (
            frames::truncated(&v6(BANNED_V6).build(), ETH_HLEN + 30),
            "IPv6 header cut at 30 bytes",
        ),
        (
            frames::truncated(&v6(BANNED_V6).build(), ETH_HLEN + 39),
            "IPv6 header cut at 39 bytes",
        ),
        (
            frames::truncated(&v4(BANNED_V4).vlan(1).build(), ETH_HLEN + 2),
            "802.1Q tag cut before the EtherType",
        ),
        (
            frames::truncated(&v4(BANNED_V4).vlan(1).build(), ETH_HLEN + 4),
            "802.1Q tag with nothing after it",
        ),
        (
            frames::truncated(&v4(BANNED_V4).qinq(1, 2).build(), ETH_HLEN + 6),
            "QinQ inner tag cut before the EtherType",
        ),
        (
            frames::truncated(&v4(BANNED_V4).qinq(1, 2).build(), ETH_HLEN + 8 + 12),
            "IPv4 in QinQ cut at 12 bytes",
        ),
    ];
    for (frame, what) in &cases {
        t.expect(frame, XDP_PASS, Counter::MalformedPassed, what);
    }
}

#[test]
fn arp_is_not_ip() {
    if !require_root("arp_is_not_ip") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    t.expect(
        &frames::arp_request(BANNED_V4, DST_V4),
        XDP_PASS,
        Counter::NonIpPassed,
        "ARP from a banned address",
    );
}

#[test]
fn unknown_ethertype_is_not_ip() {
    if !require_root("unknown_ethertype_is_not_ip") {
        return;
    }
    let mut t = Harness::new();
    t.ban(BANNED_V4);
    // An IPv4 packet from a banned source behind a foreign EtherType.
    let mut frame = v4(BANNED_V4).build();
    frame[12..14].copy_from_slice(&ETH_P_LOCAL_EXPERIMENTAL.to_be_bytes());
    t.expect(&frame, XDP_PASS, Counter::NonIpPassed, "EtherType 0x88B5");
    t.expect(
        &frames::ethernet(0x0000, &[0; 46]),
        XDP_PASS,
        Counter::NonIpPassed,
        "EtherType 0 (802.3 length)",
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

/// `xdp.ports` is 25/465/587; a DNSBL rule bans from 25 only, a SASL rule
/// from the submission ports and IMAPS.
fn mail_scopes(t: &mut Harness) -> (PortScopes, BanScope, BanScope) {
    let dnsbl = BanScope::from_ports(&[25]);
    let sasl = BanScope::from_ports(&[465, 587, 993]);
    let scopes = t.set_scopes(&[25, 465, 587], &[dnsbl.clone(), sasl.clone()]);
    (scopes, dnsbl, sasl)
}

#[test]
fn each_ban_holds_on_its_own_ports() {
    if !require_root("each_ban_holds_on_its_own_ports") {
        return;
    }
    let mut t = Harness::new();
    let (scopes, dnsbl, sasl) = mail_scopes(&mut t);
    let dnsbl_v4 = Ipv4Addr::new(192, 0, 2, 10);
    let sasl_v4 = Ipv4Addr::new(192, 0, 2, 11);
    // Written with scopes 0, as before bans had their own: xdp.ports.
    t.ban(BANNED_V4);
    t.ban_in(dnsbl_v4, scopes.mask(&dnsbl));
    t.ban_in(sasl_v4, scopes.mask(&sasl));
    t.ban_in(BANNED_V6, scopes.mask(&sasl));
    let cases: [(Ipv4Addr, u16, bool); 12] = [
        (BANNED_V4, 25, true),
        (BANNED_V4, 587, true),
        (BANNED_V4, 993, false),
        (dnsbl_v4, 25, true),
        (dnsbl_v4, 587, false),
        (dnsbl_v4, 993, false),
        (sasl_v4, 25, false),
        (sasl_v4, 465, true),
        (sasl_v4, 993, true),
        (sasl_v4, 80, false),
        (CLEAN_V4, 25, false),
        (CLEAN_V4, 993, false),
    ];
    for (source, port, dropped) in cases {
        let what = format!("{source} to TCP {port}");
        let (action, counter) = match (dropped, source == CLEAN_V4) {
            (true, _) => (XDP_DROP, Counter::DroppedV4),
            (false, true) => (XDP_PASS, Counter::Passed),
            (false, false) => (XDP_PASS, Counter::OutOfScopePassed),
        };
        t.expect(&v4(source).tcp(port).build(), action, counter, &what);
    }
    t.expect(
        &v4(sasl_v4).udp(993).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "UDP to a port of the ban's scope",
    );
    // No port to go by: every scope holds, the banned source fails closed.
    t.expect(
        &v4(dnsbl_v4).fragment_offset(185).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "later fragment of a source banned from port 25",
    );
    t.expect(
        &v4(dnsbl_v4).icmp().build(),
        XDP_PASS,
        Counter::OutOfScopePassed,
        "ICMP from a source banned from port 25",
    );
    t.expect(
        &v6(BANNED_V6).tcp(993).build(),
        XDP_DROP,
        Counter::DroppedV6,
        "IPv6 to a port of the ban's scope",
    );
    t.expect(
        &v6(BANNED_V6).tcp(25).build(),
        XDP_PASS,
        Counter::OutOfScopePassed,
        "IPv6 to a port outside the ban's scope",
    );
}

#[test]
fn an_all_traffic_scope_drops_every_packet_of_its_bans_only() {
    if !require_root("an_all_traffic_scope_drops_every_packet_of_its_bans_only") {
        return;
    }
    let mut t = Harness::new();
    let scopes = t.set_scopes(&[25], &[BanScope::All]);
    t.ban(BANNED_V4);
    let everywhere = Ipv4Addr::new(192, 0, 2, 20);
    t.ban_in(everywhere, scopes.mask(&BanScope::All));
    t.expect(
        &v4(everywhere).tcp(80).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "all traffic, TCP 80",
    );
    t.expect(
        &v4(everywhere).icmp().build(),
        XDP_DROP,
        Counter::DroppedV4,
        "all traffic, ICMP",
    );
    t.expect(
        &v4(BANNED_V4).tcp(80).build(),
        XDP_PASS,
        Counter::OutOfScopePassed,
        "xdp.ports only, TCP 80",
    );
    t.expect(
        &v4(BANNED_V4).tcp(25).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "xdp.ports only, TCP 25",
    );
}

#[test]
fn a_prefix_scoped_to_other_ports_does_not_hide_the_live_prefix_around_it() {
    if !require_root("a_prefix_scoped_to_other_ports_does_not_hide_the_live_prefix_around_it") {
        return;
    }
    let mut t = Harness::new();
    let (scopes, dnsbl, sasl) = mail_scopes(&mut t);
    let outer: IpNet = "203.0.113.0/24".parse().unwrap();
    let inner: IpNet = "203.0.113.0/25".parse().unwrap();
    t.ban_in(outer, scopes.mask(&sasl));
    t.ban_in(inner, scopes.mask(&dnsbl));
    let client = Ipv4Addr::new(203, 0, 113, 7);
    t.expect(
        &v4(client).tcp(25).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "the /25's port",
    );
    t.expect(
        &v4(client).tcp(587).build(),
        XDP_DROP,
        Counter::DroppedV4,
        "the /24's port",
    );
    t.expect(
        &v4(client).tcp(80).build(),
        XDP_PASS,
        Counter::OutOfScopePassed,
        "neither's port",
    );
}
