//! spamwall's XDP program: drop packets whose source address is banned.
//!
//! Parse Ethernet, up to two VLAN tags, IPv4 or IPv6 and, when some port
//! scope is limited to ports, the TCP/UDP destination port and the scopes it
//! falls in; look the source up in the exact-address LRU maps, then in the
//! prefix tries; drop on a live ban whose scopes the packet falls in.
//! Anything the parser does not understand passes. Every packet moves exactly
//! one per-CPU counter.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// The BPF target has no atomic types with read-modify-write methods; the
// intrinsic compiles to the instruction the verifier accepts on map values.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(
    target_arch = "bpf",
    expect(internal_features, reason = "atomic add on a map value")
)]

#[cfg(target_arch = "bpf")]
mod program;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
