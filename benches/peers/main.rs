//! The peer comparison: this crate, the `singleflight` crate (0.3), a naive
//! `std::sync::Mutex<HashMap>` + `Condvar` version, the OS-thread ceiling (a
//! keyless futex design, `benches/shared/ceiling.rs`) and Go's
//! `golang.org/x/sync/singleflight`, on the same workloads, in one run.
//!
//! ```sh
//! bash benches/peers/run.sh            # installs Go if needed, then this
//! cargo bench --bench peers -- --rounds 5
//! ```
//!
//! Every figure is the median over `--rounds` rounds. Within a round the
//! implementations run back to back, in reverse order every other round, so
//! ratios compare like with like on a noisy machine. Ratios are to Go in the
//! main table; the second table compares with the OS-thread limit (medians of
//! per-round ratios). The scaling sweep is written to `scaling.csv` and
//! drawn as `scaling.svg` in `--out` (`target/peers` by default), so a run
//! leaves the source tree as it was; the checked-in copies in
//! `benches/peers/` are updated only by asking for it (`--out benches/peers`).

#[path = "../shared/ceiling.rs"]
mod ceiling;
mod chart;
#[path = "../shared/noise.rs"]
mod noise;
#[path = "../shared/workloads.rs"]
mod workloads;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use ceiling::{Ceiling, futex_wake_floor};
use clap::Parser;
use clap::builder::PossibleValuesParser;
use indicatif::{ProgressBar, ProgressStyle};
use workloads::{
    Crate03, Followers, Naive, Ours, Peer, Until, hot, keys, mixed, sleep_1ms, spin_100us, w1, w2,
    wake_latency,
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

fn hot_figures<P: Peer>(threads: usize, keys: usize, seconds: f64, f: fn()) -> Figures {
    let run = hot(
        &P::new(),
        threads,
        keys,
        Until::Time(Duration::from_secs_f64(seconds)),
        f,
    );
    let seconds = run.elapsed.as_secs_f64();
    vec![
        ("calls_per_sec", run.calls as f64 / seconds),
        ("executions", run.executions as f64),
        ("executions_per_sec", run.executions as f64 / seconds),
    ]
}

fn mixed_figures<P: Peer>(seconds: f64) -> Figures {
    let run = mixed(&P::new(), 8, Duration::from_secs_f64(seconds));
    let seconds = run.elapsed.as_secs_f64();
    vec![
        (
            "distinct_calls_per_sec",
            run.distinct_calls as f64 / seconds,
        ),
        ("distinct_p50_ns", quantile(&run.distinct_ns, 0.5)),
        ("distinct_p99_ns", quantile(&run.distinct_ns, 0.99)),
        ("hot_calls_per_sec", run.hot_calls as f64 / seconds),
    ]
}

/// The `q` quantile of sorted samples.
fn quantile<T: Copy + Into<f64>>(sorted: &[T], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64) as usize].into()
}

fn percentiles(mut samples: Vec<f64>) -> Figures {
    samples.sort_by(f64::total_cmp);
    vec![
        ("p50_us", quantile(&samples, 0.5)),
        ("p99_us", quantile(&samples, 0.99)),
    ]
}

fn latency_figures<P: Peer>(followers: usize, end: Followers, flights: usize) -> Figures {
    let peer = P::new();
    percentiles(
        (0..flights)
            .map(|_| wake_latency(&peer, followers, end).as_secs_f64() * 1e6)
            .collect(),
    )
}

fn floor_figures(threads: usize, flights: usize) -> Figures {
    percentiles(
        (0..flights)
            .map(|_| futex_wake_floor(threads).as_secs_f64() * 1e6)
            .collect(),
    )
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

/// `<target>/peers`, beside this bench's own binary
/// (`<target>/<profile>/deps/peers-…`): where the Go peer is built and, by
/// default, the results go.
fn target_peers_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("peers")))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers"))
}

fn build_go() -> Result<PathBuf, String> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = target_peers_dir();
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

fn run_go(binary: &Path, workload: &str, scale: f64) -> Figures {
    let output = Command::new(binary)
        .args([workload, &scale.to_string()])
        .output()
        .expect("run the Go peer");
    assert!(output.status.success(), "Go peer failed on {workload}");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(name, value)| value.parse().ok().map(|value| (leak(name), value)))
        .collect()
}

// ---------------------------------------------------------------------------
// What runs.

const OURS: usize = 0;
const CRATE03: usize = 1;
const NAIVE: usize = 2;
const CEILING: usize = 3;
const GO: usize = 4;
const IMPLS: [&str; 5] = [
    Ours::NAME,
    Crate03::NAME,
    Naive::NAME,
    Ceiling::NAME,
    "Go x/sync",
];

/// A sample during which other processes took more than this share (in %)
/// of the machine is re-run (`--retries`).
const QUIET: f64 = 10.0;

/// Thread counts of the scaling sweep (one hot key, 1 ms sleep).
const SCALING: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

const WORKLOADS: [&str; 13] = [
    "w1",
    "w2",
    "w3",
    "w4",
    "w5",
    "w6",
    "latency8",
    "latency64",
    "pure8",
    "pure64",
    "floor8",
    "floor64",
    "memory",
];

fn scaling_workload(threads: usize) -> String {
    format!("scale{threads}")
}

/// Whether implementation `i` takes part in `workload`: the ceiling only in
/// the hot-key ones, and the futex floor is measured once (filed under the
/// ceiling).
fn takes_part(workload: &str, i: usize) -> bool {
    match workload {
        "floor8" | "floor64" => i == CEILING,
        "w1" | "w2" | "w6" | "memory" => i != CEILING,
        _ => true,
    }
}

fn run_rust<P: Peer>(workload: &str, scale: f64) -> Figures {
    let n = |base: f64| (base * scale).max(1.0) as usize;
    match workload {
        "w1" => w1_figures::<P>(n(2_000_000.0) as u64),
        "w2" => w2_figures::<P>(n(2_000_000.0) as u64),
        "w3" => hot_figures::<P>(64, 1, scale, spin_100us),
        "w4" => hot_figures::<P>(64, 1, scale, sleep_1ms),
        "w5" => hot_figures::<P>(64, 8, scale, spin_100us),
        "w6" => mixed_figures::<P>(scale),
        "latency8" => latency_figures::<P>(8, Followers::Exit, n(100.0)),
        "latency64" => latency_figures::<P>(64, Followers::Exit, n(100.0)),
        "pure8" => latency_figures::<P>(8, Followers::Hold, n(100.0)),
        "pure64" => latency_figures::<P>(64, Followers::Hold, n(100.0)),
        "floor8" => floor_figures(8, n(100.0)),
        "floor64" => floor_figures(64, n(100.0)),
        "memory" => memory::<P>(),
        w => match w.strip_prefix("scale").and_then(|t| t.parse().ok()) {
            Some(threads) => hot_figures::<P>(threads, 1, 0.3 * scale, sleep_1ms),
            None => unreachable!("unknown workload {w}"),
        },
    }
}

fn run(go: &Path, workload: &str, i: usize, scale: f64) -> Figures {
    match i {
        OURS => run_rust::<Ours>(workload, scale),
        CRATE03 => run_rust::<Crate03>(workload, scale),
        NAIVE => run_rust::<Naive>(workload, scale),
        CEILING => run_rust::<Ceiling>(workload, scale),
        _ => run_go(go, workload, scale),
    }
}

// ---------------------------------------------------------------------------
// The tables.

/// Samples in round order: `samples[(workload, implementation, figure)]`.
struct Samples(HashMap<(String, usize, &'static str), Vec<f64>>);

impl Samples {
    fn get(&self, workload: &str, i: usize, figure: &str) -> &[f64] {
        self.0
            .get(&(workload.to_string(), i, leak(figure)))
            .map_or(&[], Vec::as_slice)
    }

    fn median(&self, workload: &str, i: usize, figure: &str) -> Option<f64> {
        median(self.get(workload, i, figure).to_vec())
    }

    /// The median over rounds of `a`'s figure divided by `b`'s in the same
    /// round.
    fn ratio(&self, workload: &str, a: usize, b: (&str, usize), figure: &str) -> Option<f64> {
        let (a, b) = (self.get(workload, a, figure), self.get(b.0, b.1, figure));
        median(a.iter().zip(b).map(|(a, b)| a / b).collect())
    }
}

fn leak(name: &str) -> &'static str {
    // Figure names are a handful of short literals; interning by leaking
    // each distinct one once keeps the map keys `&'static str`.
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap();
    if let Some(known) = names.iter().find(|n| **n == name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

struct Row {
    workload: &'static str,
    figure: &'static str,
    label: &'static str,
    target: &'static str,
}

const fn row(
    workload: &'static str,
    figure: &'static str,
    label: &'static str,
    target: &'static str,
) -> Row {
    Row {
        workload,
        figure,
        label,
        target,
    }
}

#[rustfmt::skip] // a table: one row a line
const ROWS: &[Row] = &[
    row("w1", "ns_per_call", "W1 uncontended, ns/call", "≤ 0.5× Go"),
    row("w2", "ns_per_call", "W2 2 threads disjoint, ns/call", "≤ 0.5× Go"),
    row("w3", "calls_per_sec", "W3 hot key 100 µs spin, calls/s", ""),
    row("w3", "executions", "W3 executions", ""),
    row("w4", "calls_per_sec", "W4 hot key 1 ms sleep, calls/s", "≥ 0.95× Go"),
    row("w4", "executions", "W4 executions", ""),
    row("w5", "calls_per_sec", "W5 8 hot keys 100 µs spin, calls/s", ""),
    row("w5", "executions", "W5 executions", ""),
    row("w6", "distinct_calls_per_sec", "W6 distinct-key calls/s", ""),
    row("w6", "distinct_p50_ns", "W6 distinct-key call p50, ns", ""),
    row("w6", "distinct_p99_ns", "W6 distinct-key call p99, ns", ""),
    row("w6", "hot_calls_per_sec", "W6 hot-key calls/s", ""),
    row("latency8", "p50_us", "wake 8 followers p50, µs", ""),
    row("latency8", "p99_us", "wake 8 followers p99, µs", ""),
    row("latency64", "p50_us", "wake 64 followers p50, µs", ""),
    row("latency64", "p99_us", "wake 64 followers p99, µs", ""),
    row("pure8", "p50_us", "pure wake 8 followers p50, µs", ""),
    row("pure8", "p99_us", "pure wake 8 followers p99, µs", ""),
    row("pure64", "p50_us", "pure wake 64 followers p50, µs", ""),
    row("pure64", "p99_us", "pure wake 64 followers p99, µs", ""),
    row("memory", "allocs_per_call", "allocations/call, String keys", "0"),
    row("memory", "bytes_per_inflight_key", "heap bytes per in-flight key", ""),
];

fn median(mut values: Vec<f64>) -> Option<f64> {
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

fn print_main_table(samples: &Samples, ran: &[&str]) {
    print!("| workload |");
    for name in IMPLS {
        print!(" {name} |");
    }
    println!(" target |");
    println!("|---{}|---|", "|---".repeat(IMPLS.len()));
    for row in ROWS.iter().filter(|row| ran.contains(&row.workload)) {
        let go = samples.median(row.workload, GO, row.figure);
        print!("| {} |", row.label);
        for i in 0..IMPLS.len() {
            match (samples.median(row.workload, i, row.figure), go) {
                (Some(v), Some(g)) if i != GO && g > 0.0 => {
                    print!(" {} ({:.2}×) |", format_value(v), v / g)
                }
                (Some(v), _) => print!(" {} |", format_value(v)),
                (None, _) => print!(" n/a |"),
            }
        }
        println!(" {} |", row.target);
    }
}

fn print_limit_table(samples: &Samples, ran: &[&str], ours_u64: Option<f64>) {
    println!("| against the limit (same run) | value | target |");
    println!("|---|---|---|");
    let line = |label: String, value: Option<f64>, target: &str| {
        if let Some(value) = value {
            println!("| {label} | {} | {target} |", format_value(value));
        }
    };
    for (workload, name) in [("w3", "W3"), ("w5", "W5")] {
        if !ran.contains(&workload) {
            continue;
        }
        for i in [OURS, NAIVE, GO] {
            line(
                format!("{name} calls/s ÷ ceiling, {}", IMPLS[i]),
                samples.ratio(workload, i, (workload, CEILING), "calls_per_sec"),
                if i == OURS && workload == "w3" {
                    "≥ 0.95"
                } else {
                    ""
                },
            );
        }
    }
    if ran.contains(&"w4") {
        for i in [OURS, NAIVE, CEILING, GO] {
            line(
                format!(
                    "W4 share of the physical limit (64 000 calls/s), {}",
                    IMPLS[i]
                ),
                samples
                    .median("w4", i, "calls_per_sec")
                    .map(|v| v / (64.0 / 0.001)),
                if i == OURS { "≥ 0.9" } else { "" },
            );
        }
    }
    for threads in [8, 64] {
        let floor = format!("floor{threads}");
        if !ran.contains(&floor.as_str()) {
            continue;
        }
        for figure in ["p50_us", "p99_us"] {
            line(
                format!("raw FUTEX_WAKE of {threads} sleeping threads, {figure}"),
                samples.median(&floor, CEILING, figure),
                "",
            );
        }
        for (workload, what) in [("pure", "pure wake"), ("latency", "wake")] {
            let workload = format!("{workload}{threads}");
            if !ran.contains(&workload.as_str()) {
                continue;
            }
            for i in [OURS, NAIVE, CEILING] {
                line(
                    format!("{what} {threads} p50 ÷ futex floor, {}", IMPLS[i]),
                    samples.ratio(&workload, i, (&floor, CEILING), "p50_us"),
                    if i == OURS && threads == 64 && what == "pure wake" {
                        "≤ 1.2"
                    } else {
                        ""
                    },
                );
            }
        }
    }
    line(
        "allocations/call, u64 keys, sync-singleflight".to_string(),
        ours_u64,
        "0",
    );
}

/// Medians per thread count: the scaling table, and the CSV and chart in
/// `out`.
fn report_scaling(samples: &Samples, out: &Path) -> Result<(), String> {
    let impls = [OURS, CRATE03, NAIVE, CEILING, GO];
    let mut csv = String::from(
        "threads,implementation,calls_per_sec,executions_per_sec,limit_calls_per_sec\n",
    );
    let mut series: Vec<chart::Series> = impls
        .iter()
        .map(|&i| chart::Series {
            name: IMPLS[i],
            points: Vec::new(),
        })
        .collect();
    println!("| threads | limit (threads / 1 ms) |{}", {
        let names: Vec<String> = impls
            .iter()
            .map(|&i| format!(" {} calls/s (executions/s) |", IMPLS[i]))
            .collect();
        names.concat()
    });
    println!("|---|---{}|", "|---".repeat(impls.len()));
    for threads in SCALING {
        let workload = scaling_workload(threads);
        let limit = threads as f64 * 1000.0;
        print!("| {threads} | {} |", format_value(limit));
        for (s, &i) in series.iter_mut().zip(&impls) {
            let calls = samples.median(&workload, i, "calls_per_sec");
            let executions = samples.median(&workload, i, "executions_per_sec");
            let (Some(calls), Some(executions)) = (calls, executions) else {
                print!(" n/a |");
                continue;
            };
            print!(" {} ({executions:.0}) |", format_value(calls));
            csv.push_str(&format!(
                "{threads},{},{calls:.1},{executions:.1},{limit:.0}\n",
                IMPLS[i]
            ));
            s.points.push((threads as f64, calls, executions));
        }
        println!();
    }
    let csv_path = out.join("scaling.csv");
    std::fs::write(&csv_path, csv)
        .map_err(|e| format!("cannot write {}: {e}", csv_path.display()))?;
    println!("\nwrote {}", csv_path.display());
    draw_scaling(&series, out)
}

fn draw_scaling(series: &[chart::Series], out: &Path) -> Result<(), String> {
    let path = out.join("scaling.svg");
    let caption = format!(
        "One hot key, f sleeps 1 ms: medians of interleaved rounds, {} cores",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    chart::scaling_svg(&path, series, &caption)
        .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `--replot CSV`: redraws the chart from a CSV the sweep wrote, without
/// running anything.
fn replot(csv_path: &Path, out: &Path) -> Result<(), String> {
    let csv = std::fs::read_to_string(csv_path)
        .map_err(|e| format!("cannot read {}: {e}", csv_path.display()))?;
    let mut series: Vec<chart::Series> = Vec::new();
    for (n, line) in csv.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let number = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
        let (Some(name), Some(threads), Some(calls), Some(executions)) =
            (fields.get(1), number(0), number(2), number(3))
        else {
            return Err(format!(
                "{} line {}: expected threads,implementation,calls_per_sec,executions_per_sec,…",
                csv_path.display(),
                n + 1
            ));
        };
        let name = leak(name);
        let point = (threads, calls, executions);
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => series.push(chart::Series {
                name,
                points: vec![point],
            }),
        }
    }
    if series.is_empty() {
        return Err(format!("{} has no rows", csv_path.display()));
    }
    draw_scaling(&series, out)
}

/// The peer comparison: W1–W6, wake latency, the futex wake floor, memory and
/// the scaling sweep, for sync-singleflight, singleflight 0.3, naive std, the
/// OS-thread ceiling and Go's x/sync singleflight; medians over interleaved
/// rounds.
#[derive(Parser, Debug)]
#[command(name = "peers")]
struct Options {
    /// Rounds; every figure is the median over them (1 to 100)
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Scales the work per round: 0.3 for a quick look (0.01 to 100)
    #[arg(long, value_name = "X", default_value_t = 1.0, value_parser = scale)]
    scale: f64,
    /// Runs only these workloads, comma-separated (`scaling`: the whole sweep)
    #[arg(long, value_name = "W,..", value_delimiter = ',', value_parser = PossibleValuesParser::new(WORKLOADS.into_iter().chain(["scaling"])))]
    only: Vec<String>,
    /// Re-runs of a sample disturbed by other processes (0 to 10)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=10))]
    retries: u32,
    /// Where the scaling CSV and chart go [default: <target dir>/peers]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Redraws the chart from this CSV into --out, without running anything
    #[arg(long, value_name = "CSV")]
    replot: Option<PathBuf>,
    /// Passed by `cargo bench` to every bench target; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

fn scale(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(x) if (0.01..=100.0).contains(&x) => Ok(x),
        Ok(_) => Err("must be from 0.01 to 100".to_string()),
        Err(_) => Err(format!("expected a number such as 0.3, got {value:?}")),
    }
}

fn main() -> ExitCode {
    let options = Options::parse();
    let out = options.out.clone().unwrap_or_else(target_peers_dir);
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("peers: cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    if let Some(csv) = &options.replot {
        return match replot(csv, &out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("peers: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let (rounds, scale, retries) = (options.rounds, options.scale, options.retries as usize);
    let go = match build_go() {
        Ok(binary) => binary,
        Err(why) => {
            eprintln!("peers: {why}");
            return ExitCode::FAILURE;
        }
    };
    let wanted = |w: &str| {
        options.only.is_empty()
            || options
                .only
                .iter()
                .any(|o| o == w || (o == "scaling" && w.starts_with("scale")))
    };
    let mut workloads: Vec<String> = WORKLOADS.iter().map(|w| w.to_string()).collect();
    workloads.extend(SCALING.iter().map(|&t| scaling_workload(t)));
    workloads.retain(|w| wanted(w));
    let ran: Vec<&str> = workloads.iter().map(String::as_str).collect();

    let mut samples = Samples(HashMap::new());
    let (mut noises, mut reruns) = (Vec::new(), 0);
    let started = std::time::Instant::now();
    // On a terminal only: indicatif hides a stderr bar elsewhere.
    let bar = ProgressBar::new(u64::from(rounds) * ran.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} workload rounds, {elapsed} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    for round in 1..=rounds {
        // Reversed every other round, so no implementation always runs
        // first (or right after Go's process has exited).
        let mut order: Vec<usize> = (0..IMPLS.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for workload in &ran {
            bar.set_message(format!("round {round}/{rounds}: {workload}"));
            for &i in order.iter().filter(|&&i| takes_part(workload, i)) {
                // The quietest of up to 1 + `retries` attempts; no retries
                // once most samples so far were disturbed (the machine is
                // busy for good, and re-running only doubles the time).
                let busy = noises.len() >= 8 && median(noises.clone()).unwrap_or(0.0) > 0.5;
                let tries = if busy { 0 } else { retries };
                let mut kept: Option<(f64, Figures)> = None;
                for attempt in 0..=tries {
                    if kept.as_ref().is_some_and(|k| k.0 <= QUIET / 100.0) {
                        break;
                    }
                    reruns += usize::from(attempt > 0);
                    let probe = noise::Probe::start();
                    let figures = run(&go, workload, i, scale);
                    let noise = probe.foreign_share();
                    if kept.as_ref().is_none_or(|k| noise < k.0) {
                        kept = Some((noise, figures));
                    }
                }
                let (noise, figures) = kept.expect("at least one attempt");
                noises.push(noise);
                for (figure, value) in figures {
                    samples
                        .0
                        .entry((workload.to_string(), i, leak(figure)))
                        .or_default()
                        .push(value);
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let ours_u64 = ran.contains(&"memory").then(ours_u64_allocs);

    println!(
        "\nPeer comparison: median of {rounds} rounds, ratio to Go in brackets \
         ({}, {} cores, {:.0} s)\n",
        std::env::consts::ARCH,
        thread::available_parallelism().map_or(0, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
    let samples_taken = noises.len();
    noises.sort_by(f64::total_cmp);
    if !noises.is_empty() {
        println!(
            "Other processes took a median {:.0}% (p90 {:.0}%) of the machine during the \
             {samples_taken} samples kept; {reruns} samples were re-run because they took more \
             than {QUIET:.0}%.\n",
            quantile(&noises, 0.5) * 100.0,
            quantile(&noises, 0.9) * 100.0,
        );
    }
    print_main_table(&samples, &ran);
    println!();
    print_limit_table(&samples, &ran, ours_u64);
    if SCALING
        .iter()
        .all(|&t| ran.contains(&scaling_workload(t).as_str()))
    {
        println!("\nScaling: one hot key, f sleeps 1 ms, calls/s (executions/s)\n");
        if let Err(message) = report_scaling(&samples, &out) {
            eprintln!("peers: {message}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
