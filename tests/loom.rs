//! Model checks of the core with loom: every interleaving of two or three
//! threads over leader completion, leader panic, follower timeout, forget,
//! new arrivals and panicking clones.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --test loom
//! ```
//!
//! That is CI's depth: the 11 models take about 7 s here. A deeper search
//! costs far more (2026-12-07, one model at a time on the 2-core box, under
//! load): 105 s at 4 preemptions and 848 s at 5, most of it in the
//! age-replacement models. Every deliberately broken variant we tried is
//! caught at 3.
//!
//! Under `--cfg loom` the crate's `sync` module swaps parking_lot and std
//! for loom's models, so these drive the real `Group` code. A timed wait is
//! modelled as "the deadline passes while the lock is released" (see
//! `src/sync.rs`), which is exactly the race between a timeout and a
//! completion. Every model ends by checking that nothing is left in flight
//! and that the counters account for every caller.

#![cfg(loom)]

use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use sync_singleflight::{
    ErrorPolicy, Group, Joined, LeaderPanicked, Outcome, Role, Stats, Timeout, WaitError,
};

/// Panics are part of several models; their messages would flood the
/// output once per explored interleaving.
fn silence_panics() {
    if std::env::var_os("LOOM_SHOW_PANICS").is_none() {
        panic::set_hook(Box::new(|_| {}));
    }
}

fn model(body: impl Fn() + Sync + Send + 'static) {
    silence_panics();
    loom::model(body);
}

/// Runs `call` as three concurrent callers (two spawned threads and the
/// model's main thread) and returns what each got.
fn three_callers<T: 'static>(call: impl Fn() -> T + Clone + Send + 'static) -> [T; 3] {
    let (a, b) = (thread::spawn(call.clone()), thread::spawn(call.clone()));
    let c = call();
    [a.join().unwrap(), b.join().unwrap(), c]
}

// `tests/common` drives std threads, so the models keep their own helpers.

/// Runs `call` on a spawned thread with its own handle to `group`.
fn spawn_on<V: 'static, T: 'static>(
    group: &Arc<Group<u32, V>>,
    call: impl FnOnce(&Group<u32, V>) -> T + 'static,
) -> thread::JoinHandle<T> {
    let group = group.clone();
    thread::spawn(move || call(&group))
}

/// Three concurrent callers of key 1 (see [`three_callers`]) whose
/// functions count their runs in `runs` and return 7; what each got.
fn three_counting_callers(
    group: &Arc<Group<u32, usize>>,
    runs: &Arc<AtomicUsize>,
) -> [Outcome<usize>; 3] {
    three_callers({
        let (group, runs) = (group.clone(), runs.clone());
        move || {
            group.work_with_role(&1, || {
                runs.fetch_add(1, Ordering::Relaxed);
                7
            })
        }
    })
}

/// Three concurrent callers of key 1 (see [`three_callers`]) running `f`,
/// each catching a panic of its `work` call; what each got.
fn three_catching_callers<V: Clone + Send + 'static>(
    group: &Arc<Group<u32, V>>,
    f: impl Fn() -> V + Clone + Send + 'static,
) -> [std::thread::Result<V>; 3] {
    three_callers({
        let group = group.clone();
        move || panic::catch_unwind(AssertUnwindSafe(|| group.work(&1, f.clone())))
    })
}

/// A caller of key 1 whose function counts its run in `runs` and returns
/// `value`.
fn counting_caller(
    group: &Arc<Group<u32, u32>>,
    runs: &Arc<AtomicUsize>,
    value: u32,
) -> impl FnOnce() -> u32 + Send + 'static {
    let (group, runs) = (group.clone(), runs.clone());
    move || {
        group.work(&1, || {
            runs.fetch_add(1, Ordering::Relaxed);
            value
        })
    }
}

/// A group whose flights may turn too old at any point: the model's clock
/// thread (returned, to be joined) ages every flight at once.
fn aging_group<V: Clone + 'static>() -> (Arc<Group<u32, V>>, thread::JoinHandle<()>) {
    let group = Arc::new(
        Group::<u32, V>::builder()
            .max_flight_age(Duration::from_secs(1))
            .build(),
    );
    let clock = thread::spawn(sync_singleflight::loom_clock::age_every_flight);
    (group, clock)
}

fn assert_quiet<V>(group: &Group<u32, V>) {
    assert_eq!(group.in_flight(), 0, "an entry was left behind");
    let stats = group.stats();
    assert_eq!(
        stats.followers_unaccounted(),
        0,
        "a follower is unaccounted for: {stats:?}"
    );
}

/// How many of `outcomes` led.
fn count_leaders<V>(outcomes: &[Outcome<V>]) -> usize {
    outcomes.iter().filter(|o| o.role == Role::Leader).count()
}

/// Asserts that the flights started (leaders' runs and promoted followers'
/// reruns) number `runs`.
fn assert_runs_started_flights(stats: &Stats, runs: u64) {
    assert_eq!(
        stats.leader_runs + stats.followers_promoted,
        runs,
        "{stats:?}"
    );
}

// The leader completes while one or two followers join. Every caller gets a
// value produced by a run for the key, runs never outnumber leaders, and the
// leader's caller count matches the followers it served.
#[test]
fn leader_completes_while_followers_join() {
    model(|| {
        let group = Arc::new(Group::<u32, usize>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let outcomes = three_counting_callers(&group, &runs);

        assert!(outcomes.iter().all(|o| o.value == 7));
        let leaders = count_leaders(&outcomes);
        assert_eq!(leaders, runs.load(Ordering::Relaxed));
        let served: usize = outcomes
            .iter()
            .filter(|o| o.role == Role::Leader)
            .map(|o| o.callers)
            .sum();
        assert_eq!(served, 3, "each caller is counted by exactly one leader");
        assert_quiet(&group);
        assert_eq!(group.stats().leader_runs, leaders as u64);
    });
}

// The leader panics with followers waiting: each caller either led and got
// the original payload, or followed and got `LeaderPanicked`; none hangs.
#[test]
fn leader_panics_with_followers_waiting() {
    model(|| {
        let group = Arc::new(Group::<u32, u32>::new());
        let results = three_catching_callers(&group, || panic::panic_any("boom"));
        let mut leaders = 0;
        for result in results {
            let payload = result.expect_err("nobody gets a value");
            if let Some(why) = payload.downcast_ref::<LeaderPanicked>() {
                assert_eq!(why.message(), Some("boom"));
            } else {
                assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
                leaders += 1;
            }
        }
        assert_quiet(&group);
        let stats = group.stats();
        assert_eq!(stats.leader_panics, leaders);
        assert_eq!(stats.leader_runs, leaders);
        assert_eq!(stats.follower_panics, 3 - leaders);
    });
}

// A follower times out exactly as the leader completes: it either gets the
// value (and is counted by the leader) or a timeout (and is not); the value
// is never lost and never counted twice.
#[test]
fn follower_times_out_as_leader_completes() {
    model(|| {
        let group = Arc::new(Group::<u32, u32>::new());
        let leader = spawn_on(&group, |group| group.work_with_role(&1, || 7));
        let impatient = group.work_timeout(&1, Duration::from_millis(1), || 8);
        let led = leader.join().unwrap();

        match impatient {
            // It ran its own flight; the other thread led or followed it.
            Ok(8) => assert!(led.value == 8 || led.value == 7),
            // It followed and was served: the leader counted it.
            Ok(7) => {
                assert_eq!(led.role, Role::Leader);
                assert_eq!(led.callers, 2);
            }
            Err(Timeout) => {
                assert_eq!(led.role, Role::Leader);
                assert_eq!(led.callers, 1, "a timed-out follower was counted as served");
            }
            Ok(other) => panic!("unexpected value {other}"),
        }
        assert_quiet(&group);
    });
}

// `forget` races the leader's completion and a new arrival: the old leader
// must never remove or complete the new flight, and nobody hangs.
#[test]
fn forget_races_completion_and_a_new_arrival() {
    model(|| {
        let group = Arc::new(Group::<u32, u32>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let first = thread::spawn(counting_caller(&group, &runs, 1));
        let forgetter = spawn_on(&group, |group| group.forget(&1));
        let second = counting_caller(&group, &runs, 2)();
        let first = first.join().unwrap();
        let forgot = forgetter.join().unwrap();

        assert!(first == 1 || first == 2);
        assert!(second == 1 || second == 2);
        let runs = runs.load(Ordering::Relaxed) as u64;
        let stats = group.stats();
        assert_eq!(stats.leader_runs, runs);
        assert_eq!(stats.forgets, u64::from(forgot));
        assert_quiet(&group);
    });
}

/// A value whose second clone panics.
#[derive(Debug)]
struct Brittle {
    clones: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Clone for Brittle {
    fn clone(&self) -> Self {
        let n = self
            .clones
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        assert!(n != 2, "clone panicked");
        Brittle {
            clones: self.clones.clone(),
        }
    }
}

// A `V::clone` panics in a follower: only that follower panics (with the
// clone's own payload), the others get the value, nothing is left behind,
// and the stored copy is still collected (the `Call` asserts that no value
// is dropped inside it).
#[test]
fn value_clone_panics_in_a_follower() {
    model(|| {
        let group = Arc::new(Group::<u32, Brittle>::new());
        let results = three_catching_callers(&group, || Brittle {
            clones: Default::default(),
        });
        let mut clone_panics = 0;
        for result in results {
            if let Err(payload) = result {
                assert!(
                    payload.downcast_ref::<LeaderPanicked>().is_none(),
                    "a follower's clone panic must not look like a leader panic"
                );
                clone_panics += 1;
            }
        }
        assert!(clone_panics <= 1);
        assert_eq!(group.in_flight(), 0);
        let stats = group.stats();
        assert_eq!(stats.follower_own_panics, clone_panics, "{stats:?}");
        assert_eq!(
            stats.followers_joined,
            stats.followers_served + clone_panics,
            "{stats:?}"
        );
        assert_eq!(stats.leader_panics, 0);
    });
}

// A recursive call is detected under every interleaving with a follower.
#[test]
fn recursion_is_detected_with_a_follower_around() {
    model(|| {
        let group = Arc::new(Group::<u32, u32>::new());
        let other = spawn_on(&group, |group| {
            panic::catch_unwind(AssertUnwindSafe(|| group.work(&1, || 5)))
        });
        let nested =
            panic::catch_unwind(AssertUnwindSafe(|| group.work(&1, || group.work(&1, || 6))));
        let other = other.join().unwrap();
        // Either this thread led and its nested call panicked (and the other
        // thread, if it followed, got LeaderPanicked), or the other thread led
        // first and this one followed it.
        match nested {
            Err(_) => {
                if let Err(payload) = other {
                    assert!(payload.downcast_ref::<LeaderPanicked>().is_some());
                }
            }
            Ok(value) => assert_eq!(value, 5, "it can only have followed the other thread"),
        }
        assert_quiet(&group);
    });
}

// A forgotten flight is not counted by `in_flight`, even while it runs and
// another thread forgets it too.
#[test]
fn in_flight_excludes_a_forgotten_flight_while_it_runs() {
    model(|| {
        let group = Arc::new(Group::<u32, u32>::new());
        let other = spawn_on(&group, |group| group.forget(&1));
        let value = group.work(&1, || {
            group.forget(&1);
            assert_eq!(group.in_flight(), 0, "a forgotten flight was counted");
            1
        });
        other.join().unwrap();
        assert_eq!(value, 1);
        assert_quiet(&group);
    });
}

// Age replacement: a flight turns too old at any point (the model's clock
// thread), and whoever then finds it starts a replacement and moves its
// followers over. Whatever the interleaving, every caller gets a value from
// a run, runs are exactly the flights started, the old leader never removes
// the replacement, and nobody is stranded on a replaced flight.
#[test]
fn age_replacement_moves_followers_and_loses_nobody() {
    model(|| {
        let (group, clock) = aging_group::<usize>();
        let runs = Arc::new(AtomicUsize::new(0));
        let outcomes = three_counting_callers(&group, &runs);
        clock.join().unwrap();
        assert!(outcomes.iter().all(|o| o.value == 7));
        assert_quiet(&group);
        let stats = group.stats();
        assert_runs_started_flights(&stats, runs.load(Ordering::Relaxed) as u64);
        assert_eq!(count_leaders(&outcomes), runs.load(Ordering::Relaxed));
    });
}

// Retry election: the first run fails; exactly one of its followers is
// elected to rerun it and the others stay on the same flight. Only the
// failed run's own leader sees the error, runs never overlap, at most one
// follower is promoted, and nobody hangs. (Broken on purpose, this caught a
// follower joining between the election and the removal of a flight nobody
// could take over: it was served the error.)
#[test]
fn a_failed_flight_elects_one_new_leader() {
    model(|| {
        type Shared = Result<usize, std::sync::Arc<&'static str>>;
        let group = Arc::new(
            Group::<u32, Shared>::builder()
                .error_policy(ErrorPolicy::Retry { retries: 1 })
                .build(),
        );
        let runs = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let results = three_callers({
            let (group, runs, running) = (group.clone(), runs.clone(), running.clone());
            move || {
                group.try_work(&1, || {
                    assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "runs overlapped");
                    let n = runs.fetch_add(1, Ordering::Relaxed);
                    running.fetch_sub(1, Ordering::SeqCst);
                    if n == 0 { Err("down") } else { Ok(n) }
                })
            }
        });
        let failed = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(
            failed, 1,
            "only the failed run's own leader gets its error: {results:?}"
        );
        assert_quiet(&group);
        let stats = group.stats();
        assert_runs_started_flights(&stats, runs.load(Ordering::Relaxed) as u64);
        assert!(
            stats.retries <= 1 && stats.followers_promoted <= 1,
            "{stats:?}"
        );
    });
}

// A leader guard dropped unfilled: exactly one `work` follower is elected
// to rerun the flight, the other gets that run's value, a waiter is served
// or told `Abandoned`, and nobody hangs. (Broken on purpose, this caught an
// election that left the phase at `Elect`, electing a second leader.)
#[test]
fn an_abandoned_guard_strands_nobody() {
    model(|| {
        let group = Arc::new(Group::<u32, u32>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let quitter = spawn_on(&group, |group| match group.join(&1) {
            Joined::Leader(guard) => drop(guard),
            Joined::Waiter(waiter) => match waiter.wait() {
                Ok(value) => assert!(value == 5 || value == 6),
                Err(error) => assert_eq!(error, WaitError::Abandoned),
            },
        });
        let worker = thread::spawn(counting_caller(&group, &runs, 5));
        let mine = counting_caller(&group, &runs, 6)();
        quitter.join().unwrap();
        let theirs = worker.join().unwrap();
        assert!(mine == 5 || mine == 6);
        assert!(theirs == 5 || theirs == 6);
        assert_quiet(&group);
        let stats = group.stats();
        assert_runs_started_flights(
            &stats,
            runs.load(Ordering::Relaxed) as u64 + stats.leader_abandons,
        );
        assert!(stats.followers_promoted <= 1, "{stats:?}");
    });
}

// A waiter whose own thread comes to lead its flight: the flight turns too
// old at any point, and the waiter's thread may then lead the replacement
// that adopts it. Whatever the interleaving, its `wait` either gets a run's
// value or panics as recursive, never waits for itself, and nothing is left
// behind. (Before the waiter checked who leads its flight, this model
// deadlocked.)
#[test]
fn a_waiter_adopted_by_its_own_threads_replacement_never_waits_for_itself() {
    model(|| {
        let (group, clock) = aging_group::<u32>();
        let leader = spawn_on(&group, |group| group.work(&1, || 7));
        match group.join(&1) {
            Joined::Waiter(waiter) => match group.join(&1) {
                Joined::Leader(guard) => {
                    match panic::catch_unwind(AssertUnwindSafe(|| waiter.wait())) {
                        Ok(got) => assert_eq!(got, Ok(7), "its own flight had landed"),
                        Err(payload) => {
                            let text = payload.downcast_ref::<&str>().copied().unwrap_or("");
                            let owned = payload.downcast_ref::<String>().cloned();
                            let text = owned.as_deref().unwrap_or(text);
                            assert!(text.contains("recursive"), "{text}");
                        }
                    }
                    guard.fill(8);
                }
                Joined::Waiter(again) => {
                    assert_eq!(waiter.wait(), Ok(7));
                    assert_eq!(again.wait(), Ok(7));
                }
            },
            Joined::Leader(guard) => {
                guard.fill(9);
            }
        }
        // 9 when this thread led first and the other followed it.
        assert!(matches!(leader.join().unwrap(), 7 | 9));
        clock.join().unwrap();
        assert_quiet(&group);
    });
}
