//! Ban targets as `spamwall ban`, `ban --file`, the allowlist and the
//! fleet give them: any text.
//!
//! A parsed target has no host bits and re-parses from its text form to
//! itself; a list, read as `ban --file` and `unban --file` read it, numbers
//! its lines within the input and never keeps a line over the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spamwall::{
    bans::{parse_target, target_to_string},
    cli::{MAX_LINE, TargetLines},
};

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|&b| b == b'\n').count();
    for read in TargetLines::new(data) {
        let line = read.expect("reading a slice cannot fail");
        assert!((1..=lines).contains(&line.line), "line {}", line.line);
        // Invalid bytes widen to U+FFFD, three bytes each.
        assert!(
            line.text.len() <= 3 * (MAX_LINE + 1),
            "{} bytes kept",
            line.text.len()
        );
        if let Ok(net) = line.target {
            assert_eq!(parse_target(&target_to_string(&net)), Ok(net));
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_target(text) {
        Ok(net) => {
            assert_eq!(net, net.trunc(), "{text:?} kept host bits");
            let shown = target_to_string(&net);
            assert_eq!(parse_target(&shown), Ok(net), "{text:?} shown as {shown:?}");
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
