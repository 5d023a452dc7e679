//! `spamwall import fail2ban PATH`.

use std::path::Path;

use super::{Failure, print_out};
use crate::import::fail2ban;

/// Prints the configuration imported from `path`. Exit 2 when something
/// was not carried over (the printed comments say what), 1 when the
/// configuration cannot be read.
pub fn run(path: &Path) -> Result<(), Failure> {
    let imported = fail2ban::import(path).map_err(|e| Failure::runtime(e.to_string()))?;
    print_out(&imported.toml)?;
    if imported.lost > 0 {
        return Err(Failure {
            code: 2,
            message: format!(
                "{} setting(s) of {} not carried over: see the comments starting with \"#\" in the output",
                imported.lost,
                path.display()
            ),
        });
    }
    Ok(())
}
