//! The daemon started in-process, without root: XDP left out of
//! `ban.backends`, the control socket and the store in a temporary
//! directory. Bans, lists and unbans through the control protocol, reloads
//! and stops on events.

use std::{path::Path, time::Duration};

use spamwall::{
    config::Config,
    control::{self, Request, Response},
    daemon::{self, Event},
};
use tokio::sync::{mpsc, oneshot};

/// Longest wait for the daemon to answer or stop.
const DEADLINE: Duration = Duration::from_secs(30);

fn config(dir: &Path, allowlist: &str) -> Config {
    let text = format!(
        "[daemon]\ncontrol_socket = {socket:?}\nstate_dir = {state:?}\n\
         [ban]\nbackends = [\"fail2ban\"]\nallowlist = [{allowlist}]\n\
         [fail2ban]\nsocket = {fail2ban:?}\n\
         [policy]\nlisten = []\n",
        socket = dir.join("control.sock").display().to_string(),
        state = dir.join("state").display().to_string(),
        fail2ban = dir.join("no-fail2ban.sock").display().to_string(),
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("test configuration: {e:?}"))
}

/// One control request, from a blocking thread as the CLI makes it.
async fn ask(socket: &Path, request: Request) -> Response {
    let socket = socket.to_owned();
    tokio::task::spawn_blocking(move || control::request(&socket, &request))
        .await
        .expect("the request thread")
        .unwrap_or_else(|e| panic!("control request: {e}"))
}

fn listed(response: &Response) -> Vec<String> {
    let Response::Bans { bans } = response else {
        panic!("not a list: {response:?}");
    };
    bans.iter()
        .map(|ban| spamwall::bans::target_to_string(&ban.addr))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_in_process_and_answers_the_control_protocol() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spamwall.toml");
    let config = config(dir.path(), "");
    let socket = config.daemon.control_socket.clone();
    let control = control::bind(&socket).expect("binding the control socket");
    let (events, receive) = mpsc::channel(4);
    let (ready, is_ready) = oneshot::channel();
    let daemon = tokio::spawn(daemon::run(
        path.clone(),
        config,
        control,
        receive,
        move || {
            let _ = ready.send(());
        },
    ));
    tokio::time::timeout(DEADLINE, is_ready)
        .await
        .expect("ready within the deadline")
        .expect("ready was called");

    let banned = ask(
        &socket,
        Request::Ban {
            targets: vec!["192.0.2.7".into(), "2001:db8::/64".into(), "nope".into()],
            length: spamwall::bans::BanLength::Default,
            reason: "in-process test".into(),
            force: false,
        },
    )
    .await;
    let Response::Banned { banned, refused } = banned else {
        panic!("not a ban answer: {banned:?}");
    };
    assert_eq!(banned.len(), 2, "{banned:?}");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].reason.contains("nope"), "{refused:?}");
    assert_eq!(
        listed(&ask(&socket, Request::List(control::ListRequest::default())).await),
        ["192.0.2.7", "2001:db8::/64"]
    );

    let unbanned = ask(
        &socket,
        Request::Unban {
            targets: vec!["192.0.2.7".into()],
        },
    )
    .await;
    assert!(
        matches!(&unbanned, Response::Unbanned { unbanned, .. } if unbanned == &["192.0.2.7"]),
        "{unbanned:?}"
    );
    assert_eq!(
        listed(&ask(&socket, Request::List(control::ListRequest::default())).await),
        ["2001:db8::/64"]
    );
    let Response::Status { status } = ask(&socket, Request::Status).await else {
        panic!("no status");
    };
    assert!(
        status.backends[0].detail.contains("not in ban.backends"),
        "{status:?}"
    );

    // A reload that allowlists the remaining prefix lifts it.
    std::fs::write(
        &path,
        format!(
            "[daemon]\ncontrol_socket = {:?}\nstate_dir = {:?}\n[ban]\nbackends = [\"fail2ban\"]\n\
             allowlist = [\"2001:db8::/48\"]\n[fail2ban]\nsocket = {:?}\n[policy]\nlisten = []\n",
            socket.display().to_string(),
            dir.path().join("state").display().to_string(),
            dir.path().join("no-fail2ban.sock").display().to_string(),
        ),
    )
    .expect("rewriting the configuration");
    events.send(Event::Reload).await.expect("reload sent");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !listed(&ask(&socket, Request::List(control::ListRequest::default())).await).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload did not lift the allowlisted prefix"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    events.send(Event::Stop).await.expect("stop sent");
    tokio::time::timeout(DEADLINE, daemon)
        .await
        .expect("stopped within the deadline")
        .expect("the daemon task")
        .expect("the daemon ran without error");
    assert!(!socket.exists(), "the control socket is removed on exit");
}
