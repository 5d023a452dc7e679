//! Blocklist feed bodies as a feed server sends them: any bytes, read as a
//! plain list and as Spamhaus DROP JSON.
//!
//! Parsing never panics; every entry has no host bits and re-parses from
//! its text form to itself; tags stay short and printable; bad lines are
//! counted within the body's line count, and a body without entries is an
//! error only when some line was bad.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spamwall::{
    bans::{parse_target, target_to_string},
    feeds::{FeedFormat, parse::parse},
};

fuzz_target!(|data: &[u8]| {
    for format in [FeedFormat::Plain, FeedFormat::SpamhausJson] {
        match parse(format, data) {
            Ok(parsed) => {
                let lines = data.split(|&b| b == b'\n').count();
                assert!(parsed.entries.len() + parsed.bad_lines <= lines);
                for (net, tag) in &parsed.entries {
                    assert_eq!(*net, net.trunc());
                    assert_eq!(parse_target(&target_to_string(net)), Ok(*net));
                    assert!(tag.len() <= 32 && tag.chars().all(|c| c.is_ascii_graphic()));
                }
                if parsed.bad_lines > 0 {
                    assert!(parsed.first_bad.is_some());
                }
            }
            Err(error) => assert!(!error.to_string().is_empty()),
        }
    }
});
