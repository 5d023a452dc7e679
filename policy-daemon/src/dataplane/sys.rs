//! The few `bpf(2)` commands aya 0.14 does not expose: program test runs,
//! batched map updates and forced link detach.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_LINK_DETACH: libc::c_long = 34;

/// Size given to the kernel for every attribute block: larger than each
/// command's part of `union bpf_attr`, smaller than the union, zero-filled.
const ATTR_SIZE: usize = 128;

#[repr(C, align(8))]
struct Attr([u8; ATTR_SIZE]);

impl Attr {
    const fn new() -> Self {
        Self([0; ATTR_SIZE])
    }

    fn put_u32(&mut self, offset: usize, value: u32) {
        self.0[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn put_u64(&mut self, offset: usize, value: u64) {
        self.0[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
    }

    fn get_u32(&self, offset: usize) -> u32 {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(&self.0[offset..offset + 4]);
        u32::from_ne_bytes(bytes)
    }

    fn call(&mut self, cmd: libc::c_long) -> io::Result<libc::c_long> {
        // SAFETY: `self` is a zero-initialised attribute block of ATTR_SIZE
        // bytes whose pointer fields point at buffers the caller keeps alive
        // for the duration of the call.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, self.0.as_mut_ptr(), ATTR_SIZE) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
/// Outcome of `BPF_PROG_TEST_RUN` on one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (an `XDP_*` action).
    pub action: u32,
    /// Mean run time per repetition in nanoseconds, as the kernel measured it.
    pub duration_ns: u32,
}

#[cfg(any(test, feature = "test-support"))]
/// Runs an XDP program on `frame` `repeat` times (`BPF_PROG_TEST_RUN`).
pub fn prog_test_run(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<TestRun> {
    let size = u32::try_from(frame.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut attr = Attr::new();
    attr.put_u32(0, fd_u32(prog));
    attr.put_u32(8, size);
    attr.put_u64(16, frame.as_ptr() as u64);
    attr.put_u32(32, repeat);
    attr.call(BPF_PROG_TEST_RUN)?;
    Ok(TestRun {
        action: attr.get_u32(4),
        duration_ns: attr.get_u32(36),
    })
}

/// Runs an XDP program once on `frame` and copies the frame as the program
/// left it into `out`; returns the program's action.
pub fn prog_test_run_out(prog: BorrowedFd<'_>, frame: &[u8], out: &mut [u8]) -> io::Result<u32> {
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "frame too large");
    let size = u32::try_from(frame.len()).map_err(|_| too_large())?;
    let out_size = u32::try_from(out.len()).map_err(|_| too_large())?;
    let mut attr = Attr::new();
    attr.put_u32(0, fd_u32(prog));
    attr.put_u32(8, size);
    attr.put_u32(12, out_size);
    attr.put_u64(16, frame.as_ptr() as u64);
    attr.put_u64(24, out.as_mut_ptr() as u64);
    attr.put_u32(32, 1);
    attr.call(BPF_PROG_TEST_RUN)?;
    Ok(attr.get_u32(4))
}

/// Writes `count` key/value pairs in one call (`BPF_MAP_UPDATE_BATCH`).
/// `keys` and `values` are packed arrays of the map's key and value size.
/// Returns how many pairs the kernel stored, which is `count` on success.
pub fn map_update_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: u32,
) -> io::Result<u32> {
    let mut attr = Attr::new();
    attr.put_u64(16, keys.as_ptr() as u64);
    attr.put_u64(24, values.as_ptr() as u64);
    attr.put_u32(32, count);
    attr.put_u32(36, fd_u32(map));
    attr.call(BPF_MAP_UPDATE_BATCH)?;
    Ok(attr.get_u32(32))
}

/// Reads the value stored for `key` into `value` (`BPF_MAP_LOOKUP_ELEM`);
/// `false` when the map holds no such key. Both are of the map's sizes.
pub fn map_lookup_elem(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut attr = Attr::new();
    attr.put_u32(0, fd_u32(map));
    attr.put_u64(8, key.as_ptr() as u64);
    attr.put_u64(16, value.as_mut_ptr() as u64);
    match attr.call(BPF_MAP_LOOKUP_ELEM) {
        Ok(_) => Ok(true),
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Entries per `BPF_MAP_LOOKUP_BATCH` call: the kernel copies a chunk
/// without a point where it could hand the CPU to another thread, so a
/// bigger one would hold back whatever else should run on that CPU.
const BATCH_CHUNK: u32 = 1_024;

/// Reads a hash map in chunks (`BPF_MAP_LOOKUP_BATCH`), calling `each`
/// with the packed keys and values of every chunk. Entries added or removed
/// during the walk may or may not be seen, as with any map iteration.
pub fn map_lookup_batch(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    mut each: impl FnMut(&[u8], &[u8]),
) -> io::Result<()> {
    let mut chunk = BATCH_CHUNK;
    let mut token = [0_u64; 1];
    let mut first = true;
    loop {
        let len = chunk as usize;
        let mut keys = vec![0_u8; len * key_size];
        let mut values = vec![0_u8; len * value_size];
        let mut attr = Attr::new();
        if !first {
            attr.put_u64(0, token.as_ptr() as u64);
        }
        attr.put_u64(8, token.as_mut_ptr() as u64);
        attr.put_u64(16, keys.as_mut_ptr() as u64);
        attr.put_u64(24, values.as_mut_ptr() as u64);
        attr.put_u32(32, chunk);
        attr.put_u32(36, fd_u32(map));
        let outcome = attr.call(BPF_MAP_LOOKUP_BATCH);
        let count = attr.get_u32(32) as usize;
        match outcome {
            Ok(_) => {}
            // The end of the map; the last chunk may still carry entries.
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {
                each(&keys[..count * key_size], &values[..count * value_size]);
                return Ok(());
            }
            // One hash bucket holds more entries than the chunk: grow it.
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) && chunk < 1 << 20 => {
                chunk *= 2;
                continue;
            }
            Err(error) => return Err(error),
        }
        each(&keys[..count * key_size], &values[..count * value_size]);
        first = false;
    }
}

/// Detaches a BPF link from its hook even while other descriptors or pins
/// still refer to it (`BPF_LINK_DETACH`).
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = Attr::new();
    attr.put_u32(0, fd_u32(link));
    attr.call(BPF_LINK_DETACH).map(drop)
}

/// Opens a pinned BPF object (`BPF_OBJ_GET`).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut attr = Attr::new();
    attr.put_u64(0, path.as_ptr() as u64);
    let fd = attr.call(BPF_OBJ_GET)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // A valid descriptor is never negative.
    fd.as_raw_fd().unsigned_abs()
}
