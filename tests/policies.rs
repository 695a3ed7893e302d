//! The policies of `Group::builder()`: every option, `max_flight_age`
//! replacement, the error policy (`try_work`, `Retry`), and `max_followers`.
//!
//! Deterministic: threads are ordered with gates, channels and
//! `wait_until` on counters (`Stats`, or the `Eq` calls of an [`EqProbe`]
//! key, which show a follower re-entering a flight); sleeps only let a
//! flight age past its limit, or bound a wait.

mod common;

use std::hash::{BuildHasher, Hasher};
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
use sync_singleflight::{
    ErrorPolicy, Group, Joined, LeaderPanicked, MAX_SHARDS, Role, TryError, WaitError,
};

/// An error that is not `Clone`, as `try_work` allows.
#[derive(Debug)]
struct Fail(String);

type Res = Result<u64, Arc<Fail>>;

/// Starts `work(&key)` on its own thread with a function that waits at
/// `gate` and returns `value`; returns once the function is running.
fn gated_leader<K, V>(
    group: &Arc<Group<K, V>>,
    key: K,
    gate: &Arc<Gate>,
    value: V,
) -> thread::JoinHandle<sync_singleflight::Outcome<V>>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    gated(group, gate, move |group, gate| {
        group.work_with_role(&key, move || {
            gate.pass();
            value
        })
    })
}

/// Starts `try_work(&key)` on its own thread with a function that waits at
/// `gate` and returns `result`; returns once the function is running.
fn gated_try_leader<K>(
    group: &Arc<Group<K, Res>>,
    key: K,
    gate: &Arc<Gate>,
    result: Result<u64, Fail>,
) -> thread::JoinHandle<Res>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    gated(group, gate, move |group, gate| {
        group.try_work(&key, move || {
            gate.pass();
            result
        })
    })
}

fn message(payload: &(dyn std::any::Any + Send)) -> String {
    panic_message(payload).unwrap_or_default()
}

// ---------------------------------------------------------------- builder

#[test]
fn a_built_group_without_options_behaves_like_new() {
    with_deadline("builder_defaults", || {
        let group = Arc::new(Group::<u64, u64>::builder().build());
        assert_eq!(group.name(), "default");
        let (leader, release) = blocked_leader(&group, 1, 10);
        let follower = spawn_follower(&group, 1, |g| g.work_with_role(&1, || unreachable!()));
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 10);
        let follower = follower.join().unwrap();
        assert_eq!(
            (follower.value, follower.role, follower.callers),
            (10, Role::Follower, 2)
        );
        assert_stats!(group, { replacements: 0, retries: 0, overflows: 0 });
        assert_quiet(&group);
    });
}

#[test]
fn the_name_is_reported() {
    let group: Group<u64, u64> = Group::builder().name("user-lookups").build();
    assert_eq!(group.name(), "user-lookups");
    assert!(format!("{group:?}").contains("user-lookups"));
    let owned: Group<u64, u64> = Group::builder().name(String::from("dyn")).build();
    assert_eq!(owned.name(), "dyn");
    let builder = Group::<u64, u64>::builder()
        .name("b")
        .max_followers(3)
        .shards(5);
    let debug = format!("{builder:?}");
    assert!(debug.contains("max_followers: Some(3)") && debug.contains("shards: Some(5)"));
}

#[test]
fn zero_shards_panics_with_a_clear_message() {
    quiet_expected_panics();
    let payload =
        panic::catch_unwind(|| Group::<u64, u64>::builder().shards(0)).expect_err("shards(0)");
    let text = message(&*payload);
    assert!(text.contains("shards(0)"), "{text}");
    assert!(text.contains("between 1 and 65536"), "{text}");
}

#[test]
fn too_many_shards_panics_with_a_clear_message() {
    let payload = panic::catch_unwind(|| Group::<u64, u64>::builder().shards(MAX_SHARDS + 1))
        .expect_err("shards(MAX_SHARDS + 1)");
    let text = message(&*payload);
    assert!(
        text.contains(&format!("shards({})", MAX_SHARDS + 1)),
        "{text}"
    );
    assert!(text.contains("out of range"), "{text}");
    let payload = panic::catch_unwind(|| Group::<u64, u64>::builder().shards(usize::MAX))
        .expect_err("shards(usize::MAX)");
    assert!(message(&*payload).contains("out of range"));
}

#[test]
fn any_shard_count_in_range_is_used_as_given() {
    with_deadline("shard_counts", || {
        for count in [1, 2, 3, 5, 7, 12, 100, 1000, MAX_SHARDS] {
            let group = Arc::new(Group::<u64, u64>::builder().shards(count).build());
            assert!(
                format!("{group:?}").contains(&format!("shards: {count}")),
                "{count}: {group:?}"
            );
            // Many keys spread over the shards, each computed once.
            for key in 0..200 {
                assert_eq!(group.work(&key, || key * 2), key * 2);
            }
            // Dedup still works on every count, including non-powers of two.
            let (leader, release) = blocked_leader(&group, 77, 1);
            let follower = spawn_follower(&group, 1, |g| g.work(&77, || unreachable!()));
            assert_eq!(group.in_flight(), 1);
            release.send(()).unwrap();
            assert_eq!((leader.join().unwrap(), follower.join().unwrap()), (1, 1));
            assert_eq!(group.stats().leader_runs, 201);
            assert_quiet(&group);
        }
    });
}

/// Every key hashes to the same value: only `Eq` tells keys apart.
#[derive(Clone, Default)]
struct Colliding(Arc<AtomicUsize>);

impl BuildHasher for Colliding {
    type Hasher = ConstHasher;
    fn build_hasher(&self) -> ConstHasher {
        self.0.fetch_add(1, Ordering::SeqCst);
        ConstHasher
    }
}

struct ConstHasher;

impl Hasher for ConstHasher {
    fn finish(&self) -> u64 {
        42
    }
    fn write(&mut self, _: &[u8]) {}
}

#[test]
fn the_hasher_is_used_and_colliding_keys_stay_apart() {
    with_deadline("hasher", || {
        let hashes = Arc::new(AtomicUsize::new(0));
        let group: Arc<Group<u64, u64, Colliding>> = Arc::new(
            Group::builder()
                .shards(4)
                .hasher(Colliding(Arc::clone(&hashes)))
                .build(),
        );
        let gate = Arc::new(Gate::default());
        let leader = gated(&group, &gate, |group, gate| {
            group.work(&1, || {
                gate.pass();
                10
            })
        });
        // Same hash, different key: runs on its own, does not join key 1.
        assert_eq!(group.work_with_role(&2, || 20).role, Role::Leader);
        assert_eq!(group.work_timeout(&3, Duration::ZERO, || 30), Ok(30));
        assert_eq!(group.in_flight(), 1);
        gate.open();
        assert_eq!(leader.join().unwrap(), 10);
        assert!(
            hashes.load(Ordering::SeqCst) >= 3,
            "the given hasher was used"
        );
        let stats = group.stats();
        assert_eq!((stats.leader_runs, stats.followers_joined), (3, 0));
        assert_quiet(&*group);
    });
}

// ------------------------------------------------------ max_flight_age

/// Long enough that a replacement stays young for the rest of a test even
/// on a loaded machine (150 ms was once exceeded under load); every test
/// that ages a flight sleeps this long.
const AGE: Duration = Duration::from_millis(300);

/// Lets every flight started so far grow older than [`AGE`].
fn age_past(limit: Duration) {
    thread::sleep(limit + Duration::from_millis(5));
}

#[test]
fn an_old_flight_is_replaced_and_its_followers_move_over() {
    with_deadline("age_replacement", || {
        let key = EqProbe::new(1);
        let group = Arc::new(Group::<EqProbe, u64>::builder().max_flight_age(AGE).build());
        let (old_gate, new_gate) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
        let old = gated_leader(&group, key.clone(), &old_gate, 1);
        let k = key.clone();
        let mover = spawn_follower(&group, 1, move |g| g.work_with_role(&k, || 99));
        let Joined::Waiter(waiter) = group.join(&key) else {
            panic!("a young flight is joined")
        };
        assert_eq!(group.stats().followers_joined, 2);
        let eqs = key.eqs();

        age_past(AGE);
        let replacement = gated_leader(&group, key.clone(), &new_gate, 2);
        assert_eq!(group.stats().replacements, 1);
        assert_eq!(group.in_flight(), 1, "the old flight is no longer joinable");
        // The replacement adopted the old flight's followers (the waiter and
        // the work-follower): neither re-entered the table, only the
        // replacer looked the key up.
        assert_eq!(key.eqs(), eqs + 1);

        // The old leader finishes first: it gets its own value and removes
        // only its own flight.
        old_gate.open();
        let old = old.join().unwrap();
        assert_eq!((old.value, old.role, old.callers), (1, Role::Leader, 1));
        assert_eq!(group.in_flight(), 1, "the replacement is still running");
        let late = spawn_follower(&group, 3, {
            let key = key.clone();
            move |g| g.work(&key, || unreachable!())
        });

        new_gate.open();
        let replacement = replacement.join().unwrap();
        assert_eq!((replacement.value, replacement.callers), (2, 4));
        let mover = mover.join().unwrap();
        assert_eq!(
            (mover.value, mover.role, mover.callers),
            (2, Role::Follower, 4)
        );
        assert_eq!(waiter.wait(), Ok(2), "the waiter moved over too");
        assert_eq!(late.join().unwrap(), 2);
        assert_stats!(group, {
            leader_runs: 2,
            followers_abandoned: 0,
            followers_served: 3,
            followers_promoted: 0,
        });
        assert_quiet(&*group);
    });
}

#[test]
fn at_most_one_replacement_per_age_window() {
    with_deadline("one_replacement", || {
        let age = Duration::from_millis(250);
        let group = Arc::new(Group::<u64, u64>::builder().max_flight_age(age).build());
        let (old_gate, new_gate) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
        let old = gated_leader(&group, 7, &old_gate, 1);
        age_past(age);
        let started = Instant::now();
        let replacement = gated_leader(&group, 7, &new_gate, 2);
        // Callers arriving now join the replacement: no herd.
        let followers: Vec<_> = (1..=4)
            .map(|joined| spawn_follower(&group, joined, |g| g.work(&7, || unreachable!())))
            .collect();
        assert!(started.elapsed() < age, "test too slow to check the window");
        let stats = group.stats();
        assert_eq!((stats.replacements, stats.leader_runs), (1, 2));
        new_gate.open();
        assert_eq!(replacement.join().unwrap().callers, 5);
        for follower in followers {
            assert_eq!(follower.join().unwrap(), 2);
        }
        old_gate.open();
        assert_eq!(old.join().unwrap().value, 1);
        assert_quiet(&*group);
    });
}

#[test]
fn a_replacement_ages_in_turn_and_is_replaced_once() {
    with_deadline("replacement_ages", || {
        let group = Arc::new(Group::<u64, u64>::builder().max_flight_age(AGE).build());
        let gates: Vec<Arc<Gate>> = (0..3).map(|_| Arc::new(Gate::default())).collect();
        let first = gated_leader(&group, 1, &gates[0], 1);
        age_past(AGE);
        let second = gated_leader(&group, 1, &gates[1], 2);
        age_past(AGE);
        let third = gated_leader(&group, 1, &gates[2], 3);
        assert_eq!(group.stats().replacements, 2);
        assert_eq!(group.in_flight(), 1);
        // Finishing out of order: each removes only its own flight.
        gates[1].open();
        assert_eq!(second.join().unwrap().value, 2);
        assert_eq!(group.in_flight(), 1);
        gates[0].open();
        assert_eq!(first.join().unwrap().value, 1);
        assert_eq!(group.in_flight(), 1);
        gates[2].open();
        assert_eq!(third.join().unwrap().value, 3);
        assert_quiet(&*group);
    });
}

#[test]
fn a_young_flight_is_joined_not_replaced() {
    with_deadline("young_flight", || {
        let group = Arc::new(
            Group::<u64, u64>::builder()
                .max_flight_age(Duration::from_secs(3600))
                .build(),
        );
        let (leader, release) = blocked_leader(&group, 1, 5);
        let follower = spawn_follower(&group, 1, |g| g.work(&1, || unreachable!()));
        release.send(()).unwrap();
        assert_eq!((leader.join().unwrap(), follower.join().unwrap()), (5, 5));
        assert_eq!(group.stats().replacements, 0);
        assert_quiet(&*group);
    });
}

/// `Duration::ZERO` is accepted and documented: every flight is too old at
/// once, so a caller that finds one starts its own instead of waiting.
#[test]
fn a_zero_age_lets_every_caller_run_its_own_flight() {
    with_deadline("zero_age", || {
        let group = Arc::new(
            Group::<u64, u64>::builder()
                .max_flight_age(Duration::ZERO)
                .build(),
        );
        let (leader, release) = blocked_leader(&group, 1, 5);
        // The leader is parked inside `f`; this call does not wait for it.
        assert_eq!(group.work(&1, || 7), 7);
        assert_eq!(group.stats().replacements, 1);
        // The replaced flight is forgotten: the next caller starts afresh.
        assert_eq!(group.work(&1, || 8), 8);
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 5);
        assert_eq!(group.stats().leader_runs, 3);
        assert_quiet(&*group);
    });
}

/// Issue 9's race: the replacement starts just as the old leader returns.
/// Whichever wins, nobody hangs, the old leader never removes the
/// replacement, and every follower is accounted for.
#[test]
fn an_age_replacement_racing_the_old_leaders_completion() {
    with_deadline("age_race", || {
        for round in 0..6 {
            let age = AGE;
            let group = Arc::new(Group::<u64, u64>::builder().max_flight_age(age).build());
            let (old_gate, new_gate) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
            let old = gated_leader(&group, 1, &old_gate, 1);
            let follower = spawn_follower(&group, 1, |g| g.work_with_role(&1, || 3));
            age_past(age);
            let start = Arc::new(std::sync::Barrier::new(2));
            let replacer = {
                let (group, gate, start) = (
                    Arc::clone(&group),
                    Arc::clone(&new_gate),
                    Arc::clone(&start),
                );
                thread::spawn(move || {
                    start.wait();
                    group.work_with_role(&1, || {
                        gate.pass();
                        2
                    })
                })
            };
            start.wait();
            old_gate.open();
            let old = old.join().unwrap();
            assert_eq!((old.value, old.role), (1, Role::Leader), "round {round}");
            wait_until("the replacer runs its function", || new_gate.reached() == 1);
            // The old leader has returned; the replacer's flight is intact.
            assert_eq!(group.in_flight(), 1, "round {round}");
            let late = spawn_follower(&group, 2, |g| g.work(&1, || unreachable!()));
            new_gate.open();
            let replacer = replacer.join().unwrap();
            assert_eq!((replacer.value, replacer.role), (2, Role::Leader));
            assert_eq!(late.join().unwrap(), 2);
            // The first follower got the old value (old leader won), or moved
            // to the replacement (got 2), or found it gone and ran its own.
            let follower = follower.join().unwrap();
            match follower.value {
                1 => assert_eq!((follower.role, old.callers), (Role::Follower, 2)),
                2 => assert_eq!(follower.role, Role::Follower),
                3 => assert_eq!(follower.role, Role::Leader),
                other => panic!("round {round}: follower got {other}"),
            }
            assert!(group.stats().replacements <= 1);
            assert_quiet(&*group);
        }
    });
}

/// The old leader of a replaced flight fails under `Retry`: its followers
/// have already moved to the replacement, so nobody is sent to retry and
/// `Stats::retries` ("flights whose followers were sent to elect a new
/// leader") must not count it.
#[test]
fn a_replaced_flight_that_fails_sends_nobody_to_retry() {
    with_deadline("replaced_then_failed", || {
        let key = EqProbe::new(1);
        let group = Arc::new(
            Group::<EqProbe, Res>::builder()
                .max_flight_age(AGE)
                .error_policy(ErrorPolicy::Retry { retries: 1 })
                .build(),
        );
        let (old_gate, new_gate) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
        let old = gated_try_leader(&group, key.clone(), &old_gate, Err(Fail("old".into())));
        let k = key.clone();
        let mover = spawn_follower(&group, 1, move |g| {
            g.try_work(&k, || Err::<u64, _>(Fail("mover ran".into())))
        });
        let eqs = key.eqs();
        age_past(AGE);
        let replacement = gated_try_leader(&group, key.clone(), &new_gate, Ok(2));
        assert_eq!(key.eqs(), eqs + 1, "the follower moved without re-entering");
        old_gate.open();
        assert_eq!(old.join().unwrap().unwrap_err().0, "old");
        new_gate.open();
        assert_eq!(replacement.join().unwrap().unwrap(), 2);
        assert_eq!(mover.join().unwrap().unwrap(), 2);
        let stats = group.stats();
        assert_eq!(stats.replacements, 1);
        assert_eq!(
            stats.retries, 0,
            "no follower was sent to retry the replaced flight: {stats:?}"
        );
        assert_quiet(&*group);
    });
}

// ------------------------------------------------------------ try_work

#[test]
fn try_work_shares_one_error_under_share() {
    with_deadline("try_work_share", || {
        let group = Arc::new(Group::<u64, Res>::new());
        let gate = Arc::new(Gate::default());
        let leader = gated_try_leader(&group, 1, &gate, Err(Fail("db down".into())));
        let followers: Vec<_> = (1..=3)
            .map(|joined| {
                spawn_follower(&group, joined, |g| {
                    g.try_work(&1, || -> Result<u64, Fail> { unreachable!() })
                })
            })
            .collect();
        gate.open();
        let error = leader.join().unwrap().unwrap_err();
        assert_eq!(error.0, "db down");
        for follower in followers {
            let theirs = follower.join().unwrap().unwrap_err();
            assert!(Arc::ptr_eq(&error, &theirs), "one error, shared");
        }
        let stats = group.stats();
        assert_eq!((stats.retries, stats.followers_served), (0, 3));
        // An Ok value is shared the same way, and nothing is cached.
        assert_eq!(group.try_work(&1, || Ok::<_, Fail>(4)).unwrap(), 4);
        assert_quiet(&*group);
    });
}

#[test]
fn try_work_over_a_built_group_with_default_policy_is_share() {
    let group: Group<u64, Res> = Group::builder().error_policy(ErrorPolicy::Share).build();
    assert_eq!(
        group.try_work(&1, || Err(Fail("x".into()))).unwrap_err().0,
        "x"
    );
    assert_eq!(ErrorPolicy::default(), ErrorPolicy::Share);
}

// --------------------------------------------------------------- retry

/// Issue 9's race: several followers of a failed flight elect exactly one
/// new leader; the rest wait for it (and join no herd).
#[test]
fn a_retry_election_with_several_followers_reruns_once() {
    with_deadline("retry_election", || {
        let key = EqProbe::new(1);
        let group = Arc::new(
            Group::<EqProbe, Res>::builder()
                .error_policy(ErrorPolicy::Retry { retries: 1 })
                .build(),
        );
        let (first, rerun) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
        let leader = gated_try_leader(&group, key.clone(), &first, Err(Fail("first".into())));
        let (runs, followers) = counting_followers_with(&group, 4, {
            let (key, rerun) = (key.clone(), Arc::clone(&rerun));
            move |g, runs| {
                g.try_work(&key, || {
                    let n = runs.fetch_add(1, Ordering::SeqCst) as u64;
                    rerun.pass();
                    Ok::<_, Fail>(100 + n)
                })
            }
        });
        let eqs = key.eqs();
        first.open();
        // The original leader gets its own error.
        assert_eq!(leader.join().unwrap().unwrap_err().0, "first");
        // One follower leads the rerun; the other three join it.
        wait_until("one rerun runs", || rerun.reached() == 1);
        wait_until("the others joined the rerun", || key.eqs() == eqs);
        rerun.open();
        for follower in followers {
            assert_eq!(follower.join().unwrap().unwrap(), 100);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "exactly one rerun");
        assert_stats!(group, {
            retries: 1,
            followers_promoted: 1,
            followers_served: 3,
            leader_runs: 1,
        });
        assert_quiet(&*group);
    });
}

/// The same election when the rerun is quick (as a failing backend's
/// answer usually is): the followers that re-enter after the elected
/// leader's flight has already landed must not each run their own function.
#[test]
fn a_retry_election_never_becomes_a_herd_when_the_rerun_is_quick() {
    with_deadline("retry_herd", || {
        let mut worst = 0;
        for _ in 0..40 {
            let group = Arc::new(
                Group::<u64, Res>::builder()
                    .error_policy(ErrorPolicy::Retry { retries: 1 })
                    .build(),
            );
            let gate = Arc::new(Gate::default());
            let leader = gated_try_leader(&group, 1, &gate, Err(Fail("first".into())));
            let (runs, followers) = counting_followers_with(&group, 6, |g, runs| {
                g.try_work(&1, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Err::<u64, _>(Fail("still down".into()))
                })
            });
            gate.open();
            let _ = leader.join().unwrap();
            for follower in followers {
                assert_eq!(follower.join().unwrap().unwrap_err().0, "still down");
            }
            worst = worst.max(runs.load(Ordering::SeqCst));
            assert_quiet(&*group);
        }
        assert_eq!(
            worst, 1,
            "a failed flight with retries: 1 was rerun {worst} times"
        );
    });
}

#[test]
fn retries_exhausted_share_the_last_error() {
    with_deadline("retries_exhausted", || {
        let key = EqProbe::new(1);
        let group = Arc::new(
            Group::<EqProbe, Res>::builder()
                .error_policy(ErrorPolicy::Retry { retries: 2 })
                .build(),
        );
        let (first, reruns) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
        let leader = gated_try_leader(&group, key.clone(), &first, Err(Fail("attempt 0".into())));
        let (runs, followers) = counting_followers_with(&group, 3, {
            let (key, reruns) = (key.clone(), Arc::clone(&reruns));
            move |g, runs| {
                g.try_work(&key, || {
                    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    reruns.pass();
                    Err::<u64, _>(Fail(format!("attempt {n}")))
                })
            }
        });
        let eqs = key.eqs();
        first.open();
        assert_eq!(leader.join().unwrap().unwrap_err().0, "attempt 0");
        wait_until("rerun 1 led, two joined it", || {
            reruns.reached() == 1 && key.eqs() == eqs
        });
        reruns.open();
        wait_until("rerun 2 led, one joined it", || {
            reruns.reached() == 2 && key.eqs() == eqs
        });
        reruns.open();
        let mut errors: Vec<Arc<Fail>> = followers
            .into_iter()
            .map(|f| f.join().unwrap().unwrap_err())
            .collect();
        errors.sort_by(|a, b| a.0.cmp(&b.0));
        let messages: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(messages, ["attempt 1", "attempt 2", "attempt 2"]);
        assert!(
            Arc::ptr_eq(&errors[1], &errors[2]),
            "the last error is shared"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2, "bounded by retries");
        assert_stats!(group, { retries: 2, followers_promoted: 2, followers_served: 1 });
        assert_quiet(&*group);
    });
}

#[test]
fn zero_retries_is_share() {
    with_deadline("zero_retries", || {
        let group = Arc::new(
            Group::<u64, Res>::builder()
                .error_policy(ErrorPolicy::Retry { retries: 0 })
                .build(),
        );
        let gate = Arc::new(Gate::default());
        let leader = gated_try_leader(&group, 1, &gate, Err(Fail("down".into())));
        let follower = spawn_follower(&group, 1, |g| {
            g.try_work(&1, || -> Result<u64, Fail> { unreachable!() })
        });
        gate.open();
        let error = leader.join().unwrap().unwrap_err();
        assert!(Arc::ptr_eq(&error, &follower.join().unwrap().unwrap_err()));
        assert_eq!(group.stats().retries, 0);
        assert_quiet(&*group);
    });
}

#[test]
fn a_leader_panic_under_retry_elects_one_follower() {
    quiet_expected_panics();
    with_deadline("panic_retry", || {
        let key = EqProbe::new(1);
        let group = Arc::new(
            Group::<EqProbe, u64>::builder()
                .error_policy(ErrorPolicy::Retry { retries: 1 })
                .build(),
        );
        let (first, rerun) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
        let leader = gated(&group, &first, {
            let key = key.clone();
            move |group, first| {
                panic::catch_unwind(AssertUnwindSafe(|| {
                    group.work(&key, || -> u64 {
                        first.pass();
                        panic!("expected-panic: leader")
                    })
                }))
            }
        });
        let (runs, followers) = counting_followers_with(&group, 3, {
            let (key, rerun) = (key.clone(), Arc::clone(&rerun));
            move |g, runs| {
                g.work_with_role(&key, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    rerun.pass();
                    7
                })
            }
        });
        let eqs = key.eqs();
        first.open();
        let payload = leader.join().unwrap().expect_err("the leader unwinds");
        assert_eq!(
            message(&*payload),
            "expected-panic: leader",
            "its own payload"
        );
        wait_until("one rerun, two joined it", || {
            rerun.reached() == 1 && key.eqs() == eqs
        });
        rerun.open();
        let outcomes: Vec<_> = followers.into_iter().map(|f| f.join().unwrap()).collect();
        assert!(outcomes.iter().all(|o| o.value == 7 && o.callers == 3));
        assert_eq!(
            outcomes.iter().filter(|o| o.role == Role::Leader).count(),
            1
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let stats = group.stats();
        assert_eq!((stats.leader_panics, stats.follower_panics), (1, 0));
        assert_eq!((stats.retries, stats.followers_promoted), (1, 1));
        assert_quiet(&*group);
    });
}

#[test]
fn a_leader_panic_under_share_reaches_followers_as_leader_panicked() {
    quiet_expected_panics();
    with_deadline("panic_share", || {
        let group = Arc::new(Group::<u64, Res>::builder().build());
        let gate = Arc::new(Gate::default());
        let leader = gated(&group, &gate, |group, gate| {
            panic::catch_unwind(AssertUnwindSafe(|| {
                group.try_work(&1, || -> Result<u64, Fail> {
                    gate.pass();
                    panic!("expected-panic: try")
                })
            }))
        });
        let follower = spawn_follower(&group, 1, |g| {
            panic::catch_unwind(AssertUnwindSafe(|| {
                g.try_work(&1, || -> Result<u64, Fail> { unreachable!() })
            }))
        });
        gate.open();
        assert!(leader.join().unwrap().is_err());
        let payload = follower.join().unwrap().expect_err("follower unwinds");
        let why = payload
            .downcast_ref::<LeaderPanicked>()
            .expect("LeaderPanicked");
        assert_eq!(why.message(), Some("expected-panic: try"));
        assert_quiet(&*group);
    });
}

// ------------------------------------------------------- max_followers

#[test]
fn a_caller_over_the_cap_gets_the_documented_answer_in_every_entry_point() {
    with_deadline("cap_answers", || {
        let group = Arc::new(Group::<u64, u64>::builder().max_followers(1).build());
        let (leader, release) = blocked_leader(&group, 1, 10);
        let follower = spawn_follower(&group, 1, |g| g.work_with_role(&1, || unreachable!()));

        // No error channel: runs its own function, outside the flight.
        assert_eq!(group.work(&1, || 20), 20);
        let own = group.work_with_role(&1, || 21);
        assert_eq!((own.value, own.role, own.callers), (21, Role::Leader, 1));
        assert_eq!(group.work_owned(1, || 22), 22);
        // work_timeout: Err(Timeout) at once, even with a long budget.
        let started = Instant::now();
        assert_eq!(
            group.work_timeout(&1, Duration::from_secs(60), || unreachable!()),
            Err(sync_singleflight::Timeout)
        );
        // work_within: Overloaded at once.
        assert_eq!(
            group.work_within(&1, Duration::from_secs(60), || unreachable!()),
            Err(WaitError::Overloaded)
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "answered at once"
        );
        // join: a waiter whose every method says Overloaded.
        let Joined::Waiter(mut waiter) = group.join(&1) else {
            panic!("a full flight is not led")
        };
        assert_eq!(waiter.try_get(), Some(Err(WaitError::Overloaded)));
        assert_eq!(waiter.try_get(), Some(Err(WaitError::Overloaded)));
        assert_eq!(
            waiter.wait_timeout(Duration::from_secs(60)),
            Err(WaitError::Overloaded)
        );
        assert_eq!(waiter.wait(), Err(WaitError::Overloaded));
        let stats = group.stats();
        assert_eq!((stats.overflows, stats.followers_joined), (6, 1));
        assert_eq!(stats.calls(), 8);

        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 10);
        let follower = follower.join().unwrap();
        assert_eq!((follower.value, follower.callers), (10, 2));
        assert_quiet(&*group);
    });
}

#[test]
fn try_calls_over_the_cap() {
    with_deadline("cap_try", || {
        let group = Arc::new(Group::<u64, Res>::builder().max_followers(1).build());
        let gate = Arc::new(Gate::default());
        let leader = gated_try_leader(&group, 1, &gate, Ok(10));
        let follower = spawn_follower(&group, 1, |g| {
            g.try_work(&1, || -> Result<u64, Fail> { unreachable!() })
        });
        assert_eq!(group.try_work(&1, || Ok::<_, Fail>(20)).unwrap(), 20);
        assert_eq!(
            group
                .try_work(&1, || Err::<u64, _>(Fail("own".into())))
                .unwrap_err()
                .0,
            "own"
        );
        match group.try_work_within(&1, Duration::from_secs(60), || -> Result<u64, Fail> {
            unreachable!()
        }) {
            Err(TryError::Overloaded) => {}
            other => panic!("expected Overloaded, got {other:?}"),
        }
        assert_eq!(
            TryError::<std::io::Error>::Overloaded.to_string(),
            WaitError::Overloaded.to_string()
        );
        gate.open();
        assert_eq!(leader.join().unwrap().unwrap(), 10);
        assert_eq!(follower.join().unwrap().unwrap(), 10);
        assert_eq!(group.stats().overflows, 3);
        assert_quiet(&*group);
    });
}

#[test]
fn max_followers_zero_means_nobody_waits() {
    with_deadline("cap_zero", || {
        let group = Arc::new(Group::<u64, u64>::builder().max_followers(0).build());
        let (leader, release) = blocked_leader(&group, 1, 10);
        assert_eq!(
            group.work_within(&1, Duration::MAX, || unreachable!()),
            Err(WaitError::Overloaded)
        );
        assert_eq!(group.work(&1, || 5), 5);
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 10);
        let stats = group.stats();
        assert_eq!((stats.followers_joined, stats.overflows), (0, 2));
        // Alone, a caller leads as usual.
        assert_eq!(
            group.work_within(&1, Duration::ZERO, || 3).unwrap().value,
            3
        );
        assert_quiet(&*group);
    });
}

/// Issue 9's race: the cap is reached while some followers time out; each
/// timeout frees its slot, and a dropped waiter frees its slot too.
#[test]
fn a_cap_reached_while_others_time_out_frees_their_slots() {
    with_deadline("cap_timeouts", || {
        let group = Arc::new(Group::<u64, u64>::builder().max_followers(2).build());
        let (leader, release) = blocked_leader(&group, 1, 10);
        let impatient = spawn_follower(&group, 1, |g| {
            g.work_within(&1, Duration::from_millis(300), || unreachable!())
        });
        let patient = spawn_follower(&group, 2, |g| g.work_with_role(&1, || unreachable!()));
        assert_eq!(
            group.work_within(&1, Duration::ZERO, || unreachable!()),
            Err(WaitError::Overloaded),
            "full"
        );
        // The impatient follower times out: its slot is free again.
        assert_eq!(impatient.join().unwrap(), Err(WaitError::Timeout));
        let Joined::Waiter(waiter) = group.join(&1) else {
            panic!("joined")
        };
        assert_eq!(group.stats().followers_joined, 3);
        assert_eq!(
            group.work_within(&1, Duration::ZERO, || unreachable!()),
            Err(WaitError::Overloaded),
            "full again"
        );
        // A waiter dropped unresolved frees its slot too.
        drop(waiter);
        let late = spawn_follower(&group, 4, |g| g.work_with_role(&1, || unreachable!()));
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 10);
        for follower in [patient, late] {
            let outcome = follower.join().unwrap();
            assert_eq!((outcome.value, outcome.callers), (10, 3));
        }
        let stats = group.stats();
        assert_eq!((stats.follower_timeouts, stats.overflows), (2, 2));
        assert_quiet(&*group);
    });
}

/// Many short-budget followers arrive and give up against a small cap
/// while the flight runs: nobody hangs, the cap holds, the stats add up.
#[test]
fn a_cap_under_churn_of_timeouts() {
    with_deadline("cap_churn", || {
        let cap = 2;
        let group = Arc::new(Group::<u64, u64>::builder().max_followers(cap).build());
        let (leader, release) = blocked_leader(&group, 1, 10);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churners: Vec<_> = (0..4)
            .map(|_| {
                let (group, stop) = (Arc::clone(&group), Arc::clone(&stop));
                thread::spawn(move || {
                    let (mut served, mut other) = (0, 0);
                    while !stop.load(Ordering::SeqCst) {
                        // Leads only once the flight has landed.
                        match group.work_within(&1, Duration::from_micros(200), || 10) {
                            Ok(outcome) => {
                                assert!(outcome.callers <= cap + 1);
                                served += 1;
                            }
                            Err(WaitError::Timeout | WaitError::Overloaded) => other += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    (served, other)
                })
            })
            .collect();
        wait_until("churn overflowed and timed out", || {
            let stats = group.stats();
            stats.overflows > 20 && stats.follower_timeouts > 20
        });
        stop.store(true, Ordering::SeqCst);
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 10);
        for churner in churners {
            churner.join().unwrap();
        }
        assert_quiet(&*group);
    });
}

/// A follower moved off a replaced flight (or sent to rerun) has already
/// been counted and has already waited; when it re-enters a flight that is
/// at the cap meanwhile, it is turned away as an overflow and — through
/// `work` — runs its own function, and no `Stats` counter ends it.
#[test]
fn a_moved_follower_over_the_cap_is_still_accounted_for() {
    with_deadline("moved_over_cap", || {
        let age = Duration::from_millis(100);
        let mut own_runs = 0;
        for _ in 0..10 {
            let group = Arc::new(
                Group::<u64, u64>::builder()
                    .max_flight_age(age)
                    .max_followers(1)
                    .build(),
            );
            let (old_gate, new_gate) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
            let old = gated_leader(&group, 1, &old_gate, 1);
            let runs = Arc::new(AtomicUsize::new(0));
            let mover = {
                let runs = Arc::clone(&runs);
                spawn_follower(&group, 1, move |g| {
                    g.work(&1, || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        3
                    })
                })
            };
            age_past(age);
            // A hot caller joins the replacement as soon as it exists.
            let go = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let hot = {
                let (group, go) = (Arc::clone(&group), Arc::clone(&go));
                thread::spawn(move || {
                    while !go.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                    while group.stats().replacements == 0 {
                        std::hint::spin_loop();
                    }
                    group.work_within(&1, Duration::from_secs(10), || 4)
                })
            };
            go.store(true, Ordering::SeqCst);
            let replacement = gated_leader(&group, 1, &new_gate, 2);
            wait_until("both ended up somewhere", || {
                let stats = group.stats();
                stats.followers_joined + stats.overflows >= 2
            });
            thread::sleep(Duration::from_millis(2)); // bound for the mover to settle
            new_gate.open();
            old_gate.open();
            let _ = (replacement.join(), old.join(), hot.join(), mover.join());
            own_runs += runs.load(Ordering::SeqCst);
            assert_quiet(&*group);
        }
        assert_eq!(own_runs, 0, "moved followers ran their own function");
    });
}

/// Under `Retry`, a `Waiter` on a failed flight (it has no function to
/// rerun) stays on it while a `work` follower is elected, and gets the
/// rerun's value; with no `work` follower to elect, it gets the failure, as
/// under `Share`.
#[test]
fn a_waiter_on_a_failed_flight_under_retry_gets_the_reruns_value() {
    with_deadline("retry_waiter", || {
        let group = Arc::new(
            Group::<u64, Res>::builder()
                .error_policy(ErrorPolicy::Retry { retries: 1 })
                .build(),
        );
        let gate = Arc::new(Gate::default());
        let leader = gated_try_leader(&group, 1, &gate, Err(Fail("first".into())));
        let waiter = spawn_follower(&group, 1, |g| match g.join(&1) {
            Joined::Waiter(waiter) => waiter.wait(),
            Joined::Leader(_) => panic!("a running flight is joined"),
        });
        let worker = spawn_follower(&group, 2, |g| g.try_work(&1, || Ok::<_, Fail>(5)));
        gate.open();
        assert_eq!(leader.join().unwrap().unwrap_err().0, "first");
        assert_eq!(waiter.join().unwrap().unwrap().unwrap(), 5);
        assert_eq!(worker.join().unwrap().unwrap(), 5);
        assert_stats!(group, { retries: 1, followers_abandoned: 0, followers_promoted: 1 });
        assert_quiet(&*group);

        // Only a waiter: nobody can rerun, so it gets the failure.
        let leader = gated_try_leader(&group, 2, &gate, Err(Fail("second".into())));
        let waiter = spawn_follower(&group, 3, |g| match g.join(&2) {
            Joined::Waiter(waiter) => waiter.wait(),
            Joined::Leader(_) => panic!("a running flight is joined"),
        });
        gate.open();
        assert_eq!(leader.join().unwrap().unwrap_err().0, "second");
        assert_eq!(waiter.join().unwrap().unwrap().unwrap_err().0, "second");
        assert_eq!(group.stats().retries, 1, "no retry without a candidate");
        assert_quiet(&*group);
    });
}

/// The followers moved off a replaced flight when the replacement is quick:
/// they must join it (or get its value), not each run their own function.
#[test]
fn moved_followers_do_not_each_run_their_own_function() {
    with_deadline("moved_herd", || {
        let mut own_runs = Vec::new();
        for _ in 0..5 {
            let group = Arc::new(Group::<u64, u64>::builder().max_flight_age(AGE).build());
            let old_gate = Arc::new(Gate::default());
            let old = gated_leader(&group, 1, &old_gate, 1);
            let (runs, movers) = counting_followers(&group, 1, 6, 3);
            age_past(AGE);
            // The replacement answers at once.
            assert_eq!(group.work(&1, || 2), 2);
            for mover in movers {
                mover.join().unwrap();
            }
            old_gate.open();
            assert_eq!(old.join().unwrap().value, 1);
            assert_quiet(&*group);
            own_runs.push(runs.load(Ordering::SeqCst));
        }
        assert!(
            own_runs.iter().all(|&runs| runs == 0),
            "moved followers (6 a round) ran their own function: {own_runs:?}"
        );
    });
}
