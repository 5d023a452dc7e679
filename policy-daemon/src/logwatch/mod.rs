//! The log watcher: follows mail logs (files or the journal), applies
//! fail2ban-style filters and bans through the ban manager when a rule's
//! `maxretry` is reached within its `findtime`.

mod config;
pub mod filter;
mod lines;
mod lint;
pub mod postfix;
mod resolve;
mod rules;
mod source;
mod test_filter;
mod watcher;

pub use config::{FilterConfig, LogwatchConfig, RuleConfig, SourceConfig};
pub use resolve::{ResolveError, UserFilter, resolve_filter};
pub use rules::{DEFAULT_FINDTIME, DEFAULT_MAXRETRY};
pub use test_filter::{Report, TestFilterError, test_filter};
pub use watcher::Watcher;
