//! Criterion benchmarks of this crate on the workloads of the peer
//! comparison (W1–W5 and wake latency). For the side-by-side figures against
//! Go and the other crates, run `bash benches/peers/run.sh`.
//!
//! ```sh
//! cargo bench --bench workloads
//! ```

#[path = "shared/workloads.rs"]
mod workloads;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use workloads::{
    Followers, Ours, Peer, Until, hot, keys, sleep_1ms, spin_100us, w1, w2, wake_latency,
};

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("W1 uncontended, 4096 String keys");
    group.throughput(Throughput::Elements(1));
    let ours = Ours::new();
    let keys = keys("", 4096);
    group.bench_function("work", |b| b.iter_custom(|calls| w1(&ours, &keys, calls)));
    group.finish();

    let mut group = c.benchmark_group("W2 two threads, disjoint keys");
    group.throughput(Throughput::Elements(1));
    group.bench_function("work", |b| b.iter_custom(|calls| w2(&ours, calls.max(2))));
    group.finish();
}

fn hot_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot key, 64 threads");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let ours = Ours::new();
    group.bench_function("W3 f spins 100us", |b| {
        b.iter_custom(|calls| hot(&ours, 64, 1, Until::Calls(calls), spin_100us).elapsed)
    });
    group.bench_function("W4 f sleeps 1ms", |b| {
        b.iter_custom(|calls| hot(&ours, 64, 1, Until::Calls(calls), sleep_1ms).elapsed)
    });
    group.bench_function("W5 8 hot keys, f spins 100us", |b| {
        b.iter_custom(|calls| hot(&ours, 64, 8, Until::Calls(calls), spin_100us).elapsed)
    });
    group.finish();
}

fn wake(c: &mut Criterion) {
    let mut group = c.benchmark_group("wake latency, leader return to last follower");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let ours = Ours::new();
    for followers in [8, 64] {
        group.bench_function(format!("{followers} followers"), |b| {
            b.iter_custom(|flights| {
                (0..flights)
                    .map(|_| wake_latency(&ours, followers, Followers::Exit))
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = uncontended, hot_key, wake
}
criterion_main!(benches);
