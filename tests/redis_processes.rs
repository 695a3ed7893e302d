//! Multi-process properties of `RedisGroup` against a real redis-server:
//! this test binary re-executes itself as worker processes (one exact test
//! name and a role in `SF_TEST_ROLE`).
#![cfg(feature = "redis")]

#[path = "redis_support/groups.rs"]
mod groups;
#[path = "redis_support/history.rs"]
mod history;
mod redis_support;

use std::collections::BTreeSet;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use groups::{config, replica};
use redis_support::{
    RedisServer, Worker, client_commands, command, delta, median, report, role, wait_until,
};
use sync_singleflight::redis::{RedisGroup, Source};

const PROCESSES: usize = 4;
const THREADS: usize = 16;
const BURSTS: usize = 5;

/// In a worker: runs `THREADS` threads on one key at once, reports every
/// call and run for the history check (`ev …` lines), then how many runs
/// of `f` happened here and which values and sources were seen.
fn burst(
    group: &RedisGroup<String, String>,
    key: &str,
    threads: usize,
    f_time: Duration,
    tag: &str,
) -> String {
    let runs = AtomicU64::new(0);
    let start = Barrier::new(threads);
    let log = history::Log::default();
    // The burst number in the tag ("b3" → 3) names the burst in the history.
    let burst_id = tag.trim_start_matches(|c: char| !c.is_ascii_digit());
    let burst_id: u64 = burst_id.parse().unwrap_or(0);
    let seen: Vec<(String, Source)> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (start, runs, log) = (&start, &runs, &log);
                s.spawn(move || {
                    start.wait();
                    let mut seen = None;
                    log.call(i as u64, || {
                        let outcome = group.work_with_outcome(key, || {
                            runs.fetch_add(1, Ordering::SeqCst);
                            let id = log.run(burst_id, || thread::sleep(f_time));
                            format!("{tag}-by-pid-{}-{id}", std::process::id())
                        });
                        let id = outcome.value.rsplit('-').next().unwrap().parse().unwrap();
                        seen = Some((outcome.value, outcome.source));
                        id
                    });
                    seen.unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for event in log.drain() {
        report(&format!("ev {}", event.line()));
    }
    let values: BTreeSet<_> = seen.iter().map(|(v, _)| v.clone()).collect();
    let sources: BTreeSet<_> = seen.iter().map(|(_, s)| format!("{s:?}")).collect();
    let values: Vec<_> = values.into_iter().collect();
    let sources: Vec<_> = sources.into_iter().collect();
    format!(
        "runs={} served={} values={} sources={}",
        runs.load(Ordering::SeqCst),
        seen.len(),
        values.join("|"),
        sources.join("|")
    )
}

/// The worker's next report that is not a history event; the events
/// before it go to `events`.
fn next_report(w: &Worker, timeout: Duration, events: &mut Vec<history::Event>) -> String {
    loop {
        let line = w.recv(timeout);
        match line.strip_prefix("ev ") {
            Some(event) => events.push(history::Event::parse(event).unwrap()),
            None => return line,
        }
    }
}

fn field<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .split(' ')
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name} in report {report:?}"))
}

/// Worker side of both tests: open, warm up (scripts loaded, a pooled
/// connection), then run each `burst <tag> <key> <threads> <ms>` command.
fn worker() {
    let url = std::env::var("SF_TEST_URL").unwrap();
    let group = replica::<String>(&url, config("procs"));
    group.work(&format!("warm-{}", std::process::id()), String::new);
    report("ready");
    while let Some(line) = command() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["burst", tag, key, threads, ms] => {
                let f_time = Duration::from_millis(ms.parse().unwrap());
                let result = burst(&group, key, threads.parse().unwrap(), f_time, tag);
                report(&format!("done {result}"));
            }
            ["lead-for", key, ms] => {
                let pause = Duration::from_millis(ms.parse().unwrap());
                let outcome = group.work_with_outcome(*key, || {
                    report("leading");
                    thread::sleep(pause);
                    "stalled leader".to_string()
                });
                let lost = group.stats().lost_leases;
                report(&format!(
                    "done source={:?} lost_leases={lost}",
                    outcome.source
                ));
            }
            ["keys", burst, keys, ms] => {
                let f_time = Duration::from_millis(ms.parse().unwrap());
                many_keys(
                    &group,
                    burst.parse().unwrap(),
                    keys.parse().unwrap(),
                    f_time,
                );
            }
            ["lead", key] => {
                group.work(*key, || {
                    report("leading");
                    thread::sleep(Duration::from_secs(60));
                    unreachable!("the parent kills this process first")
                });
            }
            _ => break,
        }
    }
}

/// In a worker: one thread per key, all at once, every call and run
/// logged; reports each event, then the group's connection figures.
fn many_keys(group: &RedisGroup<String, String>, burst: u64, keys: u64, f_time: Duration) {
    let log = history::Log::default();
    let start = Barrier::new(keys as usize);
    thread::scope(|s| {
        for k in 0..keys {
            let (log, start) = (&log, &start);
            s.spawn(move || {
                start.wait();
                // One run per key per burst: the burst id names both.
                let id = burst * 1000 + k;
                log.call(k, || {
                    let value = group.work(&format!("hot{k}"), || {
                        log.run(id, || thread::sleep(f_time)).to_string()
                    });
                    value.parse().unwrap()
                });
            });
        }
    });
    for event in log.drain() {
        report(&format!("ev {}", event.line()));
    }
    let stats = group.stats();
    let fallbacks: u64 = stats.fallbacks.iter().sum();
    report(&format!(
        "done peak={} open={} fallbacks={fallbacks} dialled={}",
        stats.connections_peak, stats.connections_open, stats.dialled
    ));
}

fn spawn_workers(test: &str, server: &RedisServer, n: usize) -> Vec<Worker> {
    let env = [("SF_TEST_URL", server.url())];
    let workers: Vec<Worker> = (0..n)
        .map(|_| Worker::spawn(test, "worker", &env))
        .collect();
    for w in &workers {
        assert_eq!(w.recv(Duration::from_secs(20)), "ready");
    }
    workers
}

#[test]
fn one_hot_key_runs_once_per_burst_across_processes() {
    if role().is_some() {
        return worker();
    }
    let server = RedisServer::start();
    let mut workers = spawn_workers(
        "one_hot_key_runs_once_per_burst_across_processes",
        &server,
        PROCESSES,
    );
    for b in 0..BURSTS {
        let before = server.command_counts();
        let started = Instant::now();
        for w in &mut workers {
            w.send(&format!("burst b{b} hot {THREADS} 200"));
        }
        let mut events = Vec::new();
        let reports: Vec<String> = workers
            .iter()
            .map(|w| next_report(w, Duration::from_secs(10), &mut events))
            .collect();
        let elapsed = started.elapsed();
        let history = history::check(&events).unwrap();
        assert_eq!(history.calls, PROCESSES * THREADS);
        assert_eq!(
            history.runs_per_burst.get(&(b as u64)),
            Some(&1),
            "{history:?}"
        );
        let commands = delta(&before, &server.command_counts());
        let runs: u64 = reports
            .iter()
            .map(|r| field(r, "runs").parse::<u64>().unwrap())
            .sum();
        let served: usize = reports
            .iter()
            .map(|r| field(r, "served").parse::<usize>().unwrap())
            .sum();
        let values: BTreeSet<&str> = reports.iter().map(|r| field(r, "values")).collect();
        let total = client_commands(&commands);
        println!(
            "burst {b}: runs={runs} served={served} wall={elapsed:?} redis commands={total} {commands:?}"
        );
        assert_eq!(runs, 1, "exactly one backend call per burst: {reports:?}");
        assert_eq!(served, PROCESSES * THREADS);
        assert_eq!(
            values.len(),
            1,
            "every caller gets that burst's value: {values:?}"
        );
        assert!(values.iter().all(|v| v.starts_with(&format!("b{b}-by"))));
        // Local first: at most 2 commands per process per flight (no
        // renewal fires: f is 200 ms, renewals every 333 ms).
        assert!(total <= 2 * PROCESSES as u64, "{commands:?}");
    }
    for w in workers {
        drop(w);
    }
}

#[test]
fn sigkilled_leader_is_taken_over_exactly_once() {
    const TEST: &str = "sigkilled_leader_is_taken_over_exactly_once";
    if role().is_some() {
        return worker();
    }
    let server = RedisServer::start();
    let mut leader = spawn_workers(TEST, &server, 1).remove(0);
    leader.send("lead victim");
    assert_eq!(leader.recv(Duration::from_secs(10)), "leading");
    let mut followers = spawn_workers(TEST, &server, 3);
    let started = Instant::now();
    for w in &mut followers {
        w.send("burst t victim 8 200");
    }
    // Local first: one blocked reader per follower process, not 24.
    wait_until(
        "each follower process blocks on the leader",
        Duration::from_secs(10),
        || server.blocked_clients() == 3,
    );
    assert_eq!(server.blocked_clients(), 3);
    leader.kill();
    let killed = Instant::now();
    let mut runs = 0;
    let mut sources = Vec::new();
    let mut events = Vec::new();
    for w in &followers {
        let r = next_report(w, Duration::from_secs(5), &mut events);
        let latency = killed.elapsed();
        println!("after kill {latency:?}: {r}");
        // lease (1 s) + f (200 ms) + slack
        assert!(latency < Duration::from_millis(1700), "{latency:?}");
        runs += field(&r, "runs").parse::<u64>().unwrap();
        assert_eq!(field(&r, "served"), "8");
        sources.push(field(&r, "sources").to_string());
    }
    println!("followers waited {:?} in all", started.elapsed());
    assert_eq!(runs, 1, "exactly one takeover run: {sources:?}");
    let history = history::check(&events).unwrap();
    assert_eq!((history.calls, history.runs), (24, 1), "{history:?}");
    sources.sort();
    assert_eq!(sources, ["Follower", "Follower", "Takeover"]);
}

#[test]
fn stalled_leader_past_its_lease_causes_one_duplicate_run() {
    const TEST: &str = "stalled_leader_past_its_lease_causes_one_duplicate_run";
    if role().is_some() {
        return worker();
    }
    let server = RedisServer::start();
    let mut leader = spawn_workers(TEST, &server, 1).remove(0);
    let mut follower = spawn_workers(TEST, &server, 1).remove(0);
    leader.send("lead-for stall 1000");
    assert_eq!(leader.recv(Duration::from_secs(10)), "leading");
    // SIGSTOP: f, the renewal thread, everything stops; the 1 s lease runs out.
    leader.signal("-STOP");
    let stopped = Instant::now();
    follower.send("burst t stall 4 100");
    let served = next_report(&follower, Duration::from_secs(5), &mut Vec::new());
    println!(
        "follower side {:?} after SIGSTOP: {served}",
        stopped.elapsed()
    );
    leader.signal("-CONT");
    let resumed = leader.recv(Duration::from_secs(5));
    println!("leader after SIGCONT: {resumed}");
    // The efficiency-only case: two runs, every caller served, no wrong value.
    assert_eq!(field(&served, "runs"), "1");
    assert_eq!(field(&served, "served"), "4");
    assert_eq!(field(&served, "sources"), "Takeover");
    assert!(field(&served, "values").starts_with("t-by-pid-"));
    assert_eq!(resumed, "done source=Leader lost_leases=1");
}

#[test]
fn sixty_four_hot_keys_in_four_processes_stay_within_the_connection_bound() {
    const TEST: &str = "sixty_four_hot_keys_in_four_processes_stay_within_the_connection_bound";
    const KEYS: u64 = 64;
    if role().is_some() {
        return worker();
    }
    // 4 processes x 8 connections = 32, under the server's 40.
    let server = RedisServer::start_with(&["--maxclients", "40"]);
    let mut workers = spawn_workers(TEST, &server, PROCESSES);
    let mut events = Vec::new();
    let mut walls = Vec::new();
    for b in 0..3u64 {
        let started = Instant::now();
        for w in &mut workers {
            w.send(&format!("keys {b} {KEYS} 100"));
        }
        for w in &workers {
            let line = next_report(w, Duration::from_secs(20), &mut events);
            println!("burst {b}: {line}");
            let peak: usize = field(&line, "peak").parse().unwrap();
            assert!(peak <= 8, "over the default bound of 8: {line}");
            assert_eq!(field(&line, "fallbacks"), "0", "{line}");
        }
        walls.push(started.elapsed());
    }
    let summary = history::check(&events).unwrap();
    let runs_per_key = summary.runs as f64 / (3 * KEYS) as f64;
    println!(
        "{} calls, {runs_per_key:.2} runs per key per burst, burst wall median {:?}",
        summary.calls,
        median(&mut walls)
    );
    assert_eq!(summary.calls, 3 * KEYS as usize * PROCESSES);
    assert_eq!(summary.runs_per_burst.len(), 3 * KEYS as usize);
    assert!(
        summary.runs_per_burst.values().all(|&runs| runs == 1),
        "{summary:?}"
    );
}
