//! The live clients of a listener: a cap, and which client to close to
//! admit another.
//!
//! A client is *idle* while the server waits for the first byte of its
//! next request, and *busy* from that byte until the answer is written.
//! At the cap a new client is admitted at once by closing the client that
//! has been idle longest; a busy one is never closed for it. Asking for
//! admission never waits, so an accept loop cannot be held up by clients
//! that keep their connections open.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Instant,
};

use tokio::sync::{Notify, oneshot};

/// The clients of one listener (or of several that share a cap).
#[derive(Debug)]
pub struct Clients {
    cap: usize,
    state: Mutex<State>,
    /// Woken when a client leaves or turns idle: a waiting client may now
    /// get in.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    live: HashMap<u64, Entry>,
    /// Idle clients by the instant they turned idle, oldest first.
    idle: BTreeSet<(Instant, u64)>,
    /// Clients waiting for admission (see [`Clients::wait_ticket`]).
    waiting: usize,
}

#[derive(Debug)]
struct Entry {
    idle_since: Option<Instant>,
    /// Dropped to tell the client it was closed to admit another.
    _close: oneshot::Sender<()>,
}

/// A client admitted by [`Clients::admit`].
#[derive(Debug)]
pub struct Admitted {
    pub slot: Slot,
    /// Whether an idle client was closed to make room.
    pub closed_idle: bool,
}

impl Clients {
    /// At most `cap` clients at once (at least one).
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            state: Mutex::default(),
            changed: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a client, idle from now on: into a free place, or into the
    /// place of the client idle the longest, which is told to close.
    /// `None` when every admitted client is busy. Never waits.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut state = self.state();
        let mut closed_idle = false;
        if state.live.len() >= self.cap {
            let (_, oldest) = state.idle.pop_first()?;
            // Dropping the entry drops its sender: the client sees
            // `Slot::closed` resolve.
            state.live.remove(&oldest);
            closed_idle = true;
        }
        let id = state.next_id;
        state.next_id += 1;
        let now = Instant::now();
        let (close, closed) = oneshot::channel();
        state.live.insert(
            id,
            Entry {
                idle_since: Some(now),
                _close: close,
            },
        );
        state.idle.insert((now, id));
        drop(state);
        Some(Admitted {
            slot: Slot {
                clients: Arc::clone(self),
                id,
                closed,
            },
            closed_idle,
        })
    }

    /// A place in the queue of clients waiting for admission while every
    /// admitted one is busy; `None` when `limit` clients wait already.
    pub fn wait_ticket(self: &Arc<Self>, limit: usize) -> Option<WaitTicket> {
        let mut state = self.state();
        if state.waiting >= limit {
            return None;
        }
        state.waiting += 1;
        Some(WaitTicket {
            clients: Arc::clone(self),
        })
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Clients admitted now.
    pub fn len(&self) -> usize {
        self.state().live.len()
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Whether no client is admitted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An admitted client's place. Dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    clients: Arc<Clients>,
    id: u64,
    closed: oneshot::Receiver<()>,
}

impl Slot {
    /// Marks the client busy: it received the first byte of a request.
    /// `false` when it was closed to admit another before that (the
    /// caller then closes the connection).
    pub fn busy(&mut self) -> bool {
        let mut state = self.clients.state();
        let State { live, idle, .. } = &mut *state;
        let Some(entry) = live.get_mut(&self.id) else {
            return false;
        };
        if let Some(since) = entry.idle_since.take() {
            idle.remove(&(since, self.id));
        }
        true
    }

    /// Marks the client idle from now: its answer is written and no other
    /// request has begun.
    pub fn idle(&mut self) {
        let mut state = self.clients.state();
        let State {
            live,
            idle,
            waiting,
            ..
        } = &mut *state;
        let Some(entry) = live.get_mut(&self.id) else {
            return;
        };
        if entry.idle_since.is_none() {
            let now = Instant::now();
            entry.idle_since = Some(now);
            idle.insert((now, self.id));
            let anyone_waiting = *waiting > 0;
            drop(state);
            if anyone_waiting {
                self.clients.changed.notify_waiters();
            }
        }
    }

    /// Resolves once this client was closed to admit another. Cancel-safe;
    /// do not await it again after it resolved.
    pub async fn closed(&mut self) {
        let _ = (&mut self.closed).await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.clients.state();
        let State {
            live,
            idle,
            waiting,
            ..
        } = &mut *state;
        if let Some(entry) = live.remove(&self.id)
            && let Some(since) = entry.idle_since
        {
            idle.remove(&(since, self.id));
        }
        let anyone_waiting = *waiting > 0;
        drop(state);
        if anyone_waiting {
            self.clients.changed.notify_waiters();
        }
    }
}

/// A waiting client's place in the queue (see [`Clients::wait_ticket`]).
#[derive(Debug)]
pub struct WaitTicket {
    clients: Arc<Clients>,
}

impl WaitTicket {
    /// Waits until the client can be admitted: a place frees or an
    /// admitted client turns idle.
    pub async fn admit(self) -> Admitted {
        loop {
            let changed = self.clients.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a change in between is not
            // missed.
            changed.as_mut().enable();
            if let Some(admitted) = self.clients.admit() {
                return admitted;
            }
            changed.await;
        }
    }
}

impl Drop for WaitTicket {
    fn drop(&mut self) {
        let mut state = self.clients.state();
        state.waiting = state.waiting.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Whether `slot` was told to close (without waiting).
    fn was_closed(slot: &mut Slot) -> bool {
        !matches!(
            slot.closed.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        )
    }

    #[test]
    fn under_the_cap_nobody_is_closed() {
        let clients = Clients::new(3);
        let mut slots: Vec<Slot> = (0..3)
            .map(|_| {
                let admitted = clients.admit().expect("room");
                assert!(!admitted.closed_idle);
                admitted.slot
            })
            .collect();
        assert_eq!(clients.len(), 3);
        assert!(slots.iter_mut().all(|slot| !was_closed(slot)));
        drop(slots.pop());
        assert_eq!(clients.len(), 2);
    }

    #[test]
    fn at_the_cap_the_longest_idle_client_is_closed() {
        let clients = Clients::new(3);
        let mut first = clients.admit().expect("first").slot;
        std::thread::sleep(Duration::from_millis(2));
        let mut second = clients.admit().expect("second").slot;
        std::thread::sleep(Duration::from_millis(2));
        let mut third = clients.admit().expect("third").slot;
        // `first` turns busy and then idle again: now `second` has been
        // idle the longest.
        assert!(first.busy());
        std::thread::sleep(Duration::from_millis(2));
        first.idle();
        let fourth = clients.admit().expect("fourth");
        assert!(fourth.closed_idle);
        assert!(was_closed(&mut second), "second was idle the longest");
        assert!(!was_closed(&mut first) && !was_closed(&mut third));
        assert!(!second.busy(), "a closed client cannot start a request");
        assert_eq!(clients.len(), 3);
        let fifth = clients.admit().expect("fifth");
        assert!(was_closed(&mut third), "then third");
        assert!(!was_closed(&mut first));
        drop((fourth, fifth));
    }

    #[test]
    fn a_busy_client_is_never_closed() {
        let clients = Clients::new(2);
        let mut first = clients.admit().expect("first").slot;
        let mut second = clients.admit().expect("second").slot;
        assert!(first.busy() && second.busy());
        assert!(clients.admit().is_none(), "everyone is busy");
        assert!(!was_closed(&mut first) && !was_closed(&mut second));
        second.idle();
        let third = clients.admit().expect("second is idle now");
        assert!(third.closed_idle);
        assert!(was_closed(&mut second));
        assert!(!was_closed(&mut first));
    }

    #[test]
    fn the_waiting_queue_is_bounded() {
        let clients = Clients::new(1);
        let first = clients.wait_ticket(2).expect("first");
        let second = clients.wait_ticket(2).expect("second");
        assert!(clients.wait_ticket(2).is_none());
        drop(first);
        let third = clients.wait_ticket(2).expect("a place freed");
        drop((second, third));
    }

    #[tokio::test]
    async fn a_waiting_client_gets_in_when_a_busy_one_turns_idle() {
        let clients = Clients::new(1);
        let mut busy = clients.admit().expect("first").slot;
        assert!(busy.busy());
        let ticket = clients.wait_ticket(1).expect("ticket");
        let waiting = tokio::spawn(ticket.admit());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "nobody is idle yet");
        busy.idle();
        let admitted = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("admitted within 5 s")
            .expect("join");
        assert!(admitted.closed_idle);
        assert!(was_closed(&mut busy));
    }

    #[tokio::test]
    async fn a_waiting_client_gets_in_when_one_leaves() {
        let clients = Clients::new(1);
        let mut busy = clients.admit().expect("first").slot;
        assert!(busy.busy());
        let waiting = tokio::spawn(clients.wait_ticket(1).expect("ticket").admit());
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(busy);
        let admitted = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("admitted within 5 s")
            .expect("join");
        assert!(!admitted.closed_idle);
    }
}
