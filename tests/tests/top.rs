//! `spamwall top` in a real terminal: tmux runs it in a detached session of
//! 120 × 40, the test reads the screen with `capture-pane` and types with
//! `send-keys`. The daemon runs as the packaged unit does (user 65534 with
//! the unit's capabilities); `top` runs as another user, once without the
//! socket's group (a clear error on screen) and once as a member of it;
//! a terminal that hangs up ends it.
//!
//! Needs root, tmux and the binary; run serially:
//! `cargo test -p spamwall-tests --test top -- --test-threads=1`.
#![expect(clippy::unwrap_used, reason = "tests panic on failure by design")]

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use spamwall::{
    bans::Source,
    control::{ListRequest, ListSort, MAX_NEWEST, Request, Response},
};
use spamwall_tests::{
    daemon::{Daemon, Settings, spamwall, spamwall_bin},
    netns::{NetnsPair, Side, Subnet, run_bounded},
    require_root,
    skip::require,
};

/// The user `top` runs as: not the daemon's (65534), in no group but the
/// one the test gives it.
const VIEWER: &str = "4242";
/// The daemon's group, which owns the control socket.
const SOCKET_GROUP: &str = "65534";
/// How long the screen may take to show what the test waits for.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A detached tmux session on a server of its own (which ends with it),
/// killed by name on drop.
struct Tmux {
    server: String,
    session: String,
}

impl Tmux {
    /// Starts `command` (a shell line) in a new 120 × 40 session.
    fn start(name: &str, command: &str) -> Self {
        let tmux = Self {
            server: format!("spamwall-test-{}-{name}", std::process::id()),
            session: name.to_owned(),
        };
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "120",
            "-y",
            "40",
            command,
        ]);
        // Keep the pane (and its last screen) when the command ends.
        tmux.run(&["set-option", "-t", name, "remain-on-exit", "on"]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let output = run_bounded(
            Command::new("tmux")
                .args(["-L", &self.server])
                .args(args)
                .env("TERM", "xterm-256color"),
            Duration::from_secs(10),
        );
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The pane's text as it is on screen now.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &self.session])
    }

    /// A tmux format of the pane, e.g. `#{alternate_on}`.
    fn format(&self, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", &self.session, format])
            .trim()
            .to_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Waits (bounded) until the screen satisfies `done`; returns it.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                started.elapsed() < SCREEN_TIMEOUT,
                "{what}: not on screen within {SCREEN_TIMEOUT:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // No panic here: this also runs while a failed test unwinds.
        let _ = Command::new("tmux")
            .args(["-L", &self.server, "kill-session", "-t", &self.session])
            .status();
    }
}

/// The shell line that runs `top` as [`VIEWER`] with `groups` (none when
/// empty), then says how it ended and in which terminal modes.
fn top_line(socket: &Path, groups: &str) -> String {
    let groups = if groups.is_empty() {
        "--clear-groups".to_owned()
    } else {
        format!("--groups={groups}")
    };
    format!(
        "setpriv --reuid={VIEWER} --regid={VIEWER} {groups} -- {} --socket {} top; \
         echo \"top exited with $?\"; \
         echo \"terminal modes: $(stty -a | tr ' ;' '\\n\\n' \
           | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' ')(end)\"; \
         sleep 600",
        spamwall_bin().display(),
        socket.display()
    )
}

/// The PACKETS column of a `cli` ban's row (it follows SOURCE).
fn packets_of_cli_ban(row: &str, screen: &str) -> u64 {
    row.split_whitespace()
        .skip_while(|word| *word != "cli")
        .nth(1)
        .and_then(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {row:?}:\n{screen}"))
}

/// The total of the `dropped IPv4` row of the traffic panel.
fn dropped_v4_total(screen: &str) -> u64 {
    let line = screen
        .lines()
        .find(|line| line.contains("dropped IPv4"))
        .unwrap_or_else(|| panic!("no dropped IPv4 row:\n{screen}"));
    let after = &line[line.find("dropped IPv4").unwrap()..];
    after
        .split_whitespace()
        .nth(3)
        .and_then(|total| {
            let digits: String = total.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no total in {line:?}"))
}

/// What the panels read, asked directly: the newest first (`newest` was
/// banned last, after one other ban), a limit past the cap and one feed's
/// newest refused, the bans per source.
fn assert_panel_requests(daemon: &Daemon, newest: &str) {
    let newest_first = |limit| {
        daemon.request(&Request::List(ListRequest {
            limit: Some(limit),
            stream: true,
            sort: Some(ListSort::Newest),
            ..ListRequest::default()
        }))
    };
    match newest_first(1) {
        Response::BanChunk { bans } => {
            assert_eq!(bans.len(), 1);
            assert_eq!(bans[0].addr.to_string(), format!("{newest}/32"));
            assert_eq!(bans[0].reason, "the newest ban");
        }
        other => panic!("newest bans: {other:?}"),
    }
    match newest_first(MAX_NEWEST + 1) {
        Response::Error { message } => assert!(message.contains("at most 1000"), "{message}"),
        other => panic!("a limit past the cap: {other:?}"),
    }
    // The ranking walks the index, which knows sources, not feed names.
    match daemon.request(&Request::List(ListRequest {
        limit: Some(1),
        stream: true,
        sort: Some(ListSort::Newest),
        feed: Some("spamhaus-drop".to_owned()),
        ..ListRequest::default()
    })) {
        Response::Error { message } => assert_eq!(
            message,
            "a list sorted by newest takes a source, not one feed"
        ),
        other => panic!("newest of one feed: {other:?}"),
    }
    match daemon.request(&Request::BansBySource) {
        Response::BansBySource { sources } => {
            let cli = sources.iter().find(|s| s.source == Source::Cli).unwrap();
            assert_eq!(cli.bans, 2, "{sources:?}");
            assert_eq!(
                sources.iter().map(|s| s.bans).sum::<u64>(),
                2,
                "{sources:?}"
            );
        }
        other => panic!("bans by source: {other:?}"),
    }
}

fn tmux_ready(test: &str) -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|out| out.status.success());
    require(
        test,
        found,
        "tmux (cargo xtask setup, or apt-get install tmux)",
    )
}

#[test]
fn top_shows_moving_figures_unbans_after_a_confirmation_and_restores_the_terminal() {
    let test = "top_shows_moving_figures_unbans_after_a_confirmation_and_restores_the_terminal";
    if !require_root(test) || !tmux_ready(test) {
        return;
    }
    let net = NetnsPair::new(Subnet::test_net_1(151));
    let mut settings = Settings::on(net.server());
    settings.run_as = Some(SOCKET_GROUP.to_owned());
    let daemon = Daemon::start(net.server(), &settings);
    // As RuntimeDirectoryMode=0750 leaves /run/spamwall: the group may
    // reach the socket.
    std::fs::set_permissions(daemon.dir(), std::fs::Permissions::from_mode(0o750)).unwrap();
    let client = net.client_v4().to_string();
    daemon.cli_ok(&["ban", &client, "--reason", "flooding in the top test"]);

    // Not in the socket's group: the error is on screen, not a crash.
    let outsider = Tmux::start("top-outsider", &top_line(daemon.socket(), ""));
    let screen = outsider.wait_for("the permission error", |s| s.contains("ERROR"));
    assert!(
        screen.contains("Permission denied") && screen.contains("control.sock"),
        "{screen}"
    );
    outsider.keys(&["q"]);
    let end = outsider.wait_for("the end of top", |s| s.contains("(end)"));
    assert!(end.contains("top exited with 0"), "{end}");
    drop(outsider);

    let tmux = Tmux::start("top-member", &top_line(daemon.socket(), SOCKET_GROUP));
    let first = tmux.wait_for("the client's ban and a rate", |s| {
        s.contains(&client) && s.contains("/s") && !s.contains("…/s")
    });
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "1",
        "top uses the alternate screen"
    );
    assert!(first.contains("flooding in the top test"), "{first}");
    assert!(first.contains("latest offence first"), "{first}");
    assert!(first.contains("xdp: up"), "the backend panel:\n{first}");
    let before = dropped_v4_total(&first);

    // Traffic from the banned client, bounded: 200 pings in about 1 s.
    let server = net.server_v4().to_string();
    net.exec_in(
        Side::Client,
        &["ping", "-q", "-c", "200", "-i", "0.005", "-W", "1", &server],
        Duration::from_secs(10),
    );
    let newest = "198.51.100.77";
    daemon.cli_ok(&["ban", newest, "--reason", "the newest ban"]);
    let second = tmux.wait_for("the drops and the newest ban", |s| {
        s.contains(newest) && dropped_v4_total(s) >= before + 200
    });
    let rows: Vec<&str> = second
        .lines()
        .filter(|line| line.contains(newest) || line.contains(&client))
        .collect();
    assert!(
        rows.len() == 2 && rows[0].contains(newest) && rows[0].contains("> "),
        "the newest ban comes first and is selected:\n{second}"
    );
    // The client's row counts the pings its ban dropped.
    assert!(
        packets_of_cli_ban(rows[1], &second) >= 200,
        "the pings were not counted:\n{second}"
    );

    assert_panel_requests(&daemon, newest);

    // Unban: asked first; no keeps it.
    tmux.keys(&["u"]);
    tmux.wait_for("the confirmation", |s| {
        s.contains(&format!("unban {newest}? y: yes"))
    });
    tmux.keys(&["n"]);
    tmux.wait_for("the refusal", |s| {
        s.contains(&format!("{newest} left banned"))
    });
    assert!(
        daemon.list().iter().any(|ban| ban["addr"] == newest),
        "still banned after n"
    );
    tmux.keys(&["u"]);
    tmux.wait_for("the confirmation", |s| {
        s.contains(&format!("unban {newest}? y: yes"))
    });
    tmux.keys(&["y"]);
    tmux.wait_for("the unban", |s| s.contains(&format!("{newest} unbanned")));
    let listed: Vec<String> = daemon
        .list()
        .iter()
        .map(|ban| ban["addr"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, std::slice::from_ref(&client));
    tmux.wait_for("the list without it", |s| {
        !s.contains(&format!("{newest}  "))
    });

    // The other order, then down to the last row and back.
    tmux.keys(&["s"]);
    tmux.wait_for("the packets order", |s| s.contains("most packets first"));
    tmux.keys(&["Down", "Up"]);

    tmux.keys(&["q"]);
    let end = tmux.wait_for("the end of top", |s| s.contains("(end)"));
    assert!(end.contains("top exited with 0"), "{end}");
    assert!(
        end.contains("terminal modes: icanon echo (end)"),
        "the terminal is back in cooked mode with echo:\n{end}"
    );
    assert!(!end.contains("dropped IPv4"), "the view is gone:\n{end}");
    assert_eq!(tmux.format("#{alternate_on}"), "0", "alternate screen left");
    assert_eq!(tmux.format("#{cursor_flag}"), "1", "cursor shown");
}

/// The processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).contains(needle))
        })
        .collect()
}

/// A terminal that hangs up (the window closed, the SSH session gone)
/// ends `top`, although no SIGHUP reaches it (only the session's leader,
/// the shell, gets one): it does not stay behind spinning on a dead
/// terminal.
#[test]
fn top_ends_when_its_terminal_hangs_up() {
    let test = "top_ends_when_its_terminal_hangs_up";
    if !require_root(test) || !tmux_ready(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Readable by the viewer, so its error is the missing socket; the
    // path also names the process.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("hangup-test.sock");
    let needle = socket.to_str().unwrap().to_owned();
    let tmux = Tmux::start("top-hangup", &top_line(&socket, ""));
    tmux.wait_for("the error line", |s| s.contains("ERROR"));
    let running = processes_with(&needle);
    assert!(!running.is_empty(), "top is not running");
    // The session ends: its terminal hangs up.
    drop(tmux);
    let started = Instant::now();
    while !processes_with(&needle).is_empty() {
        if started.elapsed() > Duration::from_secs(5) {
            let left = processes_with(&needle);
            for pid in &left {
                // SAFETY: plain kill(2) of a process this test started.
                unsafe { libc::kill(libc::pid_t::try_from(*pid).unwrap(), libc::SIGKILL) };
            }
            panic!("top still runs 5 s after its terminal hung up: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn top_without_a_terminal_says_what_to_use_instead() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let output = spamwall(["--socket".as_ref(), socket.as_os_str(), "top".as_ref()]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("top needs a terminal; use stats --json"),
        "{stderr}"
    );
}
