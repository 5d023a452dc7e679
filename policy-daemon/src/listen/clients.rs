//! The live clients of a listener: a cap, and which client to close to
//! admit another.
//!
//! A client is *idle* while the server waits for the first byte of its
//! next request, and *busy* from that byte until the answer is written.
//! At the cap a new client is admitted at once by closing the client that
//! has been idle longest; a busy one is never closed for it. Asking for
//! admission never waits, so an accept loop cannot be held up by clients
//! that keep their connections open.
//!
//! Turning busy and idle, twice per request, is a compare-and-swap on the
//! client's own word. Only admitting and leaving take the lock; admitting
//! at the cap looks at every admitted client's word to find the one idle
//! the longest.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::sync::{Notify, oneshot};

/// A client's state in one word, so that marking the start and the end
/// of each request is one compare-and-swap and takes no lock: busy,
/// closed (to admit another, or gone), or idle since `1 + n`
/// nanoseconds after [`Clients`]' epoch. The transitions race only with
/// an admission closing the client, and exactly one of them wins.
const BUSY: u64 = 0;
const CLOSED: u64 = u64::MAX;

/// The clients of one listener (or of several that share a cap).
#[derive(Debug)]
pub struct Clients {
    cap: usize,
    /// The origin of the idle instants kept in the state words.
    epoch: Instant,
    /// Locked to admit a client and when one leaves, never per request.
    registry: Mutex<Registry>,
    /// Clients waiting for admission (see [`Clients::wait_ticket`]).
    waiting: AtomicUsize,
    /// Woken when a client leaves or turns idle: a waiting client may now
    /// get in.
    changed: Notify,
}

/// The admitted clients, in places reused after a client leaves.
#[derive(Debug, Default)]
struct Registry {
    places: Vec<Option<Entry>>,
    free: Vec<usize>,
    live: usize,
}

#[derive(Debug)]
struct Entry {
    state: Arc<AtomicU64>,
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
            epoch: Instant::now(),
            registry: Mutex::default(),
            waiting: AtomicUsize::new(0),
            changed: Notify::new(),
        })
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state word of a client idle from `now`.
    fn idle_since(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(CLOSED - 2).min(CLOSED - 2) + 1
    }

    /// Admits a client, idle from now on: into a free place, or into the
    /// place of the client idle the longest, which is told to close.
    /// `None` when every admitted client is busy. Never waits.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut registry = self.registry();
        let mut closed_idle = false;
        if registry.live >= self.cap {
            let place = Self::close_longest_idle(&mut registry)?;
            // Dropping the entry drops its sender: the client sees
            // `Slot::closed` resolve.
            registry.places[place] = None;
            registry.free.push(place);
            registry.live -= 1;
            closed_idle = true;
        }
        let state = Arc::new(AtomicU64::new(self.idle_since(Instant::now())));
        let (close, closed) = oneshot::channel();
        let entry = Entry {
            state: Arc::clone(&state),
            _close: close,
        };
        let place = if let Some(place) = registry.free.pop() {
            registry.places[place] = Some(entry);
            place
        } else {
            registry.places.push(Some(entry));
            registry.places.len() - 1
        };
        registry.live += 1;
        drop(registry);
        Some(Admitted {
            slot: Slot {
                clients: Arc::clone(self),
                place,
                state,
                closed,
            },
            closed_idle,
        })
    }

    /// Marks the client idle the longest closed and returns its place;
    /// `None` when every client is busy. Equal instants go to the lower
    /// place.
    fn close_longest_idle(registry: &mut Registry) -> Option<usize> {
        loop {
            let (since, place) = registry
                .places
                .iter()
                .enumerate()
                .filter_map(|(place, entry)| {
                    let since = entry.as_ref()?.state.load(Ordering::SeqCst);
                    (since != BUSY && since != CLOSED).then_some((since, place))
                })
                .min()?;
            let state = &registry.places[place].as_ref()?.state;
            // Lost only to the client starting a request (or turning idle
            // again) in between: look again.
            if state
                .compare_exchange(since, CLOSED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Some(place);
            }
        }
    }

    /// A place in the queue of clients waiting for admission while every
    /// admitted one is busy; `None` when `limit` clients wait already.
    pub fn wait_ticket(self: &Arc<Self>, limit: usize) -> Option<WaitTicket> {
        self.waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |waiting| {
                (waiting < limit).then_some(waiting + 1)
            })
            .ok()?;
        Some(WaitTicket {
            clients: Arc::clone(self),
        })
    }

    /// Wakes the waiting clients, if any, after a client turned idle or
    /// left.
    fn wake_waiting(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Clients admitted now.
    pub fn len(&self) -> usize {
        self.registry().live
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Admitted clients idle now: waiting for their next request.
    pub fn idle_count(&self) -> usize {
        self.registry()
            .places
            .iter()
            .flatten()
            .filter(|entry| {
                let state = entry.state.load(Ordering::SeqCst);
                state != BUSY && state != CLOSED
            })
            .count()
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
    /// Where the registry keeps this client, until it is closed to admit
    /// another; the place may then be another client's.
    place: usize,
    state: Arc<AtomicU64>,
    closed: oneshot::Receiver<()>,
}

impl Slot {
    /// Marks the client busy: it received the first byte of a request.
    /// `false` when it was closed to admit another before that (the
    /// caller then closes the connection).
    pub fn busy(&mut self) -> bool {
        let mut since = self.state.load(Ordering::SeqCst);
        loop {
            match since {
                BUSY => return true,
                CLOSED => return false,
                _ => match self.state.compare_exchange_weak(
                    since,
                    BUSY,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => return true,
                    Err(now) => since = now,
                },
            }
        }
    }

    /// Marks the client idle from now: its answer is written and no other
    /// request has begun.
    pub fn idle(&mut self) {
        if self.state.load(Ordering::SeqCst) == BUSY {
            self.idle_at(Instant::now());
        }
    }

    /// Marks the client idle from `now`, the caller's reading of the
    /// clock (see [`Slot::idle`]).
    pub fn idle_at(&mut self, now: Instant) {
        if self.state.load(Ordering::SeqCst) != BUSY {
            return;
        }
        let since = self.clients.idle_since(now);
        // Fails only when the client is closed (a busy one never is) or
        // already idle.
        if self
            .state
            .compare_exchange(BUSY, since, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.clients.wake_waiting();
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
        let mut registry = self.clients.registry();
        let Registry { places, free, live } = &mut *registry;
        // Still this client's place, unless it was closed to admit another.
        if let Some(place) = places.get_mut(self.place)
            && place
                .as_ref()
                .is_some_and(|entry| Arc::ptr_eq(&entry.state, &self.state))
        {
            self.state.store(CLOSED, Ordering::SeqCst);
            *place = None;
            free.push(self.place);
            *live -= 1;
        }
        drop(registry);
        self.clients.wake_waiting();
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
        let _ = self
            .clients
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |waiting| {
                waiting.checked_sub(1)
            });
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
    fn a_closed_client_leaving_late_frees_nothing_of_its_successor() {
        let clients = Clients::new(1);
        let mut first = clients.admit().expect("first").slot;
        let mut second = clients.admit().expect("first is idle").slot;
        assert!(was_closed(&mut first));
        // `second` took the place `first` had; `first` leaves only now.
        drop(first);
        assert_eq!(clients.len(), 1);
        assert!(second.busy());
        assert!(
            clients.admit().is_none(),
            "second is busy and still counted"
        );
        second.idle();
        drop(second);
        assert!(clients.is_empty());
        let third = clients.admit().expect("room");
        assert!(!third.closed_idle);
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
