//! The policy servers the benchmark runs: the floor, spamwall and
//! mtpolicyd, each started with its chain and stopped by pid.

use std::{
    fs,
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use spamwall_tests::{
    PinDir, bench::CpuTime, daemon::spamwall_bin, ports::free_tcp, postfix::stop_group_leader,
};

use crate::{
    ALLOW, ALLOW_REGEX, BL1_NETS, BL1_REGEX, BL2_NETS, BL2_REGEX, Chain, FLOOR_SOURCE,
    REJECT_TEMPLATE, START_TIMEOUT, STOP_TIMEOUT, Workload,
    client::{self, Budget, Load},
};

/// A policy server under test, stopped by pid on drop.
pub(crate) struct Server {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
    /// Kept until the server is gone: its config and log live here.
    _dir: tempfile::TempDir,
}

impl Server {
    /// The floor, compiled from [`FLOOR_SOURCE`] with one worker thread
    /// per CPU, as spamwall's runtime.
    pub(crate) fn floor() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("policy-floor-").tempdir()?;
        let source = dir.path().join("floor.c");
        let binary = dir.path().join("floor");
        fs::write(&source, FLOOR_SOURCE)
            .with_context(|| format!("writing {}", source.display()))?;
        let compiled = Command::new("gcc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&binary)
            .arg(&source)
            .output()
            .context("running gcc")?;
        ensure!(
            compiled.status.success(),
            "gcc could not compile the floor: {}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        let addr = free_tcp();
        let threads = thread::available_parallelism().map_or(1, usize::from);
        let mut command = Command::new(&binary);
        command
            .arg(addr.port().to_string())
            .arg(threads.to_string());
        Self::spawn("floor", command, addr, dir)
    }

    /// `spamwall run` with only the policy server: no interface, pins in
    /// `pin`, the blocklists as `chain` says.
    pub(crate) fn spamwall(chain: Chain, pin: &PinDir) -> Result<Self> {
        Self::spamwall_with(chain, pin, |command| command)
    }

    /// [`Server::spamwall`], its command first given to `launch` (which
    /// may run it under another program).
    pub(crate) fn spamwall_with(
        chain: Chain,
        pin: &PinDir,
        launch: impl FnOnce(Command) -> Command,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("spamwall-bench-")
            .tempdir()?;
        let addr = free_tcp();
        let quote = |path: &Path| format!("{:?}", path.to_str().unwrap_or_default());
        let nets = |nets: &[&str]| {
            nets.iter()
                .map(|net| format!("{net:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let blocklist = |name: &str, zone: &str, members: &[&str]| match chain {
            Chain::Local => format!(
                "[[policy.check]]\nname = \"{name}\"\ntype = \"list\"\nscore = 5\nclient = [{}]\n\n",
                nets(members)
            ),
            Chain::Unbound(_) | Chain::OwnCache(_) => format!(
                "[[policy.check]]\nname = \"{name}\"\ntype = \"dnsbl\"\nzone = \"{zone}\"\nscore = 5\n\n"
            ),
        };
        let resolver = match chain {
            Chain::Local => String::new(),
            Chain::Unbound(resolver) => format!("resolver = \"{resolver}\"\ndns_cache_size = 1\n"),
            Chain::OwnCache(resolver) => format!("resolver = \"{resolver}\"\n"),
        };
        let config = format!(
            "[daemon]\n\
             control_socket = {socket}\n\
             state_dir = {state}\n\
             bpf_pin_dir = {pin}\n\n\
             [xdp]\n\
             interfaces = []\n\n\
             [policy]\n\
             listen = [\"{addr}\"]\n\
             {resolver}\n\
             [[policy.check]]\n\
             name = \"allow\"\n\
             type = \"list\"\n\
             allow = true\n\
             action = \"DUNNO\"\n\
             client = [{allow}]\n\n\
             {bl1}\
             {bl2}\
             [[policy.threshold]]\n\
             score = 10\n\
             action = \"{REJECT_TEMPLATE}, %DETAIL%)\"\n",
            socket = quote(&dir.path().join("control.sock")),
            state = quote(&dir.path().join("state")),
            pin = quote(pin.path()),
            allow = nets(&ALLOW),
            bl1 = blocklist("bl1", "bl1.test", &BL1_NETS),
            bl2 = blocklist("bl2", "bl2.test", &BL2_NETS),
        );
        let path = dir.path().join("spamwall.toml");
        fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        let mut command = Command::new(spamwall_bin());
        command
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env_remove("SPAMWALL_CONFIG");
        Self::spawn("spamwall", launch(command), addr, dir)
    }

    /// mtpolicyd in the foreground with the equivalent chain (see the
    /// module documentation).
    pub(crate) fn mtpolicyd(chain: Chain) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("mtpolicyd-bench-")
            .tempdir()?;
        let addr = free_tcp();
        let port = addr.port();
        let blocklist = |name: &str, zone: &str, regex: &str| match chain {
            Chain::Local => format!(
                "\x20 <Plugin {name}>\n\
                 \x20   module = \"Condition\"\n\
                 \x20   key = \"client_address\"\n\
                 \x20   re_match = \"{regex}\"\n\
                 \x20   score = 5\n\
                 \x20 </Plugin>\n"
            ),
            Chain::Unbound(_) | Chain::OwnCache(_) => format!(
                "\x20 <Plugin {name}>\n\
                 \x20   module = \"RBL\"\n\
                 \x20   mode = \"passive\"\n\
                 \x20   domain = \"{zone}\"\n\
                 \x20   score = 5\n\
                 \x20 </Plugin>\n"
            ),
        };
        let config = format!(
            "# Generated by spamwall's policy bench.\n\
             user=root\n\
             group=root\n\
             pid_file=\"{pid}\"\n\
             log_level=0\n\
             port=\"{addr}\"\n\
             min_servers=20\n\
             min_spare_servers=2\n\
             max_spare_servers=24\n\
             max_servers=25\n\
             max_requests=100000\n\
             keepalive_timeout=0\n\
             max_keepalive=0\n\
             request_timeout=20\n\
             <VirtualHost {port}>\n\
             \x20 name=\"bench\"\n\
             \x20 <Plugin allow>\n\
             \x20   module = \"Condition\"\n\
             \x20   key = \"client_address\"\n\
             \x20   re_match = \"{ALLOW_REGEX}\"\n\
             \x20   action = \"dunno\"\n\
             \x20 </Plugin>\n\
             {bl1}\
             {bl2}\
             \x20 <Plugin reject>\n\
             \x20   module = \"ScoreAction\"\n\
             \x20   threshold = 10\n\
             \x20   action = \"{REJECT_TEMPLATE}%SCORE_DETAIL%)\"\n\
             \x20 </Plugin>\n\
             </VirtualHost>\n",
            pid = dir.path().join("mtpolicyd.pid").display(),
            bl1 = blocklist("bl1", "bl1.test", BL1_REGEX),
            bl2 = blocklist("bl2", "bl2.test", BL2_REGEX),
        );
        let path = dir.path().join("mtpolicyd.conf");
        fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        let mut command = Command::new("mtpolicyd");
        command.arg("-c").arg(&path).arg("-f");
        if let Chain::Unbound(resolver) | Chain::OwnCache(resolver) = chain {
            command
                .env("RES_NAMESERVERS", resolver.ip().to_string())
                .env("RES_OPTIONS", format!("port:{}", resolver.port()));
        }
        Self::spawn("mtpolicyd", command, addr, dir)
    }

    /// Starts `command` in its own process group, logging into `dir`, and
    /// waits (bounded) until `addr` accepts connections.
    pub(crate) fn spawn(
        name: &'static str,
        mut command: Command,
        addr: SocketAddr,
        dir: tempfile::TempDir,
    ) -> Result<Self> {
        let log = dir.path().join(format!("{name}.log"));
        let child = spawn_logged(&mut command, &log, name)?;
        let mut server = Self {
            name,
            addr,
            child,
            log,
            _dir: dir,
        };
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("{name} exited with {status}; log:\n{}", server.log());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "{name} did not accept on {addr} within {START_TIMEOUT:?}; log:\n{}",
                    server.log()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// Runs the client against this server; also returns the CPU time
    /// the server's processes spent meanwhile.
    pub(crate) fn measure(
        &self,
        workload: &Workload,
        mut budget: Budget,
    ) -> Result<(Load, CpuTime)> {
        eprintln!("measuring {} on {} …", self.name, self.addr);
        budget.chain_answers = self.name != "floor";
        // The server leads its own process group (see `spawn_logged`).
        let group = self.child.id();
        let cpu = || {
            CpuTime::of_group(group)
                .with_context(|| format!("reading /proc for the CPU time of {}", self.name))
        };
        let before = cpu()?;
        let load = client::measure(self.addr, workload, budget)
            .with_context(|| format!("{} failed; log:\n{}", self.name, self.log()))?;
        Ok((load, cpu()?.since(before)))
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the server's log has `line`.
    pub(crate) fn wait_logged(&mut self, line: &str, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        while !self.log().contains(line) {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited with {status}; log:\n{}", self.name, self.log());
            }
            ensure!(
                started.elapsed() < timeout,
                "{} did not log {line:?} within {timeout:?}; log:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Stops the server, giving it `grace` to exit on SIGTERM.
    pub(crate) fn stop(&mut self, grace: Duration) {
        stop_group_leader(&mut self.child, grace);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM; mtpolicyd's parent stops its preforked children. Then
        // SIGKILL to the process group for anything left.
        stop_group_leader(&mut self.child, STOP_TIMEOUT);
    }
}

/// Starts `command` in its own process group, stdout and stderr into
/// `log`.
pub(crate) fn spawn_logged(command: &mut Command, log: &Path, name: &str) -> Result<Child> {
    let out = fs::File::create(log)?;
    command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {name} ({command:?})"))
}
