//! The program's clock. Ban expiries are written in `CLOCK_MONOTONIC`
//! nanoseconds; the program reads the kernel's tick count instead
//! (`bpf_jiffies64`, one load once inlined) and converts it with the scale
//! and offset measured here (see [`XdpSettings::clock_scale`]).
//!
//! [`XdpSettings::clock_scale`]: xdp_common::XdpSettings::clock_scale

use std::os::fd::AsFd as _;

use aya::{Ebpf, programs::Xdp};
use xdp_common::{CLOCK_PROGRAM_NAME, CLOCK_READING_SIZE};

use super::{DataplaneError, Result, sys};

/// Longest tick the conversion accepts (`HZ` = 100 is 10 ms).
const LONGEST_TICK_NS: u64 = 100_000_000;

/// Loads the object's clock program, runs it once, unloads it, and returns
/// `(clock_scale, clock_offset)`.
pub(super) fn measure(ebpf: &mut Ebpf) -> Result<(u64, u64)> {
    let scale = tick_ns()?;
    let program: &mut Xdp = ebpf
        .program_mut(CLOCK_PROGRAM_NAME)
        .ok_or_else(|| {
            failed(format!(
                "the XDP object has no program {CLOCK_PROGRAM_NAME}"
            ))
        })?
        .try_into()
        .map_err(|e| failed(format!("{CLOCK_PROGRAM_NAME}: {e}")))?;
    program
        .load()
        .map_err(|e| failed(format!("loading {CLOCK_PROGRAM_NAME}: {e}")))?;
    let reading = run(program);
    // The program is needed once; a failure to unload it only leaves it
    // loaded until this process exits.
    let _ = program.unload();
    let (clock, jiffies) = reading?;
    let offset = clock.wrapping_sub(jiffies.wrapping_mul(scale));
    Ok((scale, offset))
}

/// The clock and the tick count, read by the program in that order.
fn run(program: &Xdp) -> Result<(u64, u64)> {
    let fd = program
        .fd()
        .map_err(|e| failed(format!("{CLOCK_PROGRAM_NAME}: {e}")))?;
    // The smallest frame a test run takes is an Ethernet header.
    let frame = [0_u8; 64];
    let mut out = [0_u8; 64];
    sys::prog_test_run_out(fd.as_fd(), &frame, &mut out)
        .map_err(|e| failed(format!("running {CLOCK_PROGRAM_NAME}: {e}")))?;
    checked(reading(&out[..CLOCK_READING_SIZE]))
}

/// Neither clock reads zero on a running kernel (`jiffies` starts five
/// minutes before its wrap); a zero means the program wrote no reading.
fn checked((clock, jiffies): (u64, u64)) -> Result<(u64, u64)> {
    if clock == 0 || jiffies == 0 {
        return Err(failed(format!(
            "{CLOCK_PROGRAM_NAME} returned no reading (clock {clock}, jiffies {jiffies})"
        )));
    }
    Ok((clock, jiffies))
}

/// Splits the program's reading into the clock and the tick count.
fn reading(bytes: &[u8]) -> (u64, u64) {
    let word = |at: usize| {
        let mut word = [0_u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_ne_bytes(word)
    };
    (word(0), word(8))
}

/// The length of a tick: the resolution of `CLOCK_MONOTONIC_COARSE`,
/// which the kernel reports as its tick length.
fn tick_ns() -> Result<u64> {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `res` is a valid, writable timespec.
    if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &raw mut res) } != 0 {
        return Err(failed(format!(
            "clock_getres(CLOCK_MONOTONIC_COARSE): {}",
            std::io::Error::last_os_error()
        )));
    }
    let tick = u64::try_from(res.tv_sec)
        .ok()
        .zip(u64::try_from(res.tv_nsec).ok())
        .map(|(s, ns)| s * 1_000_000_000 + ns)
        .filter(|&tick| tick > 0 && tick <= LONGEST_TICK_NS)
        .ok_or_else(|| {
            failed(format!(
                "CLOCK_MONOTONIC_COARSE reports a resolution of {}s {}ns, not a tick length",
                res.tv_sec, res.tv_nsec
            ))
        })?;
    Ok(tick)
}

fn failed(detail: String) -> DataplaneError {
    DataplaneError::Clock { detail }
}

#[cfg(test)]
mod tests {
    use xdp_common::XdpSettings;

    use super::*;

    #[test]
    fn a_reading_is_the_clock_then_the_tick_count() {
        let mut bytes = [0_u8; CLOCK_READING_SIZE];
        bytes[..8].copy_from_slice(&5_000_000_000_u64.to_ne_bytes());
        bytes[8..].copy_from_slice(&4_294_967_296_u64.to_ne_bytes());
        assert_eq!(reading(&bytes), (5_000_000_000, 4_294_967_296));
    }

    #[test]
    fn a_frame_the_program_left_untouched_is_an_error() {
        let error = checked(reading(&[0; CLOCK_READING_SIZE])).expect_err("no reading");
        assert!(error.to_string().contains("returned no reading"), "{error}");
        assert_eq!(checked((5, 7)).expect("reading"), (5, 7));
    }

    #[test]
    fn the_tick_is_a_plausible_length() {
        let tick = tick_ns().expect("tick");
        // HZ is between 100 and 1000 on every kernel built for servers.
        assert!((1_000_000..=10_000_000).contains(&tick), "{tick}");
    }

    #[test]
    fn the_conversion_wraps_and_returns_the_reading() {
        // A tick count past where multiplying overflows: the offset wraps
        // too, and the reading converts back to its clock.
        let (clock, jiffies, scale) = (7_000_000_000_u64, u64::MAX / 3, 4_000_000);
        let offset = clock.wrapping_sub(jiffies.wrapping_mul(scale));
        assert_eq!(XdpSettings::clock_at(scale, offset, jiffies), clock);
        assert_eq!(
            XdpSettings::clock_at(scale, offset, jiffies + 250),
            clock + 250 * scale
        );
    }
}
