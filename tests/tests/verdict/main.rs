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
        self, BANNED_V4, BANNED_V6, CLEAN_V4, CLEAN_V6, DST_V4, DST_V6, ETH_HLEN, ETH_P_IP,
        ETH_P_IPV6, ETH_P_LOCAL_EXPERIMENTAL, Extension, FrameBuilder, IPPROTO_ESP, IPPROTO_GRE,
        IPV4_HLEN, IPV6_NONXT,
    },
    require_root,
};
use xdp_common::{BanValue, Counter, SOURCE_CLI};

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

mod lifecycle;
mod parsing;
mod ports;
