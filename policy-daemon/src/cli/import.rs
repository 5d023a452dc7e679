//! `spamwall import`: another program's configuration printed as
//! spamwall's.

use std::path::PathBuf;

use clap::Subcommand;

use super::{Failure, print_out};
use crate::import::mtpolicyd;

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// An mtpolicyd configuration (e.g. /etc/mtpolicyd/mtpolicyd.conf) with its includes
    Mtpolicyd {
        /// The configuration file
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// fail2ban's enabled mail jails as log-watch sources, filters and rules, their ignoreip as the allowlist
    Fail2ban {
        /// A jail.local or jail.conf, a jail.d directory, or a directory such as /etc/fail2ban
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
}

/// Prints the configuration on standard output. Exit 0 when everything
/// was carried over, 2 when some parts were not (each is a comment in the
/// output), 1 when the file cannot be read or is malformed.
pub fn run(command: &ImportCommand) -> Result<(), Failure> {
    match command {
        ImportCommand::Fail2ban { path } => super::import_fail2ban::run(path),
        ImportCommand::Mtpolicyd { file } => {
            let imported = mtpolicyd::import(file).map_err(|e| Failure::runtime(e.to_string()))?;
            print_out(&imported.toml)?;
            if imported.lost == 0 {
                Ok(())
            } else {
                Err(Failure {
                    code: 2,
                    message: format!(
                        "{} part{} of {} not carried over; see the comments under \"Not carried over\"",
                        imported.lost,
                        if imported.lost == 1 { "" } else { "s" },
                        file.display()
                    ),
                })
            }
        }
    }
}
