//! `cargo xtask bench feeds`: a 200,000-entry blocklist applied end to end
//! by the real daemon: fetched over HTTP from a real server on loopback
//! (`tests/feeds/feed_server.py`), parsed, diffed, written to the store
//! and the kernel maps. Timed from the server's answer to `status`
//! reporting every entry (polled every 10 ms over the control socket);
//! then every entry is checked in the pinned kernel maps. A second row: a
//! refresh that drops 2,000 entries and adds 1,000. Target: under 1 s.
//! `--smoke`: 2,000 entries.

#![expect(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant, SystemTime},
};

use ipnet::IpNet;
use spamwall::dataplane::{Capacities, Dataplane};
use spamwall_tests::{
    bench,
    daemon::{Daemon, Settings},
    feed_server::FeedServer,
    netns::{NetnsPair, Subnet},
};

const CAPACITY: u32 = 1 << 19;
const DEADLINE: Duration = Duration::from_mins(2);
const TARGET: Duration = Duration::from_secs(1);

/// Entry `n` (from 1): 10.0.0.1 onwards, listed, never sent to.
fn entry(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 | n)
}

fn list(range: impl Iterator<Item = u32>) -> String {
    let mut text = String::from("# generated\n");
    for n in range {
        let _ = writeln!(text, "{} ; entry", entry(n));
    }
    text
}

fn feed_line(daemon: &Daemon) -> String {
    daemon.status()["feeds"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until the feed reports `entries` after a `200` served after
/// `served_after`; returns the time from that answer.
fn time_until(
    daemon: &Daemon,
    server: &FeedServer,
    entries: usize,
    served_after: usize,
) -> Duration {
    let started = Instant::now();
    let wanted = format!(": {entries} entries");
    while !feed_line(daemon).contains(&wanted) {
        assert!(
            started.elapsed() < DEADLINE,
            "{entries} entries not applied within {DEADLINE:?}: {}\n{}",
            feed_line(daemon),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let done = SystemTime::now();
    let answer = server
        .requests()
        .into_iter()
        .skip(served_after)
        .find(|r| r.status == 200)
        .expect("the server answered 200");
    done.duration_since(answer.at).unwrap_or_default()
}

fn main() {
    bench::require_root("feeds");
    let entries: u32 = bench::size(200_000, 2_000);
    let net = NetnsPair::new(Subnet::test_net_1(150));
    let server = FeedServer::start(Some(net.server()));
    server.serve("big.txt", list(1..=entries).as_bytes());
    let mut settings = Settings::on(net.server());
    settings.capacity = CAPACITY;
    settings.extra = format!(
        "[[feed]]\nname = \"big\"\nurl = \"{}\"\nformat = \"plain\"\nrefresh = \"1s\"\nbantime = \"1h\"\n",
        server.url("big.txt")
    );
    let daemon = Daemon::start(net.server(), &settings);
    let first = time_until(&daemon, &server, entries as usize, 0);

    let maps = Dataplane::load(
        daemon.pin_dir(),
        Capacities {
            v4: CAPACITY,
            v6: CAPACITY,
            prefix_v4: 256,
            prefix_v6: 256,
        },
    )
    .unwrap();
    let missing = (1..=entries)
        .filter(|&n| {
            maps.get(IpNet::from(IpAddr::from(entry(n))))
                .unwrap()
                .is_none()
        })
        .count();
    assert_eq!(missing, 0, "entries missing from the kernel maps");

    let dropped = entries / 100;
    let added = entries / 200;
    let before = server.requests().len();
    server.serve(
        "big.txt",
        list((dropped + 1)..=(entries + added)).as_bytes(),
    );
    let after = (entries - dropped + added) as usize;
    let refresh = time_until(&daemon, &server, after, before);

    // The daemon's own account: fetch and parse, ban manager, store.
    for line in daemon
        .log()
        .lines()
        .filter(|l| l.contains("feed applied") && !l.contains("added=0 lifted=0"))
    {
        eprintln!("{line}");
    }
    let verdict = |took: Duration| if took < TARGET { "within" } else { "OVER" };
    println!(
        "feeds: first load of {entries} entries over HTTP (fetch, parse, diff, store, kernel maps): {:.3} s ({} the {} s target)",
        first.as_secs_f64(),
        verdict(first),
        TARGET.as_secs()
    );
    println!(
        "feeds: refresh dropping {dropped} and adding {added} of {entries}: {:.3} s ({} the {} s target)",
        refresh.as_secs_f64(),
        verdict(refresh),
        TARGET.as_secs()
    );
}
