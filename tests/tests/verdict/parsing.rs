//! What the parser takes from a frame: Ethernet, VLAN tags, IPv4 with
//! options, IPv6; and what it passes untouched: frames cut short,
//! malformed headers, anything that is not IP.

use super::*;

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
