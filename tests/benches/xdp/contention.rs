//! The drop path run on every CPU at once: all CPUs hitting one banned
//! address, whose hit counters they then share, against each CPU hitting
//! a banned address of its own.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Barrier,
};

use anyhow::{Context as _, Result, ensure};
use ipnet::IpNet;
use spamwall::dataplane::{self, Dataplane};
use spamwall_tests::{XDP_DROP, bench, frames::FrameBuilder};

use super::{BANNED_V4, DST_V4, live_ban, thread_cpu_ns};

/// The ratio the shared row must meet: shared / own.
pub const TARGET: f64 = 1.10;

/// Both figures, ns/packet averaged over the CPUs, and how many CPUs.
pub struct Contention {
    pub cpus: usize,
    pub shared: f64,
    pub own: f64,
}

impl Contention {
    pub fn ratio(&self) -> f64 {
        self.shared / self.own
    }
}

/// The address CPU `cpu` hits in the own-address run: 192.0.2.100 and up.
fn own_address(cpu: usize) -> Ipv4Addr {
    let last = u8::try_from(100 + cpu).unwrap_or(u8::MAX);
    Ipv4Addr::new(192, 0, 2, last)
}

/// Bans each CPU's own address, then measures both runs in alternating
/// rounds; the medians.
pub fn measure(dataplane: &mut Dataplane) -> Result<Contention> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    for cpu in 0..cpus {
        dataplane.insert(IpNet::from(IpAddr::V4(own_address(cpu))), live_ban())?;
    }
    let id = dataplane.program_id()?;
    let shared_frame = FrameBuilder::ipv4(BANNED_V4, DST_V4).build();
    let own_frames: Vec<Vec<u8>> = (0..cpus)
        .map(|cpu| FrameBuilder::ipv4(own_address(cpu), DST_V4).build())
        .collect();
    let shared_frames = vec![shared_frame; cpus];
    // Warm-up.
    run_on_every_cpu(id, &shared_frames, super::repeat() / 10)?;
    run_on_every_cpu(id, &own_frames, super::repeat() / 10)?;
    let mut shared = Vec::new();
    let mut own = Vec::new();
    for _ in 0..super::runs() {
        shared.push(run_on_every_cpu(id, &shared_frames, super::repeat())?);
        own.push(run_on_every_cpu(id, &own_frames, super::repeat())?);
    }
    Ok(Contention {
        cpus,
        shared: median(&mut shared),
        own: median(&mut own),
    })
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// One thread per CPU, pinned, each running the program `repeat` times
/// on its frame once all are ready: the mean ns/packet over the threads,
/// each timed by its own CPU clock. Every run must drop.
fn run_on_every_cpu(id: u32, frames: &[Vec<u8>], repeat: u32) -> Result<f64> {
    let barrier = Barrier::new(frames.len());
    let figures: Vec<Result<f64>> = std::thread::scope(|scope| {
        let threads: Vec<_> = frames
            .iter()
            .enumerate()
            .map(|(cpu, frame)| {
                let barrier = &barrier;
                scope.spawn(move || -> Result<f64> {
                    pin_to_cpu(cpu)?;
                    barrier.wait();
                    let start = thread_cpu_ns();
                    let result = dataplane::test_run_program_id(id, frame, repeat)?;
                    let spent = thread_cpu_ns() - start;
                    ensure!(
                        result.action == XDP_DROP,
                        "CPU {cpu}: action {}, expected DROP",
                        result.action
                    );
                    Ok(spent / f64::from(repeat))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .map_err(|_| anyhow::anyhow!("a bench thread panicked"))?
            })
            .collect()
    });
    let figures = figures.into_iter().collect::<Result<Vec<f64>>>()?;
    #[expect(clippy::cast_precision_loss, reason = "a few CPUs")]
    let mean = figures.iter().sum::<f64>() / figures.len() as f64;
    Ok(mean)
}

fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below the number of CPUs, within the set's size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: valid set of the size given, for the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("pinning to CPU {cpu}"));
    }
    Ok(())
}

/// The row as printed under the table.
pub fn line(contention: &Contention) -> String {
    let ratio = contention.ratio();
    format!(
        "drop path on all {} CPUs at once (one pinned thread each, IPv4 hit, 1 ban + 1 per CPU{}): \
         all hitting one banned address {:.1} ns/packet, each its own {:.1}; ratio {ratio:.2} (target <= {TARGET:.2}) {}",
        contention.cpus,
        if bench::smoke() { ", smoke run" } else { "" },
        contention.shared,
        contention.own,
        if ratio <= TARGET { "met" } else { "NOT met" },
    )
}
