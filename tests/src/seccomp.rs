//! The systemd unit's `SystemCallFilter=`, applied to a daemon under test
//! without systemd.
//!
//! systemd is not PID 1 on every test machine, so `systemd-run` cannot
//! start the daemon under the unit. Instead [`SyscallFilter::of_unit`]
//! reads the unit's `SystemCallFilter=` lines in order, as systemd does
//! (the first allow list sets the default, later lines add or, with `~`,
//! remove), expands each `@group` with `systemd-analyze syscall-filter`
//! (systemd's own tables), and resolves names to x86-64 numbers from the
//! kernel headers (`asm/unistd_64.h`). The `seccomp-exec` helper of this
//! package installs that allow list and execs the daemon, after `setpriv`
//! has set the unit's user and capabilities: the order systemd uses.
//!
//! One deliberate difference: a call outside the list kills the process
//! (`SECCOMP_RET_KILL_PROCESS`) whatever the unit's
//! `SystemCallErrorNumber=`, so a missing call shows up as a dead daemon
//! instead of an `EPERM` the daemon might shrug off.

#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers panic with a message on any failure, by design"
)]

use std::{
    collections::{BTreeSet, HashMap},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// The x86-64 system call numbers, from the kernel headers.
const UNISTD_64: &str = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";

/// An allow list of system calls and the helper that applies it.
#[derive(Clone, Debug)]
pub struct SyscallFilter {
    helper: PathBuf,
    /// Allowed x86-64 system call numbers.
    allowed: BTreeSet<u32>,
    /// Names allowed by the unit, for messages.
    names: BTreeSet<String>,
}

impl SyscallFilter {
    /// The allow list of the unit file at `unit`, applied by `helper`
    /// (the `seccomp-exec` binary, `env!("CARGO_BIN_EXE_seccomp-exec")`).
    /// Panics when the unit has no allow list or systemd-analyze fails.
    pub fn of_unit(unit: &Path, helper: &Path) -> Self {
        let text =
            fs::read_to_string(unit).unwrap_or_else(|e| panic!("reading {}: {e}", unit.display()));
        let mut names: Option<BTreeSet<String>> = None;
        for line in text.lines() {
            let Some(value) = line.trim().strip_prefix("SystemCallFilter=") else {
                continue;
            };
            let (deny, items) = match value.strip_prefix('~') {
                Some(rest) => (true, rest),
                None => (false, value),
            };
            let mut expanded = BTreeSet::new();
            for item in items.split_whitespace() {
                expand(item, &mut expanded);
            }
            match (&mut names, deny) {
                (None, false) => {
                    // systemd adds @default to an allow list.
                    expand("@default", &mut expanded);
                    names = Some(expanded);
                }
                (None, true) => panic!(
                    "{}: the first SystemCallFilter= is a deny list; this helper applies allow lists",
                    unit.display()
                ),
                (Some(names), false) => names.extend(expanded),
                (Some(names), true) => names.retain(|name| !expanded.contains(name)),
            }
        }
        let names = names.unwrap_or_else(|| panic!("{} has no SystemCallFilter=", unit.display()));
        let numbers = syscall_numbers();
        // Names of other architectures (arm_fadvise64_64, …) have no
        // x86-64 number; systemd skips them too.
        let allowed = names
            .iter()
            .filter_map(|name| numbers.get(name))
            .copied()
            .collect();
        Self {
            helper: helper.to_owned(),
            allowed,
            names,
        }
    }

    /// Whether the unit allows the system call `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The program to run instead of the daemon, and the arguments that
    /// come before the daemon's path.
    pub fn wrapper(&self) -> (PathBuf, Vec<String>) {
        let list: Vec<String> = self.allowed.iter().map(u32::to_string).collect();
        (self.helper.clone(), vec![list.join(","), "--".to_owned()])
    }
}

/// Adds the system calls `item` names (a call, or an `@group`, expanded
/// with `systemd-analyze syscall-filter`, nested groups included) to `out`.
fn expand(item: &str, out: &mut BTreeSet<String>) {
    if !item.starts_with('@') {
        out.insert(item.to_owned());
        return;
    }
    let output = Command::new("systemd-analyze")
        .args(["syscall-filter", "--no-pager", item])
        .output()
        .expect("running systemd-analyze syscall-filter (package systemd)");
    assert!(
        output.status.success(),
        "systemd-analyze syscall-filter {item}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 output");
    // The first line names the group itself; comments start with '#'.
    for entry in text.lines().skip(1).map(str::trim) {
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        expand(entry, out);
    }
}

/// Every x86-64 system call name with its number.
fn syscall_numbers() -> HashMap<String, u32> {
    let text = fs::read_to_string(UNISTD_64)
        .unwrap_or_else(|e| panic!("reading {UNISTD_64} (package linux-libc-dev): {e}"));
    let numbers: HashMap<String, u32> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("#define __NR_")?.split_whitespace();
            let name = words.next()?;
            let number = words.next()?.parse().ok()?;
            Some((name.to_owned(), number))
        })
        .collect();
    assert!(
        numbers.get("bpf") == Some(&321) && numbers.len() > 300,
        "{UNISTD_64} does not look like the x86-64 table"
    );
    numbers
}
