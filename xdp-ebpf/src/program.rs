use core::mem::size_of;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use xdp_common::{
    BanValue, Counter, DEFAULT_CAPACITY, DEFAULT_PREFIX_CAPACITY, PORT_BITMAP_WORDS, XdpConfig,
};

// Map names must equal the `MAP_*` constants of xdp-common: the attribute
// takes a literal, and the daemon's load fails loudly if one drifts.
#[map(name = "bans_v4")]
static BANS_V4: LruHashMap<[u8; 4], BanValue> = LruHashMap::with_max_entries(DEFAULT_CAPACITY, 0);

#[map(name = "bans_v6")]
static BANS_V6: LruHashMap<[u8; 16], BanValue> = LruHashMap::with_max_entries(DEFAULT_CAPACITY, 0);

#[map(name = "prefix_v4")]
static PREFIX_V4: LpmTrie<[u8; 4], BanValue> =
    LpmTrie::with_max_entries(DEFAULT_PREFIX_CAPACITY, 0);

#[map(name = "prefix_v6")]
static PREFIX_V6: LpmTrie<[u8; 16], BanValue> =
    LpmTrie::with_max_entries(DEFAULT_PREFIX_CAPACITY, 0);

#[map(name = "xdp_config")]
static CONFIG: Array<XdpConfig> = Array::with_max_entries(1, 0);

#[map(name = "xdp_ports")]
static PORTS: Array<u64> = Array::with_max_entries(PORT_BITMAP_WORDS, 0);

#[map(name = "xdp_stats")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Fragment offset bits of the IPv4 flags/fragment field.
const IPV4_FRAG_OFFSET: u16 = 0x1FFF;

#[xdp]
pub fn xdp_spamwall(ctx: XdpContext) -> u32 {
    let (action, counter) = verdict(&ctx);
    count(counter);
    action
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = STATS.get_ptr_mut(counter.index()) {
        // SAFETY: per-CPU slot of this CPU; XDP runs with preemption off.
        unsafe { *slot += 1 };
    }
}

/// Bounds-checked pointer to a `T` at `offset` bytes into the frame.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked the whole `T` lies inside the frame; every
    // `T` read here is a byte array, so alignment is 1.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { *p })
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    read::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

/// The action for this frame and the counter it moves.
#[inline(always)]
fn verdict(ctx: &XdpContext) -> (u32, Counter) {
    let Some(mut ethertype) = read_be16(ctx, 12) else {
        return (XDP_PASS, Counter::MalformedPassed);
    };
    let mut offset = ETH_HLEN;
    // Up to two tags (802.1Q, or 802.1ad outer + 802.1Q inner), unrolled.
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let Some(inner) = read_be16(ctx, offset + 2) else {
            return (XDP_PASS, Counter::MalformedPassed);
        };
        ethertype = inner;
        offset += VLAN_HLEN;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            let Some(inner) = read_be16(ctx, offset + 2) else {
                return (XDP_PASS, Counter::MalformedPassed);
            };
            ethertype = inner;
            offset += VLAN_HLEN;
        }
    }
    let outcome = match ethertype {
        ETH_P_IP => ipv4(ctx, offset),
        ETH_P_IPV6 => ipv6(ctx, offset),
        _ => return (XDP_PASS, Counter::NonIpPassed),
    };
    match outcome {
        Some(Lookup::Banned) if ethertype == ETH_P_IP => (XDP_DROP, Counter::DroppedV4),
        Some(Lookup::Banned) => (XDP_DROP, Counter::DroppedV6),
        Some(Lookup::Expired) => (XDP_PASS, Counter::ExpiredPassed),
        Some(Lookup::Clean) => (XDP_PASS, Counter::Passed),
        Some(Lookup::OutOfScope) => (XDP_PASS, Counter::OutOfScopePassed),
        None => (XDP_PASS, Counter::MalformedPassed),
    }
}

enum Lookup {
    Clean,
    Banned,
    Expired,
    OutOfScope,
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, offset: usize) -> Option<Lookup> {
    let version_ihl = read::<[u8; 1]>(ctx, offset)?[0];
    let header_len = usize::from(version_ihl & 0x0F) * 4;
    if version_ihl >> 4 != 4 || header_len < IPV4_MIN_HLEN {
        return None;
    }
    let src = read::<[u8; 4]>(ctx, offset + 12)?;
    if scoped_to_ports() {
        let protocol = read::<[u8; 1]>(ctx, offset + 9)?[0];
        let fragment = read_be16(ctx, offset + 6)? & IPV4_FRAG_OFFSET;
        // A later fragment carries no L4 header: it has no port to match.
        if fragment != 0 || !port_in_scope(ctx, protocol, offset + header_len)? {
            return Some(Lookup::OutOfScope);
        }
    } else {
        // Still require the whole header to be present, options included.
        ptr_at::<u8>(ctx, offset + header_len - 1)?;
    }
    Some(judge(BANS_V4.get_ptr(src), || {
        PREFIX_V4
            .get(Key::new(32, src))
            .map(|v| v as *const BanValue)
    }))
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, offset: usize) -> Option<Lookup> {
    let version = read::<[u8; 1]>(ctx, offset)?[0] >> 4;
    if version != 6 {
        return None;
    }
    let src = read::<[u8; 16]>(ctx, offset + 8)?;
    if scoped_to_ports() {
        let next_header = read::<[u8; 1]>(ctx, offset + 6)?[0];
        // Extension headers are not walked: such a packet has no port here.
        if !port_in_scope(ctx, next_header, offset + IPV6_HLEN)? {
            return Some(Lookup::OutOfScope);
        }
    } else {
        ptr_at::<[u8; IPV6_HLEN]>(ctx, offset)?;
    }
    Some(judge(BANS_V6.get_ptr(src), || {
        PREFIX_V6
            .get(Key::new(128, src))
            .map(|v| v as *const BanValue)
    }))
}

#[inline(always)]
fn scoped_to_ports() -> bool {
    CONFIG.get(0).is_some_and(|config| config.ports_only != 0)
}

/// Whether a packet of `protocol` whose L4 header starts at `l4` goes to an
/// enforced port; `None` when a TCP/UDP header is cut short.
#[inline(always)]
fn port_in_scope(ctx: &XdpContext, protocol: u8, l4: usize) -> Option<bool> {
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return Some(false);
    }
    // Cap the variable offset so the verifier can bound the packet access.
    let l4 = l4 & 0xFF;
    let port = read_be16(ctx, l4 + 2)?;
    let word = PORTS.get(u32::from(port >> 6))?;
    Some(word & (1u64 << (port & 63)) != 0)
}

/// Exact ban first; the prefix tries are consulted only when it does not
/// already decide, so a hit costs one hash lookup.
#[inline(always)]
fn judge(
    exact: Option<*const BanValue>,
    prefix: impl FnOnce() -> Option<*const BanValue>,
) -> Lookup {
    let mut now = None;
    let mut live = |value: *const BanValue| {
        // The coarse clock costs a fraction of bpf_ktime_get_ns on the hit
        // path; a ban may end up to one tick late.
        // SAFETY: the helper has no preconditions.
        let now = *now.get_or_insert_with(|| unsafe { bpf_ktime_get_coarse_ns() });
        // SAFETY: a map value pointer returned by the lookup helper, valid for this run.
        unsafe { (*value).is_live(now) }
    };
    let mut seen = false;
    if let Some(value) = exact {
        if live(value) {
            return Lookup::Banned;
        }
        seen = true;
    }
    if let Some(value) = prefix() {
        if live(value) {
            return Lookup::Banned;
        }
        seen = true;
    }
    if seen { Lookup::Expired } else { Lookup::Clean }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
