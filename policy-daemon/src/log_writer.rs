//! The daemon's log writer: lines are appended to a buffer and written by
//! a thread of their own, many lines per write.
//!
//! A spam run logs a line per rejected mail, tens of thousands a second.
//! Handing each line to a writer thread that sleeps between lines costs a
//! wake-up per line, two context switches and a `write` each: more kernel
//! time than the policy answer itself. Here the first line into an empty
//! buffer wakes the thread, which writes at most once per [`GATHER`]:
//! a line after a quiet spell is written at once, and the lines that
//! follow it wait until [`GATHER`] after that write (less when they fill
//! the buffer past [`WRITE_AT`]) and are written together. A line reaches
//! the log at most about [`GATHER`] after it was logged.
//!
//! Nothing is dropped: past [`MAX_PENDING`] bytes waiting, a thread that
//! logs waits until the writer has taken them. Each line is appended
//! whole, so lines of different threads never mix. Dropping the
//! [`FlushOnDrop`] guard writes what is left and ends the thread.

use std::{
    io::{self, Write},
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use parking_lot::{Condvar, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// The shortest time between two writes, but past [`WRITE_AT`].
pub const GATHER: Duration = Duration::from_millis(10);
/// Bytes waiting past which the writer writes without waiting longer.
pub const WRITE_AT: usize = 256 * 1024;
/// Bytes waiting past which a thread that logs waits for the writer.
pub const MAX_PENDING: usize = 8 << 20;

/// Hands lines to the writer thread: a [`MakeWriter`] for the `fmt`
/// layer, which writes each event as one line.
#[derive(Clone, Debug)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Writes what is left and ends the writer thread when dropped.
#[derive(Debug)]
pub struct FlushOnDrop {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// [`GATHER`] but in tests.
    gather: Duration,
    pending: Mutex<Pending>,
    /// The writer waits here for lines, and for the end of its gathering.
    lines: Condvar,
    /// Threads that log wait here for room.
    room: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Set by [`FlushOnDrop`]: write what is left and end.
    stop: bool,
}

impl LogWriter {
    /// Starts the thread `name` that writes to `out`.
    pub fn spawn(out: impl Write + Send + 'static, name: &str) -> io::Result<(Self, FlushOnDrop)> {
        Self::spawn_gathering(out, name, GATHER)
    }

    /// [`LogWriter::spawn`], waiting `gather` for more lines.
    fn spawn_gathering(
        out: impl Write + Send + 'static,
        name: &str,
        gather: Duration,
    ) -> io::Result<(Self, FlushOnDrop)> {
        let shared = Arc::new(Shared {
            gather,
            ..Shared::default()
        });
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn({
            let shared = Arc::clone(&shared);
            move || shared.write_all_to(out)
        })?;
        Ok((
            Self {
                shared: Arc::clone(&shared),
            },
            FlushOnDrop {
                shared,
                thread: Some(thread),
            },
        ))
    }
}

impl Shared {
    /// Appends `line`, waiting while [`MAX_PENDING`] bytes wait already;
    /// wakes the writer for the first line and when [`WRITE_AT`] is
    /// crossed.
    fn push(&self, line: &[u8]) {
        let mut pending = self.pending.lock();
        // One line larger than the whole room still goes in, once the
        // buffer is empty.
        while !pending.bytes.is_empty()
            && pending.bytes.len() + line.len() > MAX_PENDING
            && !pending.stop
        {
            self.room.wait(&mut pending);
        }
        let before = pending.bytes.len();
        pending.bytes.extend_from_slice(line);
        let after = pending.bytes.len();
        drop(pending);
        if before == 0 || (before < WRITE_AT && after >= WRITE_AT) {
            self.lines.notify_one();
        }
    }

    /// The writer thread: waits for lines, gathers, writes, until stopped.
    fn write_all_to(&self, mut out: impl Write) {
        let mut writing = Vec::new();
        // When the last write was made: the next waits until `gather`
        // after it, so lines that come one after another are written
        // together and a line after a quiet spell at once.
        let mut written: Option<Instant> = None;
        loop {
            let mut pending = self.pending.lock();
            while pending.bytes.is_empty() && !pending.stop {
                self.lines.wait(&mut pending);
            }
            let until = written.map_or_else(Instant::now, |at| at + self.gather);
            while pending.bytes.len() < WRITE_AT && !pending.stop && Instant::now() < until {
                if self.lines.wait_until(&mut pending, until).timed_out() {
                    break;
                }
            }
            std::mem::swap(&mut writing, &mut pending.bytes);
            let stop = pending.stop;
            drop(pending);
            self.room.notify_all();
            // Nowhere to report a failed write to: the line is let go, as
            // a write to a closed stderr loses it anyway.
            let _ = out.write_all(&writing).and_then(|()| out.flush());
            written = Some(Instant::now());
            writing.clear();
            // A burst's buffer is not kept for ever.
            if writing.capacity() > WRITE_AT {
                writing = Vec::new();
            }
            if stop && self.pending.lock().bytes.is_empty() {
                return;
            }
        }
    }
}

/// One event's line, appended whole when written.
#[derive(Debug)]
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(&self.shared)
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.pending.lock().stop = true;
        self.shared.lines.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use std::{
        fmt::Write as _,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// What the writer thread wrote, and in how many writes; each write
    /// takes `delay`.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
        delay: Duration,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            std::thread::sleep(self.delay);
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.bytes.lock().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The sink's writes once there are `n`, or after 10 s.
    fn wait_writes(sink: &Sink, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.writes.load(Ordering::SeqCst) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        sink.writes.load(Ordering::SeqCst)
    }

    fn log(writer: &LogWriter, line: &str) {
        writer.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn lines_are_written_in_order_and_all_on_drop() {
        let sink = Sink::default();
        let (writer, flush) = LogWriter::spawn(sink.clone(), "test-log").unwrap();
        for i in 0..1_000 {
            log(&writer, &format!("line {i}\n"));
        }
        drop(flush);
        let mut expected = String::new();
        for i in 0..1_000 {
            writeln!(expected, "line {i}").unwrap();
        }
        assert_eq!(
            String::from_utf8(sink.bytes.lock().clone()).unwrap(),
            expected
        );
    }

    #[test]
    fn lines_that_follow_the_first_are_gathered_into_one_write() {
        let sink = Sink::default();
        // Gathering for longer than the lines take to come: the first
        // line written at once, all the others in one write.
        let (writer, flush) =
            LogWriter::spawn_gathering(sink.clone(), "test-log", Duration::from_secs(30)).unwrap();
        log(&writer, "line 0\n");
        assert_eq!(wait_writes(&sink, 1), 1, "the first line at once");
        for i in 1..100 {
            log(&writer, &format!("line {i}\n"));
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(flush);
        assert_eq!(sink.writes.load(Ordering::SeqCst), 2);
        let text = String::from_utf8(sink.bytes.lock().clone()).unwrap();
        assert_eq!(text.lines().count(), 100);
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_more() {
        let sink = Sink::default();
        // Not 30 s later: at once.
        let (writer, _flush) =
            LogWriter::spawn_gathering(sink.clone(), "test-log", Duration::from_secs(30)).unwrap();
        log(&writer, "alone\n");
        assert_eq!(wait_writes(&sink, 1), 1);
        assert_eq!(sink.bytes.lock().as_slice(), b"alone\n");
    }

    #[test]
    fn threads_logging_at_once_keep_their_lines_whole_and_nothing_is_lost() {
        // A slow log: the buffer fills past its limit many times.
        let sink = Sink {
            delay: Duration::from_millis(20),
            ..Sink::default()
        };
        let (writer, flush) = LogWriter::spawn(sink.clone(), "test-log").unwrap();
        // The threads wait for room; nothing is dropped.
        let long = "x".repeat(4_000);
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let (writer, long) = (writer.clone(), &long);
                scope.spawn(move || {
                    for i in 0..3_000 {
                        log(&writer, &format!("{thread} {i} {long}\n"));
                    }
                });
            }
        });
        drop(flush);
        let text = String::from_utf8(sink.bytes.lock().clone()).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let mut words = line.split(' ');
            let thread: usize = words.next().unwrap().parse().unwrap();
            let i: usize = words.next().unwrap().parse().unwrap();
            assert_eq!(words.next(), Some(long.as_str()), "a whole line");
            assert_eq!(i, next[thread], "thread {thread}'s lines in order");
            next[thread] += 1;
        }
        assert_eq!(next, [3_000; 4]);
    }

    #[test]
    fn a_line_larger_than_the_room_is_written_whole() {
        let sink = Sink::default();
        let (writer, flush) = LogWriter::spawn(sink.clone(), "test-log").unwrap();
        log(&writer, "before\n");
        let huge = format!("{}\n", "y".repeat(MAX_PENDING + 1));
        log(&writer, &huge);
        log(&writer, "after\n");
        drop(flush);
        assert_eq!(
            String::from_utf8(sink.bytes.lock().clone()).unwrap(),
            format!("before\n{huge}after\n")
        );
    }
}
