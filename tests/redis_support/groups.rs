//! Group-side helpers shared by the `redis_*` integration tests.

#![allow(dead_code)]

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crate::redis_support::{RedisServer, wait_until};
use sync_singleflight::redis::{RedisConfig, RedisGroup, RemoteOutcome, Source};

/// A test configuration: 1 s lease, short timeouts and breaker cooldown.
pub fn config(namespace: &str) -> RedisConfig {
    let mut config = RedisConfig::new(namespace, 1);
    config.lease = Duration::from_secs(1);
    config.connect_timeout = Duration::from_millis(200);
    config.io_timeout = Duration::from_millis(300);
    config.breaker_cooldown = Duration::from_millis(500);
    config.max_wait = Duration::from_secs(20);
    config
}

/// A group standing for one replica (each has its own local group and
/// connections, so two of them in one process talk to Redis like two
/// processes would).
pub fn replica<V>(url: &str, config: RedisConfig) -> RedisGroup<String, V> {
    RedisGroup::open(url, config).expect("valid test configuration")
}

/// Two replicas of one configuration.
pub fn replicas<V>(
    url: &str,
    config: RedisConfig,
) -> (RedisGroup<String, V>, RedisGroup<String, V>) {
    (replica(url, config.clone()), replica(url, config))
}

/// `config` with another lease.
pub fn with_lease(mut config: RedisConfig, lease: Duration) -> RedisConfig {
    config.lease = lease;
    config
}

pub const LONG: Duration = Duration::from_secs(10);

/// Each caller's outcome and latency.
pub type Served<V> = Vec<(RemoteOutcome<V>, Duration)>;

/// `n` threads call `group.work_with_outcome(key, f)` at once; returns each
/// caller's outcome and latency.
pub fn herd<V, F>(group: &RedisGroup<String, V>, key: &str, n: usize, f: F) -> Served<V>
where
    V: Clone + serde::Serialize + serde::de::DeserializeOwned + Send,
    F: Fn() -> V + Sync,
{
    let start = Barrier::new(n);
    thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let t = Instant::now();
                    let outcome = group.work_with_outcome(key, &f);
                    (outcome, t.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

pub fn sources<V>(outcomes: &[(RemoteOutcome<V>, Duration)]) -> Vec<Source> {
    let mut s: Vec<Source> = outcomes.iter().map(|(o, _)| o.source).collect();
    s.dedup();
    s
}

pub fn max_latency<V>(outcomes: &[(RemoteOutcome<V>, Duration)]) -> Duration {
    outcomes.iter().map(|(_, t)| *t).max().unwrap()
}

/// Leader on `a`, remote follower on `b`: `a`'s `f` returns only once
/// `b`'s local leader is blocked on Redis and `a`'s local followers joined.
pub fn lead_and_follow<V, FA, FB>(
    server: &RedisServer,
    a: &RedisGroup<String, V>,
    b: &RedisGroup<String, V>,
    key: &str,
    threads: usize,
    fa: FA,
    fb: FB,
) -> (Served<V>, Served<V>)
where
    V: Clone + serde::Serialize + serde::de::DeserializeOwned + Send,
    FA: Fn() -> V + Sync,
    FB: Fn() -> V + Sync,
{
    let blocked_before = server.blocked_clients();
    let a_joined = a.stats().local.followers_joined + threads as u64 - 1;
    let b_joined = b.stats().local.followers_joined + threads as u64 - 1;
    let b_started = Barrier::new(2);
    thread::scope(|s| {
        let from_a = s.spawn(|| {
            herd(a, key, threads, || {
                b_started.wait();
                wait_until("the remote follower blocks", LONG, || {
                    server.blocked_clients() > blocked_before
                });
                wait_until("local followers join on both sides", LONG, || {
                    a.stats().local.followers_joined >= a_joined
                        && b.stats().local.followers_joined >= b_joined
                });
                fa()
            })
        });
        // b starts only once a holds the lease.
        b_started.wait();
        let from_b = herd(b, key, threads, &fb);
        (from_a.join().unwrap(), from_b)
    })
}
