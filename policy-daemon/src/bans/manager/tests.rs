use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;

use proptest::prelude::*;

use super::{
    reconcile::{adopt, close_enough},
    *,
};
use crate::bans::{Allowlist, PortScopes, store::Store};

pub(super) fn net(text: &str) -> IpNet {
    text.parse().expect("net")
}

pub(super) fn manager(policy: BanPolicy) -> (tempfile::TempDir, BanManager) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open_in(dir.path()).expect("store"));
    let xdp = XdpBackend {
        dataplane: None,
        enforcing: false,
        note: "test".into(),
    };
    (
        dir,
        BanManager::new(store, xdp, None, policy).expect("manager"),
    )
}

pub(super) fn request(target: &str, length: BanLength) -> BanRequest {
    BanRequest {
        target: net(target),
        length,
        source: Source::Logwatch,
        reason: "r".into(),
        detail: String::new(),
        scope: BanScope::Default,
    }
}

/// Whole seconds left of a ban: its length, as a ban lasts at least its
/// length and less than a second more.
/// What is left of the ban, in whole minutes, rounded: a loaded machine
/// may take seconds between the ban and this look at it.
fn minutes_of(entry: &BanEntry) -> u64 {
    let expires = entry.expires_at.expect("not permanent");
    expires
        .duration_since(SystemTime::now())
        .map_or(0, |d| (d.as_secs() + 30) / 60)
}

#[test]
fn escalation_doubles_and_is_capped() {
    let policy = BanPolicy {
        default_bantime: Some(Duration::from_mins(10)),
        escalation: Some(Escalation {
            factor: 1.0,
            max: Duration::from_hours(1),
        }),
        ..BanPolicy::default()
    };
    let (_dir, mut bans) = manager(policy);
    let mut lengths = Vec::new();
    for _ in 0..5 {
        let entry = bans
            .ban(request("192.0.2.7/32", BanLength::Default))
            .expect("ban");
        lengths.push((entry.count, minutes_of(&entry)));
    }
    assert_eq!(lengths, [(1, 10), (2, 20), (3, 40), (4, 60), (5, 60)]);
    // An explicit length is taken as given.
    let exact = bans
        .ban(request(
            "192.0.2.7/32",
            BanLength::For(Duration::from_mins(5)),
        ))
        .expect("ban");
    assert_eq!(minutes_of(&exact), 5);
    assert_eq!(exact.count, 6);
}

#[test]
fn history_survives_a_restart_and_unban_keeps_the_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || {
        let store = Arc::new(Store::open_in(dir.path()).expect("store"));
        let xdp = XdpBackend {
            dataplane: None,
            enforcing: false,
            note: String::new(),
        };
        BanManager::new(store, xdp, None, BanPolicy::default()).expect("manager")
    };
    let mut bans = open();
    bans.ban(request("2001:db8::7/128", BanLength::Default))
        .expect("ban");
    assert!(bans.unban(net("2001:db8::7/128")).expect("unban"));
    assert!(bans.list().expect("list").is_empty());
    drop(bans);
    let mut bans = open();
    let again = bans
        .ban(request("2001:db8::7/128", BanLength::Default))
        .expect("ban");
    assert_eq!(again.count, 2, "the earlier ban counts after a restart");
    assert_eq!(bans.list().expect("list").len(), 1);
}

#[test]
fn allowlist_and_own_addresses_are_refused() {
    let policy = BanPolicy {
        allowlist: Allowlist::new([net("198.51.100.0/24")]),
        ignore_self: true,
        ..BanPolicy::default()
    };
    let (_dir, mut bans) = manager(policy);
    let results = bans.ban_many(vec![
        request("198.51.100.4/32", BanLength::Default),
        request("192.0.2.1/32", BanLength::Default),
        request("127.0.0.1/32", BanLength::Default),
    ]);
    assert!(matches!(results[0], Err(BanError::Allowlisted { .. })));
    assert!(results[1].is_ok());
    assert!(results[2].is_err(), "loopback is always refused");
    assert_eq!(bans.list().expect("list").len(), 1);
    if let Some(own) = host_addresses()
        .into_iter()
        .find(|a| !a.addr().is_loopback())
    {
        let refused = bans.ban(BanRequest {
            target: own,
            ..request("192.0.2.2/32", BanLength::Default)
        });
        assert!(
            matches!(refused, Err(BanError::OwnAddress { .. })),
            "{refused:?}"
        );
    }
}

#[test]
fn prefix_is_banned_once_enough_of_its_addresses_are() {
    let policy = BanPolicy {
        aggregation: Some(Aggregation {
            threshold: 3,
            window: Duration::from_mins(10),
            v4_prefix: 24,
            v6_prefix: 64,
        }),
        ..BanPolicy::default()
    };
    let (_dir, mut bans) = manager(policy);
    for host in ["2001:db8:1:2::a/128", "2001:db8:1:2::b/128", "192.0.2.1/32"] {
        bans.ban(request(host, BanLength::Default)).expect("ban");
    }
    assert!(
        !bans
            .list()
            .expect("list")
            .iter()
            .any(|b| b.addr == net("2001:db8:1:2::/64"))
    );
    bans.ban(request("2001:db8:1:2::c/128", BanLength::Default))
        .expect("ban");
    let prefix = bans
        .list()
        .expect("list")
        .into_iter()
        .find(|b| b.addr == net("2001:db8:1:2::/64"))
        .expect("prefix banned");
    assert!(prefix.reason.contains("3 addresses"), "{}", prefix.reason);
    assert!(
        !bans
            .list()
            .expect("list")
            .iter()
            .any(|b| b.addr == net("192.0.2.0/24"))
    );
}

fn aggregating(threshold: u32) -> BanPolicy {
    BanPolicy {
        aggregation: Some(Aggregation {
            threshold,
            window: Duration::from_mins(10),
            v4_prefix: 24,
            v6_prefix: 64,
        }),
        escalation: Some(Escalation {
            factor: 1.0,
            max: Duration::from_hours(24),
        }),
        ..BanPolicy::default()
    }
}

fn has(bans: &BanManager, target: &str) -> bool {
    bans.list()
        .expect("list")
        .iter()
        .any(|b| b.addr == net(target))
}

#[test]
fn one_address_banned_three_times_does_not_ban_its_prefix() {
    let (_dir, mut bans) = manager(aggregating(3));
    for _ in 0..3 {
        bans.ban(request("192.0.2.7/32", BanLength::Default))
            .expect("ban");
    }
    // Lifted and banned again: a repeat offence, still one address.
    bans.unban(net("192.0.2.7/32")).expect("unban");
    bans.ban(request("192.0.2.7/32", BanLength::Default))
        .expect("ban");
    assert!(
        !has(&bans, "192.0.2.0/24"),
        "{:?}",
        bans.list().expect("list")
    );
    // Live fleet bans applied again (a resync) add nothing either.
    let fleet = |target: &str| BanRequest {
        source: Source::Fleet,
        ..request(target, BanLength::Until(unix_now() + 600))
    };
    for _ in 0..3 {
        bans.ban_many(vec![fleet("198.51.100.1/32"), fleet("198.51.100.2/32")]);
    }
    assert!(
        !has(&bans, "198.51.100.0/24"),
        "{:?}",
        bans.list().expect("list")
    );
}

#[test]
fn three_distinct_addresses_ban_their_prefix() {
    let (_dir, mut bans) = manager(aggregating(3));
    bans.ban(request("192.0.2.1/32", BanLength::Default))
        .expect("ban");
    bans.ban(request("192.0.2.2/32", BanLength::Default))
        .expect("ban");
    bans.ban(request("192.0.2.1/32", BanLength::Default))
        .expect("ban");
    assert!(!has(&bans, "192.0.2.0/24"), "two addresses so far");
    bans.ban(request("192.0.2.3/32", BanLength::Default))
        .expect("ban");
    assert!(
        has(&bans, "192.0.2.0/24"),
        "{:?}",
        bans.list().expect("list")
    );
    // Three new fleet bans are three distinct addresses too.
    let fleet = |target: &str| BanRequest {
        source: Source::Fleet,
        ..request(target, BanLength::Until(unix_now() + 600))
    };
    bans.ban_many(vec![
        fleet("2001:db8:5::1/128"),
        fleet("2001:db8:5::2/128"),
        fleet("2001:db8:5::3/128"),
    ]);
    assert!(
        has(&bans, "2001:db8:5::/64"),
        "{:?}",
        bans.list().expect("list")
    );
}

#[test]
fn an_allowlist_entry_lifts_the_bans_it_covers() {
    let (_dir, mut bans) = manager(BanPolicy::default());
    for target in [
        "192.0.2.7/32",
        "192.0.2.0/25",
        "198.51.0.0/16",
        "203.0.113.9/32",
    ] {
        bans.ban(request(target, BanLength::Default)).expect("ban");
    }
    let lifted = bans.lift_disallowed();
    assert!(lifted.is_empty(), "nothing is allowlisted yet: {lifted:?}");
    // The operator's own network, inside a /16 they banned by mistake,
    // and a /24 that covers two bans.
    let mut policy = BanPolicy {
        allowlist: Allowlist::new([net("198.51.100.0/24"), net("192.0.2.0/24")]),
        ..BanPolicy::default()
    };
    bans.set_policy(policy.clone());
    let remaining: Vec<String> = bans
        .list()
        .expect("list")
        .iter()
        .map(|b| target_to_string(&b.addr))
        .collect();
    assert_eq!(remaining, ["203.0.113.9"]);
    // History is kept: banned again later it counts as a repeat.
    policy.allowlist = Allowlist::default();
    bans.set_policy(policy);
    let again = bans
        .ban(request("192.0.2.7/32", BanLength::Default))
        .expect("ban");
    assert_eq!(again.count, 2);
    let mut lifted = {
        let (_dir, mut fresh) = manager(BanPolicy::default());
        fresh
            .ban(request("192.0.2.7/32", BanLength::Default))
            .expect("ban");
        fresh.policy.allowlist = Allowlist::new([net("192.0.2.0/24")]);
        fresh.lift_disallowed()
    };
    lifted.sort();
    assert_eq!(lifted, [(net("192.0.2.7/32"), net("192.0.2.0/24"))]);
}

#[test]
fn lengths_beyond_the_maximum_are_refused_on_every_path() {
    let (_dir, mut bans) = manager(BanPolicy::default());
    let too_long = clock::MAX_BAN_LENGTH + Duration::from_secs(1);
    let results = bans.ban_many(vec![
        request("192.0.2.1/32", BanLength::For(too_long)),
        request(
            "192.0.2.2/32",
            BanLength::Base(Duration::from_secs(u64::MAX)),
        ),
        BanRequest {
            source: Source::Fleet,
            ..request("192.0.2.3/32", BanLength::Until(i64::MAX - 1))
        },
        request("192.0.2.4/32", BanLength::For(clock::MAX_BAN_LENGTH)),
        BanRequest {
            source: Source::Fleet,
            ..request("192.0.2.5/32", BanLength::Until(i64::MAX))
        },
    ]);
    for (i, result) in results.iter().take(3).enumerate() {
        let error = result.as_ref().expect_err("too long");
        assert!(
            matches!(error, BanError::TooLong { .. })
                && error.to_string().contains("exceeds the maximum"),
            "request {i}: {error}"
        );
    }
    assert!(results[3].is_ok() && results[4].is_ok(), "{results:?}");
    let listed = bans.list().expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].expires_at, None, "i64::MAX is permanent");
}

#[test]
fn prefixes_wider_than_the_limit_are_refused_unless_forced() {
    let (_dir, mut bans) = manager(BanPolicy::default());
    let results = bans.ban_many(vec![
        request("128.0.0.0/1", BanLength::Default),
        request("10.0.0.0/8", BanLength::Default),
        request("10.1.0.0/16", BanLength::Default),
        request("2001:db8::/31", BanLength::Default),
        request("2001:db8::/32", BanLength::Default),
        request("::/0", BanLength::Default),
    ]);
    let outcome: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(entry) => format!("ok {}", target_to_string(&entry.addr)),
            Err(error) => error.to_string(),
        })
        .collect();
    assert!(
        outcome[0].contains("128.0.0.0/1 is wider than ban.widest_v4 (/16)"),
        "{outcome:?}"
    );
    assert!(outcome[0].contains("--force"), "{outcome:?}");
    assert!(
        outcome[1].contains("wider than ban.widest_v4"),
        "{outcome:?}"
    );
    assert_eq!(outcome[2], "ok 10.1.0.0/16");
    assert!(
        outcome[3].contains("wider than ban.widest_v6 (/32)"),
        "{outcome:?}"
    );
    assert_eq!(outcome[4], "ok 2001:db8::/32");
    assert!(outcome[5].contains("widest_v6"), "{outcome:?}");
    let forced = bans.ban_many_as(
        vec![request("10.0.0.0/8", BanLength::Default)],
        Breadth::Forced,
    );
    assert!(forced[0].is_ok(), "{forced:?}");
    // A remote node cannot force: fleet bans go through ban_many.
    let fleet = bans.ban(BanRequest {
        source: Source::Fleet,
        ..request("172.16.0.0/12", BanLength::Until(unix_now() + 60))
    });
    assert!(
        matches!(fleet, Err(BanError::TooWide { widest: 16, .. })),
        "{fleet:?}"
    );
}

#[test]
fn a_remote_unban_lifts_only_fleet_bans() {
    let (_dir, mut bans) = manager(BanPolicy::default());
    let remote = |target: &str| BanRequest {
        source: Source::Fleet,
        ..request(target, BanLength::Until(unix_now() + 600))
    };
    bans.ban(BanRequest {
        source: Source::Cli,
        ..request("192.0.2.1/32", BanLength::Permanent)
    })
    .expect("local ban");
    // A remote ban of the same address, then its unban: the hand-made
    // ban stays, with its own source.
    let merged = bans.ban(remote("192.0.2.1/32")).expect("remote ban");
    assert_eq!((merged.source, merged.expires_at), (Source::Cli, None));
    assert!(!bans.unban_remote(net("192.0.2.1/32")).expect("unban"));
    assert!(has(&bans, "192.0.2.1/32"), "the local ban stays");
    bans.ban(remote("192.0.2.2/32")).expect("remote ban");
    assert!(bans.unban_remote(net("192.0.2.2/32")).expect("unban"));
    assert!(!has(&bans, "192.0.2.2/32"), "the fleet's own ban is lifted");
    assert!(
        !bans
            .unban_remote(net("192.0.2.3/32"))
            .expect("nothing there")
    );
}

fn any_row() -> impl Strategy<Value = StoredBan> {
    (
        any::<u32>(),
        proptest::option::of(any::<i64>()),
        any::<u32>(),
        any::<i64>(),
        any::<i64>(),
        prop_oneof![Just(32_u8), 0..32_u8],
    )
        .prop_map(|(addr, expires_at, count, first, last, len)| StoredBan {
            target: IpNet::V4(Ipv4Net::new(addr.into(), len).unwrap_or_default().trunc()),
            expires_at,
            source: Source::Cli,
            reason: String::new(),
            detail: String::new(),
            count,
            scope: BanScope::Default,
            first_banned_at: first,
            last_banned_at: last,
        })
}

proptest! {
    #[test]
    fn any_stored_row_converts_without_panic(row in any_row(), now in any::<i64>(), mono in any::<u64>()) {
        let value = kernel_value(&Held::from(&row), now, mono, &PortScopes::default());
        prop_assert_eq!(value.prefix_len, row.target.prefix_len());
        prop_assert_eq!(value.expires_ns == BanValue::PERMANENT, row.expires_at.is_none());
        let entry = BanManager::entry(&row);
        let json = serde_json::to_value(&entry).expect("serializes");
        let back: BanEntry = serde_json::from_value(json).expect("parses back");
        prop_assert_eq!(back.expires_at.is_none(), row.expires_at.is_none());
    }

    #[test]
    fn any_kernel_value_is_adopted_without_panic(expires_ns in any::<u64>(), mono in any::<u64>(), now in any::<i64>()) {
        let value = BanValue::new(expires_ns, 2, 32, 1);
        let adopted = adopt(&[(net("192.0.2.1/32"), value)], now, mono, &PortScopes::default());
        if let Some(row) = adopted.first() {
            prop_assert!(row.expires_at.is_none_or(|at| at >= now));
        }
    }
}

#[test]
fn repeated_target_in_one_batch_counts_once_per_occurrence() {
    let (_dir, mut bans) = manager(BanPolicy::default());
    let results = bans.ban_many(vec![
        request("192.0.2.9/32", BanLength::Default),
        request("192.0.2.9/32", BanLength::Permanent),
    ]);
    assert!(results.iter().all(Result::is_ok));
    let listed = bans.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].count, listed[0].expires_at), (2, None));
}

#[test]
fn fleet_bans_keep_their_expiry_and_do_not_escalate() {
    let policy = BanPolicy {
        allowlist: Allowlist::new([net("198.51.100.0/24")]),
        escalation: Some(Escalation {
            factor: 1.0,
            max: Duration::from_hours(24),
        }),
        ..BanPolicy::default()
    };
    let (_dir, mut bans) = manager(policy);
    let until = unix_now() + 7200;
    let fleet = |target: &str, until: i64| BanRequest {
        source: Source::Fleet,
        ..request(target, BanLength::Until(until))
    };
    let entry = bans.ban(fleet("192.0.2.7/32", until)).expect("ban");
    assert_eq!(entry.count, 0, "a fleet ban is not a local offence");
    let expected = UNIX_EPOCH + Duration::from_secs(until.unsigned_abs());
    assert_eq!(entry.expires_at, Some(expected));
    // The next local ban is the first offence here.
    let local = bans
        .ban(request("192.0.2.7/32", BanLength::Default))
        .expect("ban");
    assert_eq!(local.count, 1);
    // A shorter remote ban does not cut a longer local one short.
    let again = bans
        .ban(fleet("192.0.2.7/32", unix_now() + 60))
        .expect("ban");
    assert_eq!(again.count, 1);
    assert_eq!(again.expires_at, local.expires_at);
    let permanent = bans.ban(fleet("192.0.2.8/32", i64::MAX)).expect("ban");
    assert_eq!(permanent.expires_at, None);
    assert!(matches!(
        bans.ban(fleet("198.51.100.9/32", until)),
        Err(BanError::Allowlisted { .. })
    ));
}

#[test]
fn the_observer_sees_bans_and_unbans_with_their_source() {
    let (_dir, mut bans) = manager(BanPolicy::default());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    bans.set_observer(
        Box::new(move |event| {
            let line = match event {
                BanEvent::Banned(rows) => format!("ban {}", rows.len()),
                BanEvent::Unbanned { source, .. } => format!("unban {source}"),
            };
            log.lock().expect("lock").push(line);
        }),
        vec![Source::Cli],
    );
    bans.ban(request("192.0.2.7/32", BanLength::Default))
        .expect("ban");
    bans.unban_from(net("192.0.2.7/32"), Source::Fleet)
        .expect("unban");
    bans.unban(net("192.0.2.7/32")).expect("unban");
    assert_eq!(*seen.lock().expect("lock"), ["ban 1", "unban fleet"]);
}

#[test]
fn a_new_offence_widens_a_live_ban_s_ports_and_never_narrows_them() {
    let dnsbl = BanScope::from_ports(&[25]);
    let sasl = BanScope::from_ports(&[465, 587, 993]);
    let policy = BanPolicy {
        scopes: PortScopes::new(&[25, 465, 587], &[dnsbl.clone(), sasl.clone()]).expect("fits"),
        ..BanPolicy::default()
    };
    let (_dir, mut bans) = manager(policy);
    let scoped = |scope: &BanScope| BanRequest {
        scope: scope.clone(),
        ..request("192.0.2.7/32", BanLength::Default)
    };
    let first = bans.ban(scoped(&dnsbl)).expect("ban");
    assert_eq!(first.ports, Some(vec![25]));
    let second = bans.ban(scoped(&sasl)).expect("ban");
    assert_eq!(second.ports, Some(vec![25, 465, 587, 993]));
    // The default scope, met with another, stands for xdp.ports.
    let third = bans
        .ban(request("192.0.2.7/32", BanLength::Default))
        .expect("ban");
    assert_eq!(third.ports, Some(vec![25, 465, 587, 993]));
    // The store keeps the widened scope.
    let stored = bans.store().all().expect("all");
    assert_eq!(stored[0].scope, BanScope::from_ports(&[25, 465, 587, 993]));
    let fresh = bans.ban(BanRequest {
        scope: dnsbl.clone(),
        ..request("192.0.2.9/32", BanLength::Default)
    });
    assert_eq!(fresh.expect("ban").ports, Some(vec![25]));
    let plain = bans
        .ban(request("192.0.2.10/32", BanLength::Default))
        .expect("ban");
    assert_eq!(plain.ports, None, "the default scope is not spelled out");
}

#[test]
fn kernel_values_carry_the_scope_bits_and_adoption_reads_them_back() {
    let scopes = PortScopes::new(&[25, 465, 587], &[BanScope::from_ports(&[25])]).expect("fits");
    let row = StoredBan {
        target: net("192.0.2.7/32"),
        expires_at: None,
        source: Source::Policy,
        reason: String::new(),
        detail: String::new(),
        count: 1,
        scope: BanScope::from_ports(&[25]),
        first_banned_at: 0,
        last_banned_at: 0,
    };
    let value = kernel_value(&Held::from(&row), 0, 1, &scopes);
    assert_eq!(value.scopes, 0b10);
    let adopted = adopt(&[(row.target, value)], 0, 1, &scopes);
    assert_eq!(adopted[0].scope, row.scope);
    let default = kernel_value(
        &Held::from(&StoredBan {
            scope: BanScope::Default,
            ..row
        }),
        0,
        1,
        &scopes,
    );
    assert_eq!(default.scopes, xdp_common::SCOPE_DEFAULT);
    assert!(
        !close_enough(&value, &default),
        "a scope change is rewritten"
    );
}

#[test]
fn purge_deletes_old_history_from_store_and_index_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open_in(dir.path()).expect("store"));
    let now = unix_now();
    let old = now - 40 * 86_400;
    let row = |target: &str, expires_at: Option<i64>, last: i64| StoredBan {
        target: net(target),
        expires_at,
        source: Source::Cli,
        reason: "r".into(),
        detail: String::new(),
        count: 1,
        scope: BanScope::Default,
        first_banned_at: last,
        last_banned_at: last,
    };
    store
        .put_bans(&[
            row("192.0.2.1/32", Some(old + 60), old),
            row("192.0.2.2/32", None, old),
            row("192.0.2.3/32", Some(now + 60), now),
            row("2001:db8::/64", Some(old + 60), old),
        ])
        .expect("put");
    let xdp = XdpBackend {
        dataplane: None,
        enforcing: false,
        note: "test".into(),
    };
    let policy = BanPolicy {
        history_age: Duration::from_hours(30 * 24),
        ..BanPolicy::default()
    };
    let mut bans = BanManager::new(Arc::clone(&store), xdp, None, policy).expect("manager");
    assert_eq!(bans.purge().expect("purge"), 2, "the two ended a month ago");
    let left: Vec<IpNet> = store
        .all()
        .expect("all")
        .into_iter()
        .map(|r| r.target)
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&net("192.0.2.2/32")) && left.contains(&net("192.0.2.3/32")));
    assert!(bans.index.get(&net("192.0.2.1/32")).is_none());
    assert!(bans.index.get(&net("2001:db8::/64")).is_none());
    assert!(
        bans.index.get(&net("192.0.2.2/32")).is_some(),
        "a permanent ban stays"
    );
    assert_eq!(bans.purge().expect("purge"), 0);
}

/// A bulk ban large enough to write the index beside the store: when the
/// store refuses it (another connection holds the write lock past the
/// busy timeout), every target is refused and the index is as it was,
/// a repeat offender's row included.
#[test]
fn a_bulk_ban_the_store_refuses_leaves_the_index_as_it_was() {
    let (_dir, mut bans) = manager(BanPolicy {
        default_bantime: Some(Duration::from_mins(10)),
        ..BanPolicy::default()
    });
    let repeat = net("192.0.2.7/32");
    let first = bans
        .ban(request("192.0.2.7/32", BanLength::Default))
        .expect("ban");
    let mut targets: Vec<IpNet> = (0_u32..)
        .take(2 * PARALLEL_WRITE)
        .map(|i| IpNet::V4(Ipv4Net::from(std::net::Ipv4Addr::from(0x0A00_0000 + i))))
        .collect();
    targets.push(repeat);

    let blocker = rusqlite::Connection::open(bans.store().path()).expect("second connection");
    blocker
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");
    let requests = bulk_requests(&targets, BanLength::Default, Source::Cli, "bulk");
    let (banned, refused) = bans.ban_bulk(requests, Breadth::Bounded);
    blocker.execute_batch("ROLLBACK").expect("release");

    assert_eq!(banned, 0);
    assert_eq!(refused.len(), targets.len(), "every target refused");
    let held = bans
        .index
        .get(&repeat)
        .expect("the earlier ban is still held");
    assert_eq!(
        (held.count, held.source, held.expires_at),
        (
            1,
            Source::Logwatch,
            first
                .expires_at
                .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                .map(|d| i64::try_from(d.as_secs()).expect("seconds"))
        ),
        "the earlier ban, as it was"
    );
    assert!(
        targets[..targets.len() - 1]
            .iter()
            .all(|target| !bans.index.contains(target)),
        "no refused target left in the index"
    );
    assert_eq!(bans.index.len(), 1);
}
