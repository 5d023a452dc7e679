//! `cargo xtask bench bans`: bulk bans end to end, next to fail2ban.
//!
//! spamwall: `spamwall ban --file` with 300,000 addresses — the size of a
//! distributed attack a postscreen user reported — against a running
//! daemon: file read, control socket, validation, the `SQLite` store
//! (committed before the answer), and the kernel maps. Then the same file
//! again (every address a repeat offender). fail2ban: the same kind of
//! bans through its control socket, one `banip` each over one persistent
//! connection, into a jail whose action touches no firewall — the fastest
//! fail2ban can go. Printed side by side with the ratio.

#![expect(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use spamwall_tests::{
    daemon::{Daemon, Settings},
    fail2ban::{Fail2banServer, JAIL},
    netns::{NetnsPair, Subnet},
    require_root,
};

const BULK: u32 = 300_000;
const FAIL2BAN_BANS: u32 = 1_000;

fn main() {
    if !require_root("bench bans") {
        return;
    }
    let net = NetnsPair::new(Subnet::test_net_2(42));
    let mut settings = Settings::on(net.server());
    settings.interfaces = Vec::new();
    settings.capacity = 1 << 20;
    let daemon = Daemon::start(net.server(), &settings);

    let mut list = String::with_capacity(BULK as usize * 14);
    for i in 0..BULK {
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
        u64::from(BULK),
        "every address banned: {stats}"
    );
    let repeat = timed(|| daemon.cli_ok(&["ban", "--file", &path, "--reason", "bench"]));
    drop(daemon);

    let server = Fail2banServer::start();
    let mut client = server.client();
    let targets: Vec<IpNet> = (0..FAIL2BAN_BANS)
        .map(|i| IpNet::from(std::net::IpAddr::from(Ipv4Addr::from(0x6440_0000 + i))))
        .collect();
    let started = Instant::now();
    for target in &targets {
        client.ban(JAIL, *target).unwrap();
    }
    let f2b = started.elapsed();

    let rate = |n: u32, d: Duration| f64::from(n) / d.as_secs_f64();
    println!("bulk bans, end to end (median of one run each; 2 CPUs)");
    println!("| system | bans | time | bans/s |");
    println!("|---|---:|---:|---:|");
    println!(
        "| spamwall ban --file (new addresses) | {BULK} | {:.0} ms | {:.0} |",
        ms(fresh),
        rate(BULK, fresh)
    );
    println!(
        "| spamwall ban --file (all repeat offenders) | {BULK} | {:.0} ms | {:.0} |",
        ms(repeat),
        rate(BULK, repeat)
    );
    println!(
        "| fail2ban banip over its socket (no-op action) | {FAIL2BAN_BANS} | {:.0} ms | {:.0} |",
        ms(f2b),
        rate(FAIL2BAN_BANS, f2b)
    );
    println!(
        "ratio spamwall/fail2ban (bans/s): {:.0}x",
        rate(BULK, fresh) / rate(FAIL2BAN_BANS, f2b)
    );
    println!(
        "target: 300,000 bans well under 1 s end to end: {}",
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
