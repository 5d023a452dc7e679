//! `spamwall import mtpolicyd`: an mtpolicyd 2.05 configuration read and
//! written as the spamwall configuration that answers the same.
//!
//! [`parse`] reads `Config::General`'s syntax, [`cidr`] turns client
//! address regexes into prefixes, `plugins` converts each plugin,
//! `convert` the chain and the threshold table, `emit` writes TOML.
//! What has no equivalent is written as a `#` comment naming the plugin,
//! where it is and why, and counted in [`Imported::lost`].

pub mod cidr;
mod convert;
mod emit;
mod lists;
mod model;
pub mod parse;
mod plugins;
mod settings;
mod stages;

use std::path::Path;

pub use parse::ParseError;

/// The configuration written, and how many parts were not carried over.
#[derive(Clone, Debug)]
pub struct Imported {
    pub toml: String,
    /// Parts without an equivalent, each a comment in `toml`.
    pub lost: usize,
}

/// Imports the mtpolicyd configuration at `path` with its includes.
///
/// # Errors
/// A file that cannot be read, or malformed, with its file and line.
pub fn import(path: &Path) -> Result<Imported, ParseError> {
    let root = parse::read_file(path)?;
    Ok(from_block(&root, &path.display().to_string()))
}

/// Imports `text` as if read from `path` (includes are read from disk).
///
/// # Errors
/// As [`import`].
pub fn import_text(path: &Path, text: &str) -> Result<Imported, ParseError> {
    let root = parse::parse_text(path, text)?;
    Ok(from_block(&root, &path.display().to_string()))
}

fn from_block(root: &parse::Block, source: &str) -> Imported {
    let mut model = convert::convert(root, source);
    let thresholds = convert::thresholds(&mut model);
    let toml = emit::write(&model, &thresholds);
    Imported {
        toml,
        lost: model.notes.iter().filter(|n| n.lost).count(),
    }
}

#[cfg(test)]
mod tests;
