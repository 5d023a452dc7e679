//! fail2ban's replies: any bytes on its control socket.
//!
//! A decoded value renders within its summary limit, and a list of strings
//! (the shape of a command) encodes and decodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spamwall::bans::fail2ban::pickle::{self, Value};

const SUMMARY_LIMIT: usize = 120;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = pickle::decode(data) else {
        return;
    };
    let summary = value.summary(SUMMARY_LIMIT);
    assert!(summary.len() <= SUMMARY_LIMIT + '…'.len_utf8(), "{summary}");
    if let Value::List(items) = &value {
        let args: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
        if let Some(args) = args {
            let encoded = pickle::encode_command(&args).expect("short arguments encode");
            assert_eq!(pickle::decode(&encoded), Ok(value));
        }
    }
});
