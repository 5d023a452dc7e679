//! A real HTTP server for blocklist feeds: `tests/feeds/feed_server.py`
//! (Python's `http.server`) on loopback inside a network namespace,
//! serving the files of a temporary directory with `ETag` and `Last-Modified`
//! and answering 304 to conditional requests; every request it gets is
//! logged, so a test sees what the daemon asked.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::netns::{in_netns, terminate};

/// The running server; killed (by pid) on drop.
#[derive(Debug)]
pub struct FeedServer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

/// One request as the server logged it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub path: String,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub status: u16,
    /// When the server answered (wall clock).
    pub at: std::time::SystemTime,
}

impl FeedServer {
    /// Starts the server on 127.0.0.1 of namespace `netns` (the host's
    /// when `None`).
    ///
    /// # Panics
    /// When the server cannot start or prints no port.
    pub fn start(netns: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("spamwall-feeds-")
            .tempdir()
            .expect("creating the feed directory");
        fs::create_dir(dir.path().join("files")).expect("creating the served directory");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("feeds/feed_server.py");
        let mut command = match netns {
            Some(ns) => in_netns(ns, "python3"),
            None => Command::new("python3"),
        };
        let mut child = command
            .arg(&script)
            .arg(dir.path().join("files"))
            .arg(dir.path().join("requests.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the server's port");
        let Ok(port) = line.trim().parse() else {
            terminate(&mut child, Duration::from_secs(2));
            panic!("the feed server printed {line:?}, not its port");
        };
        Self { child, dir, port }
    }

    /// The URL of the served file `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// The served file `name` (written by [`FeedServer::serve`]).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join("files").join(name)
    }

    /// Serves `body` as `name`, replacing what was there, with a
    /// modification time one second after the last so If-Modified-Since
    /// sees the change.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn serve(&self, name: &str, body: &[u8]) {
        let path = self.file(name);
        let before = fs::metadata(&path).and_then(|m| m.modified()).ok();
        fs::write(&path, body).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        if let Some(before) = before {
            let after = before + Duration::from_secs(1);
            let file = fs::File::options()
                .write(true)
                .open(&path)
                .expect("reopening the served file");
            file.set_modified(after.max(std::time::SystemTime::now()))
                .expect("setting the modification time");
        }
    }

    /// Answers `status` for `name` until [`FeedServer::heal`].
    ///
    /// # Panics
    /// When the status file cannot be written.
    pub fn break_with(&self, name: &str, status: u16) {
        let path = self.file(&format!("{name}.status"));
        fs::write(&path, status.to_string()).expect("writing the status file");
    }

    /// Serves `name` normally again.
    pub fn heal(&self, name: &str) {
        let _ = fs::remove_file(self.file(&format!("{name}.status")));
    }

    /// Every request so far, oldest first.
    ///
    /// # Panics
    /// When the server logged a line that is not JSON.
    pub fn requests(&self) -> Vec<Logged> {
        let text = fs::read_to_string(self.dir.path().join("requests.log")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let json: serde_json::Value = serde_json::from_str(line).expect("a logged request");
                let text = |key: &str| json[key].as_str().map(str::to_owned);
                Logged {
                    path: text("path").unwrap_or_default(),
                    if_none_match: text("if_none_match"),
                    if_modified_since: text("if_modified_since"),
                    status: json["status"]
                        .as_u64()
                        .and_then(|s| u16::try_from(s).ok())
                        .unwrap_or(0),
                    at: std::time::UNIX_EPOCH
                        + Duration::from_secs_f64(json["time"].as_f64().unwrap_or(0.0)),
                }
            })
            .collect()
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(2));
    }
}
