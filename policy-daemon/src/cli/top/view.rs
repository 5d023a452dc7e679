//! How `top` draws its state: a title line, three panels of figures, the
//! bans table and a line of keys. Every text that comes from the daemon is
//! escaped ([`printable`]).

use std::time::SystemTime;

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap},
};

use super::{
    app::{App, counter},
    fetch::{Snapshot, TopBan},
};
use crate::{cli::printable, control::ListSort};

/// Draws `app` over the whole frame.
pub fn draw(frame: &mut Frame, app: &App) {
    let reading = reading_line(app);
    let reading_height = match &reading {
        None => 0,
        Some(line) if line.width() > usize::from(frame.area().width) => 2,
        Some(_) => 1,
    };
    let [title, reading_area, figures, bans, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(reading_height),
        Constraint::Length(8),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(title_line(app)), title);
    if let Some(line) = reading {
        frame.render_widget(Paragraph::new(line).wrap(Wrap { trim: true }), reading_area);
    }
    let [traffic, sources, health] = Layout::horizontal([
        Constraint::Length(40),
        Constraint::Length(24),
        Constraint::Min(20),
    ])
    .areas(figures);
    frame.render_widget(
        Paragraph::new(traffic_lines(app)).block(panel("traffic")),
        traffic,
    );
    frame.render_widget(
        Paragraph::new(source_lines(app)).block(panel("bans by source")),
        sources,
    );
    frame.render_widget(
        Paragraph::new(health_lines(app)).block(panel("backends and fleet")),
        health,
    );
    draw_bans(frame, app, bans);
    frame.render_widget(Paragraph::new(key_line(app)), keys);
}

fn panel(title: &str) -> Block<'_> {
    Block::default().borders(Borders::ALL).title(title)
}

fn title_line(app: &App) -> String {
    match &app.snapshot {
        Some(s) => format!(
            "spamwall top · daemon {} pid {} · up since {} · {} bans active",
            printable(&s.status.version),
            s.status.pid,
            printable(&s.status.started_at),
            s.stats.bans_active
        ),
        None => "spamwall top · waiting for the daemon".to_owned(),
    }
}

/// Why the figures are not fresh, if they are not: the last read's error
/// (the figures shown are older), or how long the daemon has been silent.
fn reading_line(app: &App) -> Option<Line<'static>> {
    if let Some(error) = &app.error {
        return Some(
            Line::from(format!("ERROR: {}", printable(error)))
                .style(Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED)),
        );
    }
    let age = app.fresh_at?.elapsed();
    (age > app.stale_after)
        .then(|| Line::from(format!("no answer from the daemon for {} s", age.as_secs())))
}

fn traffic_lines(app: &App) -> Vec<Line<'static>> {
    let Some(snapshot) = &app.snapshot else {
        return Vec::new();
    };
    let rate = |value: Option<f64>| value.map_or_else(|| "…".to_owned(), |v| format!("{v:.0}"));
    let rates = app.rates;
    let row = |name: &str, per_sec: Option<f64>, counter_name: &str| {
        Line::from(format!(
            "{name:<13}{:>8}/s {:>14}",
            rate(per_sec),
            counter(snapshot, counter_name)
        ))
    };
    vec![
        Line::from(format!("{:<13}{:>10} {:>14}", "", "rate", "total")),
        row("dropped IPv4", rates.map(|r| r.dropped_v4), "dropped_v4"),
        row("dropped IPv6", rates.map(|r| r.dropped_v6), "dropped_v6"),
        row("passed", rates.map(|r| r.passed), "passed"),
        Line::from(format!(
            "bans: {} IPv4, {} IPv6, {} prefixes",
            snapshot.stats.bans_v4,
            snapshot.stats.bans_v6,
            snapshot.stats.prefixes_v4 + snapshot.stats.prefixes_v6
        )),
        Line::from(format!("evicted from the maps: {}", snapshot.stats.evicted)),
    ]
}

fn source_lines(app: &App) -> Vec<Line<'static>> {
    let Some(snapshot) = &app.snapshot else {
        return Vec::new();
    };
    snapshot
        .sources
        .iter()
        .map(|source| Line::from(format!("{:<10}{:>11}", source.source.as_str(), source.bans)))
        .collect()
}

fn health_lines(app: &App) -> Vec<Line<'static>> {
    let Some(snapshot) = &app.snapshot else {
        return Vec::new();
    };
    let status = &snapshot.status;
    let mut lines: Vec<Line<'static>> = status
        .backends
        .iter()
        .map(|backend| {
            let queue = backend
                .queue_depth
                .map(|depth| format!(", {depth} queued"))
                .unwrap_or_default();
            Line::from(format!(
                "{}: {}{queue} · {}",
                printable(&backend.name),
                if backend.active { "up" } else { "DOWN" },
                printable(&backend.detail)
            ))
        })
        .collect();
    if !status
        .backends
        .iter()
        .any(|backend| backend.name == "fleet")
    {
        lines.push(Line::from("fleet: off"));
    }
    let interfaces: Vec<String> = status
        .interfaces
        .iter()
        .map(|a| format!("{} ({})", printable(&a.interface), a.mode))
        .collect();
    lines.push(Line::from(format!(
        "interfaces: {}",
        if interfaces.is_empty() {
            "none".to_owned()
        } else {
            interfaces.join(", ")
        }
    )));
    lines.push(Line::from(format!(
        "backend errors: {} · fail2ban queue: {}",
        snapshot.stats.backend_errors, snapshot.stats.queue_depth
    )));
    lines.extend(
        status
            .feeds
            .iter()
            .map(|feed| Line::from(format!("feed {}", printable(feed)))),
    );
    lines
}

fn draw_bans(frame: &mut Frame, app: &App, area: Rect) {
    let order = match app.sort {
        ListSort::Newest => "latest offence first",
        ListSort::Packets => "most packets first",
    };
    let title = format!("bans · {order} (s: change order)");
    let rows: Vec<Row> = app
        .snapshot
        .as_ref()
        .map(|s: &Snapshot| {
            let now = SystemTime::now();
            s.bans.iter().map(|ban| ban_row(ban, now)).collect()
        })
        .unwrap_or_default();
    let table = Table::new(
        rows,
        [
            Constraint::Length(39),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Min(10),
        ],
    )
    .column_spacing(2)
    .header(
        Row::new([
            "ADDRESS", "SOURCE", "PACKETS", "LAST HIT", "EXPIRES", "REASON",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(panel(&title))
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
    .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(
        app.snapshot
            .as_ref()
            .is_some_and(|s| !s.bans.is_empty())
            .then_some(app.selected),
    );
    frame.render_stateful_widget(table, area, &mut state);
}

fn ban_row(ban: &TopBan, now: SystemTime) -> Row<'static> {
    Row::new([
        Cell::from(printable(&ban.addr).into_owned()),
        Cell::from(printable(&ban.source).into_owned()),
        Cell::from(Line::from(ban.packets.to_string()).right_aligned()),
        Cell::from(ban.last_hit.as_deref().map_or_else(
            || "never".to_owned(),
            |at| moment(at, now).map_or_else(|| "?".to_owned(), |ago| format!("{ago} ago")),
        )),
        Cell::from(ban.expires_at.as_deref().map_or_else(
            || "permanent".to_owned(),
            |at| moment(at, now).map_or_else(|| "?".to_owned(), |left| format!("in {left}")),
        )),
        Cell::from(printable(&ban.reason).into_owned()),
    ])
}

/// How far the RFC 3339 time `at` is from `now`, either way, in at most
/// two units (`42s`, `5m07s`, `3h05m`, `12d04h`); `None` when `at` is not a
/// time.
fn moment(at: &str, now: SystemTime) -> Option<String> {
    let at = humantime::parse_rfc3339_weak(at).ok()?;
    let secs = now
        .duration_since(at)
        .or_else(|_| at.duration_since(now))
        .map_or(0, |d| d.as_secs());
    Some(match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    })
}

fn key_line(app: &App) -> String {
    if let Some(target) = &app.confirming {
        return format!("unban {}? y: yes, any other key: no", printable(target));
    }
    let keys = "q quit · s order · ↑↓ select · u unban";
    match &app.message {
        Some(message) => format!("{keys} · {}", printable(message)),
        None => keys.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::cli::top::{app::tests::snapshot, fetch::News};

    fn screen(app: &App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(120, 30)).expect("terminal");
        terminal.draw(|frame| draw(frame, app)).expect("draw");
        let buffer = terminal.backend().buffer().clone();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn times_read_as_short_distances() {
        let now = humantime::parse_rfc3339("2026-12-06T18:00:00Z").expect("time");
        for (at, expected) in [
            ("2026-12-06T17:59:18Z", "42s"),
            ("2026-12-06T18:05:07Z", "5m07s"),
            ("2026-12-06T21:05:59Z", "3h05m"),
            ("2026-11-24T14:00:00Z", "12d04h"),
        ] {
            assert_eq!(moment(at, now).as_deref(), Some(expected), "{at}");
        }
        assert_eq!(moment("soon\u{1b}[2J", now), None);
    }

    #[test]
    fn figures_bans_and_the_confirmation_are_on_screen() {
        let start = Instant::now();
        let mut app = App::new(ListSort::Newest, std::time::Duration::from_secs(1));
        assert!(screen(&app).contains("waiting for the daemon"));
        app.news(News::Snapshot(Box::new(snapshot(
            start,
            0,
            r#","dropped_v4":10,"passed":1"#,
            &["192.0.2.7"],
        ))));
        let mut next = snapshot(
            start,
            1,
            r#","dropped_v4":2010,"passed":1"#,
            &["192.0.2.7", "2001:db8::/64"],
        );
        next.bans[0].reason = "spam\u{1b}[2J\r\nfake".into();
        next.bans[0].packets = 77;
        app.news(News::Snapshot(Box::new(next)));
        let text = screen(&app);
        for expected in [
            "dropped IPv4",
            "2000/s",
            "2010",
            "latest offence first",
            "192.0.2.7",
            "2001:db8::/64",
            "77",
            "spam\\u{1b}[2J",
            "q quit",
        ] {
            assert!(text.contains(expected), "{expected:?} missing:\n{text}");
        }
        assert!(!text.contains('\u{1b}'), "{text}");
        app.key(super::super::app::Key::Char('u'));
        assert!(screen(&app).contains("unban 192.0.2.7? y: yes"));
        app.news(News::Failed("cannot reach the spamwall daemon".into()));
        assert!(screen(&app).contains("ERROR: cannot reach the spamwall daemon"));
    }
}
