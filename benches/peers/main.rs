//! The peer comparison: this crate, the `singleflight` crate (0.3), a naive
//! `std::sync::Mutex<HashMap>` + `Condvar` version, and Go's
//! `golang.org/x/sync/singleflight`, on the same workloads, in one run.
//!
//! ```sh
//! bash benches/peers/run.sh            # installs Go if needed, then this
//! cargo bench --bench peers -- --rounds 5
//! ```
//!
//! Every figure is the median over `--rounds` rounds; within a round the
//! implementations run back to back, so ratios compare like with like on a
//! noisy machine. Ratios are to Go.

#[path = "../shared/workloads.rs"]
mod workloads;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use workloads::{
    Crate03, Naive, Ours, Peer, Until, hot, keys, sleep_1ms, spin_100us, w1, w2, wake_latency,
};

// ---------------------------------------------------------------------------
// A counting allocator, switched on only while memory is measured.

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; the
// counters are side effects only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCATIONS.fetch_add(1, Relaxed);
            LIVE_BYTES.fetch_add(layout.size(), Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ---------------------------------------------------------------------------
// Workloads (shared with the criterion benches) and their figures.

type Figures = Vec<(&'static str, f64)>;

fn w1_figures<P: Peer>(calls: u64) -> Figures {
    let peer = P::new();
    let keys = keys("", 4096);
    w1(&peer, &keys, 100_000);
    let elapsed = w1(&peer, &keys, calls);
    vec![("ns_per_call", elapsed.as_nanos() as f64 / calls as f64)]
}

fn w2_figures<P: Peer>(calls: u64) -> Figures {
    let elapsed = w2(&P::new(), calls);
    vec![("ns_per_call", elapsed.as_nanos() as f64 / calls as f64)]
}

fn hot_figures<P: Peer>(seconds: f64, f: fn()) -> Figures {
    let run = hot(
        &P::new(),
        64,
        Until::Time(Duration::from_secs_f64(seconds)),
        f,
    );
    vec![
        (
            "calls_per_sec",
            run.calls as f64 / run.elapsed.as_secs_f64(),
        ),
        ("executions", run.executions as f64),
    ]
}

fn latency_figures<P: Peer>(followers: usize, rounds: usize) -> Figures {
    let peer = P::new();
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| wake_latency(&peer, followers).as_secs_f64() * 1e6)
        .collect();
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[(q * (samples.len() - 1) as f64) as usize];
    vec![("p50_us", at(0.5)), ("p99_us", at(0.99))]
}

/// Heap allocations per uncontended call, and heap bytes held per in-flight
/// key (calls nested on distinct keys, measured at the innermost).
fn memory<P: Peer>() -> Figures {
    let peer = P::new();
    let keys = keys("", 4096);
    for i in 0..10_000 {
        peer.work(&keys[i & 4095], || 1);
    }
    const CALLS: usize = 100_000;
    COUNTING.store(true, Relaxed);
    let before = ALLOCATIONS.load(Relaxed);
    for i in 0..CALLS {
        peer.work(&keys[i & 4095], || 1);
    }
    let allocs = (ALLOCATIONS.load(Relaxed) - before) as f64 / CALLS as f64;
    let mut figures = vec![("allocs_per_call", allocs)];
    if P::NESTS {
        const DEPTH: usize = 1000;
        fn nest<P: Peer>(peer: &P, keys: &[String], level: usize, base: usize, out: &Mutex<f64>) {
            if level == DEPTH {
                *out.lock().unwrap() = (LIVE_BYTES.load(Relaxed) - base) as f64 / DEPTH as f64;
                return;
            }
            peer.work(&keys[level], || {
                nest(peer, keys, level + 1, base, out);
                1
            });
        }
        let held = Mutex::new(0.0);
        // Nesting 1000 deep needs a roomy stack.
        thread::scope(|s| {
            thread::Builder::new()
                .stack_size(64 << 20)
                .spawn_scoped(s, || {
                    let base = LIVE_BYTES.load(Relaxed);
                    nest(&peer, &keys, 0, base, &held);
                })
                .unwrap();
        });
        figures.push(("bytes_per_inflight_key", held.into_inner().unwrap()));
    }
    COUNTING.store(false, Relaxed);
    figures
}

/// Allocations per uncontended call with `u64` keys, for this crate.
fn ours_u64_allocs() -> f64 {
    let group = sync_singleflight::Group::<u64, u64>::new();
    for i in 0..10_000u64 {
        group.work(&(i & 4095), || 1);
    }
    const CALLS: u64 = 100_000;
    COUNTING.store(true, Relaxed);
    let before = ALLOCATIONS.load(Relaxed);
    for i in 0..CALLS {
        group.work(&(i & 4095), || 1);
    }
    let allocs = (ALLOCATIONS.load(Relaxed) - before) as f64 / CALLS as f64;
    COUNTING.store(false, Relaxed);
    allocs
}

// ---------------------------------------------------------------------------
// Go.

fn build_go() -> Result<PathBuf, String> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = here.join("target/peers");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let binary = out_dir.join("go-singleflight");
    let gopath = format!("{}:/usr/share/gocode", out_dir.join("gopath").display());
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(here.join("benches/peers/go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOCACHE", out_dir.join("gocache"))
        .status()
        .map_err(|e| {
            format!("cannot run `go` ({e}); run benches/peers/run.sh, which installs it")
        })?;
    if !status.success() {
        return Err(
            "go build failed; is golang-golang-x-sync-dev installed? (benches/peers/run.sh)".into(),
        );
    }
    Ok(binary)
}

fn run_go(binary: &PathBuf, workload: &str, scale: f64) -> Figures {
    let output = Command::new(binary)
        .args([workload, &scale.to_string()])
        .output()
        .expect("run the Go peer");
    assert!(output.status.success(), "Go peer failed on {workload}");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(name, value)| {
            let name: &'static str = Box::leak(name.to_string().into_boxed_str());
            value.parse().ok().map(|value| (name, value))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The table.

const IMPLS: [&str; 4] = [Ours::NAME, Crate03::NAME, Naive::NAME, "Go x/sync"];

struct Row {
    workload: &'static str,
    figure: &'static str,
    label: &'static str,
    target: &'static str,
}

const ROWS: &[Row] = &[
    Row {
        workload: "w1",
        figure: "ns_per_call",
        label: "W1 uncontended, ns/call",
        target: "≤ 0.5× Go",
    },
    Row {
        workload: "w2",
        figure: "ns_per_call",
        label: "W2 2 threads disjoint, ns/call",
        target: "≤ 0.35× Go",
    },
    Row {
        workload: "w3",
        figure: "calls_per_sec",
        label: "W3 hot key 100 µs spin, calls/s",
        target: "≥ 0.8× Go",
    },
    Row {
        workload: "w3",
        figure: "executions",
        label: "W3 executions",
        target: "",
    },
    Row {
        workload: "w4",
        figure: "calls_per_sec",
        label: "W4 hot key 1 ms sleep, calls/s",
        target: "≥ 0.97× Go, ≥ 0.9 of limit",
    },
    Row {
        workload: "w4",
        figure: "executions",
        label: "W4 executions",
        target: "",
    },
    Row {
        workload: "latency8",
        figure: "p50_us",
        label: "wake 8 followers p50, µs",
        target: "",
    },
    Row {
        workload: "latency8",
        figure: "p99_us",
        label: "wake 8 followers p99, µs",
        target: "",
    },
    Row {
        workload: "latency64",
        figure: "p50_us",
        label: "wake 64 followers p50, µs",
        target: "",
    },
    Row {
        workload: "latency64",
        figure: "p99_us",
        label: "wake 64 followers p99, µs",
        target: "",
    },
    Row {
        workload: "memory",
        figure: "allocs_per_call",
        label: "allocations/call, String keys",
        target: "",
    },
    Row {
        workload: "memory",
        figure: "bytes_per_inflight_key",
        label: "heap bytes per in-flight key",
        target: "",
    },
];

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn format_value(value: f64) -> String {
    if value >= 100_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn run_rust<P: Peer>(workload: &str, scale: f64) -> Figures {
    let n = |base: f64| (base * scale).max(1.0) as usize;
    match workload {
        "w1" => w1_figures::<P>(n(2_000_000.0) as u64),
        "w2" => w2_figures::<P>(n(2_000_000.0) as u64),
        "w3" => hot_figures::<P>(1.5 * scale, spin_100us),
        "w4" => hot_figures::<P>(1.5 * scale, sleep_1ms),
        "latency8" => latency_figures::<P>(8, n(200.0)),
        "latency64" => latency_figures::<P>(64, n(200.0)),
        "memory" => memory::<P>(),
        _ => unreachable!(),
    }
}

fn main() {
    let mut rounds = 5;
    let mut scale = 1.0;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            "--scale" => scale = args.next().and_then(|v| v.parse().ok()).expect("--scale X"),
            "--only" => only = args.next(),
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "peers: W1–W4, wake latency and memory for sync-singleflight, singleflight 0.3,\n\
                     naive std and Go's x/sync singleflight, medians over rounds\n\n\
                     --rounds N   rounds (default 5)\n\
                     --scale X    scale the work per round (default 1.0)\n\
                     --only W     run one workload (w1 w2 w3 w4 latency8 latency64 memory)"
                );
                return;
            }
            _ => {}
        }
    }
    let go = match build_go() {
        Ok(binary) => binary,
        Err(why) => {
            eprintln!("peers: {why}");
            std::process::exit(1);
        }
    };
    let workloads = ["w1", "w2", "w3", "w4", "latency8", "latency64", "memory"];
    let workloads: Vec<&str> = workloads
        .into_iter()
        .filter(|w| only.as_deref().is_none_or(|o| o == *w))
        .collect();
    // figures[(workload, impl, figure)] = samples
    let mut samples: HashMap<(String, usize, String), Vec<f64>> = HashMap::new();
    let mut record = |workload: &str, implementation: usize, figures: Figures| {
        for (figure, value) in figures {
            samples
                .entry((workload.to_string(), implementation, figure.to_string()))
                .or_default()
                .push(value);
        }
    };
    for round in 1..=rounds {
        for workload in &workloads {
            eprint!("\rround {round}/{rounds}: {workload:<10}");
            record(workload, 0, run_rust::<Ours>(workload, scale));
            record(workload, 1, run_rust::<Crate03>(workload, scale));
            record(workload, 2, run_rust::<Naive>(workload, scale));
            record(workload, 3, run_go(&go, workload, scale));
        }
    }
    eprintln!();
    let ours_u64 = ours_u64_allocs();

    println!(
        "\nPeer comparison: median of {rounds} rounds, ratio to Go in brackets ({}, {} cores)\n",
        std::env::consts::ARCH,
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    print!("| workload |");
    for name in IMPLS {
        print!(" {name} |");
    }
    println!(" target |");
    println!("|---|---|---|---|---|---|");
    for row in ROWS.iter().filter(|row| workloads.contains(&row.workload)) {
        let mut get = |i: usize| {
            samples
                .get_mut(&(row.workload.to_string(), i, row.figure.to_string()))
                .and_then(|v| median(v))
        };
        let values: Vec<Option<f64>> = (0..IMPLS.len()).map(&mut get).collect();
        let go = values[3];
        print!("| {} |", row.label);
        for (i, value) in values.iter().enumerate() {
            match (value, go) {
                (Some(v), Some(g)) if i != 3 && g > 0.0 => {
                    print!(" {} ({:.2}×) |", format_value(*v), v / g)
                }
                (Some(v), _) => print!(" {} |", format_value(*v)),
                (None, _) => print!(" n/a |"),
            }
        }
        println!(" {} |", row.target);
    }
    if workloads.contains(&"w4") {
        let limit = 64.0 / 0.001;
        let mut get = |i: usize| {
            samples
                .get_mut(&("w4".to_string(), i, "calls_per_sec".to_string()))
                .and_then(|v| median(v))
        };
        print!("| W4 share of the physical limit (64 000 calls/s) |");
        for i in 0..IMPLS.len() {
            match get(i) {
                Some(v) => print!(" {:.3} |", v / limit),
                None => print!(" n/a |"),
            }
        }
        println!(" ≥ 0.9 |");
    }
    if workloads.contains(&"memory") {
        println!("| allocations/call, u64 keys | {ours_u64:.2} | n/a | n/a | n/a | 0 |");
    }
}
