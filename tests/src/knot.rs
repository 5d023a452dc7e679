//! A real authoritative DNS server, Knot DNS (Debian's `knot`), serving
//! test zones on a loopback port, stopped when the guard drops.

use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Times knotd is started, each on a fresh port, before a port taken
/// meanwhile fails the test.
const LAUNCH_ATTEMPTS: usize = 3;

/// One zone: its name (`spf.test`) and its records in zone-file syntax,
/// relative to the zone (`$ORIGIN` and `$TTL` are written before them).
#[derive(Clone, Copy, Debug)]
pub struct Zone<'a> {
    pub name: &'a str,
    pub records: &'a str,
}

/// A running `knotd`; killed by pid on drop.
#[derive(Debug)]
pub struct Knot {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Knot {
    /// Starts knotd on `127.0.0.1:<free port>` (UDP and TCP) serving
    /// `zones`, each with an SOA (negative TTL `ttl`) and an NS, every
    /// record with TTL `ttl`; waits (at most 10 s) until every zone is
    /// loaded.
    ///
    /// # Panics
    /// When knotd is not installed, refuses a zone, exits or never loads.
    pub fn start(zones: &[Zone<'_>], ttl: u32) -> Self {
        Self::launch(|| Command::new("knotd"), zones, ttl)
    }

    /// Like [`Knot::start`], but inside network namespace `netns` (via
    /// `nsenter`, so the pid is knotd's): it answers on that namespace's
    /// loopback, for a daemon running there.
    ///
    /// # Panics
    /// As [`Knot::start`].
    pub fn start_in(netns: &str, zones: &[Zone<'_>], ttl: u32) -> Self {
        Self::launch(|| crate::netns::in_netns(netns, "knotd"), zones, ttl)
    }

    /// Starts knotd with a command from `command`, again on another port
    /// when its port was taken between being found free and being bound.
    fn launch(command: impl Fn() -> Command, zones: &[Zone<'_>], ttl: u32) -> Self {
        for attempt in 1..=LAUNCH_ATTEMPTS {
            match Self::launch_once(command(), zones, ttl) {
                Ok(server) => return server,
                Err(log) if attempt < LAUNCH_ATTEMPTS && log.contains("already in use") => {}
                Err(log) => panic!("knotd exited:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Starts knotd once; `Err` holds its log when it exited or found its
    /// port taken (it is killed when the `Err` drops it).
    fn launch_once(mut command: Command, zones: &[Zone<'_>], ttl: u32) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir for knotd");
        let root = dir.path().display().to_string();
        let port = crate::ports::free_tcp_and_udp().port();
        let mut config = format!(
            "server:\n    rundir: \"{root}\"\n    listen: 127.0.0.1@{port}\n    \
             udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
             database:\n    storage: \"{root}\"\n\
             log:\n  - target: stderr\n    any: info\n\
             template:\n  - id: default\n    storage: \"{root}\"\n    zonefile-sync: -1\n    \
             journal-content: none\n\
             zone:\n"
        );
        for zone in zones {
            let file = format!("{}.zone", zone.name);
            let text = format!(
                "$ORIGIN {name}.\n$TTL {ttl}\n@ SOA ns.{name}. hostmaster.{name}. 1 3600 600 86400 {ttl}\n\
                 @ NS ns.{name}.\n{records}\n",
                name = zone.name,
                records = zone.records
            );
            fs::write(dir.path().join(&file), text).expect("write zone file");
            let _ = writeln!(
                config,
                "  - domain: {}\n    file: \"{}\"",
                zone.name,
                dir.path().join(&file).display()
            );
        }
        let conf = dir.path().join("knot.conf");
        fs::write(&conf, config).expect("write knot.conf");
        let log = dir.path().join("knotd.log");
        let log_file = fs::File::create(&log).expect("knotd log");
        let child = command
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .spawn()
            .expect("start knotd (apt-get install knot; cargo xtask setup installs it)");
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        };
        server.wait_loaded(zones.len())?;
        Ok(server)
    }

    /// Where knotd answers.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What knotd logged so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until every zone is loaded; `Err` with the log when knotd
    /// exited or found its port taken.
    fn wait_loaded(&mut self, zones: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{status}\n{}", self.log()));
            }
            let log = self.log();
            // The port was taken meanwhile: knotd is on its way out.
            if log.contains("already in use") {
                return Err(log);
            }
            assert!(
                !log.contains("error:"),
                "knotd refused its configuration or a zone:\n{log}"
            );
            if log.matches("] loaded, serial").count() >= zones && log.contains("server started") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("knotd did not load its zones within 10 s:\n{}", self.log());
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
