//! Finding line ends, `=` and control bytes in a request's bytes, many
//! at a time.

use super::{Attribute, Limits, offset};

/// What one pass over the bytes of a line found, offsets from its start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LineScan {
    /// The `\n` ending the line; `None`: it has not arrived yet.
    pub newline: Option<usize>,
    /// The first `=`.
    pub equals: Option<usize>,
    /// The first control byte other than tab, `\r` included.
    pub control: Option<(usize, u8)>,
}

impl LineScan {
    /// Takes note of `byte` at `at`; `true` once it ends the line.
    fn note(&mut self, at: usize, byte: u8) -> bool {
        match byte {
            b'\n' => {
                self.newline = Some(at);
                return true;
            }
            b'=' => {
                self.equals.get_or_insert(at);
            }
            byte if is_control(byte) => {
                self.control.get_or_insert((at, byte));
            }
            _ => {}
        }
        false
    }
}

/// Whether `byte` is a control byte other than tab.
const fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

/// Scans `bytes` up to the end of their first line, eight bytes at a
/// time: a word without `=`, a byte below 0x20 or 0x7f is passed whole,
/// and the bytes that are are looked at one by one, in order.
pub(super) fn scan_line(bytes: &[u8]) -> LineScan {
    let mut scan = LineScan::default();
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = word(chunk);
        let mut marked = controls(word);
        if scan.equals.is_none() {
            marked |= zero_bytes(word ^ EQUALS);
        }
        while marked != 0 {
            let i = (marked.trailing_zeros() / 8) as usize;
            marked &= marked - 1;
            if scan.note(at + i, chunk[i]) {
                return scan;
            }
        }
        at += 8;
    }
    for (i, &byte) in chunks.remainder().iter().enumerate() {
        if scan.note(at + i, byte) {
            return scan;
        }
    }
    scan
}

/// Finds a complete request at the front of `bytes` whose every line is
/// a clean attribute: a non-empty name, `=`, no control byte but tab, a
/// bare `\n` at its end, the limits kept. Its attributes are pushed onto
/// `found` and the offset of its final empty line is returned. `None` for
/// anything else (more bytes needed, a CR, a control byte, a line without
/// `=`, a limit crossed): the line-by-line path then decodes the bytes
/// and finds the same attributes, or the bad ones, or the error. The
/// request is seen in one pass, sixteen bytes at a time, only the bytes
/// that are `=`, control bytes or line ends looked at one by one.
pub(super) fn scan_request(
    bytes: &[u8],
    limits: &Limits,
    found: &mut Vec<Attribute>,
) -> Option<usize> {
    let bytes = &bytes[..bytes.len().min(limits.max_request_size)];
    let mut lines = Lines {
        limits,
        found,
        start: 0,
        equals: None,
    };
    let (blocks, rest) = bytes.as_chunks::<16>();
    let mut at = 0;
    for block in blocks {
        let mut marked = marks(block);
        while marked != 0 {
            let i = marked.trailing_zeros() as usize;
            marked &= marked - 1;
            match lines.note(at + i, block[i]) {
                Step::On => {}
                Step::End(end) => return Some(end),
                Step::Refuse => return None,
            }
        }
        at += 16;
    }
    for (i, &byte) in rest.iter().enumerate() {
        if is_marked(byte) {
            match lines.note(at + i, byte) {
                Step::On => {}
                Step::End(end) => return Some(end),
                Step::Refuse => return None,
            }
        }
    }
    None
}

/// What [`Lines::note`] made of a byte.
enum Step {
    /// Read on.
    On,
    /// The final empty line starts here.
    End(usize),
    /// The request is not clean.
    Refuse,
}

/// Whether [`scan_request`] looks at `byte`: `=` or a byte below 0x20
/// (line ends and tab among them) or 0x7f.
const fn is_marked(byte: u8) -> bool {
    byte == b'=' || byte < 0x20 || byte == 0x7f
}

/// One bit per byte of `block` that [`is_marked`], the first byte lowest,
/// in a few SSE2 instructions.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn marks(block: &[u8; 16]) -> u32 {
    // SAFETY: the build targets SSE2 (the cfg above; every x86_64 has it).
    unsafe { marks_sse2(block) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
fn marks_sse2(block: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x,
        _mm_set1_epi8,
    };
    let (low, high) = block.split_at(8);
    let bytes = _mm_set_epi64x(word(high).cast_signed(), word(low).cast_signed());
    // Unsigned `byte <= 0x1f`: the minimum of the two is the byte itself.
    let control = _mm_cmpeq_epi8(_mm_min_epu8(bytes, _mm_set1_epi8(0x1f)), bytes);
    let delete = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(0x7f));
    let equals = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(0x3d));
    _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(control, delete), equals)).cast_unsigned()
}

/// One bit per byte of `block` that [`is_marked`], the first byte lowest.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn marks_bytewise(block: &[u8; 16]) -> u32 {
    block
        .iter()
        .enumerate()
        .filter(|(_, byte)| is_marked(**byte))
        .fold(0, |marks, (i, _)| marks | 1 << i)
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
use marks_bytewise as marks;

/// The state of [`scan_request`]: the line being read.
struct Lines<'a> {
    limits: &'a Limits,
    found: &'a mut Vec<Attribute>,
    /// Where the line starts.
    start: usize,
    /// Its first `=`.
    equals: Option<usize>,
}

impl Lines<'_> {
    /// Takes note of `byte` (`=`, a control byte or `\n`) at `at`.
    fn note(&mut self, at: usize, byte: u8) -> Step {
        match byte {
            b'=' => {
                self.equals.get_or_insert(at);
            }
            b'\t' => {}
            b'\n' if at == self.start => {
                return if self.found.is_empty() {
                    Step::Refuse
                } else {
                    Step::End(at)
                };
            }
            b'\n' => {
                let Some(equals) = self.equals.take() else {
                    return Step::Refuse;
                };
                if equals == self.start
                    || at - self.start > self.limits.max_line_length
                    || self.found.len() >= self.limits.max_attributes
                {
                    return Step::Refuse;
                }
                self.found.push(Attribute {
                    name: offset(self.start)..offset(equals),
                    value: offset(equals + 1)..offset(at),
                    line: offset(self.found.len() + 1),
                });
                self.start = at + 1;
            }
            _ => return Step::Refuse,
        }
        Step::On
    }
}

const ONES: u64 = u64::from_ne_bytes([1; 8]);
const LOW: u64 = ONES * 0x7f;
const HIGH: u64 = ONES * 0x80;
const EQUALS: u64 = ONES * b'=' as u64;

/// Eight bytes of `chunk` as one word, the first in the low byte.
fn word(chunk: &[u8]) -> u64 {
    let mut word = [0_u8; 8];
    word.copy_from_slice(chunk);
    u64::from_le_bytes(word)
}

/// The high bit of each byte of `word` that is zero; exact, with no carry
/// from one byte into the next.
const fn zero_bytes(word: u64) -> u64 {
    !(((word & LOW) + LOW) | word) & HIGH
}

/// The high bit of each byte of `word` below 0x20 or 0x7f.
const fn controls(word: u64) -> u64 {
    let below_space = !(((word & LOW) + ONES * 0x60) | word) & HIGH;
    below_space | zero_bytes(word ^ LOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_are_found_at_every_position_and_tab_and_utf8_pass() {
        for len in 0..40 {
            let clean = "aé\t€ ~\x7e".repeat(len).into_bytes();
            assert_eq!(scan_line(&clean), LineScan::default(), "{len}");
            for at in 0..clean.len() {
                for byte in [0x00, 0x1b, 0x1f, 0x7f, b'\r'] {
                    let mut line = clean.clone();
                    line[at] = byte;
                    assert_eq!(
                        scan_line(&line).control,
                        Some((at, byte)),
                        "{len} {at} {byte:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_line_scan_finds_the_first_of_each_and_stops_at_the_newline() {
        for len in 0..40 {
            let clean = "aé\t€ ~".repeat(len).into_bytes();
            for equals in 0..=clean.len() {
                for newline in equals..=clean.len() {
                    let mut line = clean.clone();
                    line.insert(equals, b'=');
                    line.insert(newline + 1, b'\n');
                    line.extend_from_slice(b"=\x01\n");
                    let scan = scan_line(&line);
                    assert_eq!(scan.equals, Some(equals), "{len} {equals} {newline}");
                    assert_eq!(scan.newline, Some(newline + 1), "{len} {equals} {newline}");
                    assert_eq!(scan.control, None, "{len} {equals} {newline}");
                }
            }
        }
        let scan = scan_line(b"a\x01b=c=d\x02\r\n");
        assert_eq!(scan.equals, Some(3));
        assert_eq!(scan.control, Some((1, 1)));
        assert_eq!(scan.newline, Some(9));
        assert_eq!(scan_line(b"no end=").newline, None);
    }

    #[test]
    fn blocks_mark_what_bytes_mark() {
        for byte in 0..=u8::MAX {
            for at in 0..16 {
                let mut block = [b'a'; 16];
                block[at] = byte;
                assert_eq!(marks(&block), marks_bytewise(&block), "{byte:#x} at {at}");
            }
        }
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..10_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut block = [0_u8; 16];
            block[..8].copy_from_slice(&rng.to_le_bytes());
            block[8..].copy_from_slice(&rng.rotate_left(29).to_le_bytes());
            assert_eq!(marks(&block), marks_bytewise(&block), "{block:?}");
        }
    }
}
