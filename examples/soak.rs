//! Soak and fault injection: many threads hammer a small key space with a
//! random mix of `work`, `work_timeout` (zero, short and endless timeouts),
//! `forget`, leader panics, `V::clone` panics and panicking key hashes, and
//! every result is checked as it comes back.
//!
//! ```sh
//! cargo run --release --example soak -- --seconds 600 --threads 16
//! ```
//!
//! Checked continuously:
//! - every value was produced by a run for the caller's own key, and by a
//!   run that was not already over before the caller arrived (nothing stale);
//! - no caller waits longer than its bound;
//!
//! and at every quiet point (all workers parked on a barrier, once a second):
//! - `in_flight()` is 0;
//! - the `Stats` counters equal what the workers observed, call for call.
//!
//! Exits non-zero if any check fails.

use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use clap::builder::RangedU64ValueParser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sync_singleflight::{Group, LeaderPanicked, Stats, Timeout};

const KEYS: u8 = 4;
/// Generous: a bound on a hang, not a latency target, on a loaded 2-core box.
const SLACK: Duration = Duration::from_secs(2);
const INJECTED: &str = "soak: injected";

#[derive(Debug, Clone)]
struct SoakKey {
    id: u8,
    hash_panics: bool,
}

impl Hash for SoakKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if self.hash_panics {
            panic!("{INJECTED} hash panic");
        }
        self.id.hash(state);
    }
}

impl PartialEq for SoakKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for SoakKey {}

#[derive(Debug)]
struct SoakValue {
    key: u8,
    /// When the run's leader got the value back (nanoseconds since the
    /// soak began, plus one; 0 while it has not). Shared by all copies.
    landed: Arc<AtomicU64>,
    /// The `nth` clone of this value panics (0: none does).
    clone_panics_at: u32,
    clones: Arc<AtomicU32>,
}

impl Clone for SoakValue {
    fn clone(&self) -> Self {
        let nth = self.clones.fetch_add(1, Relaxed) + 1;
        if nth == self.clone_panics_at {
            panic!("{INJECTED} clone panic");
        }
        SoakValue {
            key: self.key,
            landed: self.landed.clone(),
            clone_panics_at: self.clone_panics_at,
            clones: self.clones.clone(),
        }
    }
}

/// What the workers saw, to be matched against the group's `Stats`.
#[derive(Default)]
struct Observed {
    calls: AtomicU64,
    runs: AtomicU64,
    leader_ok: AtomicU64,
    leader_panicked: AtomicU64,
    leader_clone_panics: AtomicU64,
    follower_ok: AtomicU64,
    follower_panics: AtomicU64,
    follower_clone_panics: AtomicU64,
    timeouts: AtomicU64,
    hash_panics: AtomicU64,
    forgets: AtomicU64,
    injected_leader_panics: AtomicU64,
    violations: AtomicU64,
}

struct Soak {
    group: Group<SoakKey, SoakValue>,
    began: Instant,
    seen: Observed,
    first_violations: Mutex<Vec<String>>,
}

thread_local! {
    static RAN_HERE: Cell<bool> = const { Cell::new(false) };
}

/// xorshift64*: enough randomness for a schedule, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

impl Soak {
    fn violation(&self, what: String) {
        self.seen.violations.fetch_add(1, Relaxed);
        let mut first = self.first_violations.lock().unwrap();
        if first.len() < 20 {
            first.push(what);
        }
    }

    fn one_call(&self, rng: &mut Rng) {
        let id = rng.below(u64::from(KEYS)) as u8;
        let choice = rng.below(100);
        if choice < 5 {
            if self.group.forget(&SoakKey {
                id,
                hash_panics: false,
            }) {
                self.seen.forgets.fetch_add(1, Relaxed);
            }
            return;
        }
        let key = SoakKey {
            id,
            hash_panics: choice < 7,
        };
        let timeout = match rng.below(10) {
            0 => Some(Duration::ZERO),
            1 | 2 => Some(Duration::from_micros(200 + rng.below(800))),
            3 => Some(Duration::MAX),
            _ => None,
        };
        let leader_panics = rng.below(100) < 3;
        let clone_panics_at = if rng.below(100) < 5 {
            1 + rng.below(3) as u32
        } else {
            0
        };
        let work_micros = rng.below(300);

        RAN_HERE.with(|ran| ran.set(false));
        self.seen.calls.fetch_add(1, Relaxed);
        let began = Instant::now();
        let f = || {
            RAN_HERE.with(|ran| ran.set(true));
            self.seen.runs.fetch_add(1, Relaxed);
            let until = Instant::now() + Duration::from_micros(work_micros);
            while Instant::now() < until {
                if work_micros > 150 {
                    thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            if leader_panics {
                self.seen.injected_leader_panics.fetch_add(1, Relaxed);
                panic!("{INJECTED} leader panic");
            }
            SoakValue {
                key: id,
                landed: Arc::new(AtomicU64::new(0)),
                clone_panics_at,
                clones: Arc::new(AtomicU32::new(0)),
            }
        };
        let result = panic::catch_unwind(AssertUnwindSafe(|| match timeout {
            None => Ok(self.group.work(&key, f)),
            Some(timeout) => self.group.work_timeout(&key, timeout, f),
        }));
        let waited = began.elapsed();
        let led = RAN_HERE.with(Cell::get);
        let seen = &self.seen;
        match result {
            Ok(Ok(value)) => {
                if led {
                    &seen.leader_ok
                } else {
                    &seen.follower_ok
                }
                .fetch_add(1, Relaxed);
                if value.key != id {
                    self.violation(format!("key {id} got a value of key {}", value.key));
                }
                let since_began = |at: Instant| at.duration_since(self.began).as_nanos() as u64 + 1;
                if led {
                    value.landed.store(since_began(Instant::now()), Relaxed);
                } else {
                    // Nothing is cached: a follower's value must come from a
                    // flight that had not landed when the follower called.
                    let landed = value.landed.load(Relaxed);
                    if landed != 0 && landed < since_began(began) {
                        self.violation(format!(
                            "key {id}: a follower got a value that had landed before it called"
                        ));
                    }
                }
                if !led {
                    let bound = timeout.unwrap_or(Duration::MAX).saturating_add(SLACK);
                    let bound = bound.min(Duration::from_micros(300) + SLACK * 2);
                    if waited > bound {
                        self.violation(format!("follower of key {id} waited {waited:?}"));
                    }
                }
            }
            Ok(Err(Timeout)) => {
                seen.timeouts.fetch_add(1, Relaxed);
                let timeout = timeout.expect("only work_timeout times out");
                if led {
                    self.violation("a leader timed out".to_string());
                }
                if waited < timeout || waited > timeout + SLACK {
                    self.violation(format!("timeout {timeout:?} returned after {waited:?}"));
                }
            }
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()));
                if payload.downcast_ref::<LeaderPanicked>().is_some() {
                    seen.follower_panics.fetch_add(1, Relaxed);
                } else {
                    match (message.as_deref(), led) {
                        (Some(m), _) if m.ends_with("hash panic") => &seen.hash_panics,
                        (Some(m), true) if m.ends_with("leader panic") => &seen.leader_panicked,
                        (Some(m), true) if m.ends_with("clone panic") => &seen.leader_clone_panics,
                        (Some(m), false) if m.ends_with("clone panic") => {
                            &seen.follower_clone_panics
                        }
                        _ => {
                            self.violation(format!("unexpected panic {message:?} (leader: {led})"));
                            return;
                        }
                    }
                    .fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// At a quiet point the group's counters must equal what the workers saw.
    fn check_quiet(&self) {
        let in_flight = self.group.in_flight();
        if in_flight != 0 {
            self.violation(format!("{in_flight} flights left in flight while quiet"));
        }
        let s = self.group.stats();
        let o = |c: &AtomicU64| c.load(Relaxed);
        let seen = &self.seen;
        let mut expected = Stats::default();
        expected.leader_runs = o(&seen.runs);
        expected.followers_joined = o(&seen.follower_ok)
            + o(&seen.timeouts)
            + o(&seen.follower_panics)
            + o(&seen.follower_clone_panics);
        expected.followers_served = o(&seen.follower_ok);
        expected.leader_panics = o(&seen.leader_panicked) + o(&seen.leader_clone_panics);
        expected.follower_panics = o(&seen.follower_panics);
        expected.follower_own_panics = o(&seen.follower_clone_panics);
        expected.follower_timeouts = o(&seen.timeouts);
        expected.forgets = o(&seen.forgets);
        if s != expected {
            self.violation(format!("stats {s:?} but the workers saw {expected:?}"));
        }
        let leaders = o(&seen.leader_ok) + o(&seen.leader_panicked) + o(&seen.leader_clone_panics);
        if leaders != s.leader_runs {
            self.violation(format!("{leaders} callers led but {} runs", s.leader_runs));
        }
        if s.calls() + o(&seen.hash_panics) != o(&seen.calls) {
            self.violation(format!(
                "{} calls made, {} entered and {} hash panics",
                o(&seen.calls),
                s.calls(),
                o(&seen.hash_panics)
            ));
        }
    }
}

/// Fault-injection soak of sync-singleflight: threads hammer a small key
/// space with work, timeouts, forgets and injected panics, and every result
/// is checked as it comes back. Exits non-zero on any violation.
#[derive(Parser, Debug)]
#[command(name = "soak")]
struct Args {
    /// How long to run, in seconds (1 to 86400, a day)
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
    /// Worker threads (1 to 1024)
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
    threads: usize,
}

/// The running counters, on a bar that fills with the seconds: drawn on a
/// terminal only (indicatif hides it elsewhere), so logs get the summary
/// alone.
fn progress_bar(seconds: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(seconds), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos:>5}/{len}s {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

fn main() -> ExitCode {
    let args = Args::parse();
    let default_hook = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let injected = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m.starts_with(INJECTED));
        if !injected {
            default_hook(info);
        }
    }));

    let soak = Arc::new(Soak {
        group: Group::new(),
        began: Instant::now(),
        seen: Observed::default(),
        first_violations: Mutex::new(Vec::new()),
    });
    let began = Instant::now();
    let total = Duration::from_secs(args.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    // Workers run in one-second epochs and meet at the barrier between
    // them, so the main thread can check a quiet group.
    let epoch_end = Arc::new(Barrier::new(args.threads + 1));
    let epoch_start = Arc::new(Barrier::new(args.threads + 1));
    let deadline = Arc::new(Mutex::new(began));
    let workers = (0..args.threads)
        .map(|t| {
            let (soak, stop, epoch_end, epoch_start, deadline) = (
                soak.clone(),
                stop.clone(),
                epoch_end.clone(),
                epoch_start.clone(),
                deadline.clone(),
            );
            thread::Builder::new().spawn(move || {
                let mut rng =
                    Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1));
                loop {
                    epoch_start.wait();
                    if stop.load(Relaxed) {
                        return;
                    }
                    let until = *deadline.lock().unwrap();
                    while Instant::now() < until {
                        for _ in 0..32 {
                            soak.one_call(&mut rng);
                        }
                    }
                    epoch_end.wait();
                }
            })
        })
        .collect::<std::io::Result<Vec<_>>>();
    // The threads already started wait at the barrier; ending the process
    // ends them.
    let workers = match workers {
        Ok(workers) => workers,
        Err(e) => {
            eprintln!(
                "soak: could not start {} worker threads: {e}; lower --threads",
                args.threads
            );
            return ExitCode::FAILURE;
        }
    };

    // A hung caller would stall the barrier forever; fail loudly instead.
    {
        let soak = soak.clone();
        thread::spawn(move || {
            let mut last = u64::MAX;
            loop {
                thread::sleep(Duration::from_secs(10));
                let calls = soak.seen.calls.load(Relaxed);
                if calls == last {
                    eprintln!("\nsoak: VIOLATION: no call finished for 10 s; a caller is hung");
                    std::process::exit(1);
                }
                last = calls;
            }
        });
    }
    let bar = progress_bar(args.seconds);
    loop {
        let elapsed = began.elapsed();
        if elapsed >= total {
            stop.store(true, Relaxed);
            epoch_start.wait();
            break;
        }
        *deadline.lock().unwrap() = Instant::now() + (total - elapsed).min(Duration::from_secs(1));
        epoch_start.wait();
        epoch_end.wait();
        soak.check_quiet();
        let o = |c: &AtomicU64| c.load(Relaxed);
        let seen = &soak.seen;
        bar.set_position(began.elapsed().as_secs());
        bar.set_message(format!(
            "calls {:>10}  runs {:>9}  timeouts {:>8}  panics {:>7}  violations {}",
            o(&seen.calls),
            o(&seen.runs),
            o(&seen.timeouts),
            o(&seen.injected_leader_panics)
                + o(&seen.hash_panics)
                + o(&seen.leader_clone_panics)
                + o(&seen.follower_clone_panics),
            o(&seen.violations),
        ));
    }
    bar.finish_and_clear();
    for worker in workers {
        if worker.join().is_err() {
            soak.violation("a worker thread died".to_string());
        }
    }
    soak.check_quiet();

    let o = |c: &AtomicU64| c.load(Relaxed);
    let seen = &soak.seen;
    let stats = soak.group.stats();
    println!("soak: {} threads for {:.1?}", args.threads, began.elapsed());
    println!("  calls                {:>12}", o(&seen.calls));
    println!("  flights (runs)       {:>12}", o(&seen.runs));
    println!("  followers served     {:>12}", stats.followers_served);
    println!("  timeouts             {:>12}", o(&seen.timeouts));
    println!("  forgets              {:>12}", o(&seen.forgets));
    println!(
        "  panics injected      {:>12}  (leader {}, clone {} in leaders + {} in followers, hash {})",
        o(&seen.injected_leader_panics)
            + o(&seen.leader_clone_panics)
            + o(&seen.follower_clone_panics)
            + o(&seen.hash_panics),
        o(&seen.injected_leader_panics),
        o(&seen.leader_clone_panics),
        o(&seen.follower_clone_panics),
        o(&seen.hash_panics),
    );
    println!(
        "  followers unwound with LeaderPanicked {:>5}",
        o(&seen.follower_panics)
    );
    println!("  violations           {:>12}", o(&seen.violations));
    let violations = o(&seen.violations);
    for what in soak.first_violations.lock().unwrap().iter() {
        println!("  VIOLATION: {what}");
    }
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
