//! The ban manager's lock, shared by short holds (a ban, an unban, a
//! request's lookups) and by long walks over every ban (reconciliation,
//! `stats`, purging history) that take it one step at a time.
//!
//! A walk steps back for whoever waits: before each step it lets every
//! short hold that is waiting go first. Without this, a walk that takes
//! the lock again right after releasing it can win it over and over
//! against a ban whose thread is spinning or yielding on the same CPU,
//! and the ban waits for many steps instead of at most one.
//!
//! How long a short hold waited, when it had to, goes to the histogram
//! [`crate::metrics::MANAGER_LOCK_WAIT`]: what the ban path waited for
//! walks, bulk bans and feeds.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use parking_lot::{Mutex, MutexGuard};

/// How long a walk's step waits for short holds at most, so that a
/// stream of bans without pause cannot hold a walk back for ever.
const STEP_DEFERRAL: Duration = Duration::from_millis(20);

/// How long a waiting step sleeps between looks.
const STEP_PAUSE: Duration = Duration::from_micros(20);

/// A mutex whose long walks give way to its short holds.
#[derive(Debug)]
pub struct WalkLock<T> {
    mutex: Mutex<T>,
    /// Short holds waiting for the mutex.
    waiting: AtomicUsize,
}

impl<T> WalkLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            mutex: Mutex::new(value),
            waiting: AtomicUsize::new(0),
        }
    }

    /// A short hold: waits its turn, ahead of any walk's next step.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if let Some(guard) = self.mutex.try_lock() {
            return guard;
        }
        let started = Instant::now();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let guard = self.mutex.lock();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        metrics::histogram!(crate::metrics::MANAGER_LOCK_WAIT)
            .record(started.elapsed().as_secs_f64());
        guard
    }

    /// One step of a long walk: waits until no short hold waits (or
    /// [`STEP_DEFERRAL`] has passed), runs `step` under the lock, then
    /// hands the lock to whoever waits for it.
    pub fn step<R>(&self, step: impl FnOnce(&mut T) -> R) -> R {
        let started = Instant::now();
        while self.waiting.load(Ordering::SeqCst) > 0 && started.elapsed() < STEP_DEFERRAL {
            std::thread::sleep(STEP_PAUSE);
        }
        let mut guard = self.mutex.lock();
        let out = step(&mut guard);
        MutexGuard::unlock_fair(guard);
        out
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_step_waits_while_a_short_hold_waits() {
        let lock = Arc::new(WalkLock::new(0_u32));
        // A short hold waiting for the lock, as [`WalkLock::lock`] counts it.
        lock.waiting.fetch_add(1, Ordering::SeqCst);
        let walk = {
            let lock = Arc::clone(&lock);
            std::thread::spawn(move || lock.step(|n| *n += 1))
        };
        std::thread::sleep(STEP_DEFERRAL / 4);
        assert_eq!(
            *lock.mutex.lock(),
            0,
            "the step ran ahead of a waiting short hold"
        );
        lock.waiting.fetch_sub(1, Ordering::SeqCst);
        walk.join().unwrap();
        assert_eq!(*lock.lock(), 1);
    }

    #[test]
    fn a_step_goes_ahead_once_it_has_deferred_long_enough() {
        let lock = WalkLock::new(0_u32);
        // A short hold counted as waiting that never takes the lock.
        lock.waiting.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        lock.step(|n| *n += 1);
        assert!(started.elapsed() >= STEP_DEFERRAL);
        assert_eq!(*lock.lock(), 1);
    }

    #[test]
    fn short_holds_and_steps_all_run() {
        let lock = Arc::new(WalkLock::new(0_u64));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        if i % 2 == 0 {
                            *lock.lock() += 1;
                        } else {
                            lock.step(|n| *n += 1);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(*lock.lock(), 4_000);
        assert_eq!(lock.waiting.load(Ordering::SeqCst), 0);
    }
}
