//! fail2ban filter files: any text through the INI reader, includes,
//! interpolation and prefregex folding, then compiled as a filter.
//!
//! The file is taken to sit in Debian's `/etc/fail2ban/filter.d`, so
//! `before = common.conf` reads the real include when fail2ban is
//! installed. Importing and compiling never panic; errors say what is
//! wrong.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use spamwall::logwatch::filter::{Filter, import_fail2ban_text};

const PATH: &str = "/etc/fail2ban/filter.d/spamwall-fuzz.conf";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let imported = match import_fail2ban_text(Path::new(PATH), text, &[]) {
        Ok(imported) => imported,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    if let Err(error) = Filter::new("fuzz", &imported.failregex, &imported.ignoreregex) {
        assert!(!error.to_string().is_empty());
    }
});
