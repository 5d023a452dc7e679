//! Time as bans use it: Unix seconds, the longest ban there can be, and
//! RFC 3339 text for any stored value.
//!
//! Every computation here saturates instead of overflowing, and every
//! conversion is total: a row holding `i64::MAX` or a negative time (a
//! damaged store, a forged fleet message) is shown clamped, never a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest ban that can be asked for: ten years as humantime counts
/// them (`10y`, 3,652.5 days). Longer lengths are refused on every path
/// with an error naming the value; `permanent` (or `0`) is the way to say
/// "forever".
pub const MAX_BAN_LENGTH: Duration = Duration::from_hours(87_660);

/// The latest second RFC 3339 can write, `9999-12-31T23:59:59Z`.
pub const LATEST_RFC3339: i64 = 253_402_300_799;

/// A ban length beyond [`MAX_BAN_LENGTH`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "ban length {} exceeds the maximum of {} (use \"permanent\" for a ban without expiry)",
    humantime::format_duration(*.0),
    humantime::format_duration(MAX_BAN_LENGTH)
)]
pub struct TooLong(pub Duration);

/// `length` if it is at most [`MAX_BAN_LENGTH`].
pub fn check_ban_length(length: Duration) -> Result<Duration, TooLong> {
    if length > MAX_BAN_LENGTH {
        Err(TooLong(length))
    } else {
        Ok(length)
    }
}

/// Unix time in seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, secs_i64)
}

/// Whole seconds of `duration`, saturating at `i64::MAX`.
pub fn secs_i64(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// The Unix time at which a ban of `length` made at `now` (Unix time read
/// to the whole second, so up to a second late) ends: never sooner than
/// `length` after the real moment, at most a second later. Saturates
/// instead of overflowing.
pub fn expiry_after(now: i64, length: Duration) -> i64 {
    now.saturating_add(secs_i64(length).max(1))
        .saturating_add(1)
}

/// `unix` as a [`SystemTime`], clamped to the range RFC 3339 can write
/// (1970 to 9999).
pub fn system_time(unix: i64) -> SystemTime {
    let secs = unix.clamp(0, LATEST_RFC3339).unsigned_abs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// RFC 3339 UTC text of `time` to the second, clamped to 1970–9999.
pub fn rfc3339(time: SystemTime) -> String {
    let unix = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => secs_i64(after),
        Err(_) => 0,
    };
    humantime::format_rfc3339_seconds(system_time(unix)).to_string()
}

/// RFC 3339 UTC text of `time` to the microsecond, clamped to 1970–9999.
pub fn rfc3339_micros(time: SystemTime) -> String {
    let latest = UNIX_EPOCH + Duration::from_secs(LATEST_RFC3339.unsigned_abs());
    let clamped = time.clamp(UNIX_EPOCH, latest);
    humantime::format_rfc3339_micros(clamped).to_string()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_limit_is_ten_years_and_named_in_the_error() {
        assert_eq!(
            check_ban_length(MAX_BAN_LENGTH),
            Ok(MAX_BAN_LENGTH),
            "the limit itself is allowed"
        );
        let error =
            check_ban_length(MAX_BAN_LENGTH + Duration::from_secs(1)).expect_err("too long");
        let text = error.to_string();
        assert!(text.contains("maximum of 10years"), "{text}");
        assert!(text.contains("10years 1s"), "{text}");
        assert_eq!(humantime::parse_duration("10y"), Ok(MAX_BAN_LENGTH));
        assert!(text.contains("permanent"), "{text}");
    }

    #[test]
    fn extreme_times_are_written_clamped() {
        assert_eq!(rfc3339(system_time(i64::MAX)), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(system_time(i64::MIN)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(system_time(1_700_000_000)), "2023-11-14T22:13:20Z");
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_micros(far), "9999-12-31T23:59:59.000000Z");
        assert_eq!(
            rfc3339_micros(UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001)),
            "2023-11-14T22:13:20.000001Z"
        );
    }

    proptest! {
        #[test]
        fn expiry_never_overflows_and_is_later(now in any::<i64>(), secs in any::<u64>(), nanos in 0..1_000_000_000_u32) {
            let at = expiry_after(now, Duration::new(secs, nanos));
            prop_assert!(at > now || now == i64::MAX);
            prop_assert!(at >= now);
        }

        #[test]
        fn any_stored_time_formats_and_parses_back(unix in any::<i64>()) {
            let text = rfc3339(system_time(unix));
            let parsed = humantime::parse_rfc3339(&text).expect("our own output parses");
            let expected = unix.clamp(0, LATEST_RFC3339);
            prop_assert_eq!(parsed, UNIX_EPOCH + Duration::from_secs(expected.unsigned_abs()));
        }

        #[test]
        fn ban_lengths_are_refused_exactly_beyond_the_limit(secs in any::<u64>()) {
            let length = Duration::from_secs(secs);
            prop_assert_eq!(check_ban_length(length).is_ok(), length <= MAX_BAN_LENGTH);
        }
    }
}
