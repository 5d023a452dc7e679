//! `spamwall test-filter`: a log filter run over a file or standard input,
//! like fail2ban-regex (no daemon, no root).

use std::{io::Write as _, path::Path, path::PathBuf};

use clap::Args;

use super::Failure;
use crate::{
    config::Config,
    logwatch::{Report, TestFilterError},
};

#[derive(Debug, Args)]
pub struct TestFilterArgs {
    /// The log file (syslog, RFC 3339 syslog, or `journalctl -o json`); `-`: standard input
    #[arg(value_name = "LOGFILE")]
    pub logfile: PathBuf,
    /// `postfix`, a fail2ban filter file (`PATH[mode=M]`), or a `[[logwatch.filter]]` name
    #[arg(long, default_value = "postfix", value_name = "NAME|PATH")]
    pub filter: String,
    /// Mode of the filter: normal, rbl, auth, ddos, more, aggressive [default: more]
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// One JSON object per matched line: line, host, time, regex, failregex
    #[arg(long)]
    pub json: bool,
    /// Also print the matched lines, with host and failregex
    #[arg(long)]
    pub print_matched: bool,
    /// Also print the lines no failregex matched and those without a
    /// timestamp, each with the reason (with --json: as objects too)
    #[arg(long)]
    pub print_missed: bool,
}

/// `test-filter`: needs a configuration only for a user filter by name.
pub fn run(config: Option<&Path>, args: &TestFilterArgs) -> Result<(), Failure> {
    let user = match config {
        Some(path) => Config::load(path)
            .map_err(|e| Failure::usage(e.to_string()))?
            .logwatch
            .user_filters(),
        None => Vec::new(),
    };
    let filter = crate::logwatch::resolve_filter(&args.filter, args.mode.as_deref(), &user)
        .map_err(|e| Failure::usage(e.to_string()))?;
    let report = Report {
        json: args.json,
        print_matched: args.print_matched,
        print_missed: args.print_missed,
    };
    let stdout = std::io::stdout();
    // `--json` writes about as much as it reads: in large writes, not
    // one system call per few KiB.
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    match crate::logwatch::test_filter(&args.logfile, &filter, report, &mut out)
        .and_then(|()| out.flush().map_err(TestFilterError::Write))
    {
        Err(TestFilterError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e @ TestFilterError::Read { .. }) => Err(Failure::usage(e.to_string())),
        Err(e) => Err(Failure::runtime(e.to_string())),
        Ok(()) => Ok(()),
    }
}
