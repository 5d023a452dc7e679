//! The policy listeners: TCP and UNIX sockets, keep-alive connections,
//! limits and timeouts.
//!
//! At most `max_connections` connections are served at once, over all
//! listeners. A connection is idle while it waits for its next request and
//! busy from the request's first byte until the answer is written. When a
//! connection arrives at the cap, the one idle the longest is closed to
//! admit it (Postfix reconnects when it needs that one again); a busy one
//! is never closed for it. When every connection is busy, the newcomer
//! waits, up to `max_connections` of them, until one turns idle or leaves;
//! beyond that it is closed at once. The accept loop itself never waits
//! for a place, so idle clients can neither starve Postfix nor hold up
//! shutdown.
//!
//! A client that sends nothing is closed after `idle_timeout`, one that
//! starts a request and stalls after `request_timeout`. A request whose
//! framing breaks (a line without `=`, a limit crossed) is logged with the
//! peer and the reason, and its connection closed; an attribute with an
//! unusable name or value is left out, logged with the peer, and the
//! request answered from the others.

use std::{
    fs, io,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
};

use tokio::{
    net::{TcpListener, UnixListener},
    sync::watch,
};
use tracing::{debug, warn};

use super::{
    PolicyError,
    config::ListenAddr,
    connection::serve_connection,
    service::Service,
    workers::{Job, Workers},
};
use crate::listen::{Slot, WaitTicket, next_connection};

/// A bound listener, TCP or UNIX.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    /// The path is removed when serving stops.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr`; a UNIX socket gets `mode`. A socket file left by a
    /// dead process is replaced; a live one is never taken over.
    pub async fn bind(addr: &ListenAddr, mode: u32) -> Result<Self, PolicyError> {
        match addr {
            ListenAddr::Tcp(socket) => {
                TcpListener::bind(socket)
                    .await
                    .map(Self::Tcp)
                    .map_err(|source| PolicyError::Bind {
                        addr: addr.to_string(),
                        source,
                    })
            }
            ListenAddr::Unix(path) => crate::listen::bind_unix(path, mode, "policy socket")
                .map(|l| Self::Unix(l, path.clone()))
                .map_err(PolicyError::from),
        }
    }

    /// The bound address, e.g. to learn an ephemeral port.
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Self::Tcp(listener) => listener.local_addr().map(ListenAddr::Tcp),
            Self::Unix(_, path) => Ok(ListenAddr::Unix(path.clone())),
        }
    }
}

/// How a new connection gets its place.
enum Admission {
    Now(Slot),
    /// Every admitted connection is busy: wait for one to turn idle.
    Wait(WaitTicket),
}

/// Serves `listener` until `shutdown` resolves. Connections then finish
/// the request they are answering and close; idle and waiting ones close
/// at once. A UNIX socket file is removed.
pub async fn serve(listener: Listener, service: Arc<Service>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let (stop, stopped) = watch::channel(false);
    let mut workers = Workers::start()
        .inspect_err(|error| {
            warn!(%error, "could not start the policy worker threads; serving on the shared runtime");
        })
        .ok();
    while let Some(connection) = next_connection(
        "policy",
        &service.warnings.accept,
        || accept(&listener),
        shutdown.as_mut(),
    )
    .await
    {
        service.stats.connections.fetch_add(1, Ordering::Relaxed);
        let admission = match service.clients.admit() {
            Some(admitted) => {
                if admitted.closed_idle {
                    service.closed_idle();
                }
                Admission::Now(admitted.slot)
            }
            None => {
                if let Some(ticket) = service.clients.wait_ticket(service.max_connections) {
                    Admission::Wait(ticket)
                } else {
                    service.stats.refused.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = service.warnings.refused.check() {
                        warn!(
                            peer = %connection.peer(),
                            max_connections = service.max_connections,
                            held_back,
                            "policy connection refused: every connection is in the middle of a request and as many wait"
                        );
                    }
                    continue;
                }
            }
        };
        // Off this runtime's epoll set, onto the worker's (see `workers`).
        let connection = match connection.into_std() {
            Ok(connection) => connection,
            Err(error) => {
                debug!(%error, "could not hand a policy connection to a worker");
                continue;
            }
        };
        let service = Arc::clone(&service);
        let mut stopped = stopped.clone();
        let job: Job = Box::pin(async move {
            let slot = match admission {
                Admission::Now(slot) => slot,
                Admission::Wait(ticket) => {
                    let admitted = tokio::select! {
                        admitted = ticket.admit() => admitted,
                        _ = stopped.wait_for(|stop| *stop) => return,
                    };
                    if admitted.closed_idle {
                        service.closed_idle();
                    }
                    admitted.slot
                }
            };
            match connection {
                Handoff::Tcp(stream, peer) => match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => serve_connection(stream, &peer, &service, stopped, slot).await,
                    Err(error) => debug!(%peer, %error, "could not serve a policy connection"),
                },
                Handoff::Unix(stream, peer) => match tokio::net::UnixStream::from_std(stream) {
                    Ok(stream) => serve_connection(stream, &peer, &service, stopped, slot).await,
                    Err(error) => debug!(%peer, %error, "could not serve a policy connection"),
                },
            }
        });
        match &mut workers {
            Some(workers) => workers.run(job),
            None => {
                tokio::spawn(job);
            }
        }
    }
    let _ = stop.send(true);
    if let Listener::Unix(_, path) = &listener
        && let Err(error) = fs::remove_file(path)
    {
        warn!(path = %path.display(), %error, "could not remove the policy socket");
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream, String),
    Unix(tokio::net::UnixStream, String),
}

impl Accepted {
    fn peer(&self) -> &str {
        match self {
            Self::Tcp(_, peer) | Self::Unix(_, peer) => peer,
        }
    }

    /// The socket as a std one, leaving this runtime, for a worker.
    fn into_std(self) -> io::Result<Handoff> {
        Ok(match self {
            Self::Tcp(stream, peer) => {
                // Request and answer are one write each: no reason to let
                // Nagle hold the answer back.
                let _ = stream.set_nodelay(true);
                Handoff::Tcp(stream.into_std()?, peer)
            }
            Self::Unix(stream, peer) => Handoff::Unix(stream.into_std()?, peer),
        })
    }
}

/// An accepted connection on its way to a worker.
enum Handoff {
    Tcp(std::net::TcpStream, String),
    Unix(std::os::unix::net::UnixStream, String),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(listener) => {
            let (stream, peer) = listener.accept().await?;
            Ok(Accepted::Tcp(stream, peer.to_string()))
        }
        Listener::Unix(listener, path) => {
            let (stream, _) = listener.accept().await?;
            Ok(Accepted::Unix(stream, format!("unix:{}", path.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, SocketAddr},
        os::unix::fs::PermissionsExt as _,
        time::{Duration, Instant},
    };

    use tokio::{
        io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
        net::{TcpStream, UnixStream},
    };

    use super::*;
    use crate::policy::{Engine, PolicyStats};
    use crate::{
        config::Config,
        policy::dns::{AddressLookup, stub::StubLookup},
    };

    const CHAIN: &str = r#"
[[policy.check]]
name = "zen"
type = "dnsbl"
zone = "zen.test"
score = 10
timeout = "30s"
[[policy.threshold]]
score = 10
action = "reject %IP% listed (%DETAIL%)"
"#;

    struct Running {
        addr: SocketAddr,
        service: Arc<Service>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: JoinHandle,
    }

    type JoinHandle = tokio::task::JoinHandle<()>;

    fn service(settings: &str) -> Arc<Service> {
        let config = Config::parse(&format!("[policy]\n{settings}\n{CHAIN}"))
            .expect("config")
            .policy;
        let mut stub =
            StubLookup::listing(&[("2.0.0.127.zen.test.", &[Ipv4Addr::new(127, 0, 0, 2)])]);
        // 192.0.2.66 stalls forever.
        stub.answers.insert("66.2.0.192.zen.test.".to_owned(), None);
        let stub = Arc::new(stub);
        let stats = Arc::new(PolicyStats::default());
        let engine = Engine::with_lookups(&config, None, Arc::clone(&stats), move |_| {
            Ok(Arc::clone(&stub) as Arc<dyn AddressLookup>)
        })
        .expect("engine");
        Arc::new(Service::new(engine, &config, stats))
    }

    async fn start(settings: &str) -> Running {
        let service = service(settings);
        let listener = Listener::bind(&"127.0.0.1:0".parse().expect("addr"), 0o666)
            .await
            .expect("bind");
        let Ok(ListenAddr::Tcp(addr)) = listener.local_addr() else {
            panic!("tcp listener")
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve(listener, Arc::clone(&service), async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            service,
            stop: Some(stop),
            task,
        }
    }

    /// Sends `request` and reads the answer; `None` when the server closed
    /// the connection instead.
    async fn ask(stream: &mut BufReader<TcpStream>, request: &str) -> Option<String> {
        stream.get_mut().write_all(request.as_bytes()).await.ok()?;
        read_answer(stream).await
    }

    async fn read_answer<R: AsyncRead + Unpin>(stream: &mut BufReader<R>) -> Option<String> {
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut line))
                .await
                .expect("an answer or a close within 5 s");
            if read.ok()? == 0 {
                return None;
            }
            if line == "\n" {
                return Some(answer);
            }
            answer.push_str(&line);
        }
    }

    fn rcpt(client: &str) -> String {
        format!(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address={client}\ninstance=i-{client}\n\n"
        )
    }

    async fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
        BufReader::new(TcpStream::connect(addr).await.expect("connect"))
    }

    #[tokio::test]
    async fn keep_alive_serves_many_requests_on_one_connection() {
        let server = start("").await;
        let mut stream = connect(server.addr).await;
        for _ in 0..3 {
            assert_eq!(
                ask(&mut stream, &rcpt("192.0.2.1")).await.as_deref(),
                Some("action=DUNNO\n")
            );
            assert_eq!(
                ask(&mut stream, &rcpt("127.0.0.2")).await.as_deref(),
                Some("action=reject 127.0.0.2 listed (zen=127.0.0.2(+10))\n")
            );
        }
        // Two requests in one write are answered in order.
        let both = format!("{}{}", rcpt("192.0.2.1"), rcpt("127.0.0.2"));
        assert_eq!(
            ask(&mut stream, &both).await.as_deref(),
            Some("action=DUNNO\n")
        );
        let second = read_answer(&mut stream).await.expect("second answer");
        assert!(second.starts_with("action=reject"), "{second}");
        assert_eq!(server.service.stats().requests(), 8);
    }

    #[tokio::test]
    async fn broken_framing_closes_its_connection_and_others_are_served() {
        let server =
            start("max_line_length = 64\nmax_attributes = 5\nmax_request_size = 256").await;
        let mut healthy = connect(server.addr).await;
        let long_line = format!("sender={}\n\n", "x".repeat(100));
        let many = "a=1\n".repeat(6) + "\n";
        let big = format!("sender={}\n", "y".repeat(53)).repeat(5) + "\n";
        let cases: [(&str, &[u8]); 5] = [
            (
                "no equals sign",
                b"request=smtpd_access_policy\nnonsense\n\n",
            ),
            ("line too long", long_line.as_bytes()),
            ("too many attributes", many.as_bytes()),
            ("request too large", big.as_bytes()),
            ("empty request", b"\n"),
        ];
        for (case, bytes) in cases {
            let mut stream = connect(server.addr).await;
            stream.get_mut().write_all(bytes).await.expect("write");
            assert_eq!(
                read_answer(&mut stream).await,
                None,
                "{case}: the connection is closed"
            );
            assert_eq!(
                ask(&mut healthy, &rcpt("192.0.2.1")).await.as_deref(),
                Some("action=DUNNO\n"),
                "{case}: the healthy connection is still served"
            );
        }
        let malformed = server.service.stats().malformed.load(Ordering::Relaxed);
        assert_eq!(malformed, 5);
    }

    #[tokio::test]
    async fn a_bad_attribute_is_left_out_and_the_request_answered() {
        let server = start("").await;
        let mut stream = connect(server.addr).await;
        let cases: [(&str, &[u8]); 4] = [
            ("invalid UTF-8", b"helo_name=\xc3\x28x"),
            ("NUL byte", b"sender=a\x00b@example.org"),
            ("escape sequence", b"sender=\x1b[2Jx@example.org"),
            ("empty name", b"=orphan"),
        ];
        for (case, line) in cases {
            // A clean client: the default answer.
            let mut request = b"request=smtpd_access_policy\nclient_address=192.0.2.1\n".to_vec();
            request.extend_from_slice(line);
            request.extend_from_slice(b"\n\n");
            stream.get_mut().write_all(&request).await.expect("write");
            assert_eq!(
                read_answer(&mut stream).await.as_deref(),
                Some("action=DUNNO\n"),
                "{case}: answered"
            );
            // A listed client: the checks still run on the attributes
            // left, so a bad byte cannot buy a pass.
            let mut request = b"request=smtpd_access_policy\nclient_address=127.0.0.2\n".to_vec();
            request.extend_from_slice(line);
            request.extend_from_slice(b"\n\n");
            stream.get_mut().write_all(&request).await.expect("write");
            assert_eq!(
                read_answer(&mut stream).await.as_deref(),
                Some("action=reject 127.0.0.2 listed (zen=127.0.0.2(+10))\n"),
                "{case}: the listed client is still rejected"
            );
        }
        let stats = server.service.stats();
        assert_eq!(stats.bad_attributes.load(Ordering::Relaxed), 8);
        assert_eq!(stats.malformed.load(Ordering::Relaxed), 0);
        assert_eq!(stats.requests(), 8);
    }

    #[tokio::test]
    async fn idle_and_half_sent_connections_are_closed() {
        let server = start("idle_timeout = \"200ms\"\nrequest_timeout = \"300ms\"").await;
        let mut idle = connect(server.addr).await;
        assert_eq!(
            ask(&mut idle, &rcpt("192.0.2.1")).await.as_deref(),
            Some("action=DUNNO\n")
        );
        let started = Instant::now();
        assert_eq!(read_answer(&mut idle).await, None, "closed when idle");
        assert!(started.elapsed() < Duration::from_secs(2));

        let mut slow = connect(server.addr).await;
        slow.get_mut()
            .write_all(b"request=smtpd_access_policy\nclient_addr")
            .await
            .expect("write");
        let started = Instant::now();
        assert_eq!(
            read_answer(&mut slow).await,
            None,
            "a stalled request is dropped"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_stalled_check_is_answered_dunno_within_the_deadline() {
        let server = start("request_timeout = \"300ms\"").await;
        let mut stream = connect(server.addr).await;
        let started = Instant::now();
        let answer = ask(&mut stream, &rcpt("192.0.2.66")).await;
        let took = started.elapsed();
        assert_eq!(answer.as_deref(), Some("action=DUNNO\n"));
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(800),
            "answered after {took:?}"
        );
        let stats = server.service.stats();
        assert_eq!(stats.deadline_answers.load(Ordering::Relaxed), 1);
        // The connection stays usable.
        assert!(ask(&mut stream, &rcpt("127.0.0.2")).await.is_some());
    }

    /// Whether the server closed `stream` (or answers nothing) within
    /// `wait`: `Some(true)` closed, `Some(false)` sent bytes, `None` quiet.
    async fn closed_within(stream: &mut BufReader<TcpStream>, wait: Duration) -> Option<bool> {
        let mut byte = [0_u8; 1];
        match tokio::time::timeout(wait, stream.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => Some(true),
            Ok(Ok(_)) => Some(false),
            Err(_) => None,
        }
    }

    /// Waits until `count` connections wait for their next request.
    async fn until_idle(server: &Running, count: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while server.service.clients.idle_count() != count {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{count} connections idle within 5 s"));
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let server = start("max_connections = 2").await;
        let mut first = connect(server.addr).await;
        assert!(ask(&mut first, &rcpt("192.0.2.1")).await.is_some());
        let mut second = connect(server.addr).await;
        assert!(ask(&mut second, &rcpt("192.0.2.2")).await.is_some());
        // A connection turns idle once its answer is written, which the
        // client may read first: wait for both, so that `first`, answered
        // again, turns idle after `second`.
        until_idle(&server, 2).await;
        assert!(ask(&mut first, &rcpt("192.0.2.1")).await.is_some());
        until_idle(&server, 2).await;
        // Now `second` has been idle longest.
        let mut third = connect(server.addr).await;
        assert_eq!(
            ask(&mut third, &rcpt("192.0.2.3")).await.as_deref(),
            Some("action=DUNNO\n"),
            "the newcomer is served at once"
        );
        assert_eq!(
            closed_within(&mut second, Duration::from_secs(5)).await,
            Some(true),
            "the longest-idle connection was closed"
        );
        assert!(
            ask(&mut first, &rcpt("192.0.2.1")).await.is_some(),
            "the other one is kept"
        );
        assert_eq!(
            server.service.stats().closed_idle.load(Ordering::Relaxed),
            1
        );
    }

    #[tokio::test]
    async fn twice_the_cap_of_idle_connections_cannot_starve_a_request() {
        let server = start("max_connections = 4").await;
        let mut idle = Vec::new();
        for _ in 0..8 {
            idle.push(connect(server.addr).await);
        }
        let mut postfix = connect(server.addr).await;
        let answer = tokio::time::timeout(
            Duration::from_secs(1),
            ask(&mut postfix, &rcpt("192.0.2.1")),
        )
        .await
        .expect("answered within 1 s");
        assert_eq!(answer.as_deref(), Some("action=DUNNO\n"));
        assert!(server.service.clients.len() <= 4);
    }

    #[tokio::test]
    async fn a_busy_connection_is_never_closed_and_a_newcomer_waits_for_it() {
        let server = start("max_connections = 1").await;
        let mut busy = connect(server.addr).await;
        let request = rcpt("192.0.2.1");
        let (head, tail) = request.split_at(20);
        busy.get_mut()
            .write_all(head.as_bytes())
            .await
            .expect("write");
        // Let the server see the first bytes before the newcomer arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut newcomer = connect(server.addr).await;
        newcomer
            .get_mut()
            .write_all(rcpt("192.0.2.2").as_bytes())
            .await
            .expect("write");
        assert_eq!(
            closed_within(&mut newcomer, Duration::from_millis(300)).await,
            None,
            "the newcomer waits: the only place is busy"
        );
        busy.get_mut()
            .write_all(tail.as_bytes())
            .await
            .expect("write");
        assert_eq!(
            read_answer(&mut busy).await.as_deref(),
            Some("action=DUNNO\n"),
            "the busy connection was not closed and is answered"
        );
        assert_eq!(
            read_answer(&mut newcomer).await.as_deref(),
            Some("action=DUNNO\n"),
            "once it turned idle, the newcomer took its place"
        );
        assert_eq!(
            closed_within(&mut busy, Duration::from_secs(5)).await,
            Some(true)
        );
    }

    #[tokio::test]
    async fn beyond_the_waiting_connections_a_newcomer_is_closed_at_once() {
        let server = start("max_connections = 1").await;
        let mut busy = connect(server.addr).await;
        busy.get_mut()
            .write_all(b"request=smtpd_access_policy\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut waiting = connect(server.addr).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut refused = connect(server.addr).await;
        assert_eq!(
            closed_within(&mut refused, Duration::from_secs(5)).await,
            Some(true),
            "no place and no room to wait"
        );
        assert_eq!(server.service.stats().refused.load(Ordering::Relaxed), 1);
        assert_eq!(
            closed_within(&mut waiting, Duration::from_millis(100)).await,
            None,
            "the waiting one still waits"
        );
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_closes_idle_connections() {
        let mut server = start("").await;
        let mut stream = connect(server.addr).await;
        assert!(ask(&mut stream, &rcpt("192.0.2.1")).await.is_some());
        server.stop.take().expect("stop").send(()).expect("send");
        server.task.await.expect("serve");
        assert_eq!(read_answer(&mut stream).await, None);
        assert!(TcpStream::connect(server.addr).await.is_err());
    }

    #[tokio::test]
    async fn shutdown_closes_waiting_connections_and_busy_ones_finish() {
        let mut server = start("max_connections = 1").await;
        let mut busy = connect(server.addr).await;
        let request = rcpt("192.0.2.1");
        let (head, tail) = request.split_at(20);
        busy.get_mut()
            .write_all(head.as_bytes())
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut waiting = connect(server.addr).await;
        waiting
            .get_mut()
            .write_all(rcpt("192.0.2.2").as_bytes())
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.stop.take().expect("stop").send(()).expect("send");
        server.task.await.expect("serve");
        assert_eq!(
            read_answer(&mut waiting).await,
            None,
            "a waiting connection is closed"
        );
        busy.get_mut()
            .write_all(tail.as_bytes())
            .await
            .expect("write");
        assert_eq!(
            read_answer(&mut busy).await.as_deref(),
            Some("action=DUNNO\n"),
            "the request in progress is answered"
        );
        assert_eq!(read_answer(&mut busy).await, None, "then closed");
    }

    #[tokio::test]
    async fn unix_listener_mode_stale_socket_and_cleanup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("private/spamwall");
        let addr = ListenAddr::Unix(path.clone());
        drop(std::os::unix::net::UnixListener::bind(dir.path().join("stale")).expect("stale"));
        let stale = ListenAddr::Unix(dir.path().join("stale"));
        drop(
            Listener::bind(&stale, 0o600)
                .await
                .expect("stale socket replaced"),
        );

        let listener = Listener::bind(&addr, 0o666).await.expect("bind");
        let mode = fs::metadata(&path).expect("socket").permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        assert!(matches!(
            Listener::bind(&addr, 0o666).await,
            Err(PolicyError::Socket(crate::control::BindError::InUse { .. }))
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, service(""), async {
            let _ = stopped.await;
        }));
        let mut stream = BufReader::new(UnixStream::connect(&path).await.expect("connect"));
        stream
            .get_mut()
            .write_all(rcpt("127.0.0.2").as_bytes())
            .await
            .expect("write");
        let answer = read_answer(&mut stream).await.expect("answer");
        assert!(answer.starts_with("action=reject 127.0.0.2"), "{answer}");

        let text_file = dir.path().join("file");
        fs::write(&text_file, "keep").expect("file");
        assert!(matches!(
            Listener::bind(&ListenAddr::Unix(text_file.clone()), 0o666).await,
            Err(PolicyError::Socket(
                crate::control::BindError::NotASocket { .. }
            ))
        ));
        stop.send(()).expect("stop");
        task.await.expect("serve");
        assert!(!path.exists(), "socket removed on shutdown");
        assert_eq!(fs::read_to_string(&text_file).expect("kept"), "keep");
    }

    #[tokio::test]
    async fn spamwall_query_talks_to_the_server() {
        let server = start("").await;
        let addr = ListenAddr::Tcp(server.addr);
        let answer = tokio::task::spawn_blocking(move || {
            crate::policy::client::query(
                &addr,
                &[("client_address".to_owned(), "127.0.0.2".to_owned())],
                Duration::from_secs(5),
            )
        })
        .await
        .expect("join")
        .expect("answer");
        assert_eq!(
            answer,
            "action=reject 127.0.0.2 listed (zen=127.0.0.2(+10))"
        );
    }
}
