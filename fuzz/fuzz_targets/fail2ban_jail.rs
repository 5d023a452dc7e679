//! fail2ban jail files through `spamwall import fail2ban`: the INI reader,
//! `[INCLUDES]`, `%(name)s` interpolation, the jails and their filters.
//!
//! The file is taken to be `/etc/fail2ban/jail.local`, so includes and
//! filters come from Debian's fail2ban when it is installed. Importing
//! never panics nor hangs (interpolation is bounded); the printed
//! configuration is always TOML, so no value can break out of the comment
//! it is quoted in; errors say what is wrong.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use spamwall::{config::Config, import::fail2ban::import_text};

const PATH: &str = "/etc/fail2ban/jail.local";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match import_text(Path::new(PATH), text) {
        Ok(imported) => {
            if let Err(error) = Config::read(&imported.toml) {
                panic!("not TOML: {error}\n{}", imported.toml);
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
