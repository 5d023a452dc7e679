//! `seccomp-exec NUMBERS -- PROGRAM [ARGS…]`: runs PROGRAM under a seccomp
//! filter that allows exactly the x86-64 system calls NUMBERS (comma
//! separated) and kills the process on any other call, any other
//! architecture and the x32 ABI. Sets `no_new_privs` first, as a unit with
//! `NoNewPrivileges=yes` has it.
//!
//! The last step before the daemon in the tests' `nsenter → setpriv →
//! seccomp-exec → spamwall` chain, so the filter applies from the
//! daemon's first instruction on, as under systemd; see
//! `spamwall_tests::seccomp`.

use std::{ffi::CString, os::unix::ffi::OsStrExt as _, process::ExitCode};

/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// System call numbers at or above this are the x32 ABI.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

fn statement(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: u16::try_from(code).expect("BPF opcodes fit u16"),
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: u16::try_from(code).expect("BPF opcodes fit u16"),
        jt,
        jf,
        k,
    }
}

/// The filter program: check the architecture and the ABI, then one test
/// per allowed number.
fn program(allowed: &[u32]) -> Vec<libc::sock_filter> {
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let jge = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    let kill = libc::SECCOMP_RET_KILL_PROCESS;
    let mut filter = vec![
        statement(load, ARCH_OFFSET),
        jump(jeq, AUDIT_ARCH_X86_64, 1, 0),
        statement(ret, kill),
        statement(load, NR_OFFSET),
        jump(jge, X32_SYSCALL_BIT, 0, 1),
        statement(ret, kill),
    ];
    for &number in allowed {
        // Equal: fall through to the allow; else skip over it.
        filter.push(jump(jeq, number, 0, 1));
        filter.push(statement(ret, libc::SECCOMP_RET_ALLOW));
    }
    filter.push(statement(ret, kill));
    filter
}

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let usage = "usage: seccomp-exec NUMBERS -- PROGRAM [ARGS...]";
    let (Some(numbers), Some(separator)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    if separator != "--" || args.len() < 3 {
        eprintln!("{usage}");
        return ExitCode::from(2);
    }
    let allowed: Result<Vec<u32>, _> = numbers
        .to_string_lossy()
        .split(',')
        .map(str::parse)
        .collect();
    let Ok(allowed) = allowed else {
        eprintln!("seccomp-exec: NUMBERS must be comma-separated system call numbers");
        return ExitCode::from(2);
    };
    let command: Vec<CString> = args[2..]
        .iter()
        .map(|arg| CString::new(arg.as_bytes()).expect("no NUL in arguments"))
        .collect();
    let mut pointers: Vec<*const libc::c_char> = command.iter().map(|arg| arg.as_ptr()).collect();
    pointers.push(std::ptr::null());
    let filter = program(&allowed);
    let fprog = libc::sock_fprog {
        len: u16::try_from(filter.len()).expect("the filter fits BPF_MAXINSNS"),
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        eprintln!(
            "seccomp-exec: PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(1);
    }
    // SAFETY: `fprog` points at `filter`, alive across the call; the
    // kernel copies the program.
    let installed = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &raw const fprog,
        )
    };
    if installed != 0 {
        eprintln!(
            "seccomp-exec: installing the filter: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(1);
    }
    // SAFETY: NUL-terminated strings and a null-terminated pointer array,
    // all alive across the call; execvp returns only on failure.
    unsafe { libc::execvp(pointers[0], pointers.as_ptr()) };
    eprintln!(
        "seccomp-exec: exec {}: {}",
        command[0].to_string_lossy(),
        std::io::Error::last_os_error()
    );
    ExitCode::from(127)
}
