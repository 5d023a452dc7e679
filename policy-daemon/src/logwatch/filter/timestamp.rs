//! Log lines' timestamps: classic syslog, RFC 3339, Exim's, and
//! `journalctl -o json` entries.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A log line split into its time and the text filters see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub time: Option<SystemTime>,
    pub text: Cow<'a, str>,
}

/// Splits a line: journald JSON (`{"__REALTIME_TIMESTAMP":…}`) becomes
/// `IDENT[PID]: MESSAGE`; an RFC 3339 or classic syslog timestamp at the
/// start is removed (as fail2ban does before applying failregex).
pub fn parse_line(line: &str, now: SystemTime) -> LogLine<'_> {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.starts_with('{')
        && let Some(parsed) = parse_journal_entry(line).and_then(|entry| entry.line)
    {
        return parsed;
    }
    if let Some((time, rest)) = parse_rfc3339_prefix(line) {
        return LogLine {
            time: Some(time),
            text: Cow::Borrowed(rest),
        };
    }
    if let Some((time, rest)) = parse_syslog_prefix(line, now) {
        return LogLine {
            time: Some(time),
            text: Cow::Borrowed(rest),
        };
    }
    LogLine {
        time: None,
        text: Cow::Borrowed(line),
    }
}

/// The last classic syslog stamp [`StampCache::parse_line`] read, and
/// its time: a log holds many lines to a second, and reading the stamp
/// again cost more than matching most lines. A fixed buffer: a stamp
/// longer than it is read every time.
#[derive(Clone, Debug)]
pub struct StampCache {
    now: SystemTime,
    /// The stamp's bytes as the line held them, `len` of them, without
    /// the white space after it; the cache is empty when `len` is 0.
    stamp: [u8; Self::MAX_STAMP],
    len: usize,
    time: SystemTime,
}

impl Default for StampCache {
    fn default() -> Self {
        Self {
            now: UNIX_EPOCH,
            stamp: [0; Self::MAX_STAMP],
            len: 0,
            time: UNIX_EPOCH,
        }
    }
}

impl StampCache {
    /// `Nov 22 00:52:44.123456789` and a little more.
    const MAX_STAMP: usize = 32;

    /// What [`parse_line`] returns, the stamp read once per distinct
    /// stamp in a row. A line that starts with the cached stamp, followed
    /// by neither a digit nor a `.` that would make its fraction another,
    /// has the same fields (all read from the stamp's bytes) and so the
    /// same time; the text is what follows, as `parse_line` trims it.
    pub fn parse_line<'a>(&mut self, line: &'a str, now: SystemTime) -> LogLine<'a> {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        if self.len > 0
            && self.now == now
            && let Some(after) = trimmed.as_bytes().strip_prefix(&self.stamp[..self.len])
            && !after
                .first()
                .is_some_and(|&b| b.is_ascii_digit() || b == b'.')
        {
            return LogLine {
                time: Some(self.time),
                text: Cow::Borrowed(trimmed[self.len..].trim_start()),
            };
        }
        let parsed = parse_line(line, now);
        self.len = 0;
        if let (Some(time), Cow::Borrowed(text)) = (parsed.time, &parsed.text)
            && syslog_stamp(trimmed).is_some()
        {
            let stamp = trimmed[..trimmed.len() - text.len()].trim_end();
            if let Some(slot) = self.stamp.get_mut(..stamp.len()) {
                slot.copy_from_slice(stamp.as_bytes());
                self.len = stamp.len();
                self.now = now;
                self.time = time;
            }
        }
        parsed
    }
}

/// Whether [`parse_line`] finds a time in the line `raw`, reading only
/// its first bytes when they settle it and placing a syslog stamp in time
/// not at all: a scan counts the lines without a time at the cost of a
/// few bytes each.
pub fn has_timestamp(raw: &[u8], now: SystemTime) -> bool {
    /// Both prefix parsers look at most 7 bytes past what they consume.
    const HEAD: usize = 48;
    const LOOKAHEAD: usize = 8;
    let whole = || {
        parse_line(&String::from_utf8_lossy(raw), now)
            .time
            .is_some()
    };
    if raw.first() == Some(&b'{') || now < UNIX_EPOCH {
        return whole();
    }
    // As parse_line sees it.
    let line_end = raw
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    let cut = &raw[..line_end.min(HEAD)];
    let head = match std::str::from_utf8(cut) {
        Ok(head) => head,
        Err(e) => std::str::from_utf8(&cut[..e.valid_up_to()]).unwrap_or_default(),
    };
    // An RFC 3339 stamp starts with a digit, a syslog one with a letter.
    let rest = if head.starts_with(|c: char| c.is_ascii_digit()) {
        parse_rfc3339_prefix(head).map(|(_, rest)| rest)
    } else {
        syslog_stamp(head).map(|stamp| stamp.rest)
    };
    match rest {
        // The head is the whole line.
        _ if head.len() == line_end => rest.is_some(),
        Some(rest) if rest.len() >= LOOKAHEAD => true,
        // Refused, or decided near the cut: the whole line says.
        _ => whole(),
    }
}

/// One entry of `journalctl -o json`, parsed once: its cursor and the
/// line filters read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub cursor: Option<String>,
    /// `IDENT[PID]: MESSAGE` and the entry's time; `None` without a
    /// `MESSAGE` (the entry still moves the cursor on).
    pub line: Option<LogLine<'static>>,
}

/// Parses one line of `journalctl -o json`; `None` when it is not a JSON
/// object.
pub fn parse_journal_entry(line: &str) -> Option<JournalEntry> {
    let serde_json::Value::Object(fields) = serde_json::from_str(line).ok()? else {
        return None;
    };
    let text = |name: &str| fields.get(name).and_then(serde_json::Value::as_str);
    let cursor = text("__CURSOR").map(str::to_owned);
    let message = match fields.get("MESSAGE") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        // Non-UTF-8 messages come as byte arrays.
        Some(serde_json::Value::Array(bytes)) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ => None,
    };
    let line = message.map(|message| {
        let time = text("__REALTIME_TIMESTAMP")
            .and_then(|s| s.parse::<u64>().ok())
            .and_then(|micros| UNIX_EPOCH.checked_add(Duration::from_micros(micros)));
        let text = match (text("SYSLOG_IDENTIFIER").unwrap_or(""), text("_PID")) {
            ("", _) => message,
            (ident, Some(pid)) => format!("{ident}[{pid}]: {message}"),
            (ident, None) => format!("{ident}: {message}"),
        };
        LogLine {
            time,
            text: Cow::Owned(text),
        }
    });
    Some(JournalEntry { cursor, line })
}

pub(super) fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A time of day as clocks show it (60 seconds: a leap second). Out of
/// range fields would carry into the next day, or days later.
pub(super) fn clock_valid(hour: u32, minute: u32, second: u32) -> bool {
    hour <= 23 && minute <= 59 && second <= 60
}

pub(super) fn from_unix(secs: i64, nanos: u32) -> Option<SystemTime> {
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// `2026-11-22T00:52:44.123456+01:00 rest` (also with a space or `Z`);
/// Exim's `2026-11-22 00:52:44 rest` in local time, or with
/// `log_timezone`, `2026-11-22 00:52:44 +0100 rest`.
pub(super) fn parse_rfc3339_prefix(line: &str) -> Option<(SystemTime, &str)> {
    let b = line.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    let year = i64::from(digits(line.get(0..4)?)?);
    let month = digits(line.get(5..7)?)?;
    let day = digits(line.get(8..10)?)?;
    let hour = digits(line.get(11..13)?)?;
    let minute = digits(line.get(14..16)?)?;
    let second = digits(line.get(17..19)?)?;
    if b[13] != b':'
        || b[16] != b':'
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !clock_valid(hour, minute, second)
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &line[start..i];
        let frac9: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = frac9.parse().ok()?;
    }
    let mut offset = 0i64;
    let mut local = false;
    match b.get(i) {
        Some(b'Z' | b'z') => i += 1,
        // Exim's `2013-01-04 17:03:46 +0100` (`log_timezone`).
        Some(b' ')
            if matches!(b.get(i + 1), Some(b'+' | b'-'))
                && b.get(i + 2..i + 6)
                    .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
                && b.get(i + 6).is_none_or(|&c| c == b' ') =>
        {
            let hh = i64::from(digits(line.get(i + 2..i + 4)?)?);
            let mm = i64::from(digits(line.get(i + 4..i + 6)?)?);
            if hh > 23 || mm > 59 {
                return None;
            }
            offset = (hh * 60 + mm) * 60;
            if b[i + 1] == b'-' {
                offset = -offset;
            }
            i += 6;
        }
        // No zone, as Exim writes its mainlog: local time.
        None | Some(b' ' | b'\t') => local = true,
        Some(sign @ (b'+' | b'-')) => {
            let hh = i64::from(digits(line.get(i + 1..i + 3)?)?);
            let (mm, len) = if b.get(i + 3) == Some(&b':') {
                (i64::from(digits(line.get(i + 4..i + 6)?)?), 6)
            } else {
                (i64::from(digits(line.get(i + 3..i + 5)?)?), 5)
            };
            if hh > 23 || mm > 59 {
                return None;
            }
            offset = (hh * 60 + mm) * 60;
            if *sign == b'-' {
                offset = -offset;
            }
            i += len;
        }
        _ => return None,
    }
    let naive = days_from_civil(year, month, day) * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second);
    if local {
        // The zone's offset around then; asked once per quarter of an hour
        // of log, as zones change offset on such a boundary.
        offset = local_offset(naive - naive.rem_euclid(900));
    }
    let rest = line.get(i..)?.trim_start();
    Some((from_unix(naive - offset, nanos)?, rest))
}

pub(super) const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Nov 22 00:52:44 rest` in local time; the year is the current one, or
/// the previous one when that would put the line in the future.
pub(super) fn parse_syslog_prefix(line: &str, now: SystemTime) -> Option<(SystemTime, &str)> {
    let stamp = syslog_stamp(line)?;
    let now_secs = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    let offset = local_offset(now_secs);
    let secs = syslog_secs(stamp.month, stamp.day, stamp.clock, now_secs, offset);
    Some((from_unix(secs, stamp.nanos)?, stamp.rest))
}

/// The fields of a syslog stamp, read but not yet placed in time.
pub(super) struct SyslogStamp<'a> {
    month: u32,
    day: u32,
    clock: (u32, u32, u32),
    nanos: u32,
    /// The text after the stamp, without leading white space.
    rest: &'a str,
}

/// Reads `Nov 22 00:52:44[.frac] rest`: whether a line has a syslog
/// stamp depends on this alone (any such stamp has a place in time).
pub(super) fn syslog_stamp(line: &str) -> Option<SyslogStamp<'_>> {
    let month = MONTHS.iter().position(|m| line.starts_with(m))?;
    let rest = line.get(3..)?.strip_prefix(' ')?.trim_start_matches(' ');
    let (day, rest) = rest.split_once(' ')?;
    let day = digits(day)?;
    let clock = rest.get(..8)?;
    let cb = clock.as_bytes();
    if cb[2] != b':' || cb[5] != b':' {
        return None;
    }
    let (hour, minute, second) = (
        digits(&clock[0..2])?,
        digits(&clock[3..5])?,
        digits(&clock[6..8])?,
    );
    if !(1..=31).contains(&day) || !clock_valid(hour, minute, second) {
        return None;
    }
    let mut rest = &rest[8..];
    let mut nanos = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let end = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        let frac9: String = frac[..end]
            .chars()
            .chain(std::iter::repeat('0'))
            .take(9)
            .collect();
        nanos = frac9.parse().ok()?;
        rest = &frac[end..];
    }
    Some(SyslogStamp {
        month: u32::try_from(month).ok()? + 1,
        day,
        clock: (hour, minute, second),
        nanos,
        rest: rest.trim_start(),
    })
}

/// Unix seconds of a syslog stamp (no year, local time) read at `now_secs`
/// in a zone `offset` seconds east of UTC: in the current local year, or
/// the one before when that would put it a day or more ahead (December
/// lines read in January).
pub(super) fn syslog_secs(
    month: u32,
    day: u32,
    (hour, minute, second): (u32, u32, u32),
    now_secs: i64,
    offset: i64,
) -> i64 {
    let local = |year: i64| {
        days_from_civil(year, month, day) * 86_400
            + i64::from(hour) * 3600
            + i64::from(minute) * 60
            + i64::from(second)
    };
    let year = current_year(now_secs + offset);
    let secs = local(year) - offset;
    if secs >= now_secs + 86_400 {
        local(year - 1) - offset
    } else {
        secs
    }
}

pub(super) fn current_year(now_secs: i64) -> i64 {
    // Civil-from-days, year only.
    let z = now_secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month_is_jan_or_feb = mp >= 10;
    yoe + era * 400 + i64::from(month_is_jan_or_feb)
}

/// The local time zone's offset from UTC in seconds at `now`.
pub(super) fn local_offset(now_secs: i64) -> i64 {
    // Every line of a scan is read against the same `now`: remember the
    // last answer instead of asking libc (and its time-zone lock) per line.
    thread_local! {
        static LAST: std::cell::Cell<Option<(i64, i64)>> = const { std::cell::Cell::new(None) };
    }
    if let Some((at, offset)) = LAST.get()
        && at == now_secs
    {
        return offset;
    }
    let offset = local_offset_uncached(now_secs);
    LAST.set(Some((now_secs, offset)));
    offset
}

pub(super) fn local_offset_uncached(now_secs: i64) -> i64 {
    let time: libc::time_t = now_secs;
    // SAFETY: `tm` is plain data, zero-initialised; localtime_r writes into
    // it and reads only `time`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    let result = unsafe { libc::localtime_r(&raw const time, &raw mut tm) };
    if result.is_null() { 0 } else { tm.tm_gmtoff }
}
