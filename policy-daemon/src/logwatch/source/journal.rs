//! Following the systemd journal through `journalctl -f -o json`.

use std::{
    io::{self, Read as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use super::SourceError;
use crate::{
    bans::store::LogPosition,
    logwatch::{
        filter::{JournalEntry, parse_journal_entry},
        lines::{self, Chunk, Last, Options},
    },
};

/// The longest journal entry read (JSON, with every field): longer ones
/// are dropped whole, for the reasons of [`super::MAX_LINE`].
const MAX_JOURNAL_LINE: usize = 1 << 20;

/// `journalctl -f -o json` for some units, resuming after a cursor.
#[derive(Debug)]
pub struct JournalFollower {
    source_name: String,
    program: PathBuf,
    units: Vec<String>,
    namespace: Option<String>,
    cursor: Option<String>,
    child: Option<Child>,
    entries: Option<mpsc::Receiver<JournalEntry>>,
    /// Over-long entries passed over by the reading thread.
    dropped: Arc<AtomicU64>,
}

impl JournalFollower {
    /// A follower of `units`, resuming after `cursor` (else from now).
    /// `program` is `journalctl` (a path in tests).
    pub fn new(
        source_name: &str,
        program: &Path,
        units: &[String],
        cursor: Option<String>,
    ) -> Self {
        Self {
            source_name: source_name.to_owned(),
            program: program.to_owned(),
            units: units.to_vec(),
            namespace: None,
            cursor,
            dropped: Arc::default(),
            child: None,
            entries: None,
        }
    }

    /// Reads the journal namespace `namespace` (`None`: the system
    /// journal).
    #[must_use]
    pub fn in_namespace(mut self, namespace: Option<&str>) -> Self {
        self.namespace = namespace.map(str::to_owned);
        self
    }

    /// The cursor of the last entry handed out.
    pub fn position(&self) -> LogPosition {
        LogPosition {
            cursor: self.cursor.clone(),
            ..LogPosition::default()
        }
    }

    /// The arguments of the `journalctl` run.
    pub fn arguments(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-f", "-o", "json", "--no-pager"].map(str::to_owned).into();
        if let Some(namespace) = &self.namespace {
            args.push(format!("--namespace={namespace}"));
        }
        match &self.cursor {
            Some(cursor) => args.push(format!("--after-cursor={cursor}")),
            None => args.extend(["--since".to_owned(), "now".to_owned()]),
        }
        for unit in &self.units {
            args.push("-u".to_owned());
            args.push(unit.clone());
        }
        args
    }

    /// Starts `journalctl` (again) after the current cursor. It receives
    /// SIGTERM when the thread that started it ends, so a daemon killed
    /// outright leaves no `journalctl` behind.
    pub fn start(&mut self) -> Result<(), SourceError> {
        self.stop();
        let mut command = Command::new(&self.program);
        // SAFETY: the closure runs in the forked child before exec and
        // only calls prctl(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                // A daemon killed outright (SIGKILL, OOM) takes its
                // journalctl with it instead of leaving it following.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .args(self.arguments())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| {
                if error.kind() == io::ErrorKind::NotFound {
                    SourceError::JournalctlMissing {
                        source_name: self.source_name.clone(),
                        error,
                    }
                } else {
                    SourceError::Journalctl {
                        source_name: self.source_name.clone(),
                        error,
                    }
                }
            })?;
        let (send, receive) = mpsc::sync_channel(4096);
        if let Some(mut stdout) = child.stdout.take() {
            let name = format!("journal-{}", self.source_name);
            let dropped = Arc::clone(&self.dropped);
            // Entries are parsed here, next to the pipe; the follower
            // only hands them out.
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                let mut lines = Vec::new();
                let _ = lines::read_lines(
                    |buf| stdout.read(buf),
                    Options {
                        skip_first: false,
                        owned: u64::MAX,
                        block: 64 << 10,
                        max_line: Some(MAX_JOURNAL_LINE),
                        last: Last::Line,
                    },
                    |chunk| {
                        if chunk == Chunk::TooLong {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        lines::split_lines(chunk, &mut lines);
                        for line in lines.drain(..) {
                            // Sending fails once the follower stopped; it
                            // kills journalctl, which ends this read.
                            if let Some(entry) = parse_journal_entry(&line) {
                                let _ = send.send(entry);
                            }
                        }
                    },
                );
            });
            if let Err(error) = spawned {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SourceError::Journalctl {
                    source_name: self.source_name.clone(),
                    error,
                });
            }
        }
        self.child = Some(child);
        self.entries = Some(receive);
        Ok(())
    }

    /// How many over-long entries were dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Waits up to `timeout` for entries and appends them to `out`; `false`
    /// when `journalctl` has exited (call [`Self::start`] again).
    pub fn poll(&mut self, out: &mut Vec<JournalEntry>, timeout: Duration) -> bool {
        let Some(entries) = self.entries.take() else {
            return false;
        };
        let mut take = |entry: JournalEntry| {
            if entry.cursor.is_some() {
                self.cursor.clone_from(&entry.cursor);
            }
            out.push(entry);
        };
        let alive = match entries.recv_timeout(timeout) {
            Ok(entry) => {
                take(entry);
                let mut alive = true;
                for _ in 0..4096 {
                    match entries.try_recv() {
                        Ok(entry) => take(entry),
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            alive = false;
                            break;
                        }
                    }
                }
                alive
            }
            Err(mpsc::RecvTimeoutError::Timeout) => true,
            Err(mpsc::RecvTimeoutError::Disconnected) => false,
        };
        if alive {
            self.entries = Some(entries);
        } else {
            self.stop();
        }
        alive
    }

    /// Kills `journalctl` (our child, by its handle) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.entries = None;
    }
}

impl Drop for JournalFollower {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_follower_resumes_after_its_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("journalctl");
        let args = dir.path().join("args");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" >> {}\necho '{{\"__CURSOR\":\"c1\",\"MESSAGE\":\"one\"}}'\necho '{{\"__CURSOR\":\"c2\",\"MESSAGE\":\"two\"}}'\n",
                args.display()
            ),
        )
        .expect("script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let units = vec!["postfix@-.service".to_owned()];
        let mut follower = JournalFollower::new("journal", &script, &units, None);
        follower.start().expect("start");
        let mut entries = Vec::new();
        for _ in 0..40 {
            if !follower.poll(&mut entries, Duration::from_millis(250)) {
                break;
            }
        }
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(follower.position().cursor.as_deref(), Some("c2"));
        let mut again =
            JournalFollower::new("journal", &script, &units, follower.position().cursor);
        again.start().expect("restart");
        while again.poll(&mut entries, Duration::from_millis(250)) {}
        let calls = std::fs::read_to_string(&args).expect("args");
        assert_eq!(
            calls,
            "-f -o json --no-pager --since now -u postfix@-.service\n\
             -f -o json --no-pager --after-cursor=c2 -u postfix@-.service\n"
        );
    }

    #[test]
    fn a_journal_namespace_is_passed_on() {
        let units = vec!["postfix@-.service".to_owned()];
        let follower = JournalFollower::new("j", Path::new("journalctl"), &units, None)
            .in_namespace(Some("mail"));
        assert_eq!(
            follower.arguments(),
            [
                "-f",
                "-o",
                "json",
                "--no-pager",
                "--namespace=mail",
                "--since",
                "now",
                "-u",
                "postfix@-.service"
            ]
        );
    }

    #[test]
    fn missing_journalctl_is_named() {
        let mut follower =
            JournalFollower::new("jr", Path::new("/nonexistent/journalctl"), &[], None);
        let error = follower.start().expect_err("missing");
        assert!(matches!(error, SourceError::JournalctlMissing { .. }));
        assert!(error.to_string().contains("jr") && error.to_string().contains("journalctl"));
    }
}
