//! Reading a log as lines: the one reader behind the file and journal
//! followers and `test-filter`.
//!
//! It hands out blocks of whole lines (a filter's literal gate scans a
//! block at once), never buffers more than the longest line it accepts,
//! and says how far it got, so a follower saves a position that is
//! always at the start of a line.

use std::io;

/// What the line at the end of the input, without its `\n`, is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Last {
    /// A line: the input is finished (a file read through, a pipe closed).
    Line,
    /// Not a line yet: its writer is still writing it. It is neither
    /// handed out nor counted in [`Progress::consumed`].
    Held,
}

/// How to read.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The bytes up to the first `\n` belong to a line read before (the
    /// range before, or an over-long line being passed over).
    pub skip_first: bool,
    /// Only lines that start in the first `owned` bytes are handed out,
    /// the last of them read to its end.
    pub owned: u64,
    /// How much is read at once.
    pub block: usize,
    /// A line longer than this (without its `\n`) is dropped whole and
    /// counted: a writer that never ends its line must not make the reader
    /// buffer without bound, and the tail of a long line must not be read
    /// as a line of its own (whoever gets that far into one line could
    /// forge a fail line). `None`: no limit.
    pub max_line: Option<usize>,
    pub last: Last,
}

/// What [`read_lines`] hands out, in input order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Whole lines, each ending in `\n` except a [`Last::Line`].
    Lines(&'a [u8]),
    /// A line longer than [`Options::max_line`], dropped.
    TooLong,
}

/// How far a [`read_lines`] got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes from the start of the input to the end of the last line
    /// handed out, dropped or skipped: where the next read starts.
    pub consumed: u64,
    /// Lines dropped for being longer than [`Options::max_line`].
    pub dropped: u64,
    /// Bytes after `consumed` of an over-long line whose end has not come
    /// yet (already counted in `dropped`, unless it was skipped from the
    /// start): the next read skips them with [`Options::skip_first`].
    pub unfinished: u64,
    /// Stopped at [`Options::owned`] rather than at the end of the input.
    pub more: bool,
}

/// Feeds `scan` the lines read with `read`, as [`Options`] says.
pub fn read_lines(
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    options: Options,
    mut scan: impl FnMut(Chunk<'_>),
) -> io::Result<Progress> {
    let mut buf = vec![0_u8; options.block.max(1)];
    // `base`: where `buf[0]` is in the input.
    let (mut filled, mut base) = (0_usize, 0_u64);
    let mut skipping = options.skip_first;
    let mut progress = Progress::default();
    loop {
        if filled == buf.len() {
            // A line longer than the buffer.
            buf.resize(buf.len() * 2, 0);
        }
        let n = loop {
            match read(&mut buf[filled..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        let eof = n == 0;
        filled += n;
        let data = &buf[..filled];
        let mut start = 0;
        if skipping {
            if let Some(i) = memchr::memchr(b'\n', data) {
                start = i + 1;
                skipping = false;
                progress.consumed = base + start as u64;
                progress.unfinished = 0;
            } else {
                base += filled as u64;
                filled = 0;
                if eof && options.last == Last::Line {
                    // The input ended the line.
                    progress.consumed = base;
                }
                progress.unfinished = base - progress.consumed;
                // Any line that starts later starts past what is owned.
                progress.more = !eof && base >= options.owned;
                if eof || progress.more {
                    return Ok(progress);
                }
                continue;
            }
        }
        let whole = if eof && options.last == Last::Line {
            filled
        } else {
            memchr::memrchr(b'\n', &data[start..]).map_or(start, |i| start + i + 1)
        };
        // Lines from `limit` on are not owned.
        let limit = usize::try_from(options.owned.saturating_sub(base)).unwrap_or(usize::MAX);
        if limit <= start {
            progress.more = !eof || start < filled;
            return Ok(progress);
        }
        if limit <= whole {
            let end = memchr::memchr(b'\n', &data[limit - 1..whole]).map_or(whole, |i| limit + i);
            emit_lines(
                &data[start..end],
                options.max_line,
                &mut progress.dropped,
                &mut scan,
            );
            progress.consumed = base + end as u64;
            progress.more = !eof || end < filled;
            return Ok(progress);
        }
        emit_lines(
            &data[start..whole],
            options.max_line,
            &mut progress.dropped,
            &mut scan,
        );
        progress.consumed = base + whole as u64;
        let tail = filled - whole;
        let over_long = options.max_line.is_some_and(|max| tail > max);
        if over_long {
            // Dropped now, passed over up to its `\n` without buffering.
            progress.dropped += 1;
            scan(Chunk::TooLong);
            progress.unfinished = tail as u64;
            skipping = true;
            base += filled as u64;
            filled = 0;
        }
        if eof {
            return Ok(progress);
        }
        if !over_long {
            buf.copy_within(whole..filled, 0);
            base += whole as u64;
            filled = tail;
        }
    }
}

/// Hands `block` to `scan` without the lines longer than `max_line`,
/// which are counted in `dropped`.
fn emit_lines(
    block: &[u8],
    max_line: Option<usize>,
    dropped: &mut u64,
    scan: &mut impl FnMut(Chunk<'_>),
) {
    let Some(max) = max_line else {
        if !block.is_empty() {
            scan(Chunk::Lines(block));
        }
        return;
    };
    let (mut run, mut line) = (0, 0);
    let ends =
        memchr::memchr_iter(b'\n', block).chain((!block.ends_with(b"\n")).then_some(block.len()));
    for end in ends {
        if end - line > max {
            if run < line {
                scan(Chunk::Lines(&block[run..line]));
            }
            *dropped += 1;
            scan(Chunk::TooLong);
            run = (end + 1).min(block.len());
        }
        line = end + 1;
    }
    if run < block.len() {
        scan(Chunk::Lines(&block[run..]));
    }
}

/// Appends the lines of a [`Chunk::Lines`] to `out`, without their `\n`
/// or `\r\n`, decoded leniently.
pub fn split_lines(chunk: Chunk<'_>, out: &mut Vec<String>) {
    let Chunk::Lines(block) = chunk else { return };
    for line in block.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.push(String::from_utf8_lossy(line).into_owned());
    }
}

/// Lines in a block, counting an unterminated last line.
pub fn line_count(block: &[u8]) -> u64 {
    let newlines = memchr::memchr_iter(b'\n', block).count() as u64;
    newlines + u64::from(!block.is_empty() && !block.ends_with(b"\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader over `data` from `at`, `chunk` bytes per call at most.
    fn reader(data: &[u8], at: usize, chunk: usize) -> impl FnMut(&mut [u8]) -> io::Result<usize> {
        let mut at = at.min(data.len());
        move |buf| {
            let n = buf.len().min(chunk).min(data.len() - at);
            buf[..n].copy_from_slice(&data[at..at + n]);
            at += n;
            Ok(n)
        }
    }

    fn options(max_line: Option<usize>, last: Last) -> Options {
        Options {
            skip_first: false,
            owned: u64::MAX,
            block: 4,
            max_line,
            last,
        }
    }

    fn lines_of(data: &[u8], options: Options, chunk: usize) -> (Vec<String>, Progress) {
        let mut out = Vec::new();
        let progress = read_lines(reader(data, 0, chunk), options, |b| {
            split_lines(b, &mut out);
        })
        .expect("reads");
        (out, progress)
    }

    #[test]
    fn ranges_read_every_line_once_and_whole() {
        let long = format!("{}\n", "x".repeat(40));
        let samples: Vec<Vec<u8>> = [
            "",
            "a",
            "a\n",
            "\n\n\n",
            "one\ntwo\nthree\nfour",
            "one\ntwo\nthree\nfour\n",
            &format!("{long}short\n{long}{long}tail"),
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        for data in &samples {
            let size = data.len() as u64;
            for parts in 1..=7_u64 {
                for block in [1, 2, 3, 7, 64] {
                    let mut seen: Vec<Vec<u8>> = Vec::new();
                    for k in 0..parts {
                        let range = size * k / parts..size * (k + 1) / parts;
                        // From the byte before the range: whether a line
                        // starts at its first.
                        let at = range.start.saturating_sub(1);
                        let options = Options {
                            skip_first: range.start > 0,
                            owned: range.end - at,
                            block,
                            max_line: None,
                            last: Last::Line,
                        };
                        let at = usize::try_from(at).expect("small");
                        read_lines(reader(data, at, usize::MAX), options, |chunk| {
                            if let Chunk::Lines(b) = chunk {
                                seen.push(b.to_vec());
                            }
                        })
                        .expect("reads");
                    }
                    let what = format!(
                        "{:?} in {parts} parts, block {block}",
                        String::from_utf8_lossy(data)
                    );
                    assert_eq!(seen.concat(), *data, "{what}");
                    let lines: u64 = seen.iter().map(|b| line_count(b)).sum();
                    assert_eq!(lines, line_count(data), "{what}");
                    for b in &seen[..seen.len().saturating_sub(1)] {
                        assert!(b.ends_with(b"\n"), "{what}: {seen:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_held_last_line_is_neither_handed_out_nor_consumed() {
        for chunk in [1, 3, 100] {
            let (lines, progress) = lines_of(b"one\r\ntwo\npart", options(None, Last::Held), chunk);
            assert_eq!(lines, ["one", "two"]);
            assert_eq!(progress.consumed, 9);
            assert!(!progress.more);
            let (lines, progress) = lines_of(b"one\ntwo\nlast", options(None, Last::Line), chunk);
            assert_eq!(lines, ["one", "two", "last"]);
            assert_eq!(progress.consumed, 12);
        }
    }

    #[test]
    fn over_long_lines_are_dropped_whole_and_counted() {
        let data = format!(
            "a\n{}\nb\n{}\nc\n{}",
            "x".repeat(9),
            "y".repeat(8),
            "z".repeat(20)
        );
        for chunk in [1, 2, 5, 64] {
            let (lines, progress) = lines_of(data.as_bytes(), options(Some(8), Last::Line), chunk);
            assert_eq!(lines, ["a", "b", &"y".repeat(8), "c"], "chunk {chunk}");
            assert_eq!(progress.dropped, 2, "chunk {chunk}");
            assert_eq!(progress.consumed, data.len() as u64, "chunk {chunk}");
            // Held: the unfinished tail is counted at once and skipped
            // from where it passed the limit.
            let (lines, progress) = lines_of(data.as_bytes(), options(Some(8), Last::Held), chunk);
            assert_eq!(lines, ["a", "b", &"y".repeat(8), "c"], "chunk {chunk}");
            assert_eq!(progress.dropped, 2, "chunk {chunk}");
            assert_eq!(progress.consumed, data.len() as u64 - 20, "chunk {chunk}");
            assert_eq!(progress.unfinished, 20, "chunk {chunk}");
        }
    }

    #[test]
    fn a_skip_resumes_up_to_the_first_newline() {
        let data = b"rest of a long line\nnext\n";
        let skip = Options {
            skip_first: true,
            ..options(Some(8), Last::Held)
        };
        let (lines, progress) = lines_of(data, skip, 3);
        assert_eq!(lines, ["next"]);
        assert_eq!(
            progress,
            Progress {
                consumed: 25,
                ..Progress::default()
            }
        );
        let (lines, progress) = lines_of(b"no end yet", skip, 3);
        assert!(lines.is_empty());
        assert_eq!(
            progress,
            Progress {
                unfinished: 10,
                ..Progress::default()
            }
        );
    }

    #[test]
    fn reading_stops_after_the_owned_bytes() {
        let data = b"aaaa\nbbbb\ncccc\n";
        let owned = Options {
            owned: 7,
            ..options(Some(8), Last::Held)
        };
        let (lines, progress) = lines_of(data, owned, 2);
        assert_eq!(
            lines,
            ["aaaa", "bbbb"],
            "the last owned line read to its end"
        );
        assert_eq!(progress.consumed, 10);
        assert!(progress.more);
        // Passing over an over-long line stops there too.
        let long = format!("{}\nafter\n", "x".repeat(100));
        let (lines, progress) = lines_of(long.as_bytes(), Options { owned: 20, ..owned }, 4);
        assert!(lines.is_empty());
        assert_eq!((progress.dropped, progress.consumed), (1, 0));
        assert!(progress.more && progress.unfinished >= 20);
    }

    #[test]
    fn memory_stays_bounded_by_the_longest_line() {
        // 8 MiB without a newline, read in 64 KiB slices.
        let data = vec![b'x'; 8 << 20];
        let mut largest = 0;
        let mut read = reader(&data, 0, usize::MAX);
        let progress = read_lines(
            |buf: &mut [u8]| {
                largest = largest.max(buf.len());
                read(buf)
            },
            Options {
                block: 64 << 10,
                ..options(Some(64 << 10), Last::Held)
            },
            |chunk| assert_eq!(chunk, Chunk::TooLong, "nothing is a line"),
        );
        let progress = progress.expect("reads");
        assert_eq!((progress.dropped, progress.unfinished), (1, 8 << 20));
        assert!(largest <= 256 << 10, "{largest}");
    }
}
