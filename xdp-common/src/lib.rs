//! The contract between spamwall's XDP program and the daemon that feeds it.
//!
//! Both sides compile this crate: the eBPF program for `bpfel-unknown-none`,
//! the daemon for the host with the `user` feature, which adds the
//! [`aya::Pod`] impls the map APIs need. Every type that crosses the boundary
//! is `#[repr(C)]`, `Copy`, free of enums, `bool` and `Option`, with any
//! padding spelled out, so both compilers agree on every byte.
#![no_std]

/// Name of the XDP program in the object file and of its pin under the pin
/// directory (`bpftool prog show pinned <dir>/xdp_spamwall`).
pub const PROGRAM_NAME: &str = "xdp_spamwall";

/// Name of the dry-run instance of the program: the same code, except that
/// a packet it would drop is counted ([`Counter::WouldDropV4`],
/// [`Counter::WouldDropV6`] and the ban's [`BanValue::packets`]) and passed.
/// The daemon attaches it instead of [`PROGRAM_NAME`] while `[xdp] dry_run`
/// is on, so the normal path reads no setting for it.
pub const DRY_RUN_PROGRAM_NAME: &str = "xdp_sw_dry_run";

/// Name of the second program in the object file, never attached: run
/// once through `BPF_PROG_TEST_RUN` when the daemon loads the first, it
/// writes the coarse monotonic clock then `jiffies` (each a native-endian
/// `u64`) into the first 16 bytes of its frame. From that pair the daemon
/// sets [`XdpSettings::clock_offset`].
pub const CLOCK_PROGRAM_NAME: &str = "xdp_sw_clock";

/// Bytes of the frame [`CLOCK_PROGRAM_NAME`] writes its reading into.
pub const CLOCK_READING_SIZE: usize = 16;

/// Exact IPv4 bans: `BPF_MAP_TYPE_LRU_HASH`, key `[u8; 4]` (network order),
/// value [`BanValue`].
pub const MAP_BANS_V4: &str = "bans_v4";
/// Exact IPv6 bans: `BPF_MAP_TYPE_LRU_HASH`, key `[u8; 16]`, value [`BanValue`].
pub const MAP_BANS_V6: &str = "bans_v6";
/// IPv4 prefix bans: `BPF_MAP_TYPE_LPM_TRIE`, key `struct bpf_lpm_trie_key`
/// (`u32` prefix length, then `[u8; 4]`), value [`BanValue`].
pub const MAP_PREFIX_V4: &str = "prefix_v4";
/// IPv6 prefix bans: `BPF_MAP_TYPE_LPM_TRIE`, key `struct bpf_lpm_trie_key`
/// (`u32` prefix length, then `[u8; 16]`), value [`BanValue`].
pub const MAP_PREFIX_V6: &str = "prefix_v6";
/// The port settings of the program the daemon last loaded, as
/// `BPF_MAP_TYPE_ARRAY` of one [`XdpConfig`], for inspection (`bpftool map
/// dump pinned <dir>/xdp_config`). The program itself reads
/// [`XdpSettings`] from its own global data.
pub const MAP_CONFIG: &str = "xdp_config";
/// The program's writable global data: one [`XdpSettings`], the symbol
/// [`SETTINGS_SYMBOL`]. Each loaded program has its own, never pinned, so
/// a program left attached keeps the settings it was given until the next
/// daemon swaps in a program it has set up itself.
pub const SETTINGS_MAP: &str = ".bss";
/// Name of the program's [`XdpSettings`] static.
pub const SETTINGS_SYMBOL: &str = "SPAMWALL_SETTINGS";
/// The port scopes each destination port belongs to, read when
/// [`XdpConfig::ports_only`] is set: `BPF_MAP_TYPE_ARRAY` of
/// [`PORT_SCOPE_WORDS`] `u64` words; byte `p % 8` of word `p / 8` (by shift,
/// see [`port_scope_slot`]) is the set of scopes, one bit each, that
/// enforce bans on port `p`.
pub const MAP_PORT_SCOPES: &str = "xdp_port_scopes";
/// Pins of maps that earlier versions of the program used and this one does
/// not: removed when the program is loaded. `xdp_ports` was a single
/// bitmap of enforced ports, before bans carried their own scope.
pub const RETIRED_MAPS: [&str; 1] = ["xdp_ports"];
/// Packet counters: `BPF_MAP_TYPE_PERCPU_ARRAY` of `u64`, indexed by [`Counter`].
pub const MAP_STATS: &str = "xdp_stats";

/// The hits of exact bans counted on each CPU and not yet added to the
/// ban: `BPF_MAP_TYPE_PERCPU_ARRAY` of one [`HitBatch`]. A flood from one
/// source spread over every CPU then writes the shared ban value about
/// once per kernel tick per CPU instead of on every packet.
pub const MAP_HIT_BATCH: &str = "xdp_hit_batch";

/// `BPF_MAP_TYPE_ARRAY`.
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// `BPF_MAP_TYPE_LRU_HASH`.
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// `BPF_MAP_TYPE_LPM_TRIE`.
pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;

/// What a map looks like to the kernel: the daemon checks pinned maps
/// against it, and the program's declarations are checked against it at
/// compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
}

/// Every map, in the order the daemon reports them.
#[expect(
    clippy::cast_possible_truncation,
    reason = "value sizes of 32 bytes at most"
)]
pub const MAPS: [MapSpec; 8] = [
    MapSpec {
        name: MAP_BANS_V4,
        map_type: BPF_MAP_TYPE_LRU_HASH,
        key_size: 4,
        value_size: BAN_VALUE_SIZE as u32,
    },
    MapSpec {
        name: MAP_BANS_V6,
        map_type: BPF_MAP_TYPE_LRU_HASH,
        key_size: 16,
        value_size: BAN_VALUE_SIZE as u32,
    },
    MapSpec {
        name: MAP_PREFIX_V4,
        map_type: BPF_MAP_TYPE_LPM_TRIE,
        // struct bpf_lpm_trie_key: u32 prefix length, then the address.
        key_size: 4 + 4,
        value_size: BAN_VALUE_SIZE as u32,
    },
    MapSpec {
        name: MAP_PREFIX_V6,
        map_type: BPF_MAP_TYPE_LPM_TRIE,
        key_size: 4 + 16,
        value_size: BAN_VALUE_SIZE as u32,
    },
    MapSpec {
        name: MAP_CONFIG,
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: size_of::<XdpConfig>() as u32,
    },
    MapSpec {
        name: MAP_PORT_SCOPES,
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 8,
    },
    MapSpec {
        name: MAP_STATS,
        map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
        key_size: 4,
        value_size: 8,
    },
    MapSpec {
        name: MAP_HIT_BATCH,
        map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
        key_size: 4,
        value_size: size_of::<HitBatch>() as u32,
    },
];

/// The names of [`MAPS`], in order.
pub const MAP_NAMES: [&str; 8] = {
    let mut names = [""; 8];
    let mut i = 0;
    while i < MAPS.len() {
        names[i] = MAPS[i].name;
        i += 1;
    }
    names
};

/// Whether two names are the same, at compile time: the program declares
/// each map with a literal name (the `#[map]` attribute takes nothing
/// else) and asserts it equals the constant here.
pub const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Sub-directory of the pin directory that holds one link per interface,
/// named `<interface>:<mode>` (mode `native` or `skb`; `.` and `%` in the
/// interface name percent-encoded, since bpffs refuses dots).
pub const LINK_PIN_DIR: &str = "links";

/// Default capacity of each exact-address LRU map. LRU maps can evict before
/// they are full, so the default sits well above any expected ban count.
pub const DEFAULT_CAPACITY: u32 = 1 << 20;
/// Default capacity of each prefix trie.
pub const DEFAULT_PREFIX_CAPACITY: u32 = 1 << 16;
/// Words in [`MAP_PORT_SCOPES`]: one byte for each of the 65,536 ports.
pub const PORT_SCOPE_WORDS: u32 = 65_536 / 8;

/// Most port scopes a program tells apart: one bit each in a byte.
pub const MAX_SCOPES: usize = 8;

/// The scope of a ban whose [`BanValue::scopes`] is zero: the configured
/// `xdp.ports`, scope 0.
pub const SCOPE_DEFAULT: u8 = 1;

/// The [`MAP_PORT_SCOPES`] word index and the shift of the byte within it
/// that stand for `port`.
#[expect(
    clippy::inline_always,
    reason = "the XDP program calls this per packet"
)]
#[inline(always)]
pub const fn port_scope_slot(port: u16) -> (u32, u32) {
    ((port >> 3) as u32, ((port & 7) as u32) * 8)
}

/// What the program stores for each ban.
///
/// The program reads `expires_ns`, `scopes` and, in the prefix tries,
/// `prefix_len`, and writes `packets` and `last_hit_ns` on every drop;
/// `source` and `count` are carried for the daemon so the maps alone can be
/// listed after a restart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanValue {
    /// Absolute expiry on the kernel's monotonic clock (`CLOCK_MONOTONIC`), in
    /// nanoseconds; [`BanValue::PERMANENT`] never expires. The program reads
    /// the coarse variant of that clock, so a ban ends up to one kernel tick
    /// (a few milliseconds) after this instant.
    pub expires_ns: u64,
    /// Where the ban came from, one of the `SOURCE_*` constants.
    pub source: u16,
    /// Prefix length of the entry's key (32 or 128 for a single address).
    /// When a prefix entry has expired, the program looks for a shorter
    /// live prefix below this length, so an expired /25 cannot hide the
    /// live /24 around it. Zero (an entry written before this field
    /// existed) ends that search.
    pub prefix_len: u8,
    /// The port scopes the ban is enforced in, one bit each (see
    /// [`MAP_PORT_SCOPES`]). Zero, as in an entry written before scopes
    /// existed, is [`SCOPE_DEFAULT`].
    pub scopes: u8,
    /// How many times this address has been banned.
    pub count: u32,
    /// Packets dropped by this ban (in a dry run: that would have been
    /// dropped). Written by the program only; the daemon carries it over
    /// when it rewrites an entry.
    pub packets: u64,
    /// When the last of them came, on the clock the program reads (see
    /// [`XdpSettings::clock_scale`]); zero: never.
    pub last_hit_ns: u64,
}

/// Size of a [`BanValue`] in a map, in bytes.
pub const BAN_VALUE_SIZE: usize = 32;
/// Size of a ban value before it carried [`BanValue::packets`] and
/// [`BanValue::last_hit_ns`]: pinned maps of this size are replaced.
pub const BAN_VALUE_SIZE_V1: usize = 16;

impl BanValue {
    /// `expires_ns` value of a ban without expiry.
    pub const PERMANENT: u64 = 0;

    /// A ban of a key `prefix_len` bits long (32 or 128 for an address).
    pub const fn new(expires_ns: u64, source: u16, prefix_len: u8, count: u32) -> Self {
        Self {
            expires_ns,
            source,
            prefix_len,
            scopes: 0,
            count,
            packets: 0,
            last_hit_ns: 0,
        }
    }

    /// The same ban, keeping the hit counters of `previous` (the entry it
    /// replaces in the map).
    #[must_use]
    pub const fn with_hits_of(self, previous: &Self) -> Self {
        Self {
            packets: previous.packets,
            last_hit_ns: previous.last_hit_ns,
            ..self
        }
    }

    /// The same ban, enforced in `scopes`.
    #[must_use]
    pub const fn with_scopes(self, scopes: u8) -> Self {
        Self { scopes, ..self }
    }

    /// Whether the ban applies to a packet that falls in `packet_scopes`.
    #[expect(
        clippy::inline_always,
        reason = "the XDP program calls this per packet"
    )]
    #[inline(always)]
    pub const fn applies_in(&self, packet_scopes: u8) -> bool {
        let scopes = if self.scopes == 0 {
            SCOPE_DEFAULT
        } else {
            self.scopes
        };
        scopes & packet_scopes != 0
    }

    /// Whether the ban still holds at monotonic time `now_ns`.
    #[expect(
        clippy::inline_always,
        reason = "the XDP program calls this per packet"
    )]
    #[inline(always)]
    pub const fn is_live(&self, now_ns: u64) -> bool {
        self.expires_ns == Self::PERMANENT || now_ns < self.expires_ns
    }

    /// The bytes the kernel stores, in the host's byte order.
    pub fn to_ne_bytes(&self) -> [u8; BAN_VALUE_SIZE] {
        let mut out = [0_u8; BAN_VALUE_SIZE];
        out[0..8].copy_from_slice(&self.expires_ns.to_ne_bytes());
        out[8..10].copy_from_slice(&self.source.to_ne_bytes());
        out[10] = self.prefix_len;
        out[11] = self.scopes;
        out[12..16].copy_from_slice(&self.count.to_ne_bytes());
        out[16..24].copy_from_slice(&self.packets.to_ne_bytes());
        out[24..32].copy_from_slice(&self.last_hit_ns.to_ne_bytes());
        out
    }

    /// A value from the bytes the kernel stores (see [`Self::to_ne_bytes`]).
    pub fn from_ne_bytes(bytes: &[u8; BAN_VALUE_SIZE]) -> Self {
        let mut expires = [0_u8; 8];
        expires.copy_from_slice(&bytes[0..8]);
        let mut count = [0_u8; 4];
        count.copy_from_slice(&bytes[12..16]);
        let mut packets = [0_u8; 8];
        packets.copy_from_slice(&bytes[16..24]);
        let mut last_hit = [0_u8; 8];
        last_hit.copy_from_slice(&bytes[24..32]);
        Self {
            expires_ns: u64::from_ne_bytes(expires),
            source: u16::from_ne_bytes([bytes[8], bytes[9]]),
            prefix_len: bytes[10],
            scopes: bytes[11],
            count: u32::from_ne_bytes(count),
            packets: u64::from_ne_bytes(packets),
            last_hit_ns: u64::from_ne_bytes(last_hit),
        }
    }
}

/// One CPU's pending hits, the single entry of [`MAP_HIT_BATCH`]: the exact
/// ban this CPU last counted a packet for, and the packets counted since
/// the last time they were added to it. The program adds them to the ban
/// when the clock moves on to another tick or another ban is hit; the
/// daemon adds the `pending` of every CPU to the ban whose address matches
/// when it reads the counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HitBatch {
    /// The address of the ban's map value, as the program saw it: tells a
    /// hit on the same entry with one comparison.
    pub value_addr: u64,
    /// Packets counted and not yet in the ban's [`BanValue::packets`].
    pub pending: u64,
    /// The clock when they were counted (one tick: older ones are added
    /// to the ban before the tick changes).
    pub tick: u64,
    /// The banned source address, IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// 4 or 16: the length of `addr`; zero before the first hit.
    pub addr_len: u32,
    /// Zero; keeps the size a multiple of the alignment without implicit
    /// padding.
    pub reserved: u32,
}

/// Ban source: Postfix policy verdict.
pub const SOURCE_POLICY: u16 = 1;
/// Ban source: `spamwall ban` on the command line.
pub const SOURCE_CLI: u16 = 2;
/// Ban source: log watcher rule.
pub const SOURCE_LOGWATCH: u16 = 3;
/// Ban source: another node of the fleet.
pub const SOURCE_FLEET: u16 = 4;
/// Ban source: a blocklist feed.
pub const SOURCE_FEED: u16 = 5;

/// Program settings, the single entry of [`MAP_CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// Non-zero: some scope is limited to ports, so the program reads the
    /// destination port and looks its scopes up in [`MAP_PORT_SCOPES`];
    /// zero: every scope covers all traffic and no port is read.
    pub ports_only: u32,
    /// The scopes that cover all traffic, one bit each in the low byte
    /// (the rest zero): every packet falls in them.
    pub all_traffic: u32,
}

/// What the program reads from its global data ([`SETTINGS_MAP`]) on every
/// packet instead of a map lookup. All zero, as a freshly loaded program
/// starts, is the setting that drops most: no port read (every packet in
/// every scope) and both prefix tries consulted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpSettings {
    /// As [`XdpConfig::ports_only`].
    pub ports_only: u32,
    /// As [`XdpConfig::all_traffic`].
    pub all_traffic: u32,
    /// Non-zero only while the IPv4 prefix trie holds no entry: the
    /// program then skips it. The daemon clears it before it writes the
    /// first prefix and sets it only after the last one is gone.
    pub no_prefix_v4: u32,
    /// The same for the IPv6 prefix trie.
    pub no_prefix_v6: u32,
    /// The clock ban expiries are written in (`CLOCK_MONOTONIC`, at tick
    /// resolution) from the kernel's tick count: `now = jiffies ×
    /// clock_scale + clock_offset`, wrapping. `bpf_jiffies64` is inlined by
    /// the verifier to one load, where `bpf_ktime_get_coarse_ns` is a helper
    /// call on every hit. `clock_scale` is the tick length in nanoseconds
    /// (the resolution of `CLOCK_MONOTONIC_COARSE`). Both zero, as loaded:
    /// the clock reads zero and every ban is live until the daemon sets
    /// them (a banned source fails closed).
    pub clock_scale: u64,
    /// See [`XdpSettings::clock_scale`].
    pub clock_offset: u64,
}

impl XdpSettings {
    /// The clock the program reads, at `jiffies`.
    #[expect(
        clippy::inline_always,
        reason = "the XDP program calls this per packet"
    )]
    #[inline(always)]
    pub const fn clock_at(clock_scale: u64, clock_offset: u64, jiffies: u64) -> u64 {
        jiffies.wrapping_mul(clock_scale).wrapping_add(clock_offset)
    }
}

/// Index of each per-CPU counter in [`MAP_STATS`]. Every packet the program
/// sees moves exactly one of them.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// IP packet from a source that is not banned.
    Passed = 0,
    /// IPv4 packet from a banned source, dropped.
    DroppedV4 = 1,
    /// IPv6 packet from a banned source, dropped.
    DroppedV6 = 2,
    /// Packet whose only matching bans have expired, passed.
    ExpiredPassed = 3,
    /// Frame that could not be parsed (truncated, bad header), passed.
    MalformedPassed = 4,
    /// Frame that is not IPv4 or IPv6 (ARP, any other Ethernet type), passed.
    NonIpPassed = 5,
    /// Packet outside the enforced ports: to a port in no scope (passed
    /// without a lookup), or from a source whose live bans are all scoped to
    /// other ports.
    OutOfScopePassed = 6,
    /// IPv4 packet from a banned source, passed: dry run.
    WouldDropV4 = 7,
    /// IPv6 packet from a banned source, passed: dry run.
    WouldDropV6 = 8,
}

impl Counter {
    /// Number of counters, the size of [`MAP_STATS`].
    pub const COUNT: u32 = 9;
    /// All counters in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Passed,
        Counter::DroppedV4,
        Counter::DroppedV6,
        Counter::ExpiredPassed,
        Counter::MalformedPassed,
        Counter::NonIpPassed,
        Counter::OutOfScopePassed,
        Counter::WouldDropV4,
        Counter::WouldDropV6,
    ];

    /// The counter's name in `stats --json` and in the `outcome` label of
    /// `spamwall_xdp_packets_total`.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Passed => "passed",
            Counter::DroppedV4 => "dropped_v4",
            Counter::DroppedV6 => "dropped_v6",
            Counter::ExpiredPassed => "expired_passed",
            Counter::MalformedPassed => "malformed_passed",
            Counter::NonIpPassed => "non_ip_passed",
            Counter::OutOfScopePassed => "out_of_scope_passed",
            Counter::WouldDropV4 => "would_drop_v4",
            Counter::WouldDropV6 => "would_drop_v6",
        }
    }

    /// Index in [`MAP_STATS`].
    #[expect(
        clippy::inline_always,
        reason = "the XDP program calls this per packet"
    )]
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are `#[repr(C)]`, `Copy`, made only of integers and
    // byte arrays with no implicit padding (pinned by the layout tests).
    unsafe impl aya::Pod for super::BanValue {}
    unsafe impl aya::Pod for super::XdpConfig {}
    unsafe impl aya::Pod for super::XdpSettings {}
    unsafe impl aya::Pod for super::HitBatch {}
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, offset_of, size_of};

    use super::*;

    #[test]
    fn ban_value_layout_is_fixed() {
        assert_eq!(size_of::<BanValue>(), BAN_VALUE_SIZE);
        assert_eq!(align_of::<BanValue>(), 8);
        assert_eq!(offset_of!(BanValue, expires_ns), 0);
        assert_eq!(offset_of!(BanValue, source), 8);
        assert_eq!(offset_of!(BanValue, prefix_len), 10);
        assert_eq!(offset_of!(BanValue, scopes), 11);
        assert_eq!(offset_of!(BanValue, count), 12);
        assert_eq!(offset_of!(BanValue, packets), 16);
        assert_eq!(offset_of!(BanValue, last_hit_ns), 24);
    }

    #[test]
    fn ban_value_bytes_round_trip_and_match_the_layout() {
        let value = BanValue {
            expires_ns: 0x0102_0304_0506_0708,
            source: SOURCE_FLEET,
            prefix_len: 24,
            scopes: 0b1000_0010,
            count: 0xA0B0_C0D0,
            packets: 0x1122_3344_5566_7788,
            last_hit_ns: 0x99AA_BBCC_DDEE_FF00,
        };
        let bytes = value.to_ne_bytes();
        assert_eq!(BanValue::from_ne_bytes(&bytes), value);
        // SAFETY: BanValue is repr(C), 32 bytes without implicit padding.
        let raw: [u8; BAN_VALUE_SIZE] = unsafe { core::mem::transmute(value) };
        assert_eq!(bytes, raw);
    }

    #[test]
    fn a_value_written_before_prefix_len_existed_reads_with_length_zero() {
        // The old layout: u64 expiry, u32 source, u32 count.
        let mut old = [0_u8; BAN_VALUE_SIZE];
        old[0..8].copy_from_slice(&99_u64.to_ne_bytes());
        old[8..12].copy_from_slice(&u32::from(SOURCE_LOGWATCH).to_ne_bytes());
        old[12..16].copy_from_slice(&7_u32.to_ne_bytes());
        let value = BanValue::from_ne_bytes(&old);
        assert_eq!(
            (
                value.expires_ns,
                value.source,
                value.prefix_len,
                value.count
            ),
            (99, SOURCE_LOGWATCH, 0, 7)
        );
    }

    #[test]
    fn hit_batch_layout_is_fixed() {
        assert_eq!(size_of::<HitBatch>(), 48);
        assert_eq!(align_of::<HitBatch>(), 8);
        assert_eq!(offset_of!(HitBatch, pending), 8);
        assert_eq!(offset_of!(HitBatch, tick), 16);
        assert_eq!(offset_of!(HitBatch, addr), 24);
        assert_eq!(offset_of!(HitBatch, addr_len), 40);
    }

    #[test]
    fn config_layout_is_fixed() {
        assert_eq!(size_of::<XdpConfig>(), 8);
        assert_eq!(offset_of!(XdpConfig, all_traffic), 4);
    }

    #[test]
    fn settings_layout_is_fixed() {
        assert_eq!(size_of::<XdpSettings>(), 32);
        assert_eq!(align_of::<XdpSettings>(), 8);
        assert_eq!(offset_of!(XdpSettings, all_traffic), 4);
        assert_eq!(offset_of!(XdpSettings, no_prefix_v4), 8);
        assert_eq!(offset_of!(XdpSettings, no_prefix_v6), 12);
        assert_eq!(offset_of!(XdpSettings, clock_scale), 16);
        assert_eq!(offset_of!(XdpSettings, clock_offset), 24);
    }

    #[test]
    fn every_port_has_its_own_byte_in_the_scope_map() {
        // Ports fill the words in order, eight to a word.
        let mut word_seen = 0;
        let mut filled = 0_u64;
        for port in 0..=u16::MAX {
            let (word, shift) = port_scope_slot(port);
            assert!(word < PORT_SCOPE_WORDS && shift < 64);
            if word != word_seen {
                assert_eq!((word, filled), (word_seen + 1, u64::MAX), "port {port}");
                word_seen = word;
                filled = 0;
            }
            let byte = 0xFF_u64 << shift;
            assert_eq!(filled & byte, 0, "port {port} shares a byte");
            filled |= byte;
        }
        assert_eq!((word_seen, filled), (PORT_SCOPE_WORDS - 1, u64::MAX));
    }

    #[test]
    fn a_ban_applies_in_its_scopes_and_zero_is_the_default_scope() {
        let ban = BanValue::new(BanValue::PERMANENT, SOURCE_CLI, 32, 1);
        assert!(ban.applies_in(SCOPE_DEFAULT) && !ban.applies_in(0b10));
        let sasl = ban.with_scopes(0b0110);
        assert!(sasl.applies_in(0b0010) && sasl.applies_in(0b1100));
        assert!(!sasl.applies_in(SCOPE_DEFAULT) && !sasl.applies_in(0));
        assert!(
            sasl.applies_in(u8::MAX),
            "an unknown port falls in every scope"
        );
    }

    #[test]
    fn counters_are_dense_and_ordered() {
        for (i, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(counter.index() as usize, i);
        }
    }

    #[test]
    fn counter_names_are_distinct_snake_case() {
        for (i, counter) in Counter::ALL.iter().enumerate() {
            let name = counter.name();
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
            for other in &Counter::ALL[..i] {
                assert_ne!(other.name(), name);
            }
        }
    }

    #[test]
    fn map_specs_match_the_shared_types() {
        assert_eq!(MAP_NAMES[0], MAP_BANS_V4);
        assert_eq!(MAP_NAMES[6], MAP_STATS);
        assert!(same_name(MAP_STATS, "xdp_stats") && !same_name(MAP_STATS, "xdp_stat"));
        assert!(!MAP_NAMES.iter().any(|name| RETIRED_MAPS.contains(name)));
        for spec in MAPS {
            if spec.map_type == BPF_MAP_TYPE_LRU_HASH || spec.map_type == BPF_MAP_TYPE_LPM_TRIE {
                assert_eq!(
                    spec.value_size as usize,
                    size_of::<BanValue>(),
                    "{}",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn map_names_fit_the_kernel_limit() {
        // BPF_OBJ_NAME_LEN is 16 including the terminating NUL.
        for name in MAP_NAMES
            .iter()
            .chain([PROGRAM_NAME, DRY_RUN_PROGRAM_NAME, CLOCK_PROGRAM_NAME].iter())
        {
            assert!(name.len() < 16, "{name} is too long for a BPF object name");
        }
    }

    #[test]
    fn expiry_is_exclusive_and_zero_is_permanent() {
        let ban = BanValue {
            expires_ns: 100,
            source: SOURCE_CLI,
            prefix_len: 32,
            scopes: 0,
            count: 1,
            packets: 0,
            last_hit_ns: 0,
        };
        assert!(ban.is_live(99));
        assert!(!ban.is_live(100));
        let permanent = BanValue {
            expires_ns: BanValue::PERMANENT,
            ..ban
        };
        assert!(permanent.is_live(u64::MAX));
    }
}
