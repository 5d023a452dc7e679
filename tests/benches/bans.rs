//! `cargo xtask bench bans`: bulk bans end to end, next to fail2ban.
//!
//! spamwall: `spamwall ban --file` with 300,000 addresses — the size of a
//! distributed attack a postscreen user reported — against a running
//! daemon: file read, control socket, validation, the `SQLite` store
//! (committed before the answer), and the kernel maps. Then the same file
//! again (every address a repeat offender). fail2ban: the same kind of
//! bans through its control socket, one `banip` each over one persistent
//! connection, into a jail whose action touches no firewall — the fastest
//! fail2ban can go. Printed side by side with the ratio. `--smoke`: a
//! thousand addresses and twenty fail2ban bans. Without fail2ban the
//! benchmark fails.

#![expect(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use spamwall_tests::{
    bench,
    daemon::{Daemon, Settings},
    fail2ban::{Fail2banServer, JAIL},
    netns::{NetnsPair, Subnet},
};

fn main() {
    bench::require_root("bench bans");
    bench::require_peer(
        "fail2ban",
        "fail2ban-server",
        "apt-get install fail2ban; cargo xtask setup installs it",
    );
    let bulk: u32 = bench::size(300_000, 1_000);
    let fail2ban_bans: u32 = bench::size(1_000, 20);
    let net = NetnsPair::new(Subnet::test_net_2(42));
    let mut settings = Settings::on(net.server());
    settings.interfaces = Vec::new();
    settings.capacity = 1 << 20;
    let daemon = Daemon::start(net.server(), &settings);

    let mut list = String::with_capacity(bulk as usize * 14);
    for i in 0..bulk {
        // 100.64.0.0/10 and up: distinct, never the test subnets.
        let _ = writeln!(list, "{}", Ipv4Addr::from(0x6440_0000 + i));
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &list).unwrap();
    let path = file.path().to_str().unwrap().to_owned();

    let fresh = timed(|| daemon.cli_ok(&["ban", "--file", &path, "--reason", "bench"]));
    let stats = daemon.stats();
    assert_eq!(
        stats["bans_v4"],
        u64::from(bulk),
        "every address banned: {stats}"
    );
    let repeat = timed(|| daemon.cli_ok(&["ban", "--file", &path, "--reason", "bench"]));
    drop(daemon);

    let server = Fail2banServer::start();
    let mut client = server.client();
    let targets: Vec<IpNet> = (0..fail2ban_bans)
        .map(|i| IpNet::from(std::net::IpAddr::from(Ipv4Addr::from(0x6440_0000 + i))))
        .collect();
    let started = Instant::now();
    for target in &targets {
        client.ban(JAIL, *target).unwrap();
    }
    let f2b = started.elapsed();
    let held = server.cli_banned(JAIL).len();
    assert_eq!(
        held,
        fail2ban_bans as usize,
        "cannot measure fail2ban: its jail holds {held} of the {fail2ban_bans} bans sent; log:\n{}",
        server.log()
    );

    let rate = |n: u32, d: Duration| f64::from(n) / d.as_secs_f64();
    if bench::smoke() {
        println!("smoke run: the figures mean nothing");
    }
    println!("bulk bans, end to end (median of one run each; 2 CPUs)");
    println!("| system | bans | time | bans/s |");
    println!("|---|---:|---:|---:|");
    println!(
        "| spamwall ban --file (new addresses) | {bulk} | {:.0} ms | {:.0} |",
        ms(fresh),
        rate(bulk, fresh)
    );
    println!(
        "| spamwall ban --file (all repeat offenders) | {bulk} | {:.0} ms | {:.0} |",
        ms(repeat),
        rate(bulk, repeat)
    );
    println!(
        "| fail2ban banip over its socket (no-op action) | {fail2ban_bans} | {:.0} ms | {:.0} |",
        ms(f2b),
        rate(fail2ban_bans, f2b)
    );
    println!(
        "ratio spamwall/fail2ban (bans/s): {:.0}x",
        rate(bulk, fresh) / rate(fail2ban_bans, f2b)
    );
    println!(
        "target: 300,000 bans well under 1 s end to end ({bulk} here): {}",
        if fresh < Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        }
    );
}

fn timed(f: impl FnOnce() -> String) -> Duration {
    let started = Instant::now();
    let out = f();
    let elapsed = started.elapsed();
    assert!(out.contains("banned"), "{out}");
    elapsed
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
