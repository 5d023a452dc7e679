//! The log watcher in the daemon: one thread per `[[logwatch.source]]`
//! follows it, applies the rules and bans through the [`BanSink`], then
//! saves its position in the store.
//!
//! Threads rather than tasks: reading files, `SQLite` and the ban manager
//! all block, so each source is a blocking loop that checks its stop flag
//! at least every [`POLL_INTERVAL`].

use std::{
    path::Path,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use ipnet::IpNet;
use tracing::{error, info, warn};

use super::{
    LogwatchConfig,
    filter::{LogLine, parse_line},
    rules::RuleSet,
    source::{FileFollower, JournalFollower, POLL_INTERVAL, SourceError},
};
use crate::bans::{BanSink, Source, store::Store};

/// How long before `journalctl` is started again after it exited.
const JOURNAL_RESTART: Duration = Duration::from_secs(5);

/// Lines of one source go through the rules to the ban sink.
struct Pipeline {
    source: String,
    rules: Arc<Mutex<RuleSet>>,
    sink: Arc<dyn BanSink>,
    lines: metrics::Counter,
    matches: metrics::Counter,
    dropped: metrics::Counter,
}

impl Pipeline {
    fn new(source: &str, rules: &Arc<Mutex<RuleSet>>, sink: &Arc<dyn BanSink>) -> Self {
        Self {
            source: source.to_owned(),
            rules: Arc::clone(rules),
            sink: Arc::clone(sink),
            lines: metrics::counter!("spamwall_logwatch_lines_total", "source" => source.to_owned()),
            matches: metrics::counter!("spamwall_logwatch_matches_total", "source" => source.to_owned()),
            dropped: metrics::counter!("spamwall_logwatch_dropped_lines_total", "source" => source.to_owned()),
        }
    }

    /// Counts `n` lines dropped whole for being too long.
    fn dropped(&self, n: u64) {
        if n > 0 {
            self.dropped.increment(n);
            warn!(
                source = %self.source,
                dropped = n,
                max_bytes = super::source::MAX_LINE,
                "over-long log lines dropped whole"
            );
        }
    }

    /// Applies the rules to one line of a file; a ban records the line.
    fn process_line(&self, line: &str) {
        let now = SystemTime::now();
        self.process(&parse_line(line, now), line, now);
    }

    /// Applies the rules to one parsed line; `reason` is what a ban
    /// records.
    fn process(&self, parsed: &LogLine<'_>, reason: &str, now: SystemTime) {
        let observation = self
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(&self.source, &parsed.text, reason, parsed.time, now);
        self.lines.increment(1);
        self.matches.increment(u64::from(observation.matches));
        for ban in observation.bans {
            match self.sink.ban(
                IpNet::from(ban.host),
                ban.length,
                Source::Logwatch,
                &ban.line,
                &ban.scope,
            ) {
                Ok(entry) => info!(
                    source = %self.source,
                    rule = ban.rule,
                    filter = %ban.filter,
                    host = %ban.host,
                    failures = ban.failures,
                    count = entry.count,
                    line = %ban.line,
                    "logwatch ban"
                ),
                Err(error) => info!(
                    source = %self.source,
                    rule = ban.rule,
                    host = %ban.host,
                    %error,
                    "logwatch ban refused"
                ),
            }
        }
    }
}

/// The running log watcher: stop it with [`Watcher::stop`].
#[derive(Debug, Default)]
pub struct Watcher {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Watcher {
    /// Starts one thread per source. Problems with one source (a rule that
    /// does not compile, no `journalctl`) are logged and leave the others
    /// running: the daemon's other verdict sources must not depend on them.
    pub fn start(config: &LogwatchConfig, store: &Arc<Store>, sink: &Arc<dyn BanSink>) -> Self {
        Self::start_with(config, store, sink, Path::new("journalctl"))
    }

    /// As [`Self::start`], with the `journalctl` program to run.
    pub fn start_with(
        config: &LogwatchConfig,
        store: &Arc<Store>,
        sink: &Arc<dyn BanSink>,
        journalctl: &Path,
    ) -> Self {
        let mut watcher = Self::default();
        if config.source.is_empty() {
            if !config.rule.is_empty() {
                warn!("[[logwatch.rule]] given but no [[logwatch.source]]: nothing is watched");
            }
            return watcher;
        }
        let rules = match RuleSet::new(config) {
            Ok(rules) => rules,
            Err(error) => {
                error!("log watcher not started: {error}");
                return watcher;
            }
        };
        if rules.is_empty() {
            warn!(
                "[[logwatch.source]] given but no [[logwatch.rule]]: lines are counted, nobody is banned"
            );
        }
        let rules = Arc::new(Mutex::new(rules));
        for source in &config.source {
            let pipeline = Pipeline::new(&source.name, &rules, sink);
            let stop = Arc::clone(&watcher.stop);
            let store = Arc::clone(store);
            let name = source.name.clone();
            let body: Box<dyn FnOnce() + Send> = match (&source.path, &source.journal) {
                (Some(path), _) => {
                    info!(source = %name, path = %path.display(), "following log file");
                    // Created here, before the daemon reports ready: a new
                    // file's starting point is fixed now.
                    let follower = FileFollower::new(&name, path, saved_position(&store, &name));
                    Box::new(move || follow_file(&name, follower, &store, &pipeline, &stop))
                }
                (None, Some(units)) => {
                    let cursor = saved_position(&store, &name).and_then(|p| p.cursor);
                    let follower = JournalFollower::new(&name, journalctl, units, cursor)
                        .in_namespace(source.journal_namespace.as_deref());
                    info!(
                        source = %name,
                        units = ?units,
                        namespace = source.journal_namespace.as_deref().unwrap_or("(system)"),
                        "following the journal"
                    );
                    Box::new(move || follow_journal(&name, follower, &store, &pipeline, &stop))
                }
                (None, None) => continue,
            };
            match std::thread::Builder::new()
                .name(format!("logwatch-{}", source.name))
                .spawn(body)
            {
                Ok(thread) => watcher.threads.push(thread),
                Err(error) => {
                    error!(source = %source.name, %error, "cannot start the log watcher thread");
                }
            }
        }
        watcher
    }

    /// Whether any source is followed.
    pub fn is_active(&self) -> bool {
        !self.threads.is_empty()
    }

    /// Stops every source (within about [`POLL_INTERVAL`]) and waits for
    /// them; positions are saved. Blocking.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn saved_position(store: &Store, name: &str) -> Option<crate::bans::store::LogPosition> {
    store.logwatch_position(name).unwrap_or_else(|error| {
        warn!(source = %name, %error, "no saved log position; starting afresh");
        None
    })
}

/// Sleeps `total` in [`POLL_INTERVAL`] steps; `false` when asked to stop.
fn pause(total: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + total;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL.min(until.saturating_duration_since(Instant::now())));
    }
    !stop.load(Ordering::Relaxed)
}

fn follow_file(
    name: &str,
    mut follower: FileFollower,
    store: &Store,
    pipeline: &Pipeline,
    stop: &AtomicBool,
) {
    let mut saved = None;
    let mut lines = Vec::new();
    let mut last_error: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let more = match follower.poll(&mut lines) {
            Ok(more) => {
                last_error = None;
                more
            }
            Err(error) => {
                let text = error.to_string();
                if last_error.as_ref() != Some(&text) {
                    warn!("{text}; retrying");
                    last_error = Some(text);
                }
                false
            }
        };
        for line in lines.drain(..) {
            pipeline.process_line(&line);
        }
        pipeline.dropped(follower.take_dropped());
        let position = follower.position();
        if position.inode != 0 && saved.as_ref() != Some(&position) {
            match store.put_logwatch_position(name, &position) {
                Ok(()) => saved = Some(position),
                Err(error) => warn!(source = %name, %error, "saving the log position failed"),
            }
        }
        if !more && !pause(POLL_INTERVAL, stop) {
            break;
        }
    }
}

fn follow_journal(
    name: &str,
    mut follower: JournalFollower,
    store: &Store,
    pipeline: &Pipeline,
    stop: &AtomicBool,
) {
    let mut saved = follower.position();
    let mut saved_at = Instant::now();
    let mut entries = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Err(error) = follower.start() {
            error!("{error}");
            if matches!(error, SourceError::JournalctlMissing { .. }) {
                return;
            }
            if !pause(JOURNAL_RESTART, stop) {
                break;
            }
            continue;
        }
        loop {
            let alive = follower.poll(&mut entries, POLL_INTERVAL);
            let now = SystemTime::now();
            for line in entries.drain(..).filter_map(|entry| entry.line) {
                pipeline.process(&line, &line.text, now);
            }
            pipeline.dropped(follower.take_dropped());
            let position = follower.position();
            if position != saved && (saved_at.elapsed() >= POLL_INTERVAL || !alive) {
                match store.put_logwatch_position(name, &position) {
                    Ok(()) => {
                        saved = position;
                        saved_at = Instant::now();
                    }
                    Err(error) => warn!(source = %name, %error, "saving the journal cursor failed"),
                }
            }
            if !alive || stop.load(Ordering::Relaxed) {
                break;
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        warn!(source = %name, "journalctl exited; starting it again in {JOURNAL_RESTART:?}");
        if !pause(JOURNAL_RESTART, stop) {
            break;
        }
    }
    follower.stop();
    let position = follower.position();
    if position != saved
        && let Err(error) = store.put_logwatch_position(name, &position)
    {
        warn!(source = %name, %error, "saving the journal cursor failed");
    }
}

#[cfg(test)]
mod tests {
    use std::{fs::OpenOptions, io::Write as _, net::IpAddr};

    use super::*;
    use crate::bans::{
        BanEntry, BanError, BanLength, BanManager, BanRequest, BanScope, RecordingSink as Recorder,
        XdpBackend,
    };
    use crate::config::Config;

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's path without a kernel: every ban goes to a real
    /// [`BanManager`] with its allowlist and store, and no dataplane; the
    /// manager's refusals are kept.
    struct ManagerSink {
        manager: Mutex<BanManager>,
        refused: Mutex<Vec<BanError>>,
    }

    impl ManagerSink {
        fn manager(&self) -> std::sync::MutexGuard<'_, BanManager> {
            self.manager.lock().unwrap_or_else(PoisonError::into_inner)
        }

        fn refused(&self) -> Vec<String> {
            let refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
            refused.iter().map(ToString::to_string).collect()
        }
    }

    impl BanSink for ManagerSink {
        fn ban(
            &self,
            target: IpNet,
            length: BanLength,
            source: Source,
            reason: &str,
            scope: &BanScope,
        ) -> Result<BanEntry, BanError> {
            let outcome = self
                .manager()
                .ban(BanRequest::new(target, length, source, reason, scope));
            if let Err(error) = &outcome {
                self.refused
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(error.clone());
            }
            outcome
        }
    }

    /// Lines appended to a followed file ban through the manager; a host
    /// in `ban.allowlist` is refused by the manager itself, not by the
    /// sink, and the saved position covers both lines.
    #[test]
    fn appended_lines_ban_allowlisted_hosts_are_refused_and_positions_persist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("mail.log");
        std::fs::write(&log, "").expect("create");
        let config = Config::parse(&format!(
            "[ban]\nallowlist = [\"198.51.100.0/24\"]\n\
             [[logwatch.source]]\nname = \"mail\"\npath = {:?}\n\
             [[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"rbl\"\nmaxretry = 1\n",
            log.display().to_string()
        ))
        .expect("config");
        let store = Arc::new(Store::open_in(&dir.path().join("state")).expect("store"));
        let xdp = XdpBackend {
            dataplane: None,
            enforcing: false,
            note: "no dataplane in a unit test".into(),
        };
        let manager =
            BanManager::new(Arc::clone(&store), xdp, None, config.ban_policy()).expect("manager");
        let bans = Arc::new(ManagerSink {
            manager: Mutex::new(manager),
            refused: Mutex::new(Vec::new()),
        });
        let sink: Arc<dyn BanSink> = bans.clone();
        let watcher = Watcher::start(&config.logwatch, &store, &sink);
        assert!(watcher.is_active());
        // No syslog date: a fixed one ages past `findtime` and the line
        // would be skipped before any ban is asked for.
        let allowlisted = "mx postfix/postscreen[9]: DNSBL rank 3 for [198.51.100.7]:4567\n";
        let banned = "postfix/postscreen[9]: DNSBL rank 3 for [2001:db8::5]:4567";
        let mut file = OpenOptions::new().append(true).open(&log).expect("open");
        file.write_all(allowlisted.as_bytes()).expect("append");
        file.write_all(format!("{banned}\n").as_bytes())
            .expect("append");
        wait_for("the saved position", || {
            store
                .logwatch_position("mail")
                .expect("get")
                .is_some_and(|p| p.offset == (allowlisted.len() + banned.len() + 1) as u64)
        });
        // The position is saved after both lines went through the rules.
        watcher.stop();
        let listed: Vec<(IpNet, Source, String)> = bans
            .manager()
            .list()
            .expect("list")
            .into_iter()
            .map(|entry| (entry.addr, entry.source, entry.reason))
            .collect();
        assert_eq!(
            listed,
            [(
                IpNet::from("2001:db8::5".parse::<IpAddr>().expect("ip")),
                Source::Logwatch,
                banned.to_owned()
            )],
            "the allowlisted 198.51.100.7 was banned, or the other was not"
        );
        let stored: Vec<IpNet> = store
            .all()
            .expect("store rows")
            .into_iter()
            .map(|row| row.target)
            .collect();
        assert_eq!(
            stored,
            [IpNet::from("2001:db8::5".parse::<IpAddr>().expect("ip"))],
            "the store holds only the ban the manager accepted"
        );
        assert_eq!(
            bans.refused(),
            ["198.51.100.7 is in the allowlist (198.51.100.0/24); not banned"],
            "the allowlisted line reached the manager and its allowlist refused it"
        );
    }

    #[test]
    fn journal_source_reason_is_the_message_and_missing_journalctl_is_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("journalctl");
        std::fs::write(
            &script,
            "#!/bin/sh\necho '{\"__CURSOR\":\"c9\",\"SYSLOG_IDENTIFIER\":\"postfix/postscreen\",\"_PID\":\"9\",\"MESSAGE\":\"DNSBL rank 3 for [198.51.100.4]:5\"}'\nexec sleep 30\n",
        )
        .expect("script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let config = Config::parse(
            "[[logwatch.source]]\nname = \"journal\"\njournal = [\"postfix@-.service\"]\n\
             [[logwatch.rule]]\nfilter = \"postfix\"\nmode = \"rbl\"\nmaxretry = 1\n",
        )
        .expect("config");
        let store = Arc::new(Store::open_in(dir.path()).expect("store"));
        let recorder = Arc::new(Recorder::default());
        let sink: Arc<dyn BanSink> = recorder.clone();
        let watcher = Watcher::start_with(&config.logwatch, &store, &sink, &script);
        wait_for("the journal ban", || !recorder.recorded().is_empty());
        wait_for("the saved cursor", || {
            store
                .logwatch_position("journal")
                .expect("get")
                .is_some_and(|p| p.cursor.as_deref() == Some("c9"))
        });
        watcher.stop();
        assert_eq!(
            recorder.recorded()[0].3,
            "postfix/postscreen[9]: DNSBL rank 3 for [198.51.100.4]:5"
        );
        let missing = Watcher::start_with(
            &config.logwatch,
            &store,
            &sink,
            Path::new("/nonexistent/journalctl"),
        );
        missing.stop();
    }
}
