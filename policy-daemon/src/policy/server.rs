//! The policy listeners: TCP and UNIX sockets, keep-alive connections,
//! limits and timeouts.
//!
//! A connection costs one slot of `max_connections`; when all are taken
//! the next connection waits in the kernel's backlog until one frees. A
//! client that sends nothing is closed after `idle_timeout`, one that
//! starts a request and stalls after `request_timeout`; neither holds
//! anything but its own slot. A malformed request is logged with the peer
//! and the reason, and its connection closed.

use std::{
    fs, io,
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, UnixListener},
    sync::{Semaphore, watch},
};
use tracing::{debug, warn};

use super::{
    PolicyError, PolicyStats,
    codec::{Decoder, Limits, encode_reply},
    config::{ListenAddr, PolicyConfig},
    engine::Engine,
};

/// Pause after a failed `accept` (e.g. out of file descriptors), so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
            ListenAddr::Unix(path) => crate::control::bind_unix(path, mode, "policy socket")
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

/// What every connection of every listener shares.
#[derive(Debug)]
pub struct Service {
    engine: RwLock<Arc<Engine>>,
    limits: Limits,
    request_timeout: Duration,
    idle_timeout: Duration,
    slots: Arc<Semaphore>,
    stats: Arc<PolicyStats>,
}

impl Service {
    /// A service answering with `engine` under the limits of `config`.
    pub fn new(engine: Engine, config: &PolicyConfig, stats: Arc<PolicyStats>) -> Self {
        Self {
            engine: RwLock::new(Arc::new(engine)),
            limits: Limits {
                max_line_length: config.max_line_length,
                max_attributes: config.max_attributes,
                max_request_size: config.max_request_size,
            },
            request_timeout: config.request_timeout,
            idle_timeout: config.idle_timeout,
            slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
            stats,
        }
    }

    /// The engine answering requests now.
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Answers later requests with `engine`; requests in flight finish
    /// with the old one.
    pub fn replace_engine(&self, engine: Engine) {
        *self.engine.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(engine);
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<PolicyStats> {
        &self.stats
    }
}

/// Serves `listener` until `shutdown` resolves. Connections then finish
/// the request they are answering and close; a UNIX socket file is
/// removed.
pub async fn serve(listener: Listener, service: Arc<Service>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let (stop, stopped) = watch::channel(false);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&service.slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(connection) => {
                service.stats.connections.fetch_add(1, Ordering::Relaxed);
                let service = Arc::clone(&service);
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    match connection {
                        Accepted::Tcp(stream, peer) => {
                            // Request and answer are one write each: no
                            // reason to let Nagle hold the answer back.
                            let _ = stream.set_nodelay(true);
                            serve_connection(stream, &peer, &service, stopped).await;
                        }
                        Accepted::Unix(stream, peer) => {
                            serve_connection(stream, &peer, &service, stopped).await;
                        }
                    }
                    drop(permit);
                });
            }
            Err(error) => {
                warn!(%error, "accepting a policy connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
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

/// Serves the requests of one connection, one after the other.
async fn serve_connection<S>(
    mut stream: S,
    peer: &str,
    service: &Service,
    mut stopped: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer: Vec<u8> = Vec::with_capacity(4096);
    let mut reply: Vec<u8> = Vec::with_capacity(256);
    let mut decoder = Decoder::new(service.limits);
    // Looked up once per connection, not per request: Postfix keeps its
    // policy connections open for many requests.
    let requests = metrics::counter!(crate::metrics::POLICY_REQUESTS);
    let latency = metrics::histogram!(crate::metrics::POLICY_LATENCY);
    loop {
        let mut started: Option<Instant> = None;
        let request = loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(request)) => break request,
                Ok(None) => {}
                Err(reason) => {
                    service.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    warn!(%peer, %reason, "malformed policy request; closing the connection");
                    return;
                }
            }
            let in_request = decoder.in_request(&buffer);
            let until = if in_request {
                *started.get_or_insert_with(Instant::now) + service.request_timeout
            } else {
                if *stopped.borrow() {
                    return;
                }
                Instant::now() + service.idle_timeout
            };
            buffer.reserve(4096);
            let read = tokio::select! {
                read = tokio::time::timeout_at(until.into(), stream.read_buf(&mut buffer)) => read,
                _ = stopped.changed(), if !in_request => return,
            };
            match read {
                Ok(Ok(0)) => {
                    if in_request {
                        warn!(%peer, "connection closed in the middle of a policy request");
                    }
                    return;
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    debug!(%peer, %error, "reading a policy request failed");
                    return;
                }
                Err(_) if in_request => {
                    service.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        %peer,
                        timeout = ?service.request_timeout,
                        "policy request not complete in time; closing the connection"
                    );
                    return;
                }
                Err(_) => {
                    debug!(%peer, "idle policy connection closed");
                    return;
                }
            }
        };
        service.stats.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let deadline = started + service.request_timeout;
        let decision = service.engine().decide(&request, deadline).await;
        requests.increment(1);
        latency.record(started.elapsed().as_secs_f64());
        reply.clear();
        encode_reply(&decision.action, &mut reply);
        match tokio::time::timeout(service.request_timeout, stream.write_all(&reply)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                debug!(%peer, %error, "writing a policy answer failed");
                return;
            }
            Err(_) => {
                warn!(%peer, "the client does not read its answers; closing the connection");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, SocketAddr},
        os::unix::fs::PermissionsExt as _,
    };

    use tokio::{
        io::{AsyncBufReadExt as _, BufReader},
        net::{TcpStream, UnixStream},
    };

    use super::*;
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
    async fn every_malformed_request_closes_its_connection_and_others_are_served() {
        let server =
            start("max_line_length = 64\nmax_attributes = 5\nmax_request_size = 256").await;
        let mut healthy = connect(server.addr).await;
        let long_line = format!("sender={}\n\n", "x".repeat(100));
        let many = "a=1\n".repeat(6) + "\n";
        let big = format!("sender={}\n", "y".repeat(53)).repeat(5) + "\n";
        let cases: [(&str, &[u8]); 8] = [
            (
                "no equals sign",
                b"request=smtpd_access_policy\nnonsense\n\n",
            ),
            ("empty name", b"=x\n\n"),
            ("line too long", long_line.as_bytes()),
            ("too many attributes", many.as_bytes()),
            ("request too large", big.as_bytes()),
            ("invalid UTF-8", b"sender=\xc3\x28@x\n\n"),
            ("binary", b"sender=\x00\x01\x02\n\n"),
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
        assert_eq!(malformed, 8);
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

    #[tokio::test]
    async fn connections_over_the_limit_wait_for_a_slot() {
        let server = start("max_connections = 1").await;
        let mut first = connect(server.addr).await;
        assert!(ask(&mut first, &rcpt("192.0.2.1")).await.is_some());
        let mut second = connect(server.addr).await;
        second
            .get_mut()
            .write_all(rcpt("192.0.2.2").as_bytes())
            .await
            .expect("write");
        let waiting =
            tokio::time::timeout(Duration::from_millis(300), read_answer(&mut second)).await;
        assert!(waiting.is_err(), "no slot yet: {waiting:?}");
        drop(first);
        assert_eq!(
            read_answer(&mut second).await.as_deref(),
            Some("action=DUNNO\n")
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
