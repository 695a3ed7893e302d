//! The public face: a group of in-flight calls keyed by `K`.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::time::Duration;

use crate::error::{Timeout, WaitError};
use crate::flights::Entered;
use crate::follower::follow;
use crate::key::{KeyArg, Owned, ToKey};
use crate::leader::LeaderGuard;
use crate::observe;
use crate::outcome::{Outcome, Role};
use crate::policy::Policy;
use crate::sharded_map::{FlightCtx, ShardedMap};
use crate::stats::Stats;
use crate::sync::assert_no_key_code_running;

/// Deduplicates concurrent blocking calls that share a key.
///
/// While one thread (the *leader*) runs the function for a key, every other
/// thread that asks for that key (a *follower*) parks until the leader
/// finishes and then gets a clone of the same value. Nothing is cached: once
/// the flight lands its entry is gone, and the next call runs the function
/// again.
///
/// The table of flights is sharded; a call on one key never waits for the
/// function of another key, and no lock is held while your function or
/// value runs. (The key's `Eq`, `Borrow` and `Clone` do run under a shard
/// lock; a call back into a group from there panics instead of deadlocking.)
///
/// [`Group::builder`] adds policies: a hung-leader escape
/// ([`max_flight_age`](crate::GroupBuilder::max_flight_age)), a follower cap
/// ([`max_followers`](crate::GroupBuilder::max_followers)) and error retry
/// ([`error_policy`](crate::GroupBuilder::error_policy)).
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
    policy: Policy,
}

/// What a call does when its flight already has `max_followers` waiting.
#[derive(Clone, Copy)]
pub(crate) enum Overflow {
    /// Run its own function outside the flight (calls with no error channel).
    RunOwn,
    /// Return `WaitError::Overloaded`.
    Refuse,
}

impl<K, V> Group<K, V> {
    /// Creates an empty group with the default, flood-resistant hasher and
    /// no policies: Go's semantics.
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
        Group::from_parts(
            crate::sharded_map::default_shard_count(),
            hasher,
            Policy::default(),
        )
    }

    pub(crate) fn from_parts(shards: usize, hasher: S, policy: Policy) -> Self {
        Group {
            map: ShardedMap::new(shards),
            hasher,
            policy,
        }
    }
}

/// Observing a group needs no hashing, so these have no bounds on the key.
impl<K, V, S> Group<K, V, S> {
    /// The number of keys with a flight that a new caller would join.
    /// Forgotten and replaced flights still finishing are not counted.
    ///
    /// It is 0 whenever no call is running, whatever happened before.
    ///
    /// # Panics
    ///
    /// If called from a key's `Eq`, `Borrow` or `Clone` while a group runs
    /// it under its lock (it would deadlock).
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
        assert_no_key_code_running();
        self.map.in_flight()
    }

    /// A snapshot of this group's counters. See [`Stats`].
    ///
    /// # Panics
    ///
    /// As [`in_flight`](Group::in_flight).
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
        assert_no_key_code_running();
        self.map.stats()
    }

    /// The name given with [`GroupBuilder::name`](crate::GroupBuilder::name), or `"default"`.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<u8, u8> = Group::new();
    /// assert_eq!(group.name(), "default");
    /// ```
    pub fn name(&self) -> &str {
        &self.policy.observer.name
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
    /// when `E` is not `Clone`, or [`try_work`](Group::try_work), which
    /// wraps the error for you.
    ///
    /// `key` is any borrowed form of `K` that can make a `K` ([`ToKey`]),
    /// as with `HashMap::get`: `&str` for `String` or `Arc<str>` keys.
    ///
    /// With policies set (see [`Group::builder`]): the followers of a flight
    /// older than `max_flight_age` go with its replacement; one follower of
    /// a failed flight under [`ErrorPolicy::Retry`](crate::ErrorPolicy::Retry)
    /// (or of an abandoned [`LeaderGuard`]) is elected to run its own `f`
    /// for all the others; and a caller over `max_followers` runs its own
    /// `f` outside the flight.
    ///
    /// # Panics
    ///
    /// - If `f` panics, the panic continues in this (the leader's) thread
    ///   with its original payload, and every follower of this flight panics
    ///   with a [`LeaderPanicked`](crate::LeaderPanicked) payload carrying the leader's message. No
    ///   follower runs its own `f` (unless the error policy is `Retry`). The
    ///   flight is removed and the group stays usable.
    /// - A re-entrant call for a key whose flight this thread is leading,
    ///   directly or through calls on other keys, panics at once with a
    ///   message containing "recursive", instead of deadlocking.
    /// - A panic in the key's `Hash`, `Eq`, `Borrow` or `Clone` happens in the
    ///   calling thread; nothing is changed. A call back into a group from
    ///   the key's `Eq`, `Borrow` or `Clone` panics (it would deadlock).
    /// - A follower whose own `V::clone`, or whose unused `f` or key's
    ///   `Drop`, panics unwinds with that payload; the others are unaffected.
    /// - A leader whose `V::clone` (copying the value for its followers)
    ///   panics unwinds with the clone's payload, and its followers panic
    ///   with [`LeaderPanicked`](crate::LeaderPanicked) carrying the clone's message.
    ///
    /// No value is ever dropped inside the group: on the two paths where a
    /// caller unwinds while holding one (the last two items), that value is
    /// leaked instead, so a second panicking `Drop` cannot abort the process.
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
    #[inline]
    pub fn work<Q, F>(&self, key: &Q, f: F) -> V
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K>,
        F: FnOnce() -> V,
        V: Clone,
    {
        self.work_with_role(key, f).value
    }

    /// Like [`work`](Group::work), but the caller hands over an owned key,
    /// which a leader stores as it is: no copy of the key is made. Use it
    /// for composite keys such as `(String, u64)`, which `work` would clone.
    ///
    /// # Panics
    ///
    /// Exactly as [`work`](Group::work). A follower drops its key after it
    /// has its value; a panic in that `Drop` is treated like a panic in its
    /// unused `f`.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<(String, u64), String> = Group::new();
    /// let key = ("acme".to_string(), 42);
    /// assert_eq!(group.work_owned(key, || "row 42".to_string()), "row 42");
    /// ```
    pub fn work_owned<F>(&self, key: K, f: F) -> V
    where
        F: FnOnce() -> V,
        V: Clone,
    {
        let outcome = self.run(Owned(key), None, Overflow::RunOwn, f, |_| false);
        outcome
            .unwrap_or_else(|_| unreachable!("a call without a budget never fails to wait"))
            .value
    }

    /// Like [`work`](Group::work), but a follower waits at most `timeout`.
    ///
    /// The bound applies only to waiting. A caller that becomes the leader
    /// always runs `f` to the end and returns `Ok`. A follower that gives up
    /// gets `Err(Timeout)`, and the flight goes on for everyone else.
    /// `Duration::ZERO` means "join only if the value is already there",
    /// which in practice means do not wait; `Duration::MAX` (or any timeout
    /// too large for the clock) means wait forever. A caller over
    /// [`max_followers`](crate::GroupBuilder::max_followers) gets `Err(Timeout)` at
    /// once, as if its budget were zero. A follower elected to rerun a
    /// failed or abandoned flight becomes its leader and, like any leader,
    /// runs `f` to the end whatever its budget.
    ///
    /// To get the role and caller count with a budget, or to tell a timeout
    /// from an overload, use [`work_within`](Group::work_within).
    ///
    /// # Panics
    ///
    /// Exactly as [`work`](Group::work): a follower of a panicking leader
    /// panics with [`LeaderPanicked`](crate::LeaderPanicked) (if it has not timed out first), a
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
        Q: ?Sized + Hash + Eq + ToKey<K>,
        F: FnOnce() -> V,
        V: Clone,
    {
        match self.run(key, Some(timeout), Overflow::Refuse, f, |_| false) {
            Ok(outcome) => Ok(outcome.value),
            Err(_) => Err(Timeout),
        }
    }

    /// Like [`work`](Group::work), and also reports whether this caller ran
    /// `f` and how many callers shared the value: Go's `shared` flag, made
    /// precise.
    ///
    /// A caller over [`max_followers`](crate::GroupBuilder::max_followers) runs
    /// its own `f` and reports `Role::Leader` with `callers == 1`.
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
    #[inline]
    pub fn work_with_role<Q, F>(&self, key: &Q, f: F) -> Outcome<V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K>,
        F: FnOnce() -> V,
        V: Clone,
    {
        let outcome = self.run(key, None, Overflow::RunOwn, f, |_| false);
        outcome.unwrap_or_else(|_| unreachable!("a call without a budget never fails to wait"))
    }

    /// The flat form: a wait budget, the role and the caller count, in one
    /// call and one `Result`. A follower waits at most `budget`
    /// (`Duration::MAX` means forever); a caller over
    /// [`max_followers`](crate::GroupBuilder::max_followers) gets
    /// [`WaitError::Overloaded`] at once. A leader always runs `f` to the end.
    ///
    /// For values that are `Result`s, [`try_work_within`](Group::try_work_within)
    /// flattens the function's error into the same `Result`.
    ///
    /// # Panics
    ///
    /// Exactly as [`work`](Group::work).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sync_singleflight::{Group, Role, WaitError};
    ///
    /// let group: Group<String, u32> = Group::new();
    /// match group.work_within("k", Duration::from_millis(50), || 7) {
    ///     Ok(outcome) => {
    ///         assert_eq!((outcome.value, outcome.role), (7, Role::Leader));
    ///     }
    ///     Err(WaitError::Timeout | WaitError::Overloaded) => { /* serve a fallback */ }
    ///     Err(other) => panic!("{other}"),
    /// }
    /// ```
    pub fn work_within<Q, F>(
        &self,
        key: &Q,
        budget: Duration,
        f: F,
    ) -> Result<Outcome<V>, WaitError>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K>,
        F: FnOnce() -> V,
        V: Clone,
    {
        self.run(key, Some(budget), Overflow::Refuse, f, |_| false)
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
    /// Only if the key's `Hash` or `Eq` panics (the group is left
    /// unchanged), or if called from a key's trait code run under a lock.
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
        Q: ?Sized + Hash + Eq + ToKey<K>,
    {
        assert_no_key_code_running();
        let (ctx, hash) = self.locate(&key);
        ctx.shard.forget(hash, &key)
    }

    /// The shard for `key` and everything a flight there needs to know.
    #[inline(always)]
    pub(crate) fn locate<A: KeyArg<K>>(&self, key: &A) -> (FlightCtx<'_, K, V>, u64) {
        // One hash picks the shard and is compared before the key's `Eq`.
        let hash = self.hasher.hash_one(key.lookup());
        let ctx = FlightCtx {
            shard: self.map.shard(hash),
            policy: &self.policy,
        };
        (ctx, hash)
    }

    /// Every `work` variant: lead, follow (or be elected to rerun), or overflow.
    #[inline]
    pub(crate) fn run<A, F>(
        &self,
        key: A,
        budget: Option<Duration>,
        overflow: Overflow,
        f: F,
        failed: fn(&V) -> bool,
    ) -> Result<Outcome<V>, WaitError>
    where
        A: KeyArg<K>,
        F: FnOnce() -> V,
        V: Clone,
    {
        assert_no_key_code_running();
        let (ctx, hash) = self.locate(&key);
        let mut key = Some(key);
        let entered = ctx.shard.enter(hash, &mut key, ctx.policy, true);
        let call = match entered {
            Entered::Leader { id, replacing } => {
                if replacing {
                    observe::replaced(&ctx.policy.observer);
                }
                return Ok(LeaderGuard::new(ctx, id).run(f, failed));
            }
            Entered::Full => {
                observe::overflowed(&ctx.policy.observer);
                drop(key);
                return match overflow {
                    Overflow::RunOwn => Ok(Outcome {
                        value: f(),
                        role: Role::Leader,
                        callers: 1,
                    }),
                    Overflow::Refuse => Err(WaitError::Overloaded),
                };
            }
            Entered::Follower(call) => call,
        };
        follow(ctx, key, call, budget, f, failed)
    }
}

// `catch_unwind(|| group.work(..))` should not need `AssertUnwindSafe`.
// The auto traits are missing only because the shard locks hold an
// `UnsafeCell` and carry no poison flag, which is what lets std's `Mutex`
// be `RefUnwindSafe`. A group needs none: every piece of user code it calls
// (the function, `V::clone`, the key's traits and every `Drop`) runs either
// outside its locks or inside `catch_unwind`, and the group's state is
// settled before a caught panic resumes, so a caller that catches a panic
// sees a group that is whole (the hostile-code and loom suites check this).
// Keys and values are never exposed half-changed: a caller only ever gets
// its own clone of a value. Only the hasher is the user's own state that a
// panic could leave half-changed, hence the one bound.
impl<K, V, S: RefUnwindSafe> RefUnwindSafe for Group<K, V, S> {}
impl<K, V, S: UnwindSafe> UnwindSafe for Group<K, V, S> {}

impl<K, V, S> fmt::Debug for Group<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("in_flight", &self.in_flight())
            .field("name", &self.policy.observer.name)
            .field("shards", &self.map.shard_count())
            .finish_non_exhaustive()
    }
}
