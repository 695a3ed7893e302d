//! User code that runs where the group might not expect it: a key's trait
//! code calling back into the group under its lock, `Drop`s that panic while
//! another panic is on its way, a key whose `Drop` panics, and the exact
//! accounting of every follower in each case.
//!
//! The cases that used to abort the process ("panic in a destructor during
//! cleanup") run in a child process (this test binary, re-executed for one
//! test), so an abort fails that test instead of killing the suite.

mod common;

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    BadCapture, ClonesLeft, blocked_leader, panic_message, quiet_expected_panics, spawn_follower,
    spawn_leader, wait_for_followers, with_deadline,
};
use sync_singleflight::{Group, LeaderPanicked, Stats};

fn catch<T>(f: impl FnOnce() -> T) -> thread::Result<T> {
    panic::catch_unwind(AssertUnwindSafe(f))
}

fn assert_accounted(stats: Stats) {
    assert_eq!(
        stats.followers_unaccounted(),
        0,
        "every follower ends in exactly one counter: {stats:?}"
    );
}

/// Runs `scenario` in a child process (this binary, filtered to `test`),
/// and fails if the child did not exit cleanly: an abort shows up here as a
/// signal instead of taking the whole suite down.
fn in_child_process(test: &str, scenario: impl FnOnce()) {
    const ROLE: &str = "SYNC_SINGLEFLIGHT_CHILD";
    if std::env::var(ROLE).as_deref() == Ok(test) {
        scenario();
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, test)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("re-run this test binary");
    let started = Instant::now();
    while child.try_wait().expect("poll the child").is_none() {
        if started.elapsed() > common::HANG {
            let _ = child.kill();
            panic!("the child process running {test} hung");
        }
        thread::sleep(Duration::from_millis(10));
    }
    let output = child
        .wait_with_output()
        .expect("collect the child's output");
    assert!(
        output.status.success(),
        "the child process running {test} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
}

// ---------------------------------------------------------------------
// 1. Key code that calls back into the group while it holds a lock.

static REENTRANT: LazyLock<Group<MeteredKey, u32>> = LazyLock::new(Group::new);

/// A key whose `Clone` or `Eq` calls a metrics hook on the group it is a
/// key of: exactly what would deadlock on a non-re-entrant shard lock.
#[derive(Debug)]
struct MeteredKey {
    id: u32,
    hook_on_clone: bool,
    hook_on_eq: bool,
}

impl MeteredKey {
    fn plain(id: u32) -> Self {
        MeteredKey {
            id,
            hook_on_clone: false,
            hook_on_eq: false,
        }
    }
}

impl Clone for MeteredKey {
    fn clone(&self) -> Self {
        if self.hook_on_clone {
            let _ = REENTRANT.in_flight();
        }
        MeteredKey::plain(self.id)
    }
}

impl PartialEq for MeteredKey {
    fn eq(&self, other: &Self) -> bool {
        if self.hook_on_eq || other.hook_on_eq {
            let _ = REENTRANT.stats();
        }
        self.id == other.id
    }
}

impl Eq for MeteredKey {}

impl Hash for MeteredKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

fn assert_reentry_panic(payload: &(dyn Any + Send)) {
    let message = panic_message(payload).unwrap_or_default();
    assert!(
        message.contains("called back into a group") && message.contains("deadlock"),
        "the panic names the problem: {message:?}"
    );
}

#[test]
fn a_key_whose_clone_calls_back_into_the_group_panics_instead_of_hanging() {
    quiet_expected_panics();
    with_deadline("reentrant_clone", || {
        let key = MeteredKey {
            id: 1,
            hook_on_clone: true,
            hook_on_eq: false,
        };
        // The hook calls into REENTRANT, a group other than the one the key
        // is used with: a call into any group from there would risk a lock
        // cycle, so it panics too. (A group of its own also keeps this test
        // apart from the other one using REENTRANT in parallel.)
        let group: Group<MeteredKey, u32> = Group::new();
        let payload = catch(|| group.work(&key, || 1)).unwrap_err();
        assert_reentry_panic(&*payload);
        // Nothing was added, and the group still works, for the same key too.
        assert_eq!(group.in_flight(), 0);
        assert_eq!(group.work(&MeteredKey::plain(1), || 2), 2);
        // Again, now that a landed flight left its slot vacant for the next
        // key to be cloned into: the re-entry is caught there too.
        let payload = catch(|| group.work(&key, || 1)).unwrap_err();
        assert_reentry_panic(&*payload);
        assert_eq!(group.in_flight(), 0);
        assert_eq!(group.work(&MeteredKey::plain(1), || 3), 3);
        // Outside the group's lock the same hook is fine.
        assert_eq!(key.clone().id, 1);
    });
}

#[test]
fn a_key_whose_eq_calls_back_into_the_group_panics_and_the_flight_goes_on() {
    quiet_expected_panics();
    with_deadline("reentrant_eq", || {
        let group: &'static Group<MeteredKey, u32> = &REENTRANT;
        let (release, released) = mpsc::channel::<()>();
        let leader = spawn_leader(&group, move |group, running| {
            group.work(&MeteredKey::plain(7), || {
                running();
                released.recv().unwrap();
                70
            })
        });
        let hooked = MeteredKey {
            id: 7,
            hook_on_clone: false,
            hook_on_eq: true,
        };
        // `Eq` runs only against a flight of the same hash: this one.
        let payload = catch(|| group.work(&hooked, || 0)).unwrap_err();
        assert_reentry_panic(&*payload);
        let payload = catch(|| group.forget(&hooked)).unwrap_err();
        assert_reentry_panic(&*payload);
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 70, "the leader never noticed");
        assert_eq!(group.in_flight(), 0);
    });
}

// ---------------------------------------------------------------------
// 2. A follower's closure panics on `Drop`, and so does the value.

/// A value whose `Drop` panics, even while another panic unwinds (which,
/// inside the group, would abort the process), once armed.
#[derive(Clone, Debug)]
struct Grenade {
    n: u32,
    armed: Arc<AtomicBool>,
}

impl Drop for Grenade {
    fn drop(&mut self) {
        if self.armed.load(Ordering::SeqCst) {
            panic!("expected-panic in V::drop");
        }
    }
}

#[test]
fn a_follower_whose_closure_and_value_both_panic_on_drop_does_not_abort() {
    in_child_process(
        "a_follower_whose_closure_and_value_both_panic_on_drop_does_not_abort",
        || {
            quiet_expected_panics();
            let armed = Arc::new(AtomicBool::new(true));
            let group = Arc::new(Group::<u64, Grenade>::new());
            let (leader, release) = blocked_leader(
                &group,
                1,
                Grenade {
                    n: 3,
                    armed: armed.clone(),
                },
            );
            let bad = spawn_follower(&group, 1, |group| {
                let capture = BadCapture;
                catch(|| {
                    group.work(&1, move || {
                        let _keep = &capture;
                        Grenade {
                            n: 0,
                            armed: Arc::new(AtomicBool::new(false)),
                        }
                    })
                })
                .map(std::mem::forget)
            });
            let good = spawn_follower(&group, 2, |group| {
                let got = group.work(&1, || unreachable!());
                let n = got.n;
                (n, catch(move || drop(got)).is_err())
            });
            release.send(()).unwrap();
            let led = leader.join().unwrap();
            assert_eq!(led.n, 3);
            assert!(catch(move || drop(led)).is_err(), "the leader's own drop");
            assert_eq!(good.join().unwrap(), (3, true));
            let payload = bad.join().unwrap().unwrap_err();
            assert_eq!(
                panic_message(&*payload).as_deref(),
                Some("expected-panic in F::drop"),
                "the closure's own panic, not the value's"
            );
            armed.store(false, Ordering::SeqCst);
            let stats = group.stats();
            assert_eq!(stats.follower_own_panics, 1, "counted once: {stats:?}");
            assert_eq!(stats.followers_served, 1);
            assert_accounted(stats);
            assert_eq!(group.in_flight(), 0);
        },
    );
}

#[test]
fn a_follower_whose_owned_key_panics_on_drop_is_counted_once() {
    quiet_expected_panics();
    with_deadline("owned_key_drop", || {
        let group = Arc::new(Group::<BombKey, u32>::new());
        let armed = Arc::new(AtomicBool::new(false));
        let (release, released) = mpsc::channel::<()>();
        let leader = spawn_leader(&group, {
            let armed = armed.clone();
            move |group, running| {
                group.work_owned(BombKey(5, armed), || {
                    running();
                    released.recv().unwrap();
                    50
                })
            }
        });
        let follower = {
            let armed = Arc::new(AtomicBool::new(true));
            spawn_follower(&group, 1, move |group| {
                catch(|| group.work_owned(BombKey(5, armed), || 0))
            })
        };
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 50);
        let payload = follower.join().unwrap().unwrap_err();
        assert_eq!(
            panic_message(&*payload).as_deref(),
            Some("expected-panic in K::drop")
        );
        let stats = group.stats();
        assert_eq!(stats.follower_own_panics, 1);
        assert_accounted(stats);
    });
}

// ---------------------------------------------------------------------
// 3. The leader's `V::clone` panics, and its value's `Drop` panics too.

/// A value whose first clone panics and whose `Drop` panics once armed.
#[derive(Debug)]
struct BrittleGrenade {
    clones_left: ClonesLeft,
    armed: Arc<AtomicBool>,
}

impl Clone for BrittleGrenade {
    fn clone(&self) -> Self {
        BrittleGrenade {
            clones_left: self.clones_left.take(),
            armed: self.armed.clone(),
        }
    }
}

impl Drop for BrittleGrenade {
    fn drop(&mut self) {
        if self.armed.load(Ordering::SeqCst) {
            panic!("expected-panic in V::drop");
        }
    }
}

#[test]
fn a_leader_clone_panic_keeps_its_payload_even_if_the_value_panics_on_drop() {
    in_child_process(
        "a_leader_clone_panic_keeps_its_payload_even_if_the_value_panics_on_drop",
        || {
            quiet_expected_panics();
            const FOLLOWERS: usize = 2;
            let armed = Arc::new(AtomicBool::new(true));
            let group = Arc::new(Group::<u64, BrittleGrenade>::new());
            let leader = spawn_leader(&group, {
                let armed = armed.clone();
                move |group, running| {
                    catch(|| {
                        group.work(&1, || {
                            running();
                            wait_for_followers(group, FOLLOWERS as u64);
                            BrittleGrenade {
                                clones_left: ClonesLeft::new(1),
                                armed,
                            }
                        })
                    })
                    .map(std::mem::forget)
                }
            });
            let followers: Vec<_> = (0..FOLLOWERS)
                .map(|_| {
                    let group = group.clone();
                    thread::spawn(move || {
                        catch(|| group.work(&1, || unreachable!())).map(std::mem::forget)
                    })
                })
                .collect();
            let payload = leader.join().unwrap().unwrap_err();
            assert_eq!(
                panic_message(&*payload).as_deref(),
                Some("expected-panic in V::clone"),
                "the clone's payload reaches the leader, not the drop's"
            );
            for follower in followers {
                let payload = follower.join().unwrap().unwrap_err();
                let why = payload
                    .downcast_ref::<LeaderPanicked>()
                    .expect("followers unwind with LeaderPanicked");
                assert_eq!(why.message(), Some("expected-panic in V::clone"));
            }
            armed.store(false, Ordering::SeqCst);
            let stats = group.stats();
            assert_eq!(stats.leader_panics, 1, "counted as the followers saw it");
            assert_eq!(stats.follower_panics, FOLLOWERS as u64);
            assert_accounted(stats);
            assert_eq!(group.in_flight(), 0);
        },
    );
}

// ---------------------------------------------------------------------
// 4. A key whose `Drop` panics never surfaces in an unrelated call.

/// A key whose `Drop` panics when armed.
#[derive(Debug)]
struct BombKey(u32, Arc<AtomicBool>);

impl Clone for BombKey {
    fn clone(&self) -> Self {
        BombKey(self.0, self.1.clone())
    }
}

impl PartialEq for BombKey {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for BombKey {}

impl Hash for BombKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Drop for BombKey {
    fn drop(&mut self) {
        if self.1.load(Ordering::SeqCst) && !thread::panicking() {
            panic!("expected-panic in K::drop");
        }
    }
}

#[test]
fn a_keys_panicking_drop_stays_with_the_call_that_made_the_copy() {
    quiet_expected_panics();
    with_deadline("key_drop", || {
        // One shard: every key shares it, as the spare key used to.
        let group: Group<BombKey, u32> = Group::builder().shards(1).build();
        let armed = Arc::new(AtomicBool::new(true));
        let bomb = BombKey(1, armed.clone());
        // The group's copy of the key is dropped by the call that made it.
        let payload = catch(|| group.work(&bomb, || 10)).unwrap_err();
        assert_eq!(
            panic_message(&*payload).as_deref(),
            Some("expected-panic in K::drop")
        );
        // Unrelated calls on the same shard, from this thread and another,
        // never see it.
        let quiet = Arc::new(AtomicBool::new(false));
        for id in 2..50 {
            assert_eq!(group.work(&BombKey(id, quiet.clone()), || id), id);
        }
        thread::scope(|s| {
            s.spawn(|| assert_eq!(group.work(&BombKey(99, quiet.clone()), || 9), 9));
        });
        // A leader whose function panics keeps its own payload, even when its
        // key copy's `Drop` panics too.
        let payload = catch(|| group.work(&bomb, || panic!("expected-panic in f"))).unwrap_err();
        assert_eq!(
            panic_message(&*payload).as_deref(),
            Some("expected-panic in f")
        );
        armed.store(false, Ordering::SeqCst);
        assert_eq!(group.in_flight(), 0);
        let stats = group.stats();
        assert_eq!(stats.leader_panics, 1);
        assert_accounted(stats);
    });
}

#[test]
fn string_keys_still_recycle_a_spare_buffer() {
    // Only std buffers are kept between flights; behaviour is unchanged.
    let group: Group<String, usize> = Group::builder().shards(1).build();
    for len in 0..100 {
        let key = "k".repeat(len);
        assert_eq!(group.work(key.as_str(), || len), len);
    }
    assert_eq!(group.in_flight(), 0);
}

// ---------------------------------------------------------------------
// 5. `Outcome::callers` and the stats identity when a follower's clone panics.

/// A value whose clone numbered `panicking` (counting from 1) panics.
#[derive(Debug)]
struct Fragile {
    clones_left: ClonesLeft,
}

impl Clone for Fragile {
    fn clone(&self) -> Self {
        Fragile {
            clones_left: self.clones_left.take(),
        }
    }
}

#[test]
fn callers_counts_every_follower_the_value_was_handed_to() {
    quiet_expected_panics();
    with_deadline("callers_with_clone_panic", || {
        const FOLLOWERS: usize = 3;
        let group = Arc::new(Group::<u64, Fragile>::new());
        let leader = spawn_leader(&group, |group, running| {
            group.work_with_role(&1, || {
                running();
                wait_for_followers(group, FOLLOWERS as u64);
                // Clone 1 is the leader's copy; clone 2 the first follower's.
                Fragile {
                    clones_left: ClonesLeft::new(2),
                }
            })
        });
        let followers: Vec<_> = (0..FOLLOWERS)
            .map(|_| {
                let group = group.clone();
                thread::spawn(move || catch(|| group.work_with_role(&1, || unreachable!())))
            })
            .collect();
        let led = leader.join().unwrap();
        let results: Vec<_> = followers.into_iter().map(|f| f.join().unwrap()).collect();
        let served: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(served.len(), FOLLOWERS - 1);
        // Documented: the leader plus every follower still waiting when the
        // value landed, including one whose own clone then panicked.
        assert_eq!(led.callers, 1 + FOLLOWERS);
        assert!(served.iter().all(|o| o.callers == 1 + FOLLOWERS));
        let stats = group.stats();
        assert_eq!(stats.follower_own_panics, 1);
        assert_eq!(stats.followers_served, FOLLOWERS as u64 - 1);
        assert_accounted(stats);
    });
}

// ---------------------------------------------------------------------
// Mutations the suite must catch without loom.

/// A value whose `clone` blocks until a moment has passed, holding the
/// flight's lock meanwhile (a leader clones its followers' copy under it).
#[derive(Debug)]
struct SlowClone {
    until: Instant,
}

impl Clone for SlowClone {
    fn clone(&self) -> Self {
        while Instant::now() < self.until {
            thread::sleep(Duration::from_millis(1));
        }
        SlowClone { until: self.until }
    }
}

// A follower whose deadline passes while the leader is landing the flight
// must still get the value: a timeout only counts if the flight is still
// running when the follower looks (a wake-up after the deadline is not
// enough). The leader holds the flight's lock, cloning, past the follower's
// deadline, so the follower wakes timed out and finds the flight landed.
#[test]
fn a_deadline_that_passes_while_the_flight_lands_still_gets_the_value() {
    with_deadline("timeout_vs_landed", || {
        const BUDGET: Duration = Duration::from_millis(150);
        let group = Arc::new(Group::<u64, SlowClone>::new());
        let start = Instant::now();
        let (leader, release) = blocked_leader(
            &group,
            1,
            SlowClone {
                until: start + BUDGET + Duration::from_millis(150),
            },
        );
        let follower = spawn_follower(&group, 1, |group| {
            group.work_timeout(&1, BUDGET, || unreachable!())
        });
        // Upper bound for the follower to park; it is not needed for the
        // assertion to hold, only for the race to be the interesting one.
        thread::sleep(Duration::from_millis(20));
        release.send(()).unwrap();
        leader.join().unwrap();
        assert!(
            follower.join().unwrap().is_ok(),
            "the flight landed before the follower looked: it is served"
        );
        let stats = group.stats();
        assert_eq!((stats.followers_served, stats.follower_timeouts), (1, 0));
        assert_accounted(stats);
    });
}

#[test]
fn a_served_work_timeout_follower_is_counted_once() {
    with_deadline("work_timeout_served_once", || {
        let group = Arc::new(Group::<u64, u32>::new());
        let (leader, release) = blocked_leader(&group, 1, 5);
        let followers: Vec<_> = (1..=3)
            .map(|n| {
                spawn_follower(&group, n, |group| {
                    group.work_timeout(&1, Duration::from_secs(60), || 0)
                })
            })
            .collect();
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 5);
        for follower in followers {
            assert_eq!(follower.join().unwrap(), Ok(5));
        }
        let stats = group.stats();
        assert_eq!(stats.followers_served, 3, "{stats:?}");
        assert_eq!(stats.follower_timeouts, 0);
        assert_accounted(stats);
    });
}

#[test]
fn in_flight_never_counts_a_forgotten_flight() {
    with_deadline("in_flight_forgotten", || {
        let group = Arc::new(Group::<u64, u32>::new());
        let (leader, release) = blocked_leader(&group, 1, 5);
        assert_eq!(group.in_flight(), 1);
        assert!(group.forget(&1));
        assert_eq!(group.in_flight(), 0, "forgotten, though still running");
        let (second, release_second) = blocked_leader(&group, 1, 6);
        assert_eq!(group.in_flight(), 1, "only the new flight");
        release.send(()).unwrap();
        release_second.send(()).unwrap();
        assert_eq!((leader.join().unwrap(), second.join().unwrap()), (5, 6));
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn counters_hold_after_every_hostile_case_in_one_group() {
    quiet_expected_panics();
    with_deadline("identity_mix", || {
        let group = Arc::new(Group::<u64, u32>::new());
        let served = Arc::new(AtomicUsize::new(0));
        // A timeout, a leader panic with a follower, and a closure drop panic.
        let (leader, release) = blocked_leader(&group, 1, 1);
        let impatient = spawn_follower(&group, 1, |group| {
            group.work_timeout(&1, Duration::ZERO, || 0)
        });
        assert!(impatient.join().unwrap().is_err());
        let bad = spawn_follower(&group, 2, |group| {
            let capture = BadCapture;
            catch(|| {
                group.work(&1, move || {
                    let _keep = &capture;
                    0
                })
            })
        });
        release.send(()).unwrap();
        leader.join().unwrap();
        assert!(bad.join().unwrap().is_err());
        let panicking = spawn_leader(&group, |group, running| {
            catch(|| {
                group.work(&2, || {
                    running();
                    wait_for_followers(group, 3);
                    panic!("expected-panic in f")
                })
            })
        });
        let follower = {
            let (group, served) = (group.clone(), served.clone());
            thread::spawn(move || {
                let got = catch(|| group.work(&2, || 0));
                served.fetch_add(usize::from(got.is_ok()), Ordering::SeqCst);
                got
            })
        };
        assert!(panicking.join().unwrap().is_err());
        assert!(follower.join().unwrap().is_err());
        let stats = group.stats();
        assert_eq!(
            (
                stats.follower_timeouts,
                stats.follower_own_panics,
                stats.follower_panics,
                stats.leader_panics
            ),
            (1, 1, 1, 1),
            "{stats:?}"
        );
        assert_eq!(served.load(Ordering::SeqCst), 0);
        assert_accounted(stats);
    });
}
