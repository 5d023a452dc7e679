//! A real `systemd-journald` for the journal-source tests, in a journal
//! namespace of its own: `systemd-journald NAMESPACE`, as systemd starts
//! `systemd-journald@NAMESPACE.service` for units with `LogNamespace=`.
//!
//! It needs no systemd as PID 1. Its sockets live in
//! `/run/systemd/journal.NAMESPACE/` and its files in
//! `/var/log/journal/MACHINE-ID.NAMESPACE/` (or under `/run/log/journal/`),
//! so the system journal, if there is one, is not touched. Lines are sent
//! with `logger` to the namespace's syslog socket, as Postfix's `syslog(3)`
//! calls reach journald, from inside a cgroup named after the unit: that
//! is how journald sets `_SYSTEMD_UNIT`, which `journalctl -u` selects.
//! Dropping it SIGTERMs journald by pid and removes its sockets, its files
//! and the cgroups it made.

#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers panic with a message on any failure, by design"
)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::netns::{run_bounded, terminate};

/// The journald binary of Debian's `systemd` package.
pub const JOURNALD: &str = "/lib/systemd/systemd-journald";
/// How long journald may take to create its sockets.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long journald may take to exit after SIGTERM, and `logger` to send.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running journald for one namespace.
#[derive(Debug)]
pub struct Journald {
    namespace: String,
    child: Option<Child>,
    /// Cgroups made for units, removed on drop (children first).
    cgroups: Vec<PathBuf>,
}

impl Journald {
    /// Starts journald for a namespace named after this process and waits
    /// for its syslog socket.
    pub fn start() -> Self {
        let namespace = format!("spamwall-test-{}", std::process::id());
        let log = tempfile::tempfile().expect("a file for journald's output");
        let child = Command::new(JOURNALD)
            .arg(&namespace)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating a file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {JOURNALD} {namespace}: {e}"));
        let mut journald = Self {
            namespace,
            child: Some(child),
            cgroups: Vec::new(),
        };
        let started = Instant::now();
        while !journald.socket().exists() {
            if let Some(status) = journald
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{JOURNALD} exited with {status} before making its sockets");
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "{JOURNALD} made no {} within {READY_TIMEOUT:?}",
                journald.socket().display()
            );
            thread::sleep(Duration::from_millis(20));
        }
        journald
    }

    /// The namespace, for `journal_namespace` and `journalctl --namespace`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The namespace's syslog socket (`/dev/log` of the namespace).
    pub fn socket(&self) -> PathBuf {
        Path::new("/run/systemd")
            .join(format!("journal.{}", self.namespace))
            .join("dev-log")
    }

    /// Sends `message` as `identifier` (e.g. `postfix/postscreen`) through
    /// syslog, from a process in the cgroup of `unit`.
    pub fn log(&mut self, unit: &str, identifier: &str, message: &str) {
        let cgroup = self.unit_cgroup(unit);
        // The shell joins the cgroup, then becomes logger: the sender
        // journald sees is in the unit.
        let output = run_bounded(
            Command::new("sh")
                .arg("-c")
                .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec logger "$@""#)
                .arg("sh")
                .arg(&cgroup)
                .arg("--socket")
                .arg(self.socket())
                .arg("--socket-errors=on")
                .arg("-t")
                .arg(identifier)
                .arg("--")
                .arg(message),
            STOP_TIMEOUT,
        );
        assert!(
            output.status.success(),
            "logger into {} failed ({}): {}",
            self.socket().display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The cgroup `system.slice/UNIT` in the cgroup2 hierarchy, made on
    /// first use.
    fn unit_cgroup(&mut self, unit: &str) -> PathBuf {
        let slice = cgroup2_root().join("system.slice");
        let cgroup = slice.join(unit);
        for dir in [&slice, &cgroup] {
            if !dir.exists() {
                fs::create_dir(dir)
                    .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
                self.cgroups.push(dir.clone());
            }
        }
        cgroup
    }

    /// SIGTERMs journald by pid and waits (bounded) until it exited.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        terminate(&mut child, STOP_TIMEOUT);
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        self.stop();
        let suffix = format!(".{}", self.namespace);
        let _ = fs::remove_dir_all(Path::new("/run/systemd").join(format!("journal{suffix}")));
        for parent in ["/var/log/journal", "/run/log/journal"] {
            let Ok(entries) = fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(&suffix) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        // The loggers have exited: the cgroups are empty.
        for cgroup in self.cgroups.iter().rev() {
            if let Err(error) = fs::remove_dir(cgroup) {
                eprintln!("removing cgroup {}: {error}", cgroup.display());
            }
        }
    }
}

/// Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup` on a unified
/// system, `/sys/fs/cgroup/unified` on a hybrid one).
fn cgroup2_root() -> PathBuf {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("reading /proc/self/mounts");
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, path, kind) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(path))
        })
        .min_by_key(|path| path.as_os_str().len())
        .expect("a cgroup2 hierarchy is mounted: journald attributes units by it")
}
