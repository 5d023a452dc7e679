//! The floor: a two-instruction XDP program (`r0 = XDP_PASS; exit`)
//! loaded with a raw `BPF_PROG_LOAD`, the cost of running any XDP program
//! at all.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Context as _, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// `union bpf_attr`, zero-filled: larger than the fields of the commands
/// used here, smaller than the kernel's union.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn put_u32(&mut self, offset: usize, value: u32) {
        self.0[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn put_u64(&mut self, offset: usize, value: u64) {
        self.0[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
    }

    fn call(&mut self, cmd: libc::c_long) -> std::io::Result<libc::c_long> {
        // SAFETY: a zero-filled attribute block whose pointer fields point at
        // buffers the caller keeps alive during the call.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, self.0.as_mut_ptr(), self.0.len()) };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }
}

/// `r0 = XDP_PASS; exit`: the cost of running any XDP program at all.
pub(super) struct FloorProgram {
    _fd: OwnedFd,
    pub(super) id: u32,
}

impl FloorProgram {
    pub(super) fn load() -> Result<Self> {
        // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm 2; then BPF_JMP | BPF_EXIT.
        let insns: [u8; 16] = [0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        let license = c"GPL";
        let mut attr = Attr([0; 128]);
        attr.put_u32(0, BPF_PROG_TYPE_XDP);
        attr.put_u32(4, 2);
        attr.put_u64(8, insns.as_ptr() as u64);
        attr.put_u64(16, license.as_ptr() as u64);
        attr.0[48..59].copy_from_slice(b"bench_floor");
        let fd = attr
            .call(BPF_PROG_LOAD)
            .context("BPF_PROG_LOAD of the floor program")?;
        let fd = i32::try_from(fd).context("descriptor out of range")?;
        // SAFETY: the kernel just returned this descriptor to us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };

        let mut info = [0_u8; 256];
        let mut attr = Attr([0; 128]);
        attr.put_u32(0, fd.as_raw_fd().unsigned_abs());
        attr.put_u32(4, 256);
        attr.put_u64(8, info.as_mut_ptr() as u64);
        attr.call(BPF_OBJ_GET_INFO_BY_FD)
            .context("BPF_OBJ_GET_INFO_BY_FD on the floor program")?;
        let id = u32::from_ne_bytes([info[4], info[5], info[6], info[7]]);
        Ok(Self { _fd: fd, id })
    }
}
