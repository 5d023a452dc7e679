//! A batch of bans laid out for one write: each target's text once, the
//! rows in the order of the primary key, and the upserts that carry them
//! [`ROWS_PER_INSERT`] at a time.
//!
//! Rows of one ban source usually share their text columns (a bulk ban:
//! one source, reason, detail and scope for every target). A statement
//! then binds those once instead of once per row: binding text copies it.

use std::{fmt::Write as _, sync::LazyLock};

use rusqlite::{
    CachedStatement,
    types::{ToSqlOutput, Value, ValueRef},
};

use super::{StoredBan, keys::Keys};

/// Rows one insert statement carries in a bulk write (9 parameters each,
/// well under `SQLite`'s limit of 32,766).
pub(super) const ROWS_PER_INSERT: usize = 128;

/// A column of `bans`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    Target,
    ExpiresAt,
    Source,
    Reason,
    Detail,
    Count,
    FirstBannedAt,
    LastBannedAt,
    Scope,
}

impl Column {
    /// Every column, in the order the upserts list them.
    const ALL: [Self; 9] = [
        Self::Target,
        Self::ExpiresAt,
        Self::Source,
        Self::Reason,
        Self::Detail,
        Self::Count,
        Self::FirstBannedAt,
        Self::LastBannedAt,
        Self::Scope,
    ];

    const fn name(self) -> &'static str {
        match self {
            Self::Target => "target",
            Self::ExpiresAt => "expires_at",
            Self::Source => "source",
            Self::Reason => "reason",
            Self::Detail => "detail",
            Self::Count => "count",
            Self::FirstBannedAt => "first_banned_at",
            Self::LastBannedAt => "last_banned_at",
            Self::Scope => "scope",
        }
    }

    /// The text columns that rows sharing them bind once.
    const fn shared(self) -> bool {
        matches!(
            self,
            Self::Source | Self::Reason | Self::Detail | Self::Scope
        )
    }
}

/// How many of [`Column::ALL`] are [`Column::shared`].
const SHARED: usize = {
    let mut n = 0;
    let mut c = 0;
    while c < Column::ALL.len() {
        if Column::ALL[c].shared() {
            n += 1;
        }
        c += 1;
    }
    n
};

/// For each column of [`Column::ALL`], its place among the shared
/// columns when it is shared, else among the others.
const PLACE: [usize; Column::ALL.len()] = {
    let mut place = [0; Column::ALL.len()];
    let (mut own, mut shared) = (0, 0);
    let mut c = 0;
    while c < Column::ALL.len() {
        if Column::ALL[c].shared() {
            place[c] = shared;
            shared += 1;
        } else {
            place[c] = own;
            own += 1;
        }
        c += 1;
    }
    place
};

/// The parameter (from 1) that carries column `c` (of [`Column::ALL`]) of
/// row `row` in an upsert of `rows` rows: row after row, each value its
/// own; with `sharing`, the rows' own values first, then the shared
/// columns once for all of them. The one numbering the statement's text
/// and [`Batch::bind`] both follow.
const fn parameter(c: usize, row: usize, rows: usize, sharing: bool) -> usize {
    let columns = Column::ALL.len();
    1 + if !sharing {
        row * columns + c
    } else if Column::ALL[c].shared() {
        rows * (columns - SHARED) + PLACE[c]
    } else {
        row * (columns - SHARED) + PLACE[c]
    }
}

/// An upsert of one row, each value its own parameter.
pub(super) static UPSERT_ONE: LazyLock<String> = LazyLock::new(|| upsert(1, false));

/// An upsert of [`ROWS_PER_INSERT`] rows, each value its own parameter.
pub(super) static UPSERT_MANY: LazyLock<String> = LazyLock::new(|| upsert(ROWS_PER_INSERT, false));

/// An upsert of [`ROWS_PER_INSERT`] rows that share the
/// [`Column::shared`] columns, bound once after the rows' own values.
pub(super) static UPSERT_SHARING: LazyLock<String> =
    LazyLock::new(|| upsert(ROWS_PER_INSERT, true));

/// The upsert of `rows` bans, its parameters numbered by [`parameter`].
fn upsert(rows: usize, sharing: bool) -> String {
    let names: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
    let mut text = format!("INSERT INTO bans ({}) VALUES ", names.join(", "));
    for row in 0..rows {
        if row > 0 {
            text.push(',');
        }
        text.push('(');
        for c in 0..Column::ALL.len() {
            if c > 0 {
                text.push(',');
            }
            let _ = write!(text, "?{}", parameter(c, row, rows, sharing));
        }
        text.push(')');
    }
    text.push_str(" ON CONFLICT (target) DO UPDATE SET ");
    let updates: Vec<String> = Column::ALL
        .iter()
        .filter(|&&column| column != Column::Target)
        .map(|column| format!("{name} = excluded.{name}", name = column.name()))
        .collect();
    text.push_str(&updates.join(", "));
    text
}

/// The rows of a write with their targets' text, and the order to write
/// them in.
pub(super) struct Batch<'a> {
    bans: &'a [StoredBan],
    keys: Keys,
    /// Positions in `bans`, in the order of the primary key; a target
    /// given twice keeps its order, so its last row is written last and
    /// stays.
    pub order: Vec<usize>,
}

impl<'a> Batch<'a> {
    pub fn new(bans: &'a [StoredBan]) -> Self {
        let keys = Keys::new(bans.iter().map(|ban| &ban.target));
        let order = keys.order();
        Self { bans, keys, order }
    }

    /// The text of the target of row `i`.
    pub fn key(&self, i: usize) -> &str {
        self.keys.key(i)
    }

    /// Whether every row at `rows` has the first one's
    /// [`Column::shared`] columns.
    pub fn shares_text(&self, rows: &[usize]) -> bool {
        let Some((&first, rest)) = rows.split_first() else {
            return true;
        };
        rest.iter().all(|&i| {
            Column::ALL
                .iter()
                .filter(|column| column.shared())
                .all(|&column| self.same(first, i, column))
        })
    }

    /// Whether rows `a` and `b` hold the same value in `column`.
    fn same(&self, a: usize, b: usize, column: Column) -> bool {
        let (a, b) = (&self.bans[a], &self.bans[b]);
        match column {
            Column::Target => a.target == b.target,
            Column::ExpiresAt => a.expires_at == b.expires_at,
            Column::Source => a.source == b.source,
            Column::Reason => a.reason == b.reason,
            Column::Detail => a.detail == b.detail,
            Column::Count => a.count == b.count,
            Column::FirstBannedAt => a.first_banned_at == b.first_banned_at,
            Column::LastBannedAt => a.last_banned_at == b.last_banned_at,
            Column::Scope => a.scope == b.scope,
        }
    }

    /// Binds the rows at `rows` to an upsert of as many, made by
    /// [`upsert`] with `sharing` as given (then [`Batch::shares_text`]
    /// must hold for them): the shared columns from the first row only.
    pub fn bind(
        &self,
        insert: &mut CachedStatement<'_>,
        rows: &[usize],
        sharing: bool,
    ) -> rusqlite::Result<()> {
        for (row, &i) in rows.iter().enumerate() {
            for (c, &column) in Column::ALL.iter().enumerate() {
                if sharing && row > 0 && column.shared() {
                    continue;
                }
                let at = parameter(c, row, rows.len(), sharing);
                insert.raw_bind_parameter(at, self.value(i, column))?;
            }
        }
        Ok(())
    }

    /// Column `column` of row `i`.
    fn value(&self, i: usize, column: Column) -> ToSqlOutput<'_> {
        let ban = &self.bans[i];
        let text = |text: &'a str| ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes()));
        let number = |n: i64| ToSqlOutput::Owned(Value::Integer(n));
        match column {
            Column::Target => ToSqlOutput::Borrowed(ValueRef::Text(self.key(i).as_bytes())),
            Column::ExpiresAt => ban
                .expires_at
                .map_or(ToSqlOutput::Owned(Value::Null), number),
            Column::Source => text(ban.source.as_str()),
            Column::Reason => text(&ban.reason),
            Column::Detail => text(&ban.detail),
            Column::Count => number(i64::from(ban.count)),
            Column::FirstBannedAt => number(ban.first_banned_at),
            Column::LastBannedAt => number(ban.last_banned_at),
            Column::Scope => ban
                .scope
                .to_text()
                .map_or(ToSqlOutput::Owned(Value::Null), |scope| {
                    ToSqlOutput::Owned(Value::Text(scope))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_number_their_parameters_as_bind_fills_them() {
        assert_eq!(
            upsert(1, false),
            "INSERT INTO bans (target, expires_at, source, reason, detail, count, \
             first_banned_at, last_banned_at, scope) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9) \
             ON CONFLICT (target) DO UPDATE SET expires_at = excluded.expires_at, \
             source = excluded.source, reason = excluded.reason, detail = excluded.detail, \
             count = excluded.count, first_banned_at = excluded.first_banned_at, \
             last_banned_at = excluded.last_banned_at, scope = excluded.scope"
        );
        let sharing = upsert(2, true);
        assert!(
            sharing.contains(
                "VALUES (?1,?2,?11,?12,?13,?3,?4,?5,?14),(?6,?7,?11,?12,?13,?8,?9,?10,?14) ON"
            ),
            "{sharing}"
        );
    }

    #[test]
    fn rows_go_in_key_order_and_a_repeated_target_keeps_its_order() {
        let ban = |target: &str, count: u32| StoredBan {
            target: target.parse().expect("net"),
            expires_at: None,
            source: crate::bans::Source::Cli,
            reason: String::new(),
            detail: String::new(),
            count,
            scope: crate::bans::BanScope::Default,
            first_banned_at: 0,
            last_banned_at: 0,
        };
        let bans = [
            ban("192.0.2.10/32", 1),
            ban("2001:db8:aaaa:bbbb:cccc:dddd:eeee:2/128", 1),
            ban("192.0.2.1/32", 1),
            ban("2001:db8:aaaa:bbbb:cccc:dddd:eeee:10/128", 1),
            ban("192.0.2.10/32", 2),
            ban("2001:db8:aaaa:bbbb:cccc:dddd:eeee:1/128", 1),
            ban("192.0.2.0/24", 1),
            ban("2001:db8:aaaa:bbbb:cccc:dddd:eeee:10/128", 2),
        ];
        let batch = Batch::new(&bans);
        let written: Vec<(&str, u32)> = batch
            .order
            .iter()
            .map(|&i| (batch.key(i), bans[i].count))
            .collect();
        let mut expected: Vec<(String, usize)> = bans
            .iter()
            .enumerate()
            .map(|(i, ban)| (crate::bans::target_to_string(&ban.target), i))
            .collect();
        expected.sort();
        let expected: Vec<(&str, u32)> = expected
            .iter()
            .map(|(key, i)| (key.as_str(), bans[*i].count))
            .collect();
        assert_eq!(written, expected);
        assert_eq!(written[0], ("192.0.2.0/24", 1));
        assert_eq!(&written[2..4], [("192.0.2.10", 1), ("192.0.2.10", 2)]);
        assert_eq!(written[7], ("2001:db8:aaaa:bbbb:cccc:dddd:eeee:2", 1));
    }
}
