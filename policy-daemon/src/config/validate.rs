//! The validation pass over a configuration that was read, and the
//! warnings about what is allowed but risky: each names its key.

use std::path::PathBuf;

use super::Config;

impl Config {
    /// Problems of `xdp.ports` and of the rules' and thresholds' own.
    fn port_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.xdp.ports.contains(&0) {
            problems.push(
                "xdp.ports: port 0 cannot be enforced; list ports from 1 to 65535".to_owned(),
            );
        }
        for (key, ports) in self.scoped_ports() {
            if ports.contains(&0) {
                problems.push(format!(
                    "{key}: port 0 cannot be enforced; list ports from 1 to 65535, or [] for all traffic"
                ));
            }
        }
        if let Err(error) = self.port_scopes() {
            problems.push(format!("ports: {error}"));
        }
        problems
    }

    /// What is allowed but risky, each naming its key; `check-config`
    /// prints them and the daemon logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.xdp.interfaces == ["lo"] {
            warnings.push(
                "xdp.interfaces: lo is the only interface: bans hold only for traffic to loopback, never for mail from outside; list the interfaces mail arrives on".to_owned(),
            );
        }
        warnings.extend(self.logwatch.warnings());
        warnings
    }

    /// What this host says about the configuration, each naming its key:
    /// interfaces that do not exist, log files that are not there, DNS
    /// lists asked through a public resolver. `check-config` prints them
    /// after [`Self::warnings`].
    pub fn host_warnings(&self, host: &HostPaths) -> Vec<String> {
        let mut warnings = Vec::new();
        for interface in &self.xdp.interfaces {
            if !interface.is_empty()
                && !interface.contains('/')
                && !host.net_class.join(interface).exists()
            {
                warnings.push(format!(
                    "xdp.interfaces: {interface} does not exist on this host ({} has no {interface}): the daemon cannot attach to it",
                    host.net_class.display()
                ));
            }
        }
        warnings.extend(self.logwatch.host_warnings());
        warnings.extend(self.policy.resolver_warnings(&host.resolv_conf));
        warnings
    }

    /// Every semantic problem, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for interface in &self.xdp.interfaces {
            if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ', '\0'])
            {
                problems.push(format!(
                    "xdp.interfaces: {interface:?} is not a valid interface name"
                ));
            } else if seen.contains(&interface) {
                problems.push(format!("xdp.interfaces: {interface} is listed twice"));
            }
            seen.push(interface);
        }
        problems.extend(self.port_problems());
        if self.ban.backends.is_empty() {
            problems.push("ban.backends: at least one backend is needed (\"xdp\")".to_owned());
        }
        for (i, backend) in self.ban.backends.iter().enumerate() {
            if self.ban.backends[..i].contains(backend) {
                problems.push(format!("ban.backends: {backend} is listed twice"));
            }
        }
        if let Some(listen) = &self.metrics.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            problems.push(format!(
                "metrics.listen: {listen:?} is not host:port (e.g. \"127.0.0.1:9465\")"
            ));
        }
        if !(self.ban.factor.is_finite() && self.ban.factor > 0.0) {
            problems.push("ban.factor: must be a positive number".to_owned());
        }
        if let Err(error) = crate::clock::check_ban_length(self.ban.maxtime.0) {
            problems.push(format!("ban.maxtime: {error}"));
        }
        if self.ban.aggregate_v4_prefix > 32 {
            problems.push("ban.aggregate_v4_prefix: must be at most 32".to_owned());
        }
        if self.ban.aggregate_v6_prefix > 128 {
            problems.push("ban.aggregate_v6_prefix: must be at most 128".to_owned());
        }
        if self.ban.widest_v4 > 32 {
            problems.push("ban.widest_v4: must be at most 32".to_owned());
        }
        if self.ban.widest_v6 > 128 {
            problems.push("ban.widest_v6: must be at most 128".to_owned());
        }
        if self.ban.aggregate_threshold > 0 {
            if self.ban.aggregate_v4_prefix < self.ban.widest_v4 {
                problems.push(format!(
                    "ban.aggregate_v4_prefix: /{} is wider than ban.widest_v4 (/{})",
                    self.ban.aggregate_v4_prefix, self.ban.widest_v4
                ));
            }
            if self.ban.aggregate_v6_prefix < self.ban.widest_v6 {
                problems.push(format!(
                    "ban.aggregate_v6_prefix: /{} is wider than ban.widest_v6 (/{})",
                    self.ban.aggregate_v6_prefix, self.ban.widest_v6
                ));
            }
        }
        if let Some(fail2ban) = &self.fail2ban
            && let Err(error) = crate::bans::fail2ban::check_jail_name(&fail2ban.jail)
        {
            problems.push(format!("fail2ban.jail: {error}"));
        }
        for (key, value) in [
            ("ban.capacity_v4", self.ban.capacity_v4),
            ("ban.capacity_v6", self.ban.capacity_v6),
            ("ban.capacity_prefix_v4", self.ban.capacity_prefix_v4),
            ("ban.capacity_prefix_v6", self.ban.capacity_prefix_v6),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        for (key, path) in [
            ("daemon.control_socket", &self.daemon.control_socket),
            ("daemon.state_dir", &self.daemon.state_dir),
            ("daemon.bpf_pin_dir", &self.daemon.bpf_pin_dir),
        ] {
            if !path.is_absolute() {
                problems.push(format!("{key}: {} is not an absolute path", path.display()));
            }
        }
        problems.extend(crate::policy::problems(&self.policy));
        problems.extend(self.logwatch.problems());
        problems.extend(crate::feeds::config::problems(&self.feeds));
        if let Some(fleet) = &self.fleet {
            problems.extend(fleet.problems());
        }
        problems
    }
}

/// Where [`Config::host_warnings`] looks on this host.
#[derive(Clone, Debug)]
pub struct HostPaths {
    /// The network interfaces, one entry each. Default `/sys/class/net`.
    pub net_class: PathBuf,
    /// The system resolver configuration DNS checks fall back to.
    /// Default `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            net_class: PathBuf::from("/sys/class/net"),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}
