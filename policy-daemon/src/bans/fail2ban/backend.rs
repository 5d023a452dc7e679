//! The fail2ban backend: a durable outbox and one worker thread that
//! delivers it.
//!
//! [`Fail2banBackend::ban`] and [`unban`](Fail2banBackend::unban) store the
//! operation in the [`OutboxStore`] before returning, so an accepted
//! operation survives a daemon crash. The worker sends operations in the
//! order they were accepted, consecutive ones of the same kind in one
//! command, and removes them from the outbox only after fail2ban's reply
//! acknowledged them. While fail2ban is down, unreachable or lacks the
//! jail, it retries with exponential backoff, reconnecting as needed.

use std::{
    collections::VecDeque,
    error::Error,
    io,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread,
    time::{Duration, Instant},
};

use ipnet::IpNet;

use super::{
    Fail2banHealth, Fail2banOp, Fail2banSettings, OpKind, OutboxStore,
    client::{Fail2banClient, Fail2banError},
};

/// Most operations sent in one command. fail2ban runs the action per
/// address either way; batching saves round trips and keeps each reply
/// within the client's timeout.
pub const BATCH_SIZE: usize = 64;

type BoxError = Box<dyn Error + Send + Sync>;

/// Why the backend could not start or accept an operation.
#[derive(Debug, thiserror::Error)]
pub enum Fail2banBackendError {
    #[error("[fail2ban] jail {jail:?}: {reason}")]
    InvalidJail { jail: String, reason: &'static str },
    #[error("fail2ban outbox: cannot {operation}: {source}")]
    Outbox { operation: String, source: BoxError },
    #[error("cannot start the fail2ban delivery thread: {0}")]
    Spawn(#[source] io::Error),
}

/// Delivers bans and unbans to one fail2ban jail. Dropping it stops the
/// worker (waiting for an exchange in progress, at most the configured
/// timeout); undelivered operations stay in the outbox for the next start.
pub struct Fail2banBackend {
    shared: Arc<Shared>,
    worker: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Fail2banBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fail2banBackend")
            .field("settings", &self.shared.settings)
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

impl Fail2banBackend {
    /// Loads the operations `outbox` still holds and starts delivering
    /// them, then whatever is submitted later. No I/O with fail2ban happens
    /// here: an absent fail2ban shows in [`health`](Self::health).
    pub fn start<S>(
        settings: Fail2banSettings,
        outbox: Arc<S>,
    ) -> Result<Self, Fail2banBackendError>
    where
        S: OutboxStore + 'static,
    {
        check_jail_name(&settings.jail)?;
        let pending = outbox.pending().map_err(|e| Fail2banBackendError::Outbox {
            operation: "read the operations still to deliver".into(),
            source: Box::new(e),
        })?;
        if !pending.is_empty() {
            tracing::info!(
                "fail2ban: {} operation(s) accepted before the last stop are queued for jail {:?}",
                pending.len(),
                settings.jail
            );
        }
        let shared = Arc::new(Shared {
            settings,
            outbox: Box::new(outbox),
            state: Mutex::new(State {
                queue: pending.into(),
                health: Fail2banHealth::default(),
                shutdown: false,
            }),
            wake: Condvar::new(),
            progress: Condvar::new(),
        });
        let worker = thread::Builder::new()
            .name("fail2ban".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || Worker::new(&shared).run()
            })
            .map_err(Fail2banBackendError::Spawn)?;
        Ok(Self {
            shared,
            worker: Some(worker),
        })
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Queues a ban of `target` (address or prefix); returns its outbox id
    /// once it is stored.
    pub fn ban(&self, target: IpNet) -> Result<u64, Fail2banBackendError> {
        self.submit(Fail2banOp::ban(target))
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Queues lifting the ban on `target`.
    pub fn unban(&self, target: IpNet) -> Result<u64, Fail2banBackendError> {
        self.submit(Fail2banOp::unban(target))
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Stores `op` in the outbox and queues it behind every operation
    /// accepted before it.
    pub fn submit(&self, op: Fail2banOp) -> Result<u64, Fail2banBackendError> {
        let mut state = self.shared.lock();
        let id = self
            .shared
            .outbox
            .push_many(std::slice::from_ref(&op))
            .map(|ids| ids.first().copied().unwrap_or_default())
            .map_err(|source| Fail2banBackendError::Outbox {
                operation: format!("queue `{op}` for jail {:?}", self.shared.settings.jail),
                source,
            })?;
        state.queue.push_back((id, op));
        drop(state);
        self.shared.wake.notify_all();
        Ok(id)
    }

    /// Stores and queues several operations in one outbox write.
    pub fn submit_many(&self, ops: Vec<Fail2banOp>) -> Result<(), Fail2banBackendError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut state = self.shared.lock();
        let ids =
            self.shared
                .outbox
                .push_many(&ops)
                .map_err(|source| Fail2banBackendError::Outbox {
                    operation: format!(
                        "queue {} operations for jail {:?}",
                        ops.len(),
                        self.shared.settings.jail
                    ),
                    source,
                })?;
        state.queue.extend(ids.into_iter().zip(ops));
        drop(state);
        self.shared.wake.notify_all();
        Ok(())
    }

    /// Connection state, queue depth and counters.
    pub fn health(&self) -> Fail2banHealth {
        let state = self.shared.lock();
        Fail2banHealth {
            queue_depth: state.queue.len() as u64,
            ..state.health.clone()
        }
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Waits until every queued operation was acknowledged or `timeout`
    /// passed; returns whether the queue is empty.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !state.queue.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .progress
                .wait_timeout(state, left)
                .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
        }
        true
    }

    pub fn settings(&self) -> &Fail2banSettings {
        &self.shared.settings
    }

    #[cfg(any(test, feature = "test-support"))]
    /// Stops the worker and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_all();
        if let Some(worker) = self.worker.take()
            && worker.join().is_err()
        {
            tracing::error!("fail2ban delivery thread panicked");
        }
    }
}

impl Drop for Fail2banBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `jail` can name a fail2ban jail in a command: not empty, no
/// white space or control characters, no `<` or `>` (fail2ban's command
/// markers). `check-config` and the backend use this one rule.
pub fn check_jail_name(jail: &str) -> Result<(), Fail2banBackendError> {
    let reason = if jail.is_empty() {
        "is empty"
    } else if jail.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "contains white space"
    } else if jail.contains('<') || jail.contains('>') {
        "contains '<' or '>'"
    } else {
        return Ok(());
    };
    Err(Fail2banBackendError::InvalidJail {
        jail: jail.to_owned(),
        reason,
    })
}

/// [`OutboxStore`] with its error type erased, so the backend is not
/// generic.
trait DynOutbox: Send + Sync {
    fn push_many(&self, ops: &[Fail2banOp]) -> Result<Vec<u64>, BoxError>;
    fn remove(&self, id: u64) -> Result<(), BoxError>;
}

impl<S: OutboxStore> DynOutbox for Arc<S> {
    fn push_many(&self, ops: &[Fail2banOp]) -> Result<Vec<u64>, BoxError> {
        S::push_many(self, ops).map_err(|e| Box::new(e) as BoxError)
    }

    fn remove(&self, id: u64) -> Result<(), BoxError> {
        S::remove(self, id).map_err(|e| Box::new(e) as BoxError)
    }
}

struct Shared {
    settings: Fail2banSettings,
    outbox: Box<dyn DynOutbox>,
    state: Mutex<State>,
    /// Wakes the worker: new operations or shutdown.
    wake: Condvar,
    /// Wakes `flush`: operations left the queue.
    progress: Condvar,
}

struct State {
    /// Accepted, not yet acknowledged; ascending ids.
    queue: VecDeque<(u64, Fail2banOp)>,
    /// `queue_depth` is filled in by `health()`.
    health: Fail2banHealth,
    shutdown: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere
        // must not stop delivery.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

enum Work {
    Deliver(Vec<(u64, Fail2banOp)>),
    Probe,
}

struct Worker<'a> {
    shared: &'a Shared,
    client: Fail2banClient,
    backoff: Duration,
    /// No exchange before this (backoff after a failure).
    next_attempt: Instant,
    /// When idle, check fail2ban and the jail at this time.
    next_probe: Instant,
    /// After a batch was refused, operations up to this id go one by one
    /// so only the refused one is dropped.
    one_by_one_until: Option<u64>,
}

impl<'a> Worker<'a> {
    fn new(shared: &'a Shared) -> Self {
        let settings = &shared.settings;
        let now = Instant::now();
        Self {
            shared,
            client: Fail2banClient::new(&settings.socket, settings.timeout),
            backoff: settings.backoff_initial,
            next_attempt: now,
            next_probe: now,
            one_by_one_until: None,
        }
    }

    fn run(mut self) {
        while let Some(work) = self.next_work() {
            let jail = &self.shared.settings.jail;
            let result = match &work {
                Work::Deliver(batch) => deliver(&mut self.client, jail, batch),
                Work::Probe => self.client.check_jail(jail),
            };
            match (result, work) {
                (Ok(()), work) => {
                    self.succeeded();
                    if let Work::Deliver(batch) = work {
                        self.acknowledged(&batch);
                    }
                }
                (Err(error), Work::Deliver(batch)) if error.refuses_command() => {
                    if let [(id, op)] = batch.as_slice() {
                        self.reject(*id, *op, &error);
                    } else {
                        // Find the culprit: resend the batch one by one.
                        self.one_by_one_until = batch.last().map(|(id, _)| *id);
                        self.record_error(&error);
                    }
                }
                (Err(error), _) => self.failed(&error),
            }
        }
        self.client.disconnect();
    }

    /// Blocks until there is something to do; `None` on shutdown.
    fn next_work(&mut self) -> Option<Work> {
        let mut state = self.shared.lock();
        loop {
            if state.shutdown {
                return None;
            }
            let now = Instant::now();
            if now >= self.next_attempt {
                if let Some(batch) = self.take_batch(&state.queue) {
                    return Some(Work::Deliver(batch));
                }
                if now >= self.next_probe {
                    return Some(Work::Probe);
                }
            }
            let wake_at = if state.queue.is_empty() {
                self.next_probe.max(self.next_attempt)
            } else {
                self.next_attempt
            };
            let wait = wake_at.saturating_duration_since(now);
            state = self
                .shared
                .wake
                .wait_timeout(state, wait)
                .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
        }
    }

    /// The oldest operations, as many consecutive ones of the same kind as
    /// fit in one command.
    fn take_batch(
        &mut self,
        queue: &VecDeque<(u64, Fail2banOp)>,
    ) -> Option<Vec<(u64, Fail2banOp)>> {
        let &(first_id, first) = queue.front()?;
        let limit = match self.one_by_one_until {
            Some(until) if first_id <= until => 1,
            _ => {
                self.one_by_one_until = None;
                BATCH_SIZE
            }
        };
        Some(
            queue
                .iter()
                .take(limit)
                .take_while(|(_, op)| op.kind == first.kind)
                .copied()
                .collect(),
        )
    }

    fn succeeded(&mut self) {
        let now = Instant::now();
        self.backoff = self.shared.settings.backoff_initial;
        self.next_attempt = now;
        self.next_probe = now + self.shared.settings.probe_interval;
        let mut state = self.shared.lock();
        if !state.health.connected {
            tracing::info!(
                "fail2ban: connected to {} (jail {:?})",
                self.shared.settings.socket.display(),
                self.shared.settings.jail
            );
        }
        state.health.connected = true;
        state.health.last_error = None;
    }

    fn failed(&mut self, error: &Fail2banError) {
        let now = Instant::now();
        tracing::warn!("{error}; retrying in {:?}", self.backoff);
        self.next_attempt = now + self.backoff;
        self.next_probe = self.next_attempt;
        self.backoff = (self.backoff * 2).min(self.shared.settings.backoff_max);
        self.record_error(error);
    }

    fn record_error(&self, error: &Fail2banError) {
        let mut state = self.shared.lock();
        state.health.connected = self.client.is_connected();
        state.health.errors += 1;
        state.health.last_error = Some(error.to_string());
    }

    /// fail2ban acknowledged `batch`: forget it.
    fn acknowledged(&self, batch: &[(u64, Fail2banOp)]) {
        for (id, op) in batch {
            self.forget(*id, *op);
        }
        let mut state = self.shared.lock();
        for (id, _) in batch {
            if state.queue.front().is_some_and(|(front, _)| front == id) {
                state.queue.pop_front();
            }
        }
        state.health.delivered += batch.len() as u64;
        drop(state);
        self.shared.progress.notify_all();
    }

    /// fail2ban refused `op` for good: drop it, loudly.
    fn reject(&self, id: u64, op: Fail2banOp, error: &Fail2banError) {
        tracing::error!("{error}; dropping `{op}` (fail2ban will not accept it)");
        self.forget(id, op);
        let mut state = self.shared.lock();
        if state.queue.front().is_some_and(|(front, _)| *front == id) {
            state.queue.pop_front();
        }
        state.health.errors += 1;
        state.health.rejected += 1;
        state.health.last_error = Some(error.to_string());
        drop(state);
        self.shared.progress.notify_all();
    }

    fn forget(&self, id: u64, op: Fail2banOp) {
        if let Err(error) = self.shared.outbox.remove(id) {
            // fail2ban has it; at worst it is sent again after a restart,
            // which fail2ban ignores.
            tracing::error!("fail2ban outbox: cannot remove delivered `{op}` (id {id}): {error}");
        }
    }
}

/// Sends one batch (all of one kind) as a single command.
fn deliver(
    client: &mut Fail2banClient,
    jail: &str,
    batch: &[(u64, Fail2banOp)],
) -> Result<(), Fail2banError> {
    let targets: Vec<IpNet> = batch.iter().map(|(_, op)| op.target).collect();
    match batch.first().map(|(_, op)| op.kind) {
        Some(OpKind::Ban) => client.ban_many(jail, &targets).map(drop),
        Some(OpKind::Unban) => client.unban_many(jail, &targets).map(drop),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        convert::Infallible,
        io::{Read, Write},
        os::unix::net::{UnixListener, UnixStream},
        path::{Path, PathBuf},
    };

    use super::*;
    use crate::bans::fail2ban::{
        client::END_MARKER,
        pickle::{Value, decode},
    };

    /// The outbox the tests hand to the backend, shared so they can look
    /// into it.
    #[derive(Default)]
    struct MemoryOutbox(Mutex<(u64, BTreeMap<u64, Fail2banOp>)>);

    impl OutboxStore for MemoryOutbox {
        type Error = Infallible;

        fn push(&self, op: &Fail2banOp) -> Result<u64, Infallible> {
            let mut inner = self.0.lock().expect("outbox lock");
            inner.0 += 1;
            let id = inner.0;
            inner.1.insert(id, *op);
            Ok(id)
        }

        fn pending(&self) -> Result<Vec<(u64, Fail2banOp)>, Infallible> {
            let inner = self.0.lock().expect("outbox lock");
            Ok(inner.1.iter().map(|(id, op)| (*id, *op)).collect())
        }

        fn remove(&self, id: u64) -> Result<(), Infallible> {
            self.0.lock().expect("outbox lock").1.remove(&id);
            Ok(())
        }
    }

    impl MemoryOutbox {
        fn len(&self) -> usize {
            self.0.lock().expect("outbox lock").1.len()
        }
    }

    /// How the fake fail2ban answers one command.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Answer {
        /// `(0, n)` with n the number of addresses.
        Count,
        UnknownJail,
        /// `(1, Exception('Invalid command'))`.
        Refuse,
        /// Close the connection without a reply.
        Hang,
    }

    /// A stand-in for fail2ban-server that records every command it reads
    /// and answers according to `answer`.
    struct FakeFail2ban {
        socket: PathBuf,
        commands: Arc<Mutex<Vec<Vec<String>>>>,
        stop: Arc<Mutex<bool>>,
        thread: Option<thread::JoinHandle<()>>,
    }

    type AnswerFn = dyn Fn(&[String], usize) -> Answer + Send + Sync;

    impl FakeFail2ban {
        fn start(socket: &Path, answer: Arc<AnswerFn>) -> Self {
            let listener = UnixListener::bind(socket).expect("bind fake fail2ban");
            listener.set_nonblocking(true).expect("nonblocking");
            let commands = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(Mutex::new(false));
            let thread = thread::spawn({
                let commands = Arc::clone(&commands);
                let stop = Arc::clone(&stop);
                move || {
                    while !*stop.lock().expect("stop lock") {
                        match listener.accept() {
                            Ok((stream, _)) => serve(stream, &commands, &*answer),
                            Err(_) => thread::sleep(Duration::from_millis(5)),
                        }
                    }
                }
            });
            Self {
                socket: socket.to_owned(),
                commands,
                stop,
                thread: Some(thread),
            }
        }

        fn commands(&self) -> Vec<Vec<String>> {
            self.commands.lock().expect("commands lock").clone()
        }
    }

    impl Drop for FakeFail2ban {
        fn drop(&mut self) {
            *self.stop.lock().expect("stop lock") = true;
            if let Some(thread) = self.thread.take() {
                thread.join().expect("fake fail2ban thread");
            }
            let _ = std::fs::remove_file(&self.socket);
        }
    }

    fn serve(mut stream: UnixStream, commands: &Mutex<Vec<Vec<String>>>, answer: &AnswerFn) {
        stream.set_nonblocking(false).expect("blocking");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buffer = Vec::new();
        let mut chunk = [0; 4096];
        loop {
            let Ok(read) = stream.read(&mut chunk) else {
                return;
            };
            if read == 0 {
                return;
            }
            buffer.extend_from_slice(&chunk[..read]);
            let Some(body) = buffer.strip_suffix(END_MARKER) else {
                continue;
            };
            let Ok(Value::List(items)) = decode(body) else {
                return;
            };
            buffer.clear();
            let command: Vec<String> = items
                .iter()
                .map(|item| item.as_str().expect("string argument").to_owned())
                .collect();
            let nth = {
                let mut commands = commands.lock().expect("commands lock");
                commands.push(command.clone());
                commands.len()
            };
            let reply: Vec<u8> = match answer(&command, nth) {
                Answer::Count => {
                    let n = u8::try_from(command.len().saturating_sub(3)).expect("small batch");
                    vec![0x80, 2, b'K', 0, b'K', n, 0x86, b'.']
                }
                Answer::UnknownJail => include_bytes!("testdata/unknown_jail.pickle").to_vec(),
                Answer::Refuse => include_bytes!("testdata/invalid_command.pickle").to_vec(),
                Answer::Hang => return,
            };
            if stream
                .write_all(&[&reply[..], END_MARKER].concat())
                .is_err()
            {
                return;
            }
        }
    }

    fn settings(socket: &Path) -> Fail2banSettings {
        Fail2banSettings {
            socket: socket.to_owned(),
            jail: "spamwall".into(),
            timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            probe_interval: Duration::from_mins(1),
        }
    }

    fn net(text: &str) -> IpNet {
        crate::bans::parse_target(text).expect("test target")
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn always(answer: Answer) -> Arc<AnswerFn> {
        Arc::new(move |_, _| answer)
    }

    fn deliveries(fake: &FakeFail2ban) -> Vec<String> {
        fake.commands()
            .into_iter()
            .filter(|c| c[0] == "set")
            .map(|c| c.join(" "))
            .collect()
    }

    #[test]
    fn operations_are_delivered_in_order_and_forgotten_after_the_ack() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("f2b.sock");
        let fake = FakeFail2ban::start(&socket, always(Answer::Count));
        let outbox = Arc::new(MemoryOutbox::default());
        let backend =
            Fail2banBackend::start(settings(&socket), Arc::clone(&outbox)).expect("start");
        backend.ban(net("192.0.2.7")).expect("ban");
        backend.ban(net("2001:db8::7")).expect("ban");
        backend.unban(net("192.0.2.7")).expect("unban");
        backend.ban(net("198.51.100.0/24")).expect("ban");
        assert!(
            backend.flush(Duration::from_secs(10)),
            "{:?}",
            backend.health()
        );
        let health = backend.health();
        assert_eq!(
            (health.delivered, health.queue_depth, health.errors),
            (4, 0, 0),
            "{health:?}"
        );
        assert!(health.connected);
        assert_eq!(outbox.len(), 0);
        // Consecutive bans may or may not share a command; the order holds.
        let mut merged: Vec<(String, Vec<String>)> = Vec::new();
        for command in fake.commands().into_iter().filter(|c| c[0] == "set") {
            match merged.last_mut() {
                Some((keyword, targets)) if *keyword == command[2] => {
                    targets.extend_from_slice(&command[3..]);
                }
                _ => merged.push((command[2].clone(), command[3..].to_vec())),
            }
        }
        let expected = [
            ("banip", &["192.0.2.7", "2001:db8::7"][..]),
            ("unbanip", &["192.0.2.7"]),
            ("banip", &["198.51.100.0/24"]),
        ]
        .map(|(k, t)| {
            (
                k.to_owned(),
                t.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>(),
            )
        });
        assert_eq!(merged, expected);
    }

    #[test]
    fn operations_from_a_previous_run_are_delivered_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("f2b.sock");
        let outbox = Arc::new(MemoryOutbox::default());
        outbox
            .push(&Fail2banOp::ban(net("192.0.2.1")))
            .expect("push");
        outbox
            .push(&Fail2banOp::unban(net("192.0.2.2")))
            .expect("push");
        let fake = FakeFail2ban::start(&socket, always(Answer::Count));
        let backend =
            Fail2banBackend::start(settings(&socket), Arc::clone(&outbox)).expect("start");
        backend.ban(net("192.0.2.3")).expect("ban");
        assert!(
            backend.flush(Duration::from_secs(10)),
            "{:?}",
            backend.health()
        );
        assert_eq!(
            deliveries(&fake),
            [
                "set spamwall banip 192.0.2.1",
                "set spamwall unbanip 192.0.2.2",
                "set spamwall banip 192.0.2.3"
            ]
        );
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn operations_wait_while_fail2ban_is_down_and_survive_a_restart_of_the_backend() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("f2b.sock");
        let outbox = Arc::new(MemoryOutbox::default());
        let backend =
            Fail2banBackend::start(settings(&socket), Arc::clone(&outbox)).expect("start");
        for i in 1..=3 {
            backend.ban(net(&format!("192.0.2.{i}"))).expect("ban");
        }
        wait_for("a failed attempt", || backend.health().errors >= 2);
        let health = backend.health();
        assert!(!health.connected);
        assert_eq!(health.queue_depth, 3);
        let error = health.last_error.expect("last error");
        assert!(error.contains(&socket.display().to_string()), "{error}");
        // The daemon stops before fail2ban returns: nothing is lost.
        backend.shutdown();
        assert_eq!(outbox.len(), 3);

        let fake = FakeFail2ban::start(&socket, always(Answer::Count));
        let backend =
            Fail2banBackend::start(settings(&socket), Arc::clone(&outbox)).expect("restart");
        assert!(
            backend.flush(Duration::from_secs(10)),
            "{:?}",
            backend.health()
        );
        assert_eq!(
            deliveries(&fake),
            ["set spamwall banip 192.0.2.1 192.0.2.2 192.0.2.3"]
        );
        assert_eq!(backend.health().delivered, 3);
        assert!(backend.health().last_error.is_none());
    }

    #[test]
    fn an_unknown_jail_keeps_operations_queued_and_names_the_jail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("f2b.sock");
        let _fake = FakeFail2ban::start(&socket, always(Answer::UnknownJail));
        let outbox = Arc::new(MemoryOutbox::default());
        let backend =
            Fail2banBackend::start(settings(&socket), Arc::clone(&outbox)).expect("start");
        backend.ban(net("192.0.2.7")).expect("ban");
        wait_for("an error", || backend.health().errors >= 2);
        let health = backend.health();
        assert!(health.connected, "{health:?}");
        assert_eq!(health.queue_depth, 1);
        let error = health.last_error.expect("last error");
        assert!(error.contains("no jail \"nojail\""), "{error}");
        assert_eq!(outbox.len(), 1);
    }

    #[test]
    fn a_refused_operation_is_dropped_and_the_rest_delivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("f2b.sock");
        let refuse_x: Arc<AnswerFn> = Arc::new(|command: &[String], _| {
            if command.iter().any(|arg| arg == "192.0.2.66") {
                Answer::Refuse
            } else {
                Answer::Count
            }
        });
        let fake = FakeFail2ban::start(&socket, refuse_x);
        let outbox = Arc::new(MemoryOutbox::default());
        let backend =
            Fail2banBackend::start(settings(&socket), Arc::clone(&outbox)).expect("start");
        // Queued before the worker can take them, so they form one batch.
        let mut state = backend.shared.lock();
        for last in [1, 66, 3] {
            let op = Fail2banOp::ban(net(&format!("192.0.2.{last}")));
            let id = outbox.push(&op).expect("push");
            state.queue.push_back((id, op));
        }
        drop(state);
        backend.shared.wake.notify_all();
        assert!(
            backend.flush(Duration::from_secs(10)),
            "{:?}",
            backend.health()
        );
        let health = backend.health();
        assert_eq!((health.delivered, health.rejected), (2, 1), "{health:?}");
        assert_eq!(health.errors, 2, "the batch, then the single operation");
        assert_eq!(
            deliveries(&fake),
            [
                "set spamwall banip 192.0.2.1 192.0.2.66 192.0.2.3",
                "set spamwall banip 192.0.2.1",
                "set spamwall banip 192.0.2.66",
                "set spamwall banip 192.0.2.3",
            ]
        );
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn a_lost_reply_is_retried_on_a_new_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("f2b.sock");
        // The first command is read but never answered.
        let hang_once: Arc<AnswerFn> = Arc::new(|_, nth| {
            if nth == 1 {
                Answer::Hang
            } else {
                Answer::Count
            }
        });
        let fake = FakeFail2ban::start(&socket, hang_once);
        let outbox = Arc::new(MemoryOutbox::default());
        let backend = Fail2banBackend::start(
            Fail2banSettings {
                probe_interval: Duration::from_hours(1),
                ..settings(&socket)
            },
            Arc::clone(&outbox),
        )
        .expect("start");
        // Let the start-up probe take the hang.
        wait_for("the probe", || !fake.commands().is_empty());
        backend.ban(net("192.0.2.7")).expect("ban");
        assert!(
            backend.flush(Duration::from_secs(10)),
            "{:?}",
            backend.health()
        );
        assert_eq!(deliveries(&fake), ["set spamwall banip 192.0.2.7"]);
        assert_eq!(backend.health().delivered, 1);
    }

    #[test]
    fn jail_names_are_checked() {
        let outbox = Arc::new(MemoryOutbox::default());
        for bad in ["", "two words", "a<b>"] {
            let settings = Fail2banSettings {
                jail: bad.into(),
                ..Fail2banSettings::default()
            };
            let error = Fail2banBackend::start(settings, Arc::clone(&outbox)).expect_err(bad);
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
    }
}
