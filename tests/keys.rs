//! Keys that `HashMap` can look up: a group's owned key `K` found by a
//! borrowed form (`&str` for `Arc<str>` or `String`, `&[u8]` for
//! `Vec<u8>`, a user type through `ToKey`), and `work_owned`.

mod common;

use std::borrow::Borrow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Gate, assert_quiet, blocked_leader, gated, spawn_follower, with_deadline};
use sync_singleflight::{Group, Joined, Role, ToKey};

/// Leads `owned` (blocked), then checks that a caller using `borrowed`
/// joins that flight rather than starting its own.
fn borrowed_lookups_join<K, Q>(owned: K, borrowed: &'static Q)
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + Borrow<Q> + 'static,
    Q: ?Sized + std::hash::Hash + Eq + ToKey<K> + Sync,
{
    let group = Arc::new(Group::<K, u64>::new());
    let (leader, release) = blocked_leader(&group, owned, 5);
    let follower = spawn_follower(&group, 1, move |g| {
        g.work_with_role(borrowed, || unreachable!())
    });
    // Every other entry point finds the same flight by the borrowed form.
    assert!(matches!(group.join(borrowed), Joined::Waiter(_)));
    assert_eq!(
        group.work_timeout(borrowed, Duration::ZERO, || unreachable!()),
        Err(sync_singleflight::Timeout)
    );
    release.send(()).unwrap();
    assert_eq!(leader.join().unwrap(), 5);
    let follower = follower.join().unwrap();
    assert_eq!(
        (follower.value, follower.role, follower.callers),
        (5, Role::Follower, 2)
    );
    // No flight is left, and the next borrowed call leads with a fresh key.
    assert_eq!(group.work_with_role(borrowed, || 6).role, Role::Leader);
    assert!(!group.forget(borrowed));
    assert_quiet(&*group);
}

#[test]
fn arc_str_keys_are_looked_up_by_str() {
    with_deadline("arc_str", || {
        borrowed_lookups_join::<Arc<str>, str>(Arc::from("user:1"), "user:1")
    });
}

#[test]
fn string_keys_are_looked_up_by_str() {
    with_deadline("string", || {
        borrowed_lookups_join::<String, str>("user:1".into(), "user:1")
    });
}

#[test]
fn boxed_str_keys_are_looked_up_by_str() {
    with_deadline("box_str", || {
        borrowed_lookups_join::<Box<str>, str>("k".into(), "k")
    });
}

#[test]
fn byte_vector_keys_are_looked_up_by_slices() {
    with_deadline("vec_u8", || {
        borrowed_lookups_join::<Vec<u8>, [u8]>(vec![1, 2, 3], &[1, 2, 3]);
    });
}

#[test]
fn arc_slice_keys_are_looked_up_by_slices() {
    with_deadline("arc_slice", || {
        borrowed_lookups_join::<Arc<[u8]>, [u8]>(Arc::from(&[9u8, 9][..]), &[9, 9]);
    });
}

#[test]
fn path_keys_are_looked_up_by_path() {
    with_deadline("path", || {
        borrowed_lookups_join::<PathBuf, Path>(
            PathBuf::from("/etc/hosts"),
            Path::new("/etc/hosts"),
        );
    });
}

#[test]
fn distinct_borrowed_keys_stay_apart() {
    let group: Group<Arc<str>, String> = Group::new();
    assert_eq!(group.work("a", || "A".into()), "A");
    assert_eq!(group.work("b", || "B".into()), "B");
    let key: Arc<str> = Arc::from("c");
    // The owned form works too (every `Clone` key is its own borrowed form).
    assert_eq!(group.work(&key, || "C".into()), "C");
    assert_eq!(group.stats().leader_runs, 3);
    let bytes: Group<Vec<u8>, u8> = Group::new();
    assert_eq!(bytes.work(&b"xy"[..], || 1), 1);
    assert_eq!(bytes.work(&vec![b'x', b'y'], || 2), 2);
}

/// A user key with a cheaper borrowed form, as in `ToKey`'s docs.
#[derive(Hash, PartialEq, Eq, Debug)]
struct TenantId(u64);

#[derive(Hash, PartialEq, Eq, Debug)]
struct SessionKey {
    tenant: TenantId,
}

impl Borrow<TenantId> for SessionKey {
    fn borrow(&self) -> &TenantId {
        &self.tenant
    }
}

static TO_KEY_CALLS: AtomicUsize = AtomicUsize::new(0);

impl ToKey<SessionKey> for TenantId {
    fn to_key(&self) -> SessionKey {
        TO_KEY_CALLS.fetch_add(1, Ordering::SeqCst);
        SessionKey {
            tenant: TenantId(self.0),
        }
    }
}

#[test]
fn a_user_type_implementing_to_key() {
    with_deadline("to_key", || {
        let group = Arc::new(Group::<SessionKey, u64>::new());
        let gate = Arc::new(Gate::default());
        let leader = gated(&group, &gate, |group, gate| {
            group.work(&TenantId(7), || {
                gate.pass();
                70
            })
        });
        let before = TO_KEY_CALLS.load(Ordering::SeqCst);
        let follower = spawn_follower(&group, 1, |g| g.work(&TenantId(7), || unreachable!()));
        // Only a leader makes an owned key; a follower never does.
        assert_eq!(TO_KEY_CALLS.load(Ordering::SeqCst), before);
        // A different tenant is a different flight.
        assert_eq!(group.work(&TenantId(8), || 80), 80);
        gate.open();
        assert_eq!((leader.join().unwrap(), follower.join().unwrap()), (70, 70));
        assert_quiet(&*group);
    });
}

#[test]
fn work_owned_takes_a_composite_key_and_meets_borrowed_callers() {
    with_deadline("work_owned", || {
        let group = Arc::new(Group::<(String, u64), String>::new());
        let key = ("acme".to_string(), 42);
        let (leader, release) = blocked_leader(&group, key.clone(), "row".to_string());
        // An owned-key caller joins the flight a borrowed-key caller leads.
        let owned = spawn_follower(&group, 1, |g| {
            g.work_owned(("acme".to_string(), 42), || unreachable!())
        });
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), "row");
        assert_eq!(owned.join().unwrap(), "row");
        // And the other way round: an owned-key leader, a borrowed follower.
        let gate = Arc::new(Gate::default());
        let leader = gated(&group, &gate, |group, gate| {
            group.work_owned(("acme".to_string(), 43), || {
                gate.pass();
                "row 43".to_string()
            })
        });
        let borrowed = spawn_follower(&group, 2, |g| {
            g.work(&("acme".to_string(), 43), || unreachable!())
        });
        gate.open();
        assert_eq!(leader.join().unwrap(), "row 43");
        assert_eq!(borrowed.join().unwrap(), "row 43");
        assert_eq!(group.stats().leader_runs, 2);
        assert_quiet(&*group);
    });
}

/// A key that counts its drops, to check who drops which copy.
#[derive(Debug)]
struct Counted {
    id: u64,
    drops: Arc<AtomicUsize>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        Counted {
            id: self.id,
            drops: Arc::clone(&self.drops),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

impl PartialEq for Counted {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Counted {}

impl std::hash::Hash for Counted {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

#[test]
fn work_owned_never_copies_the_key_and_drops_every_one() {
    let drops = Arc::new(AtomicUsize::new(0));
    let group: Group<Counted, u64> = Group::new();
    let key = |id| Counted {
        id,
        drops: Arc::clone(&drops),
    };
    assert_eq!(group.work_owned(key(1), || 1), 1);
    assert_eq!(group.work_owned(key(2), || 2), 2);
    // Two keys handed over, two dropped (by their own leaders): no copies.
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    assert_quiet(&group);
}
