//! The sliding window: two fixed windows, the previous one weighted by how
//! much of it the sliding window still covers. O(1) memory per key, the
//! same arithmetic locally and in Redis. Windows are aligned on the Unix
//! epoch, so every node of a fleet agrees on where each one starts.

/// The counts of one key: the fixed window that holds `now`, and the one
/// before it. Times are Unix milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Start of the current fixed window.
    pub start: u64,
    /// Counted in the current fixed window.
    pub current: u64,
    /// Counted in the fixed window before it.
    pub previous: u64,
}

/// The start of the fixed window of length `length` that holds `now`.
pub const fn window_start(now: u64, length: u64) -> u64 {
    now - now % length
}

/// The sliding count at `now`: the previous window's count weighted by the
/// part of it the sliding window still covers, plus the current count.
/// Rounded down: a limit of `n` lets `n` through.
pub fn estimate(current: u64, previous: u64, now: u64, length: u64) -> u64 {
    let into = now % length;
    let weight = u128::from(length - into);
    let carried = u128::from(previous) * weight / u128::from(length);
    current.saturating_add(u64::try_from(carried).unwrap_or(u64::MAX))
}

impl Window {
    /// Moves the window to the one holding `now`: one step makes the
    /// current count the previous one; more forget both. A clock that went
    /// back keeps the window where it was.
    pub fn advance(&mut self, now: u64, length: u64) {
        let start = window_start(now, length);
        if start <= self.start {
            return;
        }
        self.previous = if start - self.start == length {
            self.current
        } else {
            0
        };
        self.current = 0;
        self.start = start;
    }

    /// Adds `add` at `now` and returns the sliding count.
    pub fn add(&mut self, add: u64, now: u64, length: u64) -> u64 {
        self.advance(now, length);
        self.current = self.current.saturating_add(add);
        self.sliding(now, length)
    }

    /// The sliding count at `now` (which must be in the current window).
    pub fn sliding(&self, now: u64, length: u64) -> u64 {
        estimate(self.current, self.previous, now.max(self.start), length)
    }

    /// Whether nothing the window holds counts at `now` any more.
    pub const fn expired(&self, now: u64, length: u64) -> bool {
        now >= self.start.saturating_add(length.saturating_mul(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn counts_add_up_within_one_fixed_window() {
        let mut window = Window::default();
        let base = 100 * HOUR;
        for i in 1..=5 {
            assert_eq!(window.add(1, base + i, HOUR), i);
        }
        assert_eq!(window.start, base);
    }

    #[test]
    fn the_previous_window_fades_as_the_sliding_window_leaves_it() {
        let mut window = Window::default();
        let base = 100 * HOUR;
        assert_eq!(window.add(100, base + 10, HOUR), 100);
        // A quarter into the next window: three quarters of 100 remain.
        assert_eq!(window.add(1, base + HOUR + HOUR / 4, HOUR), 76);
        assert_eq!(window.previous, 100);
        // Half way: half of 100.
        assert_eq!(window.sliding(base + HOUR + HOUR / 2, HOUR), 51);
        // Two windows on, nothing of the first is left.
        assert_eq!(window.add(0, base + 2 * HOUR, HOUR), 1);
        assert_eq!(window.add(0, base + 4 * HOUR, HOUR), 0);
        assert!(window.expired(base + 6 * HOUR, HOUR));
        assert!(!window.expired(base + 5 * HOUR, HOUR));
    }

    #[test]
    fn a_clock_that_goes_back_keeps_the_counts() {
        let mut window = Window::default();
        let base = 100 * HOUR;
        window.add(3, base + HOUR, HOUR);
        assert_eq!(window.add(1, base + 5, HOUR), 4);
        assert_eq!(window.start, base + HOUR);
    }

    #[test]
    fn extreme_counts_saturate() {
        assert_eq!(estimate(u64::MAX, u64::MAX, 0, HOUR), u64::MAX);
        let mut window = Window {
            start: 0,
            current: u64::MAX,
            previous: 0,
        };
        assert_eq!(window.add(u64::MAX, 1, HOUR), u64::MAX);
        assert!(!Window::default().expired(u64::MAX - 1, u64::MAX));
    }
}
