//! A walk over the active bans that reads only what the index holds, for
//! views that rank or count every ban (`spamwall top`): no reason, no
//! scope, nothing read from the store.

use ipnet::IpNet;

use super::{Cursor, Index, SHARDS, Slot, v4_net, v6_net};
use crate::bans::Source;

/// What the index knows of one active ban, cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Glance {
    pub target: IpNet,
    pub source: Source,
    /// `None`: permanent.
    pub expires_at: Option<i64>,
    /// Unix seconds of the latest offence.
    pub last_banned_at: i64,
}

fn glance(target: IpNet, slot: &Slot) -> Glance {
    Glance {
        target,
        source: Source::from_code(u16::from(slot.source)),
        expires_at: slot.expires_at(),
        last_banned_at: i64::from(slot.last_banned_at),
    }
}

impl Index {
    /// Shows `visit` every ban active at `now` in the next shards from
    /// `cursor` (about `budget` rows read); returns where to go on.
    pub fn glance_active(
        &self,
        cursor: Cursor,
        budget: usize,
        now: i64,
        mut visit: impl FnMut(Glance),
    ) -> Cursor {
        let mut at = cursor.0;
        let mut done = 0;
        while at < 3 * SHARDS && done < budget {
            let shard = at % SHARDS;
            match at / SHARDS {
                0 => {
                    let rows = self.v4.shard(shard);
                    done += rows.len();
                    for (key, slot) in rows.iter().filter(|(_, slot)| slot.is_active(now)) {
                        visit(glance(v4_net(*key), slot));
                    }
                }
                1 => {
                    let rows = self.v6.shard(shard);
                    done += rows.len();
                    for (key, slot) in rows.iter().filter(|(_, slot)| slot.is_active(now)) {
                        visit(glance(v6_net(*key), slot));
                    }
                }
                _ => {
                    let rows = self.prefixes.shard(shard);
                    done += rows.len();
                    for (key, slot) in rows.iter().filter(|(_, slot)| slot.is_active(now)) {
                        visit(glance(*key, slot));
                    }
                }
            }
            done += 1;
            at += 1;
        }
        Cursor(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bans::{BanScope, store::StoredBan};

    fn row(target: &str, source: Source, expires_at: Option<i64>, last: i64) -> StoredBan {
        StoredBan {
            target: target.parse().expect("net"),
            expires_at,
            source,
            reason: String::new(),
            detail: String::new(),
            count: 1,
            scope: BanScope::Default,
            first_banned_at: last,
            last_banned_at: last,
        }
    }

    #[test]
    fn a_walk_in_small_steps_sees_every_active_ban_once() {
        let mut rows: Vec<StoredBan> = (0..3000_u32)
            .map(|i| {
                let addr = std::net::Ipv4Addr::from(0xC000_0200 + i);
                row(&format!("{addr}/32"), Source::Cli, None, i64::from(i))
            })
            .collect();
        rows.push(row("2001:db8::7/128", Source::Fleet, Some(5000), 9000));
        rows.push(row("198.51.100.0/24", Source::Feed, Some(5000), 9001));
        rows.push(row("203.0.113.9/32", Source::Logwatch, Some(999), 9002));
        let index = Index::from_rows(&rows);
        let mut seen = Vec::new();
        let mut cursor = Cursor::default();
        let mut steps = 0;
        while !cursor.is_done() {
            cursor = index.glance_active(cursor, 64, 1000, |g| seen.push(g));
            steps += 1;
        }
        assert!(steps > 10, "{steps} steps");
        assert_eq!(seen.len(), 3002, "the expired ban is not shown");
        seen.sort_by_key(|g| g.last_banned_at);
        assert_eq!(
            seen[3000],
            Glance {
                target: "2001:db8::7/128".parse().expect("net"),
                source: Source::Fleet,
                expires_at: Some(5000),
                last_banned_at: 9000,
            }
        );
        assert_eq!(seen[3001].source, Source::Feed);
        assert!(seen.windows(2).all(|w| w[0].target != w[1].target));
    }
}
