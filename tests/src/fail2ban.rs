//! A real fail2ban-server (Debian's package) in a temporary directory, and
//! a file-backed outbox for the fail2ban backend.
//!
//! The server gets its own configuration (`-c DIR`), socket, pid file, log
//! and database, and one jail, [`JAIL`], whose filter never matches and
//! whose action is empty (fail2ban runs no command): bans are recorded by
//! fail2ban but touch no firewall, so no root is needed beyond what
//! fail2ban itself wants.

#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers panic with a message on any failure, by design"
)]

use std::{
    collections::BTreeSet,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use spamwall::bans::fail2ban::{Fail2banClient, Fail2banOp, Fail2banSettings, OpKind, OutboxStore};

use crate::netns::{kill_and_reap, run_bounded};

/// The jail the test configuration defines.
pub const JAIL: &str = "spamwall";
/// How long fail2ban may take to answer after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long fail2ban may take to exit after `stop` (it runs every
/// `actionunban` first).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `fail2ban-client` call may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A fail2ban-server under test; killed by pid on drop.
#[derive(Debug)]
pub struct Fail2banServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Fail2banServer {
    /// Writes the configuration and starts the server; returns once the
    /// jail answers (at most [`READY_TIMEOUT`]).
    pub fn start() -> Self {
        let mut server = Self::configure();
        server.launch();
        server
    }

    /// Writes the configuration without starting the server, for tests
    /// where fail2ban is down at first.
    pub fn configure() -> Self {
        let dir = tempfile::tempdir().expect("tempdir for fail2ban");
        let conf = dir.path().join("conf");
        for sub in ["action.d", "filter.d", "fail2ban.d", "jail.d"] {
            fs::create_dir_all(conf.join(sub)).expect("fail2ban config dir");
        }
        let path = |name: &str| dir.path().join(name).display().to_string();
        fs::write(path("empty.log"), "").expect("empty log");
        let files = [
            (
                "fail2ban.conf",
                format!(
                    "[Definition]\nloglevel = INFO\nlogtarget = {}\nsyslogsocket = auto\n\
                     socket = {}\npidfile = {}\ndbfile = {}\ndbpurgeage = 1d\n",
                    path("fail2ban.log"),
                    path("fail2ban.sock"),
                    path("fail2ban.pid"),
                    path("fail2ban.sqlite3"),
                ),
            ),
            (
                "filter.d/spamwall-never.conf",
                "[Definition]\nfailregex = ^spamwall test line that never occurs <HOST>$\n".into(),
            ),
            (
                "action.d/spamwall-noop.conf",
                "[Definition]\nactionstart =\nactionstop =\nactioncheck =\n\
                 actionban =\nactionunban =\n"
                    .into(),
            ),
            (
                "jail.conf",
                format!(
                    "[DEFAULT]\nbackend = polling\nallowipv6 = auto\nbantime = 1h\n\n\
                     [{JAIL}]\nenabled = true\nfilter = spamwall-never\n\
                     action = spamwall-noop\nlogpath = {}\n",
                    path("empty.log"),
                ),
            ),
        ];
        for (name, content) in files {
            fs::write(conf.join(name), content).expect("write fail2ban config");
        }
        Self { dir, child: None }
    }

    /// Starts the server (again) on the same configuration and database.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "fail2ban-server is already running");
        let out = fs::File::create(self.dir.path().join("server.out")).expect("server.out");
        let child = Command::new("fail2ban-server")
            .args(["-f", "-x", "--loglevel", "INFO"])
            .arg("-c")
            .arg(self.conf_dir())
            .arg("-s")
            .arg(self.socket())
            .arg("-p")
            .arg(self.dir.path().join("fail2ban.pid"))
            .arg("--logtarget")
            .arg(self.dir.path().join("fail2ban.log"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("output handle"))
            .stderr(out)
            .spawn()
            .expect("start fail2ban-server (apt-get install fail2ban)");
        self.child = Some(child);
        self.wait_ready();
    }

    /// `fail2ban-client stop`, as Debian's unit stops fail2ban, and waits
    /// for the exit. Not SIGTERM: fail2ban 1.0.2 deadlocks when SIGTERM
    /// arrives while it executes a command (a stream of `banip`s), and
    /// never exits.
    pub fn stop(&mut self) {
        let output = run_bounded(
            Command::new("fail2ban-client")
                .arg("-c")
                .arg(self.conf_dir())
                .arg("-s")
                .arg(self.socket())
                .arg("stop"),
            CLIENT_TIMEOUT,
        );
        assert!(
            output.status.success(),
            "fail2ban-client stop failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        self.wait_exit("fail2ban-client stop");
    }

    /// SIGKILL: fail2ban dies without any cleanup.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
    }

    /// [`stop`](Self::stop), then [`launch`](Self::launch).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("fail2ban.sock")
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    /// The temporary directory, for other test files (an outbox).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client for this server with a short timeout.
    pub fn client(&self) -> Fail2banClient {
        Fail2banClient::new(self.socket(), Duration::from_secs(5))
    }

    /// Backend settings for this server and [`JAIL`], with short backoff
    /// so tests do not wait long after fail2ban returns.
    pub fn settings(&self) -> Fail2banSettings {
        Fail2banSettings {
            socket: self.socket(),
            jail: JAIL.into(),
            timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            probe_interval: Duration::from_secs(30),
        }
    }

    /// What fail2ban logged so far, for failure messages.
    pub fn log(&self) -> String {
        let read = |name| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("server.out"), read("fail2ban.log"))
    }

    /// The jail's banned list as `fail2ban-client -s SOCK status JAIL`
    /// prints it: fail2ban's own client, independent of spamwall's decoder.
    pub fn cli_banned(&self, jail: &str) -> BTreeSet<String> {
        let output = run_bounded(
            Command::new("fail2ban-client")
                .arg("-c")
                .arg(self.conf_dir())
                .arg("-s")
                .arg(self.socket())
                .args(["status", jail]),
            CLIENT_TIMEOUT,
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "fail2ban-client status {jail} failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let list = stdout
            .lines()
            .find_map(|line| line.split_once("Banned IP list:"))
            .unwrap_or_else(|| panic!("no banned list in fail2ban-client output:\n{stdout}"))
            .1;
        list.split_whitespace().map(str::to_owned).collect()
    }

    /// Polls `fail2ban-client status` until every entry of `expected` is
    /// listed (fail2ban restores its bans a moment after it answers);
    /// returns the list. Panics after `timeout` naming what is missing.
    pub fn wait_until_listed(
        &self,
        expected: &BTreeSet<String>,
        timeout: Duration,
    ) -> BTreeSet<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let listed = self.cli_banned(JAIL);
            if listed.is_superset(expected) {
                return listed;
            }
            let missing: Vec<_> = expected.difference(&listed).collect();
            assert!(
                Instant::now() < deadline,
                "after {timeout:?}, fail2ban still lacks {} of {} bans: {missing:?}\nlog:\n{}",
                missing.len(),
                expected.len(),
                self.log_tail(40)
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut client = Fail2banClient::new(self.socket(), Duration::from_secs(2));
        loop {
            let child = self.child.as_mut().expect("fail2ban-server started");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                panic!("fail2ban-server exited with {status}:\n{}", self.log());
            }
            // Ping alone is not enough: jails start after the socket does.
            let error = match client.check_jail(JAIL) {
                Ok(()) => return,
                Err(error) => error,
            };
            assert!(
                Instant::now() < deadline,
                "fail2ban-server not ready within {READY_TIMEOUT:?} ({error}):\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&mut self, signal: libc::c_int) {
        let mut child = self.child.take().expect("fail2ban-server is not running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill has no memory-safety preconditions; `pid` is our
        // unreaped child, so it cannot name another process.
        if unsafe { libc::kill(pid, signal) } != 0 {
            let error = io::Error::last_os_error();
            kill_and_reap(&mut child);
            panic!("kill({pid}, {signal}): {error}");
        }
        self.child = Some(child);
        self.wait_exit(&format!("signal {signal}"));
    }

    fn wait_exit(&mut self, after: &str) {
        let mut child = self.child.take().expect("fail2ban-server is not running");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    kill_and_reap(&mut child);
                    panic!(
                        "fail2ban-server did not exit within {STOP_TIMEOUT:?} of {after}:\n{}",
                        self.log_tail(40)
                    );
                }
            }
        }
    }
}

impl Drop for Fail2banServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_and_reap(child);
        }
    }
}

/// A tiny durable [`OutboxStore`] for tests: an append-only text file of
/// `+ID KIND TARGET` and `-ID` lines, replayed by `pending`. A new
/// `FileOutbox` on the same path sees what an earlier one stored, as the
/// daemon's store does after a restart.
#[derive(Debug)]
pub struct FileOutbox {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileOutbox {
    /// Opens (or creates on first push) the outbox at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    fn replay(&self) -> io::Result<Vec<(u64, Fail2banOp)>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(error),
        };
        let bad = |line: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad outbox line {line:?}"),
            )
        };
        let mut ops = std::collections::BTreeMap::new();
        for line in text.lines() {
            if let Some(id) = line.strip_prefix('-') {
                ops.remove(&id.parse::<u64>().map_err(|_| bad(line))?);
                continue;
            }
            let mut fields = line.strip_prefix('+').ok_or_else(|| bad(line))?.split(' ');
            let (Some(id), Some(kind), Some(target)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(bad(line));
            };
            let op = Fail2banOp {
                kind: kind.parse::<OpKind>().map_err(|_| bad(line))?,
                target: target.parse::<IpNet>().map_err(|_| bad(line))?,
            };
            ops.insert(id.parse::<u64>().map_err(|_| bad(line))?, op);
        }
        Ok(ops.into_iter().collect())
    }

    fn append(&self, line: &str) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(line.as_bytes())?;
        file.sync_data()
    }

    fn next_id(&self) -> u64 {
        let text = fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                line.strip_prefix('+')?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0)
            + 1
    }
}

impl OutboxStore for FileOutbox {
    type Error = io::Error;

    fn push(&self, op: &Fail2banOp) -> io::Result<u64> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = self.next_id();
        self.append(&format!("+{id} {} {}\n", op.kind, op.target))?;
        Ok(id)
    }

    fn pending(&self) -> io::Result<Vec<(u64, Fail2banOp)>> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.replay()
    }

    fn remove(&self, id: u64) -> io::Result<()> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.append(&format!("-{id}\n"))
    }
}
