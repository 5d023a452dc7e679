//! What the benchmarks share: the `--smoke` mode and the check that a
//! peer they compare against is there.
//!
//! `cargo xtask test` runs every benchmark once with `--smoke` (a
//! handful of items, a second or less of load), so a benchmark that no
//! longer builds, starts or measures fails there instead of on the day
//! someone wants its figures. Smoke figures mean nothing. A benchmark
//! that cannot measure what it compares (a peer missing or failing, no
//! measurement taken) fails with a message naming what is missing; it
//! never prints a line and exits 0.

use std::ffi::OsStr;

/// Whether `--smoke` is among the arguments.
pub fn smoke() -> bool {
    std::env::args().any(|arg| arg == "--smoke")
}

/// `full`, or `small` under `--smoke`.
pub fn size<T>(full: T, small: T) -> T {
    if smoke() { small } else { full }
}

/// The path of `program` on `PATH`, if it is there and executable.
pub fn find_program(program: impl AsRef<OsStr>) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let program = program.as_ref();
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Panics unless `program` is on `PATH`, naming it, the `peer` it is
/// and how to install it: the benchmark cannot compare without it.
///
/// # Panics
/// When `program` is not found.
pub fn require_peer(peer: &str, program: &str, install: &str) {
    assert!(
        find_program(program).is_some(),
        "cannot measure {peer}: {program} is not on PATH ({install})"
    );
}

/// Panics unless this process runs as root: every kernel benchmark
/// measures nothing without it, and says so with a non-zero exit.
///
/// # Panics
/// When not root.
pub fn require_root(bench: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "{bench}: needs root (CAP_BPF and CAP_NET_ADMIN) to measure anything"
    );
}

/// CPU time spent by a group of processes: user space and kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user: std::time::Duration,
    pub system: std::time::Duration,
}

impl CpuTime {
    /// What the processes of process group `group` have spent so far: each
    /// live member's own time and that of the children it has reaped (a
    /// preforking server's recycled children). A member gone meanwhile is
    /// skipped.
    ///
    /// # Errors
    /// When `/proc` cannot be listed.
    pub fn of_group(group: u32) -> std::io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100);
        let mut total = (0, 0);
        for entry in std::fs::read_dir("/proc")? {
            let Ok(entry) = entry else { continue };
            if !entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some(stat) = ProcStat::parse(&stat)
                && stat.group == group
            {
                total.0 += stat.user;
                total.1 += stat.system;
            }
        }
        let time = |count: u64| std::time::Duration::from_nanos(count * 1_000_000_000 / ticks);
        Ok(Self {
            user: time(total.0),
            system: time(total.1),
        })
    }

    /// The time spent between `earlier` and this reading.
    #[must_use]
    pub fn since(self, earlier: Self) -> Self {
        Self {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// What [`CpuTime::of_group`] takes from a `/proc/PID/stat` line, in
/// clock ticks.
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    group: u32,
    /// Own and reaped children's time.
    user: u64,
    system: u64,
}

impl ProcStat {
    /// Parses `/proc/PID/stat`. The command name (field 2) is in
    /// parentheses and may hold spaces and parentheses itself, so the
    /// fields are counted from the last `)`.
    fn parse(line: &str) -> Option<Self> {
        let (_, rest) = line.rsplit_once(')')?;
        // From field 3 (state) on: pgrp is field 5, utime..cstime 14..17.
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            group: u32::try_from(field(5)?).ok()?,
            user: field(14)? + field(16)?,
            system: field(15)? + field(17)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_from_its_last_parenthesis() {
        let line = "4242 (policy (1) x) S 1 4242 4242 0 -1 4194560 120 0 0 0 \
                    300 70 5 2 20 0 3 0 1000 1000 100 0";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                group: 4242,
                user: 305,
                system: 72,
            })
        );
    }

    #[test]
    fn a_truncated_stat_line_is_refused() {
        assert_eq!(ProcStat::parse("4242 (x) S 1 4242 4242 0"), None);
        assert_eq!(ProcStat::parse("no parenthesis"), None);
    }

    #[test]
    fn this_process_group_is_seen_spending_user_time() {
        // SAFETY: getpgrp has no preconditions and cannot fail.
        let group = u32::try_from(unsafe { libc::getpgrp() }).expect("a process group id");
        let before = CpuTime::of_group(group).expect("reading /proc");
        // Spins until this thread has had 200 ms of CPU, however busy the
        // machine (bounded, should its clock never get there).
        let thread_cpu = || {
            // SAFETY: an all-zero timespec is valid; clock_gettime only
            // writes into it.
            let mut now: libc::timespec = unsafe { std::mem::zeroed() };
            // SAFETY: `now` is a valid, writable timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut now) };
            std::time::Duration::new(
                u64::try_from(now.tv_sec).unwrap_or(0),
                u32::try_from(now.tv_nsec).unwrap_or(0),
            )
        };
        let (spun_from, started) = (thread_cpu(), std::time::Instant::now());
        let mut x = 1_u64;
        while thread_cpu().saturating_sub(spun_from) < std::time::Duration::from_millis(200)
            && started.elapsed() < std::time::Duration::from_secs(30)
        {
            // Mostly user space: reading a thread's CPU clock is a system
            // call, so it is read once per million rounds.
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
        }
        let spent = CpuTime::of_group(group)
            .expect("reading /proc")
            .since(before);
        assert!(
            spent.user >= std::time::Duration::from_millis(50),
            "200 ms of this thread's CPU counted as {spent:?}"
        );
    }
}
