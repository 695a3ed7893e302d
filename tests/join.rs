//! `Group::join`: the leader guard and the waiter (the blocking `DoChan`),
//! and the flat entry points `work_within` and `try_work_within`.

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    EqProbe, Gate, assert_quiet, assert_stats, blocked_leader, counting_followers,
    counting_followers_with, gated, panic_message, quiet_expected_panics, spawn_follower,
    wait_until, with_deadline,
};
use sync_singleflight::{ErrorPolicy, Group, Joined, LeaderPanicked, Role, TryError, WaitError};

/// Joins `key` on its own thread as a waiter and waits for its outcome.
fn waiter_thread<K, V>(
    group: &Arc<Group<K, V>>,
    joined: u64,
    key: K,
) -> thread::JoinHandle<Result<V, WaitError>>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    spawn_follower(group, joined, move |g| match g.join(&key) {
        Joined::Waiter(waiter) => waiter.wait(),
        Joined::Leader(_) => panic!("a running flight is joined, not led"),
    })
}

/// Leads key 1 through a guard on its own thread, which holds the guard
/// until `gate` opens and then panics with `message` while holding it.
/// Returns once the guard is held.
fn guard_held_then_panicking(
    group: &Arc<Group<u64, u64>>,
    gate: &Arc<Gate>,
    message: &'static str,
) -> thread::JoinHandle<std::thread::Result<()>> {
    gated(group, gate, move |group, gate| {
        panic::catch_unwind(AssertUnwindSafe(|| {
            let _guard = leader_of(group.join(&1));
            gate.pass();
            panic::panic_any(message);
        }))
    })
}

fn leader_of<K, V>(joined: Joined<'_, K, V>) -> sync_singleflight::LeaderGuard<'_, K, V> {
    match joined {
        Joined::Leader(guard) => guard,
        Joined::Waiter(_) => panic!("nobody else runs this key: expected to lead"),
    }
}

fn waiter_of<K, V>(joined: Joined<'_, K, V>) -> sync_singleflight::Waiter<'_, K, V> {
    match joined {
        Joined::Waiter(waiter) => waiter,
        Joined::Leader(_) => panic!("a flight is running: expected to wait"),
    }
}

#[test]
fn a_filled_guard_serves_everyone_and_returns_the_callers_count() {
    with_deadline("guard_fill", || {
        let group = Arc::new(Group::<u64, String>::new());
        let guard = leader_of(group.join(&1));
        assert_eq!(group.in_flight(), 1);
        let worker = spawn_follower(&group, 1, |g| g.work_with_role(&1, || unreachable!()));
        let waiter = waiter_thread(&group, 2, 1);
        let outcome = guard.fill("row".to_string());
        assert_eq!(
            (outcome.value.as_str(), outcome.role, outcome.callers),
            ("row", Role::Leader, 3)
        );
        assert!(outcome.is_shared());
        let worker = worker.join().unwrap();
        assert_eq!(
            (worker.value.as_str(), worker.role, worker.callers),
            ("row", Role::Follower, 3)
        );
        assert_eq!(waiter.join().unwrap().as_deref(), Ok("row"));
        let stats = group.stats();
        assert_eq!((stats.leader_runs, stats.followers_served), (1, 2));
        assert_quiet(&*group);
    });
}

#[test]
fn a_lone_guard_fills_with_one_caller_and_drops_cleanly() {
    let group: Group<u64, u64> = Group::new();
    assert_eq!(leader_of(group.join(&1)).fill(3).callers, 1);
    drop(leader_of(group.join(&1)));
    let stats = group.stats();
    assert_eq!((stats.leader_runs, stats.leader_abandons), (2, 1));
    assert_quiet(&group);
}

/// Issue 9's race: a guard dropped unfilled while followers are parked.
/// Waiters are told `Abandoned`; `work` followers elect one of themselves,
/// which runs its own function, and the rest get its value.
#[test]
fn a_guard_dropped_unfilled_with_followers_parked() {
    with_deadline("guard_abandoned", || {
        let key = EqProbe::new(1);
        let group = Arc::new(Group::<EqProbe, u64>::new());
        let guard = leader_of(group.join(&key));
        let (runs, workers) = counting_followers_with(&group, 3, {
            let key = key.clone();
            move |g, runs| {
                g.work_with_role(&key, || 50 + runs.fetch_add(1, Ordering::SeqCst) as u64)
            }
        });
        let waiters: Vec<_> = (4..=5)
            .map(|joined| waiter_thread(&group, joined, key.clone()))
            .collect();
        let eqs = key.eqs();
        drop(guard);
        // One worker is elected and reruns the flight; everyone else, the
        // waiters included, stays on it and gets that run's value.
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Ok(50));
        }
        let outcomes: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(runs.load(Ordering::SeqCst), 1, "exactly one follower ran");
        assert!(outcomes.iter().all(|o| o.value == 50 && o.callers == 5));
        assert_eq!(
            outcomes.iter().filter(|o| o.role == Role::Leader).count(),
            1
        );
        assert_eq!(key.eqs(), eqs, "nobody re-entered the table");
        assert_stats!(group, {
            leader_abandons: 1,
            followers_promoted: 1,
            followers_abandoned: 0,
            followers_served: 4,
            retries: 0,
        });
        assert_quiet(&*group);
    });
}

/// The same, with a quick function (the usual case): followers that
/// re-enter after the elected one's flight landed must still not each run
/// their own function.
#[test]
fn a_guard_dropped_unfilled_elects_one_runner_even_when_it_is_quick() {
    with_deadline("guard_abandoned_quick", || {
        let mut worst = 0;
        for _ in 0..40 {
            let group = Arc::new(Group::<u64, u64>::new());
            let guard = leader_of(group.join(&1));
            let (runs, workers) = counting_followers(&group, 1, 6, 9);
            drop(guard);
            for worker in workers {
                assert_eq!(worker.join().unwrap(), 9);
            }
            worst = worst.max(runs.load(Ordering::SeqCst));
            assert_quiet(&*group);
        }
        assert_eq!(worst, 1, "{worst} followers ran their own function");
    });
}

#[test]
fn a_guard_dropped_while_panicking_is_a_leader_panic() {
    quiet_expected_panics();
    with_deadline("guard_panic", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let gate = Arc::new(Gate::default());
        let leader =
            guard_held_then_panicking(&group, &gate, "expected-panic: while holding the guard");
        let worker = spawn_follower(&group, 1, |g| {
            panic::catch_unwind(AssertUnwindSafe(|| g.work(&1, || unreachable!())))
        });
        let waiter = spawn_follower(&group, 2, |g| {
            let waiter = waiter_of(g.join(&1));
            panic::catch_unwind(AssertUnwindSafe(|| waiter.wait()))
        });
        gate.open();
        let payload = leader.join().unwrap().expect_err("the leader unwinds");
        assert_eq!(
            panic_message(&*payload).as_deref(),
            Some("expected-panic: while holding the guard")
        );
        for payload in [
            worker
                .join()
                .unwrap()
                .map(|_| ())
                .expect_err("worker unwinds"),
            waiter
                .join()
                .unwrap()
                .map(|_| ())
                .expect_err("waiter unwinds"),
        ] {
            let why = payload
                .downcast_ref::<LeaderPanicked>()
                .expect("LeaderPanicked");
            assert_eq!(why.message(), None, "a guard cannot see the payload");
        }
        let stats = group.stats();
        assert_eq!((stats.leader_panics, stats.follower_panics), (1, 2));
        assert_eq!(stats.leader_abandons, 0);
        assert_quiet(&*group);
    });
}

#[test]
fn a_guard_dropped_while_panicking_under_retry_elects_a_follower() {
    quiet_expected_panics();
    with_deadline("guard_panic_retry", || {
        let group = Arc::new(
            Group::<u64, u64>::builder()
                .error_policy(ErrorPolicy::Retry { retries: 1 })
                .build(),
        );
        let gate = Arc::new(Gate::default());
        let leader = guard_held_then_panicking(&group, &gate, "expected-panic: guard under retry");
        let worker = spawn_follower(&group, 1, |g| g.work_with_role(&1, || 8));
        gate.open();
        assert!(leader.join().unwrap().is_err());
        let worker = worker.join().unwrap();
        assert_eq!((worker.value, worker.role), (8, Role::Leader));
        let stats = group.stats();
        assert_eq!((stats.retries, stats.followers_promoted), (1, 1));
        assert_quiet(&*group);
    });
}

#[test]
fn joining_a_key_this_thread_leads_through_a_guard_panics_as_recursive() {
    quiet_expected_panics();
    with_deadline("guard_recursion", || {
        let group: Group<u64, u64> = Group::new();
        let guard = leader_of(group.join(&1));
        let recursive = |result: std::thread::Result<()>| {
            let payload = result.expect_err("a recursive call panics");
            let text = panic_message(&*payload).unwrap_or_default();
            assert!(text.contains("recursive"), "{text}");
        };
        recursive(panic::catch_unwind(AssertUnwindSafe(|| {
            let _ = group.join(&1);
        })));
        recursive(panic::catch_unwind(AssertUnwindSafe(|| {
            group.work(&1, || unreachable!());
        })));
        recursive(panic::catch_unwind(AssertUnwindSafe(|| {
            let _ = group.work_within(&1, Duration::ZERO, || unreachable!());
        })));
        // Through another key's flight on the same thread.
        recursive(panic::catch_unwind(AssertUnwindSafe(|| {
            group.work(&2, || group.work(&1, || unreachable!()));
        })));
        // Another key is fine, and the guard is intact.
        assert_eq!(leader_of(group.join(&3)).fill(3).callers, 1);
        assert_eq!(group.in_flight(), 1);
        assert_eq!(guard.fill(1).callers, 1);
        let stats = group.stats();
        assert_eq!((stats.followers_joined, stats.leader_panics), (0, 1));
        assert_quiet(&group);
    });
}

#[test]
fn try_get_is_none_while_running_and_some_after() {
    quiet_expected_panics();
    with_deadline("try_get", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let (leader, release) = blocked_leader(&group, 1, 42);
        let mut waiter = waiter_of(group.join(&1));
        assert!(format!("{waiter:?}").contains("waiting"));
        assert_eq!(waiter.try_get(), None);
        assert_eq!(waiter.try_get(), None);
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 42);
        assert_eq!(waiter.try_get(), Some(Ok(42)));
        assert!(format!("{waiter:?}").contains("done"));
        // Documented: the outcome is returned once.
        let again = panic::catch_unwind(AssertUnwindSafe(|| waiter.try_get()));
        let text = panic_message(&*again.expect_err("second outcome")).unwrap_or_default();
        assert!(text.contains("already returned"), "{text}");
        drop(waiter);
        let stats = group.stats();
        assert_eq!((stats.followers_served, stats.follower_timeouts), (1, 0));
        assert_quiet(&*group);
    });
}

#[test]
fn wait_timeout_keeps_the_place_and_wait_collects_later() {
    with_deadline("wait_timeout_then_wait", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let (leader, release) = blocked_leader(&group, 1, 42);
        let mut waiter = waiter_of(group.join(&1));
        assert_eq!(waiter.wait_timeout(Duration::ZERO), Err(WaitError::Timeout));
        let bound = Duration::from_millis(20);
        let started = Instant::now();
        assert_eq!(waiter.wait_timeout(bound), Err(WaitError::Timeout));
        assert!(started.elapsed() >= bound, "waited its budget");
        release.send(()).unwrap();
        assert_eq!(waiter.wait(), Ok(42));
        assert_eq!(leader.join().unwrap(), 42);
        let stats = group.stats();
        assert_eq!((stats.followers_served, stats.follower_timeouts), (1, 0));
        assert_quiet(&*group);
    });
}

#[test]
fn wait_timeout_max_waits_for_the_value() {
    with_deadline("wait_timeout_max", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let (leader, release) = blocked_leader(&group, 1, 42);
        let waiter = spawn_follower(&group, 1, |g| {
            waiter_of(g.join(&1)).wait_timeout(Duration::MAX)
        });
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 42);
        assert_eq!(waiter.join().unwrap(), Ok(42));
        assert_quiet(&*group);
    });
}

#[test]
fn a_waiter_dropped_unresolved_counts_as_a_timeout_and_the_flight_serves_others() {
    with_deadline("waiter_dropped", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let (leader, release) = blocked_leader(&group, 1, 42);
        let mut waiter = waiter_of(group.join(&1));
        assert_eq!(waiter.wait_timeout(Duration::ZERO), Err(WaitError::Timeout));
        let worker = spawn_follower(&group, 2, |g| g.work_with_role(&1, || unreachable!()));
        drop(waiter);
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 42);
        let worker = worker.join().unwrap();
        assert_eq!(
            (worker.value, worker.callers),
            (42, 2),
            "the dropped waiter is not served"
        );
        let stats = group.stats();
        assert_eq!((stats.follower_timeouts, stats.followers_served), (1, 1));
        assert_quiet(&*group);
    });
}

/// A value that counts its live copies.
#[derive(Debug)]
struct Tracked(Arc<AtomicUsize>);

impl Tracked {
    fn new(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Tracked(Arc::clone(live))
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        Tracked::new(&self.0)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn a_waiter_dropped_after_the_flight_landed_releases_the_stored_copy() {
    with_deadline("waiter_dropped_late", || {
        let live = Arc::new(AtomicUsize::new(0));
        let group = Arc::new(Group::<u64, Tracked>::new());
        let guard = leader_of(group.join(&1));
        let worker = spawn_follower(&group, 1, |g| g.work(&1, || unreachable!()));
        let waiter = spawn_follower(&group, 2, |g| {
            let waiter = waiter_of(g.join(&1));
            // Held, never collected, until the flight has landed.
            wait_until("the flight landed", || g.stats().followers_served == 1);
            drop(waiter);
        });
        let outcome = guard.fill(Tracked::new(&live));
        drop(worker.join().unwrap());
        waiter.join().unwrap();
        drop(outcome);
        assert_eq!(
            live.load(Ordering::SeqCst),
            0,
            "no copy leaked, none dropped twice"
        );
        assert_eq!(group.stats().follower_timeouts, 1);
        assert_quiet(&*group);
    });
}

#[test]
fn a_waiter_sees_the_leaders_panic() {
    quiet_expected_panics();
    with_deadline("waiter_panic", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let gate = Arc::new(Gate::default());
        let leader = gated(&group, &gate, |group, gate| {
            panic::catch_unwind(AssertUnwindSafe(|| {
                group.work(&1, || -> u64 {
                    gate.pass();
                    panic!("expected-panic: backend")
                })
            }))
        });
        let waiter = waiter_of(group.join(&1));
        let mut polled = waiter_of(group.join(&1));
        gate.open();
        assert!(leader.join().unwrap().is_err());
        let payload = panic::catch_unwind(AssertUnwindSafe(|| waiter.wait())).unwrap_err();
        let why = payload
            .downcast_ref::<LeaderPanicked>()
            .expect("LeaderPanicked");
        assert_eq!(why.message(), Some("expected-panic: backend"));
        let payload = panic::catch_unwind(AssertUnwindSafe(|| polled.try_get())).unwrap_err();
        assert!(payload.downcast_ref::<LeaderPanicked>().is_some());
        drop(polled);
        assert_eq!(group.stats().follower_panics, 2);
        assert_quiet(&*group);
    });
}

#[test]
fn a_waiter_on_a_forgotten_flight_still_gets_its_value() {
    with_deadline("waiter_forget", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let (leader, release) = blocked_leader(&group, 1, 1);
        let waiter = waiter_of(group.join(&1));
        assert!(group.forget(&1));
        assert_eq!(leader_of(group.join(&1)).fill(2).callers, 1);
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 1);
        assert_eq!(waiter.wait(), Ok(1));
        assert_quiet(&*group);
    });
}

#[test]
fn a_guards_flight_is_replaced_for_its_age() {
    with_deadline("guard_age", || {
        let age = Duration::from_millis(150);
        let key = EqProbe::new(1);
        let group = Arc::new(Group::<EqProbe, u64>::builder().max_flight_age(age).build());
        let guard = leader_of(group.join(&key));
        let waiter = waiter_thread(&group, 1, key.clone());
        let k = key.clone();
        let worker = spawn_follower(&group, 2, move |g| g.work_with_role(&k, || 99));
        let eqs = key.eqs();
        thread::sleep(age + Duration::from_millis(5));
        let gate = Arc::new(Gate::default());
        let replacement = gated(&group, &gate, {
            let key = key.clone();
            move |group, gate| {
                group.work_with_role(&key, || {
                    gate.pass();
                    2
                })
            }
        });
        // The old guard still fills: only its leader gets the value; its
        // followers (a waiter and a worker) went with the replacement.
        let old = guard.fill(1);
        assert_eq!((old.value, old.callers), (1, 1));
        assert_eq!(group.in_flight(), 1);
        gate.open();
        assert_eq!(replacement.join().unwrap().callers, 3);
        assert_eq!(waiter.join().unwrap(), Ok(2));
        let worker = worker.join().unwrap();
        assert_eq!((worker.value, worker.role), (2, Role::Follower));
        assert_eq!(
            key.eqs(),
            eqs + 1,
            "only the replacing caller looked the key up"
        );
        assert_eq!(group.stats().replacements, 1);
        assert_quiet(&*group);
    });
}

// ----------------------------------------------------------- work_within

#[test]
fn work_within_reports_role_and_callers_with_a_budget() {
    with_deadline("work_within", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let gate = Arc::new(Gate::default());
        let leader = gated(&group, &gate, |group, gate| {
            group.work_within(&1, Duration::ZERO, || {
                gate.pass();
                5
            })
        });
        let followers: Vec<_> = (1..=2)
            .map(|joined| {
                spawn_follower(&group, joined, |g| {
                    g.work_within(&1, Duration::MAX, || unreachable!())
                })
            })
            .collect();
        let started = Instant::now();
        let bound = Duration::from_millis(10);
        assert_eq!(
            group.work_within(&1, bound, || unreachable!()),
            Err(WaitError::Timeout)
        );
        assert!(started.elapsed() >= bound);
        gate.open();
        let leader = leader.join().unwrap().expect("a leader is never cut short");
        assert_eq!(
            (leader.value, leader.role, leader.callers),
            (5, Role::Leader, 3)
        );
        for follower in followers {
            let follower = follower.join().unwrap().unwrap();
            assert_eq!(
                (follower.value, follower.role, follower.callers),
                (5, Role::Follower, 3)
            );
        }
        assert_eq!(group.stats().follower_timeouts, 1);
        assert_quiet(&*group);
    });
}

// ------------------------------------------------------- try_work_within

#[derive(Debug)]
struct Fail(&'static str);

type Res = Result<u64, Arc<Fail>>;

#[test]
fn try_work_within_flattens_value_error_and_timeout() {
    with_deadline("try_work_within", || {
        let group = Arc::new(Group::<u64, Res>::new());
        // Ok: the value with its role and callers, not a nested Result.
        let outcome = group
            .try_work_within(&1, Duration::ZERO, || Ok::<_, Fail>(7))
            .unwrap();
        assert_eq!(
            (outcome.value, outcome.role, outcome.callers),
            (7, Role::Leader, 1)
        );

        let gate = Arc::new(Gate::default());
        let leader = gated(&group, &gate, |group, gate| {
            group.try_work_within(&1, Duration::ZERO, || {
                gate.pass();
                Err::<u64, _>(Fail("db down"))
            })
        });
        let follower = spawn_follower(&group, 1, |g| {
            g.try_work_within(&1, Duration::MAX, || -> Result<u64, Fail> {
                unreachable!()
            })
        });
        match group.try_work_within(&1, Duration::ZERO, || -> Result<u64, Fail> {
            unreachable!()
        }) {
            Err(TryError::Timeout) => {}
            other => panic!("expected Timeout, got {other:?}"),
        }
        gate.open();
        let (Err(TryError::Failed(mine)), Err(TryError::Failed(theirs))) =
            (leader.join().unwrap(), follower.join().unwrap())
        else {
            panic!("both get the flight's error")
        };
        assert_eq!(mine.0, "db down");
        assert!(Arc::ptr_eq(&mine, &theirs), "one error, shared");
        let stats = group.stats();
        assert_eq!((stats.followers_served, stats.follower_timeouts), (1, 1));
        assert_quiet(&*group);
    });
}

#[test]
fn try_error_displays_and_chains_the_flights_error() {
    let group: Group<u64, Result<u64, Arc<std::io::Error>>> = Group::new();
    let error = group
        .try_work_within(&1, Duration::ZERO, || Err(std::io::Error::other("db down")))
        .unwrap_err();
    assert_eq!(error.to_string(), "db down");
    assert!(std::error::Error::source(&error).is_some());
    let copy = error.clone();
    assert!(matches!(copy, TryError::Failed(_)));
    assert_eq!(
        TryError::<std::io::Error>::Timeout.to_string(),
        WaitError::Timeout.to_string()
    );
}

// ------------------------------------------- recursion through a waiter

/// Expects `result` to be a panic whose message names a recursive call.
fn assert_recursive<T: std::fmt::Debug>(result: std::thread::Result<T>) {
    let payload = result.expect_err("a recursive wait panics");
    let text = panic_message(&*payload).unwrap_or_default();
    assert!(text.contains("recursive"), "{text}");
}

/// A waiter held by this thread on a flight that another thread leads,
/// for a group whose `max_flight_age` is `age`. Retries with a new key in
/// the rare case that this thread reached `join` only after the flight
/// was already too old (a busy machine), so the test never depends on it.
#[allow(clippy::type_complexity)]
fn waiter_on_a_young_flight(
    group: &Arc<Group<u64, u64>>,
    age: Duration,
) -> (
    u64,
    sync_singleflight::Waiter<'_, u64, u64>,
    thread::JoinHandle<u64>,
    std::sync::mpsc::Sender<()>,
) {
    for key in 1..=20 {
        let started = Instant::now();
        let (leader, release) = blocked_leader(group, key, 10);
        match group.join(&key) {
            Joined::Waiter(waiter) => return (key, waiter, leader, release),
            Joined::Leader(replacement) => {
                assert!(started.elapsed() >= age, "a young flight is joined");
                replacement.fill(0);
                release.send(()).unwrap();
                leader.join().unwrap();
            }
        }
    }
    panic!("twenty flights in a row aged out before this thread could join one");
}

#[test]
fn a_waiter_adopted_by_a_flight_its_own_thread_leads_panics_as_recursive() {
    quiet_expected_panics();
    with_deadline("adopted_waiter", || {
        let age = Duration::from_millis(100);
        let group = Arc::new(Group::<u64, u64>::builder().max_flight_age(age).build());
        let (key, mut waiter, leader, release) = waiter_on_a_young_flight(&group, age);
        thread::sleep(age);
        // The flight is now too old: this thread leads its replacement,
        // which adopts every follower of the old one, this thread's waiter
        // included.
        let guard = leader_of(group.join(&key));
        assert_eq!(group.stats().replacements, 1);
        // Polling cannot deadlock: it says "still running".
        assert_eq!(waiter.try_get(), None);
        assert_recursive(panic::catch_unwind(AssertUnwindSafe(|| {
            waiter.wait_timeout(Duration::from_secs(60))
        })));
        assert_recursive(panic::catch_unwind(AssertUnwindSafe(|| waiter.wait())));
        // The waiter unwound and gave up its place; the guard is intact.
        assert_eq!(guard.fill(2).callers, 1);
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 10);
        assert_quiet(&*group);
    });
}

#[test]
fn a_waiter_polled_by_the_leader_of_its_replacement_gets_the_value_once_filled() {
    with_deadline("adopted_waiter_try_get", || {
        let age = Duration::from_millis(100);
        let group = Arc::new(Group::<u64, u64>::builder().max_flight_age(age).build());
        let (key, mut waiter, leader, release) = waiter_on_a_young_flight(&group, age);
        thread::sleep(age);
        let guard = leader_of(group.join(&key));
        assert_eq!(waiter.try_get(), None);
        assert_eq!(guard.fill(2).callers, 2);
        assert_eq!(waiter.try_get(), Some(Ok(2)));
        release.send(()).unwrap();
        leader.join().unwrap();
        assert_quiet(&*group);
    });
}

#[test]
fn a_waiter_whose_thread_is_elected_to_rerun_its_flight_panics_as_recursive() {
    quiet_expected_panics();
    with_deadline("elected_waiter", || {
        let group: Arc<Group<u64, Result<u64, Arc<&'static str>>>> = Arc::new(
            Group::builder()
                .error_policy(ErrorPolicy::Retry { retries: 1 })
                .build(),
        );
        let gate = Arc::new(Gate::default());
        let leader = gated(&group, &gate, |group, gate| {
            group.try_work(&1, || {
                gate.pass();
                Err("expected-panic: the first run fails")
            })
        });
        let waiter = waiter_of(group.join(&1));
        // Fails the first run once this thread has joined it a second time,
        // now with a function of its own (a candidate for the rerun).
        let failer = {
            let (group, gate) = (Arc::clone(&group), Arc::clone(&gate));
            thread::spawn(move || {
                wait_until("both joins", || group.stats().followers_joined == 2);
                gate.open();
            })
        };
        let rerun = panic::catch_unwind(AssertUnwindSafe(|| {
            group.try_work(&1, move || {
                Ok::<_, &str>(waiter.wait().map_or(0, |v| v.unwrap_or(0)))
            })
        }));
        assert_recursive(rerun);
        failer.join().unwrap();
        assert!(leader.join().unwrap().is_err());
        let stats = group.stats();
        assert_eq!((stats.retries, stats.followers_promoted), (1, 1));
        assert_quiet(&*group);
    });
}

#[test]
fn a_guard_leaked_on_a_thread_that_exited_is_replaced_not_recursive() {
    with_deadline("leaked_guard_exited", || {
        let group = Arc::new(
            Group::<u64, u64>::builder()
                .max_flight_age(Duration::ZERO)
                .build(),
        );
        {
            let group = Arc::clone(&group);
            thread::spawn(move || std::mem::forget(leader_of(group.join(&1))))
                .join()
                .unwrap();
        }
        // New threads often get the exited thread's stack and thread-locals;
        // none of them may be taken for the leaked flight's leader.
        for value in 0..8 {
            let group = Arc::clone(&group);
            let outcome = thread::spawn(move || group.work_with_role(&1, || value))
                .join()
                .expect("a fresh thread is not the leaked flight's leader");
            assert_eq!((outcome.value, outcome.role), (value, Role::Leader));
        }
        assert_eq!(group.stats().replacements, 1);
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn a_guard_this_thread_leaked_is_recursive_until_it_ages_then_replaced() {
    quiet_expected_panics();
    with_deadline("leaked_guard_same_thread", || {
        let age = Duration::from_millis(50);
        let group = Group::<u64, u64>::builder().max_flight_age(age).build();
        let started = Instant::now();
        std::mem::forget(leader_of(group.join(&1)));
        let early = panic::catch_unwind(AssertUnwindSafe(|| group.work(&1, || 2)));
        if started.elapsed() < age {
            assert_recursive(early);
        }
        thread::sleep(age);
        let outcome = group.work_with_role(&1, || 3);
        assert_eq!((outcome.value, outcome.role), (3, Role::Leader));
        assert!(group.stats().replacements >= 1);
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn question_mark_from_an_abandoned_wait_into_try_error_is_abandoned() {
    fn collect(
        waiter: sync_singleflight::Waiter<'_, u64, u64>,
    ) -> Result<u64, TryError<std::io::Error>> {
        Ok(waiter.wait()?)
    }
    with_deadline("wait_error_into_try_error", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let guard = leader_of(group.join(&1));
        let waiter = spawn_follower(&group, 1, |g| collect(waiter_of(g.join(&1))));
        drop(guard);
        let got = waiter.join().expect("no panic on the conversion");
        assert!(matches!(got, Err(TryError::Abandoned)), "{got:?}");
        assert_eq!(
            TryError::<std::io::Error>::Abandoned.to_string(),
            WaitError::Abandoned.to_string()
        );
        assert_quiet(&*group);
    });
}
