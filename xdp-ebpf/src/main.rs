//! spamwall's XDP program: drop packets whose source address is banned.
//!
//! Parse Ethernet, up to two VLAN tags, IPv4 or IPv6 and, when the program is
//! scoped to ports, the TCP/UDP destination port; look the source up in the
//! exact-address LRU maps, then in the prefix tries; drop on a live ban.
//! Anything the parser does not understand passes. Every packet moves exactly
//! one per-CPU counter.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod program;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
