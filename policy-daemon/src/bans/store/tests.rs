use super::*;

fn ban(target: &str, expires_at: Option<i64>, count: u32) -> StoredBan {
    StoredBan {
        target: target.parse().expect("net"),
        expires_at,
        source: Source::Policy,
        reason: "score 12".into(),
        detail: "zen=127.0.0.2(+10)".into(),
        count,
        scope: BanScope::Default,
        first_banned_at: 1000,
        last_banned_at: 1000,
    }
}

#[test]
fn bans_survive_reopening_and_update_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open_in(&dir.path().join("state")).expect("open");
        store
            .put_bans(&[
                ban("192.0.2.7/32", Some(5000), 1),
                ban("2001:db8::/64", None, 1),
            ])
            .expect("put");
        store
            .put_bans(&[ban("192.0.2.7/32", Some(9000), 2)])
            .expect("update");
    }
    let store = Store::open_in(&dir.path().join("state")).expect("reopen");
    let mut all = store.all().expect("all");
    all.sort_by_key(|b| b.target);
    assert_eq!(
        all,
        [
            ban("192.0.2.7/32", Some(9000), 2),
            ban("2001:db8::/64", None, 1)
        ]
    );
}

#[test]
fn ending_a_ban_keeps_its_history_and_purge_drops_old_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_in(dir.path()).expect("open");
    store
        .put_bans(&[
            ban("192.0.2.7/32", None, 3),
            ban("192.0.2.8/32", Some(1500), 1),
        ])
        .expect("put");
    assert!(
        store
            .end_ban(&"192.0.2.7/32".parse().expect("net"), 2000)
            .expect("end")
    );
    assert!(
        !store
            .end_ban(&"192.0.2.7/32".parse().expect("net"), 2001)
            .expect("end twice")
    );
    assert!(
        !store
            .end_ban(&"192.0.2.8/32".parse().expect("net"), 2000)
            .expect("already expired")
    );
    let row = store
        .all()
        .expect("all")
        .into_iter()
        .find(|b| b.count == 3)
        .expect("history kept");
    assert!(!row.is_active(2000));
    assert_eq!(
        store.purge(1800).expect("purge"),
        1,
        "only the row that ended before the cutoff"
    );
    assert_eq!(store.purge(2500).expect("purge"), 1);
    assert!(store.all().expect("all").is_empty());
}

#[test]
fn ending_bans_in_one_batch_reports_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_in(dir.path()).expect("open");
    store
        .put_bans(&[
            ban("192.0.2.7/32", None, 1),
            ban("192.0.2.8/32", Some(1500), 1),
            ban("2001:db8::/64", Some(9000), 2),
        ])
        .expect("put");
    let targets: Vec<IpNet> = [
        "192.0.2.7/32",
        "192.0.2.8/32",
        "192.0.2.9/32",
        "2001:db8::/64",
    ]
    .iter()
    .map(|t| t.parse().expect("net"))
    .collect();
    assert_eq!(
        store.end_bans(&targets, 2000).expect("end"),
        [true, false, false, true]
    );
    assert!(store.all().expect("all").iter().all(|b| !b.is_active(2000)));
    assert_eq!(
        store.end_bans(&[], 2000).expect("nothing"),
        Vec::<bool>::new()
    );
}

#[test]
fn outbox_is_ordered_per_backend_and_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_in(dir.path()).expect("open");
    let a = store
        .outbox_push("fail2ban", "ban", "192.0.2.1", 1)
        .expect("push");
    let b = store
        .outbox_push("fail2ban", "unban", "192.0.2.1", 2)
        .expect("push");
    store
        .outbox_push("other", "ban", "192.0.2.9", 3)
        .expect("push");
    drop(store);
    let store = Store::open_in(dir.path()).expect("reopen");
    let pending = store.outbox_pending("fail2ban").expect("pending");
    assert_eq!(pending.iter().map(|r| r.id).collect::<Vec<_>>(), [a, b]);
    assert_eq!(pending[1].op, "unban");
    store.outbox_remove(a).expect("remove");
    assert_eq!(store.outbox_len("fail2ban").expect("len"), 1);
    assert_eq!(store.outbox_len("other").expect("len"), 1);
}

#[test]
fn logwatch_positions_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_in(dir.path()).expect("open");
    assert_eq!(store.logwatch_position("mail").expect("get"), None);
    let position = LogPosition {
        inode: u64::MAX - 3,
        offset: 4096,
        head_hash: 0x8000_0000_0000_0001,
        cursor: None,
    };
    store.put_logwatch_position("mail", &position).expect("put");
    let journal = LogPosition {
        cursor: Some("s=abc;i=42".to_owned()),
        ..LogPosition::default()
    };
    store
        .put_logwatch_position("journal", &journal)
        .expect("put");
    drop(store);
    let store = Store::open_in(dir.path()).expect("reopen");
    assert_eq!(
        store.logwatch_position("mail").expect("get"),
        Some(position)
    );
    assert_eq!(
        store.logwatch_position("journal").expect("get"),
        Some(journal)
    );
}

#[test]
fn damaged_rows_are_skipped_or_clamped_never_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_in(dir.path()).expect("open");
    store
        .put_bans(&[ban("192.0.2.7/32", Some(i64::MAX), 1)])
        .expect("put");
    store
        .conn()
        .execute_batch(
            "INSERT INTO bans VALUES ('not an address', 5, 'cli', '', '', 1, 0, 0, NULL);
             INSERT INTO bans VALUES ('192.0.2.8', 5, 'martian', '', '', 1, 0, 0, NULL);
             INSERT INTO bans VALUES ('192.0.2.9', -9223372036854775808, 'cli', '', '', -4, -1, 9223372036854775807, NULL);
             INSERT INTO bans VALUES ('192.0.2.10', NULL, 'cli', '', '', 99999999999, 0, 0, NULL);",
        )
        .expect("damage");
    let mut all = store.all().expect("all");
    all.sort_by_key(|b| b.target);
    let summary: Vec<(String, Option<i64>, u32)> = all
        .iter()
        .map(|b| (target_to_string(&b.target), b.expires_at, b.count))
        .collect();
    assert_eq!(
        summary,
        [
            ("192.0.2.7".to_owned(), Some(i64::MAX), 1),
            ("192.0.2.9".to_owned(), Some(i64::MIN), 0),
            ("192.0.2.10".to_owned(), None, u32::MAX),
        ]
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB_FILE);
    Connection::open(&path)
        .expect("db")
        .execute_batch("PRAGMA user_version = 99;")
        .expect("set");
    let error = Store::open(&path).expect_err("newer schema");
    assert!(error.to_string().contains("99"), "{error}");
}

#[test]
fn bulk_writes_in_one_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_in(dir.path()).expect("open");
    let bans: Vec<StoredBan> = (0..20_000_u32)
        .map(|i| StoredBan {
            target: IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
                0x0A00_0000 + i,
            ))),
            ..ban("192.0.2.1/32", Some(9), 1)
        })
        .collect();
    store.put_bans(&bans).expect("bulk");
    assert_eq!(store.all().expect("all").len(), 20_000);
}

#[test]
fn a_bulk_write_keeps_every_row_shared_text_or_not_and_a_repeat_s_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_in(dir.path()).expect("open");
    let v4 = |i: u32| {
        IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
            0x0A00_0000 + i,
        )))
    };
    let v6 = |i: u32| {
        IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::from(
            0x2001_0db8_aaaa_bbbb_cccc_dddd_0000_0000_u128 + u128::from(i),
        )))
    };
    // Statements of shared text (the first 400 rows), then rows that
    // differ in one text column each, IPv6 targets whose text ties on
    // its first 16 bytes, and targets given twice.
    let mut bans: Vec<StoredBan> = (0..400)
        .map(|i| StoredBan {
            target: v4(i),
            count: i + 1,
            first_banned_at: i64::from(i),
            ..ban("192.0.2.1/32", Some(9), 1)
        })
        .collect();
    for i in 400..700 {
        let mut row = StoredBan {
            target: v6(i),
            ..ban("192.0.2.1/32", None, 2)
        };
        match i % 4 {
            0 => row.source = Source::Cli,
            1 => row.reason = format!("reason {i}"),
            2 => row.detail = format!("detail {i}"),
            _ => row.scope = BanScope::from_ports(&[25, u16::try_from(i).expect("port")]),
        }
        bans.push(row);
    }
    for i in [3, 450, 699] {
        let target = if i < 400 { v4(i) } else { v6(i) };
        bans.push(StoredBan {
            target,
            reason: format!("again {i}"),
            ..ban("192.0.2.1/32", Some(77), 9)
        });
    }
    store.put_bans(&bans).expect("bulk");
    let mut expected: std::collections::BTreeMap<String, StoredBan> =
        std::collections::BTreeMap::new();
    for row in &bans {
        expected.insert(target_to_string(&row.target), row.clone());
    }
    let mut stored = store.all().expect("all");
    stored.sort_by_key(|row| target_to_string(&row.target));
    assert_eq!(stored.len(), 700);
    assert_eq!(stored, expected.into_values().collect::<Vec<_>>());
}

#[test]
fn scopes_round_trip_and_a_damaged_one_holds_on_all_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_in(dir.path()).expect("open");
    let scoped = StoredBan {
        scope: BanScope::from_ports(&[587, 465]),
        ..ban("192.0.2.1/32", None, 1)
    };
    let all = StoredBan {
        scope: BanScope::All,
        ..ban("192.0.2.2/32", None, 1)
    };
    let default = ban("192.0.2.3/32", None, 1);
    store
        .put_bans(&[scoped.clone(), all.clone(), default.clone()])
        .expect("put");
    let mut rows = store.all().expect("all");
    rows.sort_by_key(|row| row.target);
    assert_eq!(rows, vec![scoped, all, default]);
    store
        .conn()
        .execute(
            "UPDATE bans SET scope = '25,smtp' WHERE target = '192.0.2.3'",
            [],
        )
        .expect("damage");
    let damaged = store.all().expect("all");
    let row = damaged
        .iter()
        .find(|row| row.target == "192.0.2.3/32".parse::<IpNet>().expect("net"))
        .expect("row kept");
    assert_eq!(row.scope, BanScope::All);
}

#[test]
fn a_store_from_before_scopes_gains_the_column_and_keeps_its_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB_FILE);
    {
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE bans (
                target TEXT PRIMARY KEY, expires_at INTEGER, source TEXT NOT NULL,
                reason TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '',
                count INTEGER NOT NULL, first_banned_at INTEGER NOT NULL,
                last_banned_at INTEGER NOT NULL
            ) WITHOUT ROWID;
            INSERT INTO bans VALUES ('192.0.2.9', NULL, 'cli', 'old', '', 2, 5, 6);
            PRAGMA user_version = 1;",
        )
        .expect("old schema");
    }
    let store = Store::open(&path).expect("open the old store");
    let rows = store.all().expect("all");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].scope.clone(), rows[0].count),
        (BanScope::Default, 2)
    );
    store
        .put_bans(&[StoredBan {
            scope: BanScope::from_ports(&[25]),
            ..rows[0].clone()
        }])
        .expect("write a scope");
    drop(store);
    let reopened = Store::open(&path).expect("reopen");
    assert_eq!(
        reopened.all().expect("all")[0].scope,
        BanScope::from_ports(&[25])
    );
}

#[test]
fn a_target_given_twice_in_one_write_keeps_its_last_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_in(&dir.path().join("state")).expect("open");
    // Rows are written in key order; the two rows of 192.0.2.7 keep theirs.
    store
        .put_bans(&[
            ban("192.0.2.7/32", Some(5000), 1),
            ban("192.0.2.10/32", Some(5000), 1),
            ban("192.0.2.7/32", Some(9000), 2),
            ban("192.0.2.1/32", Some(5000), 1),
        ])
        .expect("put");
    let row = store
        .get(&"192.0.2.7/32".parse().expect("net"))
        .expect("get")
        .expect("row");
    assert_eq!((row.expires_at, row.count), (Some(9000), 2));
    assert!(
        store
            .get(&"192.0.2.10/32".parse().expect("net"))
            .expect("get")
            .is_some()
    );
}
