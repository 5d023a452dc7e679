//! The state of `top` and what each key does to it, without a terminal.

use std::time::{Duration, Instant};

use crate::control::ListSort;

use super::fetch::{News, Snapshot};

/// Packets per second of the counters `top` shows, between two refreshes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub dropped_v4: f64,
    pub dropped_v6: f64,
    pub passed: f64,
}

/// What the view does after a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Quit,
    /// Ask for the bans in this order.
    Sort(ListSort),
    /// Lift the ban on this target (confirmed).
    Unban(String),
}

/// A key, as far as `top` tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Up,
    Down,
    Esc,
    Enter,
    /// Ctrl-C.
    Interrupt,
    Other,
}

/// Everything on the screen.
#[derive(Debug)]
pub struct App {
    pub sort: ListSort,
    /// Index into the bans of the latest snapshot.
    pub selected: usize,
    /// The target an unban waits to be confirmed for.
    pub confirming: Option<String>,
    /// The last word of an unban or a refusal.
    pub message: Option<String>,
    pub snapshot: Option<Snapshot>,
    /// `None` until two snapshots were read.
    pub rates: Option<Rates>,
    /// Why the last read failed; cleared by the next good one.
    pub error: Option<String>,
    /// When the last good snapshot came.
    pub fresh_at: Option<Instant>,
    /// Figures older than this are called stale.
    pub stale_after: Duration,
}

impl App {
    /// The state before the first read; reads come every `interval`.
    pub fn new(sort: ListSort, interval: Duration) -> Self {
        Self {
            sort,
            selected: 0,
            confirming: None,
            message: None,
            snapshot: None,
            rates: None,
            error: None,
            fresh_at: None,
            stale_after: interval * 2 + Duration::from_secs(1),
        }
    }

    /// Takes in what the fetching thread says.
    pub fn news(&mut self, news: News) {
        match news {
            News::Snapshot(next) => {
                if let Some(previous) = &self.snapshot {
                    self.rates = rates(previous, &next);
                }
                self.fresh_at = Some(next.taken);
                self.error = None;
                self.selected = self.selected.min(next.bans.len().saturating_sub(1));
                self.snapshot = Some(*next);
            }
            News::Failed(error) => self.error = Some(error),
            News::Unbanned(message) => self.message = Some(message),
        }
    }

    /// What `key` does.
    pub fn key(&mut self, key: Key) -> Action {
        if let Some(target) = self.confirming.take() {
            return match key {
                Key::Char('y' | 'Y') => {
                    self.message = Some(format!("unbanning {target}…"));
                    Action::Unban(target)
                }
                Key::Interrupt => Action::Quit,
                _ => {
                    self.message = Some(format!("{target} left banned"));
                    Action::Nothing
                }
            };
        }
        match key {
            Key::Char('q' | 'Q') | Key::Esc | Key::Interrupt => Action::Quit,
            Key::Char('s' | 'S') => {
                self.sort = next_sort(self.sort);
                self.selected = 0;
                Action::Sort(self.sort)
            }
            Key::Up => {
                self.selected = self.selected.saturating_sub(1);
                Action::Nothing
            }
            Key::Down => {
                let last = self.bans_len().saturating_sub(1);
                self.selected = (self.selected + 1).min(last);
                Action::Nothing
            }
            Key::Char('u' | 'U') => {
                match self.selected_addr() {
                    Some(addr) => self.confirming = Some(addr),
                    None => self.message = Some("no ban selected".to_owned()),
                }
                Action::Nothing
            }
            _ => Action::Nothing,
        }
    }

    fn bans_len(&self) -> usize {
        self.snapshot.as_ref().map_or(0, |s| s.bans.len())
    }

    /// The target of the selected ban.
    pub fn selected_addr(&self) -> Option<String> {
        self.snapshot
            .as_ref()
            .and_then(|s| s.bans.get(self.selected))
            .map(|ban| ban.addr.clone())
    }
}

/// The order after `sort` when `s` is pressed.
pub const fn next_sort(sort: ListSort) -> ListSort {
    match sort {
        ListSort::Newest => ListSort::Packets,
        ListSort::Packets => ListSort::Newest,
    }
}

/// Per-second rates between two snapshots; `None` when no time passed.
/// A counter that went down (the maps were recreated) reads as 0.
pub fn rates(before: &Snapshot, after: &Snapshot) -> Option<Rates> {
    let secs = after
        .taken
        .checked_duration_since(before.taken)?
        .as_secs_f64();
    if secs <= 0.0 {
        return None;
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "a rate on screen needs no more than 52 bits"
    )]
    let per_sec = |name: &str| {
        let then = counter(before, name);
        let now = counter(after, name);
        now.saturating_sub(then) as f64 / secs
    };
    Some(Rates {
        dropped_v4: per_sec("dropped_v4"),
        dropped_v6: per_sec("dropped_v6"),
        passed: per_sec("passed"),
    })
}

/// The packet counter called `name` in `stats`.
pub fn counter(snapshot: &Snapshot, name: &str) -> u64 {
    snapshot
        .stats
        .packets
        .iter()
        .find(|(counter, _)| counter.name() == name)
        .map_or(0, |(_, value)| value)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cli::top::fetch::TopBan;

    /// A snapshot `at` seconds after `start` whose counters are read from
    /// `packets` (JSON members of `stats`).
    pub(crate) fn snapshot(start: Instant, at: u64, packets: &str, bans: &[&str]) -> Snapshot {
        let stats = serde_json::from_str(&format!(
            r#"{{"bans_active":0,"bans_v4":0,"bans_v6":0,"prefixes_v4":0,"prefixes_v6":0,"evicted":0,"backend_errors":0,"queue_depth":0,"policy_requests":0{packets}}}"#
        ))
        .expect("stats");
        let daemon_status = serde_json::from_value(serde_json::json!({
            "version": "0.1.0", "pid": 1, "started_at": "2026-12-06T00:00:00Z",
            "config": "/etc/spamwall/spamwall.toml", "pin_dir": "/sys/fs/bpf/spamwall",
            "program_id": 7, "ports": [], "bans_active": 0, "capacity_v4": 1,
            "capacity_v6": 1, "capacity_prefix_v4": 1, "capacity_prefix_v6": 1,
            "allowlist": [], "default_bantime": "1h", "store": "/var/lib/spamwall/spamwall.db",
            "interfaces": [], "backends": [],
        }))
        .expect("status");
        Snapshot {
            taken: start + Duration::from_secs(at),
            stats,
            status: daemon_status,
            sources: Vec::new(),
            bans: bans
                .iter()
                .map(|addr| TopBan {
                    addr: (*addr).to_owned(),
                    source: "cli".into(),
                    ..TopBan::default()
                })
                .collect(),
        }
    }

    #[test]
    fn rates_are_differences_per_second_and_never_negative() {
        let start = Instant::now();
        let before = snapshot(
            start,
            0,
            r#","dropped_v4":100,"dropped_v6":5,"passed":10"#,
            &[],
        );
        let after = snapshot(
            start,
            2,
            r#","dropped_v4":300,"dropped_v6":1,"passed":10"#,
            &[],
        );
        let rates = rates(&before, &after).expect("time passed");
        assert!((rates.dropped_v4 - 100.0).abs() < 1e-9, "{rates:?}");
        assert!(rates.dropped_v6.abs() < 1e-9, "a counter reset reads as 0");
        assert!(rates.passed.abs() < 1e-9);
        assert_eq!(super::rates(&after, &before), None, "out of order");
        assert_eq!(super::rates(&after, &after), None, "no time passed");
    }

    #[test]
    fn keys_select_sort_confirm_and_quit() {
        let start = Instant::now();
        let mut app = App::new(ListSort::Newest, Duration::from_secs(1));
        assert_eq!(app.key(Key::Char('u')), Action::Nothing);
        assert_eq!(app.message.as_deref(), Some("no ban selected"));
        app.news(News::Snapshot(Box::new(snapshot(
            start,
            0,
            "",
            &["192.0.2.1", "192.0.2.2", "2001:db8::/64"],
        ))));
        assert_eq!(app.key(Key::Up), Action::Nothing);
        assert_eq!(app.selected, 0);
        for _ in 0..5 {
            app.key(Key::Down);
        }
        assert_eq!(app.selected, 2, "stops at the last ban");
        // Refused: nothing sent.
        assert_eq!(app.key(Key::Char('u')), Action::Nothing);
        assert_eq!(app.confirming.as_deref(), Some("2001:db8::/64"));
        assert_eq!(app.key(Key::Char('q')), Action::Nothing, "q answers no");
        assert_eq!(app.confirming, None);
        assert_eq!(app.message.as_deref(), Some("2001:db8::/64 left banned"));
        app.key(Key::Up);
        app.key(Key::Char('u'));
        assert_eq!(app.key(Key::Char('y')), Action::Unban("192.0.2.2".into()));
        // The list shrinks: the selection follows.
        app.news(News::Snapshot(Box::new(snapshot(
            start,
            1,
            "",
            &["192.0.2.1"],
        ))));
        assert_eq!(app.selected, 0);
        assert_eq!(app.key(Key::Char('s')), Action::Sort(ListSort::Packets));
        assert_eq!(app.key(Key::Char('s')), Action::Sort(ListSort::Newest));
        app.news(News::Failed("daemon gone".into()));
        assert_eq!(app.error.as_deref(), Some("daemon gone"));
        assert!(app.snapshot.is_some(), "the last figures stay");
        assert_eq!(app.key(Key::Esc), Action::Quit);
        assert_eq!(app.key(Key::Interrupt), Action::Quit);
        assert_eq!(app.key(Key::Char('q')), Action::Quit);
    }
}
