//! mtpolicyd configurations: any text through the `Config::General` reader
//! and the converter. Importing never panics, an error says where and
//! what, and every configuration written loads as a valid spamwall
//! configuration (validation included). Includes resolve below a
//! directory that does not exist, so none is read.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use spamwall::{config::Config, import::mtpolicyd::import_text};

const PATH: &str = "/nonexistent/spamwall-fuzz/mtpolicyd.conf";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match import_text(Path::new(PATH), text) {
        Err(error) => assert!(!error.message.is_empty() && error.at.starts_with(PATH)),
        Ok(imported) => {
            if let Err(error) = Config::parse(&imported.toml) {
                panic!("the import does not load: {error}\n{}", imported.toml);
            }
        }
    }
});
