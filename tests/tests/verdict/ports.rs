//! Port scopes: a ban holds on the ports its scope names, a port that
//! cannot be known falls in every scope (banned sources fail closed),
//! IPv6 extension headers are walked to the port.

use super::*;

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
