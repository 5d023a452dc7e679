//! Debian's unbound as the caching resolver both servers ask in the DNS
//! rows.

use std::{
    fmt::Write as _,
    fs,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use spamwall_tests::postfix::stop_group_leader;

use crate::{START_TIMEOUT, STOP_TIMEOUT, servers::spawn_logged};

/// Debian's unbound on a loopback port, resolving only through rbldnsd;
/// stopped by pid on drop.
pub(crate) struct Unbound {
    pub(crate) addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Unbound {
    pub(crate) fn start(rbldnsd: SocketAddr) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("unbound-bench-")
            .tempdir()?;
        // unbound binds TCP as well as UDP.
        let addr = spamwall_tests::ports::free_tcp_and_udp();
        let upstream = format!("{}@{}", rbldnsd.ip(), rbldnsd.port());
        let mut config = format!(
            "server:\n\
             \x20 interface: {ip}@{port}\n\
             \x20 port: {port}\n\
             \x20 access-control: 127.0.0.0/8 allow\n\
             \x20 do-not-query-localhost: no\n\
             \x20 do-daemonize: no\n\
             \x20 use-syslog: no\n\
             \x20 logfile: \"\"\n\
             \x20 verbosity: 0\n\
             \x20 username: \"\"\n\
             \x20 chroot: \"\"\n\
             \x20 directory: \"{dir}\"\n\
             \x20 pidfile: \"\"\n\
             \x20 num-threads: 1\n\
             \x20 module-config: \"iterator\"\n\
             \x20 do-ip6: no\n\
             \x20 local-zone: \"test.\" nodefault\n\
             remote-control:\n\
             \x20 control-enable: no\n",
            ip = addr.ip(),
            port = addr.port(),
            dir = dir.path().display(),
        );
        for zone in ["bl1.test", "bl2.test"] {
            write!(
                config,
                "stub-zone:\n  name: \"{zone}\"\n  stub-addr: {upstream}\n"
            )?;
        }
        // Anything else goes to rbldnsd too: nothing leaves loopback.
        write!(
            config,
            "forward-zone:\n  name: \".\"\n  forward-addr: {upstream}\n"
        )?;
        let path = dir.path().join("unbound.conf");
        fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        let checked = Command::new("unbound-checkconf")
            .arg(&path)
            .output()
            .context("running unbound-checkconf")?;
        ensure!(
            checked.status.success(),
            "unbound-checkconf refused the generated config: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        let log = dir.path().join("unbound.log");
        let child = spawn_logged(
            Command::new("unbound").arg("-d").arg("-c").arg(&path),
            &log,
            "unbound",
        )?;
        let mut unbound = Self {
            addr,
            child,
            log,
            _dir: dir,
        };
        unbound.wait_answering()?;
        Ok(unbound)
    }

    /// Waits (bounded) until unbound answers a listed name through rbldnsd.
    pub(crate) fn wait_answering(&mut self) -> Result<()> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        // A query for 2.100.51.198.bl1.test A, id 0x5eed, recursion desired.
        let mut query = vec![0x5e, 0xed, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["2", "100", "51", "198", "bl1", "test"] {
            query.push(u8::try_from(label.len())?);
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 1, 0, 1]);
        let started = Instant::now();
        let mut answer = [0_u8; 512];
        loop {
            socket.send_to(&query, self.addr)?;
            // An answer with one record in it: rbldnsd reached.
            if let Ok(len) = socket.recv(&mut answer)
                && len > 12
                && answer[..2] == [0x5e, 0xed]
                && let rcode = answer[3] & 0x0f
                && rcode == 0
                && answer[7] > 0
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("unbound exited with {status}; log:\n{}", self.log());
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "unbound did not answer on {} within {START_TIMEOUT:?}; log:\n{}",
                    self.addr,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        stop_group_leader(&mut self.child, STOP_TIMEOUT);
    }
}
