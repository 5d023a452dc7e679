//! End to end: the real daemon's listeners against clients that hold
//! connections open, send bad bytes or exhaust its file descriptors.
//!
//! The policy listener is a UNIX socket here, so the test process reaches
//! it from outside the daemon's network namespace; the control socket is
//! one anyway. Needs root and the binary (`cargo build -p policy-daemon`,
//! or `SPAMWALL_BIN`); run serially:
//! `cargo test -p spamwall-tests --test listeners -- --test-threads=1`.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    io::{ErrorKind, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use spamwall_tests::{
    daemon::{Daemon, Settings},
    netns::{NetnsPair, Subnet},
    require_root,
};

/// `policy.max_connections` in the policy tests.
const MAX_CONNECTIONS: usize = 8;
/// Idle clients held open against the control socket (its cap is 64).
const IDLE_CONTROL_CLIENTS: usize = 100;
/// How long clients wait on a daemon that is out of descriptors.
const EMFILE_WINDOW: Duration = Duration::from_secs(2);

/// A daemon on a fresh namespace pair. Fields drop in order: the daemon
/// goes before the namespaces.
struct Setup {
    daemon: Daemon,
    _net: NetnsPair,
}

impl Setup {
    /// The default settings (no policy server), changed by `configure`.
    fn new(subnet: Subnet, configure: impl FnOnce(&mut Settings)) -> Self {
        let net = NetnsPair::new(subnet);
        let mut settings = Settings::on(net.server());
        configure(&mut settings);
        let daemon = Daemon::start(net.server(), &settings);
        Self { daemon, _net: net }
    }
}

/// A daemon with `[policy] listen = ["unix:<dir>/policy.sock"]`,
/// `max_connections = 8` and no checks; returns it with the socket path.
fn policy_daemon(subnet: Subnet, dir: &Path) -> (Setup, PathBuf) {
    let socket = dir.join("policy.sock");
    let setup = Setup::new(subnet, |settings| {
        settings.extra = format!(
            "[policy]\nlisten = [\"unix:{}\"]\nmax_connections = {MAX_CONNECTIONS}\n",
            socket.display()
        );
    });
    (setup, socket)
}

/// Reads one policy answer (up to its empty line) by `deadline`. `None`:
/// the server closed the connection first. Panics at the deadline.
fn read_answer(stream: &mut UnixStream, deadline: Instant) -> Option<String> {
    let mut answer = Vec::new();
    let mut byte = [0_u8; 1];
    while !answer.ends_with(b"\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no answer by the deadline: {answer:?}");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) => answer.push(byte[0]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading an answer: {e}"),
        }
    }
    Some(String::from_utf8(answer).unwrap())
}

fn rcpt(client: &str) -> Vec<u8> {
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address={client}\n\
         instance=e2e.{client}\nsender=a@example.org\nrecipient=b@example.org\n\n"
    )
    .into_bytes()
}

/// Whether `stream` was closed by the daemon within `wait`.
fn closed_within(stream: &mut UnixStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0_u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

/// The starvation attack: twice `max_connections` clients, each
/// having sent a request and then idling as long as they like. A real
/// request on a new connection is still answered within 1 s, and the
/// daemon never holds more than `max_connections` of them.
#[test]
fn twice_max_connections_idle_clients_cannot_starve_a_real_request() {
    if !require_root("twice_max_connections_idle_clients_cannot_starve_a_real_request") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (setup, socket) = policy_daemon(Subnet::test_net_1(71), dir.path());
    let daemon = &setup.daemon;
    let mut idle = Vec::new();
    for i in 0..2 * MAX_CONNECTIONS {
        let mut stream = UnixStream::connect(&socket).unwrap();
        stream
            .write_all(&rcpt(&format!("192.0.2.{}", i + 10)))
            .unwrap();
        let answer = read_answer(&mut stream, Instant::now() + Duration::from_secs(10));
        assert_eq!(
            answer.as_deref(),
            Some("action=DUNNO\n\n"),
            "idle client {i}\n{}",
            daemon.log()
        );
        idle.push(stream);
    }

    let sent = Instant::now();
    let mut postfix = UnixStream::connect(&socket).unwrap();
    postfix.write_all(&rcpt("198.51.100.7")).unwrap();
    let answer = read_answer(&mut postfix, sent + Duration::from_secs(1));
    assert_eq!(
        answer.as_deref(),
        Some("action=DUNNO\n\n"),
        "the real request was not answered within 1 s\n{}",
        daemon.log()
    );

    let closed = idle
        .iter_mut()
        .map(|stream| closed_within(stream, Duration::from_millis(300)))
        .filter(|&closed| closed)
        .count();
    assert!(
        closed > MAX_CONNECTIONS,
        "{closed} of {} idle clients closed; the daemon holds more than max_connections = {MAX_CONNECTIONS}",
        idle.len()
    );
    assert!(
        daemon
            .log()
            .contains("closed the longest-idle one to admit a new one"),
        "{}",
        daemon.log()
    );
}

/// A value with invalid UTF-8 and control bytes does not cost Postfix its
/// answer or its connection: the request is answered, the daemon logs the
/// peer and the attribute, and the connection serves the next request.
#[test]
fn a_request_with_a_bad_byte_attribute_is_answered() {
    if !require_root("a_request_with_a_bad_byte_attribute_is_answered") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (setup, socket) = policy_daemon(Subnet::test_net_2(72), dir.path());
    let daemon = &setup.daemon;
    let mut stream = UnixStream::connect(&socket).unwrap();
    let mut request = b"request=smtpd_access_policy\nclient_address=192.0.2.9\n".to_vec();
    request.extend_from_slice(b"helo_name=\xff\xfe\x00\x1b[2J\n\n");
    stream.write_all(&request).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    assert_eq!(
        read_answer(&mut stream, deadline).as_deref(),
        Some("action=DUNNO\n\n"),
        "{}",
        daemon.log()
    );
    stream.write_all(&rcpt("192.0.2.10")).unwrap();
    assert_eq!(
        read_answer(&mut stream, Instant::now() + Duration::from_secs(5)).as_deref(),
        Some("action=DUNNO\n\n"),
        "the connection stays open\n{}",
        daemon.log()
    );
    let log = daemon.wait_log("the warning about the attribute", |log| {
        log.contains("unusable attributes")
    });
    let line = log
        .lines()
        .find(|line| line.contains("unusable attributes"))
        .unwrap_or_else(|| panic!("no warning about the attribute:\n{log}"));
    assert!(
        line.contains(&format!("unix:{}", socket.display())) && line.contains("helo_name"),
        "the warning names the peer and the attribute: {line}"
    );
    // The bytes themselves never reach the log raw.
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

/// The control socket with 100 idle clients connected (its cap is 64):
/// `spamwall status` still answers, and SIGTERM ends the daemon within
/// 5 s with the clients still connected.
#[test]
fn idle_control_clients_block_neither_status_nor_sigterm() {
    if !require_root("idle_control_clients_block_neither_status_nor_sigterm") {
        return;
    }
    let mut setup = Setup::new(Subnet::test_net_3(73), |_| {});
    let idle: Vec<UnixStream> = (0..IDLE_CONTROL_CLIENTS)
        .map(|_| UnixStream::connect(setup.daemon.socket()).unwrap())
        .collect();
    let asked = Instant::now();
    let status = setup.daemon.status();
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "status took {:?} with {IDLE_CONTROL_CLIENTS} idle clients",
        asked.elapsed()
    );
    assert!(status["pid"].is_number(), "{status}");

    let exit = setup
        .daemon
        .kill_within(libc::SIGTERM, Duration::from_secs(5));
    assert!(exit.success(), "SIGTERM: {exit}\n{}", setup.daemon.log());
    drop(idle);
}

/// Out of file descriptors, the control socket's accept fails (EMFILE)
/// while connections wait: the daemon pauses between attempts instead of
/// spinning, says so in a warning limited to one a second (counting the
/// attempts it held back), and serves again once descriptors free up.
#[test]
fn accept_errors_pause_instead_of_spinning() {
    if !require_root("accept_errors_pause_instead_of_spinning") {
        return;
    }
    let setup = Setup::new(Subnet::test_net_1(74), |_| {});
    let daemon = &setup.daemon;
    let pid = daemon.pid().unwrap();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    // Room for a few clients, not for the cap of 64.
    let limit = open + 4;
    let status = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .unwrap();
    assert!(status.success(), "prlimit: {status}");
    let clients: Vec<UnixStream> = (0..32)
        .map(|_| UnixStream::connect(daemon.socket()).unwrap())
        .collect();
    std::thread::sleep(EMFILE_WINDOW);
    drop(clients);

    // Descriptors free again: the daemon serves.
    let answered = Instant::now() + Duration::from_secs(10);
    while !daemon.cli(["status"]).status.success() {
        assert!(
            Instant::now() < answered,
            "no status within 10 s after the clients left\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let log = daemon.wait_log("the accept warning", |log| {
        log.contains("accepting a connection failed")
    });
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("accepting a connection failed"))
        .collect();
    assert!(!warnings.is_empty(), "no accept warning:\n{log}");
    let attempts: u64 = warnings
        .iter()
        .map(|line| {
            let held_back = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("held_back="))
                .unwrap_or_else(|| panic!("no held_back= in {line}"));
            1 + held_back.parse::<u64>().unwrap()
        })
        .sum();
    // At one attempt per 100 ms pause, the window and the recovery allow
    // some tens; a loop that spins makes hundreds of thousands.
    assert!(
        attempts < 500,
        "{attempts} failed accepts: the loop spins\n{log}"
    );
    assert!(
        warnings.len() <= 15,
        "{} warnings: not limited to one a second\n{log}",
        warnings.len()
    );
}
