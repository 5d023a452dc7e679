//! A batch of bans laid out for one write: each target's text once, the
//! rows in the order of the primary key, and the upserts that carry them
//! [`ROWS_PER_INSERT`] at a time.
//!
//! Rows of one ban source usually share their text columns (a bulk ban:
//! one source, reason, detail and scope for every target). A statement
//! then binds those once instead of once per row: binding text copies it.

use std::{fmt::Write as _, sync::LazyLock};

use rusqlite::CachedStatement;

use super::StoredBan;
use crate::bans::push_target;

/// Rows one insert statement carries in a bulk write (9 parameters each,
/// well under `SQLite`'s limit of 32,766).
pub(super) const ROWS_PER_INSERT: usize = 128;

/// The columns of `bans`, in the order the upserts list them.
const COLUMNS: usize = 9;

/// The text columns that rows sharing them bind once: source, reason,
/// detail, scope (positions among [`COLUMNS`], from 0).
const SHARED: [usize; 4] = [2, 3, 4, 8];

/// An upsert of one row, each value its own parameter.
pub(super) static UPSERT_ONE: LazyLock<String> = LazyLock::new(|| upsert(1, false));
/// An upsert of [`ROWS_PER_INSERT`] rows, each value its own parameter.
pub(super) static UPSERT_MANY: LazyLock<String> = LazyLock::new(|| upsert(ROWS_PER_INSERT, false));
/// An upsert of [`ROWS_PER_INSERT`] rows that share the [`SHARED`]
/// columns, bound once after the rows' own values.
pub(super) static UPSERT_SHARING: LazyLock<String> =
    LazyLock::new(|| upsert(ROWS_PER_INSERT, true));

/// The upsert of `rows` bans; with `sharing`, the [`SHARED`] columns of
/// every row name the same parameters.
fn upsert(rows: usize, sharing: bool) -> String {
    let own = if sharing {
        COLUMNS - SHARED.len()
    } else {
        COLUMNS
    };
    let mut text = String::from(
        "INSERT INTO bans (target, expires_at, source, reason, detail, count, first_banned_at, last_banned_at, scope) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            text.push(',');
        }
        text.push('(');
        let mut next_own = row * own;
        for column in 0..COLUMNS {
            if column > 0 {
                text.push(',');
            }
            let parameter = match SHARED.iter().position(|&c| c == column) {
                Some(shared) if sharing => rows * own + shared,
                _ => {
                    next_own += 1;
                    next_own - 1
                }
            };
            let _ = write!(text, "?{}", parameter + 1);
        }
        text.push(')');
    }
    text.push_str(
        " ON CONFLICT (target) DO UPDATE SET
            expires_at = excluded.expires_at, source = excluded.source,
            reason = excluded.reason, detail = excluded.detail, count = excluded.count,
            first_banned_at = excluded.first_banned_at, last_banned_at = excluded.last_banned_at,
            scope = excluded.scope",
    );
    text
}

/// The rows of a write with their targets' text, and the order to write
/// them in.
pub(super) struct Batch<'a> {
    bans: &'a [StoredBan],
    /// Every target's text, one after the other.
    text: String,
    /// Where each target's text ends in `text`.
    ends: Vec<usize>,
    /// Positions in `bans`, in the order of the primary key; a target
    /// given twice keeps its order, so its last row is written last and
    /// stays.
    pub order: Vec<usize>,
}

impl<'a> Batch<'a> {
    pub fn new(bans: &'a [StoredBan]) -> Self {
        let mut text = String::with_capacity(bans.len() * 16);
        let mut ends = Vec::with_capacity(bans.len());
        for ban in bans {
            push_target(&mut text, &ban.target);
            ends.push(text.len());
        }
        let mut batch = Self {
            bans,
            text,
            ends,
            order: Vec::new(),
        };
        batch.order = batch.key_order();
        batch
    }

    /// The text of the target of row `i`.
    pub fn key(&self, i: usize) -> &str {
        let start = i.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.text[start..self.ends[i]]
    }

    /// Positions sorted by target text, then position. Sorted first by the
    /// text's first 16 bytes as one number (most IPv4 targets whole), then
    /// each run that ties on those by the whole text: far cheaper than
    /// comparing strings throughout.
    fn key_order(&self) -> Vec<usize> {
        let mut keyed: Vec<(u128, usize)> = (0..self.bans.len())
            .map(|i| {
                let mut head = [0_u8; 16];
                let key = self.key(i).as_bytes();
                let n = key.len().min(head.len());
                head[..n].copy_from_slice(&key[..n]);
                (u128::from_be_bytes(head), i)
            })
            .collect();
        keyed.sort_unstable();
        let mut start = 0;
        while start < keyed.len() {
            let head = keyed[start].0;
            let end = keyed[start..]
                .iter()
                .position(|&(h, _)| h != head)
                .map_or(keyed.len(), |n| start + n);
            if end - start > 1 {
                keyed[start..end]
                    .sort_unstable_by(|a, b| self.key(a.1).cmp(self.key(b.1)).then(a.1.cmp(&b.1)));
            }
            start = end;
        }
        keyed.into_iter().map(|(_, i)| i).collect()
    }

    /// Whether every row at `rows` has the first one's [`SHARED`] columns.
    pub fn shares_text(&self, rows: &[usize]) -> bool {
        let Some((&first, rest)) = rows.split_first() else {
            return true;
        };
        let first = &self.bans[first];
        rest.iter().all(|&i| {
            let ban = &self.bans[i];
            ban.source == first.source
                && ban.reason == first.reason
                && ban.detail == first.detail
                && ban.scope == first.scope
        })
    }

    /// Binds the rows at `rows` to an upsert of as many, made by
    /// [`upsert`] with `sharing` as given (then [`Batch::shares_text`]
    /// must hold for them).
    pub fn bind(
        &self,
        insert: &mut CachedStatement<'_>,
        rows: &[usize],
        sharing: bool,
    ) -> rusqlite::Result<()> {
        if !sharing {
            for (row, &i) in rows.iter().enumerate() {
                let ban = &self.bans[i];
                let base = row * COLUMNS;
                insert.raw_bind_parameter(base + 1, self.key(i))?;
                insert.raw_bind_parameter(base + 2, ban.expires_at)?;
                insert.raw_bind_parameter(base + 3, ban.source.as_str())?;
                insert.raw_bind_parameter(base + 4, &ban.reason)?;
                insert.raw_bind_parameter(base + 5, &ban.detail)?;
                insert.raw_bind_parameter(base + 6, ban.count)?;
                insert.raw_bind_parameter(base + 7, ban.first_banned_at)?;
                insert.raw_bind_parameter(base + 8, ban.last_banned_at)?;
                insert.raw_bind_parameter(base + 9, ban.scope.to_text())?;
            }
            return Ok(());
        }
        let own = COLUMNS - SHARED.len();
        for (row, &i) in rows.iter().enumerate() {
            let ban = &self.bans[i];
            let base = row * own;
            insert.raw_bind_parameter(base + 1, self.key(i))?;
            insert.raw_bind_parameter(base + 2, ban.expires_at)?;
            insert.raw_bind_parameter(base + 3, ban.count)?;
            insert.raw_bind_parameter(base + 4, ban.first_banned_at)?;
            insert.raw_bind_parameter(base + 5, ban.last_banned_at)?;
        }
        if let Some(&first) = rows.first() {
            let ban = &self.bans[first];
            let base = rows.len() * own;
            insert.raw_bind_parameter(base + 1, ban.source.as_str())?;
            insert.raw_bind_parameter(base + 2, &ban.reason)?;
            insert.raw_bind_parameter(base + 3, &ban.detail)?;
            insert.raw_bind_parameter(base + 4, ban.scope.to_text())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_number_their_parameters_as_bind_fills_them() {
        let one = upsert(1, false);
        assert!(
            one.contains("VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9) ON"),
            "{one}"
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
