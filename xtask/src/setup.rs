//! `cargo xtask setup`: make a fresh Debian 12 machine able to build and test
//! spamwall. Every step checks first and only acts when it is not satisfied.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cmd::{output, run};

/// Debian packages the build, the tests and the benchmarks need.
pub const APT_PACKAGES: &[&str] = &[
    "bpftool",
    "xdp-tools",
    "iproute2",
    "netcat-openbsd",
    "iputils-ping",
    "procps",
    "util-linux",
    // Peers the policy and ban tests run for real.
    "rbldnsd",
    "postfix",
    "swaks",
    "mtpolicyd",
    // mtpolicyd's greylisting tickets and Debian's example configuration
    // (its GeoIP plugins), for the equivalence test of `import mtpolicyd`.
    "memcached",
    "geoip-database",
    // The caching resolver both servers share in the policy benchmark.
    "unbound",
    // callgrind, which counts the policy server's instructions per request.
    "valgrind",
    // SPF: the authoritative server its tests ask, pyspf as the reference
    // its results must equal, and policyd-spf, the server it replaces.
    "knot",
    "python3-spf",
    "postfix-policyd-spf-python",
    // Greylisting: postgrey, the server its benchmark measures against.
    "postgrey",
    "fail2ban",
    "sqlite3",
    "curl",
    "redis-server",
    // systemd-journald and journalctl, for the journal source's test.
    "systemd",
    // libFuzzer is C++: libfuzzer-sys compiles it for the fuzz targets.
    "g++",
    // The Debian package: cargo-deb's dependency scan (dpkg-shlibdeps),
    // and what the package test checks it with.
    "dpkg-dev",
    "lintian",
    "man-db",
    // A real terminal for `spamwall top`'s test.
    "tmux",
];

/// Answers for packages that would otherwise ask during installation:
/// Postfix is configured by the tests themselves, in their own directories.
const DEBCONF_SELECTIONS: &str = "postfix postfix/main_mailer_type select No configuration\n";

/// The eBPF and fuzzing toolchain. Never a dated one: `RUSTUP_AUTO_INSTALL=0`
/// is set.
pub const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The cargo-fuzz `cargo xtask fuzz` drives; it prints `cargo-fuzz VERSION`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Builds the Debian package (`cargo xtask deb`); 3.8 builds with Rust 1.85+.
const CARGO_DEB_VERSION: &str = "3.8.0";
/// Records which nightly bpf-linker was linked against (its `rustc -vV`).
const BPF_LINKER_STAMP: &str = ".bpf-linker-nightly";
const BPFFS: &str = "/sys/fs/bpf";
/// `BPF_FS_MAGIC` as `stat -f -c %t` prints it.
const BPF_FS_MAGIC: &str = "cafe4a11";

/// `$CARGO_HOME/bin`, by default `~/.cargo/bin`: where `cargo install` puts
/// bpf-linker.
pub fn cargo_bin() -> Result<PathBuf> {
    let home = match env::var_os("CARGO_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home),
        _ => PathBuf::from(env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?)
            .join(".cargo"),
    };
    Ok(home.join("bin"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// What `rustc +nightly` reports about itself.
struct Nightly {
    sysroot: PathBuf,
    /// Full `rustc +nightly -vV` output, written into the stamp.
    version_verbose: String,
    commit_hash: String,
    llvm_major: u32,
}

impl Nightly {
    fn query() -> Result<Self> {
        let hint = || {
            format!(
                "cannot run `rustc +{NIGHTLY}`; is the `{NIGHTLY}` toolchain installed? \
                 (rustup toolchain install {NIGHTLY} --profile minimal)"
            )
        };
        let sysroot = output(
            Command::new("rustc")
                .arg(format!("+{NIGHTLY}"))
                .args(["--print", "sysroot"]),
        )
        .with_context(hint)?;
        let version_verbose = output(Command::new("rustc").arg(format!("+{NIGHTLY}")).arg("-vV"))
            .with_context(hint)?;
        let field = |name: &str| {
            version_verbose
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_owned())
                .with_context(|| format!("`rustc +{NIGHTLY} -vV` printed no `{name}` line"))
        };
        let commit_hash = field("commit-hash:")?;
        let llvm_version = field("LLVM version:")?;
        let llvm_major = llvm_version
            .split('.')
            .next()
            .and_then(|major| major.parse().ok())
            .with_context(|| format!("cannot read the LLVM major version from `{llvm_version}`"))?;
        Ok(Self {
            sysroot: PathBuf::from(sysroot.trim()),
            version_verbose,
            commit_hash,
            llvm_major,
        })
    }

    fn short_hash(&self) -> &str {
        self.commit_hash.get(..9).unwrap_or(&self.commit_hash)
    }

    fn stamp_line(&self) -> String {
        format!("commit-hash: {}", self.commit_hash)
    }
}

#[derive(Clone, Copy)]
enum Step {
    Apt,
    RustSrc,
    BpfLinker,
    CargoFuzz,
    CargoDeb,
    Bpffs,
}

impl Step {
    const ALL: [Self; 6] = [
        Self::Apt,
        Self::RustSrc,
        Self::BpfLinker,
        Self::CargoFuzz,
        Self::CargoDeb,
        Self::Bpffs,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Apt => "apt packages",
            Self::RustSrc => "rust-src (nightly)",
            Self::BpfLinker => "bpf-linker",
            Self::CargoFuzz => "cargo-fuzz",
            Self::CargoDeb => "cargo-deb",
            Self::Bpffs => "bpffs",
        }
    }

    fn check(self, nightly: &Nightly) -> Result<Status> {
        match self {
            Self::Apt => check_apt(),
            Self::RustSrc => Ok(check_rust_src(nightly)),
            Self::BpfLinker => check_bpf_linker(nightly),
            Self::CargoFuzz => Ok(check_cargo_fuzz()),
            Self::CargoDeb => Ok(check_cargo_deb()),
            Self::Bpffs => Ok(check_bpffs()),
        }
    }
}

enum Status {
    Satisfied(String),
    Missing { what: String, fix: Fix },
}

enum Fix {
    Apt(Vec<&'static str>),
    RustSrc,
    BpfLinker,
    CargoFuzz,
    CargoDeb,
    MountBpffs,
}

impl Fix {
    fn needs_root(&self) -> bool {
        matches!(self, Self::Apt(_) | Self::MountBpffs)
    }

    /// The shell command a root user can run to do this step by hand.
    fn root_command(&self) -> String {
        match self {
            Self::Apt(packages) => format!(
                "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
                 --no-install-recommends {}",
                packages.join(" ")
            ),
            Self::MountBpffs => format!("mount -t bpf bpf {BPFFS}"),
            Self::RustSrc | Self::BpfLinker | Self::CargoFuzz | Self::CargoDeb => {
                "cargo xtask setup".to_owned()
            }
        }
    }

    fn done(&self) -> &'static str {
        match self {
            Self::MountBpffs => "mounted",
            Self::Apt(_) | Self::RustSrc | Self::BpfLinker | Self::CargoFuzz | Self::CargoDeb => {
                "installed"
            }
        }
    }

    fn apply(&self, nightly: &Nightly) -> Result<()> {
        match self {
            Self::Apt(packages) => {
                let apt = |args: &[&str]| {
                    let mut cmd = Command::new("apt-get");
                    cmd.env("DEBIAN_FRONTEND", "noninteractive")
                        .args(args)
                        .stdin(Stdio::null());
                    cmd
                };
                preseed_debconf()?;
                run(&mut apt(&["update"]))?;
                run(apt(&["install", "-y", "--no-install-recommends"]).args(packages))
            }
            Self::RustSrc => run(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                NIGHTLY,
            ])),
            Self::BpfLinker => install_bpf_linker(nightly),
            Self::CargoFuzz => run(Command::new("cargo")
                .arg(format!("+{NIGHTLY}"))
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .current_dir(env::temp_dir())
                .args(["install", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION])
                .args(["--locked", "--force"])),
            // --force: replaces another version of cargo-deb.
            Self::CargoDeb => run(Command::new("cargo")
                .current_dir(env::temp_dir())
                .args(["install", "cargo-deb", "--version", CARGO_DEB_VERSION])
                .args(["--locked", "--force"])),
            Self::MountBpffs => run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS])),
        }
    }
}

fn preseed_debconf() -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("debconf-set-selections")
        .stdin(Stdio::piped())
        .spawn()
        .context("cannot run `debconf-set-selections`")?;
    child
        .stdin
        .take()
        .context("debconf-set-selections has no stdin")?
        .write_all(DEBCONF_SELECTIONS.as_bytes())
        .context("writing to debconf-set-selections")?;
    let status = child.wait().context("waiting for debconf-set-selections")?;
    anyhow::ensure!(
        status.success(),
        "debconf-set-selections failed with {status}"
    );
    Ok(())
}

fn check_apt() -> Result<Status> {
    // dpkg-query exits 1 when it knows nothing about one of the packages but
    // still prints the others, so read its output whatever the exit status.
    let out = Command::new("dpkg-query")
        .args(["-W", "--showformat=${Package} ${Status}\\n"])
        .args(APT_PACKAGES)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("cannot run `dpkg-query` (is this a Debian system?)")?;
    let missing = missing_packages(&String::from_utf8_lossy(&out.stdout), APT_PACKAGES);
    Ok(if missing.is_empty() {
        Status::Satisfied("already installed".to_owned())
    } else {
        Status::Missing {
            what: format!("missing: {}", missing.join(" ")),
            fix: Fix::Apt(missing),
        }
    })
}

/// The packages that a `dpkg-query -W --showformat='${Package} ${Status}\n'`
/// listing does not show as "install ok installed".
fn missing_packages(listing: &str, packages: &[&'static str]) -> Vec<&'static str> {
    let installed = |package: &str| {
        listing.lines().any(|line| {
            line.split_once(' ')
                .is_some_and(|(name, status)| name == package && status == "install ok installed")
        })
    };
    packages
        .iter()
        .copied()
        .filter(|package| !installed(package))
        .collect()
}

fn rust_src_lock(nightly: &Nightly) -> PathBuf {
    nightly
        .sysroot
        .join("lib/rustlib/src/rust/library/Cargo.lock")
}

fn check_rust_src(nightly: &Nightly) -> Status {
    if rust_src_lock(nightly).is_file() {
        Status::Satisfied("already installed".to_owned())
    } else {
        Status::Missing {
            what: "not installed".to_owned(),
            fix: Fix::RustSrc,
        }
    }
}

fn check_bpf_linker(nightly: &Nightly) -> Result<Status> {
    let version = match output(Command::new("bpf-linker").arg("--version")) {
        Ok(version) => version.trim().to_owned(),
        Err(err) => {
            return Ok(Status::Missing {
                what: format!("not usable: {err:#}"),
                fix: Fix::BpfLinker,
            });
        }
    };
    let stamp_path = cargo_bin()?.join(BPF_LINKER_STAMP);
    let stamp = fs::read_to_string(&stamp_path).unwrap_or_default();
    if stamp
        .lines()
        .any(|line| line.trim() == nightly.stamp_line())
    {
        Ok(Status::Satisfied(format!(
            "already installed: {version}, linked against nightly {}",
            nightly.short_hash()
        )))
    } else {
        Ok(Status::Missing {
            what: format!(
                "{version} is not known to be linked against nightly {} ({} does not say so)",
                nightly.short_hash(),
                stamp_path.display()
            ),
            fix: Fix::BpfLinker,
        })
    }
}

/// The library name (for `-l dylib=`) of the `libLLVM-<major>-*.so` that the
/// nightly toolchain ships.
fn nightly_llvm_lib(syslib: &Path, major: u32) -> Result<String> {
    let prefix = format!("LLVM-{major}-");
    let mut libs: Vec<String> = fs::read_dir(syslib)
        .with_context(|| format!("cannot list {}", syslib.display()))?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let lib = name.strip_prefix("lib")?.strip_suffix(".so")?;
            lib.starts_with(&prefix).then(|| lib.to_owned())
        })
        .collect();
    libs.sort();
    libs.into_iter()
        .next()
        .with_context(|| format!("no lib{prefix}*.so in {}", syslib.display()))
}

/// bpf-linker built against the nightly's own libLLVM (TOOLCHAIN.md).
fn install_bpf_linker(nightly: &Nightly) -> Result<()> {
    let syslib = nightly.sysroot.join("lib");
    let syslib_str = syslib
        .to_str()
        .filter(|path| !path.contains(char::is_whitespace))
        .with_context(|| {
            format!(
                "the nightly sysroot {} cannot be passed through RUSTFLAGS",
                syslib.display()
            )
        })?;
    let lib = nightly_llvm_lib(&syslib, nightly.llvm_major)?;
    let rustflags = format!("-L {syslib_str} -l dylib={lib} -C link-arg=-Wl,-rpath,{syslib_str}");
    // --force: a bpf-linker of the same version may be installed but linked
    // against an older nightly (`ERROR llvm: Invalid record`, or no libLLVM).
    run(Command::new("cargo")
        .env("RUSTFLAGS", rustflags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(env::temp_dir())
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--locked", "--force", "--no-default-features", "--features"])
        .arg(format!("llvm-{},no-llvm-linking", nightly.llvm_major)))?;
    let bin = cargo_bin()?;
    let stamp = bin.join(BPF_LINKER_STAMP);
    fs::write(&stamp, &nightly.version_verbose)
        .with_context(|| format!("cannot write {}", stamp.display()))
}

fn check_cargo_fuzz() -> Status {
    let wanted = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    match output(Command::new("cargo").args([&format!("+{NIGHTLY}"), "fuzz", "--version"])) {
        Ok(version) if version.trim() == wanted => {
            Status::Satisfied(format!("already installed: {wanted}"))
        }
        Ok(version) => Status::Missing {
            what: format!("{} installed, {wanted} wanted", version.trim()),
            fix: Fix::CargoFuzz,
        },
        Err(err) => Status::Missing {
            what: format!("not usable: {err:#}"),
            fix: Fix::CargoFuzz,
        },
    }
}

fn check_cargo_deb() -> Status {
    let wanted = format!("cargo-deb {CARGO_DEB_VERSION}");
    match output(Command::new("cargo-deb").arg("--version")) {
        Ok(version) if version.trim() == wanted => {
            Status::Satisfied(format!("already installed: {wanted}"))
        }
        Ok(version) => Status::Missing {
            what: format!("{} installed, {wanted} wanted", version.trim()),
            fix: Fix::CargoDeb,
        },
        Err(err) => Status::Missing {
            what: format!("not usable: {err:#}"),
            fix: Fix::CargoDeb,
        },
    }
}

fn check_bpffs() -> Status {
    let fs_type = output(Command::new("stat").args(["-f", "-c", "%t", BPFFS]));
    match fs_type {
        Ok(fs_type) if fs_type.trim() == BPF_FS_MAGIC => {
            Status::Satisfied(format!("already mounted on {BPFFS}"))
        }
        Ok(fs_type) => Status::Missing {
            what: format!(
                "{BPFFS} is not a bpf filesystem (type 0x{})",
                fs_type.trim()
            ),
            fix: Fix::MountBpffs,
        },
        Err(err) => Status::Missing {
            what: format!("{err:#}"),
            fix: Fix::MountBpffs,
        },
    }
}

fn check_all(nightly: &Nightly) -> Result<Vec<(Step, Status)>> {
    Step::ALL
        .iter()
        .map(|&step| {
            let status = step
                .check(nightly)
                .with_context(|| format!("setup: cannot check {}", step.name()))?;
            Ok((step, status))
        })
        .collect()
}

/// `cargo xtask setup`: check every step, fix those that are not satisfied.
pub fn setup() -> Result<()> {
    let nightly = Nightly::query()?;
    let statuses = check_all(&nightly)?;

    if !is_root() {
        let needs_root: Vec<String> = statuses
            .iter()
            .filter_map(|(step, status)| match status {
                Status::Missing { what, fix } if fix.needs_root() => Some(format!(
                    "  {}: {what}\n    run as root: {}",
                    step.name(),
                    fix.root_command()
                )),
                _ => None,
            })
            .collect();
        if !needs_root.is_empty() {
            bail!(
                "setup needs root for:\n{}\n(or run `cargo xtask setup` as root)",
                needs_root.join("\n")
            );
        }
    }

    for (step, status) in statuses {
        let name = step.name();
        match status {
            Status::Satisfied(detail) => eprintln!("setup: {name} ... ok ({detail})"),
            Status::Missing { what, fix } => {
                eprintln!("setup: {name} ... {what}; fixing");
                fix.apply(&nightly)
                    .with_context(|| format!("setup step `{name}` failed"))?;
                match step.check(&nightly)? {
                    Status::Satisfied(_) => eprintln!("setup: {name} ... ok ({})", fix.done()),
                    Status::Missing { what, .. } => {
                        bail!("setup step `{name}` is still not satisfied after fixing: {what}")
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs `setup` only when a step is not satisfied; silent otherwise.
pub fn ensure() -> Result<()> {
    let nightly = Nightly::query()?;
    let missing: Vec<String> = check_all(&nightly)?
        .into_iter()
        .filter_map(|(step, status)| match status {
            Status::Satisfied(_) => None,
            Status::Missing { what, .. } => Some(format!("{}: {what}", step.name())),
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "setup: not complete ({}); running setup",
        missing.join("; ")
    );
    setup()
}

#[cfg(test)]
mod tests {
    use super::missing_packages;

    #[test]
    fn missing_packages_reads_dpkg_status() {
        let listing = "bpftool install ok installed\n\
                       procps deinstall ok config-files\n\
                       iproute2 install ok installed\n";
        assert_eq!(
            missing_packages(listing, &["bpftool", "procps", "iproute2", "swaks"]),
            ["procps", "swaks"]
        );
    }
}
