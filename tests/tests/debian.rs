//! The Debian package end to end: `cargo xtask deb` builds it, lintian
//! checks it, `dpkg -i` installs it on this machine, the installed daemon
//! runs as the unit runs it (user `spamwall`, the unit's capabilities and
//! system call filter, read from the installed unit) and drops a banned
//! client in a network namespace, and `dpkg --purge` leaves nothing but
//! what README's "Installing" says stays: the system user and group.
//!
//! Needs root and a machine without spamwall installed: the test refuses to
//! touch an existing installation. Whatever happens after `dpkg -i`, the
//! package is purged when the test ends.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    ffi::OsStr,
    fs,
    net::IpAddr,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use spamwall_tests::{
    daemon::{Daemon, Settings, assert_version_names_a_commit},
    netns::{NetnsPair, Subnet, run_bounded, try_run_bounded},
    require_root,
    seccomp::SyscallFilter,
};

const PACKAGE: &str = "spamwall";
const USER: &str = "spamwall";
const BIN: &str = "/usr/sbin/spamwall";
const UNIT: &str = "/lib/systemd/system/spamwall.service";
const CONFIG: &str = "/etc/spamwall/spamwall.toml";
const STATE: &str = "/var/lib/spamwall";
/// Everything the package ships or its daemon makes; none of it may exist
/// before the test, and none after the purge.
const OWNED: [&str; 13] = [
    "/etc/spamwall",
    STATE,
    "/run/spamwall",
    BIN,
    UNIT,
    "/usr/share/doc/spamwall",
    "/usr/share/man/man8/spamwall.8.gz",
    "/usr/share/bash-completion/completions/spamwall",
    "/usr/share/zsh/vendor-completions/_spamwall",
    "/usr/share/fish/vendor_completions.d/spamwall.fish",
    "/usr/share/doc/spamwall/examples/drop-ins/mail-log.conf",
    "/usr/share/doc/spamwall/examples/drop-ins/journal.conf",
    "/usr/share/doc/spamwall/examples/drop-ins/fail2ban.conf",
];
/// `cargo xtask deb` may have to build the daemon in release mode first.
const BUILD_TIMEOUT: Duration = Duration::from_mins(30);
/// lintian on a package with a 20 MB binary takes tens of seconds.
const LINTIAN_TIMEOUT: Duration = Duration::from_mins(10);
/// dpkg, including man-db's trigger; also how long to wait for a dpkg lock
/// held by another apt or dpkg.
const DPKG_TIMEOUT: Duration = Duration::from_mins(5);
/// The port the listeners serve, as an MTA would.
const SMTP: u16 = 25;
/// `CapEff` of a process holding exactly `CAP_NET_ADMIN` (12),
/// `CAP_PERFMON` (38) and `CAP_BPF` (39): the unit's three.
const UNIT_CAP_EFF: &str = "000000c000001000";

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// Runs `program ARGS` (bounded) and returns its stdout; panics with its
/// output unless it succeeds.
fn run_ok<S: AsRef<OsStr>>(program: &str, args: &[S], timeout: Duration) -> String {
    let output = run_bounded(Command::new(program).args(args), timeout);
    assert!(
        output.status.success(),
        "{program} {:?}: {}",
        args.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
        describe(&output)
    );
    text(&output.stdout)
}

/// Whether every program the test drives is here. Without one the test is
/// skipped with a message, except under `CI`, where that is a failure.
fn tools_available(test: &str) -> bool {
    let missing: Vec<&str> = [
        ("dpkg", "--version"),
        ("dpkg-query", "--version"),
        ("lintian", "--version"),
        ("man", "--version"),
        ("systemd-analyze", "--version"),
        ("setpriv", "--version"),
        ("getent", "--version"),
        ("stat", "--version"),
    ]
    .into_iter()
    .filter(|(program, arg)| {
        !Command::new(program)
            .arg(arg)
            .output()
            .is_ok_and(|out| out.status.success())
    })
    .map(|(program, _)| program)
    .collect();
    spamwall_tests::skip::require(
        test,
        missing.is_empty(),
        format_args!("{} (cargo xtask setup installs them)", missing.join(", ")),
    )
}

/// dpkg's view of the package: `ii` installed, `rc` configuration files
/// left, empty when dpkg knows nothing of it.
fn dpkg_status() -> String {
    let output = run_bounded(
        Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}", PACKAGE]),
        Duration::from_secs(30),
    );
    text(&output.stdout).trim().to_owned()
}

/// Runs `dpkg ARGS`, waiting while another dpkg or apt holds its lock.
fn try_dpkg(args: &[&OsStr]) -> std::io::Result<Output> {
    let deadline = Instant::now() + DPKG_TIMEOUT;
    loop {
        let mut command = Command::new("dpkg");
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        let output = try_run_bounded(&mut command, DPKG_TIMEOUT)?;
        let locked = text(&output.stderr).contains("locked by another process");
        if output.status.success() || !locked || Instant::now() > deadline {
            return Ok(output);
        }
        thread::sleep(Duration::from_secs(1));
    }
}

fn dpkg(args: &[&OsStr]) -> String {
    let output = try_dpkg(args).unwrap_or_else(|e| panic!("dpkg {args:?}: {e}"));
    assert!(
        output.status.success(),
        "dpkg {args:?}: {}",
        describe(&output)
    );
    text(&output.stdout)
}

/// The installed package; dropping it purges the package unless
/// [`Installed::purge`] did, so a failing test leaves nothing behind.
struct Installed {
    purged: bool,
}

impl Installed {
    /// `dpkg -i DEB`. The guard exists before dpkg runs: a half-done
    /// installation is purged too.
    fn install(deb: &Path) -> Self {
        let guard = Self { purged: false };
        dpkg(&["-i".as_ref(), deb.as_os_str()]);
        guard
    }

    fn purge(mut self) {
        self.purged = true;
        dpkg(&["--purge".as_ref(), PACKAGE.as_ref()]);
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        // No panic here: this also runs while a failed test unwinds.
        if self.purged {
            return;
        }
        match try_dpkg(&["--purge".as_ref(), PACKAGE.as_ref()]) {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!("cleaning up: dpkg --purge {PACKAGE}: {}", describe(&output)),
            Err(error) => eprintln!("cleaning up: dpkg --purge {PACKAGE}: {error}"),
        }
    }
}

/// `cargo xtask deb`; returns the path it prints last.
fn build_package() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = run_bounded(
        Command::new(cargo)
            .current_dir(workspace())
            .args(["xtask", "deb"]),
        BUILD_TIMEOUT,
    );
    assert!(
        output.status.success(),
        "cargo xtask deb: {}",
        describe(&output)
    );
    let stdout = text(&output.stdout);
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        deb.extension() == Some(OsStr::new("deb")) && deb.is_file(),
        "cargo xtask deb printed no package path last: {}",
        describe(&output)
    );
    deb
}

/// lintian finds no error; its other findings are printed for the log.
fn check_with_lintian(deb: &Path) {
    let output = run_bounded(
        Command::new("lintian")
            .args(["--fail-on", "error", "--display-info"])
            .arg(deb),
        LINTIAN_TIMEOUT,
    );
    let report = text(&output.stdout);
    eprintln!(
        "lintian {}:\n{report}{}",
        deb.display(),
        text(&output.stderr)
    );
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(
        output.status.success() && errors.is_empty(),
        "lintian found errors:\n{}",
        describe(&output)
    );
}

/// `getent passwd spamwall`, split into its seven fields.
fn passwd_entry() -> Option<Vec<String>> {
    let output = run_bounded(
        Command::new("getent").args(["passwd", USER]),
        Duration::from_secs(10),
    );
    output.status.success().then(|| {
        text(&output.stdout)
            .trim()
            .split(':')
            .map(str::to_owned)
            .collect()
    })
}

/// What the package laid out, before anything runs.
fn check_installed_files() {
    assert_eq!(dpkg_status(), "ii", "dpkg -s {PACKAGE}");
    for path in OWNED
        .iter()
        .filter(|p| !["/run/spamwall", STATE].contains(p))
    {
        assert!(Path::new(path).exists(), "{path} is not installed");
    }
    let conffiles = run_ok(
        "dpkg-query",
        &["-W", "-f=${Conffiles}\n", PACKAGE],
        Duration::from_secs(30),
    );
    assert!(conffiles.contains(CONFIG), "conffiles: {conffiles}");
    assert_eq!(
        run_ok(
            "stat",
            &["-c", "%a %U %G", BIN, CONFIG],
            Duration::from_secs(10)
        ),
        "755 root root\n640 root spamwall\n",
        "modes and owners of {BIN} and {CONFIG}"
    );
    let user = passwd_entry().expect("postinst created the user");
    let uid: u32 = user[2].parse().unwrap();
    assert!(uid < 1000, "spamwall is a system user: {user:?}");
    assert_eq!(user[6], "/usr/sbin/nologin", "{user:?}");
    let group = run_ok("getent", &["group", USER], Duration::from_secs(10));
    assert!(group.starts_with("spamwall:x:"), "group: {group}");

    let check = run_ok(BIN, &["check-config", CONFIG], Duration::from_secs(30));
    assert!(check.starts_with(&format!("{CONFIG}: OK")), "{check}");
    for (page, file) in [
        ("spamwall", "/usr/share/man/man8/spamwall.8.gz"),
        ("spamwall-ban", "/usr/share/man/man8/spamwall-ban.8.gz"),
    ] {
        let found = run_ok("man", &["-w", page], Duration::from_secs(30));
        assert_eq!(found.trim(), file, "man -w {page}");
    }
    for (shell, file) in [
        ("bash", "/usr/share/bash-completion/completions/spamwall"),
        ("zsh", "/usr/share/zsh/vendor-completions/_spamwall"),
        ("fish", "/usr/share/fish/vendor_completions.d/spamwall.fish"),
    ] {
        let script = run_ok(BIN, &["completions", shell], Duration::from_secs(10));
        assert_eq!(fs::read_to_string(file).unwrap(), script, "{file}");
    }
    assert_version_names_a_commit(Path::new(BIN));
    verify_installed_unit();
}

/// `systemd-analyze verify` on the installed unit, with its man page
/// check: the paths in the unit (`ExecStart=`, the user, `man:spamwall(8)`)
/// are the package's.
fn verify_installed_unit() {
    let output = run_bounded(
        Command::new("systemd-analyze").args(["verify", UNIT]),
        Duration::from_mins(1),
    );
    let report = format!("{}{}", text(&output.stdout), text(&output.stderr));
    let problems: Vec<&str> = report
        .lines()
        .filter(|line| line.contains("spamwall"))
        .collect();
    assert!(
        output.status.success() && problems.is_empty(),
        "systemd-analyze verify {UNIT}:\n{report}"
    );
}

/// The installed binary, run as the unit runs it, bans and drops; its
/// store lands in the package's state directory.
fn run_installed_daemon() {
    let mut net = NetnsPair::new(Subnet::test_net_1(80));
    net.listen_both(SMTP);
    // As systemd's StateDirectory= with StateDirectoryMode=0750.
    fs::DirBuilder::new().mode(0o750).create(STATE).unwrap();
    let mut settings = Settings::on(net.server());
    settings.bin = Some(BIN.into());
    settings.run_as = Some(USER.to_owned());
    settings.state_dir = Some(STATE.into());
    settings.syscall_filter = Some(SyscallFilter::of_unit(
        Path::new(UNIT),
        Path::new(env!("CARGO_BIN_EXE_seccomp-exec")),
    ));
    let mut daemon = Daemon::start(net.server(), &settings);

    let pid = daemon.pid().unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<String> {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().skip(1).map(str::to_owned).collect()
    };
    let uid = passwd_entry().unwrap()[2].clone();
    assert!(field("Uid:").iter().all(|u| *u == uid), "{status}");
    assert_eq!(field("CapEff:"), [UNIT_CAP_EFF], "{status}");
    assert_eq!(field("Seccomp:"), ["2"], "a seccomp filter is installed");
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        Path::new(BIN),
        "the daemon under test is the installed binary"
    );

    let server = IpAddr::from(net.server_v4());
    let client = net.client_v4().to_string();
    assert!(net.can_connect(server, SMTP, 2), "before the ban");
    let ban = run_bounded(
        Command::new(BIN)
            .arg("--socket")
            .arg(daemon.socket())
            .args(["ban", &client, "--reason", "package test"]),
        Duration::from_secs(10),
    );
    assert!(
        ban.status.success(),
        "{BIN} ban {client}: {}\ndaemon log:\n{}",
        describe(&ban),
        daemon.log()
    );
    assert!(
        !net.can_connect(server, SMTP, 1),
        "the packaged daemon did not drop the banned client\n\
         (a call outside the unit's SystemCallFilter kills it with SIGSYS)\ndaemon log:\n{}",
        daemon.log()
    );
    let stored = fs::read_dir(STATE).unwrap().count();
    assert!(stored > 0, "nothing in {STATE} after a ban");
    let exit = daemon.kill(libc::SIGTERM);
    assert!(exit.success(), "exit {exit}\ndaemon log:\n{}", daemon.log());
}

#[test]
fn packaging_builds_installs_runs_and_purges_the_debian_package() {
    const NAME: &str = "packaging_builds_installs_runs_and_purges_the_debian_package";
    if !require_root(NAME) || !tools_available(NAME) {
        return;
    }
    let existing: Vec<&str> = OWNED
        .into_iter()
        .filter(|path| Path::new(path).exists())
        .collect();
    let status = dpkg_status();
    assert!(
        existing.is_empty() && matches!(status.as_str(), "" | "un"),
        "spamwall is installed on this machine (dpkg: {status:?}; present: {existing:?}); \
         this test installs and purges its own package and leaves an existing one alone: \
         remove it first (dpkg --purge {PACKAGE}, or undo README's manual steps; \
         `cargo xtask run` leaves {STATE} and /run/spamwall: rm -r both)"
    );

    let deb = build_package();
    check_with_lintian(&deb);

    let installed = Installed::install(&deb);
    check_installed_files();
    run_installed_daemon();
    installed.purge();

    assert!(
        matches!(dpkg_status().as_str(), "" | "un"),
        "dpkg still knows {PACKAGE}: {}",
        dpkg_status()
    );
    let left: Vec<&str> = OWNED
        .into_iter()
        .filter(|path| Path::new(path).exists())
        .collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    assert!(
        passwd_entry().is_some(),
        "purge keeps the system user (README, \"Installing\")"
    );
}
