//! Two network namespaces joined by a veth pair, for end-to-end traffic.
//!
//! [`NetnsPair`] creates a *server* and a *client* namespace, addresses
//! both ends with IPv4 and IPv6 from the documentation ranges, runs TCP
//! listeners in the server namespace and probes them from the client with
//! `nc -z`. Commands run inside a namespace through
//! `nsenter --net=/run/netns/NAME`, which (unlike `ip netns exec`) keeps
//! bpffs visible. [`NetnsPair::add_client`] adds further client
//! namespaces, each on its own veth link to the server. Everything it
//! started is killed by pid and all namespaces are deleted on drop, also
//! when a test panics.

#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers panic with a message on any failure, by design"
)]

use std::{
    ffi::OsStr,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Longest interface name the kernel accepts (`IFNAMSIZ - 1`).
const IFNAME_MAX: usize = 15;
/// How long a listener may take to accept connections.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a short command (`ip`, `nc -z`) may run beyond its own timeout.
const COMMAND_GRACE: Duration = Duration::from_secs(5);

/// The addresses of one topology: an IPv4 /24 and an IPv6 /64 from the
/// documentation ranges; the server is `.1`/`::1`, the client `.2`/`::2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// First three octets of the IPv4 /24: one of `192.0.2`, `198.51.100`,
    /// `203.0.113`.
    pub v4: [u8; 3],
    /// Third group of the IPv6 /64 `2001:db8:<v6>::/64`.
    pub v6: u16,
}

impl Subnet {
    /// `192.0.2.0/24` and `2001:db8:<v6>::/64`.
    pub const fn test_net_1(v6: u16) -> Self {
        Self {
            v4: [192, 0, 2],
            v6,
        }
    }

    /// `198.51.100.0/24` and `2001:db8:<v6>::/64`.
    pub const fn test_net_2(v6: u16) -> Self {
        Self {
            v4: [198, 51, 100],
            v6,
        }
    }

    /// `203.0.113.0/24` and `2001:db8:<v6>::/64`.
    pub const fn test_net_3(v6: u16) -> Self {
        Self {
            v4: [203, 0, 113],
            v6,
        }
    }

    /// Host `host` of the IPv4 /24.
    pub const fn v4_host(self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.v4[0], self.v4[1], self.v4[2], host)
    }

    /// Host `host` of the IPv6 /64.
    pub const fn v6_host(self, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, self.v6, 0, 0, 0, 0, host)
    }

    /// The IPv4 /24, e.g. `192.0.2.0/24`.
    pub fn v4_net(self) -> String {
        format!("{}/24", self.v4_host(0))
    }

    /// The IPv6 /64, e.g. `2001:db8:7::/64`.
    pub fn v6_net(self) -> String {
        format!("{}/64", self.v6_host(0))
    }

    fn assert_documentation_range(self) {
        assert!(
            matches!(self.v4, [192, 0, 2] | [198, 51, 100] | [203, 0, 113]),
            "{}.0/24 is not a documentation range (RFC 5737)",
            self.v4.map(|o| o.to_string()).join(".")
        );
    }
}

impl Default for Subnet {
    fn default() -> Self {
        Self::test_net_1(1)
    }
}

/// Which end of the veth pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Runs the daemon and the listeners; the XDP program sits on its veth.
    Server,
    /// Sends the traffic that gets banned.
    Client,
}

/// A server and a client namespace joined by a veth pair, with listeners.
///
/// Namespaces are `sws<pid>-<n>` and `swc<pid>-<n>`; each veth end has the
/// name of its namespace (at most 15 characters). The server end has
/// `.1`/`::1`, the client `.2`/`::2` of [`Subnet`]; IPv6 addresses are
/// added with `nodad`, so they are usable at once. Dropping the pair kills
/// its listeners by pid and deletes both namespaces, which removes the veth.
#[derive(Debug)]
pub struct NetnsPair {
    server: String,
    client: String,
    subnet: Subnet,
    listeners: Vec<Child>,
    created: Vec<String>,
}

impl NetnsPair {
    /// Creates both namespaces, the veth pair and the addresses; panics with
    /// the failing command's output on error (after removing what exists).
    pub fn new(subnet: Subnet) -> Self {
        subnet.assert_documentation_range();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let server = format!("sws{pid}-{n}");
        let client = format!("swc{pid}-{n}");
        assert!(
            server.len() <= IFNAME_MAX,
            "interface name {server} is longer than {IFNAME_MAX} characters"
        );
        let mut pair = Self {
            server,
            client,
            subnet,
            listeners: Vec::new(),
            created: Vec::new(),
        };
        for name in [pair.server.clone(), pair.client.clone()] {
            run_ok(Command::new("ip").args(["netns", "add", &name]));
            pair.created.push(name);
        }
        run_ok(Command::new("ip").args([
            "link",
            "add",
            &pair.server,
            "netns",
            &pair.server,
            "type",
            "veth",
            "peer",
            "name",
            &pair.client,
            "netns",
            &pair.client,
        ]));
        for (ns, host) in [(&pair.server, 1_u8), (&pair.client, 2)] {
            let v4 = format!("{}/24", subnet.v4_host(host));
            let v6 = format!("{}/64", subnet.v6_host(host.into()));
            run_ok(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]));
            run_ok(Command::new("ip").args(["-n", ns, "addr", "add", &v4, "dev", ns]));
            run_ok(
                Command::new("ip").args(["-n", ns, "-6", "addr", "add", &v6, "dev", ns, "nodad"]),
            );
            run_ok(Command::new("ip").args(["-n", ns, "link", "set", ns, "up"]));
        }
        pair
    }

    /// The namespace (and veth end) name of `side`.
    pub fn name(&self, side: Side) -> &str {
        match side {
            Side::Server => &self.server,
            Side::Client => &self.client,
        }
    }

    /// The server namespace, which is also its veth end's name.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The client namespace, which is also its veth end's name.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// The addresses in use.
    pub const fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The server's IPv4 address (`.1`).
    pub const fn server_v4(&self) -> Ipv4Addr {
        self.subnet.v4_host(1)
    }

    /// The client's IPv4 address (`.2`).
    pub const fn client_v4(&self) -> Ipv4Addr {
        self.subnet.v4_host(2)
    }

    /// The server's IPv6 address (`::1`).
    pub const fn server_v6(&self) -> Ipv6Addr {
        self.subnet.v6_host(1)
    }

    /// The client's IPv6 address (`::2`).
    pub const fn client_v6(&self) -> Ipv6Addr {
        self.subnet.v6_host(2)
    }

    /// A command that runs `program` inside the namespace of `side`.
    pub fn command(&self, side: Side, program: impl AsRef<OsStr>) -> Command {
        in_netns(self.name(side), program)
    }

    /// Runs `args[0]` with the rest as arguments in the namespace of `side`,
    /// bounded to `timeout` (killed after that).
    pub fn exec_in(&self, side: Side, args: &[&str], timeout: Duration) -> Output {
        let (program, rest) = args.split_first().expect("exec_in needs a program");
        let mut command = self.command(side, program);
        command.args(rest);
        run_bounded(&mut command, timeout)
    }

    /// Starts `nc -l -k` on `addr`:`port` in the server namespace and waits
    /// (bounded) until it accepts connections. The listener lives until the
    /// pair is dropped.
    pub fn listen(&mut self, addr: IpAddr, port: u16) {
        let family = if addr.is_ipv6() { "-6" } else { "-4" };
        let child = self
            .command(Side::Server, "nc")
            .args([
                family,
                "-d",
                "-l",
                "-k",
                &addr.to_string(),
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning nc -l on [{addr}]:{port}: {e}"));
        self.listeners.push(child);
        let started = Instant::now();
        // From inside the server namespace: local traffic never crosses the
        // veth, so no ban can get in the way of this probe.
        while !self.connects(Side::Server, addr, port, 1) {
            let listener = self.listeners.last_mut().expect("just pushed");
            if let Ok(Some(status)) = listener.try_wait() {
                panic!("nc -l on [{addr}]:{port} exited with {status}");
            }
            assert!(
                started.elapsed() < LISTEN_TIMEOUT,
                "nc -l on [{addr}]:{port} did not accept within {LISTEN_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Adds IPv6 address `::<host>` of the subnet to the client's veth
    /// (without duplicate address detection, so it is usable at once).
    pub fn add_client_v6(&self, host: u16) -> Ipv6Addr {
        let addr = self.subnet.v6_host(host);
        run_ok(Command::new("ip").args([
            "-n",
            &self.client,
            "-6",
            "addr",
            "add",
            &format!("{addr}/64"),
            "dev",
            &self.client,
            "nodad",
        ]));
        addr
    }

    /// Listens on `port` on both server addresses (IPv4 and IPv6).
    pub fn listen_both(&mut self, port: u16) {
        self.listen(self.server_v4().into(), port);
        self.listen(self.server_v6().into(), port);
    }

    /// Adds a further client namespace `swd<pid>-<n>` on its own veth pair
    /// to the server, addressed from `subnet` (server end `.1`/`::1`, named
    /// `swx<pid>-<n>`; client `.2`/`::2`), with routes to the primary
    /// subnet through the server, so the new client reaches
    /// [`NetnsPair::server_v4`] over its own link. Deleted on drop like the
    /// others.
    pub fn add_client(&mut self, subnet: Subnet) -> ExtraClient {
        subnet.assert_documentation_range();
        assert_ne!(
            subnet.v4, self.subnet.v4,
            "the extra client needs its own /24"
        );
        assert_ne!(
            subnet.v6, self.subnet.v6,
            "the extra client needs its own /64"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let client = ExtraClient {
            netns: format!("swd{pid}-{n}"),
            server_link: format!("swx{pid}-{n}"),
            subnet,
        };
        assert!(
            client.server_link.len() <= IFNAME_MAX,
            "interface name {} is longer than {IFNAME_MAX} characters",
            client.server_link
        );
        run_ok(Command::new("ip").args(["netns", "add", &client.netns]));
        self.created.push(client.netns.clone());
        run_ok(Command::new("ip").args([
            "link",
            "add",
            &client.server_link,
            "netns",
            &self.server,
            "type",
            "veth",
            "peer",
            "name",
            &client.netns,
            "netns",
            &client.netns,
        ]));
        for (ns, link, host) in [
            (&self.server, &client.server_link, 1_u8),
            (&client.netns, &client.netns, 2),
        ] {
            let v4 = format!("{}/24", subnet.v4_host(host));
            let v6 = format!("{}/64", subnet.v6_host(host.into()));
            run_ok(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]));
            run_ok(Command::new("ip").args(["-n", ns, "addr", "add", &v4, "dev", link]));
            run_ok(
                Command::new("ip").args(["-n", ns, "-6", "addr", "add", &v6, "dev", link, "nodad"]),
            );
            run_ok(Command::new("ip").args(["-n", ns, "link", "set", link, "up"]));
        }
        let via_v4 = subnet.v4_host(1).to_string();
        let via_v6 = subnet.v6_host(1).to_string();
        let ns = client.netns.as_str();
        run_ok(Command::new("ip").args([
            "-n",
            ns,
            "route",
            "add",
            &self.subnet.v4_net(),
            "via",
            &via_v4,
        ]));
        run_ok(Command::new("ip").args([
            "-n",
            ns,
            "-6",
            "route",
            "add",
            &self.subnet.v6_net(),
            "via",
            &via_v6,
        ]));
        client
    }

    /// Whether a TCP connection from the client to `addr`:`port` completes
    /// within `timeout_secs` seconds (`nc -z -w`).
    pub fn can_connect(&self, addr: IpAddr, port: u16, timeout_secs: u32) -> bool {
        self.connects(Side::Client, addr, port, timeout_secs)
    }

    /// Whether a TCP connection from `from` to `addr`:`port` completes
    /// within `timeout_secs` seconds.
    pub fn connects(&self, from: Side, addr: IpAddr, port: u16, timeout_secs: u32) -> bool {
        can_connect(self.name(from), addr, port, timeout_secs)
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // No panic here: this also runs while a failed test unwinds.
        for child in &mut self.listeners {
            kill_and_reap(child);
        }
        for name in &self.created {
            let deleted = Command::new("ip")
                .args(["netns", "del", name])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output();
            match deleted {
                Ok(output) if output.status.success() => {}
                Ok(output) => eprintln!(
                    "deleting namespace {name}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                Err(error) => eprintln!("deleting namespace {name}: {error}"),
            }
        }
    }
}

/// A client namespace added with [`NetnsPair::add_client`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraClient {
    /// The namespace, which is also the client's veth end's name.
    pub netns: String,
    /// The server's veth end toward this client (in the server namespace).
    pub server_link: String,
    /// This link's addresses: the server is `.1`/`::1`, the client `.2`/`::2`.
    pub subnet: Subnet,
}

impl ExtraClient {
    /// The client's IPv4 address (`.2`).
    pub const fn v4(&self) -> Ipv4Addr {
        self.subnet.v4_host(2)
    }

    /// The client's IPv6 address (`::2`).
    pub const fn v6(&self) -> Ipv6Addr {
        self.subnet.v6_host(2)
    }
}

/// A command that runs `program` in namespace `ns` via `nsenter`, which
/// keeps the caller's mounts (bpffs stays visible).
pub fn in_netns(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program.as_ref());
    command
}

/// Whether a TCP connection from namespace `from` to `addr`:`port`
/// completes within `timeout_secs` seconds (`nc -z -w`, bounded).
pub fn can_connect(from: &str, addr: IpAddr, port: u16, timeout_secs: u32) -> bool {
    let family = if addr.is_ipv6() { "-6" } else { "-4" };
    let mut command = in_netns(from, "nc");
    command.args([
        family,
        "-z",
        "-w",
        &timeout_secs.to_string(),
        &addr.to_string(),
        &port.to_string(),
    ]);
    run_bounded(&mut command, Duration::from_secs(timeout_secs.into()))
        .status
        .success()
}

/// An IPv6 extension header a client puts on every packet of a socket with
/// a socket option, as any program with `CAP_NET_RAW` on its own machine
/// can.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Header {
    /// `IPV6_HOPOPTS`: a Hop-by-Hop Options header.
    HopByHop,
    /// `IPV6_DSTOPTS`: a Destination Options header.
    DestinationOptions,
}

/// Whether a TCP connection from `src` in namespace `ns` to `dst`:`port`,
/// every packet carrying `header` (8 bytes: one `PadN` option), completes
/// within `timeout`.
pub fn connects_with_ipv6_header(
    ns: &str,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    port: u16,
    header: Ipv6Header,
    timeout: Duration,
) -> bool {
    use std::os::fd::AsRawFd as _;

    let path = format!("/run/netns/{ns}");
    // The namespace is entered by a thread of its own, which ends with the
    // connection: no other thread of the test changes namespace.
    let attempt = thread::spawn(move || -> io::Result<bool> {
        let netns = std::fs::File::open(&path)?;
        // SAFETY: a valid namespace descriptor; only this thread moves.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        let option = match header {
            Ipv6Header::HopByHop => libc::IPV6_HOPOPTS,
            Ipv6Header::DestinationOptions => libc::IPV6_DSTOPTS,
        };
        // Next header (filled in by the kernel), length 0 (8 bytes), PadN
        // of four bytes.
        let bytes: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
        // SAFETY: `bytes` outlives the call and its length is passed.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IPV6,
                option,
                bytes.as_ptr().cast(),
                libc::socklen_t::try_from(bytes.len()).unwrap_or_default(),
            )
        };
        if set != 0 {
            return Err(io::Error::last_os_error());
        }
        socket.bind(&std::net::SocketAddr::from((src, 0)).into())?;
        let target = std::net::SocketAddr::from((dst, port));
        Ok(socket.connect_timeout(&target.into(), timeout).is_ok())
    });
    attempt
        .join()
        .unwrap_or_else(|_| panic!("connecting from {ns} panicked"))
        .unwrap_or_else(|e| panic!("connecting from [{src}] in {ns} with {header:?}: {e}"))
}

/// Runs `command` to completion, killing it if it outlives `timeout` plus
/// a grace period; stdin is closed, stdout and stderr captured. Panics on
/// failure to run or on timeout.
pub fn run_bounded(command: &mut Command, timeout: Duration) -> Output {
    try_run_bounded(command, timeout).unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

/// [`run_bounded`] without panics, for `Drop`: a command that outlives
/// `timeout` plus a grace period is killed and reported as `TimedOut`.
pub fn try_run_bounded(command: &mut Command, timeout: Duration) -> io::Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Drain both pipes while waiting: a child that writes more than a pipe
    // holds would otherwise block forever before it can exit.
    let drain = |pipe: Option<Box<dyn io::Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
    );
    let limit = timeout + COMMAND_GRACE;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                kill_and_reap(&mut child);
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("did not finish within {limit:?}; killed"),
                ));
            }
            Err(error) => {
                kill_and_reap(&mut child);
                return Err(error);
            }
        }
    };
    // A grandchild may keep a pipe open after the child exited: the drain
    // threads then end with it, or are left behind without blocking us.
    let collect = |handle: thread::JoinHandle<Vec<u8>>| {
        let wait_until = Instant::now() + COMMAND_GRACE;
        while !handle.is_finished() && Instant::now() < wait_until {
            thread::sleep(Duration::from_millis(5));
        }
        if handle.is_finished() {
            handle.join().unwrap_or_default()
        } else {
            Vec::new()
        }
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// Runs a short command and panics with its output unless it succeeds.
fn run_ok(command: &mut Command) -> Output {
    let output = run_bounded(command, Duration::from_secs(5));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// SIGTERMs our child `child` by pid and waits up to `timeout` for it to
/// exit; then SIGKILLs and reaps it.
pub fn terminate(child: &mut Child, timeout: Duration) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) on the pid of our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if started.elapsed() > timeout {
            kill_and_reap(child);
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs `child` by its pid unless it already exited, then reaps it.
pub fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if let Err(error) = child.kill() {
        eprintln!("killing pid {}: {error}", child.id());
    }
    child.wait().ok()
}
