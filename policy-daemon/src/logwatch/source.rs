//! Log sources: files followed across rotation and truncation, and the
//! systemd journal through `journalctl -f -o json`.
//!
//! A [`FileFollower`] hands out complete lines only and reports the offset
//! just past the last one, so a position saved after the lines were
//! processed never skips a line nor repeats one. Polling (every
//! [`POLL_INTERVAL`]) rather than inotify: it also works on NFS, in
//! containers and across the rename-then-create of logrotate.

use std::{
    ffi::OsString,
    fs::File,
    io::{self, BufReader, Seek as _},
    os::unix::{
        fs::{FileExt as _, MetadataExt as _},
        process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::bans::store::LogPosition;

/// How often a file is checked for new data, rotation and truncation.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Most bytes read in one [`FileFollower::poll`]: a large backlog is
/// processed (and its position saved) in slices.
const READ_LIMIT: usize = 4 << 20;
/// How long a renamed log is still read after it last grew: its writer
/// keeps writing to it until it reopens the path (rsyslog on the HUP of
/// logrotate's `postrotate`), and those lines count too.
const DRAIN_IDLE: Duration = Duration::from_secs(10);
/// Bytes of the first line hashed to recognise a file.
const HEAD_BYTES: usize = 4096;
/// A line longer than this is dropped whole, up to its newline: a writer
/// that never ends its line must not make the follower buffer without
/// bound, and the tail of a long line must not be read as a line of its
/// own (whoever gets 64 KiB into one line could forge a fail line).
pub const MAX_LINE: usize = 64 << 10;
/// The longest journal entry read (JSON, with every field), for the same
/// reasons.
const MAX_JOURNAL_LINE: usize = 1 << 20;

/// A log source that cannot be read, naming the file or the command.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("log source {source_name}: {path}: {operation}: {error}")]
    File {
        source_name: String,
        path: PathBuf,
        operation: &'static str,
        error: io::Error,
    },
    #[error(
        "log source {source_name}: journalctl not found ({error}); install systemd's journalctl or follow a file with `path`"
    )]
    JournalctlMissing {
        source_name: String,
        error: io::Error,
    },
    #[error("log source {source_name}: starting journalctl: {error}")]
    Journalctl {
        source_name: String,
        error: io::Error,
    },
}

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
    /// Just past the last complete line handed out (or dropped).
    offset: u64,
    /// What was read after `offset` without its `\n` yet.
    partial: Pending,
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
    /// Just past the last complete line handed out.
    offset: u64,
    partial: Pending,
    /// When it last grew.
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
            offset: 0,
            partial: Pending::default(),
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
            offset: self.offset,
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
            if size < self.offset + self.partial.len() || replaced {
                tracing::info!(source = %self.source_name, path = %self.path.display(), "log truncated or rewritten; reading it from the start");
                self.restart_at_zero();
            }
        }
        if self.read_available(out, READ_LIMIT)? {
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
            while self.read_available(out, READ_LIMIT)? {}
            if let Some(mut older) = self.draining.take() {
                flush_partial(out, &mut older.offset, &mut older.partial);
            }
            if let Some(file) = self.file.take() {
                self.draining = Some(Draining {
                    file,
                    offset: self.offset,
                    partial: std::mem::take(&mut self.partial),
                    grew: Instant::now(),
                });
            }
            tracing::info!(source = %self.source_name, path = %self.path.display(), "log rotated; following the new file");
            if self.open(out)? {
                return self.read_available(out, READ_LIMIT);
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
        let before = old.offset + old.partial.len();
        while read_lines(
            &old.file,
            &mut old.offset,
            &mut old.partial,
            (out, &mut self.dropped),
            READ_LIMIT,
        )
        .map_err(|error| SourceError::File {
            source_name: self.source_name.clone(),
            path: self.path.clone(),
            operation: "reading the rotated file",
            error,
        })? {}
        if old.offset + old.partial.len() != before {
            old.grew = Instant::now();
        } else if old.grew.elapsed() >= self.drain_idle {
            flush_partial(out, &mut old.offset, &mut old.partial);
            self.draining = None;
        }
        Ok(())
    }

    fn restart_at_zero(&mut self) {
        self.offset = 0;
        self.partial = Pending::default();
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
        self.partial = Pending::default();
        self.head_hash = head;
        self.offset = 0;
        if let Some(saved) = self.resume.take() {
            let same = saved.inode == self.inode
                && (saved.head_hash == 0 || Some(saved.head_hash) == head);
            if same && saved.offset <= meta.len() {
                self.offset = saved.offset;
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
            let mut reader = BufReader::new(old);
            reader
                .seek(io::SeekFrom::Start(saved.offset))
                .map_err(self.error("seeking in the rotated file"))?;
            let mut line = Vec::new();
            let mut dropped = 0;
            loop {
                match next_line(&mut reader, &mut line, MAX_LINE)
                    .map_err(self.error("reading the rotated file"))?
                {
                    Line::Complete => push_line(out, &line),
                    Line::TooLong => dropped += 1,
                    Line::End => break,
                }
            }
            self.dropped += dropped;
            break;
        }
        Ok(())
    }

    /// Reads up to `limit` bytes past what was read; returns whether more
    /// is waiting.
    fn read_available(&mut self, out: &mut Vec<String>, limit: usize) -> Result<bool, SourceError> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let more = read_lines(
            file,
            &mut self.offset,
            &mut self.partial,
            (out, &mut self.dropped),
            limit,
        )
        .map_err(|error| SourceError::File {
            source_name: self.source_name.clone(),
            path: self.path.clone(),
            operation: "reading",
            error,
        })?;
        if self.head_hash.is_none() && self.offset > 0 {
            self.head_hash = head_hash(file).ok().flatten();
        }
        Ok(more)
    }
}

/// What was read of a line whose `\n` has not come yet.
#[derive(Debug, Default)]
struct Pending {
    /// The line so far, while it is at most [`MAX_LINE`] long.
    bytes: Vec<u8>,
    /// Bytes of an over-long line passed over; non-zero while its end is
    /// awaited. The line's start stays the saved position, so a restart
    /// meanwhile reads it from its start and drops it again.
    skipped: u64,
}

impl Pending {
    /// Bytes read past the last complete line.
    fn len(&self) -> u64 {
        self.bytes.len() as u64 + self.skipped
    }
}

/// Reads up to `limit` bytes of `file` past `offset` and what `partial`
/// holds, appending the complete lines to `out.0` and advancing `offset`
/// past them; a line longer than [`MAX_LINE`] is dropped whole and counted
/// in `out.1`. Returns whether more is waiting.
fn read_lines(
    file: &File,
    offset: &mut u64,
    partial: &mut Pending,
    out: (&mut Vec<String>, &mut u64),
    limit: usize,
) -> io::Result<bool> {
    let (out, dropped) = out;
    let mut buf = vec![0u8; limit.min(64 << 10)];
    let mut total = 0;
    while total < limit {
        let n = file.read_at(&mut buf, *offset + partial.len())?;
        if n == 0 {
            return Ok(false);
        }
        total += n;
        let mut chunk = &buf[..n];
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            let consumed = partial.len() + end as u64 + 1;
            if partial.skipped > 0 {
                // The end of a line already counted as dropped.
            } else if partial.bytes.len() + end > MAX_LINE {
                *dropped += 1;
            } else if partial.bytes.is_empty() {
                push_line(out, &chunk[..end]);
            } else {
                partial.bytes.extend_from_slice(&chunk[..end]);
                push_line(out, &partial.bytes);
            }
            *partial = Pending::default();
            *offset += consumed;
            chunk = &chunk[end + 1..];
        }
        if partial.skipped > 0 {
            partial.skipped += chunk.len() as u64;
        } else {
            partial.bytes.extend_from_slice(chunk);
            if partial.bytes.len() > MAX_LINE {
                *dropped += 1;
                partial.skipped = partial.bytes.len() as u64;
                partial.bytes = Vec::new();
            }
        }
    }
    Ok(true)
}

/// A file is finished: its unterminated last line counts, unless it was
/// too long (then it was counted as dropped already).
fn flush_partial(out: &mut Vec<String>, offset: &mut u64, partial: &mut Pending) {
    if partial.skipped == 0 {
        if partial.bytes.is_empty() {
            return;
        }
        push_line(out, &partial.bytes);
    }
    *offset += partial.len();
    *partial = Pending::default();
}

/// What [`next_line`] read.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (its `\n` included when it had one), in the buffer.
    Complete,
    /// A line longer than the limit, passed over up to its newline.
    TooLong,
    End,
}

/// Reads one line of at most `max` bytes into `line`; a longer one is
/// passed over whole without being buffered.
fn next_line(reader: &mut impl io::BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    line.clear();
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::End,
                (false, false) => Line::Complete,
            });
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (end + 1, true),
            None => (available.len(), false),
        };
        if !too_long {
            if line.len() + take > max + 1 {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(&available[..take]);
            }
        }
        reader.consume(take);
        if done {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

fn push_line(out: &mut Vec<String>, bytes: &[u8]) {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    out.push(String::from_utf8_lossy(bytes).into_owned());
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

/// One journal entry: the line as filters read it (the JSON object, which
/// [`super::filter::parse_line`] understands) and its cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub json: String,
    pub cursor: Option<String>,
    pub time: Option<SystemTime>,
}

/// Parses one line of `journalctl -o json`; `None` when it is not JSON.
pub fn parse_journal_entry(line: &str) -> Option<JournalEntry> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let cursor = value["__CURSOR"].as_str().map(str::to_owned);
    let time = value["__REALTIME_TIMESTAMP"]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .and_then(|micros| UNIX_EPOCH.checked_add(Duration::from_micros(micros)));
    Some(JournalEntry {
        json: line.to_owned(),
        cursor,
        time,
    })
}

/// `journalctl -f -o json` for some units, resuming after a cursor.
#[derive(Debug)]
pub struct JournalFollower {
    source_name: String,
    program: PathBuf,
    units: Vec<String>,
    namespace: Option<String>,
    cursor: Option<String>,
    child: Option<Child>,
    lines: Option<mpsc::Receiver<String>>,
    /// Over-long entries passed over by the reading thread.
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
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
            dropped: std::sync::Arc::default(),
            child: None,
            lines: None,
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
        if let Some(stdout) = child.stdout.take() {
            let name = format!("journal-{}", self.source_name);
            let dropped = std::sync::Arc::clone(&self.dropped);
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut line = Vec::new();
                loop {
                    match next_line(&mut reader, &mut line, MAX_JOURNAL_LINE) {
                        Ok(Line::Complete) => {
                            let text = String::from_utf8_lossy(&line);
                            if send.send(text.trim_end_matches('\n').to_owned()).is_err() {
                                break;
                            }
                        }
                        Ok(Line::TooLong) => {
                            dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(Line::End) | Err(_) => break,
                    }
                }
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
        self.lines = Some(receive);
        Ok(())
    }

    /// How many over-long entries were dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        self.dropped.swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits up to `timeout` for entries and appends them to `out`; `Ok(false)`
    /// when `journalctl` has exited (call [`Self::start`] again).
    pub fn poll(&mut self, out: &mut Vec<JournalEntry>, timeout: Duration) -> bool {
        let Some(lines) = self.lines.take() else {
            return false;
        };
        let mut take = |line: &str| {
            if let Some(entry) = parse_journal_entry(line) {
                if entry.cursor.is_some() {
                    self.cursor.clone_from(&entry.cursor);
                }
                out.push(entry);
            }
        };
        let alive = match lines.recv_timeout(timeout) {
            Ok(line) => {
                take(&line);
                let mut alive = true;
                for _ in 0..4096 {
                    match lines.try_recv() {
                        Ok(line) => take(&line),
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
            self.lines = Some(lines);
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
        self.lines = None;
    }
}

impl Drop for JournalFollower {
    fn drop(&mut self) {
        self.stop();
    }
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
    fn bounded_line_reads_pass_over_long_lines() {
        let text = format!("one\n{}two", smuggler());
        let mut reader = BufReader::with_capacity(1000, text.as_bytes());
        let mut line = Vec::new();
        let mut seen = Vec::new();
        loop {
            match next_line(&mut reader, &mut line, MAX_LINE).expect("read") {
                Line::Complete => seen.push(String::from_utf8_lossy(&line).into_owned()),
                Line::TooLong => seen.push("(dropped)".to_owned()),
                Line::End => break,
            }
        }
        assert_eq!(seen, ["one\n", "(dropped)", "two"]);
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

    #[test]
    fn journal_entries_carry_their_cursor_and_time() {
        let entry = parse_journal_entry(
            r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1700000000000001","MESSAGE":"hi"}"#,
        )
        .expect("entry");
        assert_eq!(entry.cursor.as_deref(), Some("s=1;i=2"));
        assert_eq!(
            entry.time,
            Some(UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001))
        );
        assert!(parse_journal_entry("not json").is_none());
    }

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
