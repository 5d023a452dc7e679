use super::*;

fn row(target: &str, expires_at: Option<i64>, count: u32) -> StoredBan {
    StoredBan {
        target: crate::bans::parse_target(target).expect("target"),
        expires_at,
        source: Source::Cli,
        reason: String::new(),
        detail: String::new(),
        count,
        scope: BanScope::Default,
        first_banned_at: 100,
        last_banned_at: 200,
    }
}

#[test]
fn rows_come_back_as_they_went_in() {
    let mut index = Index::new();
    let mut r = row("192.0.2.1", Some(1000), 3);
    r.scope = BanScope::from_ports(&[587, 25]);
    r.source = Source::Fleet;
    index.insert(&r);
    index.insert(&row("2001:db8::1", None, 1));
    index.insert(&row("198.51.100.0/24", Some(5), 2));
    let held = index.get(&r.target).expect("held");
    assert_eq!(
        held,
        Held {
            target: r.target,
            expires_at: Some(1000),
            source: Source::Fleet,
            count: 3,
            scope: BanScope::from_ports(&[25, 587]),
            first_banned_at: 100,
            last_banned_at: 200,
        }
    );
    assert_eq!(index.len(), 3);
    assert!(index.is_active(&"2001:db8::1/128".parse().expect("net"), i64::MAX));
    assert!(!index.is_active(&"198.51.100.0/24".parse().expect("net"), 5));
    assert!(index.get(&"192.0.2.2/32".parse().expect("net")).is_none());
}

#[test]
fn times_outside_32_bits_are_clamped_not_wrapped() {
    let mut index = Index::new();
    index.insert(&row("192.0.2.1", Some(i64::MAX - 1), 1));
    index.insert(&row("192.0.2.2", Some(-5), 1));
    let far = index
        .get(&"192.0.2.1/32".parse().expect("net"))
        .expect("far");
    assert!(far.is_active(4_000_000_000), "still active in 2096");
    let past = index
        .get(&"192.0.2.2/32".parse().expect("net"))
        .expect("past");
    assert!(!past.is_active(1));
}

#[test]
fn bulk_inserts_merge_with_what_is_there_and_later_rows_win() {
    let mut index = Index::new();
    for i in 0..5_000_u32 {
        index.insert(&row(
            &Ipv4Addr::from(0x0a00_0000 + i * 2).to_string(),
            Some(10),
            1,
        ));
    }
    let mut rows: Vec<StoredBan> = (0..10_000_u32)
        .map(|i| row(&Ipv4Addr::from(0x0a00_0000 + i).to_string(), Some(20), 2))
        .collect();
    rows.push(row("10.0.0.4", Some(30), 7));
    index.insert_many(&rows);
    assert_eq!(index.len(), 10_000);
    let four = index
        .get(&"10.0.0.4/32".parse().expect("net"))
        .expect("row");
    assert_eq!((four.expires_at, four.count), (Some(30), 7));
    let mut seen = 0;
    let mut cursor = Cursor::default();
    while !cursor.is_done() {
        cursor = index.walk(cursor, 100, |held, _| {
            assert_eq!(
                held.count,
                if held.target.to_string() == "10.0.0.4/32" {
                    7
                } else {
                    2
                }
            );
            seen += 1;
        });
    }
    assert_eq!(seen, 10_000, "a walk visits every row once");
    for shard in &index.v4.parts {
        assert!(
            shard.windows(2).all(|w| w[0].0 < w[1].0),
            "shards stay sorted"
        );
    }
}

#[test]
fn a_loaded_index_equals_one_built_by_inserts_and_counts_what_is_active() {
    let rows: Vec<StoredBan> = (0..3_000_u32)
        .map(|i| {
            row(
                &Ipv4Addr::from(0x0a00_0000 + i % 2_000).to_string(),
                Some(i64::from(i)),
                i,
            )
        })
        .chain([
            row("2001:db8::7", None, 4),
            row("198.51.100.0/24", None, 5),
            row("2001:db8::/64", Some(1), 1),
        ])
        .collect();
    let mut loader = Loader::default();
    for r in &rows {
        loader.add(r);
    }
    let mut index = loader.finish();
    let built = Index::from_rows(&rows);
    let mut a: Vec<Held> = index.iter().collect();
    let mut b: Vec<Held> = built.iter().collect();
    a.sort_by_key(|h| h.target);
    b.sort_by_key(|h| h.target);
    assert_eq!(a, b);
    assert_eq!(index.len(), 2_003);
    let mut counts = [0; 4];
    let mut cursor = Cursor::default();
    while !cursor.is_done() {
        cursor = index.count_active(cursor, 50, 1_500, &mut counts);
    }
    // Addresses 0..2000 hold the row of i or i + 2000: active past 1500
    // for i >= 1501 (499) and for the 1000 rewritten by i >= 2000.
    assert_eq!(counts, [1_499, 1, 1, 0]);
}

#[test]
fn many_lookups_at_once_answer_as_one_each() {
    let mut index = Index::new();
    let rows: Vec<StoredBan> = (0..3_000_u32)
        .map(|i| {
            row(
                &Ipv4Addr::from(0x0a00_0000 + i * 3).to_string(),
                Some(i64::from(i)),
                1,
            )
        })
        .chain([row("2001:db8::7", None, 4), row("198.51.100.0/24", None, 5)])
        .collect();
    index.insert_many(&rows);
    let targets: Vec<IpNet> = (0..9_000_u32)
        .rev()
        .map(|i| v4_net(0x0a00_0000 + i))
        .chain(
            [
                "2001:db8::7/128",
                "2001:db8::8/128",
                "198.51.100.0/24",
                "198.51.100.0/25",
            ]
            .map(|t| t.parse().expect("net")),
        )
        .collect();
    let found = index.get_many(&targets);
    let many: Vec<Option<Held>> = targets
        .iter()
        .enumerate()
        .map(|(at, t)| index.found(&found, at, *t))
        .collect();
    let one: Vec<Option<Held>> = targets.iter().map(|t| index.get(t)).collect();
    assert_eq!(many, one);
    assert_eq!(many.iter().flatten().count(), 3_002);
}

#[test]
fn end_and_remove_update_rows_in_place() {
    let mut index = Index::new();
    index.insert_many(&[row("192.0.2.1", None, 1), row("192.0.2.2", Some(50), 1)]);
    index.end(&"192.0.2.1/32".parse().expect("net"), 40);
    assert_eq!(
        index
            .get(&"192.0.2.1/32".parse().expect("net"))
            .expect("row")
            .expires_at,
        Some(40)
    );
    index.remove(&"192.0.2.1/32".parse().expect("net"));
    index.remove(&"192.0.2.9/32".parse().expect("net"));
    assert_eq!(index.len(), 1);
    assert_eq!(index.iter().count(), 1);
    let rows: Vec<StoredBan> = (0..5_000_u32)
        .map(|i| {
            row(
                &Ipv4Addr::from(0x0a00_0000 + i).to_string(),
                Some(i64::from(i % 2)),
                1,
            )
        })
        .collect();
    index.insert_many(&rows);
    for r in rows.iter().filter(|r| r.expires_at == Some(0)) {
        index.remove(&r.target);
    }
    assert_eq!(index.len(), 2_501, "the odd ones and 192.0.2.2");
    assert_eq!(index.iter().count(), 2_501);
}

#[test]
fn a_million_ipv4_bans_fit_in_32_mib() {
    let rows: Vec<StoredBan> = (0..1_000_000_u32)
        .map(|i| StoredBan {
            target: v4_net(0x6440_0000 + i),
            ..row("192.0.2.1", Some(1000), 1)
        })
        .collect();
    let index = Index::from_rows(&rows);
    assert_eq!(index.len(), 1_000_000);
    assert!(
        index.heap_bytes() < 32 << 20,
        "{} bytes",
        index.heap_bytes()
    );
}

/// Counts every active row at `now`, walking in small steps.
fn count_all(index: &mut Index, now: i64) -> [u64; 4] {
    let mut counts = [0; 4];
    let mut cursor = Cursor::default();
    while !cursor.is_done() {
        cursor = index.count_active(cursor, 64, now, &mut counts);
    }
    counts
}

/// The same count read from every row, without tallies.
fn count_rows(index: &Index, now: i64) -> [u64; 4] {
    let mut counts = [0; 4];
    for held in index.iter().filter(|held| held.is_active(now)) {
        let single = held.target.prefix_len() == held.target.max_prefix_len();
        let v4 = held.target.addr().is_ipv4();
        counts[match (single, v4) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        }] += 1;
    }
    counts
}

#[test]
fn counts_kept_between_walks_follow_every_change_and_the_clock() {
    let mut index = Index::new();
    let rows: Vec<StoredBan> = (0..4_000_u32)
        .map(|i| {
            row(
                &Ipv4Addr::from(0x0a00_0000 + i).to_string(),
                (i % 4 != 0).then_some(1_000 + i64::from(i % 7)),
                1,
            )
        })
        .chain([
            row("2001:db8::7", Some(1_003), 1),
            row("198.51.100.0/24", None, 1),
            row("2001:db8::/64", Some(1_001), 1),
        ])
        .collect();
    index.insert_many(&rows);
    let check = |index: &mut Index, now: i64| {
        let counted = count_all(index, now);
        assert_eq!(counted, count_rows(index, now), "at {now}");
        assert_eq!(count_all(index, now), counted, "again at {now}");
    };
    for now in [990, 1_000, 1_001, 1_003, 1_006, 2_000, 995] {
        check(&mut index, now);
    }
    index.end(&"10.0.0.1/32".parse().expect("net"), 996);
    check(&mut index, 996);
    index.remove(&"10.0.0.2/32".parse().expect("net"));
    check(&mut index, 996);
    index.insert(&row("10.0.0.4", Some(5_000), 2));
    index.insert(&row("192.0.2.1", None, 1));
    check(&mut index, 996);
    index.insert_many(&[row("10.0.0.8", Some(1), 2), row("2001:db8::8", None, 1)]);
    check(&mut index, 996);
    let order = index.order();
    let seen: Vec<(usize, IpNet)> = ["10.0.0.8/32", "10.0.0.4/32"]
        .map(|t| {
            let net: IpNet = t.parse().expect("net");
            (order.position(&net), net)
        })
        .into();
    let mut active = Vec::new();
    index.see_sorted(seen, 996, 3, |at, row| active.push((at, row.is_some())));
    assert_eq!(active, [(0, false), (1, true)]);
    check(&mut index, 4_999);
    check(&mut index, 5_000);
}

#[test]
fn targets_seen_in_order_or_not_find_their_rows_and_are_marked() {
    let mut index = Index::new();
    let rows: Vec<StoredBan> = (0..20_000_u32)
        .map(|i| {
            row(
                &Ipv4Addr::from(0x0a00_0000 + i * 2).to_string(),
                Some(if i % 3 == 0 { 10 } else { 1_000 }),
                1,
            )
        })
        .chain([
            row("2001:db8::7", None, 1),
            row("198.51.100.0/24", None, 1),
            row("2001:db8::/64", Some(10), 1),
        ])
        .collect();
    index.insert_many(&rows);
    let order = index.order();
    let targets: Vec<(usize, IpNet)> = (0..40_000_u32)
        .map(|i| v4_net(0x0a00_0000 + i))
        .chain(
            [
                "2001:db8::7/128",
                "2001:db8::8/128",
                "198.51.100.0/24",
                "2001:db8::/64",
            ]
            .map(|t| t.parse().expect("net")),
        )
        .map(|net| (order.position(&net), net))
        .collect();
    let expected: Vec<bool> = targets
        .iter()
        .map(|(_, net)| index.get(net).is_some_and(|row| row.is_active(100)))
        .collect();
    // In order, then reversed (the slow way), then with wrong positions.
    let mut sorted = targets.clone();
    sorted.sort_unstable();
    for (pass, list) in [
        (1, sorted.clone()),
        (2, sorted.iter().rev().copied().collect()),
        (
            3,
            targets
                .iter()
                .map(|&(p, net)| ((p + 7) % (3 * SHARDS), net))
                .collect(),
        ),
    ] {
        let mut found = vec![None; list.len()];
        index.see_sorted(list.clone(), 100, pass, |at, row| {
            found[at] = Some(row.is_some());
        });
        for (at, (_, net)) in list.iter().enumerate() {
            let want = index.get(net).is_some_and(|row| row.is_active(100));
            assert_eq!(found[at], Some(want), "{net} in pass {pass}");
        }
        let mut unseen = 0;
        let mut cursor = Cursor::default();
        while !cursor.is_done() {
            cursor = index.walk(cursor, usize::MAX, |_, seen| {
                unseen += usize::from(seen != pass);
            });
        }
        assert_eq!(unseen, 0, "every row was found in pass {pass}");
    }
    assert_eq!(
        expected.iter().filter(|&&active| active).count(),
        13_333 + 2
    );
}
