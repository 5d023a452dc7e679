//! SPF (RFC 7208): `check_host()` on the MAIL FROM or HELO identity, and
//! the `Received-SPF` header of its result.
//!
//! Records are parsed and macros expanded by `mail-auth`, after the
//! grammar is checked here (its parser is lenient, see [`syntax`]); the
//! evaluation is ours. `mail-auth`'s own `check_host` asks only its own hickory
//! resolver (no resolver trait to plug ours into), does not count void
//! lookups, and takes the first record that parses where two `v=spf1`
//! records are a `permerror`. Evaluating here sends every lookup through
//! [`Dns`](super::dns::Dns): the check's resolver, the daemon's TTL cache,
//! the check's timeout per lookup and the request's deadline, and holds
//! both limits of §4.6.4 (10 terms that query DNS, 2 void lookups).

mod eval;
mod header;
mod syntax;

use std::fmt;

pub use eval::{Identity, Lookups, Outcome, Query, check_host};
pub use header::received_spf;
pub use syntax::{ParsedRecords, parse_record};

/// The results of §2.6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpfResult {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl SpfResult {
    /// Every result, in the order of [`SpfResult::index`].
    pub const ALL: [Self; 7] = [
        Self::Pass,
        Self::Fail,
        Self::SoftFail,
        Self::Neutral,
        Self::None,
        Self::TempError,
        Self::PermError,
    ];

    /// The result as RFC 7208 writes it: `pass`, `softfail`, `permerror`…
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::SoftFail => "softfail",
            Self::Neutral => "neutral",
            Self::None => "none",
            Self::TempError => "temperror",
            Self::PermError => "permerror",
        }
    }

    /// The result named `name` (lowercase, as [`SpfResult::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|result| result.name() == name)
    }

    /// Position in [`SpfResult::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for SpfResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip_through_their_names() {
        for (i, result) in SpfResult::ALL.into_iter().enumerate() {
            assert_eq!(result.index(), i);
            assert_eq!(SpfResult::from_name(result.name()), Some(result));
        }
        assert_eq!(SpfResult::from_name("Fail"), None);
        assert_eq!(SpfResult::from_name("hardfail"), None);
    }
}
