//! Heap use, counted by a global allocator that tallies per thread (so the
//! test harness's own threads do not interfere).
//!
//! - No heap allocation on the uncontended path in steady state, for `Copy`
//!   keys and, since each shard recycles the buffer of its last key, for
//!   `String` keys too.
//! - A lone leader's flight holds only its slot in the shard's vector: the
//!   rendezvous is allocated when a second caller arrives.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use common::blocked_leader;
use sync_singleflight::Group;

struct PerThreadCounting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the
// thread-local counters are const-initialized and have no destructor, so
// touching them never allocates or re-enters the allocator.
unsafe impl GlobalAlloc for PerThreadCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        let _ = LIVE_BYTES.try_with(|n| n.set(n.get() + layout.size() as isize));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE_BYTES.try_with(|n| n.set(n.get() - layout.size() as isize));
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: PerThreadCounting = PerThreadCounting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

fn live_bytes() -> isize {
    LIVE_BYTES.with(Cell::get)
}

#[test]
fn uncontended_calls_with_copy_keys_do_not_allocate() {
    let group: Group<u64, u64> = Group::new();
    // Warm up: every shard's vector reaches its steady capacity.
    for key in 0..4096 {
        group.work(&key, || key);
    }
    let before = allocations();
    for key in 0..100_000u64 {
        assert_eq!(group.work(&(key % 4096), || key), key);
    }
    assert_eq!(
        allocations() - before,
        0,
        "allocations on the uncontended path"
    );
}

#[test]
fn uncontended_calls_with_string_keys_reuse_the_key_buffer() {
    let group: Group<String, u64> = Group::new();
    let keys: Vec<String> = (0..4096).map(|i| format!("user:{i}")).collect();
    // Warm up: each shard's spare key buffer has grown to the longest key.
    for key in &keys {
        group.work(key.as_str(), || 1);
    }
    let before = allocations();
    const CALLS: usize = 100_000;
    for i in 0..CALLS {
        group.work(keys[i % keys.len()].as_str(), || 1);
    }
    let per_call = (allocations() - before) as f64 / CALLS as f64;
    println!("allocations per uncontended call, String keys: {per_call:.2}");
    assert_eq!(
        per_call, 0.0,
        "the owned key reuses the shard's spare buffer"
    );
}

/// Holds one flight per key in flight on one thread (each function calls
/// `work` on the next key) and reports the heap the group holds per flight.
fn bytes_per_inflight_key<K: std::hash::Hash + Eq + Clone>(
    group: &Group<K, u64>,
    keys: &[K],
) -> f64 {
    fn nest<K: std::hash::Hash + Eq + Clone>(
        group: &Group<K, u64>,
        keys: &[K],
        base: isize,
    ) -> isize {
        let Some((key, rest)) = keys.split_first() else {
            return live_bytes() - base;
        };
        let mut held = 0;
        group.work(key, || {
            held = nest(group, rest, base);
            1
        });
        held
    }
    // A first pass grows the shard vectors; the second measures steady state.
    nest(group, keys, live_bytes());
    let held = nest(group, keys, live_bytes());
    assert_eq!(group.in_flight(), 0);
    held as f64 / keys.len() as f64
}

#[test]
fn heap_held_per_inflight_key() {
    const DEPTH: usize = 500;
    let (u64_bytes, string_bytes) = thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            let numbers: Vec<u64> = (0..DEPTH as u64).collect();
            let strings: Vec<String> = (0..DEPTH).map(|i| format!("user:{i:06}")).collect();
            (
                bytes_per_inflight_key(&Group::new(), &numbers),
                bytes_per_inflight_key(&Group::new(), &strings),
            )
        })
        .unwrap()
        .join()
        .unwrap();
    println!("heap bytes per in-flight key: u64 {u64_bytes:.1}, String {string_bytes:.1}");
    // Steady state: the shard vectors already have room, so a u64 flight
    // holds no heap of its own and a String flight holds its key.
    assert!(u64_bytes.abs() < 1.0, "u64 flight held {u64_bytes} bytes");
    assert!(
        (string_bytes - 11.0).abs() < 1.0,
        "String flight held {string_bytes} bytes, not just its 11-byte key"
    );
}

#[test]
fn a_second_caller_allocates_the_rendezvous() {
    let group = Arc::new(Group::<u64, u64>::new());
    // The same follower thread joins two flights; the first warms its
    // per-thread parking state, the second is counted.
    let (go, next_flight) = mpsc::channel::<()>();
    let follower = {
        let group = group.clone();
        thread::spawn(move || {
            let mut counted = Vec::new();
            while next_flight.recv().is_ok() {
                let before = allocations();
                assert_eq!(group.work(&1, || 0), 5);
                counted.push(allocations() - before);
            }
            counted
        })
    };
    for flight in 1..=2u64 {
        let (leader, release) = blocked_leader(&group, 1, 5);
        go.send(()).unwrap();
        while group.stats().followers_joined < flight {
            thread::yield_now();
        }
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 5);
    }
    drop(go);
    let counted = follower.join().unwrap();
    println!(
        "allocations by the first follower of a flight: {counted:?} (first includes thread warm-up)"
    );
    assert_eq!(
        counted[1], 1,
        "the first follower allocates exactly the shared call"
    );
}
