//! Workloads shared by the criterion benches (`benches/workloads.rs`) and
//! the peer harness (`benches/peers/main.rs`), so both measure the same thing.

#![allow(dead_code)] // each bench target uses a different part

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The contenders, behind one trait.
pub trait Peer: Send + Sync + 'static {
    const NAME: &'static str;
    /// Whether a function may call `work` on another key (singleflight 0.3
    /// holds its global lock while the function runs, so it deadlocks).
    const NESTS: bool = true;
    /// Whether it tells keys apart at all (the OS-thread ceiling does not: it
    /// only answers the hot-key workloads).
    const KEYED: bool = true;
    fn new() -> Self;
    fn work<F: Fn() -> u64>(&self, key: &str, f: F) -> u64;
}

pub struct Ours(sync_singleflight::Group<String, u64>);

impl Peer for Ours {
    const NAME: &'static str = "sync-singleflight";
    fn new() -> Self {
        Ours(sync_singleflight::Group::new())
    }
    fn work<F: Fn() -> u64>(&self, key: &str, f: F) -> u64 {
        self.0.work(key, f)
    }
}

pub struct Crate03(singleflight::Group<u64>);

impl Peer for Crate03 {
    const NAME: &'static str = "singleflight 0.3";
    const NESTS: bool = false;
    fn new() -> Self {
        Crate03(singleflight::Group::new())
    }
    fn work<F: Fn() -> u64>(&self, key: &str, f: F) -> u64 {
        self.0.work(key, f)
    }
}

/// What a user would write by hand with the standard library.
#[derive(Default)]
pub struct Naive {
    calls: Mutex<HashMap<String, Arc<NaiveCall>>>,
}

#[derive(Default)]
struct NaiveCall {
    value: Mutex<Option<u64>>,
    done: Condvar,
}

impl Peer for Naive {
    const NAME: &'static str = "naive std";
    fn new() -> Self {
        Naive::default()
    }
    fn work<F: Fn() -> u64>(&self, key: &str, f: F) -> u64 {
        let mut calls = self.calls.lock().unwrap();
        if let Some(call) = calls.get(key) {
            let call = call.clone();
            drop(calls);
            let mut value = call.value.lock().unwrap();
            while value.is_none() {
                value = call.done.wait(value).unwrap();
            }
            return value.unwrap();
        }
        let call = Arc::new(NaiveCall::default());
        calls.insert(key.to_owned(), call.clone());
        drop(calls);
        let value = f();
        // Removed before publishing: otherwise a follower that loops straight
        // back finds the finished entry and is served a stale value.
        self.calls.lock().unwrap().remove(key);
        *call.value.lock().unwrap() = Some(value);
        call.done.notify_all();
        value
    }
}

/// Joins scoped threads that each return the moment they finished, and
/// returns the latest.
pub fn latest(handles: Vec<thread::ScopedJoinHandle<'_, Instant>>) -> Instant {
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .expect("at least one thread")
}

pub fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}key:{i}")).collect()
}

/// W1: one thread cycles over `keys` (4096 distinct ones), trivial function.
pub fn w1<P: Peer>(peer: &P, keys: &[String], calls: u64) -> Duration {
    let mask = keys.len() - 1;
    let start = Instant::now();
    for i in 0..calls as usize {
        std::hint::black_box(peer.work(&keys[i & mask], || 1));
    }
    start.elapsed()
}

/// W2: two threads, 2048 disjoint keys each, `calls` in all; timed from just
/// before both threads are released to the end of the slower one.
pub fn w2<P: Peer>(peer: &P, calls: u64) -> Duration {
    let warmed = Barrier::new(3);
    let go = Barrier::new(3);
    thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let (warmed, go) = (&warmed, &go);
                s.spawn(move || {
                    let keys = keys(&format!("t{t}:"), 2048);
                    for i in 0..10_000 {
                        peer.work(&keys[i & 2047], || 1);
                    }
                    warmed.wait();
                    go.wait();
                    for i in 0..(calls / 2) as usize {
                        std::hint::black_box(peer.work(&keys[i & 2047], || 1));
                    }
                    Instant::now()
                })
            })
            .collect();
        warmed.wait();
        // Taken before the release, so no thread can finish before it.
        let start = Instant::now();
        go.wait();
        latest(handles) - start
    })
}

/// When a hot-key run stops.
#[derive(Clone, Copy)]
pub enum Until {
    Calls(u64),
    Time(Duration),
}

pub struct HotRun {
    pub elapsed: Duration,
    pub calls: u64,
    pub executions: u64,
}

/// W3/W4/W5/scaling: `threads` threads loop on `keys` hot keys running `f`,
/// thread `t` on key `t % keys`.
pub fn hot<P: Peer>(peer: &P, threads: usize, keys: usize, until: Until, f: fn()) -> HotRun {
    let names: Vec<String> = match keys {
        1 => vec!["hot".to_string()],
        _ => (0..keys).map(|k| format!("hot:{k}")).collect(),
    };
    let calls = AtomicU64::new(0);
    let executions = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    thread::scope(|s| {
        for t in 0..threads {
            let (calls, executions, stop) = (&calls, &executions, &stop);
            let key = names[t % keys].as_str();
            s.spawn(move || {
                while !stop.load(Relaxed) {
                    peer.work(key, || {
                        executions.fetch_add(1, Relaxed);
                        f();
                        1
                    });
                    let done = calls.fetch_add(1, Relaxed) + 1;
                    if let Until::Calls(limit) = until {
                        if done >= limit {
                            stop.store(true, Relaxed);
                        }
                    }
                }
            });
        }
        if let Until::Time(duration) = until {
            thread::sleep(duration);
            stop.store(true, Relaxed);
        }
    });
    HotRun {
        elapsed: start.elapsed(),
        calls: calls.load(Relaxed),
        executions: executions.load(Relaxed),
    }
}

pub struct MixedRun {
    pub elapsed: Duration,
    pub distinct_calls: u64,
    pub hot_calls: u64,
    /// Latency of every 8th distinct-key call, in nanoseconds, sorted.
    pub distinct_ns: Vec<u32>,
}

/// W6: `threads` threads; every 10th call goes to one hot key whose function
/// spins 100 µs, the other 9 to the thread's own 1024 keys with a trivial
/// function. Shows whether a hot key slows the calls that do not touch it.
pub fn mixed<P: Peer>(peer: &P, threads: usize, duration: Duration) -> MixedRun {
    let distinct_calls = AtomicU64::new(0);
    let hot_calls = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let mut distinct_ns: Vec<u32> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (distinct_calls, hot_calls, stop) = (&distinct_calls, &hot_calls, &stop);
                s.spawn(move || {
                    let keys = keys(&format!("t{t}:"), 1024);
                    let (mut distinct, mut hot, mut sampled) = (0u64, 0u64, Vec::new());
                    let mut i = t;
                    while !stop.load(Relaxed) {
                        i += 1;
                        if i % 10 == 0 {
                            peer.work("hot", || {
                                spin_100us();
                                1
                            });
                            hot += 1;
                        } else if i % 8 == 1 {
                            let begin = Instant::now();
                            std::hint::black_box(peer.work(&keys[i & 1023], || 1));
                            sampled.push(begin.elapsed().as_nanos().min(u32::MAX.into()) as u32);
                            distinct += 1;
                        } else {
                            std::hint::black_box(peer.work(&keys[i & 1023], || 1));
                            distinct += 1;
                        }
                    }
                    distinct_calls.fetch_add(distinct, Relaxed);
                    hot_calls.fetch_add(hot, Relaxed);
                    sampled
                })
            })
            .collect();
        thread::sleep(duration);
        stop.store(true, Relaxed);
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    distinct_ns.sort_unstable();
    MixedRun {
        elapsed: start.elapsed(),
        distinct_calls: distinct_calls.load(Relaxed),
        hot_calls: hot_calls.load(Relaxed),
        distinct_ns,
    }
}

pub fn spin_100us() {
    let start = Instant::now();
    while start.elapsed() < Duration::from_micros(100) {
        std::hint::spin_loop();
    }
}

pub fn sleep_1ms() {
    thread::sleep(Duration::from_millis(1));
}

/// How a wake-latency flight's followers end.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Followers {
    /// Each thread exits as soon as its `work` returns (today's figure: the
    /// exits compete for the CPU with the followers still being woken).
    Exit,
    /// Every thread stays alive until all have returned: the pure wake.
    Hold,
}

/// One flight with `followers` parked followers: the time from the leader's
/// function returning to the last follower's `work` returning.
pub fn wake_latency<P: Peer>(peer: &P, followers: usize, end: Followers) -> Duration {
    let arrived = Barrier::new(followers + 1);
    let hold = Barrier::new(followers);
    let leader_returned = Mutex::new(None);
    let (leader_in, leader_entered) = std::sync::mpsc::channel();
    let last_end = thread::scope(|s| {
        let (arrived, hold, leader_returned) = (&arrived, &hold, &leader_returned);
        s.spawn(move || {
            peer.work("k", || {
                leader_in.send(()).unwrap();
                arrived.wait();
                // An upper bound for the followers to park; not measured.
                thread::sleep(Duration::from_millis(2));
                *leader_returned.lock().unwrap() = Some(Instant::now());
                1
            })
        });
        leader_entered.recv().unwrap();
        let handles: Vec<_> = (0..followers)
            .map(|_| {
                s.spawn(move || {
                    arrived.wait();
                    peer.work("k", || 1);
                    let returned = Instant::now();
                    if end == Followers::Hold {
                        hold.wait();
                    }
                    returned
                })
            })
            .collect();
        latest(handles)
    });
    let returned = leader_returned.into_inner().unwrap().unwrap();
    last_end.saturating_duration_since(returned)
}
