use std::process::ExitCode;

use clap::Parser as _;
use spamwall::{
    cli::{Cli, Command},
    log_writer::LogWriter,
};
use tracing_subscriber::{EnvFilter, fmt::writer::BoxMakeWriter};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Run);
    let default_level = if daemon { "info" } else { "warn" };
    let filter =
        EnvFilter::try_from_env("SPAMWALL_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    // The daemon hands its lines to a thread of their own, which writes
    // many at once (`log_writer`): a spam run logs a line per rejected
    // mail, and no policy answer should wait for a write to stderr. The
    // guard writes what is left when `run` returns. A command writes its
    // few lines itself; so does a daemon whose writer thread could not
    // start.
    let (writer, _flush_on_exit) =
        match daemon.then(|| LogWriter::spawn(std::io::stderr(), "spamwall-log")) {
            Some(Ok((writer, guard))) => (BoxMakeWriter::new(writer), Some(guard)),
            Some(Err(error)) => {
                eprintln!(
                    "spamwall: starting the log writer thread failed ({error}); logging directly"
                );
                (BoxMakeWriter::new(std::io::stderr), None)
            }
            None => (BoxMakeWriter::new(std::io::stderr), None),
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
