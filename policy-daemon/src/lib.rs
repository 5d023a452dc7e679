//! spamwall: a Postfix policy server that bans abusive SMTP clients in the
//! kernel with XDP.
//!
//! One module per outside world: [`dataplane`] is the only one that talks
//! to the kernel's BPF subsystem, [`control`] owns the control socket.
pub mod bans;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod duration;
pub mod feeds;
pub mod fleet;
pub mod import;
pub mod listen;
pub mod log_writer;
pub mod logwatch;
pub mod metrics;
pub mod policy;
