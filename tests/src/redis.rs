//! A real `redis-server` for the fleet tests, on a unix socket in a
//! temporary directory.
//!
//! A unix socket is reachable from every network namespace (only the
//! mount namespace matters), so daemons started through `nsenter --net`
//! reach it without any routing, and nothing listens on a TCP port. Data
//! is kept in an append-only file, so a stopped and restarted server
//! keeps its keys, as a production Redis would. Dropping the server kills
//! it by pid.

#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers panic with a message on any failure, by design"
)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::netns::{kill_and_reap, run_bounded, terminate};

/// How long the server may take to answer `PING` after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running (or stopped) `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server in a fresh directory and waits until it answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("spamwall-redis-")
            .tempdir()
            .expect("creating a temporary directory");
        let mut server = Self { dir, child: None };
        server.launch();
        server
    }

    /// Whether `redis-server` is installed.
    pub fn available() -> bool {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The URL for `fleet.redis`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// Starts the server (again) and waits until it answers `PING`.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(self.dir.path())
            .args([
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
            ])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning redis-server: {e}"));
        self.child = Some(child);
        let started = Instant::now();
        while !self.answers() {
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "redis-server did not answer PING within {READY_TIMEOUT:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERMs the server by pid and waits (bounded) until it exited.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        terminate(&mut child, STOP_TIMEOUT);
    }

    /// Runs `commands` against the stopped server's data, as if written
    /// while no client was connected: a second server on a socket no
    /// daemon knows (`edit.sock`) loads the append-only file, takes the
    /// commands and is stopped again, leaving them in the file.
    pub fn edit_stopped(&self, commands: &[Vec<String>]) {
        assert!(self.child.is_none(), "edit_stopped: redis-server runs");
        let socket = self.dir.path().join("edit.sock");
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--save", "", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning redis-server: {e}"));
        let cli = |args: &[String]| {
            run_bounded(
                Command::new("redis-cli").arg("-s").arg(&socket).args(args),
                Duration::from_secs(5),
            )
        };
        let started = Instant::now();
        while !(socket.exists() && cli(&["PING".to_owned()]).status.success()) {
            if started.elapsed() > READY_TIMEOUT {
                kill_and_reap(&mut child);
                panic!("the editing redis-server did not answer within {READY_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        for command in commands {
            let output = cli(command);
            let stdout = String::from_utf8_lossy(&output.stdout);
            if !output.status.success() || stdout.starts_with("ERR") {
                kill_and_reap(&mut child);
                panic!("redis-cli {command:?}: {stdout}");
            }
        }
        terminate(&mut child, STOP_TIMEOUT);
    }

    /// Whether the server answers `PING`.
    pub fn answers(&self) -> bool {
        self.socket().exists() && self.cli(&["PING"]).is_some_and(|out| out.trim() == "PONG")
    }

    /// Runs `redis-cli` with `args`; its stdout, or `None` on failure.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let output = run_bounded(
            Command::new("redis-cli")
                .arg("-s")
                .arg(self.socket())
                .args(args),
            Duration::from_secs(5),
        );
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The directory holding the socket and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            kill_and_reap(child);
        }
    }
}
