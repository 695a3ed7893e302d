//! The public face: a group of in-flight calls keyed by `K`.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::call::Waited;
use crate::error::{LeaderPanicked, Timeout};
use crate::sharded_map::{Entered, FlightId, Removed, Shard, ShardedMap};
use crate::stats::{Event, Stats};

/// Deduplicates concurrent blocking calls that share a key.
///
/// While one thread (the *leader*) runs the function for a key, every other
/// thread that asks for that key (a *follower*) parks until the leader
/// finishes and then gets a clone of the same value. Nothing is cached: once
/// the flight lands its entry is gone, and the next call runs the function
/// again.
///
/// The table of flights is sharded; a call on one key never waits for the
/// function of another key, and no lock is held while user code runs.
///
/// The default hasher is [`RandomState`], because keys often come from
/// untrusted input (tokens, URLs) and must resist hash flooding. Use
/// [`with_hasher`](Group::with_hasher) for a faster hasher on trusted keys.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Barrier;
/// use std::thread;
/// use sync_singleflight::Group;
///
/// let group: Group<String, String> = Group::new();
/// let runs = AtomicUsize::new(0);
/// let all_called = Barrier::new(4);
/// thread::scope(|s| {
///     for _ in 0..4 {
///         s.spawn(|| {
///             all_called.wait();
///             let row = group.work("user:42", || {
///                 runs.fetch_add(1, Ordering::SeqCst);
///                 String::from("Ada")
///             });
///             assert_eq!(row, "Ada");
///         });
///     }
/// });
/// // Between 1 and 4 runs, depending on how the threads overlapped.
/// assert!((1..=4).contains(&runs.load(Ordering::SeqCst)));
/// assert_eq!(group.in_flight(), 0);
/// ```
///
/// A group fits in a `static`:
///
/// ```
/// use std::sync::LazyLock;
/// use sync_singleflight::Group;
///
/// static USERS: LazyLock<Group<u64, Option<String>>> = LazyLock::new(Group::new);
///
/// assert_eq!(USERS.work(&7, || Some("Grace".to_string())), Some("Grace".to_string()));
/// ```
pub struct Group<K, V, S = RandomState> {
    map: ShardedMap<K, V>,
    hasher: S,
}

/// Which part a caller played in its flight.
///
/// # Examples
///
/// ```
/// use sync_singleflight::{Group, Role};
///
/// let group: Group<u8, u8> = Group::new();
/// assert_eq!(group.work_with_role(&1, || 1).role, Role::Leader);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// This caller ran the function.
    Leader,
    /// This caller waited for another thread's run and got a clone of its value.
    Follower,
}

/// A value together with how it was obtained; returned by
/// [`Group::work_with_role`].
///
/// This is the counterpart of Go's `shared` flag, split into the two facts
/// it mixes: whether *this* caller ran the function, and how many callers
/// the run served.
///
/// # Examples
///
/// ```
/// use sync_singleflight::{Group, Outcome, Role};
///
/// let group: Group<u8, &str> = Group::new();
/// let Outcome { value, role, callers } = group.work_with_role(&1, || "one");
/// assert_eq!((value, role, callers), ("one", Role::Leader, 1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<V> {
    /// The flight's value.
    pub value: V,
    /// Whether this caller ran the function.
    pub role: Role,
    /// How many callers got this flight's value: the leader plus every
    /// follower served. Followers that timed out are not counted.
    pub callers: usize,
}

impl<V> Outcome<V> {
    /// Whether the value went to more than one caller: Go's `shared`.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<u8, u8> = Group::new();
    /// assert!(!group.work_with_role(&1, || 1).is_shared());
    /// ```
    pub fn is_shared(&self) -> bool {
        self.callers > 1
    }
}

impl<K, V> Group<K, V> {
    /// Creates an empty group with the default, flood-resistant hasher.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<String, u32> = Group::new();
    /// assert_eq!(group.in_flight(), 0);
    /// ```
    pub fn new() -> Self {
        Group::with_hasher(RandomState::new())
    }
}

impl<K, V, S: BuildHasher + Default> Default for Group<K, V, S> {
    fn default() -> Self {
        Group::with_hasher(S::default())
    }
}

impl<K, V, S: BuildHasher> Group<K, V, S> {
    /// Creates an empty group that hashes keys with `hasher`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::hash::BuildHasherDefault;
    /// use std::collections::hash_map::DefaultHasher;
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<u64, u64, BuildHasherDefault<DefaultHasher>> =
    ///     Group::with_hasher(BuildHasherDefault::default());
    /// assert_eq!(group.work(&3, || 9), 9);
    /// ```
    pub fn with_hasher(hasher: S) -> Self {
        Group {
            map: ShardedMap::new(),
            hasher,
        }
    }
}

/// Observing a group needs no hashing, so these have no bounds on the key.
impl<K, V, S> Group<K, V, S> {
    /// The number of keys with a flight that a new caller would join.
    /// Forgotten flights still finishing are not counted.
    ///
    /// It is 0 whenever no call is running, whatever happened before.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<String, usize> = Group::new();
    /// assert_eq!(group.work("k", || group.in_flight()), 1);
    /// assert_eq!(group.in_flight(), 0);
    /// ```
    pub fn in_flight(&self) -> usize {
        self.map.in_flight()
    }

    /// A snapshot of this group's counters. See [`Stats`].
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<String, u32> = Group::new();
    /// group.work("k", || 1);
    /// assert_eq!(group.stats().leader_runs, 1);
    /// ```
    pub fn stats(&self) -> Stats {
        self.map.stats()
    }
}

impl<K: Hash + Eq, V, S: BuildHasher> Group<K, V, S> {
    /// Runs `f` for `key`, or waits for the run already in flight for `key`,
    /// and returns its value. Go's `Do`.
    ///
    /// If no flight for `key` is running, this thread becomes its leader and
    /// runs `f`. Otherwise it parks until the leader returns and gets a clone
    /// of the leader's value; its own `f` is dropped without being run.
    /// Errors are shared like any other value: use `V = Result<T, Arc<E>>`
    /// when `E` is not `Clone`.
    ///
    /// # Panics
    ///
    /// - If `f` panics, the panic continues in this (the leader's) thread
    ///   with its original payload, and every follower of this flight panics
    ///   with a [`LeaderPanicked`] payload carrying the leader's message. No
    ///   follower runs its own `f`. The flight is removed and the group stays
    ///   usable: the next call starts a new flight.
    /// - A re-entrant call for a key whose flight this thread is leading,
    ///   directly or through calls on other keys, panics at once with a
    ///   message containing "recursive", instead of deadlocking.
    /// - A panic in the key's `Hash`, `Eq` or `ToOwned`, or in `V::clone`,
    ///   happens in the thread that called it. A leader whose clone for its
    ///   followers panics is treated like a panicking `f`. Nobody else hangs
    ///   and no entry is left behind.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<String, Result<u32, Arc<std::io::Error>>> = Group::new();
    /// let found = group.work("user:42", || Ok(42));
    /// assert_eq!(found.unwrap(), 42);
    /// let failed = group.work("user:43", || Err(Arc::new(std::io::Error::other("db down"))));
    /// assert_eq!(failed.unwrap_err().to_string(), "db down");
    /// ```
    pub fn work<Q, F>(&self, key: &Q, f: F) -> V
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> V,
        V: Clone,
    {
        match self.run(key, None, f) {
            Ok(outcome) => outcome.value,
            Err(Timeout) => unreachable!("a wait without a deadline does not time out"),
        }
    }

    /// Like [`work`](Group::work), but a follower waits at most `timeout`.
    ///
    /// The bound applies only to waiting. A caller that becomes the leader
    /// always runs `f` to the end and returns `Ok`. A follower that gives up
    /// gets `Err(Timeout)`, and the flight goes on for everyone else.
    /// `Duration::ZERO` means "join only if the value is already there",
    /// which in practice means do not wait; `Duration::MAX` (or any timeout
    /// too large for the clock) means wait forever.
    ///
    /// # Panics
    ///
    /// Exactly as [`work`](Group::work): a follower of a panicking leader
    /// panics with [`LeaderPanicked`] (if it has not timed out first), a
    /// recursive call panics with a message containing "recursive", and a
    /// panic in the key's traits or `V::clone` stays in the calling thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<String, u32> = Group::new();
    /// // Nobody else is running "k", so this caller leads and is never cut short.
    /// assert_eq!(group.work_timeout("k", Duration::ZERO, || 5), Ok(5));
    /// ```
    pub fn work_timeout<Q, F>(&self, key: &Q, timeout: Duration, f: F) -> Result<V, Timeout>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> V,
        V: Clone,
    {
        self.run(key, Some(timeout), f).map(|outcome| outcome.value)
    }

    /// Like [`work`](Group::work), and also reports whether this caller ran
    /// `f` and how many callers shared the value: Go's `shared` flag, made
    /// precise.
    ///
    /// # Panics
    ///
    /// Exactly as [`work`](Group::work).
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::{Group, Role};
    ///
    /// let group: Group<String, u32> = Group::new();
    /// let outcome = group.work_with_role("k", || 1);
    /// assert_eq!(outcome.role, Role::Leader);
    /// assert_eq!(outcome.callers, 1);
    /// assert!(!outcome.is_shared());
    /// ```
    pub fn work_with_role<Q, F>(&self, key: &Q, f: F) -> Outcome<V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> V,
        V: Clone,
    {
        match self.run(key, None, f) {
            Ok(outcome) => outcome,
            Err(Timeout) => unreachable!("a wait without a deadline does not time out"),
        }
    }

    /// Forgets the flight in progress for `key`, if any, and returns whether
    /// there was one. Go's `Forget`.
    ///
    /// Callers already waiting on the forgotten flight still get its value;
    /// the next caller for `key` starts a new flight. When the old leader
    /// finishes it removes only its own flight, never the new one.
    ///
    /// # Panics
    ///
    /// Only if the key's `Hash` or `Eq` panics; the group is left unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<String, u32> = Group::new();
    /// assert!(!group.forget("nothing running"));
    /// let inner = group.work("k", || u32::from(group.forget("k")));
    /// assert_eq!(inner, 1);
    /// ```
    pub fn forget<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq,
    {
        let hash = self.hasher.hash_one(key);
        self.map.shard(hash).forget(hash, key)
    }

    fn run<Q, F>(&self, key: &Q, timeout: Option<Duration>, f: F) -> Result<Outcome<V>, Timeout>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> V,
        V: Clone,
    {
        // One hash picks the shard and is compared before the key's `Eq`.
        let hash = self.hasher.hash_one(key);
        let shard = self.map.shard(hash);
        match shard.enter(hash, key) {
            Entered::Leader(id) => Ok(lead(shard, id, f)),
            Entered::Follower(call) => {
                // `None` when the deadline does not fit the clock: wait forever.
                let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
                let waited = call.wait(deadline);
                // Dropped only now, so a panicking `Drop` cannot strand a registration.
                drop(f);
                drop(call);
                match waited {
                    Waited::Served { value, callers } => {
                        shard.counters.record(Event::FollowerServed);
                        Ok(Outcome {
                            value,
                            role: Role::Follower,
                            callers,
                        })
                    }
                    Waited::TimedOut => {
                        shard.counters.record(Event::FollowerTimeout);
                        Err(Timeout)
                    }
                    Waited::LeaderPanicked(why) => {
                        shard.counters.record(Event::FollowerPanic);
                        panic::resume_unwind(Box::new(why))
                    }
                }
            }
        }
    }
}

fn lead<K, V: Clone, F: FnOnce() -> V>(shard: &Shard<K, V>, id: FlightId, f: F) -> Outcome<V> {
    // Caught so the followers learn of the panic (and its message) before
    // the leader resumes it; nothing of `f`'s state is looked at afterwards.
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    let Removed {
        call,
        followers,
        replaced_key,
    } = shard.remove(id);
    let shared = match (result, call) {
        (Ok(value), None) => Ok((value, 1)),
        (Ok(value), Some(call)) => call
            .finish(&value, followers)
            .map(|callers| (value, callers)),
        (Err(payload), call) => {
            if let Some(call) = call {
                call.abandon(LeaderPanicked::from_payload(&*payload));
            }
            Err(payload)
        }
    };
    drop(replaced_key);
    match shared {
        Ok((value, callers)) => Outcome {
            value,
            role: Role::Leader,
            callers,
        },
        Err(payload) => {
            shard.counters.record(Event::LeaderPanic);
            panic::resume_unwind(payload)
        }
    }
}

impl<K, V, S> fmt::Debug for Group<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("in_flight", &self.map.in_flight())
            .field("shards", &self.map.shard_count())
            .finish_non_exhaustive()
    }
}
