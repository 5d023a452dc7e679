//! `spamwall run` with only the policy server, for the benchmarks that
//! measure it against a peer policy server.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use spamwall_tests::{PinDir, daemon::spamwall_bin, ports::free_tcp, postfix::stop_group_leader};

use super::client::Load;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running daemon: no XDP interface, its policy server on a free
/// loopback port.
pub struct Spamwall {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Spamwall {
    /// Starts the daemon with `policy`: TOML lines after
    /// `[policy]\nlisten = […]` (more `[policy]` keys first, then its
    /// checks, thresholds and sub-tables).
    pub fn start(policy: &str, pin: &PinDir) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("spamwall-bench-")
            .tempdir()?;
        let addr = free_tcp();
        let quote = |path: &Path| format!("{:?}", path.to_str().unwrap_or_default());
        let config = format!(
            "[daemon]\ncontrol_socket = {socket}\nstate_dir = {state}\nbpf_pin_dir = {pins}\n\n\
             [xdp]\ninterfaces = []\n\n\
             [policy]\nlisten = [\"{addr}\"]\n{policy}",
            socket = quote(&dir.path().join("control.sock")),
            state = quote(&dir.path().join("state")),
            pins = quote(pin.path()),
        );
        let path = dir.path().join("spamwall.toml");
        fs::write(&path, config)?;
        let log = fs::File::create(dir.path().join("spamwall.log"))?;
        let child = Command::new(spamwall_bin())
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env_remove("SPAMWALL_CONFIG")
            .env("SPAMWALL_LOG", "warn")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting spamwall")?;
        let mut server = Self { addr, child, dir };
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("spamwall exited with {status}; log:\n{}", server.log());
            }
            ensure!(
                started.elapsed() < START_TIMEOUT,
                "spamwall did not listen; log:\n{}",
                server.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("spamwall.log")).unwrap_or_default()
    }
}

impl Drop for Spamwall {
    fn drop(&mut self) {
        stop_group_leader(&mut self.child, STOP_TIMEOUT);
    }
}

/// One request on a new connection; the answer's action line.
pub fn ask(addr: SocketAddr, request: &str) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, START_TIMEOUT)?;
    stream.set_read_timeout(Some(START_TIMEOUT))?;
    stream.write_all(request.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

/// Prints both runs side by side and the ratio against `target`; fails
/// on a run that answered nothing or answered wrong.
pub fn report(peer: &str, ours: &Load, theirs: &Load, target: f64) -> Result<()> {
    println!(
        "{:<12} {:>12} {:>10} {:>10} {:>7}",
        "server", "requests/s", "p50", "p99", "wrong"
    );
    for (name, load) in [("spamwall", ours), (peer, theirs)] {
        println!(
            "{name:<12} {:>12.0} {:>10} {:>10} {:>7}",
            load.throughput(),
            millis(load.percentile(50)),
            millis(load.percentile(99)),
            load.wrong
        );
    }
    ensure!(
        ours.requests > 0 && theirs.requests > 0,
        "a server answered nothing"
    );
    ensure!(
        ours.wrong == 0 && theirs.wrong == 0,
        "wrong answers: spamwall {:?}, {peer} {:?}",
        ours.first_wrong,
        theirs.first_wrong
    );
    let ratio = ours.throughput() / theirs.throughput();
    println!(
        "spamwall/{peer}: {ratio:.1}x (target >= {target}x: {})",
        if ratio >= target { "met" } else { "NOT met" }
    );
    Ok(())
}

fn millis(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}
