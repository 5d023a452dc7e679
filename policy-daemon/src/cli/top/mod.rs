//! `spamwall top`: a live view of the daemon over the control socket,
//! read again every second: packet rates, bans per source, the bans by
//! latest offence or by packets, backend health; keys to change the order
//! and to unban the selected ban after a confirmation.
//!
//! Any member of the control socket's group can run it. The terminal is
//! restored however it ends: `q`, Esc, Ctrl-C, SIGTERM, SIGHUP, a panic,
//! or the terminal hanging up.

mod app;
mod fetch;
mod view;

use std::{
    io::IsTerminal as _,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use self::{
    app::{Action, App, Key},
    fetch::Order,
};
use super::Failure;
use crate::control::ListSort;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Seconds between two reads of the daemon
    #[arg(long, value_name = "SECS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
    /// Order the bans by packets dropped from the start (`s` switches)
    #[arg(long)]
    pub by_packets: bool,
}

/// How often keys and signals are looked at.
const TICK: Duration = Duration::from_millis(100);

/// Set by SIGTERM, SIGHUP and SIGINT: leave the loop, restore the
/// terminal.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Runs the view until a key or a signal ends it.
pub fn top(socket: &Path, args: &TopArgs) -> Result<(), Failure> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            "top needs a terminal; use stats --json (or status --json, list --json) instead",
        ));
    }
    catch_stop_signals()?;
    let sort = if args.by_packets {
        ListSort::Packets
    } else {
        ListSort::Newest
    };
    let (orders, order_rx) = mpsc::channel();
    let (news_tx, news) = mpsc::channel();
    let socket_owned = socket.to_owned();
    let interval = Duration::from_secs(args.interval);
    // Not joined: a daemon that does not answer may hold it; it ends with
    // the process.
    std::thread::Builder::new()
        .name("top-fetch".to_owned())
        .spawn(move || fetch::serve(&socket_owned, interval, sort, &order_rx, &news_tx))
        .map_err(|e| Failure::runtime(format!("starting the reader thread: {e}")))?;
    let mut terminal = Screen::open()?;
    // crossterm's reader loops for ever on a terminal that hangs up while
    // it waits for a key (each read returns nothing at once), so the loop
    // below may never see it: this thread ends the process then. There is
    // no terminal left to restore.
    std::thread::Builder::new()
        .name("top-hangup".to_owned())
        .spawn(|| {
            loop {
                std::thread::sleep(TICK);
                if hung_up() {
                    std::process::exit(0);
                }
            }
        })
        .map_err(|e| Failure::runtime(format!("starting the hang-up watch: {e}")))?;
    let mut app = App::new(sort, interval);
    let ended = run(&mut terminal.0, &mut app, &orders, &news);
    drop(terminal);
    ended
}

fn run(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    orders: &mpsc::Sender<Order>,
    news: &mpsc::Receiver<fetch::News>,
) -> Result<(), Failure> {
    let drawing = |e: std::io::Error| Failure::runtime(format!("drawing on the terminal: {e}"));
    loop {
        while let Ok(item) = news.try_recv() {
            app.news(item);
        }
        terminal
            .draw(|frame| view::draw(frame, app))
            .map_err(drawing)?;
        if STOP.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !event::poll(TICK).map_err(drawing)? {
            continue;
        }
        let key = match event::read().map_err(drawing)? {
            Event::Key(key) if key.kind != KeyEventKind::Release => key,
            _ => continue,
        };
        let key = match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
            KeyCode::Char(c) => Key::Char(c),
            KeyCode::Up => Key::Up,
            KeyCode::Down => Key::Down,
            KeyCode::Esc => Key::Esc,
            KeyCode::Enter => Key::Enter,
            _ => Key::Other,
        };
        let order = match app.key(key) {
            Action::Quit => return Ok(()),
            Action::Nothing => continue,
            Action::Sort(sort) => Order::Sort(sort),
            Action::Unban(target) => Order::Unban(target),
        };
        if orders.send(order).is_err() {
            return Err(Failure::runtime("the reader thread ended"));
        }
    }
}

/// Whether the terminal has hung up (its window closed, the SSH session
/// gone). Reads from it then return at once with nothing, and no SIGHUP
/// need reach a process that is not the session's leader.
fn hung_up() -> bool {
    let mut stdin = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and no wait.
    let ready = unsafe { libc::poll(&raw mut stdin, 1, 0) };
    ready > 0 && stdin.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// The terminal in raw mode on the alternate screen; put back on drop,
/// and by ratatui's panic hook on a panic.
struct Screen(ratatui::DefaultTerminal);

impl Screen {
    fn open() -> Result<Self, Failure> {
        let mut terminal = ratatui::try_init().map_err(|e| {
            ratatui::restore();
            Failure::runtime(format!("setting up the terminal: {e}"))
        })?;
        let _ = terminal.hide_cursor();
        Ok(Self(terminal))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.0.show_cursor();
        ratatui::restore();
    }
}

/// Makes SIGTERM, SIGHUP and SIGINT end the loop instead of the process,
/// so the terminal is restored.
fn catch_stop_signals() -> Result<(), Failure> {
    for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; `sigaction` is given a zeroed, then filled,
        // struct that lives across the call.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(signal, &raw const action, std::ptr::null_mut())
        };
        if installed != 0 {
            return Err(Failure::runtime(format!(
                "catching signal {signal}: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}
