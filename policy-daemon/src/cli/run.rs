//! `spamwall run`: the process around the daemon. Binds the control
//! socket first, turns SIGTERM, SIGINT and SIGHUP into [`Event`]s, and
//! tells systemd (`Type=notify`) when the daemon is ready and when it
//! stops.

use std::path::{Path, PathBuf};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::warn;

use super::Failure;
use crate::{
    config::{Config, resolve_path},
    control,
    daemon::{self, Event},
};

/// Loads the configuration and runs the daemon until a signal stops it.
pub(super) fn run_daemon(flag: Option<&Path>) -> Result<(), Failure> {
    let path = resolve_path(flag);
    let config = Config::load(&path).map_err(|e| Failure::usage(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("starting the runtime: {e}")))?;
    runtime.block_on(serve(path, config))
}

async fn serve(path: PathBuf, config: Config) -> Result<(), Failure> {
    // The control socket first: a second daemon on the same configuration
    // must stop here, before it touches the store, the maps or the links.
    let control = control::bind(&config.daemon.control_socket)
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let events =
        signals().map_err(|e| Failure::runtime(format!("installing signal handlers: {e}")))?;
    let result = daemon::run(path, config, control, events, || {
        notify_systemd("READY=1\nSTATUS=serving");
    })
    .await;
    notify_systemd("STOPPING=1");
    result.map_err(|e| Failure::runtime(e.to_string()))
}

/// SIGHUP as [`Event::Reload`]; SIGTERM and SIGINT as [`Event::Stop`].
fn signals() -> std::io::Result<mpsc::Receiver<Event>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let (send, receive) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = terminate.recv() => Event::Stop,
                _ = interrupt.recv() => Event::Stop,
                _ = hangup.recv() => Event::Reload,
            };
            if send.send(event).await.is_err() || event == Event::Stop {
                break;
            }
        }
    });
    Ok(receive)
}

/// Tells systemd (`Type=notify`) about the daemon's state; a no-op outside
/// systemd.
fn notify_systemd(state: &str) {
    use std::os::{linux::net::SocketAddrExt as _, unix::net::SocketAddr};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let address = match path.to_str().and_then(|p| p.strip_prefix('@')) {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(Path::new(&path)),
    };
    let sent = address.and_then(|address| {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &address)
    });
    if let Err(error) = sent {
        warn!(%error, "sd_notify failed");
    }
}
