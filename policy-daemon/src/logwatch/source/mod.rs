//! Log sources: files followed across rotation and truncation, and the
//! systemd journal through `journalctl -f -o json`. Both read lines with
//! [`super::lines::read_lines`].

mod file;
mod journal;

pub use file::FileFollower;
pub use journal::JournalFollower;

use std::{io, path::PathBuf, time::Duration};

/// How often a file is checked for new data, rotation and truncation.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// A log line longer than this is dropped whole, up to its newline (see
/// [`super::lines::Options::max_line`]).
pub const MAX_LINE: usize = 64 << 10;

/// A log source that cannot be read, naming the file or the command.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("log source {source_name}: {path}: {operation}: {error}")]
    File {
        source_name: String,
        path: PathBuf,
        operation: &'static str,
        error: io::Error,
    },
    #[error(
        "log source {source_name}: journalctl not found ({error}); install systemd's journalctl or follow a file with `path`"
    )]
    JournalctlMissing {
        source_name: String,
        error: io::Error,
    },
    #[error("log source {source_name}: starting journalctl: {error}")]
    Journalctl {
        source_name: String,
        error: io::Error,
    },
}
