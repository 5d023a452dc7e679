//! Ethernet frames for `BPF_PROG_TEST_RUN`.
//!
//! [`FrameBuilder`] writes Ethernet (optionally VLAN-tagged), IPv4 or IPv6,
//! and a TCP, UDP or ICMP header. Length fields are right (IPv4 total
//! length, IPv6 payload length, UDP length) and the IPv4 header checksum is
//! computed; L4 checksums are left zero, which the XDP program never reads.
//! [`arp_request`], [`ethernet`] and [`truncated`] cover the frames that are
//! not IP or are cut short.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use spamwall_tests::frames::FrameBuilder;
//!
//! let frame = FrameBuilder::ipv4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 1))
//!     .vlan(100)
//!     .udp(25)
//!     .build();
//! assert_eq!(frame.len(), 14 + 4 + 20 + 8);
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of an untagged Ethernet header.
pub const ETH_HLEN: usize = 14;
/// Length of one VLAN tag.
pub const VLAN_HLEN: usize = 4;
/// Length of an IPv4 header without options.
pub const IPV4_HLEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HLEN: usize = 40;

/// `EtherType` of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// `EtherType` of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// `EtherType` of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// TPID of an 802.1Q (customer) VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// TPID of an 802.1ad (service, outer `QinQ`) VLAN tag.
pub const ETH_P_8021AD: u16 = 0x88A8;
/// `EtherType` reserved for local experiments (IEEE 802): never IP.
pub const ETH_P_LOCAL_EXPERIMENTAL: u16 = 0x88B5;

/// The source the kernel tests and `bench xdp` ban (IPv4).
pub const BANNED_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// A source they leave clean (IPv4).
pub const CLEAN_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Where their IPv4 frames go.
pub const DST_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The source they ban (IPv6).
pub const BANNED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// A source they leave clean (IPv6).
pub const CLEAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// Where their IPv6 frames go.
pub const DST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xff);

/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of `ICMPv6`.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IP protocol number of GRE, a tunnel whose inner packet has a port.
pub const IPPROTO_GRE: u8 = 47;
/// IP protocol number of ESP: encrypted, no port to read.
pub const IPPROTO_ESP: u8 = 50;
/// IPv6 next header of the Hop-by-Hop Options header.
pub const IPV6_HOPOPTS: u8 = 0;
/// IPv6 next header of the Routing header.
pub const IPV6_ROUTING: u8 = 43;
/// IPv6 next header of the Fragment header.
pub const IPV6_FRAGMENT: u8 = 44;
/// IPv6 next header of the Authentication Header.
pub const IPV6_AH: u8 = 51;
/// IPv6 "No Next Header".
pub const IPV6_NONXT: u8 = 59;
/// IPv6 next header of the Destination Options header.
pub const IPV6_DSTOPTS: u8 = 60;

/// Destination MAC of every built frame (locally administered).
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Source MAC of every built frame (locally administered).
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Source port of built TCP and UDP headers.
pub const CLIENT_PORT: u16 = 40_000;
/// Destination port when none is chosen: SMTP.
pub const SMTP_PORT: u16 = 25;

/// The layer-4 part of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A 20-byte TCP SYN header.
    Tcp { src_port: u16, dst_port: u16 },
    /// An 8-byte UDP header.
    Udp { src_port: u16, dst_port: u16 },
    /// An 8-byte ICMP (or `ICMPv6`) echo request.
    Icmp,
    /// Arbitrary bytes; set the protocol with [`FrameBuilder::protocol`].
    Raw(Vec<u8>),
}

impl Transport {
    fn protocol(&self, v6: bool) -> u8 {
        match self {
            Self::Tcp { .. } => IPPROTO_TCP,
            Self::Udp { .. } => IPPROTO_UDP,
            Self::Icmp if v6 => IPPROTO_ICMPV6,
            // Raw payloads default to ICMP unless `protocol` says otherwise.
            Self::Icmp | Self::Raw(_) => IPPROTO_ICMP,
        }
    }

    fn bytes(&self, v6: bool) -> Vec<u8> {
        match self {
            Self::Tcp { src_port, dst_port } => {
                let mut tcp = Vec::with_capacity(20);
                tcp.extend_from_slice(&src_port.to_be_bytes());
                tcp.extend_from_slice(&dst_port.to_be_bytes());
                tcp.extend_from_slice(&1_u32.to_be_bytes()); // sequence
                tcp.extend_from_slice(&0_u32.to_be_bytes()); // acknowledgement
                tcp.push(5 << 4); // data offset: 5 words
                tcp.push(0x02); // SYN
                tcp.extend_from_slice(&64_240_u16.to_be_bytes()); // window
                tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
                tcp
            }
            Self::Udp { src_port, dst_port } => {
                let mut udp = Vec::with_capacity(8);
                udp.extend_from_slice(&src_port.to_be_bytes());
                udp.extend_from_slice(&dst_port.to_be_bytes());
                udp.extend_from_slice(&8_u16.to_be_bytes());
                udp.extend_from_slice(&[0, 0]);
                udp
            }
            Self::Icmp => {
                let echo_request = if v6 { 128 } else { 8 };
                vec![echo_request, 0, 0, 0, 0x12, 0x34, 0, 1]
            }
            Self::Raw(bytes) => bytes.clone(),
        }
    }
}

/// An IPv6 extension header, written between the fixed header and the
/// transport in the order added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extension {
    /// Hop-by-Hop Options, `8 × (units + 1)` bytes of padding options.
    HopByHop { units: u8 },
    /// Destination Options, `8 × (units + 1)` bytes of padding options.
    DestinationOptions { units: u8 },
    /// An 8-byte Routing header with no segments left.
    Routing,
    /// A Fragment header; offset in 8-byte units. A non-zero offset makes
    /// this a later fragment, which carries no L4 header.
    Fragment { offset: u16, more: bool },
    /// A 24-byte Authentication Header (payload length 4).
    Authentication,
}

impl Extension {
    /// Hop-by-Hop Options of the minimum 8 bytes.
    pub const HOP_BY_HOP: Self = Self::HopByHop { units: 0 };
    /// Destination Options of the minimum 8 bytes.
    pub const DESTINATION_OPTIONS: Self = Self::DestinationOptions { units: 0 };
    /// The first fragment of a fragmented packet.
    pub const FIRST_FRAGMENT: Self = Self::Fragment {
        offset: 0,
        more: true,
    };

    /// The value a preceding header's next-header field takes for this one.
    pub const fn next_header(self) -> u8 {
        match self {
            Self::HopByHop { .. } => IPV6_HOPOPTS,
            Self::DestinationOptions { .. } => IPV6_DSTOPTS,
            Self::Routing => IPV6_ROUTING,
            Self::Fragment { .. } => IPV6_FRAGMENT,
            Self::Authentication => IPV6_AH,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Self::HopByHop { units } | Self::DestinationOptions { units } => {
                let len = (usize::from(units) + 1) * 8;
                let mut header = vec![next, units];
                // One PadN option filling the rest.
                header.push(1);
                header.push(u8::try_from(len - 4).unwrap_or(u8::MAX));
                header.resize(len, 0);
                header
            }
            Self::Routing => vec![next, 0, 0, 0, 0, 0, 0, 0],
            Self::Fragment { offset, more } => {
                let field = (offset << 3) | u16::from(more);
                let mut header = vec![next, 0];
                header.extend_from_slice(&field.to_be_bytes());
                header.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
                header
            }
            Self::Authentication => {
                let mut header = vec![next, 4, 0, 0];
                header.extend_from_slice(&0x100_u32.to_be_bytes()); // SPI
                header.extend_from_slice(&1_u32.to_be_bytes()); // sequence
                header.resize(24, 0); // ICV
                header
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Network {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ihl: u8,
        fragment_offset: u16,
        more_fragments: bool,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        extensions: Vec<Extension>,
    },
}

/// Builds one Ethernet frame carrying IPv4 or IPv6.
///
/// Defaults: untagged, IPv4 header without options, not fragmented, a TCP
/// SYN from port [`CLIENT_PORT`] to [`SMTP_PORT`].
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    tags: Vec<(u16, u16)>,
    network: Network,
    protocol: Option<u8>,
    transport: Transport,
}

impl FrameBuilder {
    fn with(network: Network) -> Self {
        Self {
            tags: Vec::new(),
            network,
            protocol: None,
            transport: Transport::Tcp {
                src_port: CLIENT_PORT,
                dst_port: SMTP_PORT,
            },
        }
    }

    /// An IPv4 packet from `src` to `dst`.
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self::with(Network::V4 {
            src,
            dst,
            ihl: 5,
            fragment_offset: 0,
            more_fragments: false,
        })
    }

    /// An IPv6 packet from `src` to `dst`.
    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self::with(Network::V6 {
            src,
            dst,
            extensions: Vec::new(),
        })
    }

    /// An IPv4 or IPv6 packet, by the family of the addresses.
    ///
    /// # Panics
    /// When `src` and `dst` are of different families.
    pub fn ip(src: IpAddr, dst: IpAddr) -> Self {
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Self::ipv4(src, dst),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Self::ipv6(src, dst),
            _ => panic!("{src} and {dst} are of different address families"),
        }
    }

    /// Adds a VLAN tag with `tpid` and VLAN id `vid` after the ones already
    /// added; the first tag is the outermost.
    #[must_use]
    pub fn tag(mut self, tpid: u16, vid: u16) -> Self {
        self.tags.push((tpid, vid & 0x0FFF));
        self
    }

    /// Adds one 802.1Q tag.
    #[must_use]
    pub fn vlan(self, vid: u16) -> Self {
        self.tag(ETH_P_8021Q, vid)
    }

    /// Adds an 802.1ad outer tag and an 802.1Q inner tag (`QinQ`).
    #[must_use]
    pub fn qinq(self, outer_vid: u16, inner_vid: u16) -> Self {
        self.tag(ETH_P_8021AD, outer_vid)
            .tag(ETH_P_8021Q, inner_vid)
    }

    /// Sets the IPv4 header length field, in 32-bit words (0..=15). Above 5,
    /// `(ihl - 5) * 4` bytes of NOP options follow the header; below 5 the
    /// field lies: a 20-byte header is still written.
    ///
    /// # Panics
    /// On an IPv6 builder, or when `ihl` exceeds 15.
    #[must_use]
    pub fn ihl(mut self, words: u8) -> Self {
        assert!(words <= 15, "IHL is a 4-bit field, {words} does not fit");
        match &mut self.network {
            Network::V4 { ihl, .. } => *ihl = words,
            Network::V6 { .. } => panic!("IHL is an IPv4 field"),
        }
        self
    }

    /// Sets the IPv4 fragment offset, in 8-byte units (0..=8191); a non-zero
    /// offset makes this a later fragment, which carries no L4 header (the
    /// transport bytes are then just payload).
    ///
    /// # Panics
    /// On an IPv6 builder, or when `units` exceeds 13 bits.
    #[must_use]
    pub fn fragment_offset(mut self, units: u16) -> Self {
        assert!(
            units <= 0x1FFF,
            "fragment offset is a 13-bit field, {units} does not fit"
        );
        match &mut self.network {
            Network::V4 {
                fragment_offset, ..
            } => *fragment_offset = units,
            Network::V6 { .. } => panic!("the fragment offset is an IPv4 header field"),
        }
        self
    }

    /// Sets the IPv4 "more fragments" flag.
    ///
    /// # Panics
    /// On an IPv6 builder.
    #[must_use]
    pub fn more_fragments(mut self) -> Self {
        match &mut self.network {
            Network::V4 { more_fragments, .. } => *more_fragments = true,
            Network::V6 { .. } => panic!("more fragments is an IPv4 header flag"),
        }
        self
    }

    /// Adds an IPv6 extension header after the ones already added.
    ///
    /// # Panics
    /// On an IPv4 builder.
    #[must_use]
    pub fn extension(mut self, extension: Extension) -> Self {
        match &mut self.network {
            Network::V6 { extensions, .. } => extensions.push(extension),
            Network::V4 { .. } => panic!("extension headers are IPv6"),
        }
        self
    }

    /// Overrides the IPv4 protocol / IPv6 next header field of the last
    /// header before the transport, which otherwise follows the transport.
    #[must_use]
    pub fn protocol(mut self, protocol: u8) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// A TCP SYN to `dst_port`.
    #[must_use]
    pub fn tcp(mut self, dst_port: u16) -> Self {
        self.transport = Transport::Tcp {
            src_port: CLIENT_PORT,
            dst_port,
        };
        self
    }

    /// A UDP datagram to `dst_port`.
    #[must_use]
    pub fn udp(mut self, dst_port: u16) -> Self {
        self.transport = Transport::Udp {
            src_port: CLIENT_PORT,
            dst_port,
        };
        self
    }

    /// An ICMP (IPv4) or `ICMPv6` (IPv6) echo request.
    #[must_use]
    pub fn icmp(mut self) -> Self {
        self.transport = Transport::Icmp;
        self
    }

    /// Any layer-4 part.
    #[must_use]
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The frame's bytes.
    ///
    /// # Panics
    /// When the packet exceeds the 65,535 bytes an IP length field holds.
    pub fn build(&self) -> Vec<u8> {
        let v6 = matches!(self.network, Network::V6 { .. });
        let l4 = self.transport.bytes(v6);
        let protocol = self.protocol.unwrap_or_else(|| self.transport.protocol(v6));
        let (ethertype, mut packet) = match &self.network {
            Network::V4 {
                src,
                dst,
                ihl,
                fragment_offset,
                more_fragments,
            } => {
                let header_len = usize::from((*ihl).max(5)) * 4;
                let total_len = u16::try_from(header_len + l4.len()).expect("IPv4 packet too long");
                let flags_fragment = u16::from(*more_fragments) << 13 | fragment_offset;
                let mut ip = Vec::with_capacity(header_len + l4.len());
                ip.push(0x40 | ihl);
                ip.push(0); // DSCP/ECN
                ip.extend_from_slice(&total_len.to_be_bytes());
                ip.extend_from_slice(&0x1234_u16.to_be_bytes()); // identification
                ip.extend_from_slice(&flags_fragment.to_be_bytes());
                ip.push(64); // TTL
                ip.push(protocol);
                ip.extend_from_slice(&[0, 0]); // checksum, filled below
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                ip.resize(header_len, 0x01); // NOP options
                let checksum = internet_checksum(&ip);
                ip[10..12].copy_from_slice(&checksum.to_be_bytes());
                (ETH_P_IP, ip)
            }
            Network::V6 {
                src,
                dst,
                extensions,
            } => {
                let mut chain = Vec::new();
                for (i, extension) in extensions.iter().enumerate() {
                    let next = extensions
                        .get(i + 1)
                        .map_or(protocol, |following| following.next_header());
                    chain.extend(extension.bytes(next));
                }
                let first = extensions.first().map_or(protocol, |e| e.next_header());
                let payload_len =
                    u16::try_from(chain.len() + l4.len()).expect("IPv6 payload too long");
                let mut ip = Vec::with_capacity(IPV6_HLEN + chain.len() + l4.len());
                ip.extend_from_slice(&[0x60, 0, 0, 0]); // version, class, flow label
                ip.extend_from_slice(&payload_len.to_be_bytes());
                ip.push(first);
                ip.push(64); // hop limit
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                ip.extend(chain);
                (ETH_P_IPV6, ip)
            }
        };
        packet.extend_from_slice(&l4);
        tagged_ethernet(&self.tags, ethertype, &packet)
    }
}

/// An untagged Ethernet frame of `ethertype` around `payload`.
pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    tagged_ethernet(&[], ethertype, payload)
}

/// An Ethernet frame with VLAN `tags` (`(tpid, vid)`, outermost first).
pub fn tagged_ethernet(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_HLEN + VLAN_HLEN * tags.len() + payload.len());
    frame.extend_from_slice(&DST_MAC);
    frame.extend_from_slice(&SRC_MAC);
    for &(tpid, vid) in tags {
        frame.extend_from_slice(&tpid.to_be_bytes());
        frame.extend_from_slice(&vid.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A broadcast ARP request: who has `target`? Tell `sender`.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut arp = Vec::with_capacity(28);
    arp.extend_from_slice(&1_u16.to_be_bytes()); // hardware: Ethernet
    arp.extend_from_slice(&ETH_P_IP.to_be_bytes());
    arp.extend_from_slice(&[6, 4]); // address lengths
    arp.extend_from_slice(&1_u16.to_be_bytes()); // request
    arp.extend_from_slice(&SRC_MAC);
    arp.extend_from_slice(&sender.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target.octets());
    let mut frame = ethernet(ETH_P_ARP, &arp);
    frame[..6].copy_from_slice(&[0xFF; 6]);
    frame
}

/// The first `len` bytes of `frame`.
///
/// # Panics
/// When `frame` is shorter than `len`.
pub fn truncated(frame: &[u8], len: usize) -> Vec<u8> {
    assert!(
        len <= frame.len(),
        "cannot cut a {}-byte frame to {len} bytes",
        frame.len()
    );
    frame[..len].to_vec()
}

/// RFC 1071 checksum.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| {
            u32::from(u16::from_be_bytes([
                pair[0],
                pair.get(1).copied().unwrap_or(0),
            ]))
        })
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const SRC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const DST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    fn be16(frame: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([frame[at], frame[at + 1]])
    }

    #[test]
    fn ipv4_tcp_has_right_lengths_and_checksum() {
        let frame = FrameBuilder::ipv4(SRC, DST).tcp(25).build();
        assert_eq!(frame.len(), ETH_HLEN + IPV4_HLEN + 20);
        assert_eq!(be16(&frame, 12), ETH_P_IP);
        assert_eq!(frame[14], 0x45);
        assert_eq!(usize::from(be16(&frame, 16)), IPV4_HLEN + 20);
        assert_eq!(frame[23], IPPROTO_TCP);
        assert_eq!(&frame[26..30], &SRC.octets());
        assert_eq!(&frame[30..34], &DST.octets());
        assert_eq!(
            internet_checksum(&frame[14..34]),
            0,
            "header checksum must verify"
        );
        assert_eq!(be16(&frame, 34 + 2), 25);
    }

    #[test]
    fn ipv4_options_extend_the_header() {
        let frame = FrameBuilder::ipv4(SRC, DST).ihl(15).udp(53).build();
        assert_eq!(frame[14], 0x4F);
        assert_eq!(frame.len(), ETH_HLEN + 60 + 8);
        assert_eq!(usize::from(be16(&frame, 16)), 60 + 8);
        assert!(frame[34..74].iter().all(|&b| b == 0x01));
        assert_eq!(be16(&frame, 74 + 2), 53);
        assert_eq!(internet_checksum(&frame[14..74]), 0);
    }

    #[test]
    fn short_ihl_keeps_a_full_header() {
        let frame = FrameBuilder::ipv4(SRC, DST).ihl(4).build();
        assert_eq!(frame[14], 0x44);
        assert_eq!(frame.len(), ETH_HLEN + IPV4_HLEN + 20);
    }

    #[test]
    fn fragment_fields() {
        let frame = FrameBuilder::ipv4(SRC, DST)
            .fragment_offset(185)
            .more_fragments()
            .build();
        assert_eq!(be16(&frame, 20), 0x2000 | 0xB9);
    }

    #[test]
    fn tags_come_outermost_first() {
        let frame = FrameBuilder::ipv4(SRC, DST).qinq(10, 20).build();
        assert_eq!(be16(&frame, 12), ETH_P_8021AD);
        assert_eq!(be16(&frame, 14), 10);
        assert_eq!(be16(&frame, 16), ETH_P_8021Q);
        assert_eq!(be16(&frame, 18), 20);
        assert_eq!(be16(&frame, 20), ETH_P_IP);
        assert_eq!(frame[22], 0x45);
    }

    #[test]
    fn ipv6_extension_chain_links_each_next_header() {
        let frame = FrameBuilder::ipv6(SRC_V6, DST_V6)
            .extension(Extension::HOP_BY_HOP)
            .extension(Extension::Fragment {
                offset: 3,
                more: true,
            })
            .extension(Extension::Authentication)
            .extension(Extension::DestinationOptions { units: 1 })
            .tcp(25)
            .build();
        let ip = ETH_HLEN;
        let chain = 8 + 8 + 24 + 16;
        assert_eq!(frame.len(), ETH_HLEN + IPV6_HLEN + chain + 20);
        assert_eq!(usize::from(be16(&frame, ip + 4)), chain + 20);
        assert_eq!(frame[ip + 6], IPV6_HOPOPTS);
        let hop = ip + IPV6_HLEN;
        assert_eq!((frame[hop], frame[hop + 1]), (IPV6_FRAGMENT, 0));
        let fragment = hop + 8;
        assert_eq!(frame[fragment], IPV6_AH);
        assert_eq!(be16(&frame, fragment + 2), (3 << 3) | 1);
        let ah = fragment + 8;
        assert_eq!((frame[ah], frame[ah + 1]), (IPV6_DSTOPTS, 4));
        let dst = ah + 24;
        assert_eq!((frame[dst], frame[dst + 1]), (IPPROTO_TCP, 1));
        // PadN covering the rest of the 16 bytes.
        assert_eq!((frame[dst + 2], frame[dst + 3]), (1, 12));
        assert_eq!(be16(&frame, dst + 16 + 2), 25);
    }

    #[test]
    fn ipv6_udp() {
        let (src, dst) = (SRC_V6, DST_V6);
        let frame = FrameBuilder::ipv6(src, dst).udp(25).build();
        assert_eq!(frame.len(), ETH_HLEN + IPV6_HLEN + 8);
        assert_eq!(be16(&frame, 12), ETH_P_IPV6);
        assert_eq!(frame[14] >> 4, 6);
        assert_eq!(be16(&frame, 18), 8);
        assert_eq!(frame[20], IPPROTO_UDP);
        assert_eq!(&frame[22..38], &src.octets());
        assert_eq!(&frame[38..54], &dst.octets());
        assert_eq!(be16(&frame, 54 + 2), 25);
    }

    #[test]
    fn icmp_follows_the_family() {
        let v6 = SRC_V6;
        assert_eq!(
            FrameBuilder::ipv6(v6, v6).icmp().build()[20],
            IPPROTO_ICMPV6
        );
        assert_eq!(
            FrameBuilder::ipv4(SRC, DST).icmp().build()[23],
            IPPROTO_ICMP
        );
        assert_eq!(
            FrameBuilder::ipv4(SRC, DST).icmp().protocol(99).build()[23],
            99
        );
    }

    #[test]
    fn arp_and_truncation() {
        let arp = arp_request(SRC, DST);
        assert_eq!(arp.len(), ETH_HLEN + 28);
        assert_eq!(be16(&arp, 12), ETH_P_ARP);
        assert_eq!(truncated(&arp, 14).len(), 14);
    }
}
