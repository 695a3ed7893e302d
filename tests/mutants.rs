//! Tests written for mutants that cargo-mutants found the other suites let
//! through (`scripts/mutants.sh`). Each names the mutation it catches; the
//! mutants the suites cannot catch because they change nothing observable
//! are listed, with the reason, in the issue note.

mod common;

use std::hash::{BuildHasher, Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use common::{assert_quiet, blocked_leader, quiet_expected_panics, spawn_follower, with_deadline};
use sync_singleflight::{Group, Joined, WaitError};

/// An upper bound on how long a call that must not block may take; only
/// reached when the code under test is broken.
const PROMPT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------- shards

/// Hashes a [`ShardKey`] to its `id`, so a test chooses the shard.
#[derive(Clone, Copy, Default)]
struct IdHash;

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("ShardKey hashes with write_u64 only")
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// A key whose `Eq` (which a group runs under its shard lock) blocks until
/// the test lets it go, when the caller's copy carries a gate.
#[derive(Clone)]
struct ShardKey {
    id: u64,
    gate: Option<Arc<EqGate>>,
}

struct EqGate {
    entered: std::sync::Mutex<mpsc::Sender<()>>,
    release: std::sync::Mutex<mpsc::Receiver<()>>,
}

impl ShardKey {
    fn plain(id: u64) -> Self {
        ShardKey { id, gate: None }
    }
}

impl Hash for ShardKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.id);
    }
}

impl PartialEq for ShardKey {
    fn eq(&self, other: &Self) -> bool {
        for gate in [&self.gate, &other.gate].into_iter().flatten() {
            gate.entered.lock().unwrap().send(()).unwrap();
            gate.release.lock().unwrap().recv().unwrap();
        }
        self.id == other.id
    }
}

impl Eq for ShardKey {}

/// Hashes at the bottom and the middle of the range: shard 0 and shard
/// count/2 by the multiply-shift the map uses, for any count of 2 or more.
const LOW: u64 = 0;
const MIDDLE: u64 = 1 << 63;

// A key's `Eq` blocked under one shard's lock must not hold up a key of
// another shard. Catches, in `ShardedMap::shard`, `>>` → `<<`, `*` → `+`
// and `*` → `/` (each sends both hashes to shard 0), and
// `default_shard_count` → 1.
#[test]
fn a_key_blocked_under_one_shard_lock_does_not_hold_up_another_shard() {
    with_deadline("shards_apart", || {
        let group = Arc::new(Group::<ShardKey, u64, IdHash>::with_hasher(IdHash));
        let (leading, is_leading) = mpsc::channel();
        let (release_leader, leader_released) = mpsc::channel::<()>();
        let leader = {
            let group = Arc::clone(&group);
            thread::spawn(move || {
                group.work(&ShardKey::plain(LOW), || {
                    leading.send(()).unwrap();
                    leader_released.recv().unwrap();
                    1
                })
            })
        };
        is_leading.recv().unwrap();
        // A second caller for LOW finds the flight and runs `Eq` on it,
        // which blocks with shard(LOW)'s lock held.
        let (entered, in_eq) = mpsc::channel();
        let (release_eq, released) = mpsc::channel();
        let gate = Arc::new(EqGate {
            entered: std::sync::Mutex::new(entered),
            release: std::sync::Mutex::new(released),
        });
        let blocked = {
            let (group, gate) = (Arc::clone(&group), Some(gate));
            thread::spawn(move || group.work(&ShardKey { id: LOW, gate }, || unreachable!()))
        };
        in_eq.recv().unwrap();
        let (done, finished) = mpsc::channel();
        let other = {
            let group = Arc::clone(&group);
            thread::spawn(move || {
                let _ = done.send(group.work(&ShardKey::plain(MIDDLE), || 2));
            })
        };
        let other_shard = finished.recv_timeout(PROMPT);
        release_eq.send(()).unwrap();
        release_leader.send(()).unwrap();
        assert_eq!((leader.join().unwrap(), blocked.join().unwrap()), (1, 1));
        other.join().unwrap();
        assert_eq!(
            other_shard,
            Ok(2),
            "a key of another shard waited for a lock it does not share"
        );
    });
}

// The documented default: four shards per core, rounded up to a power of
// two, between 16 and 1024. Catches `default_shard_count` → 1, and on
// machines with more than four cores its `*` → `+` and `*` → `/` (with four
// or fewer, both still give 16).
#[test]
fn the_default_shard_count_is_four_per_core_within_bounds() {
    let cores = thread::available_parallelism().map_or(4, std::num::NonZeroUsize::get);
    let expected = (cores * 4).next_power_of_two().clamp(16, 1024);
    let group = Group::<u64, u64>::new();
    assert!(
        format!("{group:?}").contains(&format!("shards: {expected}")),
        "{cores} cores: {group:?}"
    );
}

// ------------------------------------------------------- second panics

/// A panic payload whose `Drop` says it ran.
struct NoisyPayload(Arc<AtomicBool>);

impl Drop for NoisyPayload {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A key whose `Drop` panics with a [`NoisyPayload`].
struct PanickyKey {
    id: u64,
    payload_dropped: Arc<AtomicBool>,
}

impl Hash for PanickyKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl PartialEq for PanickyKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for PanickyKey {}

impl Drop for PanickyKey {
    fn drop(&mut self) {
        panic::panic_any(NoisyPayload(Arc::clone(&self.payload_dropped)));
    }
}

// A leader whose function panics and whose key's `Drop` panics too resumes
// the function's payload; the key's payload is discarded without running
// its `Drop` (user code, which could panic a third time). Catches
// `forget_panic` → `()`.
#[test]
fn a_second_panic_payload_is_forgotten_not_dropped() {
    quiet_expected_panics();
    with_deadline("second_payload", || {
        let group = Group::<PanickyKey, u32>::new();
        let payload_dropped = Arc::new(AtomicBool::new(false));
        let key = PanickyKey {
            id: 1,
            payload_dropped: Arc::clone(&payload_dropped),
        };
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            group.work_owned(key, || panic!("expected-panic: the function"))
        }));
        let payload = caught.expect_err("the function panicked");
        assert_eq!(
            common::panic_message(&*payload).as_deref(),
            Some("expected-panic: the function"),
            "the first panic is the one resumed"
        );
        assert!(
            !payload_dropped.load(Ordering::SeqCst),
            "the key's panic payload was dropped (its Drop is user code)"
        );
        assert_eq!(group.stats().leader_panics, 1);
        assert_eq!(group.in_flight(), 0);
    });
}

// ------------------------------------------------------------- Debug

// Catches `<impl Debug for LeaderGuard>::fmt` → `Ok(Default::default())`
// (which prints nothing).
#[test]
fn a_leader_guard_shows_its_type_in_debug_output() {
    let group = Group::<u64, u64>::new();
    let Joined::Leader(guard) = group.join(&1) else {
        unreachable!("nobody else runs key 1");
    };
    assert!(format!("{guard:?}").starts_with("LeaderGuard"), "{guard:?}");
    assert_eq!(guard.fill(1).value, 1);
}

// ------------------------------------------------------- abandonment

// A guard dropped unfilled with only `Waiter`s on its flight (no follower
// with a function of its own to elect) tells them `Abandoned` at once.
// Catches `Call::abandon_waiters` → `()` (the waiters would wait forever).
#[test]
fn waiters_of_a_guard_dropped_unfilled_with_nobody_to_elect_are_told_abandoned() {
    with_deadline("waiters_abandoned", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let Joined::Leader(guard) = group.join(&1) else {
            unreachable!("nobody else runs key 1");
        };
        let waiters: Vec<_> = (1..=2)
            .map(|joined| {
                spawn_follower(&group, joined, |group| match group.join(&1) {
                    Joined::Waiter(mut waiter) => waiter.wait_timeout(PROMPT),
                    Joined::Leader(_) => panic!("a running flight is joined, not led"),
                })
            })
            .collect();
        drop(guard);
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Err(WaitError::Abandoned));
        }
        let stats = group.stats();
        assert_eq!(
            (stats.leader_abandons, stats.followers_abandoned),
            (1, 2),
            "{stats:?}"
        );
        assert_quiet(&*group);
    });
}

// When a guard is dropped unfilled, the one `work` follower is elected to
// rerun the flight; `Waiter`s woken by the same election must go back to
// waiting for that rerun: never take the lead, collect a result that is not
// there, or count the wake-up as a timeout. Catches, in `Call::wait`, the
// match guard `candidate` → `true` and the deleted `Phase::Elect` arm (a
// waiter panics on `unreachable!`), and `timed_out && waiting` → `||` (a
// waiter with time left reports a timeout). A waiter whose deadline has
// passed during the election times out at once; catches the deleted
// `Phase::Elect => !candidate` arm and its deleted `!` (the waiter spins
// holding the flight's lock, and nobody can take the lead).
//
// Which thread the election wakes first is the scheduler's choice, so each
// round parks several waiters beside the one candidate and keeps one more
// polling with a zero budget, and the rounds repeat: the test never fails on
// correct code, and catches those mutants unless every waiter of every
// round lost the race to the candidate.
#[test]
fn waiters_woken_by_an_election_keep_waiting_for_the_rerun() {
    const WAITERS: u64 = 6;
    with_deadline("waiters_and_election", || {
        for round in 0..20 {
            let group = Arc::new(Group::<u64, u64>::new());
            let Joined::Leader(guard) = group.join(&1) else {
                unreachable!("nobody else runs key 1");
            };
            let candidate = spawn_follower(&group, 1, |group| group.work(&1, || 7));
            let waiters: Vec<_> = (2..=WAITERS + 1)
                .map(|joined| {
                    spawn_follower(&group, joined, move |group| match group.join(&1) {
                        Joined::Waiter(waiter) if joined % 2 == 0 => waiter.wait(),
                        Joined::Waiter(mut waiter) => waiter.wait_timeout(PROMPT),
                        Joined::Leader(_) => panic!("a running flight is joined, not led"),
                    })
                })
                .collect();
            // Polls through the election: a zero budget is a timeout until
            // the rerun's value is there.
            let polling = spawn_follower(&group, WAITERS + 2, |group| {
                let Joined::Waiter(mut waiter) = group.join(&1) else {
                    panic!("a running flight is joined, not led");
                };
                loop {
                    match waiter.wait_timeout(Duration::ZERO) {
                        Err(WaitError::Timeout) => std::hint::spin_loop(),
                        other => return other,
                    }
                }
            });
            drop(guard);
            for waiter in waiters {
                assert_eq!(
                    waiter.join().expect("a waiter panicked"),
                    Ok(7),
                    "round {round}"
                );
            }
            assert_eq!(candidate.join().unwrap(), 7, "round {round}");
            assert_eq!(polling.join().expect("the poller panicked"), Ok(7));
            let stats = group.stats();
            assert_eq!(
                (stats.followers_promoted, stats.followers_served),
                (1, WAITERS + 1),
                "round {round}: {stats:?}"
            );
            assert_quiet(&*group);
        }
    });
}

// ------------------------------------------------------------ copies

fn waiter_of<K, V>(joined: Joined<'_, K, V>) -> sync_singleflight::Waiter<'_, K, V> {
    match joined {
        Joined::Waiter(waiter) => waiter,
        Joined::Leader(_) => panic!("a running flight is joined, not led"),
    }
}

/// A value that counts its clones (in a counter shared by every copy).
#[derive(Debug)]
struct Counted {
    value: u64,
    clones: Arc<std::sync::atomic::AtomicUsize>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Counted {
            value: self.value,
            clones: Arc::clone(&self.clones),
        }
    }
}

// A waiter dropped after its flight landed gives up its share, so the last
// one to collect takes the stored copy instead of cloning it: one clone in
// all, the leader's for its followers. Catches, in `Call::depart`,
// `waiting -= 1` → `+=` and → `/=` (the last collector would clone, and the
// stored copy would be dropped inside the group).
#[test]
fn a_waiter_dropped_after_landing_leaves_the_stored_copy_to_the_last_one() {
    with_deadline("late_departure", || {
        let clones = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let group = Arc::new(Group::<u64, Counted>::new());
        let value = Counted {
            value: 5,
            clones: Arc::clone(&clones),
        };
        let (leader, release) = blocked_leader(&group, 1, value);
        let (dropped, kept) = (waiter_of(group.join(&1)), waiter_of(group.join(&1)));
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap().value, 5);
        assert_eq!(clones.load(Ordering::SeqCst), 1, "the followers' copy");
        drop(dropped);
        assert_eq!(kept.wait().unwrap().value, 5);
        assert_eq!(
            clones.load(Ordering::SeqCst),
            1,
            "the last waiter took the stored copy"
        );
        let stats = group.stats();
        assert_eq!(
            (stats.followers_served, stats.follower_timeouts),
            (1, 1),
            "{stats:?}"
        );
        assert_quiet(&*group);
    });
}
