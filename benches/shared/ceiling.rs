//! The OS-thread ceiling: the least an OS-thread singleflight can do on a hot
//! key, as a peer of the comparison.
//!
//! One flight is one atomic word, `generation << 2 | WAITERS | RUNNING`, and a
//! value slot: no map, no allocation, no clone, no lock. The caller that sets
//! `RUNNING` leads; the others wait for the generation to move on, first by
//! yielding the CPU for a short window (a flight that lands while they are
//! queued behind the leader is then collected without ever sleeping), then on
//! a raw futex eventcount. The leader wakes the whole herd with one
//! `FUTEX_WAKE`, and only if somebody announced itself as sleeping.
//!
//! It is keyless: a peer keeps one such cell per hot key, chosen by the byte
//! sum of the key modulo [`CELLS`], which keeps apart every key the hot-key
//! workloads use (`hot`, `k`, `hot:0` … `hot:7`). It answers only hot-key
//! workloads; the keyed ones (W1, W2, W6, memory) show "n/a".
//!
//! The raw futex system calls are the only `unsafe` here, and they stay in the
//! benchmarks: the crate itself has none.

#![allow(dead_code)] // each bench target uses a different part

use std::sync::Barrier;
use std::sync::atomic::{
    AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::thread;
use std::time::{Duration, Instant};

use super::workloads::{Peer, latest};

/// Waits while `*word == expected`; returns on a wake-up, a signal, a
/// spurious wake-up or a changed word, so callers re-check in a loop.
pub fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT only reads the 4-byte aligned word, which outlives
    // the call because it is borrowed for it; the null timeout means "no
    // timeout" and the remaining arguments are ignored by FUTEX_WAIT.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes every thread waiting on `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE dereferences nothing; the address only names the
    // wait queue, and it is a live, aligned word borrowed for the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

const RUNNING: u32 = 1;
const WAITERS: u32 = 2;
const GENERATION: u32 = 4;

/// How long a follower yields before it sleeps on the futex. A flight here
/// lasts 100 µs or more, so a follower that finds it running usually sleeps;
/// the window catches the flights that land while it waits its turn on the
/// CPU. Measured on W3 (2 cores, quiet samples): plain futex waiting gave
/// 150–205k calls/s, windows of 3, 10 and 30 µs 280–330k alike.
pub const YIELD_WINDOW: Duration = Duration::from_micros(10);

#[derive(Default)]
struct Cell {
    word: AtomicU32,
    value: AtomicU64,
}

impl Cell {
    fn work<F: Fn() -> u64>(&self, f: F) -> u64 {
        let mut word = self.word.load(Acquire);
        loop {
            if word & RUNNING != 0 {
                return self.follow(word);
            }
            match self
                .word
                .compare_exchange_weak(word, word | RUNNING, Acquire, Acquire)
            {
                Ok(_) => return self.lead(word, f),
                Err(now) => word = now,
            }
        }
    }

    fn lead<F: Fn() -> u64>(&self, idle: u32, f: F) -> u64 {
        let value = f();
        self.value.store(value, Relaxed);
        // Only followers touch the word while it runs, and only to set
        // WAITERS, so the next generation is known; the swap publishes the
        // value with it.
        let was = self
            .word
            .swap((idle & !(RUNNING | WAITERS)) + GENERATION, Release);
        if was & WAITERS != 0 {
            futex_wake_all(&self.word);
        }
        value
    }

    fn follow(&self, seen: u32) -> u64 {
        let generation = seen & !(RUNNING | WAITERS);
        let landed = |word: u32| word & !(RUNNING | WAITERS) != generation;
        let start = Instant::now();
        loop {
            let word = self.word.load(Acquire);
            if landed(word) {
                return self.value.load(Relaxed);
            }
            if start.elapsed() >= YIELD_WINDOW {
                break;
            }
            thread::yield_now();
        }
        loop {
            let word = self.word.load(Acquire);
            if landed(word) {
                return self.value.load(Relaxed);
            }
            if word & WAITERS == 0
                && self
                    .word
                    .compare_exchange_weak(word, word | WAITERS, Relaxed, Relaxed)
                    .is_err()
            {
                continue;
            }
            futex_wait(&self.word, word | WAITERS);
        }
    }
}

pub const CELLS: usize = 16;

pub struct Ceiling {
    cells: [Cell; CELLS],
}

impl Peer for Ceiling {
    const NAME: &'static str = "OS-thread ceiling";
    const KEYED: bool = false;
    fn new() -> Self {
        Ceiling {
            cells: Default::default(),
        }
    }
    fn work<F: Fn() -> u64>(&self, key: &str, f: F) -> u64 {
        let cell = key.bytes().map(usize::from).sum::<usize>() % CELLS;
        self.cells[cell].work(f)
    }
}

/// The floor under any wake latency: `threads` threads asleep in
/// `FUTEX_WAIT`, one `FUTEX_WAKE` for all of them, timed from just before the
/// wake to the last thread running again. Nothing exits until every thread
/// has taken its time, as in the pure wake.
pub fn futex_wake_floor(threads: usize) -> Duration {
    let word = AtomicU32::new(0);
    let arrived = Barrier::new(threads + 1);
    let hold = Barrier::new(threads);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (word, arrived, hold) = (&word, &arrived, &hold);
                s.spawn(move || {
                    arrived.wait();
                    while word.load(Acquire) == 0 {
                        futex_wait(word, 0);
                    }
                    let end = Instant::now();
                    hold.wait();
                    end
                })
            })
            .collect();
        arrived.wait();
        // The same upper bound for the threads to fall asleep as the wake
        // latency workload gives its followers.
        thread::sleep(Duration::from_millis(2));
        let start = Instant::now();
        word.store(1, Release);
        futex_wake_all(&word);
        latest(handles) - start
    })
}
