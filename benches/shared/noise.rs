//! How much of the machine other processes took while a sample ran.
//!
//! The machine is shared: on 2 cores one compile job elsewhere can cut a
//! hot-key figure by 5–10× for the half second it overlaps. The harness
//! measures, for every sample, the CPU time all processes used (from
//! `/proc/stat`) minus the CPU time of this process and of the children it
//! waited for (the Go peer), as a share of the cores' wall time, and re-runs
//! samples that other processes disturbed.

use std::time::Instant;

pub struct Probe {
    start: Instant,
    busy: f64,
    own: f64,
}

/// CPU seconds used by every process since boot: the non-idle columns of
/// the first line of `/proc/stat` (user nice system idle iowait irq softirq
/// steal …, in clock ticks of 1/100 s).
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    if ticks.len() < 8 {
        return 0.0;
    }
    let idle = ticks[3] + ticks[4];
    (ticks.iter().sum::<f64>() - idle) / 100.0
}

/// CPU seconds of this process plus its waited-for children.
fn own_cpu() -> f64 {
    let usage = |who| {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes one `rusage` through the pointer, which
        // points to a zeroed, properly aligned local of that type.
        let usage = unsafe {
            libc::getrusage(who, usage.as_mut_ptr());
            usage.assume_init()
        };
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        seconds(usage.ru_utime) + seconds(usage.ru_stime)
    };
    usage(libc::RUSAGE_SELF) + usage(libc::RUSAGE_CHILDREN)
}

impl Probe {
    pub fn start() -> Self {
        Probe {
            start: Instant::now(),
            busy: machine_busy(),
            own: own_cpu(),
        }
    }

    /// The share of the machine (0 = none, 1 = every core all the time)
    /// that other processes used since `start`.
    pub fn foreign_share(&self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let wall = self.start.elapsed().as_secs_f64() * cores;
        let foreign = (machine_busy() - self.busy) - (own_cpu() - self.own);
        (foreign / wall).clamp(0.0, 1.0)
    }
}
