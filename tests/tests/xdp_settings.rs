//! The settings the XDP program reads from its own global data: which
//! prefix tries it may skip, and that a prefix ban is enforced from the
//! moment it is written, also by a program loaded later on the same pins.
//!
//! Needs root; run serially: `cargo test -p spamwall-tests --test
//! xdp_settings -- --test-threads=1`.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use spamwall::dataplane::Dataplane;
use spamwall_tests::{
    PinDir, TEST_CAPACITIES, XDP_DROP, XDP_PASS,
    frames::{DST_V4, DST_V6, FrameBuilder},
    require_root,
};
use xdp_common::{BanValue, SOURCE_CLI};

const INSIDE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);
const INSIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x77);

fn load(pin: &PinDir) -> Dataplane {
    Dataplane::load(pin.path(), TEST_CAPACITIES)
        .unwrap_or_else(|e| panic!("loading the dataplane in {}: {e}", pin.path().display()))
}

fn ban(dataplane: &mut Dataplane, net: &str) {
    let net: IpNet = net.parse().unwrap();
    let expires_ns = spamwall::dataplane::monotonic_now_ns() + 3_600 * 1_000_000_000;
    let value = BanValue::new(expires_ns, SOURCE_CLI, net.prefix_len(), 1);
    dataplane
        .insert(net, value)
        .unwrap_or_else(|e| panic!("banning {net}: {e}"));
}

fn unban(dataplane: &mut Dataplane, net: &str) {
    let net: IpNet = net.parse().unwrap();
    assert!(
        dataplane
            .remove(net)
            .unwrap_or_else(|e| panic!("removing {net}: {e}")),
        "{net} was in the map"
    );
}

fn action(dataplane: &Dataplane, frame: &[u8]) -> u32 {
    dataplane
        .test_run(frame, 1)
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}"))
        .action
}

fn v4_frame() -> Vec<u8> {
    FrameBuilder::ipv4(INSIDE_V4, DST_V4).build()
}

fn v6_frame() -> Vec<u8> {
    FrameBuilder::ipv6(INSIDE_V6, DST_V6).build()
}

/// (IPv4 trie skipped, IPv6 trie skipped).
fn skipped(dataplane: &Dataplane) -> (bool, bool) {
    let settings = dataplane.settings();
    (settings.no_prefix_v4 != 0, settings.no_prefix_v6 != 0)
}

#[test]
fn a_prefix_is_enforced_from_its_insert_and_its_trie_skipped_once_empty() {
    if !require_root("a_prefix_is_enforced_from_its_insert_and_its_trie_skipped_once_empty") {
        return;
    }
    let pin = PinDir::new();
    let mut dataplane = load(&pin);
    assert_eq!(
        skipped(&dataplane),
        (true, true),
        "fresh pins: both tries empty"
    );

    ban(&mut dataplane, "192.0.2.0/24");
    assert_eq!(skipped(&dataplane), (false, true));
    assert_eq!(action(&dataplane, &v4_frame()), XDP_DROP, "inside the /24");
    ban(&mut dataplane, "192.0.0.0/16");
    unban(&mut dataplane, "192.0.2.0/24");
    assert_eq!(skipped(&dataplane), (false, true), "the /16 is left");
    assert_eq!(action(&dataplane, &v4_frame()), XDP_DROP, "inside the /16");
    unban(&mut dataplane, "192.0.0.0/16");
    assert_eq!(skipped(&dataplane), (true, true), "no IPv4 prefix left");
    assert_eq!(action(&dataplane, &v4_frame()), XDP_PASS, "no ban left");

    ban(&mut dataplane, "2001:db8::/64");
    assert_eq!(skipped(&dataplane), (true, false));
    assert_eq!(action(&dataplane, &v6_frame()), XDP_DROP, "inside the /64");
    // Removing a prefix that is not there changes nothing.
    assert!(
        !dataplane
            .remove("2001:db8:1::/64".parse().unwrap())
            .unwrap()
    );
    assert_eq!(skipped(&dataplane), (true, false));
    unban(&mut dataplane, "2001:db8::/64");
    assert_eq!(skipped(&dataplane), (true, true), "no IPv6 prefix left");
    assert_eq!(action(&dataplane, &v6_frame()), XDP_PASS, "no ban left");

    // Single addresses never touch the tries.
    ban(&mut dataplane, "192.0.2.77/32");
    ban(&mut dataplane, "2001:db8::77/128");
    assert_eq!(skipped(&dataplane), (true, true));
    assert_eq!(action(&dataplane, &v4_frame()), XDP_DROP);
    assert_eq!(action(&dataplane, &v6_frame()), XDP_DROP);
}

#[test]
fn a_program_loaded_on_pinned_prefixes_consults_their_trie() {
    if !require_root("a_program_loaded_on_pinned_prefixes_consults_their_trie") {
        return;
    }
    let pin = PinDir::new();
    let mut first = load(&pin);
    ban(&mut first, "192.0.2.0/24");
    // The first program stays loaded, as a pinned program does while a
    // new daemon starts; the second finds the prefix in the pinned trie.
    let second = load(&pin);
    assert_eq!(skipped(&second), (false, true));
    assert_eq!(action(&second, &v4_frame()), XDP_DROP, "inside the /24");
    assert_eq!(action(&second, &v6_frame()), XDP_PASS);
    // Each program keeps the settings it was given.
    assert_eq!(action(&first, &v4_frame()), XDP_DROP);
    drop(second);

    first.set_ports(&[25]).unwrap();
    assert_eq!(first.settings().ports_only, 1);
    let third = load(&pin);
    assert_eq!(
        third.settings().ports_only,
        0,
        "a new program reads no port until told"
    );
    let to_port = |port| FrameBuilder::ipv4(INSIDE_V4, DST_V4).tcp(port).build();
    assert_eq!(
        action(&first, &to_port(80)),
        XDP_PASS,
        "port 80 is out of scope"
    );
    assert_eq!(
        action(&third, &to_port(80)),
        XDP_DROP,
        "every port until told"
    );
}
