//! Ban targets as `spamwall ban`, `ban --file`, the allowlist and the
//! fleet give them: any text.
//!
//! A parsed target has no host bits and re-parses from its text form to
//! itself; a list keeps or reports every non-blank line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spamwall::bans::{parse_target, parse_target_list, target_to_string};

fuzz_target!(|data: &[u8]| {
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
    let list = parse_target_list(text);
    let lines = text.lines().count();
    assert!(list.targets.len() + list.errors.len() <= lines);
    for net in &list.targets {
        assert_eq!(parse_target(&target_to_string(net)), Ok(*net));
    }
    for (line, _) in &list.errors {
        assert!((1..=lines).contains(line));
    }
});
