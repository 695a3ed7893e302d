//! Eight threads ask for the same slow lookup at once; it runs once.
//!
//! `cargo run --release --example quickstart`

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use sync_singleflight::{Group, Role};

/// Eight threads ask for the same slow lookup at once; it runs once, and
/// the other seven share its value. Takes no options.
#[derive(Parser)]
#[command(name = "quickstart")]
struct Options {}

fn main() {
    Options::parse();
    const THREADS: usize = 8;
    let group: Group<String, String> = Group::new();
    let lookups = AtomicUsize::new(0);
    let start = Barrier::new(THREADS);
    let began = Instant::now();
    thread::scope(|s| {
        for t in 0..THREADS {
            let (group, lookups, start) = (&group, &lookups, &start);
            s.spawn(move || {
                start.wait();
                let outcome = group.work_with_role("user:42", || {
                    lookups.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(200)); // a slow query
                    "Ada Lovelace".to_string()
                });
                let role = match outcome.role {
                    Role::Leader => "ran the lookup",
                    Role::Follower => "shared it",
                };
                println!(
                    "thread {t}: {:<12} ({role}, {} callers)",
                    outcome.value, outcome.callers
                );
            });
        }
    });
    println!(
        "{THREADS} calls, {} lookup(s), {:?}; in flight now: {}",
        lookups.load(Ordering::SeqCst),
        began.elapsed(),
        group.in_flight()
    );
    println!("{:?}", group.stats());
}
