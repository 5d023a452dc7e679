//! spamwall: a Postfix policy server that bans abusive SMTP clients in the
//! kernel with XDP.
pub mod dataplane;
