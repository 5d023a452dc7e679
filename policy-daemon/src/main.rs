use std::{io::BufWriter, process::ExitCode};

use clap::Parser as _;
use spamwall::cli::{Cli, Command};
use tracing_subscriber::{EnvFilter, fmt::writer::BoxMakeWriter};

/// Log lines the daemon's writer thread may have queued; past that, a
/// thread that logs waits for it rather than a line being dropped.
const QUEUED_LOG_LINES: usize = 65_536;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Run);
    let default_level = if daemon { "info" } else { "warn" };
    let filter =
        EnvFilter::try_from_env("SPAMWALL_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    // The daemon hands its lines to a thread of their own, which writes
    // all those queued at once: a spam run logs a line per rejected mail,
    // and no policy answer should wait for a write to stderr. The guard
    // writes what is left when `run` returns. A command writes its few
    // lines itself.
    let (writer, _flush_on_exit) = if daemon {
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .buffered_lines_limit(QUEUED_LOG_LINES)
            .thread_name("spamwall-log")
            .finish(BufWriter::new(std::io::stderr()));
        (BoxMakeWriter::new(writer), Some(guard))
    } else {
        (BoxMakeWriter::new(std::io::stderr), None)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // journald stamps every line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
    spamwall::cli::run(&cli)
}
