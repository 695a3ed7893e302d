//! `Group` end to end: Go's singleflight_test.go ported (Do, DoErr,
//! DoDupSuppress), sharing, roles, stats, statics, stress and many waiters.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, LazyLock};
use std::thread;

use common::{blocked_leader, spawn_follower, wait_until, with_deadline};
use sync_singleflight::{Group, Role, Stats};

// Go: TestDo.
#[test]
fn work_returns_the_value() {
    let group: Group<String, String> = Group::new();
    let value = group.work("key", || "bar".to_string());
    assert_eq!(value, "bar");
    assert_eq!(group.in_flight(), 0);
}

// Go: TestDoErr.
#[test]
fn errors_come_back_like_values() {
    let group: Group<String, Result<String, Arc<std::io::Error>>> = Group::new();
    let result = group.work("key", || Err(Arc::new(std::io::Error::other("some error"))));
    let error = result.expect_err("the error is returned");
    assert_eq!(error.to_string(), "some error");
    assert_eq!(group.in_flight(), 0);
}

// Go: TestDoDupSuppress, in the groupcache form that demands exactly one run.
#[test]
fn concurrent_callers_share_exactly_one_run() {
    with_deadline("dup_suppress", || {
        const CALLERS: usize = 10;
        let group = Arc::new(Group::<String, String>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = mpsc::channel::<String>();
        let released = Arc::new(std::sync::Mutex::new(released));
        let (entered, leader_entered) = mpsc::channel();

        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (group, runs, released, entered) = (
                    group.clone(),
                    runs.clone(),
                    released.clone(),
                    entered.clone(),
                );
                thread::spawn(move || {
                    group.work("key", || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        entered.send(()).unwrap();
                        released.lock().unwrap().recv().unwrap()
                    })
                })
            })
            .collect();

        leader_entered.recv().unwrap();
        wait_until("the other 9 callers joined", || {
            group.stats().followers_joined == CALLERS as u64 - 1
        });
        release.send("bar".to_string()).unwrap();
        for caller in callers {
            assert_eq!(caller.join().unwrap(), "bar");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(group.in_flight(), 0);
        let stats = group.stats();
        assert_eq!(stats.leader_runs, 1);
        assert_eq!(stats.followers_served, CALLERS as u64 - 1);
    });
}

#[test]
fn nothing_is_cached_after_a_flight_lands() {
    let group: Group<u64, usize> = Group::new();
    let runs = AtomicUsize::new(0);
    for expected in 1..=3 {
        let value = group.work(&1, || runs.fetch_add(1, Ordering::SeqCst) + 1);
        assert_eq!(value, expected);
    }
    assert_eq!(group.in_flight(), 0);
}

#[test]
fn keys_are_looked_up_by_borrowed_form() {
    let strings: Group<String, usize> = Group::new();
    assert_eq!(strings.work("user:42", || 1), 1);
    assert_eq!(strings.work(&String::from("user:42"), || 2), 2);
    let numbers: Group<u64, usize> = Group::new();
    assert_eq!(numbers.work(&42, || 3), 3);
    let paths: Group<std::path::PathBuf, usize> = Group::new();
    assert_eq!(paths.work(std::path::Path::new("/etc"), || 4), 4);
}

/// A closure capture that records whether it was dropped.
struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_followers_function_is_dropped_without_running() {
    with_deadline("follower_fn_dropped", || {
        let group = Arc::new(Group::<u32, u32>::new());
        let (leader, release) = blocked_leader(&group, 1, 10);
        let drops = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let follower = {
            let (group, flag, ran) = (group.clone(), DropFlag(drops.clone()), ran.clone());
            thread::spawn(move || {
                group.work(&1, move || {
                    let _keep = &flag;
                    ran.fetch_add(1, Ordering::SeqCst);
                    20
                })
            })
        };
        wait_until("the follower joined", || {
            group.stats().followers_joined == 1
        });
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 10);
        assert_eq!(follower.join().unwrap(), 10);
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the follower's f never runs");
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "the follower's f is dropped once"
        );
    });
}

#[test]
fn roles_and_caller_counts_are_reported() {
    with_deadline("roles", || {
        const FOLLOWERS: usize = 5;
        let group = Arc::new(Group::<String, u32>::new());
        let (entered, leader_entered) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let leader = {
            let group = group.clone();
            thread::spawn(move || {
                group.work_with_role("k", || {
                    entered.send(()).unwrap();
                    released.recv().unwrap();
                    7
                })
            })
        };
        leader_entered.recv().unwrap();
        let followers: Vec<_> = (0..FOLLOWERS)
            .map(|_| {
                let group = group.clone();
                thread::spawn(move || group.work_with_role("k", || unreachable!()))
            })
            .collect();
        wait_until("all followers joined", || {
            group.stats().followers_joined == FOLLOWERS as u64
        });
        release.send(()).unwrap();
        let led = leader.join().unwrap();
        assert_eq!(
            (led.value, led.role, led.callers),
            (7, Role::Leader, FOLLOWERS + 1)
        );
        assert!(led.is_shared());
        for follower in followers {
            let got = follower.join().unwrap();
            assert_eq!(
                (got.value, got.role, got.callers),
                (7, Role::Follower, FOLLOWERS + 1)
            );
        }
        let alone = group.work_with_role("k", || 8);
        assert_eq!(
            (alone.role, alone.callers, alone.is_shared()),
            (Role::Leader, 1, false)
        );
    });
}

#[test]
fn distinct_keys_do_not_wait_for_each_other() {
    with_deadline("distinct_keys", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let (slow, release) = blocked_leader(&group, 1, 1);
        // Key 1's function is blocked; every other key must still complete,
        // including keys that land in the same shard.
        for key in 2..2000 {
            assert_eq!(group.work(&key, || key * 2), key * 2);
        }
        assert_eq!(group.in_flight(), 1);
        release.send(()).unwrap();
        assert_eq!(slow.join().unwrap(), 1);
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn stats_add_up() {
    let group: Group<u8, u8> = Group::new();
    for key in 0..10 {
        group.work(&key, || key);
    }
    assert!(!group.forget(&0), "nothing is in flight to forget");
    assert_eq!(Group::<u8, u8>::new().stats(), Stats::default());
    let stats = group.stats();
    assert_eq!(stats.leader_runs, 10);
    assert_eq!(stats.calls(), 10);
    assert_eq!(stats.forgets, 0, "forget found nothing in flight");
    assert_eq!(Stats::default().calls(), 0);
}

#[test]
fn group_is_send_sync_and_fits_in_statics() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Group<String, Vec<u8>>>();
    assert_send_sync::<Group<u64, Result<String, Arc<std::io::Error>>>>();

    static STD: LazyLock<Group<String, u32>> = LazyLock::new(Group::new);
    static ONCE_CELL: once_cell::sync::Lazy<Group<u64, u32>> =
        once_cell::sync::Lazy::new(Group::new);
    assert_eq!(STD.work("k", || 1), 1);
    assert_eq!(ONCE_CELL.work(&1, || 2), 2);
    let debug = format!("{:?}", *STD);
    assert!(debug.starts_with("Group { in_flight: 0"), "{debug}");
}

#[test]
fn default_is_new() {
    let group: Group<String, u8> = Group::default();
    assert_eq!(group.work("k", || 3), 3);
}

// 16 threads × thousands of calls over a few keys: every value belongs to
// the caller's key, runs never exceed calls, and nothing is left behind.
#[test]
fn stress_many_threads_few_keys() {
    with_deadline("stress", || {
        const THREADS: usize = 16;
        const CALLS: usize = 3_000;
        const KEYS: u64 = 4;
        let group = Arc::new(Group::<u64, (u64, usize)>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(THREADS));
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (group, runs, start) = (group.clone(), runs.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    for i in 0..CALLS {
                        let key = (t + i) as u64 % KEYS;
                        let (got_key, run) = group.work(&key, || {
                            let run = runs.fetch_add(1, Ordering::SeqCst);
                            if i % 64 == 0 {
                                thread::yield_now(); // widen the window for followers
                            }
                            (key, run)
                        });
                        assert_eq!(got_key, key, "value from another key's run");
                        assert!(run < runs.load(Ordering::SeqCst));
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        let stats = group.stats();
        let runs = runs.load(Ordering::SeqCst) as u64;
        assert_eq!(stats.leader_runs, runs);
        assert_eq!(stats.calls(), (THREADS * CALLS) as u64);
        assert_eq!(stats.followers_served, stats.followers_joined);
        assert_eq!(group.in_flight(), 0);
    });
}

// Hundreds of followers parked on one key are all woken with the value.
#[test]
fn hundreds_of_waiters_on_one_key() {
    with_deadline("hundreds_of_waiters", || {
        const FOLLOWERS: usize = 300;
        let group = Arc::new(Group::<String, Arc<str>>::new());
        let (entered, leader_entered) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let runs = Arc::new(AtomicUsize::new(0));
        let spawn = |f: Box<dyn FnOnce() -> Arc<str> + Send>| {
            let group = group.clone();
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || group.work("hot", f))
                .unwrap()
        };
        let leader = {
            let runs = runs.clone();
            spawn(Box::new(move || {
                runs.fetch_add(1, Ordering::SeqCst);
                entered.send(()).unwrap();
                released.recv().unwrap();
                Arc::from("value")
            }))
        };
        leader_entered.recv().unwrap();
        let followers: Vec<_> = (0..FOLLOWERS)
            .map(|_| {
                let runs = runs.clone();
                spawn(Box::new(move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Arc::from("wrong")
                }))
            })
            .collect();
        wait_until("all followers joined", || {
            group.stats().followers_joined == FOLLOWERS as u64
        });
        release.send(()).unwrap();
        assert_eq!(&*leader.join().unwrap(), "value");
        for follower in followers {
            assert_eq!(&*follower.join().unwrap(), "value");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(group.in_flight(), 0);
        assert_eq!(group.stats().followers_served, FOLLOWERS as u64);
    });
}

// The group outlives the handle that created it while others still wait.
#[test]
fn dropping_one_handle_while_others_wait_is_fine() {
    with_deadline("drop_while_waiting", || {
        let group = Arc::new(Group::<u8, String>::new());
        let (leader, release) = blocked_leader(&group, 1, "v".to_string());
        let follower = spawn_follower(&group, 1, move |group| group.work(&1, || unreachable!()));
        drop(group);
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), "v");
        assert_eq!(follower.join().unwrap(), "v");
    });
}

/// A key that counts how many of its copies are alive.
#[derive(Debug)]
struct CountedKey(u32, Arc<AtomicUsize>);

impl CountedKey {
    fn new(id: u32, live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        CountedKey(id, live.clone())
    }
}

impl Clone for CountedKey {
    fn clone(&self) -> Self {
        CountedKey::new(self.0, &self.1)
    }
}

impl Drop for CountedKey {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PartialEq for CountedKey {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for CountedKey {}

impl std::hash::Hash for CountedKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

// A key type with a `Drop` of its own is never kept as a spare (only std
// buffers like `String` are): each leader drops its own copy when its
// flight lands, so no copy is held between flights.
#[test]
fn keys_with_their_own_drop_are_not_kept_between_flights() {
    let live = Arc::new(AtomicUsize::new(0));
    let group: Group<CountedKey, u32> = Group::new();
    for id in 0..1000 {
        let key = CountedKey::new(id, &live);
        group.work(&key, || id);
        assert_eq!(
            live.load(Ordering::SeqCst),
            1,
            "only the caller's own key is alive"
        );
    }
    drop(group);
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "every key copy is dropped with the group"
    );
}

#[test]
fn a_group_can_be_used_across_catch_unwind_without_assert_unwind_safe() {
    fn unwind_safe<T: std::panic::UnwindSafe + std::panic::RefUnwindSafe>(_: &T) {}
    // `std::io::Error` is not `RefUnwindSafe`; the group holding it still is.
    let group: Group<String, Result<u64, Arc<std::io::Error>>> = Group::new();
    unwind_safe(&group);
    unwind_safe(&&group);
    common::quiet_expected_panics();
    let caught = std::panic::catch_unwind(|| group.work("k", || panic!("expected-panic")));
    assert!(caught.is_err());
    let after = std::panic::catch_unwind(|| group.work("k", || Ok(1)));
    assert_eq!(after.unwrap().unwrap(), 1);
    assert_eq!(group.in_flight(), 0);
}
