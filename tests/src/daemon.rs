//! The real `spamwall` binary as a daemon under test, and its CLI.
//!
//! [`Daemon`] writes a configuration into a temporary directory, runs
//! `spamwall run` inside a network namespace (through `nsenter`, so bpffs
//! stays visible) with its log in a file, and waits for its `READY=1` on a
//! notify socket the harness owns, as systemd does for `Type=notify`: the
//! daemon sends it once the policy listeners, the log watcher and the
//! fleet's bans are in place, while the control socket answers earlier. On drop it kills the daemon by pid and runs
//! `spamwall xdp detach --purge`, so no pin outlives the test.

#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers panic with a message on any failure, by design"
)]

use std::{
    ffi::OsStr,
    fs,
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{
    netns::{in_netns, kill_and_reap, run_bounded, try_run_bounded},
    pin::PIN_ROOT,
    seccomp::SyscallFilter,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How long the daemon may take to report `READY=1` after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a daemon may take to exit after a signal.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one CLI call may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Daemon::wait_log`] waits for a line.
pub const LOG_WAIT: Duration = Duration::from_secs(10);

/// The `spamwall` binary: `$SPAMWALL_BIN`, else the newer of the
/// workspace's `target/release/spamwall` and `target/debug/spamwall`.
/// Panics when none exists, saying how to build one.
pub fn spamwall_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SPAMWALL_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "SPAMWALL_BIN={} does not exist",
            path.display()
        );
        return path;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the workspace");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    // The newer of the two: a test after `cargo build` must not run a
    // release binary left from an earlier change.
    let newest = ["release", "debug"]
        .into_iter()
        .map(|profile| target.join(profile).join("spamwall"))
        .filter_map(|path| {
            let modified = fs::metadata(&path).ok()?.modified().ok()?;
            path.is_file().then_some((modified, path))
        })
        .max_by_key(|(modified, _)| *modified);
    if let Some((_, path)) = newest {
        return path;
    }
    panic!(
        "no spamwall binary: set SPAMWALL_BIN or build one with `cargo build -p policy-daemon` \
         (looked in {}/{{release,debug}}/spamwall)",
        target.display()
    );
}

/// Runs the `spamwall` binary with `args`, bounded to [`CLI_TIMEOUT`].
pub fn spamwall<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(spamwall_bin());
    command.args(args).env_remove("SPAMWALL_CONFIG");
    run_bounded(&mut command, CLI_TIMEOUT)
}

/// `BIN --version` prints `spamwall VERSION (commit HASH)` with a commit of
/// the repository the tests run from, or `(unknown commit)` when they do
/// not run from a git checkout. A binary built before the latest commits
/// passes too: any commit of the repository does.
pub fn assert_version_names_a_commit(bin: &Path) {
    let output = run_bounded(Command::new(bin).arg("--version"), CLI_TIMEOUT);
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} --version: {version}",
        bin.display()
    );
    let inner = version
        .trim()
        .strip_prefix(concat!("spamwall ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{} --version: {version:?}", bin.display()));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the workspace");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(args)
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if !git(&["rev-parse", "--git-dir"]) {
        assert_eq!(inner, "unknown commit", "--version outside git");
        return;
    }
    let hash = inner
        .strip_prefix("commit ")
        .unwrap_or_else(|| panic!("--version in a git checkout: {version:?}"));
    assert!(
        hash.len() == 12 && git(&["cat-file", "-e", &format!("{hash}^{{commit}}")]),
        "--version names {hash:?}, not a commit of this repository"
    );
}

/// What goes into the daemon's configuration; paths are chosen by
/// [`Daemon`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// `xdp.interfaces`.
    pub interfaces: Vec<String>,
    /// `xdp.mode`: `auto`, `native` or `skb`.
    pub mode: String,
    /// `xdp.ports`; empty means all traffic.
    pub ports: Vec<u16>,
    /// `ban.bantime`.
    pub bantime: String,
    /// `ban.allowlist`.
    pub allowlist: Vec<String>,
    /// More `[ban]` keys, as TOML lines (e.g. `backends = ["xdp", "fail2ban"]`).
    pub ban_extra: String,
    /// More `[xdp]` keys, as TOML lines (e.g. `dry_run = true`).
    pub xdp_extra: String,
    /// `ban.capacity_v4` and `ban.capacity_v6`; small by default so each
    /// start is cheap.
    pub capacity: u32,
    /// `ban.ignore_self`: the daemon refuses to ban the server's own
    /// addresses, and so any prefix that contains one.
    pub ignore_self: bool,
    /// Further TOML appended after the generated sections, e.g. a
    /// `[policy]` table. Empty by default.
    pub extra: String,
    /// Run the daemon as this user with only the capabilities of the
    /// systemd unit, read from [`unit_file`] by [`unit_capabilities`],
    /// through `setpriv`. `None` (the default): as root.
    pub run_as: Option<String>,
    /// With [`Settings::run_as`]: the supplementary groups, as a unit's
    /// `SupplementaryGroups=` gives them. Empty (the default): none.
    pub groups: Vec<String>,
    /// Extra environment variables for the daemon, e.g. `SSL_CERT_FILE`.
    pub env: Vec<(String, String)>,
    /// Run the daemon under this seccomp allow list (e.g. the unit's,
    /// [`SyscallFilter::of_unit`]), installed last, right before the
    /// daemon starts. `None` (the default): no filter.
    pub syscall_filter: Option<SyscallFilter>,
    /// The daemon binary, e.g. a packaged `/usr/sbin/spamwall`. `None`
    /// (the default): [`spamwall_bin`].
    pub bin: Option<PathBuf>,
    /// `daemon.state_dir`, created (and with [`Settings::run_as`] handed
    /// to that user) as systemd's `StateDirectory=` does. `None` (the
    /// default): `state` in the daemon's temporary directory.
    pub state_dir: Option<PathBuf>,
    /// `daemon.bpf_pin_dir`, e.g. one a program was loaded on before the
    /// daemon (`spamwall xdp load`). `None` (the default): a fresh
    /// `/sys/fs/bpf/spamwall-e2e-<pid>-<n>`. Removed on drop either way.
    pub pin_dir: Option<PathBuf>,
}

/// The systemd unit the daemon is run as with [`Settings::run_as`]:
/// `packaging/spamwall.service` of the workspace.
pub fn unit_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/spamwall.service")
}

/// The capabilities `unit` grants (`AmbientCapabilities=`, which must
/// equal `CapabilityBoundingSet=`), in setpriv's spelling, e.g.
/// `+bpf,+net_admin,+perfmon`. Panics when the unit names none or the two
/// settings differ.
pub fn unit_capabilities(unit: &Path) -> String {
    let text =
        fs::read_to_string(unit).unwrap_or_else(|e| panic!("reading {}: {e}", unit.display()));
    let setting = |key: &str| -> Vec<String> {
        let mut names: Vec<String> = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
            .flat_map(|value| {
                value
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        names.sort();
        names
    };
    let ambient = setting("AmbientCapabilities");
    assert!(
        !ambient.is_empty(),
        "{} sets no AmbientCapabilities=",
        unit.display()
    );
    assert_eq!(
        ambient,
        setting("CapabilityBoundingSet"),
        "{}: the ambient set differs from the bounding set",
        unit.display()
    );
    ambient
        .iter()
        .map(|name| {
            let bare = name
                .strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("{}: {name} is not a capability", unit.display()));
            format!("+{}", bare.to_ascii_lowercase())
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Settings {
    /// All traffic on `interface`, auto mode, one-hour bans, no allowlist.
    pub fn on(interface: &str) -> Self {
        Self {
            interfaces: vec![interface.to_owned()],
            mode: "auto".to_owned(),
            ports: Vec::new(),
            bantime: "1h".to_owned(),
            allowlist: Vec::new(),
            ban_extra: String::new(),
            xdp_extra: String::new(),
            capacity: 4096,
            ignore_self: true,
            extra: String::new(),
            run_as: None,
            groups: Vec::new(),
            env: Vec::new(),
            syscall_filter: None,
            bin: None,
            state_dir: None,
            pin_dir: None,
        }
    }

    /// The TOML text, with the daemon's paths.
    fn toml(&self, socket: &Path, state_dir: &Path, pin_dir: &Path) -> String {
        // JSON strings and arrays of them are valid TOML.
        let quote = |value: &str| serde_json::to_string(value).expect("a string serializes");
        let list = |values: &[String]| serde_json::to_string(values).expect("strings serialize");
        let path = |path: &Path| quote(path.to_str().expect("test paths are UTF-8"));
        format!(
            "[daemon]\ncontrol_socket = {}\nstate_dir = {}\nbpf_pin_dir = {}\n\n\
             [xdp]\ninterfaces = {}\nmode = {}\nports = {:?}\n{xdp_extra}\n\
             [ban]\nbantime = {}\nallowlist = {}\nignore_self = {}\n\
             capacity_v4 = {capacity}\ncapacity_v6 = {capacity}\n\
             capacity_prefix_v4 = 256\ncapacity_prefix_v6 = 256\n{ban_extra}\n\n{}",
            path(socket),
            path(state_dir),
            path(pin_dir),
            list(&self.interfaces),
            quote(&self.mode),
            self.ports,
            quote(&self.bantime),
            list(&self.allowlist),
            self.ignore_self,
            // Without a [policy] table of its own, the policy server stays
            // off: tests of other parts need no port.
            if self.extra.contains("[policy]") {
                self.extra.clone()
            } else {
                format!("{}\n[policy]\nlisten = []\n", self.extra)
            },
            capacity = self.capacity,
            ban_extra = self.ban_extra,
            xdp_extra = self.xdp_extra,
        )
    }
}

/// A running `spamwall run` in a network namespace, with its own socket,
/// state directory and pin directory
/// (`/sys/fs/bpf/spamwall-e2e-<pid>-<n>`).
///
/// Maps are kept small (4096 addresses per family) so a start is cheap.
/// On drop the daemon is killed (`SIGKILL`) by pid if still running, then
/// `spamwall --config CFG xdp detach --purge` removes links, program, maps
/// and the pin directory.
#[derive(Debug)]
pub struct Daemon {
    bin: PathBuf,
    netns: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
    state_dir: PathBuf,
    pin_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// The harness's end of the daemon's `NOTIFY_SOCKET`, new for each
    /// start so no message of an earlier run is read as this one's.
    notify: Option<UnixDatagram>,
    run_as: Option<String>,
    groups: Vec<String>,
    env: Vec<(String, String)>,
    syscall_filter: Option<SyscallFilter>,
}

/// Gives `user` the daemon's directories, as the unit's `ExecStartPre`
/// does for the pin directory and systemd does for the state and runtime
/// directories. The daemon binary must be reachable by that user too.
fn hand_over(user: &str, dir: &Path, state: &Path, pin_dir: &Path) {
    fs::create_dir_all(state).expect("creating the state directory");
    let chown = |path: &Path| {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:{user}"))
            .arg(path)
            .status()
            .expect("running chown");
        assert!(
            status.success(),
            "chown {user} {}: {status}",
            path.display()
        );
    };
    chown(dir);
    chown(state);
    fs::create_dir_all(pin_dir).expect("creating the pin directory");
    chown(pin_dir);
}

impl Daemon {
    /// Writes the configuration, starts the daemon inside `netns` and waits
    /// until it reports ready; panics with its log when it does not.
    pub fn start(netns: &str, settings: &Settings) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("spamwall-e2e-")
            .tempdir()
            .expect("creating a temporary directory");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pin_dir = settings.pin_dir.clone().unwrap_or_else(|| {
            let fresh =
                Path::new(PIN_ROOT).join(format!("spamwall-e2e-{}-{n}", std::process::id()));
            assert!(
                !fresh.exists(),
                "{} already exists: a previous run left it behind",
                fresh.display()
            );
            fresh
        });
        let socket = dir.path().join("control.sock");
        let config = dir.path().join("spamwall.toml");
        let state_dir = settings
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("state"));
        let text = settings.toml(&socket, &state_dir, &pin_dir);
        fs::write(&config, text).unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let log = dir.path().join("daemon.log");
        if let Some(user) = &settings.run_as {
            hand_over(user, dir.path(), &state_dir, &pin_dir);
        }
        let mut daemon = Self {
            run_as: settings.run_as.clone(),
            groups: settings.groups.clone(),
            env: settings.env.clone(),
            syscall_filter: settings.syscall_filter.clone(),
            bin: settings.bin.clone().unwrap_or_else(spamwall_bin),
            netns: netns.to_owned(),
            dir,
            config,
            socket,
            state_dir,
            pin_dir,
            log,
            child: None,
            notify: None,
        };
        daemon.spawn();
        daemon
    }

    /// Starts the daemon again with the same configuration (after
    /// [`Daemon::kill`]) and waits until it reports ready.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart: the daemon is still running; kill it first"
        );
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log.display()));
        let stdout = log
            .try_clone()
            .unwrap_or_else(|e| panic!("duplicating {}: {e}", self.log.display()));
        // nsenter, setpriv and seccomp-exec all exec the next program:
        // the child's pid is the daemon's, and signals go straight to it.
        let mut chain: Vec<std::ffi::OsString> = Vec::new();
        if let Some(user) = &self.run_as {
            let capabilities = unit_capabilities(&unit_file());
            chain.push("setpriv".into());
            chain.extend(
                [
                    format!("--reuid={user}"),
                    format!("--regid={user}"),
                    if self.groups.is_empty() {
                        "--clear-groups".to_owned()
                    } else {
                        format!("--groups={}", self.groups.join(","))
                    },
                    format!("--inh-caps=-all,{capabilities}"),
                    format!("--ambient-caps=-all,{capabilities}"),
                    format!("--bounding-set=-all,{capabilities}"),
                    "--".to_owned(),
                ]
                .map(Into::into),
            );
        }
        if let Some(filter) = &self.syscall_filter {
            let (helper, args) = filter.wrapper();
            chain.push(helper.into());
            chain.extend(args.into_iter().map(Into::into));
        }
        chain.push(self.bin.clone().into());
        let notify_path = self.notify_socket();
        let mut command = in_netns(&self.netns, &chain[0]);
        command.args(&chain[1..]);
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env_remove("SPAMWALL_CONFIG")
            .env("NOTIFY_SOCKET", &notify_path)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning spamwall run in {}: {e}", self.netns));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Binds a fresh notify socket in the daemon's directory, open to the
    /// user the daemon runs as, and returns its path.
    fn notify_socket(&mut self) -> PathBuf {
        let path = self.dir.path().join("notify.sock");
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {}: {e}", path.display()),
        }
        let socket =
            UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
            .unwrap_or_else(|e| panic!("opening {} to the daemon: {e}", path.display()));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("a read timeout on the notify socket");
        self.notify = Some(socket);
        path
    }

    /// Waits for `READY=1` on the notify socket; panics with the log when
    /// the daemon exits first or stays silent past [`READY_TIMEOUT`].
    fn wait_ready(&mut self) {
        let started = Instant::now();
        let mut message = [0_u8; 4096];
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                panic!(
                    "spamwall run exited with {status} before it was ready; log:\n{}",
                    self.log()
                );
            }
            let socket = self.notify.as_ref().expect("bound before the spawn");
            match socket.recv(&mut message) {
                Ok(len) => {
                    let text = String::from_utf8_lossy(&message[..len]);
                    if text.lines().any(|line| line == "READY=1") {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading the notify socket: {e}"),
            }
            assert!(
                started.elapsed() <= READY_TIMEOUT,
                "spamwall run did not report READY=1 within {READY_TIMEOUT:?}; log:\n{}",
                self.log()
            );
        }
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` to the daemon by pid and waits (bounded) for it to
    /// exit; returns its exit status. Panics if it does not exit.
    pub fn kill(&mut self, signal: libc::c_int) -> ExitStatus {
        self.kill_within(signal, EXIT_TIMEOUT)
    }

    /// [`Daemon::kill`] with its own deadline: panics with the log when
    /// the daemon has not exited `timeout` after the signal.
    pub fn kill_within(&mut self, signal: libc::c_int, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("kill: the daemon is not running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill has no memory-safety preconditions; `pid` is our
        // unreaped child, so it cannot name another process.
        let sent = unsafe { libc::kill(pid, signal) };
        if sent != 0 {
            let error = std::io::Error::last_os_error();
            kill_and_reap(&mut child);
            panic!("kill({pid}, {signal}): {error}");
        }
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if started.elapsed() < timeout => {
                    thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    kill_and_reap(&mut child);
                    panic!(
                        "spamwall did not exit within {timeout:?} of signal {signal}; log:\n{}",
                        self.log()
                    );
                }
                Err(error) => panic!("waiting for the daemon: {error}"),
            }
        }
    }

    /// Runs `spamwall --socket SOCKET ARGS…` (bounded).
    pub fn cli<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all = vec![
            OsStr::new("--socket").to_owned(),
            self.socket.as_os_str().to_owned(),
        ];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        spamwall(all)
    }

    /// Runs a CLI verb that must succeed; returns its stdout. Panics with
    /// its output and the daemon's log otherwise.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "spamwall {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        String::from_utf8(output.stdout).expect("CLI output is UTF-8")
    }

    /// Sends one request over the control socket, as the CLI does but
    /// without starting a process: for conditions polled many times.
    /// Panics with the daemon's log when the daemon cannot be asked.
    pub fn request(&self, request: &spamwall::control::Request) -> spamwall::control::Response {
        spamwall::control::request(&self.socket, request)
            .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", self.log()))
    }

    /// The status of backend `name` (`xdp`, `fail2ban`, `fleet`), asked
    /// over the control socket; `None` when the daemon has no such
    /// backend.
    pub fn backend(&self, name: &str) -> Option<spamwall::bans::BackendStatus> {
        match self.request(&spamwall::control::Request::Status) {
            spamwall::control::Response::Status { status } => {
                status.backends.into_iter().find(|b| b.name == name)
            }
            other => panic!("status answered {other:?}"),
        }
    }

    /// `stats --json`, parsed.
    pub fn stats(&self) -> serde_json::Value {
        parse_json(&self.cli_ok(&["stats", "--json"]), "stats --json")
    }

    /// `status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        parse_json(&self.cli_ok(&["status", "--json"]), "status --json")
    }

    /// `list --json`, parsed: one object per ban.
    pub fn list(&self) -> Vec<serde_json::Value> {
        match parse_json(&self.cli_ok(&["list", "--json"]), "list --json") {
            serde_json::Value::Array(bans) => bans,
            other => panic!("list --json is not an array: {other}"),
        }
    }

    /// Rewrites the configuration file from `settings`, keeping this
    /// daemon's paths, as an operator edits it (the run-as user is not
    /// changed). Takes effect on [`Daemon::reload`] or a restart.
    pub fn rewrite_config(&self, settings: &Settings) {
        let text = settings.toml(&self.socket, &self.state_dir, &self.pin_dir);
        fs::write(&self.config, text)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.config.display()));
    }

    /// Sends SIGHUP and waits (bounded) until the daemon logged that it
    /// reloaded its configuration.
    pub fn reload(&self) {
        const RELOADED: &str = "configuration reloaded";
        let before = self.log().matches(RELOADED).count();
        let pid = self.pid().expect("reload: the daemon is not running");
        let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
        // SAFETY: kill has no memory-safety preconditions; `pid` is our
        // unreaped child.
        let sent = unsafe { libc::kill(pid, libc::SIGHUP) };
        assert_eq!(
            sent,
            0,
            "kill({pid}, SIGHUP): {}",
            std::io::Error::last_os_error()
        );
        let started = Instant::now();
        while self.log().matches(RELOADED).count() == before {
            assert!(
                started.elapsed() <= READY_TIMEOUT,
                "spamwall did not reload within {READY_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `spamwall --config CFG xdp detach EXTRA…` (no daemon needed).
    pub fn detach(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            OsStr::new("--config").to_owned(),
            self.config.as_os_str().to_owned(),
            "xdp".into(),
            "detach".into(),
        ];
        args.extend(extra.iter().map(Into::into));
        spamwall(args)
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The bpffs pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// `daemon.state_dir`: the store lives there.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The temporary directory holding config, socket, state and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the daemon logged so far (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// The log once `found` holds for it: the daemon writes its lines
    /// from a thread of their own, a few milliseconds after they were
    /// logged. Panics naming `what` after [`LOG_WAIT`].
    pub fn wait_log(&self, what: &str, found: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            let log = self.log();
            if found(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not logged within {LOG_WAIT:?}; log:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // No panic here: this also runs while a failed test unwinds.
        if let Some(child) = &mut self.child {
            kill_and_reap(child);
        }
        if !self.pin_dir.exists() {
            return;
        }
        let mut command = Command::new(&self.bin);
        command
            .arg("--config")
            .arg(&self.config)
            .args(["xdp", "detach", "--purge"])
            .env_remove("SPAMWALL_CONFIG");
        match try_run_bounded(&mut command, CLI_TIMEOUT) {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "cleaning up {}: xdp detach --purge: {}",
                self.pin_dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => eprintln!("cleaning up {}: {error}", self.pin_dir.display()),
        }
        if self.pin_dir.exists() {
            // Fall back on the library, in case the binary could not do it.
            if let Err(error) = spamwall::dataplane::detach(&self.pin_dir, None, true) {
                eprintln!("cleaning up {}: {error}", self.pin_dir.display());
            }
        }
    }
}

fn parse_json(text: &str, what: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} is not JSON ({e}):\n{text}"))
}
