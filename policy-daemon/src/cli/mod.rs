//! The `spamwall` command line: argument parsing and the client verbs.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error
//! (including a refused address).

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

mod ban;
mod check;
mod explain;
mod import;
mod import_fail2ban;
mod list;
mod query;
mod run;
mod target_file;
mod test_filter;
mod top;
mod unban;
mod xdp;

pub use target_file::{MAX_LINE, TargetLine, TargetLines};

use clap::{Args, CommandFactory as _, Parser, Subcommand};

use crate::{
    config::{Config, resolve_path},
    control::{self, Request, Response, Status},
    dataplane,
};

/// Default control socket when no configuration file is found.
const DEFAULT_SOCKET: &str = "/run/spamwall/control.sock";

/// What `spamwall --version` prints after the name: the package version and
/// the git commit the binary was built from (`build.rs`), or "unknown
/// commit" for a build outside a git checkout, such as a source tarball.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SPAMWALL_COMMIT"),
    ")"
);

/// spamwall: a Postfix policy server that bans abusive SMTP clients in the
/// kernel with XDP.
#[derive(Debug, Parser)]
#[command(name = "spamwall", version = VERSION, about, long_about = None)]
pub struct Cli {
    /// Configuration file [default: `$SPAMWALL_CONFIG`, then `/etc/spamwall/spamwall.toml`]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Control socket of the daemon [default: `daemon.control_socket` of the configuration]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground
    Run,
    /// Ban addresses or CIDR prefixes
    Ban(ban::BanArgs),
    /// Lift bans: named, from a file, or every ban of one source
    Unban(unban::UnbanArgs),
    /// Say why an address is blocked or not: bans, allowlist, kernel maps, fail2ban, ports
    Explain(explain::ExplainArgs),
    /// List active bans, as they are read (filters: source, prefix, expiry, count)
    List(list::ListArgs),
    /// Show ban counts and packet counters
    Stats(JsonFlag),
    /// Show backends, interfaces and settings
    Status(JsonFlag),
    /// Watch the daemon live: packet rates, bans by source, latest and busiest bans, health; unban from there
    Top(top::TopArgs),
    /// Check a configuration file: every error, warnings, and what will run
    CheckConfig(check::CheckArgs),
    /// Manage the pinned XDP program without the daemon
    #[command(subcommand)]
    Xdp(XdpCommand),
    /// Send one Postfix policy request (name=value lines on stdin, or --attr) and print the answer
    Query(query::QueryArgs),
    /// Run a log filter over a file, like fail2ban-regex (no daemon, no root)
    TestFilter(test_filter::TestFilterArgs),
    /// Print the spamwall configuration equivalent to another program's
    /// (exit 2 when a part has no equivalent, 1 on errors)
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Print a completion script for a shell
    Completions {
        /// bash, zsh, fish, elvish or powershell
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum XdpCommand {
    /// Load, pin and attach the XDP program without the daemon, on the configuration's pin directory and maps
    Load {
        /// Attach to this interface [default: xdp.interfaces]; may be repeated
        #[arg(long, value_name = "IFACE")]
        iface: Vec<String>,
        /// auto (native, then skb), native or skb [default: xdp.mode]
        #[arg(long, value_name = "MODE")]
        mode: Option<xdp::ModeArg>,
    },
    /// Show the pinned program: interfaces, program and link ids, mode, maps with entry counts, counters
    Status(JsonFlag),
    /// Detach the pinned program from interfaces (stop the daemon first)
    #[command(alias = "unload")]
    Detach {
        /// Only this interface [default: all, and unpin the program]
        #[arg(long, value_name = "IFACE")]
        iface: Option<String>,
        /// Also delete the pinned maps and with them every ban
        #[arg(long, conflicts_with = "iface")]
        purge: bool,
    },
}

/// A failure with its exit code.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    fn runtime(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: &Cli) -> ExitCode {
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("spamwall: {}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}

fn dispatch(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Run => run::run_daemon(cli.config.as_deref()),
        Command::CheckConfig(args) => check::check_config(cli.config.as_deref(), args),
        Command::Xdp(XdpCommand::Detach { iface, purge }) => {
            let config = load_config(cli.config.as_deref())?;
            let detached = dataplane::detach(&config.daemon.bpf_pin_dir, iface.as_deref(), *purge)
                .map_err(|e| Failure::runtime(e.to_string()))?;
            if detached.interfaces.is_empty() && !detached.program && !detached.maps {
                println!(
                    "nothing pinned under {}",
                    config.daemon.bpf_pin_dir.display()
                );
            }
            for interface in &detached.interfaces {
                println!("detached from {interface}");
            }
            if detached.program {
                println!("unpinned program");
            }
            if detached.maps {
                println!("removed pinned maps and their bans");
            }
            Ok(())
        }
        Command::Xdp(XdpCommand::Load { iface, mode }) => {
            xdp::load(&load_config(cli.config.as_deref())?, iface, *mode)
        }
        Command::Xdp(XdpCommand::Status(flag)) => {
            xdp::status(&load_config(cli.config.as_deref())?, flag.json)
        }
        Command::Ban(args) => ban::ban(&socket(cli)?, args),
        Command::Unban(args) => unban::unban(&socket(cli)?, args),
        Command::Explain(args) => explain::explain(&socket(cli)?, args),
        Command::List(args) => list::list(&socket(cli)?, args),
        Command::Stats(flag) => stats(&socket(cli)?, flag.json),
        Command::Status(flag) => status(&socket(cli)?, flag.json),
        Command::Top(args) => top::top(&socket(cli)?, args),
        Command::TestFilter(args) => test_filter::run(cli.config.as_deref(), args),
        Command::Import(command) => import::run(command),
        Command::Query(args) => {
            query::run(args, cli.config.as_deref()).map(|answer| println!("{answer}"))
        }
        Command::Completions { shell } => print_out(&completion_script(*shell)),
    }
}

/// The completion script for `shell`, generated from these definitions.
pub fn completion_script(shell: clap_complete::Shell) -> String {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "spamwall", &mut script);
    String::from_utf8_lossy(&script).into_owned()
}

fn load_config(flag: Option<&Path>) -> Result<Config, Failure> {
    let path = resolve_path(flag);
    Config::load(&path).map_err(|e| Failure::usage(e.to_string()))
}

/// The socket to reach the daemon: `--socket`, else the configuration's,
/// else the default. A configuration that is named but broken is an error.
fn socket(cli: &Cli) -> Result<PathBuf, Failure> {
    if let Some(socket) = &cli.socket {
        return Ok(socket.clone());
    }
    let path = resolve_path(cli.config.as_deref());
    let named = cli.config.is_some() || std::env::var_os(crate::config::CONFIG_ENV).is_some();
    if !named && !path.exists() {
        return Ok(PathBuf::from(DEFAULT_SOCKET));
    }
    Config::load(&path)
        .map(|config| config.daemon.control_socket)
        .map_err(|e| Failure::usage(e.to_string()))
}

fn ask(socket: &Path, request: &Request) -> Result<Response, Failure> {
    match control::request(socket, request) {
        Ok(Response::Error { message }) => {
            Err(Failure::runtime(format!("the daemon answered: {message}")))
        }
        Ok(response) => Ok(response),
        Err(error) => Err(Failure::runtime(error.to_string())),
    }
}

fn unexpected(response: &Response) -> Failure {
    Failure::runtime(format!("unexpected answer from the daemon: {response:?}"))
}

fn stats(socket: &Path, json: bool) -> Result<(), Failure> {
    let response = ask(socket, &Request::Stats)?;
    let Response::Stats { stats } = response else {
        return Err(unexpected(&response));
    };
    if json {
        return print_json(&stats);
    }
    let value = serde_json::to_value(stats).map_err(|e| Failure::runtime(e.to_string()))?;
    let mut out = String::new();
    if let serde_json::Value::Object(fields) = value {
        for (key, value) in fields {
            let _ = writeln!(out, "{key:<22} {value}");
        }
    }
    print_out(&out)
}

fn status(socket: &Path, json: bool) -> Result<(), Failure> {
    let response = ask(socket, &Request::Status)?;
    let Response::Status { status } = response else {
        return Err(unexpected(&response));
    };
    if json {
        return print_json(&status);
    }
    print_out(&status_text(&status))
}

fn status_text(status: &Status) -> String {
    let mut out = format!(
        "spamwall {} (pid {}), running since {}\nconfig: {}\n",
        printable(&status.version),
        status.pid,
        printable(&status.started_at),
        printable(&status.config)
    );
    for backend in &status.backends {
        let state = if backend.active { "active" } else { "inactive" };
        let _ = writeln!(
            out,
            "backend {}: {state}, {}",
            printable(&backend.name),
            printable(&backend.detail)
        );
    }
    for attachment in &status.interfaces {
        let _ = writeln!(
            out,
            "interface {}: {} mode",
            printable(&attachment.interface),
            attachment.mode
        );
    }
    let _ = writeln!(
        out,
        "program id {}, pinned under {}",
        status.program_id,
        printable(&status.pin_dir)
    );
    let _ = writeln!(out, "ports: {}", ports_text(&status.ports));
    if status.dry_run {
        let _ = writeln!(
            out,
            "dry run: banned sources are counted (would_drop_v4, would_drop_v6) and passed"
        );
    }
    if status.port_scopes.len() > 1 {
        let scopes: Vec<String> = status.port_scopes[1..]
            .iter()
            .map(|ports| ports_text(ports))
            .collect();
        let _ = writeln!(out, "ports of rules and thresholds: {}", scopes.join("; "));
    }
    let listen = if status.policy_listen.is_empty() {
        "off".to_owned()
    } else {
        printable(&status.policy_listen.join(", ")).into_owned()
    };
    let _ = writeln!(out, "policy server: {listen}");
    if let Some(greylist) = &status.greylist {
        let _ = writeln!(out, "greylisting: {}", printable(greylist));
    }
    if status.log_sources.is_empty() {
        let _ = writeln!(out, "log sources: none");
    }
    for source in &status.log_sources {
        let _ = writeln!(out, "log source {}", printable(source));
    }
    for feed in &status.feeds {
        let _ = writeln!(out, "feed {}", printable(feed));
    }
    let _ = writeln!(out, "active bans: {}", status.bans_active);
    let _ = writeln!(
        out,
        "capacity: {} IPv4, {} IPv6, {} IPv4 prefixes, {} IPv6 prefixes",
        status.capacity_v4,
        status.capacity_v6,
        status.capacity_prefix_v4,
        status.capacity_prefix_v6
    );
    let allow: Vec<String> = status.allowlist.iter().map(ToString::to_string).collect();
    let _ = writeln!(out, "allowlist: {}", allow.join(", "));
    let _ = writeln!(out, "default bantime: {}", status.default_bantime);
    out
}

/// `text` safe for a terminal: each control character (escape sequences,
/// carriage returns, newlines) is written as its Rust escape, `\u{1b}`.
/// Reasons come from log lines and other hosts; they must not be able to
/// move the cursor or fake lines.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn ports_text(ports: &[u16]) -> String {
    if ports.is_empty() {
        "all traffic".to_owned()
    } else {
        ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| Failure::runtime(e.to_string()))?;
    text.push('\n');
    print_out(&text)
}

/// Writes to stdout; a closed pipe (`spamwall list | head`) is not an error.
fn print_out(text: &str) -> Result<(), Failure> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::runtime(error.to_string()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn version_names_the_commit_or_says_it_is_unknown() {
        let commit = VERSION
            .strip_prefix(concat!(env!("CARGO_PKG_VERSION"), " ("))
            .and_then(|rest| rest.strip_suffix(')'))
            .expect(VERSION);
        let known = commit
            .strip_prefix("commit ")
            .is_some_and(|hash| hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(known || commit == "unknown commit", "{VERSION}");
    }

    #[test]
    fn completion_scripts_name_every_verb() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let script = completion_script(shell);
            for verb in [
                "run",
                "ban",
                "check-config",
                "test-filter",
                "detach",
                "completions",
            ] {
                assert!(script.contains(verb), "{shell}: no {verb} in\n{script}");
            }
            // fish spells a long option `-l for`.
            assert!(
                script.contains("--for") || script.contains("-l for"),
                "{shell}: no ban --for"
            );
        }
    }

    #[test]
    fn global_flags_work_after_the_verb() {
        let cli = Cli::try_parse_from([
            "spamwall",
            "ban",
            "192.0.2.7",
            "--for",
            "1h",
            "--socket",
            "/tmp/s",
        ])
        .expect("parse");
        assert_eq!(cli.socket.as_deref(), Some(Path::new("/tmp/s")));
        let Command::Ban(args) = cli.command else {
            panic!("not ban")
        };
        assert_eq!(args.targets, ["192.0.2.7"]);
        assert_eq!(args.duration.as_deref(), Some("1h"));
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let hostile = "ok\u{1b}[2J\u{1b}[1;1Hbanned nothing\r\nfake line\u{7}";
        let status: Status = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "pid": 1, "started_at": "2026-11-28T00:00:00Z",
            "config": "/etc/spamwall/spamwall.toml", "pin_dir": "/sys/fs/bpf/spamwall",
            "program_id": 7, "ports": [], "bans_active": 1, "capacity_v4": 1,
            "capacity_v6": 1, "capacity_prefix_v4": 1, "capacity_prefix_v6": 1,
            "allowlist": [], "default_bantime": "1h", "store": "/var/lib/spamwall/spamwall.db",
            "interfaces": [],
            "backends": [{"name": "fleet", "active": true, "detail": hostile}],
        }))
        .expect("status");
        let text = status_text(&status);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(
            text.contains("backend fleet: active, ok\\u{1b}[2J"),
            "{text}"
        );
        assert_eq!(printable("plain text"), "plain text");
    }
}
