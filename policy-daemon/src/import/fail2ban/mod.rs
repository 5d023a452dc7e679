//! `spamwall import fail2ban PATH`: fail2ban's enabled mail jails as
//! `[[logwatch.source]]`, `[[logwatch.filter]]` and `[[logwatch.rule]]`
//! entries, and their `ignoreip` as the allowlist.
//!
//! The configuration is read as fail2ban reads it ([`ini`]); each jail's
//! filter is imported and compiled by the log watcher's own importer, so
//! a filter the daemon would refuse is refused here, with the reason.
//! Whatever cannot be carried over is written as a `#` comment naming the
//! jail and why, and counted in [`Import::lost`].

mod emit;
pub mod ini;
mod jail;
mod values;

use std::path::{Path, PathBuf};

pub use jail::{Jail, Logs, Ports, Reading};

/// Why a fail2ban configuration could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("{path} is larger than {limit} bytes: not a fail2ban configuration file")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{0} is not UTF-8 text")]
    NotUtf8(PathBuf),
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Includes { path: PathBuf, message: String },
    #[error("{path}:{line}: [{section}] {key}: {message}")]
    Interpolation {
        path: PathBuf,
        line: usize,
        section: String,
        key: String,
        message: String,
    },
    #[error(
        "{0}: neither a jail.conf/jail.local, a jail.d directory nor a directory holding jail.conf"
    )]
    NotFail2ban(PathBuf),
}

/// The printed configuration and how many settings it could not carry.
#[derive(Debug)]
pub struct Import {
    pub toml: String,
    pub lost: usize,
}

/// Where the configuration lives: the files of the jails, in fail2ban's
/// order, and the directory holding `filter.d`.
#[derive(Debug)]
struct Layout {
    files: Vec<PathBuf>,
    base: PathBuf,
}

fn layout(path: &Path) -> Result<Layout, ImportError> {
    let full_set = |base: &Path| Layout {
        files: crate::logwatch::filter::fail2ban_files(&base.join("jail")),
        base: base.to_owned(),
    };
    if path.is_dir() {
        if path.join("jail.conf").is_file() || path.join("jail.local").is_file() {
            return Ok(full_set(path));
        }
        let parent = path.parent().unwrap_or_else(|| Path::new("/"));
        if parent.join("jail.conf").is_file() {
            return Ok(full_set(parent));
        }
        // A jail.d directory on its own.
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| ImportError::Read {
                path: path.to_owned(),
                source,
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf" || e == "local"))
            .collect();
        // *.conf before *.local, each sorted, as fail2ban reads them.
        files.sort_by_key(|p| (p.extension().is_some_and(|e| e == "local"), p.clone()));
        if files.is_empty() {
            return Err(ImportError::NotFail2ban(path.to_owned()));
        }
        return Ok(Layout {
            files,
            base: parent.to_owned(),
        });
    }
    if !path.exists() {
        return Err(ImportError::Read {
            path: path.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    let base = if parent.file_name().is_some_and(|n| n == "jail.d") {
        parent.parent().unwrap_or(parent)
    } else {
        parent
    };
    if base.join("jail.conf").is_file() {
        let layout = full_set(base);
        if layout.files.iter().any(|f| same_file(f, path)) {
            return Ok(layout);
        }
    }
    Ok(Layout {
        files: vec![path.to_owned()],
        base: base.to_owned(),
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Imports the fail2ban configuration at `path`: a `jail.local` or
/// `jail.conf` (read with the rest of its directory's jail files, as
/// fail2ban does), a `jail.d` directory, or a directory such as
/// `/etc/fail2ban`.
pub fn import(path: &Path) -> Result<Import, ImportError> {
    let layout = layout(path)?;
    let config = ini::Config::read(&layout.files)?;
    let filter_dir = if layout.base.join("filter.d").is_dir() {
        layout.base.join("filter.d")
    } else {
        PathBuf::from("/etc/fail2ban/filter.d")
    };
    Ok(carry_over(&config, &filter_dir))
}

/// [`import`] of `text` as the one jail file at `path`: its includes are
/// read from beside it, the filters from `filter.d` there. Any text gives
/// a configuration that is valid TOML, or an error naming the place at
/// fault; never a panic or a hang.
pub fn import_text(path: &Path, text: &str) -> Result<Import, ImportError> {
    let config = ini::Config::read_text(path, text)?;
    let dir = path.parent().unwrap_or_else(|| Path::new("/"));
    Ok(carry_over(&config, &dir.join("filter.d")))
}

fn carry_over(config: &ini::Config, filter_dir: &Path) -> Import {
    let services = std::fs::read_to_string("/etc/services").unwrap_or_default();
    let readings: Vec<Reading> = jail::jail_names(config)
        .iter()
        .filter_map(|name| jail::read(config, name, &services))
        .collect();
    emit::write(config, &readings, filter_dir)
}

#[cfg(test)]
mod tests;
