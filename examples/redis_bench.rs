//! Cross-process benchmark of `RedisGroup`, one row per scenario:
//!
//! - `hot`: P processes × T threads call one hot key at once, `f` = 1 ms
//!   sleep, for R rounds, first with a plain local `Group` per process, then
//!   with a `RedisGroup`: backend runs per round (goal 1.00 with Redis;
//!   local-only gives P) and the latency Redis adds, next to a loopback PING.
//! - `keys`: P processes × K hot keys (one thread per key, `f` = 50 ms so
//!   that the processes' calls overlap) at once, against
//!   a server started with `--maxclients` (40 by default): runs per key per
//!   round, the most connections a process had open, p50/p99; every call
//!   and run goes through the history checker (values fresh, runs counted).
//! - `restart`: the `hot` workload while the server is SIGKILLed and
//!   started again mid-run: how long dedup was gone.
//!
//! ```text
//! cargo run --release --features redis --example redis_bench -- [--scenario all|hot|keys|restart] [--processes 4] [--threads 8] [--rounds 200] [--keys 64] [--maxclients 40] [--url redis://…]
//! ```
//!
//! Without `--url` it starts its own `redis-server` children (on PATH);
//! `keys` and `restart` always do (they configure or restart the server).

#[path = "../tests/redis_support/history.rs"]
mod history;
#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;
use clap::{Parser, ValueEnum};
use sync_singleflight::Group;
use sync_singleflight::redis::{RedisConfig, RedisGroup};

use redis_support::RedisServer;

const F_TIME: Duration = Duration::from_millis(1);
const HOT: u64 = 7;

/// Cross-process benchmark of RedisGroup (see the file's header).
#[derive(Parser, Debug, Clone)]
#[command(name = "redis_bench")]
struct Args {
    /// Which rows to measure
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// Processes (1 to 64)
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = RangedU64ValueParser::<usize>::new().range(1..=64))]
    processes: usize,
    /// Threads per process on the hot key (1 to 256)
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = RangedU64ValueParser::<usize>::new().range(1..=256))]
    threads: usize,
    /// Rounds per row (1 to 100000)
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    rounds: usize,
    /// Hot keys per process in the `keys` row (1 to 1000)
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1000))]
    keys: usize,
    /// How long `f` sleeps in the `keys` row, in ms: long enough for the
    /// four processes' calls to overlap (1 to 10000)
    #[arg(long, value_name = "MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    keys_f_ms: u64,
    /// The `maxclients` of the server the `keys` row starts
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    maxclients: u32,
    /// A server to use for the `hot` row instead of starting one
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Internal: run as a worker process in this mode
    #[arg(long, value_enum, hide = true)]
    worker: Option<Mode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Hot,
    Keys,
    Restart,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Local,
    Redis,
    Keys,
}

fn main() {
    let args = Args::parse();
    if let Some(mode) = args.worker {
        return worker(mode, &args);
    }
    let want = |s: Scenario| args.scenario == Scenario::All || args.scenario == s;
    println!(
        "{} processes, f = 1 ms sleep, {} rounds per row",
        args.processes, args.rounds
    );
    println!(
        "| row | backend runs per round (per key) | p50 latency | p99 latency | connections per process (peak) |"
    );
    println!("|---|---|---|---|---|");
    if want(Scenario::Hot) {
        hot(&args);
    }
    if want(Scenario::Keys) {
        keys(&args);
    }
    if want(Scenario::Restart) {
        restart(&args);
    }
}

fn percentiles(mut lat: Vec<Duration>) -> (Duration, Duration) {
    lat.sort();
    (lat[lat.len() / 2], lat[lat.len() * 99 / 100])
}

fn hot(args: &Args) {
    let server;
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            server = RedisServer::start();
            server.url()
        }
    };
    let (rtt, cold_rtt) = ping_rtt(&url);
    let mut p50s = Vec::new();
    for mode in [Mode::Local, Mode::Redis] {
        let mut fleet = Fleet::spawn(mode, &url, args);
        let (mut runs, mut lat, mut peak) = (0, Vec::new(), 0);
        for round in 0..args.rounds {
            let r = fleet.round(round);
            runs += r.runs;
            lat.extend(r.latencies);
            peak = peak.max(r.peak);
        }
        let (p50, p99) = percentiles(lat);
        p50s.push(p50);
        let label = match mode {
            Mode::Local => format!("one hot key, {} threads, Group per process", args.threads),
            _ => format!("one hot key, {} threads, RedisGroup", args.threads),
        };
        let peak = if mode == Mode::Local {
            "-".into()
        } else {
            peak.to_string()
        };
        println!(
            "| {label} | {:.2} | {} us | {} us | {peak} |",
            runs as f64 / args.rounds as f64,
            p50.as_micros(),
            p99.as_micros()
        );
    }
    let added = p50s[1].saturating_sub(p50s[0]);
    println!(
        "p50 added by Redis: {} us = {:.1} back-to-back or {:.1} idle PING round trips ({} / {} us)",
        added.as_micros(),
        added.as_secs_f64() / rtt.as_secs_f64(),
        added.as_secs_f64() / cold_rtt.as_secs_f64(),
        rtt.as_micros(),
        cold_rtt.as_micros()
    );
}

fn keys(args: &Args) {
    let server = RedisServer::start_with(&["--maxclients", &args.maxclients.to_string()]);
    let mut fleet = Fleet::spawn(Mode::Keys, &server.url(), args);
    let (mut lat, mut peak, mut events) = (Vec::new(), 0, Vec::new());
    for round in 0..args.rounds {
        let r = fleet.round(round);
        lat.extend(r.latencies);
        peak = peak.max(r.peak);
        events.extend(r.events);
    }
    let summary = history::check(&events).unwrap_or_else(|e| panic!("history check failed: {e}"));
    let keys_rounds = (args.keys * args.rounds) as f64;
    let (p50, p99) = percentiles(lat);
    println!(
        "| {} hot keys at once, f = {} ms, maxclients {} | {:.2} per key | {} us | {} us | {peak} |",
        args.keys,
        args.keys_f_ms,
        args.maxclients,
        summary.runs as f64 / keys_rounds,
        p50.as_micros(),
        p99.as_micros()
    );
    let worst = summary.runs_per_burst.values().max().copied().unwrap_or(0);
    println!(
        "history: {} calls, each value from a run overlapping its call; at most {worst} run(s) for one key in one round",
        summary.calls
    );
}

fn restart(args: &Args) {
    let server = RedisServer::start();
    let mut fleet = Fleet::spawn(Mode::Redis, &server.url(), args);
    for round in 0..20 {
        fleet.round(round); // warm: every process has pooled connections
    }
    // Rounds keep running back to back while another thread SIGKILLs the
    // server and starts it again on the same port.
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    let (mut back, mut fallback_rounds, mut round) = (None, 0, 20);
    let mut times: Option<(Instant, Instant)> = None;
    thread::scope(|s| {
        s.spawn(|| {
            let killed = Instant::now();
            server.restart(); // returns once the server answers PING
            tx.send((killed, Instant::now())).unwrap();
        });
        while back.is_none() && started.elapsed() < Duration::from_secs(30) {
            let begun = Instant::now();
            let r = fleet.round(round);
            round += 1;
            if times.is_none() {
                times = rx.try_recv().ok();
            }
            match times {
                Some((_, accepted)) if begun >= accepted && r.runs == 1 => back = Some(begun),
                _ if r.runs > 1 => fallback_rounds += 1,
                _ => {}
            }
        }
    });
    let (killed, accepted) = times.expect("the restart finished");
    let back = back.expect("dedup came back within 30 s");
    println!(
        "restart mid-run: server down {} ms; dedup back {} ms after it accepted connections \
         ({} ms without dedup; {fallback_rounds} rounds with more than one run)",
        (accepted - killed).as_millis(),
        back.saturating_duration_since(accepted).as_millis(),
        (back - killed).as_millis()
    );
}

fn ping_rtt(url: &str) -> (Duration, Duration) {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let mut ping = |idle: Duration| {
        let mut samples: Vec<Duration> = (0..200)
            .map(|_| {
                thread::sleep(idle);
                let t = Instant::now();
                let _: String = redis::cmd("PING").query(&mut con).unwrap();
                t.elapsed()
            })
            .collect();
        redis_support::median(&mut samples)
    };
    (ping(Duration::ZERO), ping(F_TIME))
}

/// What one round reported, over every process.
#[derive(Default)]
struct Round {
    runs: u64,
    peak: usize,
    latencies: Vec<Duration>,
    events: Vec<history::Event>,
}

struct Fleet {
    workers: Vec<(Child, ChildStdin, BufReader<ChildStdout>)>,
}

impl Fleet {
    fn spawn(mode: Mode, url: &str, args: &Args) -> Self {
        let mode = format!("{mode:?}").to_lowercase();
        let mut workers: Vec<_> = (0..args.processes)
            .map(|_| {
                let mut child = Command::new(std::env::current_exe().unwrap())
                    .args(["--worker", &mode, "--url", url])
                    .args(["--threads", &args.threads.to_string()])
                    .args(["--keys", &args.keys.to_string()])
                    .args(["--keys-f-ms", &args.keys_f_ms.to_string()])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let stdin = child.stdin.take().unwrap();
                let stdout = BufReader::new(child.stdout.take().unwrap());
                (child, stdin, stdout)
            })
            .collect();
        for (_, _, out) in &mut workers {
            assert_eq!(line(out), "ready");
        }
        Fleet { workers }
    }

    /// Starts a round in every process at once and collects the reports:
    /// `ev …` history lines, then `<runs> <peak> <latency us>…`.
    fn round(&mut self, round: usize) -> Round {
        for (_, stdin, _) in &mut self.workers {
            writeln!(stdin, "{round}").unwrap();
        }
        let mut all = Round::default();
        for (_, _, out) in &mut self.workers {
            let mut report = line(out);
            while let Some(event) = report.strip_prefix("ev ") {
                all.events
                    .push(history::Event::parse(event).expect("an event line"));
                report = line(out);
            }
            let mut parts = report.split(' ');
            all.runs += parts.next().unwrap().parse::<u64>().unwrap();
            all.peak = all.peak.max(parts.next().unwrap().parse().unwrap());
            all.latencies
                .extend(parts.map(|us| Duration::from_micros(us.parse().unwrap())));
        }
        all
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (mut child, stdin, _) in self.workers.drain(..) {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(!line.is_empty(), "a worker exited");
    line.trim().to_string()
}

/// One process: per round line on stdin, its threads call at once (all on
/// the hot key, or one key each in `keys` mode); prints the round's report.
fn worker(mode: Mode, args: &Args) {
    let url = args.url.clone().unwrap_or_default();
    let mut config = RedisConfig::new("bench", 1);
    config.lease = Duration::from_secs(2);
    let remote: RedisGroup<u64, u64> = RedisGroup::open(&url, config).unwrap();
    let local: Group<u64, u64> = Group::new();
    let threads = if mode == Mode::Keys {
        args.keys
    } else {
        args.threads
    };
    let keys_f = Duration::from_millis(args.keys_f_ms);
    remote.work(&u64::MAX, || 0); // warm up: scripts loaded, connection pooled
    let log = history::Log::default();
    let runs = AtomicU64::new(0);
    let start = Barrier::new(threads + 1);
    let done = Barrier::new(threads + 1);
    let latencies: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let round = AtomicU64::new(0);
    println!("ready");
    thread::scope(|s| {
        for (index, slot) in latencies.iter().enumerate() {
            let (runs, start, done, round, remote, local, log) =
                (&runs, &start, &done, &round, &remote, &local, &log);
            s.spawn(move || {
                loop {
                    start.wait();
                    let this_round = round.load(Ordering::SeqCst);
                    if this_round == u64::MAX {
                        return;
                    }
                    let t = Instant::now();
                    match mode {
                        Mode::Keys => {
                            let key = index as u64;
                            // The burst id names the round and the key.
                            let burst = this_round * 10_000 + key;
                            log.call(index as u64, || {
                                remote.work(&key, || {
                                    runs.fetch_add(1, Ordering::SeqCst);
                                    log.run(burst, || thread::sleep(keys_f))
                                })
                            });
                        }
                        Mode::Local | Mode::Redis => {
                            let f = || {
                                runs.fetch_add(1, Ordering::SeqCst);
                                thread::sleep(F_TIME);
                                this_round
                            };
                            let value = if mode == Mode::Redis {
                                remote.work(&HOT, f)
                            } else {
                                local.work(&HOT, f)
                            };
                            assert_eq!(value, this_round, "a value from another round");
                        }
                    }
                    slot.store(t.elapsed().as_micros() as u64, Ordering::SeqCst);
                    done.wait();
                }
            });
        }
        let stdin = std::io::stdin();
        let mut out = std::io::stdout().lock();
        for line in stdin.lock().lines() {
            round.store(line.unwrap().parse().unwrap(), Ordering::SeqCst);
            let before = runs.load(Ordering::SeqCst);
            start.wait();
            done.wait();
            for event in log.drain() {
                writeln!(out, "ev {}", event.line()).unwrap();
            }
            let peak = remote.stats().connections_peak;
            let mut report = format!("{} {peak}", runs.load(Ordering::SeqCst) - before);
            for slot in &latencies {
                report.push_str(&format!(" {}", slot.load(Ordering::SeqCst)));
            }
            writeln!(out, "{report}").unwrap();
            out.flush().unwrap();
        }
        round.store(u64::MAX, Ordering::SeqCst);
        start.wait();
    });
}
