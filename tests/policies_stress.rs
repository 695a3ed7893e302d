//! Every policy at once, under contention: age replacements, retry
//! elections, a follower cap, guards filled and dropped, waiters polled,
//! timed out and dropped, on a few hot keys. No call may hang, every value
//! must come from a run for its key, and once quiet the group must be empty
//! and every follower accounted for.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::{quiet_expected_panics, with_deadline};
use sync_singleflight::{ErrorPolicy, Group, Joined, TryError, WaitError};

type Shared = Result<u64, Arc<String>>;

/// A value for `key` from run number `run`: the key is recoverable, so a
/// caller can check it got a value computed for its own key.
fn value(key: u64, run: u64) -> u64 {
    key * 1_000_000 + run % 1_000_000
}

#[test]
fn every_policy_at_once_under_contention() {
    quiet_expected_panics();
    with_deadline("policies_stress", || {
        const THREADS: u64 = 8;
        const CALLS: u64 = 5000;
        let group: Arc<Group<u64, Shared>> = Arc::new(
            Group::builder()
                .max_flight_age(Duration::from_micros(200))
                .max_followers(3)
                .error_policy(ErrorPolicy::Retry { retries: 2 })
                .shards(2)
                .build(),
        );
        let runs = Arc::new(AtomicU64::new(0));
        let start = Arc::new(Barrier::new(THREADS as usize));
        let workers: Vec<_> = (0..THREADS)
            .map(|thread_no| {
                let (group, runs, start) = (group.clone(), runs.clone(), start.clone());
                thread::spawn(move || {
                    let mut seed = thread_no.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let mut next = move || {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed
                    };
                    start.wait();
                    for _ in 0..CALLS {
                        let key = next() % 3;
                        let roll = next() % 100;
                        let run = || {
                            let n = runs.fetch_add(1, Ordering::Relaxed);
                            // Now and then a run outlives max_flight_age, so that
                            // replacements happen too.
                            if n % 7 == 0 {
                                thread::sleep(Duration::from_micros(300));
                            }
                            n
                        };
                        let check =
                            |got: u64| assert_eq!(got / 1_000_000, key, "a value for another key");
                        let call =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match roll {
                                0..=39 => {
                                    let got = group.try_work(&key, || {
                                        let n = run();
                                        if n % 5 == 0 {
                                            Err(format!("down {n}"))
                                        } else {
                                            Ok(value(key, n))
                                        }
                                    });
                                    if let Ok(got) = got {
                                        check(got);
                                    }
                                }
                                40..=59 => {
                                    let got = group.try_work_within(
                                        &key,
                                        Duration::from_micros(next() % 300),
                                        || Ok::<_, String>(value(key, run())),
                                    );
                                    match got {
                                        Ok(outcome) => check(outcome.value),
                                        // A flight led by `try_work` may fail for good.
                                        Err(
                                            TryError::Failed(_)
                                            | TryError::Timeout
                                            | TryError::Overloaded,
                                        ) => {}
                                        Err(other) => panic!("unexpected {other:?}"),
                                    }
                                }
                                60..=74 => match group.join(&key) {
                                    Joined::Leader(guard) => {
                                        if next() % 4 == 0 {
                                            drop(guard); // abandoned: someone else reruns
                                        } else {
                                            let n = run();
                                            guard.fill(Ok(value(key, n)));
                                        }
                                    }
                                    Joined::Waiter(mut waiter) => match next() % 3 {
                                        0 => drop(waiter),
                                        1 => {
                                            match waiter.wait_timeout(Duration::from_micros(100)) {
                                                Ok(got) => {
                                                    if let Ok(got) = got {
                                                        check(got);
                                                    }
                                                }
                                                Err(
                                                    WaitError::Timeout
                                                    | WaitError::Overloaded
                                                    | WaitError::Abandoned,
                                                ) => {}
                                                Err(other) => panic!("unexpected {other:?}"),
                                            }
                                        }
                                        _ => loop {
                                            match waiter.try_get() {
                                                None => thread::yield_now(),
                                                Some(Ok(Ok(got))) => break check(got),
                                                Some(Ok(Err(_)) | Err(_)) => break,
                                            }
                                        },
                                    },
                                },
                                75..=84 => {
                                    let got = group.work(&key, || {
                                        let n = run();
                                        assert!(n % 3 != 0, "expected-panic in f");
                                        Ok(value(key, n))
                                    });
                                    if let Ok(got) = got {
                                        check(got);
                                    }
                                }
                                _ => {
                                    if let Ok(Ok(got)) =
                                        group.work_timeout(&key, Duration::ZERO, || {
                                            Ok(value(key, run()))
                                        })
                                    {
                                        check(got);
                                    }
                                }
                            }));
                        // The only panics allowed: the injected one, and the
                        // `LeaderPanicked` its followers unwind with.
                        if let Err(payload) = call {
                            let injected = common::panic_message(&*payload)
                                .is_some_and(|m| m.contains("expected-panic"));
                            let shared = payload.is::<sync_singleflight::LeaderPanicked>();
                            assert!(
                                injected || shared,
                                "an unexpected panic: {:?}",
                                common::panic_message(&*payload)
                            );
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("a worker failed a check");
        }
        assert_eq!(group.in_flight(), 0, "an entry was left behind");
        let stats = group.stats();
        assert_eq!(stats.followers_unaccounted(), 0, "{stats:?}");
        assert_eq!(
            stats.calls(),
            THREADS * CALLS,
            "every call entered once: {stats:?}"
        );
        // How often each path ran depends on the scheduler, so it is
        // printed, not asserted.
        eprintln!("{stats:?}");
    });
}
