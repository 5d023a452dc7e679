//! `cargo xtask bench fleet`: bans shared through a real `redis-server`
//! between three daemons, each in its own namespace.
//!
//! Latency: `spamwall ban ADDR` on A (the CLI process included) until the
//! entry is in B's pinned kernel map, read directly with the dataplane
//! (no CLI in the measuring loop); p50/p99 over 200 bans
//! made one after another. Throughput: `ban --file` with 100,000 addresses
//! on A until both B and C hold every one in their kernel maps.
//! `--smoke`: five latency samples and a burst of two hundred.

#![expect(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::{
    fmt::Write as _,
    net::Ipv6Addr,
    time::{Duration, Instant},
};

use ipnet::{IpNet, Ipv6Net};
use spamwall::dataplane::{Capacities, Dataplane};
use spamwall_tests::{
    bench,
    daemon::{Daemon, Settings},
    netns::{NetnsPair, Subnet},
    redis::RedisServer,
};

const CAPACITY: u32 = 1 << 18;
const DEADLINE: Duration = Duration::from_mins(5);

struct Node {
    daemon: Daemon,
    _pair: NetnsPair,
}

fn node(redis: &RedisServer, name: &str) -> Node {
    let pair = NetnsPair::new(Subnet::test_net_1(1));
    let mut settings = Settings::on(pair.server());
    settings.capacity = CAPACITY;
    settings.extra = format!(
        "[fleet]\nredis = {:?}\nnode = {name:?}\nshare = [\"policy\", \"logwatch\", \"cli\"]\n",
        redis.url()
    );
    let daemon = Daemon::start(pair.server(), &settings);
    Node {
        daemon,
        _pair: pair,
    }
}

/// B's (or C's) maps, opened from the daemon's pins.
fn maps(node: &Node) -> Dataplane {
    Dataplane::load(
        node.daemon.pin_dir(),
        Capacities {
            v4: CAPACITY,
            v6: CAPACITY,
            prefix_v4: 256,
            prefix_v6: 256,
        },
    )
    .unwrap()
}

fn host(block: u16, i: u32) -> IpNet {
    let [hi, lo] = [(i >> 16) as u16, (i & 0xffff) as u16];
    IpNet::V6(Ipv6Net::new(Ipv6Addr::new(0x2001, 0xdb8, block, 0, 0, 0, hi, lo), 128).unwrap())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short list"
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    bench::require_root("bench fleet");
    assert!(
        RedisServer::available(),
        "cannot measure the fleet: redis-server is not installed (apt-get install redis-server; cargo xtask setup installs it)"
    );
    let latency_samples: u32 = bench::size(200, 5);
    let burst: u32 = bench::size(100_000, 200);
    let redis = RedisServer::start();
    let a = node(&redis, "mx-a");
    let b = node(&redis, "mx-b");
    let c = node(&redis, "mx-c");
    let b_maps = maps(&b);
    let c_maps = maps(&c);

    let mut latencies = Vec::new();
    let mut acks = Vec::new();
    for i in 0..latency_samples {
        let target = host(0xff01, i);
        let text = target.addr().to_string();
        let started = Instant::now();
        a.daemon.cli_ok(&["ban", &text, "--reason", "bench"]);
        acks.push(started.elapsed());
        while b_maps.get(target).unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{text} never reached B"
            );
            std::hint::spin_loop();
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    acks.sort();

    let mut list = String::with_capacity(burst as usize * 24);
    for i in 0..burst {
        let _ = writeln!(list, "{}", host(0xff02, i).addr());
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &list).unwrap();
    let path = file.path().to_str().unwrap().to_owned();
    let burst_block: IpNet = "2001:db8:ff02::/48".parse().unwrap();
    let count = |maps: &Dataplane| {
        maps.entries()
            .unwrap()
            .iter()
            .filter(|(net, _)| burst_block.contains(net))
            .count()
    };
    let started = Instant::now();
    a.daemon
        .cli_ok(&["ban", "--file", &path, "--reason", "bench burst"]);
    let acked = started.elapsed();
    let mut done = [None, None];
    while done.iter().any(Option::is_none) {
        assert!(
            started.elapsed() < DEADLINE,
            "the burst did not arrive within {DEADLINE:?}: B {}, C {}",
            count(&b_maps),
            count(&c_maps)
        );
        for (slot, maps) in done.iter_mut().zip([&b_maps, &c_maps]) {
            if slot.is_none() && count(maps) == burst as usize {
                *slot = Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let [on_b, on_c] = done.map(Option::unwrap);
    let all = on_b.max(on_c);

    if bench::smoke() {
        println!("smoke run: the figures mean nothing");
    }
    println!("fleet: 3 daemons, redis-server on a unix socket");
    println!(
        "latency `ban` on A -> entry in B's kernel map, {latency_samples} bans: p50 {:.2} ms, p99 {:.2} ms (A's CLI ack alone: p50 {:.2} ms)",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&acks, 0.5).as_secs_f64() * 1e3,
    );
    println!(
        "burst {burst} addresses: A acked in {:.2} s; all in B's map after {:.2} s, in C's after {:.2} s; {:.0} bans/s across the fleet",
        acked.as_secs_f64(),
        on_b.as_secs_f64(),
        on_c.as_secs_f64(),
        f64::from(burst) / all.as_secs_f64()
    );
    drop((a, b, c));
}
