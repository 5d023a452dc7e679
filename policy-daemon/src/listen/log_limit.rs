//! Warnings a peer can provoke at will, limited to one per interval.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Lets one message through per interval and counts the others, so a peer
/// that provokes a warning thousands of times a second costs one log line
/// a second, and that line says how many it stands for.
#[derive(Debug)]
pub struct LogLimit {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last: Option<Instant>,
    held_back: u64,
}

impl LogLimit {
    /// At most one message per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(State {
                last: None,
                held_back: 0,
            }),
        }
    }

    /// `Some(n)`: log this message now; `n` messages were held back since
    /// the last one logged. `None`: hold this one back.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                state.held_back += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_interval_and_the_count_of_the_others() {
        let limit = LogLimit::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(limit.check_at(start), Some(0));
        for ms in [1, 500, 999] {
            assert_eq!(limit.check_at(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(limit.check_at(start + Duration::from_secs(1)), Some(3));
        assert_eq!(limit.check_at(start + Duration::from_millis(1001)), None);
        assert_eq!(limit.check_at(start + Duration::from_secs(5)), Some(1));
        assert_eq!(limit.check_at(start + Duration::from_secs(7)), Some(0));
    }
}
