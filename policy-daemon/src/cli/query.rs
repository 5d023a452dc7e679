//! `spamwall query`: send one policy request, print the answer.

use std::{
    io::{self, Read as _},
    path::Path,
};

use super::Failure;
use crate::{
    config::{CONFIG_ENV, Config, resolve_path},
    policy::{
        ListenAddr,
        client::{parse_attribute, parse_attributes, query},
        config::DEFAULT_LISTEN,
    },
};

/// `spamwall query`: send one policy request, print the answer.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[arg(
        long,
        value_name = "ADDR|unix:PATH",
        help = "Policy server: host:port or unix:/path [default: the first policy.listen entry of the configuration]"
    )]
    pub server: Option<String>,
    #[arg(
        long = "attr",
        value_name = "NAME=VALUE",
        help = "An attribute, e.g. --attr client_address=192.0.2.1; repeatable. Without any, name=value lines are read from standard input"
    )]
    pub attrs: Vec<String>,
    /// How long to wait for the answer
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub timeout: humantime::Duration,
}

/// Runs `spamwall query`; returns the answer line (`action=…`).
pub(super) fn run(args: &QueryArgs, config: Option<&Path>) -> Result<String, Failure> {
    let usage = Failure::usage;
    let addr = match &args.server {
        Some(text) => text
            .parse::<ListenAddr>()
            .map_err(|e| usage(format!("--server: {e}")))?,
        None => default_server(config).map_err(usage)?,
    };
    let attributes = if args.attrs.is_empty() {
        let mut text = String::new();
        io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| usage(format!("reading attributes from standard input: {e}")))?;
        parse_attributes(&text).map_err(|e| usage(format!("standard input {e}")))?
    } else {
        args.attrs
            .iter()
            .map(|attr| parse_attribute(attr).map_err(|e| usage(format!("--attr {e}"))))
            .collect::<Result<Vec<_>, _>>()?
    };
    query(&addr, &attributes, args.timeout.into()).map_err(|e| Failure::runtime(e.to_string()))
}

/// The first `policy.listen` entry of the configuration; without a
/// configuration file, the default listener.
fn default_server(flag: Option<&Path>) -> Result<ListenAddr, String> {
    let path = resolve_path(flag);
    let named = flag.is_some() || std::env::var_os(CONFIG_ENV).is_some();
    if !named && !path.exists() {
        return DEFAULT_LISTEN.parse();
    }
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    config.policy.listen.first().cloned().ok_or_else(|| {
        format!(
            "{}: policy.listen is empty; name a server with --server",
            path.display()
        )
    })
}
