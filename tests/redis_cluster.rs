//! `RedisGroup::open_cluster` on a real local Redis Cluster (3 masters with
//! a replica each, `redis-cli --cluster create`): 4 processes × 16 threads
//! over 30 keys run each key once per burst; after a master is SIGKILLed
//! its replica takes over and dedup comes back, with nobody hung. The
//! workers are this test binary re-executed.
#![cfg(feature = "redis")]

#[path = "redis_support/groups.rs"]
mod groups;
mod redis_support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use groups::config;
use redis_support::{RedisCluster, Worker, command, report, role};
use sync_singleflight::redis::{ErrorKind, FallbackReason, RedisConfig, RedisGroup, Source};

const PROCESSES: usize = 4;
const THREADS: usize = 16;
const KEYS: usize = 30;
/// How long a key's leader runs `f`: long enough that every process's
/// caller arrives while it runs, even on a loaded machine.
const F_TIME: Duration = Duration::from_millis(400);
const LONG: Duration = Duration::from_secs(20);

fn cluster_config() -> RedisConfig {
    let mut cfg = config("cluster");
    cfg.lease = Duration::from_millis(800);
    cfg.breaker_cooldown = Duration::from_millis(200);
    cfg
}

/// Worker: each `burst <tag>` runs 16 threads; thread `t` calls keys `t`
/// and `t + 16` (below 30) one after the other. Reports the runs of `f` in
/// this process per key, the callers served, and the sources seen.
fn worker() {
    let urls: Vec<String> = std::env::var("SF_TEST_URLS")
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let group: RedisGroup<String, String> =
        RedisGroup::open_cluster(&urls, cluster_config()).unwrap();
    group.work(&format!("warm-{}", std::process::id()), String::new);
    report("ready");
    while let Some(line) = command() {
        let Some(tag) = line.strip_prefix("burst ") else {
            break;
        };
        let runs = Mutex::new(BTreeMap::<usize, u32>::new());
        let seen = Mutex::new(BTreeMap::<String, u32>::new());
        let slowest = Mutex::new(Duration::ZERO);
        thread::scope(|s| {
            for t in 0..THREADS {
                let (runs, seen, slowest) = (&runs, &seen, &slowest);
                let group = &group;
                s.spawn(move || {
                    for k in [t, t + THREADS].into_iter().filter(|k| *k < KEYS) {
                        let began = Instant::now();
                        let outcome = group.work_with_outcome(&format!("{tag}-{k}"), || {
                            *runs.lock().unwrap().entry(k).or_default() += 1;
                            thread::sleep(F_TIME);
                            format!("{tag}-{k}")
                        });
                        assert_eq!(outcome.value, format!("{tag}-{k}"));
                        let source = match outcome.source {
                            Source::Fallback(_) => "Fallback".to_string(),
                            other => format!("{other:?}"),
                        };
                        *seen.lock().unwrap().entry(source).or_default() += 1;
                        let mut slowest = slowest.lock().unwrap();
                        *slowest = (*slowest).max(began.elapsed());
                    }
                });
            }
        });
        let runs: Vec<String> = runs
            .into_inner()
            .unwrap()
            .iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect();
        let seen: Vec<String> = seen
            .into_inner()
            .unwrap()
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect();
        report(&format!(
            "done runs={} seen={} slowest_ms={}",
            runs.join(","),
            seen.join(","),
            slowest.into_inner().unwrap().as_millis()
        ));
    }
}

/// Sends one burst to every worker; returns the runs per key over the
/// fleet, the callers served, and the slowest call.
fn burst(workers: &mut [Worker], tag: &str) -> (BTreeMap<usize, u32>, u32, u64) {
    for w in workers.iter_mut() {
        w.send(&format!("burst {tag}"));
    }
    let (mut runs, mut served, mut slowest) = (BTreeMap::new(), 0, 0);
    for w in workers.iter() {
        let line = w.recv(LONG);
        for part in line.split(' ') {
            let pairs = |text: &str| -> Vec<(String, u32)> {
                text.split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (a, b) = p.split_once(':').unwrap();
                        (a.to_string(), b.parse().unwrap())
                    })
                    .collect()
            };
            if let Some(list) = part.strip_prefix("runs=") {
                for (k, n) in pairs(list) {
                    *runs.entry(k.parse().unwrap()).or_default() += n;
                }
            } else if let Some(list) = part.strip_prefix("seen=") {
                served += pairs(list).iter().map(|(_, n)| n).sum::<u32>();
            } else if let Some(ms) = part.strip_prefix("slowest_ms=") {
                slowest = slowest.max(ms.parse().unwrap());
            }
        }
    }
    (runs, served, slowest)
}

fn exactly_once(runs: &BTreeMap<usize, u32>) -> bool {
    runs.len() == KEYS && runs.values().all(|&n| n == 1)
}

#[test]
fn thirty_keys_run_once_per_burst_and_dedup_survives_a_master_failover() {
    if role().is_some() {
        return worker();
    }
    let cluster = RedisCluster::start(3);
    let urls = cluster.urls().join(",");
    let node_urls = cluster.urls();
    let node_urls: Vec<&str> = node_urls.iter().map(String::as_str).collect();
    let parent: RedisGroup<String, String> =
        RedisGroup::open_cluster(&node_urls[..1], cluster_config()).unwrap();
    let health = parent.check(PROCESSES);
    assert!(health.is_ok(), "{health:?}");
    assert_eq!(health.mode, "cluster");
    // One node reached with `open` answers MOVED for the keys it does not
    // own: a setup error that leaves the breaker closed, and a warning.
    let single: RedisGroup<String, String> =
        RedisGroup::open(node_urls[0], cluster_config()).unwrap();
    let moved = (0..50)
        .find_map(|k| single.try_work(&format!("which-{k}"), String::new).err())
        .expect("some key lives on another node");
    assert_eq!(moved.kind(), ErrorKind::Cluster, "{moved}");
    assert_eq!(moved.reason(), FallbackReason::Misconfigured);
    assert_eq!(single.stats().breaker_opens, 0);
    let warned = single.check(1).warnings.join(" ");
    assert!(warned.contains("cluster"), "{warned}");
    let mut workers: Vec<Worker> = (0..PROCESSES)
        .map(|_| {
            Worker::spawn(
                "thirty_keys_run_once_per_burst_and_dedup_survives_a_master_failover",
                "worker",
                &[("SF_TEST_URLS", urls.clone())],
            )
        })
        .collect();
    for w in &workers {
        assert_eq!(w.recv(LONG), "ready");
    }
    // Each process calls every key once (thread t: keys t and t + 16).
    let callers = (PROCESSES * KEYS) as u32;
    for b in 0..2 {
        let (runs, served, _) = burst(&mut workers, &format!("b{b}"));
        assert!(exactly_once(&runs), "burst {b}: runs per key {runs:?}");
        assert_eq!(served, callers);
    }

    // Kill the master of one key's slot; its replica takes over.
    let slot = cluster.slot("sf:cluster:v1:{k:f0-0}:lease");
    let victim = cluster.master_of(slot, 0);
    let witness = (victim + 1) % cluster.nodes.len();
    cluster.nodes[victim].kill();
    let killed = Instant::now();
    let mut bursts = 0;
    let back = loop {
        assert!(
            killed.elapsed() < LONG,
            "dedup did not come back in {LONG:?}"
        );
        bursts += 1;
        let started = killed.elapsed();
        let (runs, served, slowest) = burst(&mut workers, &format!("f{bursts}"));
        // Every caller is served, and none waits long, meanwhile.
        assert_eq!(served, callers);
        assert!(slowest < 5_000, "a call took {slowest} ms");
        if exactly_once(&runs) {
            break started;
        }
    };
    let promoted = cluster.master_of(slot, witness);
    assert_ne!(promoted, victim);
    println!(
        "dedup back in the burst started {back:?} after the master was killed \
         ({bursts} bursts)"
    );
    for mut w in workers {
        w.send("quit");
        w.finish(Duration::from_secs(10));
    }
}

/// Runs `f` on a thread and fails the test if it has not returned within
/// `bound`: a hang shows as a failure, not as a test that never ends.
fn within<T: Send + 'static>(bound: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(bound)
        .unwrap_or_else(|_| panic!("still running after {bound:?}"))
}

/// Every node hung (SIGSTOP): a call on a pooled connection and one that
/// must dial both give up within the timeouts, and the breaker opens.
#[test]
fn a_hung_cluster_costs_bounded_time() {
    let cluster = RedisCluster::start(3);
    let urls = cluster.urls();
    let open = {
        let urls = urls.clone();
        move || {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            RedisGroup::<String, u32>::open_cluster(&urls, cluster_config()).unwrap()
        }
    };
    let warm = std::sync::Arc::new(open());
    assert!(warm.try_work("before", || 1).is_ok());
    for node in &cluster.nodes {
        node.pause(true);
    }
    let bound = Duration::from_secs(15);
    let pooled = std::sync::Arc::clone(&warm);
    let start = Instant::now();
    let err = within(bound, move || pooled.try_work("during", || 2).unwrap_err());
    println!("pooled: {:?}: {err}", start.elapsed());
    assert_eq!(err.reason(), FallbackReason::Unavailable, "{err}");
    let start = Instant::now();
    let err = within(bound, move || open().try_work("fresh", || 3).unwrap_err());
    println!("fresh: {:?}: {err}", start.elapsed());
    assert_eq!(err.reason(), FallbackReason::Unavailable, "{err}");
    // check() on the hung cluster: an error, no panic, no hang.
    let checked = std::sync::Arc::clone(&warm);
    let health = within(bound, move || checked.check(1));
    assert!(health.error.is_some(), "{health:?}");
    for node in &cluster.nodes {
        node.pause(false);
    }
    // One master just killed (before its replica takes over): check()
    // reports an error or a partial picture, and never panics.
    cluster.nodes[0].kill();
    let checked = std::sync::Arc::clone(&warm);
    let health = within(bound, move || checked.check(1));
    println!("one master dead: {health:?}");
}

/// A wrong password on a cluster is an authentication error, as on one
/// server: a setup to fix, which never opens the breaker.
#[test]
fn a_wrong_cluster_password_is_an_authentication_error() {
    let cluster = RedisCluster::start(3);
    for node in &cluster.nodes {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg("pw")
            .query(&mut node.connection())
            .unwrap();
    }
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("redis://:nope@127.0.0.1:{}", n.port()))
        .collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let group = RedisGroup::<String, u32>::open_cluster(&urls, cluster_config()).unwrap();
    for _ in 0..5 {
        let err = group.try_work("k", || 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
        assert_eq!(err.reason(), FallbackReason::Misconfigured, "{err}");
    }
    assert_eq!(group.stats().breaker_opens, 0);
}
