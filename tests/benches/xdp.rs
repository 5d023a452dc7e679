//! Per-packet cost of spamwall's XDP program against xdp-filter and an
//! empty program, all measured with `BPF_PROG_TEST_RUN` on the same frames.
//!
//! `cargo bench -p spamwall-tests --bench xdp` (root). Each figure is the
//! median of [`runs`] calls of [`repeat`] repetitions, timed by the calling
//! thread's CPU clock. The floor, spamwall and xdp-filter are measured in
//! the same rounds, case by case, so a busy machine slows all three alike;
//! each row's ratio (spamwall − floor) / (xdp-filter − floor) is printed
//! with whether it meets [`TARGET_RATIO`]. First with one ban per family
//! in spamwall and one source filter per family in xdp-filter, then with
//! 1,000,000 IPv4 and 1,000,000 IPv6 bans in spamwall and xdp-filter's
//! filters at their 10,000-entry cap. xdp-filter (Debian's xdp-tools) is
//! attached in skb mode to a veth in a private network namespace. No
//! packet is sent: the veth stays down. Everything created is removed on
//! exit, also on error. `--smoke`: a thousand repetitions and bans, one
//! round, a hundred xdp-filter entries. Without xdp-filter, or when it
//! cannot be measured, the benchmark fails.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use ipnet::IpNet;
use spamwall::dataplane::{self, Capacities, Dataplane, TestRun};
use spamwall_tests::{
    PinDir, XDP_DROP, XDP_PASS, bench,
    frames::{BANNED_V4, BANNED_V6, CLEAN_V4, CLEAN_V6, DST_V4, DST_V6, Extension, FrameBuilder},
};
use xdp_common::{BanValue, SOURCE_CLI};

#[path = "xdp/contention.rs"]
mod contention;
#[path = "xdp/floor.rs"]
mod floor;
#[path = "xdp/xdp_filter.rs"]
mod xdp_filter;

use floor::FloorProgram;
use xdp_filter::{XdpFilterSetup, fill_xdp_filter};

/// Repetitions per `BPF_PROG_TEST_RUN` call.
fn repeat() -> u32 {
    bench::size(10_000_000, 1_000)
}

/// Calls per figure; the median is reported.
fn runs() -> usize {
    bench::size(5, 1)
}

/// Bans per family in the large-map column.
fn bulk() -> u32 {
    bench::size(1_000_000, 1_000)
}

/// Entries per xdp-filter map: its cap (`MAX_FILTERS` in xdp-tools 1.3).
fn xdp_filter_entries() -> u32 {
    bench::size(10_000, 100)
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    /// The action both programs should return.
    action: u32,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "IPv4 hit",
            frame: FrameBuilder::ipv4(BANNED_V4, DST_V4).build(),
            action: XDP_DROP,
        },
        Case {
            name: "IPv4 miss",
            frame: FrameBuilder::ipv4(CLEAN_V4, DST_V4).build(),
            action: XDP_PASS,
        },
        Case {
            name: "IPv6 hit",
            frame: FrameBuilder::ipv6(BANNED_V6, DST_V6).build(),
            action: XDP_DROP,
        },
        Case {
            name: "IPv6 miss",
            frame: FrameBuilder::ipv6(CLEAN_V6, DST_V6).build(),
            action: XDP_PASS,
        },
        Case {
            name: "IPv6 + dstopts hit",
            frame: FrameBuilder::ipv6(BANNED_V6, DST_V6)
                .extension(Extension::DESTINATION_OPTIONS)
                .build(),
            action: XDP_DROP,
        },
        Case {
            name: "IPv6 + dstopts miss",
            frame: FrameBuilder::ipv6(CLEAN_V6, DST_V6)
                .extension(Extension::DESTINATION_OPTIONS)
                .build(),
            action: XDP_PASS,
        },
        Case {
            name: "IPv4 in VLAN hit",
            frame: FrameBuilder::ipv4(BANNED_V4, DST_V4).vlan(100).build(),
            action: XDP_DROP,
        },
        Case {
            name: "truncated IPv4",
            frame: spamwall_tests::frames::truncated(
                &FrameBuilder::ipv4(BANNED_V4, DST_V4).build(),
                14 + 16,
            ),
            action: XDP_PASS,
        },
    ]
}

/// One measured figure: the median ns/packet and the action returned.
#[derive(Clone, Copy)]
struct Figure {
    ns: f64,
    action: u32,
}

/// The ratio every row must meet: (spamwall − floor) / (xdp-filter − floor).
const TARGET_RATIO: f64 = 0.8;

/// One `BPF_PROG_TEST_RUN` call of `repeat` repetitions, timed by this
/// thread's CPU clock (the call runs on it, and time spent preempted does
/// not count): ns per repetition with the fraction the kernel's own
/// figure, a whole number, rounds away.
fn timed_run(run: &mut impl FnMut(u32) -> Result<TestRun>, repeat: u32) -> Result<(f64, TestRun)> {
    let start = thread_cpu_ns();
    let result = run(repeat)?;
    let spent = thread_cpu_ns() - start;
    Ok((spent / f64::from(repeat), result))
}

fn thread_cpu_ns() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    #[expect(clippy::cast_precision_loss, reason = "seconds since thread start")]
    let ns = ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64;
    ns
}

/// A program under measurement: a name for errors and how to run it.
type Runner<'a> = (&'a str, Box<dyn FnMut(&[u8], u32) -> Result<TestRun> + 'a>);

/// Measures every program on every case, interleaved: each of [`runs`]
/// rounds runs each case on each program once, so all of them share the
/// machine's conditions; after one shorter warm-up call each. Returns the
/// median per program and case; every call must return the same action.
fn measure_interleaved(programs: &mut [Runner<'_>], cases: &[Case]) -> Result<Vec<Vec<Figure>>> {
    let mut samples = vec![vec![Vec::with_capacity(runs()); cases.len()]; programs.len()];
    let mut actions = vec![vec![0; cases.len()]; programs.len()];
    for (p, (_, run)) in programs.iter_mut().enumerate() {
        for (c, case) in cases.iter().enumerate() {
            actions[p][c] = run(&case.frame, repeat() / 10)?.action;
        }
    }
    for _ in 0..runs() {
        for (c, case) in cases.iter().enumerate() {
            for (p, (name, run)) in programs.iter_mut().enumerate() {
                let (ns, result) = timed_run(&mut |repeat| run(&case.frame, repeat), repeat())?;
                ensure!(
                    result.action == actions[p][c],
                    "{name} on {}: action changed between runs: {} then {}",
                    case.name,
                    actions[p][c],
                    result.action
                );
                samples[p][c].push(ns);
            }
        }
    }
    Ok(samples
        .into_iter()
        .zip(actions)
        .map(|(per_case, actions)| {
            per_case
                .into_iter()
                .zip(actions)
                .map(|(mut ns, action)| {
                    ns.sort_by(f64::total_cmp);
                    Figure {
                        ns: ns[ns.len() / 2],
                        action,
                    }
                })
                .collect()
        })
        .collect())
}

/// Floor, spamwall and xdp-filter measured together on every case.
struct Phase {
    floor: Vec<Figure>,
    spamwall: Vec<Figure>,
    xdp_filter: Vec<Figure>,
}

fn measure_phase(
    spamwall: &Dataplane,
    xdp_filter_id: u32,
    floor_id: u32,
    cases: &[Case],
) -> Result<Phase> {
    let mut programs: Vec<Runner<'_>> = vec![
        (
            "the floor",
            Box::new(move |frame: &[u8], repeat| {
                Ok(dataplane::test_run_program_id(floor_id, frame, repeat)?)
            }),
        ),
        (
            "spamwall",
            Box::new(|frame: &[u8], repeat| Ok(spamwall.test_run(frame, repeat)?)),
        ),
        (
            "xdp-filter",
            Box::new(move |frame: &[u8], repeat| {
                Ok(dataplane::test_run_program_id(
                    xdp_filter_id,
                    frame,
                    repeat,
                )?)
            }),
        ),
    ];
    let mut figures = measure_interleaved(&mut programs, cases)?.into_iter();
    let (Some(floor), Some(spamwall), Some(xdp_filter)) =
        (figures.next(), figures.next(), figures.next())
    else {
        bail!("three programs measured, fewer figures returned");
    };
    for (case, figure) in cases.iter().zip(&spamwall) {
        ensure!(
            figure.action == case.action,
            "spamwall on {}: action {}, expected {}",
            case.name,
            figure.action,
            case.action
        );
    }
    for figure in &floor {
        ensure!(
            figure.action == XDP_PASS,
            "the floor program returned {}",
            figure.action
        );
    }
    Ok(Phase {
        floor,
        spamwall,
        xdp_filter,
    })
}

/// spamwall alone on every case (the port-scoped column, which has no
/// counterpart in xdp-filter's setup).
fn measure_spamwall(dataplane: &Dataplane, cases: &[Case]) -> Result<Vec<Figure>> {
    let mut programs: Vec<Runner<'_>> = vec![(
        "spamwall",
        Box::new(|frame: &[u8], repeat| Ok(dataplane.test_run(frame, repeat)?)),
    )];
    let figures = measure_interleaved(&mut programs, cases)?.remove(0);
    for (case, figure) in cases.iter().zip(&figures) {
        ensure!(
            figure.action == case.action,
            "spamwall on {}: action {}, expected {}",
            case.name,
            figure.action,
            case.action
        );
    }
    Ok(figures)
}

/// A ban that expires in a day, so the program takes the expiry branch.
fn live_ban() -> BanValue {
    let expires_ns = dataplane::monotonic_now_ns() + 86_400 * 1_000_000_000;
    BanValue::new(expires_ns, SOURCE_CLI, 32, 1)
}

fn main() -> Result<()> {
    bench::require_root("xdp bench");
    bench::require_peer(
        "xdp-filter",
        "xdp-filter",
        "apt-get install xdp-tools; cargo xtask setup installs it",
    );
    let cases = cases();
    let mut report = String::new();

    // Loading spamwall first also mounts bpffs when it is missing.
    let pin = PinDir::new();
    let mut spamwall = Dataplane::load(pin.path(), Capacities::default())
        .with_context(|| format!("loading spamwall in {}", pin.path().display()))?;
    for addr in [IpAddr::V4(BANNED_V4), IpAddr::V6(BANNED_V6)] {
        spamwall.insert(IpNet::from(addr), live_ban())?;
    }
    let floor = FloorProgram::load()?;
    // The comparison is the point: without it the benchmark fails.
    let xdp_filter = XdpFilterSetup::start()
        .context("cannot measure xdp-filter, the program spamwall is compared with")?;
    let filter = xdp_filter.load()?;
    let (xdp_filter_id, xdp_filter_name) = filter.program()?;

    let one_ban = measure_phase(&spamwall, xdp_filter_id, floor.id, &cases)?;
    // The same with port scoping, which walks IPv6 extension headers to
    // the TCP port (every frame goes to port 25).
    spamwall.set_ports(&[25])?;
    let scoped = measure_spamwall(&spamwall, &cases)?;
    spamwall.set_ports(&[])?;
    let contention = contention::measure(&mut spamwall)?;

    let ban = live_ban();
    // 10.0.0.0/8 and 2001:db8:ffff::/48: never the measured sources.
    let bulk = bulk();
    let v4_bulk: Vec<(IpNet, BanValue)> = (0..bulk)
        .map(|i| {
            (
                IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | i))),
                ban,
            )
        })
        .collect();
    let v6_bulk: Vec<(IpNet, BanValue)> = (0..bulk)
        .map(|i| {
            let addr =
                Ipv6Addr::from(0x2001_0db8_ffff_0000_0000_0000_0000_0000_u128 | u128::from(i));
            (IpNet::from(IpAddr::V6(addr)), ban)
        })
        .collect();
    let v4_took =
        timed(|| spamwall.insert_many(&v4_bulk)).context(format!("inserting {bulk} IPv4 bans"))?;
    let v6_took =
        timed(|| spamwall.insert_many(&v6_bulk)).context(format!("inserting {bulk} IPv6 bans"))?;
    let held = count_held(&spamwall, &v4_bulk, &v6_bulk)?;
    for addr in [IpAddr::V4(BANNED_V4), IpAddr::V6(BANNED_V6)] {
        ensure!(
            spamwall.get(IpNet::from(addr))?.is_some(),
            "the LRU map evicted the measured ban on {addr} while loading the bulk"
        );
    }
    let filled = fill_xdp_filter(&mut report)?;
    let million = measure_phase(&spamwall, xdp_filter_id, floor.id, &cases)?;
    let capacities = spamwall.capacities()?;
    writeln!(
        report,
        "spamwall insert_many: {bulk} IPv4 bans in {} ({:.0} bans/s), {bulk} IPv6 bans in {} ({:.0} bans/s); held afterwards {} + {} (map capacity {} / {})",
        millis(v4_took),
        f64::from(bulk) / v4_took.as_secs_f64(),
        millis(v6_took),
        f64::from(bulk) / v6_took.as_secs_f64(),
        held.0,
        held.1,
        capacities.v4,
        capacities.v6,
    )?;
    writeln!(
        report,
        "xdp-filter: program {xdp_filter_name} (id {xdp_filter_id}) in skb mode, policy allow, features ipv4,ipv6; \
         1 source filter per family in the 1-ban columns, {} IPv4 + {} IPv6 (its cap) in the 1M columns",
        filled.0, filled.1
    )?;
    drop(filter);
    drop(xdp_filter);
    drop(floor);
    drop(spamwall);
    drop(pin);

    print_table(&cases, &one_ban, &scoped, &million);
    println!("{}", contention::line(&contention));
    print!("{report}");
    Ok(())
}

fn print_table(cases: &[Case], one_ban: &Phase, scoped: &[Figure], million: &Phase) {
    println!(
        "ns/packet, BPF_PROG_TEST_RUN, median of {} interleaved rounds x {} repeats ({} CPUs), timed by the thread's CPU clock{}",
        runs(),
        repeat(),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        if bench::smoke() {
            "; smoke run: the figures mean nothing"
        } else {
            ""
        }
    );
    println!(
        "frames: TCP SYN to port 25 from a banned (hit) or clean (miss) source; truncated = Ethernet + 16 bytes of IPv4 header; \
         dstopts = one 8-byte IPv6 Destination Options header before TCP; ports [25] = xdp.ports set, extension headers walked to the port"
    );
    println!(
        "ratio = (spamwall - floor) / (xdp-filter - floor), each figure from the same rounds; target <= {TARGET_RATIO}"
    );
    println!(
        "| {:<27} | {:>5} | {:>8} | {:>8} | {:>8} | {:>5} | {:>7} | {:>8} | {:>8} | {:>5} | {:>7} | {:>7} |",
        "case",
        "floor",
        "sw 1 ban",
        "xf 1",
        "ratio",
        "",
        "floor",
        "sw 1M",
        "xf 10k",
        "ratio",
        "",
        "+ports"
    );
    println!(
        "|{:-<29}|{:->7}|{:->10}|{:->10}|{:->10}|{:->7}|{:->9}|{:->10}|{:->10}|{:->7}|{:->9}|{:->9}|",
        "", "", "", "", "", "", "", "", "", "", "", ""
    );
    for (i, case) in cases.iter().enumerate() {
        let (ratio_1, verdict_1) = ratio(case, one_ban, i);
        let (ratio_m, verdict_m) = ratio(case, million, i);
        println!(
            "| {:<27} | {:>5.1} | {:>8.1} | {:>8} | {:>8} | {:>5} | {:>7.1} | {:>8.1} | {:>8} | {:>5} | {:>7} | {:>7.1} |",
            format!("{} ({})", case.name, action_name(case.action)),
            one_ban.floor[i].ns,
            one_ban.spamwall[i].ns,
            filter_figure(case, one_ban.xdp_filter[i]),
            ratio_1,
            verdict_1,
            million.floor[i].ns,
            million.spamwall[i].ns,
            filter_figure(case, million.xdp_filter[i]),
            ratio_m,
            verdict_m,
            scoped[i].ns,
        );
    }
}

/// xdp-filter's figure, with its action when it is not the expected one.
fn filter_figure(case: &Case, figure: Figure) -> String {
    if figure.action == case.action {
        format!("{:.1}", figure.ns)
    } else {
        format!("{:.1} {}", figure.ns, action_name(figure.action))
    }
}

/// The ratio of row `i` and whether it meets [`TARGET_RATIO`].
fn ratio(case: &Case, phase: &Phase, i: usize) -> (String, &'static str) {
    let floor = phase.floor[i].ns;
    let ours = phase.spamwall[i].ns - floor;
    let theirs = phase.xdp_filter[i].ns - floor;
    // Within the noise of the floor, or on a different verdict, a ratio
    // means nothing.
    if theirs < 3.0 || phase.xdp_filter[i].action != case.action {
        return ("n/a".to_owned(), "");
    }
    let ratio = ours / theirs;
    let verdict = if ratio <= TARGET_RATIO {
        "met"
    } else {
        "NOT met"
    };
    (format!("{ratio:.2}"), verdict)
}

fn action_name(action: u32) -> &'static str {
    match action {
        0 => "ABORTED",
        XDP_DROP => "DROP",
        XDP_PASS => "PASS",
        3 => "TX",
        4 => "REDIRECT",
        _ => "?",
    }
}

fn timed(f: impl FnOnce() -> Result<(), dataplane::DataplaneError>) -> Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

fn millis(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// How many of the bulk bans each map still holds: an LRU map may evict
/// before it is full.
fn count_held(
    dataplane: &Dataplane,
    v4: &[(IpNet, BanValue)],
    v6: &[(IpNet, BanValue)],
) -> Result<(usize, usize)> {
    let count = |bans: &[(IpNet, BanValue)]| -> Result<usize> {
        let mut held = 0;
        for (net, _) in bans {
            held += usize::from(dataplane.get(*net)?.is_some());
        }
        Ok(held)
    };
    Ok((count(v4)?, count(v6)?))
}
