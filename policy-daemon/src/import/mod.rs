//! Configurations of the programs spamwall replaces, read and written as
//! spamwall's own.

pub mod fail2ban;
pub mod mtpolicyd;
