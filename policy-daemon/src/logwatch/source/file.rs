//! Following a log file by path across rotation and truncation.
//!
//! A [`FileFollower`] hands out complete lines only and reports the offset
//! just past the last one, so a position saved after the lines were
//! processed never skips a line nor repeats one. Polling (every
//! [`POLL_INTERVAL`](super::POLL_INTERVAL)) rather than inotify: it also
//! works on NFS, in containers and across the rename-then-create of
//! logrotate.

use std::{
    ffi::OsString,
    fs::File,
    io,
    os::unix::fs::{FileExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{MAX_LINE, SourceError};
use crate::{
    bans::store::LogPosition,
    logwatch::lines::{self, Last, Options},
};

/// Most bytes read in one [`FileFollower::poll`]: a large backlog is
/// processed (and its position saved) in slices.
const READ_LIMIT: u64 = 4 << 20;
/// How much of a file is read at once.
const BLOCK: usize = 64 << 10;
/// How long a renamed log is still read after it last grew: its writer
/// keeps writing to it until it reopens the path (rsyslog on the HUP of
/// logrotate's `postrotate`), and those lines count too.
const DRAIN_IDLE: Duration = Duration::from_secs(10);
/// Bytes of the first line hashed to recognise a file.
const HEAD_BYTES: usize = 4096;

/// FNV-1a, stable across builds and runs (it is stored); never 0, which
/// means "not known".
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.max(1)
}

/// The hash of the file's first line (at most [`HEAD_BYTES`]), or `None`
/// while the first line is incomplete.
fn head_hash(file: &File) -> io::Result<Option<u64>> {
    let mut head = vec![0u8; HEAD_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        let n = file.read_at(&mut head[filled..], filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let head = &head[..filled];
    Ok(match head.iter().position(|&b| b == b'\n') {
        Some(end) => Some(stable_hash(&head[..end])),
        None if filled == HEAD_BYTES => Some(stable_hash(head)),
        None => None,
    })
}

/// Follows one log file by path.
///
/// - not there yet: waits for it, then reads it from the start;
/// - renamed away (a new inode at the path): reads the old file to its end,
///   then the new one from the start, and keeps reading what the writer
///   still adds to the old one until it has been idle for [`DRAIN_IDLE`]
///   (its unterminated last line then counts);
/// - truncated (copytruncate) or rewritten in place (the first line
///   changed): starts again at 0;
/// - a last line without `\n` is held back until it is complete.
///
/// On start with a saved [`LogPosition`] it resumes there; when the file
/// was rotated meanwhile it finds the old file by inode next to it
/// (`mail.log.1`, `mail.log-20260101`), finishes it, then reads the new
/// one. Without a saved position a file already present is read from its
/// end: history is not replayed.
#[derive(Debug)]
pub struct FileFollower {
    source_name: String,
    path: PathBuf,
    file: Option<File>,
    inode: u64,
    /// Where the next line starts.
    at: ReadPoint,
    head_hash: Option<u64>,
    /// Over-long lines dropped since [`FileFollower::take_dropped`].
    dropped: u64,
    /// The saved position (or the end of the file at start), until the
    /// file is first opened.
    resume: Option<LogPosition>,
    /// The file before the last rotation, while its writer may still add
    /// to it.
    draining: Option<Draining>,
    drain_idle: Duration,
}

/// A rotated log still read: see [`DRAIN_IDLE`].
#[derive(Debug)]
struct Draining {
    file: File,
    at: ReadPoint,
    /// Its size when it last grew, and when that was.
    size: u64,
    grew: Instant,
}

impl FileFollower {
    /// A follower of `path`, resuming at `saved` when given.
    pub fn new(source_name: &str, path: &Path, saved: Option<LogPosition>) -> Self {
        // Without a saved position the end is fixed now, not when the file
        // is first polled: lines written in between are not lost.
        let resume = saved.or_else(|| end_of(path));
        Self {
            source_name: source_name.to_owned(),
            path: path.to_owned(),
            file: None,
            inode: 0,
            at: ReadPoint::default(),
            head_hash: None,
            dropped: 0,
            resume,
            draining: None,
            drain_idle: DRAIN_IDLE,
        }
    }

    /// How long a renamed file is read after it last grew (tests).
    #[cfg(test)]
    fn draining_for(mut self, idle: Duration) -> Self {
        self.drain_idle = idle;
        self
    }

    /// How many over-long lines were dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Where to resume after the lines handed out so far.
    pub fn position(&self) -> LogPosition {
        LogPosition {
            inode: self.inode,
            offset: self.at.offset,
            head_hash: self.head_hash.unwrap_or(0),
            cursor: None,
        }
    }

    fn error(&self, operation: &'static str) -> impl Fn(io::Error) -> SourceError + '_ {
        move |error| SourceError::File {
            source_name: self.source_name.clone(),
            path: self.path.clone(),
            operation,
            error,
        }
    }

    /// Appends the complete lines written since the last call to `out`
    /// (without their `\n`). Returns `true` when more data is waiting
    /// (call again without sleeping).
    pub fn poll(&mut self, out: &mut Vec<String>) -> Result<bool, SourceError> {
        self.drain(out)?;
        if self.file.is_none() && !self.open(out)? {
            return Ok(false);
        }
        // Truncated or rewritten in place: checked before reading, so the
        // new content is not read from the old offset.
        if let Some(file) = &self.file {
            let size = file.metadata().map_err(self.error("fstat"))?.len();
            let replaced = match self.head_hash {
                Some(known) => head_hash(file)
                    .map_err(self.error("reading"))
                    .map(|now| now != Some(known))?,
                None => false,
            };
            if size < self.at.offset + self.at.skipped || replaced {
                tracing::info!(source = %self.source_name, path = %self.path.display(), "log truncated or rewritten; reading it from the start");
                self.restart_at_zero();
            }
        }
        if self.read_available(out)? {
            return Ok(true);
        }
        let at_path = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            // Renamed away, the new file not created yet: keep the old one.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(self.error("stat")(error)),
        };
        if at_path.ino() != self.inode {
            // Rotated: whatever the writer added before it moved on; the
            // old file stays open for what it adds until it reopens.
            while self.read_available(out)? {}
            if let Some(older) = self.draining.take() {
                self.finish_draining(older, out)?;
            }
            if let Some(file) = self.file.take() {
                self.draining = Some(Draining {
                    size: file.metadata().map_err(self.error("fstat"))?.len(),
                    file,
                    at: std::mem::take(&mut self.at),
                    grew: Instant::now(),
                });
            }
            tracing::info!(source = %self.source_name, path = %self.path.display(), "log rotated; following the new file");
            if self.open(out)? {
                return self.read_available(out);
            }
        }
        Ok(false)
    }

    /// Reads what the writer added to the rotated file; lets it go, its
    /// unterminated last line counted, once it has been idle long enough.
    fn drain(&mut self, out: &mut Vec<String>) -> Result<(), SourceError> {
        let Some(old) = &mut self.draining else {
            return Ok(());
        };
        let error = |error| SourceError::File {
            source_name: self.source_name.clone(),
            path: self.path.clone(),
            operation: "reading the rotated file",
            error,
        };
        while read_from(&old.file, &mut old.at, Last::Held, out, &mut self.dropped)
            .map_err(error)?
        {}
        let size = old.file.metadata().map_err(error)?.len();
        if size != old.size {
            old.size = size;
            old.grew = Instant::now();
        } else if old.grew.elapsed() >= self.drain_idle
            && let Some(old) = self.draining.take()
        {
            self.finish_draining(old, out)?;
        }
        Ok(())
    }

    /// Reads a rotated file to its end, its unterminated last line too.
    fn finish_draining(
        &mut self,
        mut old: Draining,
        out: &mut Vec<String>,
    ) -> Result<(), SourceError> {
        while read_from(&old.file, &mut old.at, Last::Line, out, &mut self.dropped)
            .map_err(self.error("reading the rotated file"))?
        {}
        Ok(())
    }

    fn restart_at_zero(&mut self) {
        self.at = ReadPoint::default();
        self.head_hash = None;
    }

    /// Opens the file at the path and decides where to start; `false` when
    /// there is no file yet.
    fn open(&mut self, out: &mut Vec<String>) -> Result<bool, SourceError> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(self.error("opening")(error)),
        };
        let meta = file.metadata().map_err(self.error("fstat"))?;
        let head = head_hash(&file).map_err(self.error("reading"))?;
        self.inode = meta.ino();
        self.head_hash = head;
        self.at = ReadPoint::default();
        if let Some(saved) = self.resume.take() {
            let same = saved.inode == self.inode
                && (saved.head_hash == 0 || Some(saved.head_hash) == head);
            if same && saved.offset <= meta.len() {
                self.at.offset = saved.offset;
            } else if !same {
                self.finish_rotated(&saved, out)?;
            }
        }
        self.file = Some(file);
        Ok(true)
    }

    /// After a restart the saved inode is no longer at the path: if it sits
    /// next to it under a rotated name, reads it from the saved offset.
    fn finish_rotated(
        &mut self,
        saved: &LogPosition,
        out: &mut Vec<String>,
    ) -> Result<(), SourceError> {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Ok(());
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let prefix = name.as_encoded_bytes();
        for entry in entries.flatten() {
            let entry_name: OsString = entry.file_name();
            if !entry_name.as_encoded_bytes().starts_with(prefix) || entry_name == name {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.ino() != saved.inode || !meta.is_file() {
                continue;
            }
            let Ok(old) = File::open(entry.path()) else {
                continue;
            };
            if saved.head_hash != 0 && head_hash(&old).ok().flatten() != Some(saved.head_hash) {
                continue;
            }
            tracing::info!(source = %self.source_name, old = %entry.path().display(), "finishing the log rotated while stopped");
            let mut at = ReadPoint {
                offset: saved.offset,
                skipped: 0,
            };
            while read_from(&old, &mut at, Last::Line, out, &mut self.dropped)
                .map_err(self.error("reading the rotated file"))?
            {}
            break;
        }
        Ok(())
    }

    /// Reads the lines past what was read, up to [`READ_LIMIT`] bytes;
    /// returns whether more is waiting.
    fn read_available(&mut self, out: &mut Vec<String>) -> Result<bool, SourceError> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let more =
            read_from(file, &mut self.at, Last::Held, out, &mut self.dropped).map_err(|error| {
                SourceError::File {
                    source_name: self.source_name.clone(),
                    path: self.path.clone(),
                    operation: "reading",
                    error,
                }
            })?;
        if self.head_hash.is_none() && self.at.offset > 0 {
            self.head_hash = head_hash(file).ok().flatten();
        }
        Ok(more)
    }
}

/// Where reading a file resumes.
#[derive(Clone, Copy, Debug, Default)]
struct ReadPoint {
    /// Where the next line starts (what a saved position holds).
    offset: u64,
    /// Bytes after `offset` of an over-long line already passed over.
    skipped: u64,
}

/// Appends the lines of `file` past `at` to `out`, up to [`READ_LIMIT`]
/// bytes, and moves `at` past them; over-long lines are counted in
/// `dropped`. Returns whether more is waiting.
fn read_from(
    file: &File,
    at: &mut ReadPoint,
    last: Last,
    out: &mut Vec<String>,
    dropped: &mut u64,
) -> io::Result<bool> {
    let start = at.offset + at.skipped;
    let mut position = start;
    let progress = lines::read_lines(
        |buf| {
            let n = file.read_at(buf, position)?;
            position += n as u64;
            Ok(n)
        },
        Options {
            skip_first: at.skipped > 0,
            owned: READ_LIMIT,
            block: BLOCK,
            max_line: Some(MAX_LINE),
            last,
        },
        |chunk| lines::split_lines(chunk, out),
    )?;
    if progress.consumed > 0 {
        *at = ReadPoint {
            offset: start + progress.consumed,
            skipped: 0,
        };
    }
    at.skipped += progress.unfinished;
    *dropped += progress.dropped;
    Ok(progress.more)
}

/// The position at the end of the file at `path` (at its last complete
/// line), if it exists.
fn end_of(path: &Path) -> Option<LogPosition> {
    let file = File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    Some(LogPosition {
        inode: meta.ino(),
        offset: last_line_end(&file, meta.len()).ok()?,
        head_hash: head_hash(&file).ok().flatten().unwrap_or(0),
        cursor: None,
    })
}

/// The offset just past the last `\n` at or before `size` (within the last
/// 64 KiB), so following from the end never starts mid-line.
fn last_line_end(file: &File, size: u64) -> io::Result<u64> {
    let window = size.min(MAX_LINE as u64);
    let start = size - window;
    let mut tail = vec![0u8; usize::try_from(window).unwrap_or(MAX_LINE)];
    let mut filled = 0;
    while filled < tail.len() {
        let n = file.read_at(&mut tail[filled..], start + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(tail[..filled]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(size, |i| start + i as u64 + 1))
}

#[cfg(test)]
mod tests {
    use std::{fs::OpenOptions, io::Write as _};

    use super::*;

    fn append(path: &Path, text: &str) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        file.write_all(text.as_bytes()).expect("append");
    }

    fn poll_all(follower: &mut FileFollower) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..100 {
            if !follower.poll(&mut out).expect("poll") {
                break;
            }
        }
        out
    }

    fn lines(range: std::ops::Range<u32>, tag: &str) -> String {
        expected(range, tag).into_iter().map(|l| l + "\n").collect()
    }

    fn expected(range: std::ops::Range<u32>, tag: &str) -> Vec<String> {
        range.map(|i| format!("{tag} line {i}")).collect()
    }

    /// A fail line an attacker would like to see matched.
    const FORGED: &str = "Nov 28 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[198.51.100.200]: 554 5.7.1 forged";

    /// 100 KiB of padding, then the forged line, all on one line.
    fn smuggler() -> String {
        format!("{}{FORGED}\n", "A".repeat(100 << 10))
    }

    #[test]
    fn an_over_long_line_is_dropped_whole_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("mail.log");
        append(&log, "");
        let mut follower = FileFollower::new("mail", &log, None);
        assert!(poll_all(&mut follower).is_empty());
        let longest = "b".repeat(MAX_LINE);
        append(&log, &format!("before\n{}after\n{longest}\n", smuggler()));
        assert_eq!(
            poll_all(&mut follower),
            ["before", "after", longest.as_str()]
        );
        assert_eq!(follower.take_dropped(), 1);
        assert_eq!(follower.take_dropped(), 0);
    }

    #[test]
    fn an_over_long_line_written_in_pieces_is_dropped_to_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("mail.log");
        append(&log, "");
        let mut follower = FileFollower::new("mail", &log, None);
        poll_all(&mut follower);
        let line = smuggler();
        let (head, tail) = line.split_at(70 << 10);
        append(&log, head);
        assert!(poll_all(&mut follower).is_empty());
        assert_eq!(follower.take_dropped(), 1, "counted once it is too long");
        // The saved position is still the start of that line: a restart
        // now reads it from there and drops it again.
        let position = follower.position();
        append(&log, &tail[..tail.len() - 10]);
        assert!(poll_all(&mut follower).is_empty());
        append(&log, &format!("{}next\n", &tail[tail.len() - 10..]));
        assert_eq!(poll_all(&mut follower), ["next"]);
        assert_eq!(
            follower.take_dropped(),
            0,
            "the same line is not counted twice"
        );
        let mut restarted = FileFollower::new("mail", &log, Some(position));
        assert_eq!(poll_all(&mut restarted), ["next"]);
        assert_eq!(restarted.take_dropped(), 1);
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("mail.log");
        let mut follower = FileFollower::new("mail", &log, None);
        assert!(poll_all(&mut follower).is_empty(), "no file yet");
        append(&log, "first\nsec");
        assert_eq!(poll_all(&mut follower), ["first"]);
        assert_eq!(follower.position().offset, 6);
        append(&log, "ond\r\nthird\n");
        assert_eq!(poll_all(&mut follower), ["second", "third"]);
        assert!(poll_all(&mut follower).is_empty());
    }

    #[test]
    fn a_file_that_appears_later_is_read_from_its_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("mail.log");
        let mut follower = FileFollower::new("mail", &log, None);
        for _ in 0..3 {
            assert!(poll_all(&mut follower).is_empty());
        }
        append(&log, &lines(0..5, "a"));
        assert_eq!(poll_all(&mut follower), expected(0..5, "a"));
    }

    #[test]
    fn an_existing_file_without_a_saved_position_is_followed_from_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("mail.log");
        append(&log, "old history\nold partial");
        let mut follower = FileFollower::new("mail", &log, None);
        assert!(poll_all(&mut follower).is_empty());
        append(&log, " completed\nnew\n");
        assert_eq!(poll_all(&mut follower), ["old partial completed", "new"]);
    }

    #[test]
    fn rotation_by_rename_finishes_the_old_file_then_reads_the_new() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("mail.log");
        append(&log, "");
        let mut follower = FileFollower::new("mail", &log, None).draining_for(Duration::ZERO);
        let mut seen = poll_all(&mut follower);
        append(&log, &lines(0..3, "a"));
        seen.extend(poll_all(&mut follower));
        // Written after the last poll, before and after the rename.
        append(&log, &lines(3..5, "a"));
        std::fs::rename(&log, dir.path().join("mail.log.1")).expect("rename");
        append(&dir.path().join("mail.log.1"), "a line 5 unterminated");
        seen.extend(poll_all(&mut follower));
        append(&log, &lines(0..4, "b"));
        seen.extend(poll_all(&mut follower));
        append(&log, &lines(4..6, "b"));
        seen.extend(poll_all(&mut follower));
        // The old file's unterminated line counts once it stopped growing.
        let mut want = expected(0..5, "a");
        want.extend(expected(0..4, "b"));
        want.push("a line 5 unterminated".to_owned());
        want.extend(expected(4..6, "b"));
        assert_eq!(seen, want);
        assert!(follower.draining.is_none());
    }

    #[test]
    fn lines_the_writer_adds_to_the_renamed_file_still_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, old) = (dir.path().join("mail.log"), dir.path().join("mail.log.1"));
        append(&log, "");
        let idle = Duration::from_millis(300);
        let mut follower = FileFollower::new("mail", &log, None).draining_for(idle);
        let mut seen = poll_all(&mut follower);
        append(&log, &lines(0..2, "a"));
        seen.extend(poll_all(&mut follower));
        // logrotate renames and creates; the writer has not reopened yet.
        std::fs::rename(&log, &old).expect("rename");
        append(&log, &lines(0..1, "b"));
        seen.extend(poll_all(&mut follower));
        append(&old, &lines(2..4, "a"));
        seen.extend(poll_all(&mut follower));
        append(&old, "a late partial");
        append(&log, &lines(1..2, "b"));
        seen.extend(poll_all(&mut follower));
        let mut want = expected(0..2, "a");
        want.extend(expected(0..1, "b"));
        want.extend(expected(2..4, "a"));
        want.extend(expected(1..2, "b"));
        assert_eq!(seen, want, "the partial line waits");
        // Idle long enough: the partial line counts and the old file is
        // let go; what is written to it later is not read.
        std::thread::sleep(idle + Duration::from_millis(100));
        assert_eq!(poll_all(&mut follower), ["a late partial"]);
        assert!(follower.draining.is_none());
        append(&old, "\nnever read\n");
        assert!(poll_all(&mut follower).is_empty());
        assert_eq!(
            follower.position().inode,
            std::fs::metadata(&log).expect("stat").ino(),
            "the saved position is the new file's"
        );
    }

    #[test]
    fn copytruncate_restarts_at_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("mail.log");
        append(&log, "");
        let mut follower = FileFollower::new("mail", &log, None);
        let mut seen = poll_all(&mut follower);
        append(&log, &lines(0..10, "a"));
        seen.extend(poll_all(&mut follower));
        std::fs::copy(&log, dir.path().join("mail.log.1")).expect("copy");
        OpenOptions::new()
            .write(true)
            .open(&log)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        append(&log, &lines(0..2, "b"));
        seen.extend(poll_all(&mut follower));
        // Truncated and refilled past the old offset between two polls:
        // the first line changed, so this is noticed too.
        std::fs::write(&log, lines(0..20, "c")).expect("rewrite in place");
        seen.extend(poll_all(&mut follower));
        let mut want = expected(0..10, "a");
        want.extend(expected(0..2, "b"));
        want.extend(expected(0..20, "c"));
        assert_eq!(seen, want);
    }

    /// A daemon start: a follower from the saved position reads what is
    /// there, and its position is saved again.
    fn resume(store: &crate::bans::store::Store, log: &Path) -> Vec<String> {
        let saved = store.logwatch_position("mail").expect("get");
        let mut follower = FileFollower::new("mail", log, saved);
        let seen = poll_all(&mut follower);
        store
            .put_logwatch_position("mail", &follower.position())
            .expect("put");
        seen
    }

    #[test]
    fn restart_resumes_exactly_where_it_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::bans::store::Store::open_in(&dir.path().join("state")).expect("store");
        let log = dir.path().join("mail.log");
        append(&log, "");
        let mut follower =
            FileFollower::new("mail", &log, store.logwatch_position("mail").expect("get"));
        let mut seen = poll_all(&mut follower);
        append(&log, &lines(0..3, "a"));
        append(&log, "a line 3 half");
        seen.extend(poll_all(&mut follower));
        store
            .put_logwatch_position("mail", &follower.position())
            .expect("put");
        drop(follower);
        // Written while stopped, the partial line completed.
        append(&log, "\n");
        append(&log, &lines(4..6, "a"));
        seen.extend(resume(&store, &log));
        // Rotated while stopped: the rest of the old file, then the new one.
        append(&log, &lines(6..8, "a"));
        std::fs::rename(&log, dir.path().join("mail.log.1")).expect("rename");
        append(&log, &lines(0..3, "b"));
        seen.extend(resume(&store, &log));
        // Replaced in place while stopped (same size or larger, new head).
        std::fs::write(&log, lines(0..4, "c")).expect("rewrite");
        seen.extend(resume(&store, &log));
        let mut want = expected(0..3, "a");
        want.push("a line 3 half".to_owned());
        want.extend(expected(4..8, "a"));
        want.extend(expected(0..3, "b"));
        want.extend(expected(0..4, "c"));
        assert_eq!(seen, want);
    }
}
