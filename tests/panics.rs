//! Panics anywhere in user code: the leader's function (Go's TestPanicDo),
//! recursion, and hostile `Hash`, `Eq`, `Clone` and `Drop`. Whoever hits the
//! panic panics; nobody else hangs, no entry leaks, the group stays usable.

mod common;

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use common::{
    BadCapture, ClonesLeft, blocked_leader, panic_message, quiet_expected_panics, spawn_follower,
    spawn_leader, wait_for_followers, with_deadline,
};
use sync_singleflight::{Group, LeaderPanicked};

type Caught<T> = thread::Result<T>;

fn catch<T>(f: impl FnOnce() -> T) -> Caught<T> {
    panic::catch_unwind(AssertUnwindSafe(f))
}

/// Spawns `n` followers of `key` that each catch what they get.
fn spawn_followers<K, V>(
    group: &Arc<Group<K, V>>,
    key: K,
    n: usize,
) -> Vec<thread::JoinHandle<Caught<V>>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    (0..n)
        .map(|_| {
            let (group, key) = (group.clone(), key.clone());
            thread::spawn(move || {
                catch(|| group.work(&key, || panic!("a follower's f must not run")))
            })
        })
        .collect()
}

/// Starts a leader for `key` whose function waits until `followers`
/// followers have joined its flight and then runs `finish`; the leader's
/// result (value or panic) is caught. Returns once the function is running.
fn leader_awaiting<K, V>(
    group: &Arc<Group<K, V>>,
    key: K,
    followers: usize,
    finish: impl FnOnce(&Group<K, V>) -> V + Send + 'static,
) -> thread::JoinHandle<Caught<V>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    spawn_leader(group, move |group, running| {
        catch(|| {
            group.work(&key, || {
                running();
                wait_for_followers(group, followers as u64);
                finish(group)
            })
        })
    })
}

fn leader_panic_of(payload: &(dyn Any + Send)) -> &LeaderPanicked {
    payload
        .downcast_ref::<LeaderPanicked>()
        .expect("followers unwind with LeaderPanicked")
}

// Go: TestPanicDo. Every caller sees the panic; nothing hangs.
#[test]
fn every_caller_sees_the_leaders_panic() {
    quiet_expected_panics();
    with_deadline("panic_do", || {
        const FOLLOWERS: usize = 4;
        let group = Arc::new(Group::<String, u32>::new());
        let leader = leader_awaiting(&group, "key".to_string(), FOLLOWERS, move |_| {
            panic!("expected-panic: invalid memory address")
        });
        let followers = spawn_followers(&group, "key".to_string(), FOLLOWERS);

        let leader_payload = leader.join().unwrap().expect_err("the leader panics");
        assert_eq!(
            panic_message(&*leader_payload).as_deref(),
            Some("expected-panic: invalid memory address"),
            "the leader keeps its original payload"
        );
        for follower in followers {
            let payload = follower.join().unwrap().expect_err("each follower panics");
            let why = leader_panic_of(&*payload);
            assert_eq!(
                why.message(),
                Some("expected-panic: invalid memory address")
            );
        }
        assert_eq!(group.in_flight(), 0);
        let stats = group.stats();
        assert_eq!(
            (stats.leader_panics, stats.follower_panics),
            (1, FOLLOWERS as u64)
        );
        assert_eq!(group.work("key", || 2), 2, "the group stays usable");
    });
}

#[derive(Debug, PartialEq)]
struct Code(u32);

#[test]
fn a_custom_payload_reaches_the_leader_intact() {
    quiet_expected_panics();
    with_deadline("custom_payload", || {
        let group = Arc::new(Group::<u64, u32>::new());
        let leader = leader_awaiting(&group, 1, 1, move |_| panic::panic_any(Code(7)));
        let follower = spawn_followers(&group, 1, 1).pop().unwrap();
        let payload = leader.join().unwrap().unwrap_err();
        assert_eq!(payload.downcast_ref::<Code>(), Some(&Code(7)));
        let payload = follower.join().unwrap().unwrap_err();
        assert_eq!(leader_panic_of(&*payload).message(), None);
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn a_lone_leader_panic_leaves_nothing_behind() {
    quiet_expected_panics();
    let group: Group<u64, u32> = Group::new();
    for _ in 0..3 {
        let result = catch(|| group.work(&1, || panic!("expected-panic alone")));
        assert!(result.is_err());
        assert_eq!(group.in_flight(), 0);
    }
    assert_eq!(group.stats().leader_panics, 3);
    assert_eq!(group.work(&1, || 4), 4);
}

#[test]
fn a_recursive_call_on_the_same_key_panics_instead_of_deadlocking() {
    quiet_expected_panics();
    with_deadline("recursion_same_key", || {
        let group: Group<String, u32> = Group::new();
        let payload = catch(|| group.work("k", || group.work("k", || 1))).unwrap_err();
        let message = panic_message(&*payload).expect("a message");
        assert!(message.contains("recursive"), "{message}");
        assert_eq!(group.in_flight(), 0);
        // work_timeout must not wait either, not even for a zero timeout.
        let payload = catch(|| {
            group.work("k", || {
                group
                    .work_timeout("k", std::time::Duration::from_secs(3600), || 1)
                    .unwrap_or(0)
            })
        })
        .unwrap_err();
        assert!(panic_message(&*payload).unwrap().contains("recursive"));
        assert_eq!(group.in_flight(), 0);
        assert_eq!(group.work("k", || 9), 9);
    });
}

#[test]
fn a_cycle_through_other_keys_on_one_thread_panics() {
    quiet_expected_panics();
    with_deadline("recursion_cycle", || {
        let group: Group<u64, u64> = Group::new();
        let payload = catch(|| {
            group.work(&1, || {
                group.work(&2, || group.work(&3, || group.work(&1, || 0)))
            })
        })
        .unwrap_err();
        assert!(panic_message(&*payload).unwrap().contains("recursive"));
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn followers_of_a_recursive_leader_learn_why() {
    quiet_expected_panics();
    with_deadline("recursion_followers", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let leader = leader_awaiting(&group, 1, 1, move |group| group.work(&1, || 0));
        let follower = spawn_followers(&group, 1, 1).pop().unwrap();
        assert!(leader.join().unwrap().is_err());
        let payload = follower.join().unwrap().unwrap_err();
        assert!(
            leader_panic_of(&*payload)
                .message()
                .unwrap()
                .contains("recursive")
        );
        assert_eq!(group.in_flight(), 0);
    });
}

/// A key whose traits panic on demand. `Hash` and `Eq` look only at `id`.
#[derive(Debug)]
struct HostileKey {
    id: u32,
    hash_panics: bool,
    eq_panics: bool,
    clone_panics: bool,
}

impl HostileKey {
    fn plain(id: u32) -> Self {
        HostileKey {
            id,
            hash_panics: false,
            eq_panics: false,
            clone_panics: false,
        }
    }
}

impl Hash for HostileKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        assert!(!self.hash_panics, "expected-panic in Hash");
        self.id.hash(state);
    }
}

impl PartialEq for HostileKey {
    fn eq(&self, other: &Self) -> bool {
        assert!(!(self.eq_panics || other.eq_panics), "expected-panic in Eq");
        self.id == other.id
    }
}

impl Eq for HostileKey {}

impl Clone for HostileKey {
    fn clone(&self) -> Self {
        assert!(!self.clone_panics, "expected-panic in Clone");
        HostileKey::plain(self.id)
    }
}

#[test]
fn panicking_key_traits_hurt_only_their_caller() {
    quiet_expected_panics();
    with_deadline("hostile_keys", || {
        let group = Arc::new(Group::<HostileKey, u32>::new());
        let (leader, release) = blocked_leader(&group, HostileKey::plain(1), 10);

        let hash_panics = HostileKey {
            hash_panics: true,
            ..HostileKey::plain(1)
        };
        assert!(catch(|| group.work(&hash_panics, || 0)).is_err());
        // Same id, so the hashes match and Eq runs against the live flight.
        let eq_panics = HostileKey {
            eq_panics: true,
            ..HostileKey::plain(1)
        };
        assert!(catch(|| group.work(&eq_panics, || 0)).is_err());
        assert!(catch(|| group.forget(&eq_panics)).is_err());
        // A new id makes this caller a leader, which clones the key.
        let clone_panics = HostileKey {
            clone_panics: true,
            ..HostileKey::plain(2)
        };
        assert!(catch(|| group.work(&clone_panics, || 0)).is_err());
        assert_eq!(group.in_flight(), 1, "only the blocked flight is left");

        let follower = spawn_follower(&group, 1, move |group| {
            group.work(&HostileKey::plain(1), || 0)
        });
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 10);
        assert_eq!(follower.join().unwrap(), 10);
        assert_eq!(group.in_flight(), 0);
        assert_eq!(group.work(&HostileKey::plain(2), || 20), 20);
        // That flight's slot is now vacant (the key has no drop glue): a
        // clone that panics while written over it leaves it vacant, and the
        // next leader uses it.
        assert!(catch(|| group.work(&clone_panics, || 0)).is_err());
        assert_eq!(group.in_flight(), 0);
        assert_eq!(group.work(&HostileKey::plain(3), || 30), 30);
        assert_eq!(group.stats().leader_runs, 3);
    });
}

/// A value whose `clone` panics when a shared countdown reaches zero.
#[derive(Debug)]
struct Fragile {
    n: u32,
    clones_left: ClonesLeft,
}

impl Clone for Fragile {
    fn clone(&self) -> Self {
        Fragile {
            n: self.n,
            clones_left: self.clones_left.take(),
        }
    }
}

/// Runs one flight of a `Fragile` value with `followers` followers, where
/// the clone numbered `panicking_clone` (1 is the leader's copy for its
/// followers) panics. Returns what the leader and each follower got.
/// What the leader and each follower of a fragile flight got.
type FragileFlight = (
    Caught<Fragile>,
    Vec<Caught<Fragile>>,
    Arc<Group<u64, Fragile>>,
);

fn fragile_flight(followers: usize, panicking_clone: isize) -> FragileFlight {
    let group = Arc::new(Group::<u64, Fragile>::new());
    let leader = leader_awaiting(&group, 1, followers, move |_| Fragile {
        n: 5,
        clones_left: ClonesLeft::new(panicking_clone),
    });
    let handles = spawn_followers(&group, 1, followers);
    let leader = leader.join().unwrap();
    let followers = handles.into_iter().map(|h| h.join().unwrap()).collect();
    (leader, followers, group)
}

#[test]
fn a_panicking_clone_in_a_follower_hurts_only_that_follower() {
    quiet_expected_panics();
    with_deadline("follower_clone_panics", || {
        // Clone 1 is the leader's copy; clone 2 is the first follower's.
        let (leader, followers, group) = fragile_flight(3, 2);
        assert_eq!(leader.unwrap().n, 5);
        let (ok, failed): (Vec<_>, Vec<_>) = followers.into_iter().partition(Result::is_ok);
        assert_eq!(ok.len(), 2, "the other followers still get the value");
        assert!(ok.iter().all(|got| got.as_ref().unwrap().n == 5));
        let payload = failed.into_iter().next().unwrap().unwrap_err();
        assert_eq!(
            panic_message(&*payload).as_deref(),
            Some("expected-panic in V::clone")
        );
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn a_panicking_clone_in_the_leader_is_a_leader_panic() {
    quiet_expected_panics();
    with_deadline("leader_clone_panics", || {
        let (leader, followers, group) = fragile_flight(2, 1);
        let payload = leader.unwrap_err();
        assert_eq!(
            panic_message(&*payload).as_deref(),
            Some("expected-panic in V::clone")
        );
        for follower in followers {
            let payload = follower.unwrap_err();
            assert_eq!(
                leader_panic_of(&*payload).message(),
                Some("expected-panic in V::clone")
            );
        }
        assert_eq!(group.in_flight(), 0);
        assert_eq!(group.stats().leader_panics, 1);
    });
}

/// A value whose `Drop` panics once armed.
#[derive(Clone, Debug)]
struct Grenade {
    n: u32,
    armed: Arc<AtomicBool>,
}

impl Drop for Grenade {
    fn drop(&mut self) {
        if self.armed.load(Ordering::SeqCst) && !thread::panicking() {
            panic!("expected-panic in V::drop");
        }
    }
}

#[test]
fn the_group_never_drops_a_value_itself() {
    quiet_expected_panics();
    with_deadline("drop_panics", || {
        const FOLLOWERS: usize = 3;
        let armed = Arc::new(AtomicBool::new(true));
        let group = Arc::new(Group::<u64, Grenade>::new());
        let leader = spawn_leader(&group, {
            let armed = armed.clone();
            move |group, running| {
                let got = group.work(&1, || {
                    running();
                    wait_for_followers(group, FOLLOWERS as u64);
                    Grenade { n: 1, armed }
                });
                // Dropping is the user's business: here it panics.
                catch(move || drop(got)).is_err()
            }
        });
        let followers: Vec<_> = (0..FOLLOWERS)
            .map(|_| {
                let group = group.clone();
                thread::spawn(move || {
                    let got = group.work(&1, || unreachable!());
                    assert_eq!(got.n, 1);
                    catch(move || drop(got)).is_err()
                })
            })
            .collect();
        // Every thread returned normally from `work` and then saw its own
        // value's drop panic: no copy was dropped inside the library.
        assert!(leader.join().expect("no panic inside work"));
        for follower in followers {
            assert!(follower.join().expect("no panic inside work"));
        }
        armed.store(false, Ordering::SeqCst);
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn a_follower_whose_closure_panics_on_drop_does_not_strand_the_flight() {
    quiet_expected_panics();
    with_deadline("closure_drop_panics", || {
        let group = Arc::new(Group::<u64, u32>::new());
        let (release, released) = mpsc::channel::<()>();
        let leader = spawn_leader(&group, move |group, running| {
            group.work_with_role(&1, || {
                running();
                released.recv().unwrap();
                3
            })
        });
        let runs = Arc::new(AtomicUsize::new(0));
        let bad = {
            let (group, runs) = (group.clone(), runs.clone());
            thread::spawn(move || {
                let capture = BadCapture;
                catch(move || {
                    group.work(&1, move || {
                        let _keep = &capture;
                        runs.fetch_add(1, Ordering::SeqCst);
                        0
                    })
                })
            })
        };
        let good = spawn_follower(&group, 2, move |group| group.work(&1, || 0));
        release.send(()).unwrap();
        let led = leader.join().unwrap();
        assert_eq!((led.value, led.callers), (3, 3));
        assert_eq!(good.join().unwrap(), 3);
        let payload = bad.join().unwrap().unwrap_err();
        assert_eq!(
            panic_message(&*payload).as_deref(),
            Some("expected-panic in F::drop")
        );
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert_eq!(group.in_flight(), 0);
    });
}
