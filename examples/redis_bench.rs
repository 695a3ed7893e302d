//! Cross-process benchmark of `RedisGroup`: P processes × T threads call
//! one hot key at once, `f` = 1 ms sleep, for R rounds, first with a plain
//! local `Group` per process, then with a `RedisGroup`. Reports backend
//! runs per round (goal 1.00 with Redis; local-only gives P) and the p50
//! latency Redis adds over local-only, next to a loopback PING round trip.
//!
//! ```text
//! cargo run --release --features redis --example redis_bench -- [--processes 4] [--threads 8] [--rounds 200] [--url redis://…]
//! ```
//!
//! Without `--url` it starts its own `redis-server` child (on PATH).

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sync_singleflight::Group;
use sync_singleflight::redis::{RedisConfig, RedisGroup};

const F_TIME: Duration = Duration::from_millis(1);
const HOT: u64 = 7;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--worker") {
        return worker(&args);
    }
    let processes: usize = arg(&args, "--processes", "4").parse().unwrap();
    let threads: usize = arg(&args, "--threads", "8").parse().unwrap();
    let rounds: usize = arg(&args, "--rounds", "200").parse().unwrap();
    let server;
    let url = match args.iter().position(|a| a == "--url") {
        Some(i) => args[i + 1].clone(),
        None => {
            server = redis_support::RedisServer::start();
            server.url()
        }
    };
    let (rtt, cold_rtt) = ping_rtt(&url);
    println!(
        "{processes} processes x {threads} threads, one hot key, f = 1 ms sleep, {rounds} rounds"
    );
    println!(
        "loopback PING round trip p50: {} us back to back, {} us after 1 ms idle",
        rtt.as_micros(),
        cold_rtt.as_micros()
    );
    println!("| mode | backend runs per round | p50 latency | p99 latency |");
    println!("|---|---|---|---|");
    let mut p50s = Vec::new();
    for mode in ["local", "redis"] {
        let (runs, mut lat) = run_mode(mode, &url, processes, threads, rounds);
        lat.sort();
        let p50 = lat[lat.len() / 2];
        let p99 = lat[lat.len() * 99 / 100];
        p50s.push(p50);
        let label = if mode == "local" {
            "Group per process"
        } else {
            "RedisGroup across processes"
        };
        println!(
            "| {label} | {:.2} | {} us | {} us |",
            runs as f64 / rounds as f64,
            p50.as_micros(),
            p99.as_micros()
        );
    }
    let added = p50s[1].saturating_sub(p50s[0]);
    println!(
        "p50 added by Redis: {} us = {:.1} back-to-back or {:.1} idle PING round trips",
        added.as_micros(),
        added.as_secs_f64() / rtt.as_secs_f64(),
        added.as_secs_f64() / cold_rtt.as_secs_f64()
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

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "worker {} exited", self.child.id());
        line.trim().to_string()
    }
}

/// Returns backend runs over all rounds and every call's latency.
fn run_mode(
    mode: &str,
    url: &str,
    processes: usize,
    threads: usize,
    rounds: usize,
) -> (u64, Vec<Duration>) {
    let mut workers: Vec<Worker> = (0..processes)
        .map(|_| {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--worker",
                    "--mode",
                    mode,
                    "--url",
                    url,
                    "--threads",
                    &threads.to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdin = child.stdin.take().unwrap();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            Worker {
                child,
                stdin,
                stdout,
            }
        })
        .collect();
    for w in &mut workers {
        assert_eq!(w.line(), "ready");
    }
    let (mut runs, mut latencies) = (0, Vec::new());
    for round in 0..rounds {
        for w in &mut workers {
            writeln!(w.stdin, "{round}").unwrap();
        }
        for w in &mut workers {
            let line = w.line();
            let mut parts = line.split(' ');
            runs += parts.next().unwrap().parse::<u64>().unwrap();
            latencies.extend(parts.map(|us| Duration::from_micros(us.parse().unwrap())));
        }
    }
    for mut w in workers {
        drop(w.stdin);
        w.child.wait().unwrap();
    }
    (runs, latencies)
}

/// One process: per round line on stdin, T threads call the hot key at
/// once; prints "<runs> <latency us>…".
fn worker(args: &[String]) {
    let threads: usize = arg(args, "--threads", "8").parse().unwrap();
    let url = arg(args, "--url", "");
    let mut config = RedisConfig::new("bench", 1);
    config.lease = Duration::from_secs(2);
    let remote: RedisGroup<u64, u64> = RedisGroup::open(&url, config).unwrap();
    let local: Group<u64, u64> = Group::new();
    let use_redis = arg(args, "--mode", "local") == "redis";
    remote.work(&u64::MAX, || 0); // warm up: scripts loaded, connection pooled
    let runs = AtomicU64::new(0);
    let start = Barrier::new(threads + 1);
    let done = Barrier::new(threads + 1);
    let latencies: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let round = AtomicU64::new(0);
    println!("ready");
    thread::scope(|s| {
        for slot in &latencies {
            let (runs, start, done, round, remote, local) =
                (&runs, &start, &done, &round, &remote, &local);
            s.spawn(move || {
                loop {
                    start.wait();
                    let this_round = round.load(Ordering::SeqCst);
                    if this_round == u64::MAX {
                        return;
                    }
                    let f = || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(F_TIME);
                        this_round
                    };
                    let t = Instant::now();
                    let value = if use_redis {
                        remote.work(&HOT, f)
                    } else {
                        local.work(&HOT, f)
                    };
                    assert_eq!(value, this_round, "a value from another round");
                    slot.store(t.elapsed().as_micros() as u64, Ordering::SeqCst);
                    done.wait();
                }
            });
        }
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            round.store(line.unwrap().parse().unwrap(), Ordering::SeqCst);
            let before = runs.load(Ordering::SeqCst);
            start.wait();
            done.wait();
            let mut out = format!("{}", runs.load(Ordering::SeqCst) - before);
            for slot in &latencies {
                out.push_str(&format!(" {}", slot.load(Ordering::SeqCst)));
            }
            println!("{out}");
            std::io::stdout().flush().unwrap();
        }
        round.store(u64::MAX, Ordering::SeqCst);
        start.wait();
    });
}
