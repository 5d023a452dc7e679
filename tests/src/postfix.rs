//! A real Postfix (Debian's package) inside a network namespace, with its
//! own configuration, queue, data and mailbox directories in a temporary
//! directory, and `swaks` to send it mail from another namespace.
//!
//! [`Postfix::start`] writes a minimal `main.cf`/`master.cf` (no chroot, no
//! postscreen, no DNS: `smtp_dns_support_level = disabled`, native host
//! lookups, `smtpd_peername_lookup = no`), creates the queue with
//! `postfix -c DIR check`, then runs `master -c DIR -d` in the foreground
//! through `nsenter` in its own process group, so the guard knows its pid.
//! Mail for the test domain is delivered by `virtual(8)` into one maildir;
//! the log goes to a file through `postlogd`. On drop the master is
//! stopped by pid (SIGTERM, then SIGKILL to its process group).

#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers panic with a message on any failure, by design"
)]

use std::{
    ffi::CString,
    fmt::Write as _,
    fs,
    net::IpAddr,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::netns::{can_connect, in_netns, kill_and_reap, run_bounded, try_run_bounded};

/// How long Postfix may take to accept SMTP connections after its start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the master may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `postfix check` and `postconf` may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// The SMTP port.
pub const SMTP_PORT: u16 = 25;

/// What the test Postfix accepts and whom it asks.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `inet_interfaces`: the one address smtpd listens on (port 25).
    pub listen: IpAddr,
    /// The domain whose mail is accepted and delivered to the maildir.
    pub domain: String,
    /// `check_policy_service` target after `reject_unauth_destination`,
    /// verbatim: `inet:127.0.0.1:10040` or `unix:private/NAME` (relative to
    /// the queue directory). `None`: no policy check.
    pub policy: Option<String>,
    /// Further `main.cf` lines, appended last (e.g.
    /// `smtpd_policy_service_default_action = DUNNO`). Empty by default.
    pub main_cf: String,
}

impl Settings {
    /// Listens on `listen`, accepts `example.test`, no policy service.
    pub fn on(listen: IpAddr) -> Self {
        Self {
            listen,
            domain: "example.test".to_owned(),
            policy: None,
            main_cf: String::new(),
        }
    }

    fn main_cf(&self, dir: &Path, owner: (u32, u32)) -> String {
        let path = |name: &str| {
            dir.join(name)
                .to_str()
                .expect("test paths are UTF-8")
                .to_owned()
        };
        let mut restrictions = "reject_unauth_destination".to_owned();
        if let Some(policy) = &self.policy {
            write!(restrictions, ", check_policy_service {policy}").expect("writing to a String");
        }
        format!(
            "compatibility_level = 3.6\n\
             queue_directory = {queue}\n\
             data_directory = {data}\n\
             maillog_file = {log}\n\
             maillog_file_prefixes = {root}\n\
             myhostname = mx.{domain}\n\
             mydomain = {domain}\n\
             myorigin = $myhostname\n\
             mydestination =\n\
             alias_maps =\n\
             alias_database =\n\
             inet_interfaces = {listen}\n\
             inet_protocols = all\n\
             mynetworks = 127.0.0.0/8\n\
             # No DNS anywhere: nothing may leave the namespaces.\n\
             smtpd_peername_lookup = no\n\
             smtp_dns_support_level = disabled\n\
             smtp_host_lookup = native\n\
             lmtp_host_lookup = native\n\
             biff = no\n\
             virtual_mailbox_domains = {domain}\n\
             virtual_mailbox_base = {mail}\n\
             virtual_mailbox_maps = static:mailbox/\n\
             virtual_uid_maps = static:{uid}\n\
             virtual_gid_maps = static:{gid}\n\
             virtual_minimum_uid = 1\n\
             smtpd_recipient_restrictions = {restrictions}\n\
             {extra}",
            queue = path("spool"),
            data = path("data"),
            log = path("maillog"),
            root = dir.to_str().expect("test paths are UTF-8"),
            domain = self.domain,
            listen = self.listen,
            mail = path("mail"),
            uid = owner.0,
            gid = owner.1,
            extra = self.main_cf,
        )
    }
}

/// The services a delivering Postfix needs, none chrooted (the chroot
/// would need copies of `/etc` files under the queue directory).
const MASTER_CF: &str = "\
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// A running Postfix master in a network namespace.
#[derive(Debug)]
pub struct Postfix {
    netns: String,
    listen: IpAddr,
    dir: tempfile::TempDir,
    master: Option<Child>,
}

impl Postfix {
    /// Writes the configuration, creates the queue and starts the master in
    /// `netns`; waits (bounded) until smtpd accepts connections on
    /// `settings.listen`. Panics with the mail log on failure.
    pub fn start(netns: &str, settings: &Settings) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("spamwall-postfix-")
            .tempdir()
            .expect("creating a temporary directory");
        // Postfix's daemons run as `postfix` and must reach the queue.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod the Postfix directory");
        let owner = postfix_owner();
        for name in ["etc", "spool", "data", "mail"] {
            fs::create_dir(dir.path().join(name)).expect("creating a Postfix directory");
        }
        for name in ["data", "mail"] {
            std::os::unix::fs::chown(dir.path().join(name), Some(owner.0), Some(owner.1))
                .expect("chown a Postfix directory to postfix");
        }
        let etc = dir.path().join("etc");
        fs::write(etc.join("main.cf"), settings.main_cf(dir.path(), owner)).expect("main.cf");
        fs::write(etc.join("master.cf"), MASTER_CF).expect("master.cf");
        let mut postfix = Self {
            netns: netns.to_owned(),
            listen: settings.listen,
            dir,
            master: None,
        };
        // `check` creates the queue directories; inside the namespace, as
        // it validates inet_interfaces against the local addresses.
        let mut check = in_netns(netns, "postfix");
        check.arg("-c").arg(&etc).arg("check");
        let output = run_bounded(&mut check, COMMAND_TIMEOUT);
        assert!(
            output.status.success(),
            "postfix check failed ({}): {}{}\nlog:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            postfix.log()
        );
        postfix.spawn_master(&etc);
        postfix
    }

    fn spawn_master(&mut self, etc: &Path) {
        let mut postconf = Command::new("postconf");
        postconf.arg("-c").arg(etc).args(["-h", "daemon_directory"]);
        let output = run_bounded(&mut postconf, COMMAND_TIMEOUT);
        assert!(
            output.status.success(),
            "postconf -h daemon_directory failed"
        );
        let daemon_directory = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let out = fs::File::create(self.dir.path().join("master.out")).expect("master.out");
        // nsenter execs the master: the child's pid is the master's, and it
        // leads its own process group, which its daemons join.
        let child = in_netns(&self.netns, Path::new(&daemon_directory).join("master"))
            .arg("-c")
            .arg(etc)
            .arg("-d")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("master.out handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning the Postfix master in {}: {e}", self.netns));
        self.master = Some(child);
        let started = Instant::now();
        while !can_connect(&self.netns, self.listen, SMTP_PORT, 1) {
            let master = self.master.as_mut().expect("just spawned");
            if let Ok(Some(status)) = master.try_wait() {
                self.master = None;
                panic!(
                    "the Postfix master exited with {status}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "Postfix did not accept on [{}]:{SMTP_PORT} within {READY_TIMEOUT:?}; log:\n{}",
                self.listen,
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The master's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.master.as_ref().map(Child::id)
    }

    /// The queue directory; `unix:private/NAME` policy sockets live in its
    /// `private` subdirectory.
    pub fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Everything Postfix logged so far (`maillog_file`) and the master's
    /// own output.
    pub fn log(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("maillog"), read("master.out"))
    }

    /// Messages delivered to the maildir so far.
    pub fn delivered(&self) -> usize {
        fs::read_dir(self.dir.path().join("mail/mailbox/new")).map_or(0, Iterator::count)
    }

    /// The messages delivered so far, as text, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.dir.path().join("mail/mailbox/new")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        files
            .iter()
            .map(|file| String::from_utf8_lossy(&fs::read(file).unwrap_or_default()).into_owned())
            .collect()
    }

    /// Waits (bounded by `timeout`) until at least `count` messages were
    /// delivered; returns whether they were.
    pub fn wait_delivered(&self, count: usize, timeout: Duration) -> bool {
        let started = Instant::now();
        loop {
            if self.delivered() >= count {
                return true;
            }
            if started.elapsed() >= timeout {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // No panic here: this also runs while a failed test unwinds.
        if let Some(mut master) = self.master.take() {
            stop_group_leader(&mut master, STOP_TIMEOUT);
        }
    }
}

/// Stops `leader`, a child spawned with `process_group(0)` whose workers
/// share its process group (the Postfix master, a preforking server): a
/// SIGTERM, up to `grace` to exit, then SIGKILL to the whole group (id =
/// the leader's pid) and a reap. The group is signalled before the leader
/// is reaped, so its id cannot have been reused. Never panics.
pub fn stop_group_leader(leader: &mut Child, grace: Duration) {
    let Ok(pid) = libc::pid_t::try_from(leader.id()) else {
        kill_and_reap(leader);
        return;
    };
    if let Ok(Some(_)) = leader.try_wait() {
        // Already reaped: its group id may name someone else by now.
        return;
    }
    // SAFETY: kill has no memory-safety preconditions; `pid` is our
    // unreaped child, so it names no other process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    while !exited_unreaped(pid) && started.elapsed() < grace {
        thread::sleep(Duration::from_millis(20));
    }
    // Workers that outlived the leader; ESRCH (none left) is the usual case.
    // SAFETY: as above; a negative pid names the group the unreaped leader
    // still holds.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    kill_and_reap(leader);
}

/// Whether child `pid` has exited, leaving it unreaped (`WNOWAIT`).
fn exited_unreaped(pid: libc::pid_t) -> bool {
    let Ok(id) = libc::id_t::try_from(pid) else {
        return true;
    };
    // SAFETY: an all-zero siginfo_t is valid; waitid only writes into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t; WNOWAIT leaves the
    // child waitable.
    let found = unsafe {
        libc::waitid(
            libc::P_PID,
            id,
            &raw mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is set by waitid when a child was found, 0 otherwise.
    found != 0 || unsafe { info.si_pid() } != 0
}

/// The uid and gid of the `postfix` account, which owns the data directory
/// and the delivered mail.
fn postfix_owner() -> (u32, u32) {
    let name = CString::new("postfix").expect("no NUL");
    // SAFETY: `name` is a valid C string; the returned record is read at
    // once, before any other passwd call could overwrite it.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "no `postfix` user: apt-get install postfix (cargo xtask setup installs it)"
    );
    // SAFETY: non-null, points to libc's static passwd record.
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

/// Sends one message with `swaks` from namespace `netns` to
/// `server`:25, `MAIL FROM:<from>`, `RCPT TO:<to>`, bounded to
/// `timeout_secs` per SMTP step (`--timeout`) and twice that overall.
/// stdout holds the SMTP transcript; exit status 0 means queued.
pub fn swaks(netns: &str, server: IpAddr, from: &str, to: &str, timeout_secs: u32) -> Output {
    let mut command = in_netns(netns, "swaks");
    command.args([
        "--server",
        &server.to_string(),
        "--port",
        &SMTP_PORT.to_string(),
        "--from",
        from,
        "--to",
        to,
        "--helo",
        "client.test",
        "--timeout",
        &format!("{timeout_secs}s"),
    ]);
    let output = try_run_bounded(
        &mut command,
        Duration::from_secs(2 * u64::from(timeout_secs)),
    );
    output.unwrap_or_else(|e| panic!("running swaks in {netns}: {e}"))
}
