//! A real rbldnsd (Debian's package) serving test blocklist zones on a
//! loopback port, stopped when the guard drops.
//!
//! Started with [`Rbldnsd::start_logging_queries`], rbldnsd logs every
//! query it answers (`-l +-`, unbuffered, into the same log as its
//! start-up lines), so a test can count what reached it. Off otherwise: a
//! write per query would slow the peer of the policy benchmark.

use std::{
    fs,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// One dataset of a zone: rbldnsd's `name:type:file` triple, with the
/// file's content. Several datasets with the same name form one zone, e.g.
/// an `ip4set` and an `ip6trie` for a list that covers both families.
#[derive(Clone, Copy, Debug)]
pub struct Zone<'a> {
    /// Zone name, e.g. `bl.test`.
    pub name: &'a str,
    /// rbldnsd dataset type: `ip4set`, `ip4trie`, `ip6trie`, `dnset`, …
    pub kind: &'a str,
    /// Dataset file content in rbldnsd's syntax, e.g.
    /// `":127.0.0.2:Listed\n192.0.2.50\n"`.
    pub data: &'a str,
}

/// A running rbldnsd; killed by pid on drop.
#[derive(Debug)]
pub struct Rbldnsd {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Rbldnsd {
    /// Starts rbldnsd on `127.0.0.1:<free port>` serving `zones` and waits
    /// (at most 10 s) until it answers.
    ///
    /// # Panics
    /// When rbldnsd is not installed, exits, or never answers.
    pub fn start(zones: &[Zone<'_>]) -> Self {
        Self::launch(Command::new("rbldnsd"), zones, false)
    }

    /// Like [`Rbldnsd::start`], logging every query for
    /// [`Rbldnsd::queries`].
    ///
    /// # Panics
    /// As [`Rbldnsd::start`].
    pub fn start_logging_queries(zones: &[Zone<'_>]) -> Self {
        Self::launch(Command::new("rbldnsd"), zones, true)
    }

    /// Like [`Rbldnsd::start`], but inside network namespace `netns` (via
    /// `nsenter`, so the pid is rbldnsd's): it answers on that namespace's
    /// loopback, for a daemon running there.
    ///
    /// # Panics
    /// As [`Rbldnsd::start`].
    pub fn start_in(netns: &str, zones: &[Zone<'_>]) -> Self {
        Self::launch(crate::netns::in_netns(netns, "rbldnsd"), zones, false)
    }

    fn launch(mut command: Command, zones: &[Zone<'_>], log_queries: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for rbldnsd");
        let mut specs = Vec::new();
        for (i, zone) in zones.iter().enumerate() {
            let file = format!("dataset{i}");
            fs::write(dir.path().join(&file), zone.data).expect("write rbldnsd dataset");
            specs.push(format!("{}:{}:{file}", zone.name, zone.kind));
        }
        let port = crate::ports::free_udp().port();
        let log = dir.path().join("rbldnsd.log");
        let log_file = fs::File::create(&log).expect("rbldnsd log");
        command.args(["-n", "-b", &format!("127.0.0.1/{port}"), "-t", "60"]);
        if log_queries {
            command.args(["-l", "+-"]);
        }
        let child = command
            .arg("-w")
            .arg(dir.path())
            .args(&specs)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .spawn()
            .expect("start rbldnsd (apt-get install rbldnsd; cargo xtask setup installs it)");
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            dir,
        };
        server.wait_ready();
        server
    }

    /// Where rbldnsd answers (UDP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What rbldnsd logged so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many queries for `name` (as asked, e.g.
    /// `50.2.0.192.zen.test`) rbldnsd has answered so far; always 0
    /// unless started with [`Rbldnsd::start_logging_queries`].
    pub fn queries(&self, name: &str) -> usize {
        let word = format!(" {name} ");
        self.log()
            .lines()
            .filter(|line| line.contains(&word))
            .count()
    }

    /// Replaces the data of dataset `index` (its position in the zones
    /// given to [`Rbldnsd::start`]) and has rbldnsd reload it (SIGHUP);
    /// waits (at most 10 s) until it logged the reload.
    ///
    /// # Panics
    /// When the file cannot be written or rbldnsd does not reload.
    pub fn replace(&self, index: usize, data: &str) {
        const RELOADED: &str = "zones reloaded";
        let before = self.log().matches(RELOADED).count();
        let file = self.dir.path().join(format!("dataset{index}"));
        fs::write(&file, data).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        // rbldnsd compares modification times in whole seconds: a file
        // rewritten within the second of its last load must look newer.
        let later = std::time::SystemTime::now() + Duration::from_secs(2);
        fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(later))
            .unwrap_or_else(|e| panic!("touching {}: {e}", file.display()));
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill has no memory-safety preconditions; `pid` is our
        // unreaped child.
        let sent = unsafe { libc::kill(pid, libc::SIGHUP) };
        assert_eq!(
            sent,
            0,
            "kill({pid}, SIGHUP): {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(RELOADED).count() == before {
            assert!(
                Instant::now() < deadline,
                "rbldnsd did not reload {} within 10 s:\n{}",
                file.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("rbldnsd exited with {status}:\n{}", self.log());
            }
            if self.log().contains("started") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("rbldnsd did not start within 10 s:\n{}", self.log());
    }
}

impl Drop for Rbldnsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
