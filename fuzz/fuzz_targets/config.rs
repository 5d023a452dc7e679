//! Configuration files: any text through parsing and the validation pass.
//!
//! Loading never panics, every refusal says what is wrong, and a
//! configuration that loads has no problems left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spamwall::config::{Config, ParseError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(config) => assert!(config.problems().is_empty()),
        Err(ParseError::Syntax(message)) => assert!(!message.trim().is_empty()),
        Err(ParseError::Invalid(problems)) => {
            assert!(!problems.is_empty());
            assert!(problems.iter().all(|p| !p.trim().is_empty()));
        }
    }
});
