//! The load client the policy benchmark drives every server with.
//!
//! [`CONNECTIONS`] keep-alive TCP connections, each with one request in
//! flight at a time, as one Postfix smtpd process holds one: the next
//! request leaves when the answer to the last one is in. The connections
//! are spread over a few threads, each waiting on its connections with
//! one epoll set, so the client spends its share of the two CPUs on
//! system calls rather than on switching between sixteen threads. A
//! request is formatted into a reused buffer, and every answer is checked
//! against the action expected.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    sync::Barrier,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::Workload;

/// What a request should get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Reject,
    Dunno,
    /// Greylisted: deferred (`DEFER_IF_PERMIT`).
    #[allow(
        dead_code,
        reason = "the greylist benchmark's; the others share this client"
    )]
    Defer,
    /// A triplet seen before: deferred, or passed (`DUNNO`) once the
    /// delay is over.
    #[allow(
        dead_code,
        reason = "the greylist benchmark's; the others share this client"
    )]
    Retry,
}

/// Every host of 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24, each
/// with what `expect` says it should get, in a fixed pseudo-random order
/// (an LCG), so runs are comparable.
pub fn shuffled_clients(expect: impl Fn(Ipv4Addr) -> Expect) -> Vec<(Ipv4Addr, Expect)> {
    let mut clients = Vec::new();
    for net in [[192, 0, 2], [198, 51, 100], [203, 0, 113]] {
        for host in 1..=254_u8 {
            let addr = Ipv4Addr::new(net[0], net[1], net[2], host);
            clients.push((addr, expect(addr)));
        }
    }
    let mut state: u64 = 0x5eed;
    for i in (1..clients.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = usize::try_from(state >> 33).expect("31 bits fit usize") % (i + 1);
        clients.swap(i, j);
    }
    clients
}

/// The client of request `n` on connection `conn`: two requests (RCPTs)
/// per mail, connections spread over the list.
pub fn client_of(clients: &[(Ipv4Addr, Expect)], conn: usize, n: usize) -> (Ipv4Addr, Expect) {
    clients[(conn * 97 + n / 2) % clients.len()]
}

/// Writes request `n` of connection `conn` (mail `n / 2`, RCPT `n % 2`)
/// from `addr` into `text`, as Postfix sends it, with MAIL FROM
/// `sender<mail>@<sender_domain>`.
pub fn write_rcpt(
    text: &mut String,
    addr: Ipv4Addr,
    conn: usize,
    n: usize,
    sender_domain: impl std::fmt::Display,
) {
    write_rcpt_from(
        text,
        addr,
        conn,
        n,
        format_args!("sender{}@{sender_domain}", n / 2),
    );
}

/// [`write_rcpt`] with MAIL FROM `sender`.
pub fn write_rcpt_from(
    text: &mut String,
    addr: Ipv4Addr,
    conn: usize,
    n: usize,
    sender: impl std::fmt::Display,
) {
    let mail = n / 2;
    text.clear();
    write!(
        text,
        "request=smtpd_access_policy\n\
         protocol_state=RCPT\n\
         protocol_name=ESMTP\n\
         client_address={addr}\n\
         client_name=unknown\n\
         reverse_client_name=unknown\n\
         client_port={port}\n\
         helo_name=mail{mail}.example.net\n\
         sender={sender}\n\
         recipient=user{rcpt}@example.test\n\
         recipient_count={rcpt}\n\
         queue_id=\n\
         instance={conn:x}.{mail:x}.bench\n\
         size=0\n\
         server_address=127.0.0.1\n\
         server_port=25\n\
         stress=\n\
         \n",
        port = 40_000 + mail % 20_000,
        rcpt = n % 2,
    )
    .expect("writing to a String");
}

/// Keep-alive connections, as many Postfix smtpd processes.
pub const CONNECTIONS: usize = 16;
/// Unmeasured requests per connection before the clock starts: DNS
/// caches, preforked children and allocators warm up.
const WARMUP_REQUESTS: usize = 20;
/// How long one answer may take before the run fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long and how much to load a server.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub duration: Duration,
    /// Cap on measured requests per connection.
    pub requests: usize,
    /// Threads sharing the connections.
    pub threads: usize,
    /// Whether answers must be the chain's (the floor answers DUNNO to
    /// all; its answers are only checked to be one `action=` line).
    pub chain_answers: bool,
}

/// The outcome of one load run.
pub struct Load {
    pub requests: usize,
    pub elapsed: Duration,
    /// Nanoseconds, sorted.
    latencies: Vec<u32>,
    pub wrong: usize,
    pub first_wrong: Option<String>,
}

impl Load {
    #[expect(
        clippy::cast_precision_loss,
        reason = "request counts are far below 2^52"
    )]
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: usize) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (self.latencies.len() * p).div_ceil(100).max(1);
        Duration::from_nanos(u64::from(self.latencies[rank - 1]))
    }
}

/// Runs the load against `addr` and checks every answer.
pub fn measure(addr: SocketAddr, workload: &Workload, budget: Budget) -> Result<Load> {
    let threads = budget.threads.clamp(1, CONNECTIONS);
    let barrier = Barrier::new(threads + 1);
    let (elapsed, results) = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let conns: Vec<usize> = (t..CONNECTIONS).step_by(threads).collect();
                    let warmed = conns
                        .iter()
                        .map(|&conn| Connection::warmed(addr, workload, conn, budget))
                        .collect::<Result<Vec<_>>>()
                        .and_then(Poller::new);
                    // Everyone passes the barrier once, even after an error.
                    barrier.wait();
                    warmed.and_then(|poller| poller.run(workload, budget))
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let results: Vec<Result<Load>> = workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a load thread panicked")))
            })
            .collect();
        (started.elapsed(), results)
    });
    let mut total = Load {
        requests: 0,
        elapsed,
        latencies: Vec::new(),
        wrong: 0,
        first_wrong: None,
    };
    for result in results {
        let part = result?;
        total.requests += part.requests;
        total.latencies.extend(part.latencies);
        total.wrong += part.wrong;
        total.first_wrong = total.first_wrong.or(part.first_wrong);
    }
    total.latencies.sort_unstable();
    Ok(total)
}

/// One keep-alive connection.
struct Connection {
    conn: usize,
    stream: TcpStream,
    /// The next request's number.
    n: usize,
    expect: Expect,
    sent: Instant,
    /// Answer bytes read so far.
    answer: Vec<u8>,
    request: String,
    chain_answers: bool,
}

impl Connection {
    /// Opens connection `conn` and sends its unmeasured requests.
    fn warmed(addr: SocketAddr, workload: &Workload, conn: usize, budget: Budget) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, ANSWER_TIMEOUT)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let mut connection = Self {
            conn,
            stream,
            n: 0,
            expect: Expect::Dunno,
            sent: Instant::now(),
            answer: Vec::with_capacity(512),
            request: String::with_capacity(1024),
            chain_answers: budget.chain_answers,
        };
        let mut chunk = [0_u8; 512];
        for _ in 0..WARMUP_REQUESTS {
            connection.send(workload)?;
            while !connection.answered()? {
                let read = connection.stream.read(&mut chunk)?;
                ensure!(read > 0, "connection {conn}: closed by the server");
                connection.answer.extend_from_slice(&chunk[..read]);
            }
            if let Err(action) = connection.check_answer() {
                bail!("connection {conn}: unexpected answer {action:?} while warming up");
            }
        }
        Ok(connection)
    }

    /// Sends request `n` and counts it as sent now.
    fn send(&mut self, workload: &Workload) -> Result<()> {
        self.expect = workload.write_request(self.conn, self.n, &mut self.request);
        self.sent = Instant::now();
        self.stream
            .write_all(self.request.as_bytes())
            .with_context(|| format!("connection {}: sending request {}", self.conn, self.n))?;
        self.n += 1;
        Ok(())
    }

    /// Whether a complete answer is in the buffer; it must be the only
    /// thing there, as one request was sent.
    fn answered(&self) -> Result<bool> {
        let Some(end) = memchr_pair(&self.answer) else {
            return Ok(false);
        };
        ensure!(
            end + 2 == self.answer.len(),
            "connection {}: an answer nobody asked for after {:?}",
            self.conn,
            String::from_utf8_lossy(&self.answer[..end])
        );
        Ok(true)
    }

    /// Checks the complete answer in the buffer and empties it; `Err`
    /// carries a wrong answer's text.
    fn check_answer(&mut self) -> Result<(), String> {
        let action = &self.answer[..self.answer.len() - 2];
        let right = match self.expect {
            _ if !self.chain_answers => action.starts_with(b"action=") && !action.contains(&b'\n'),
            Expect::Reject => action
                .get(..b"action=reject sender ip".len())
                .is_some_and(|head| head.eq_ignore_ascii_case(b"action=reject sender ip")),
            Expect::Dunno => action.eq_ignore_ascii_case(b"action=dunno"),
            Expect::Defer => is_deferral(action),
            Expect::Retry => is_deferral(action) || action.eq_ignore_ascii_case(b"action=dunno"),
        };
        let result = if right {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(action).into_owned())
        };
        self.answer.clear();
        result
    }
}

/// Whether `action` is a greylisting deferral.
fn is_deferral(action: &[u8]) -> bool {
    action
        .get(..b"action=defer_if_permit ".len())
        .is_some_and(|head| head.eq_ignore_ascii_case(b"action=defer_if_permit "))
}

/// Where the first `\n\n` starts.
fn memchr_pair(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|pair| pair == b"\n\n")
}

/// The connections of one load thread and the epoll set they share.
struct Poller {
    epoll: std::os::fd::OwnedFd,
    connections: Vec<Connection>,
}

impl Poller {
    fn new(connections: Vec<Connection>) -> Result<Self> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: epoll_create1 takes no pointers.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        ensure!(
            raw >= 0,
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let epoll = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        for (i, connection) in connections.iter().enumerate() {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: both descriptors are open; `event` outlives the call.
            let added = unsafe {
                libc::epoll_ctl(
                    raw,
                    libc::EPOLL_CTL_ADD,
                    connection.stream.as_raw_fd(),
                    &raw mut event,
                )
            };
            ensure!(added == 0, "epoll_ctl: {}", std::io::Error::last_os_error());
        }
        Ok(Self { epoll, connections })
    }

    /// Measured requests until the count or the time is up; the answers
    /// in flight then are waited for and counted.
    fn run(mut self, workload: &Workload, budget: Budget) -> Result<Load> {
        use std::os::fd::AsRawFd as _;
        let started = Instant::now();
        let mut load = Load {
            requests: 0,
            elapsed: Duration::ZERO,
            latencies: Vec::with_capacity((budget.requests * self.connections.len()).min(1 << 22)),
            wrong: 0,
            first_wrong: None,
        };
        let mut measured = vec![0_usize; self.connections.len()];
        for connection in &mut self.connections {
            connection.send(workload)?;
        }
        let mut in_flight = self.connections.len();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 16];
        let mut chunk = [0_u8; 4096];
        let timeout = i32::try_from(ANSWER_TIMEOUT.as_millis()).unwrap_or(i32::MAX);
        while in_flight > 0 {
            // SAFETY: `events` is valid for its length.
            let ready = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    i32::try_from(events.len()).unwrap_or(i32::MAX),
                    timeout,
                )
            };
            if ready < 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                bail!("epoll_wait: {error}");
            }
            ensure!(ready > 0, "no answer within {ANSWER_TIMEOUT:?}");
            let time_up = started.elapsed() >= budget.duration;
            for event in &events[..usize::try_from(ready).unwrap_or(0)] {
                let i = usize::try_from(event.u64).unwrap_or(usize::MAX);
                let connection = &mut self.connections[i];
                let read = connection.stream.read(&mut chunk).with_context(|| {
                    format!(
                        "connection {}: reading answer {}",
                        connection.conn, connection.n
                    )
                })?;
                ensure!(
                    read > 0,
                    "connection {}: closed by the server at request {}",
                    connection.conn,
                    connection.n
                );
                connection.answer.extend_from_slice(&chunk[..read]);
                if !connection.answered()? {
                    continue;
                }
                let nanos = connection.sent.elapsed().as_nanos();
                load.latencies
                    .push(u32::try_from(nanos).unwrap_or(u32::MAX));
                load.requests += 1;
                measured[i] += 1;
                if let Err(action) = connection.check_answer() {
                    load.wrong += 1;
                    if load.first_wrong.is_none() {
                        let (addr, _) = workload.client(connection.conn, connection.n - 1);
                        load.first_wrong = Some(format!(
                            "{addr}: expected {:?}, got {action:?}",
                            connection.expect
                        ));
                    }
                }
                if time_up || measured[i] >= budget.requests {
                    in_flight -= 1;
                } else {
                    connection.send(workload)?;
                }
            }
        }
        Ok(load)
    }
}
