use core::{
    cell::Cell,
    intrinsics::{AtomicOrdering, atomic_xadd},
    mem::size_of,
};

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::{map, xdp},
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use xdp_common::{
    BanValue, CLOCK_READING_SIZE, Counter, DEFAULT_CAPACITY, DEFAULT_PREFIX_CAPACITY, HitBatch,
    MAPS, PORT_SCOPE_WORDS, XdpConfig, XdpSettings, port_scope_slot, same_name,
};

/// Declares a map with the literal name the `#[map]` attribute needs, and
/// asserts at compile time that it is the name and shape xdp-common's
/// [`MAPS`] entry gives: the contract is defined there once.
macro_rules! contract_map {
    ($name:literal = MAPS[$index:literal], key $key:ty, value $value:ty,
     static $ident:ident: $map:ty = $init:expr;) => {
        const _: () = {
            let spec = MAPS[$index];
            assert!(same_name($name, spec.name));
            assert!(size_of::<$key>() == spec.key_size as usize);
            assert!(size_of::<$value>() == spec.value_size as usize);
        };
        #[map(name = $name)]
        static $ident: $map = $init;
    };
}

contract_map!("bans_v4" = MAPS[0], key [u8; 4], value BanValue,
    static BANS_V4: LruHashMap<[u8; 4], BanValue> = LruHashMap::with_max_entries(DEFAULT_CAPACITY, 0););

contract_map!("bans_v6" = MAPS[1], key [u8; 16], value BanValue,
    static BANS_V6: LruHashMap<[u8; 16], BanValue> = LruHashMap::with_max_entries(DEFAULT_CAPACITY, 0););

contract_map!("prefix_v4" = MAPS[2], key Key<[u8; 4]>, value BanValue,
    static PREFIX_V4: LpmTrie<[u8; 4], BanValue> = LpmTrie::with_max_entries(DEFAULT_PREFIX_CAPACITY, 0););

contract_map!("prefix_v6" = MAPS[3], key Key<[u8; 16]>, value BanValue,
    static PREFIX_V6: LpmTrie<[u8; 16], BanValue> = LpmTrie::with_max_entries(DEFAULT_PREFIX_CAPACITY, 0););

contract_map!("xdp_config" = MAPS[4], key u32, value XdpConfig,
    static CONFIG: Array<XdpConfig> = Array::with_max_entries(1, 0););

contract_map!("xdp_port_scopes" = MAPS[5], key u32, value u64,
    static PORT_SCOPES: Array<u64> = Array::with_max_entries(PORT_SCOPE_WORDS, 0););

contract_map!("xdp_stats" = MAPS[6], key u32, value u64,
    static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0););

contract_map!("xdp_hit_batch" = MAPS[7], key u32, value HitBatch,
    static HIT_BATCH: PerCpuArray<HitBatch> = PerCpuArray::with_max_entries(1, 0););

/// The settings the daemon writes into this program's global data after
/// loading it (see [`XdpSettings`]); read with volatile loads, since the
/// compiler would otherwise fold the zeros it was initialised with.
#[unsafe(no_mangle)]
static mut SPAMWALL_SETTINGS: XdpSettings = XdpSettings {
    ports_only: 0,
    all_traffic: 0,
    no_prefix_v4: 0,
    no_prefix_v6: 0,
    clock_scale: 0,
    clock_offset: 0,
};

/// One field of [`SPAMWALL_SETTINGS`].
macro_rules! setting {
    ($field:ident) => {
        // SAFETY: a plain load of a global the daemon updates as a whole;
        // any value it holds is valid.
        unsafe { core::ptr::read_volatile(&raw const SPAMWALL_SETTINGS.$field) }
    };
}

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 extension headers the walk steps over.
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;
/// Fragment offset bits of the IPv4 flags/fragment field.
const IPV4_FRAG_OFFSET: u16 = 0x1FFF;
/// Fragment offset bits of the IPv6 fragment header's offset/flags field.
const IPV6_FRAG_OFFSET: u16 = 0xFFF8;
/// Most IPv6 extension headers walked before the port counts as unknown.
const MAX_EXTENSION_HEADERS: usize = 8;
/// Furthest a TCP/UDP header may start in the frame. A real chain ends far
/// sooner; the cap also bounds the offset for the verifier.
const MAX_L4_OFFSET: usize = 1024;

#[xdp]
pub fn xdp_spamwall(ctx: XdpContext) -> u32 {
    let (action, counter) = verdict::<false>(&ctx);
    count(counter);
    action
}

/// The dry-run instance: what [`xdp_spamwall`] would drop is counted and
/// passed. A second entry rather than a setting, so the normal path reads
/// nothing more.
const _: () = assert!(same_name(
    "xdp_sw_dry_run",
    xdp_common::DRY_RUN_PROGRAM_NAME
));

#[xdp]
pub fn xdp_sw_dry_run(ctx: XdpContext) -> u32 {
    let (action, counter) = verdict::<true>(&ctx);
    count(counter);
    action
}

/// Never attached: the daemon runs it once through `BPF_PROG_TEST_RUN` to
/// learn how the tick count maps to the clock ban expiries are written in
/// (see [`XdpSettings::clock_scale`]). The clock is read first: a tick
/// between the two readings makes the conversion one tick slow, so a ban
/// ends a tick late, never early.
const _: () = assert!(same_name("xdp_sw_clock", xdp_common::CLOCK_PROGRAM_NAME));

#[xdp]
pub fn xdp_sw_clock(ctx: XdpContext) -> u32 {
    let Some(out) = ptr_at::<[u8; CLOCK_READING_SIZE]>(&ctx, 0) else {
        return XDP_PASS;
    };
    // SAFETY: the helpers have no preconditions.
    let (clock, jiffies) = unsafe { (bpf_ktime_get_coarse_ns(), bpf_jiffies64()) };
    let mut reading = [0_u8; CLOCK_READING_SIZE];
    reading[..8].copy_from_slice(&clock.to_ne_bytes());
    reading[8..].copy_from_slice(&jiffies.to_ne_bytes());
    // SAFETY: `ptr_at` checked the bytes lie inside the frame, which a
    // test run gives the program writable.
    unsafe { *out.cast_mut() = reading };
    XDP_PASS
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = STATS.get_ptr_mut(counter.index()) {
        // SAFETY: per-CPU slot of this CPU; XDP runs with preemption off.
        unsafe { *slot += 1 };
    }
}

/// Counts a packet in the ban that matched it. A prefix ban's count is
/// added at once; an exact ban's is gathered in this CPU's [`HitBatch`]
/// while the same entry keeps being hit within one tick, so a flood from
/// one source over every CPU writes the shared value once per tick per CPU.
#[inline(always)]
fn record_hit<const N: usize>(value: *const BanValue, now: u64, exact: bool, src: &[u8; N]) {
    let batch = if exact {
        HIT_BATCH.get_ptr_mut(0)
    } else {
        None
    };
    let Some(batch) = batch else {
        add_hits(value, 1, now);
        return;
    };
    // SAFETY: this CPU's slot; XDP runs with preemption off.
    let batch = unsafe { &mut *batch };
    if batch.value_addr == value as u64 {
        if batch.tick == now {
            batch.pending += 1;
            return;
        }
        add_hits(value, batch.pending + 1, now);
        batch.pending = 0;
        batch.tick = now;
        return;
    }
    flush(batch);
    add_hits(value, 1, now);
    batch.value_addr = value as u64;
    batch.tick = now;
    let mut i = 0;
    while i < N {
        batch.addr[i] = src[i];
        i += 1;
    }
    #[expect(clippy::cast_possible_truncation, reason = "4 or 16")]
    let len = N as u32;
    batch.addr_len = len;
}

/// Adds a batch's pending packets to the ban of its address, found again
/// by that address: the entry it was counted for may have been replaced.
#[inline(always)]
fn flush(batch: &mut HitBatch) {
    if batch.pending == 0 {
        return;
    }
    let value = match batch.addr_len {
        4 => {
            let mut key = [0_u8; 4];
            key.copy_from_slice(&batch.addr[..4]);
            BANS_V4.get_ptr(&key)
        }
        16 => BANS_V6.get_ptr(&batch.addr),
        _ => None,
    };
    if let Some(value) = value {
        add_hits(value, batch.pending, batch.tick);
    }
    batch.pending = 0;
}

/// Adds `packets` to a ban's count with one atomic add, and writes its
/// last hit only when the clock has moved on.
#[inline(always)]
fn add_hits(value: *const BanValue, packets: u64, now: u64) {
    let value = value.cast_mut();
    // SAFETY: a map value pointer returned by the lookup helper, valid and
    // writable for this run, 8-byte aligned as BanValue is.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*value).packets, packets);
        if (*value).last_hit_ns != now {
            (*value).last_hit_ns = now;
        }
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

/// The action for this frame and the counter it moves; with `DRY`, a
/// packet from a banned source passes.
#[inline(always)]
fn verdict<const DRY: bool>(ctx: &XdpContext) -> (u32, Counter) {
    let Some(ethertype) = read_be16(ctx, 12) else {
        return (XDP_PASS, Counter::MalformedPassed);
    };
    // Untagged IPv4, the most common frame, goes straight to its header;
    // both paths share one copy of the IPv4 code.
    let (ethertype, offset) = if ethertype == ETH_P_IP {
        (ethertype, ETH_HLEN)
    } else {
        let Some(untagged) = untag(ctx, ethertype) else {
            return (XDP_PASS, Counter::MalformedPassed);
        };
        untagged
    };
    match ethertype {
        ETH_P_IP => outcome::<DRY>(ipv4(ctx, offset), Counter::DroppedV4, Counter::WouldDropV4),
        ETH_P_IPV6 => outcome::<DRY>(ipv6(ctx, offset), Counter::DroppedV6, Counter::WouldDropV6),
        _ => (XDP_PASS, Counter::NonIpPassed),
    }
}

/// Steps over up to two VLAN tags (802.1Q, or 802.1ad outer + 802.1Q
/// inner), unrolled: the ethertype inside and where its header starts.
/// `None` when a tag is cut short.
#[inline(always)]
fn untag(ctx: &XdpContext, mut ethertype: u16) -> Option<(u16, usize)> {
    let mut offset = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = read_be16(ctx, offset + 2)?;
        offset += VLAN_HLEN;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            ethertype = read_be16(ctx, offset + 2)?;
            offset += VLAN_HLEN;
        }
    }
    Some((ethertype, offset))
}

/// The action for a lookup's outcome; `dropped` and `would_drop` are the
/// family's counters.
#[inline(always)]
fn outcome<const DRY: bool>(
    lookup: Option<Lookup>,
    dropped: Counter,
    would_drop: Counter,
) -> (u32, Counter) {
    match lookup {
        Some(Lookup::Banned) => {
            if DRY {
                (XDP_PASS, would_drop)
            } else {
                (XDP_DROP, dropped)
            }
        }
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

/// Every port scope: the scopes of a packet whose port cannot be
/// established (a later fragment, a header cut short, an extension chain
/// too long, ESP, any other protocol), so a banned source fails closed.
const ALL_SCOPES: u8 = u8::MAX;

#[inline(always)]
fn ipv4(ctx: &XdpContext, offset: usize) -> Option<Lookup> {
    let header = ptr_at::<[u8; IPV4_MIN_HLEN]>(ctx, offset)?;
    // SAFETY: `ptr_at` checked the fixed header lies inside the frame.
    let version_ihl = unsafe { (*header)[0] };
    let header_len = usize::from(version_ihl & 0x0F) * 4;
    if version_ihl >> 4 != 4 || header_len < IPV4_MIN_HLEN {
        return None;
    }
    // The whole header must be present, options included.
    ptr_at::<u8>(ctx, offset + header_len - 1)?;
    let scopes = if setting!(ports_only) == 0 {
        ALL_SCOPES
    } else {
        // SAFETY: inside the fixed header checked above.
        let (protocol, fragment) = unsafe {
            (
                (*header)[9],
                u16::from_be_bytes([(*header)[6], (*header)[7]]) & IPV4_FRAG_OFFSET,
            )
        };
        let port_scopes = if fragment != 0 {
            // A later fragment carries no L4 header.
            ALL_SCOPES
        } else {
            protocol_scopes(ctx, protocol, offset + header_len)
        };
        port_scopes | all_traffic_scopes()
    };
    if scopes == 0 {
        return Some(Lookup::OutOfScope);
    }
    // SAFETY: bytes 12..16 of the fixed header checked above. The key is
    // read in place: the lookup helpers accept a pointer into the frame.
    let src = unsafe { &*header.cast::<u8>().add(12).cast::<[u8; 4]>() };
    let exact = BANS_V4.get_ptr(src);
    // The address is copied out of the frame once, before the walk: the
    // verifier then sees the same key on every step.
    let prefix = (setting!(no_prefix_v4) == 0).then_some(*src).map(|src| {
        move |len| {
            PREFIX_V4
                .get(Key::new(len, src))
                .map(|v| v as *const BanValue)
        }
    });
    Some(judge(exact, prefix, 32, scopes, src))
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, offset: usize) -> Option<Lookup> {
    let header = ptr_at::<[u8; IPV6_HLEN]>(ctx, offset)?;
    // SAFETY: `ptr_at` checked the fixed header lies inside the frame.
    let version = unsafe { (*header)[0] } >> 4;
    if version != 6 {
        return None;
    }
    let scopes = if setting!(ports_only) == 0 {
        ALL_SCOPES
    } else {
        // SAFETY: inside the fixed header checked above.
        let next_header = unsafe { (*header)[6] };
        ipv6_scopes(ctx, next_header, offset + IPV6_HLEN) | all_traffic_scopes()
    };
    if scopes == 0 {
        return Some(Lookup::OutOfScope);
    }
    // Checked again rather than kept from above: a packet pointer live
    // across the extension-header walk multiplies the verifier's states.
    let src = ptr_at::<[u8; 16]>(ctx, offset + 8)?;
    // SAFETY: checked inside the frame; the key is read in place, as the
    // lookup helpers accept a pointer into the frame.
    let src = unsafe { &*src };
    let exact = BANS_V6.get_ptr(src);
    // The address is copied out of the frame once, before the walk: the
    // verifier then sees the same key on every step.
    let prefix = (setting!(no_prefix_v6) == 0).then_some(*src).map(|src| {
        move |len| {
            PREFIX_V6
                .get(Key::new(len, src))
                .map(|v| v as *const BanValue)
        }
    });
    Some(judge(exact, prefix, 128, scopes, src))
}

/// The scopes that cover all traffic, which every packet falls in.
#[inline(always)]
fn all_traffic_scopes() -> u8 {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the low byte holds the scopes"
    )]
    let scopes = setting!(all_traffic) as u8;
    scopes
}

/// Walks the IPv6 extension headers (Hop-by-Hop, Routing, Fragment,
/// Destination Options, AH) from `next_header` at offset `at` to the
/// upper-layer header, and scopes the packet by it.
#[inline(always)]
fn ipv6_scopes(ctx: &XdpContext, mut next_header: u8, mut at: usize) -> u8 {
    // One step per extension header, and one for the upper layer.
    for _ in 0..=MAX_EXTENSION_HEADERS {
        let header_len = match next_header {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let Some([next, len]) = read::<[u8; 2]>(ctx, at) else {
                    return ALL_SCOPES;
                };
                next_header = next;
                (usize::from(len) + 1) * 8
            }
            IPV6_FRAGMENT => {
                let Some([next, _, offset_hi, offset_lo]) = read::<[u8; 4]>(ctx, at) else {
                    return ALL_SCOPES;
                };
                if u16::from_be_bytes([offset_hi, offset_lo]) & IPV6_FRAG_OFFSET != 0 {
                    // A later fragment carries no L4 header.
                    return ALL_SCOPES;
                }
                next_header = next;
                8
            }
            IPV6_AH => {
                let Some([next, len]) = read::<[u8; 2]>(ctx, at) else {
                    return ALL_SCOPES;
                };
                next_header = next;
                (usize::from(len) + 2) * 4
            }
            protocol => return protocol_scopes(ctx, protocol, at),
        };
        at += header_len;
        if at > MAX_L4_OFFSET {
            return ALL_SCOPES;
        }
        // No-op after the check above; keeps the bound visible to the
        // verifier whatever the compiler does with the comparison.
        at &= 2 * MAX_L4_OFFSET - 1;
    }
    ALL_SCOPES
}

/// The port scopes of a packet whose upper-layer `protocol` header starts
/// at `l4`: those of its destination port for TCP/UDP, none for ICMP, all
/// when the port cannot be known.
#[inline(always)]
fn protocol_scopes(ctx: &XdpContext, protocol: u8, l4: usize) -> u8 {
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP => {
            if l4 > MAX_L4_OFFSET {
                return ALL_SCOPES;
            }
            // Cap the variable offset so the verifier can bound the access.
            let l4 = l4 & (2 * MAX_L4_OFFSET - 1);
            let Some(port) = read_be16(ctx, l4 + 2) else {
                return ALL_SCOPES;
            };
            let (word, shift) = port_scope_slot(port);
            match PORT_SCOPES.get(word) {
                #[expect(clippy::cast_possible_truncation, reason = "one byte per port")]
                Some(bytes) => (bytes >> shift) as u8,
                None => ALL_SCOPES,
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => 0,
        _ => ALL_SCOPES,
    }
}

/// Exact ban first, its hit counted (see [`record_hit`]); the prefix tries are consulted only when it does not
/// already decide and some prefix ban exists (`prefix` is `None` while the
/// daemon knows the trie to be empty), so a hit costs one hash lookup.
/// `prefix(len)` looks up the longest prefix of at most `len` bits; `full`
/// is the address length; `scopes` are the port scopes the packet falls in.
///
/// A trie lookup returns only the longest matching prefix. When that one
/// has expired, or is scoped to other ports, the walk goes on with the
/// prefixes shorter than it, so a live /24 still drops a client whose
/// expired /25 sits inside it. Each step is strictly shorter, so `full + 1`
/// steps reach every prefix.
#[inline(always)]
fn judge<const N: usize>(
    exact: Option<*const BanValue>,
    prefix: Option<impl Fn(u32) -> Option<*const BanValue>>,
    full: u32,
    scopes: u8,
    src: &[u8; N],
) -> Lookup {
    // The clock, read once an entry is found. Kept in a cell that always
    // holds a value, never in an `Option` whose empty payload the
    // compiler may carry in a register the verifier sees uninitialised.
    let now = Cell::new(0_u64);
    let clock_read = Cell::new(false);
    let mut expired = false;
    let mut elsewhere = false;
    let mut drops = |value: *const BanValue| {
        // From the tick count (one load once the verifier has inlined the
        // helper) and the daemon's conversion; a ban may end up to one
        // tick late.
        if !clock_read.get() {
            // SAFETY: the helper has no preconditions.
            let jiffies = unsafe { bpf_jiffies64() };
            now.set(XdpSettings::clock_at(
                setting!(clock_scale),
                setting!(clock_offset),
                jiffies,
            ));
            clock_read.set(true);
        }
        // SAFETY: a map value pointer returned by the lookup helper, valid for this run.
        let value = unsafe { &*value };
        if !value.is_live(now.get()) {
            expired = true;
            false
        } else if value.applies_in(scopes) {
            true
        } else {
            elsewhere = true;
            false
        }
    };
    if let Some(value) = exact
        && drops(value)
    {
        record_hit(value, now.get(), true, src);
        return Lookup::Banned;
    }
    if let Some(prefix) = prefix {
        let mut len = full;
        for _ in 0..=full {
            let Some(value) = prefix(len) else { break };
            if drops(value) {
                record_hit(value, now.get(), false, src);
                return Lookup::Banned;
            }
            // SAFETY: as above.
            let matched = u32::from(unsafe { (*value).prefix_len });
            if matched == 0 || matched > len {
                break;
            }
            len = matched - 1;
        }
    }
    if elsewhere {
        Lookup::OutOfScope
    } else if expired {
        Lookup::Expired
    } else {
        Lookup::Clean
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
