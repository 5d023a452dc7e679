//! Log lines through the timestamp and journald JSON parsing the log
//! watcher and `test-filter` apply before any filter.
//!
//! The first four bytes are the current time, seconds after 2000-01-01, so
//! the year guess for syslog stamps is tried at every time of year. A
//! borrowed text is what follows the stamp, and a syslog stamp (which has
//! no year) never lands more than a day after now. The lines of the input
//! read through one [`StampCache`] read as `parse_line` reads each.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use spamwall::logwatch::filter::{StampCache, parse_line};

const Y2K: u64 = 946_684_800;
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fuzz_target!(|data: &[u8]| {
    let Some((clock, line)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    let now = UNIX_EPOCH + Duration::from_secs(Y2K + u64::from(u32::from_le_bytes(*clock)));
    let parsed = parse_line(line, now);
    if let std::borrow::Cow::Borrowed(text) = parsed.text {
        assert!(line.trim_end_matches(['\n', '\r']).ends_with(text));
    }
    let syslog = MONTHS.iter().any(|month| line.starts_with(month));
    if let (Some(time), true) = (parsed.time, syslog) {
        assert!(
            time <= now + Duration::from_hours(24),
            "{line:?} at {now:?} is {time:?}"
        );
    }
    let mut cache = StampCache::default();
    for each in line.split_inclusive('\n') {
        assert_eq!(
            cache.parse_line(each, now),
            parse_line(each, now),
            "{each:?}"
        );
    }
});
