//! Configurations of the tools spamwall replaces, turned into its own.

pub mod fail2ban;
