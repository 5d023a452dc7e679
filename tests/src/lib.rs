//! Shared support for spamwall's kernel tests and benchmarks.
//!
//! - [`bench`] gives every benchmark its `--smoke` mode and its peer
//!   checks;
//! - [`frames`] builds the Ethernet frames fed to the XDP program;
//! - [`privilege`] decides whether a kernel test can run here;
//! - [`pin`] gives each test its own bpffs pin directory and removes it;
//! - [`postfix`] runs a real Postfix in a network namespace and sends it
//!   mail with `swaks`;
//! - [`knot`] runs a real authoritative DNS server (Knot DNS) on a
//!   loopback port with the zones a test gives it;
//! - [`journald`] runs a real `systemd-journald` in a journal namespace of
//!   its own and logs into it as a unit would;
//! - [`skip`] is the one way a test skips when something is missing here,
//!   and fails instead under `CI`;
//! - [`seccomp`] applies the systemd unit's `SystemCallFilter=` to a
//!   daemon under test, without systemd.
//!
//! Tests that touch kernel state run serially (`--test-threads=1`) and
//! panic with a message rather than return a `Result`.

pub mod bench;
pub mod daemon;
pub mod fail2ban;
pub mod feed_server;
pub mod frames;
pub mod journald;
pub mod knot;
pub mod netns;
pub mod pin;
pub mod policy_server;
pub mod ports;
pub mod postfix;
pub mod privilege;
pub mod rbldnsd;
pub mod redis;
pub mod seccomp;
pub mod skip;

use spamwall::dataplane::Capacities;

pub use pin::PinDir;
pub use privilege::require_root;

/// `XDP_DROP`, as returned by the program.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`, as returned by the program.
pub const XDP_PASS: u32 = 2;

/// Small maps for verdict tests: loading a test dataplane stays fast and
/// cheap in kernel memory, and the program sees the same map types.
pub const TEST_CAPACITIES: Capacities = Capacities {
    v4: 4096,
    v6: 4096,
    prefix_v4: 256,
    prefix_v6: 256,
};
