//! `Group::builder()`: a group with policies, a shard count or a hasher.

use std::borrow::Cow;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::marker::PhantomData;
use std::time::Duration;

use crate::group::Group;
use crate::policy::{ErrorPolicy, Policy};
use crate::sharded_map::default_shard_count;

/// The most shards a group may have: far more than any machine has cores,
/// and each shard costs a cache line or two.
pub const MAX_SHARDS: usize = 1 << 16;

/// Configures a [`Group`]; made by [`Group::builder`].
///
/// Every option is off unless set, and an option that is off costs nothing
/// on the call path: a group from `Group::builder().build()` behaves, and
/// performs, exactly like [`Group::new`].
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use sync_singleflight::{ErrorPolicy, Group};
///
/// let users: Group<u64, Result<String, Arc<std::io::Error>>> = Group::builder()
///     .name("users")
///     .max_flight_age(Duration::from_secs(5))
///     .max_followers(1_000)
///     .error_policy(ErrorPolicy::Retry { retries: 1 })
///     .shards(64)
///     .build();
/// assert_eq!(users.work(&7, || Ok("ada".into())).unwrap(), "ada");
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct GroupBuilder<K, V, S = RandomState> {
    policy: Policy,
    shards: Option<usize>,
    hasher: S,
    _types: PhantomData<fn(K) -> V>,
}

impl<K, V> Group<K, V> {
    /// A builder for a group with policies, a shard count, a name or a
    /// hasher. See [`GroupBuilder`](crate::GroupBuilder).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<String, u32> = Group::builder()
    ///     .max_flight_age(Duration::from_secs(10))
    ///     .max_followers(500)
    ///     .build();
    /// assert_eq!(group.work("k", || 1), 1);
    /// ```
    pub fn builder() -> GroupBuilder<K, V> {
        GroupBuilder::new()
    }
}

impl<K, V> GroupBuilder<K, V> {
    fn new() -> Self {
        GroupBuilder {
            policy: Policy::default(),
            shards: None,
            hasher: RandomState::new(),
            _types: PhantomData,
        }
    }
}

impl<K, V, S> GroupBuilder<K, V, S> {
    /// Lets a hung leader be bypassed: once a flight is older than `age`,
    /// the next caller for its key starts a **replacement flight** instead
    /// of joining it.
    ///
    /// - The old leader is not interrupted (a blocking call cannot be). It
    ///   finishes normally, gets its own value, and removes only its own
    ///   flight, never the replacement.
    /// - The followers parked on the old flight **move over**: the
    ///   replacement adopts them (they never re-enter the table), so they
    ///   get the replacement's value and are not stuck behind the hung
    ///   leader either. [`Waiter`](crate::Waiter)s move too.
    /// - At most one replacement per `age`: the replacement is itself a
    ///   fresh flight that must age before it can be replaced in turn, so a
    ///   hung backend sees one extra call per `age`, never a herd.
    /// - [`Stats::replacements`](crate::Stats::replacements) counts them.
    ///
    /// This is nginx's `proxy_cache_lock_age`. Without it, a flight is
    /// joined for as long as it runs. `Duration::ZERO` makes every flight
    /// too old at once: a caller that finds one running starts its own
    /// instead of waiting, so nothing is deduplicated.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<String, u32> = Group::builder()
    ///     .max_flight_age(Duration::from_secs(2))
    ///     .build();
    /// assert_eq!(group.work("k", || 1), 1);
    /// ```
    pub fn max_flight_age(mut self, age: Duration) -> Self {
        self.policy.max_flight_age = Some(age);
        self
    }

    /// Bounds how many callers may wait on one flight: load shedding for a
    /// key so hot that parked threads themselves become the problem.
    ///
    /// A caller that finds `max` followers already waiting does not join:
    ///
    /// | entry point | a caller over the cap |
    /// |---|---|
    /// | [`work`](crate::Group::work), [`work_with_role`](crate::Group::work_with_role), [`work_owned`](crate::Group::work_owned), [`try_work`](crate::Group::try_work) | runs its own function, outside the flight (these calls have no error to return; this is what vitess's consolidator does past its waiter cap) |
    /// | [`work_timeout`](crate::Group::work_timeout) | gets `Err(Timeout)` at once, as if its budget were zero: the caller has a fallback ready, and the backend is spared |
    /// | [`work_within`](crate::Group::work_within), [`try_work_within`](crate::Group::try_work_within) | gets [`WaitError::Overloaded`](crate::WaitError::Overloaded) / [`TryError::Overloaded`](crate::TryError::Overloaded) at once |
    /// | [`join`](crate::Group::join) | gets a [`Waiter`](crate::Waiter) whose every method returns [`WaitError::Overloaded`](crate::WaitError::Overloaded) at once |
    ///
    /// Followers that timed out (or dropped their `Waiter`) no longer count
    /// against the cap; a `Waiter` whose `wait_timeout` ran out keeps its
    /// place, and so its slot. Followers moved by a replacement or staying
    /// for a rerun keep theirs.
    /// [`Stats::overflows`](crate::Stats::overflows) counts the callers
    /// turned away. `max_followers(0)` means no caller ever waits.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<String, u32> = Group::builder().max_followers(100).build();
    /// assert_eq!(group.work("k", || 1), 1);
    /// ```
    pub fn max_followers(mut self, max: usize) -> Self {
        self.policy.max_followers = Some(max);
        self
    }

    /// What the followers of a failed flight do; see [`ErrorPolicy`].
    /// The default is [`ErrorPolicy::Share`], Go's behaviour.
    ///
    /// # Examples
    ///
    /// See [`ErrorPolicy`].
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.policy.retries = match policy {
            ErrorPolicy::Share => 0,
            ErrorPolicy::Retry { retries } => retries,
        };
        self
    }

    /// How many independently locked shards the table of flights has. The
    /// default is four per core, rounded up to a power of two, between 16
    /// and 1024. Any count from 1 to [`MAX_SHARDS`] is used as given.
    ///
    /// # Panics
    ///
    /// If `count` is 0 or more than [`MAX_SHARDS`], with a message saying so.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<u64, u64> = Group::builder().shards(3).build();
    /// assert_eq!(group.work(&1, || 2), 2);
    /// ```
    pub fn shards(mut self, count: usize) -> Self {
        assert!(
            (1..=MAX_SHARDS).contains(&count),
            "sync_singleflight: shards({count}) is out of range: a group needs between 1 and \
             {MAX_SHARDS} shards"
        );
        self.shards = Some(count);
        self
    }

    /// Hashes keys with `hasher` instead of the default, flood-resistant
    /// [`RandomState`]. Use a faster hasher only for keys an attacker does
    /// not choose.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::hash::BuildHasherDefault;
    /// use std::collections::hash_map::DefaultHasher;
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<u64, u64, BuildHasherDefault<DefaultHasher>> =
    ///     Group::builder().hasher(BuildHasherDefault::default()).build();
    /// assert_eq!(group.work(&1, || 2), 2);
    /// ```
    pub fn hasher<S2: BuildHasher>(self, hasher: S2) -> GroupBuilder<K, V, S2> {
        GroupBuilder {
            policy: self.policy,
            shards: self.shards,
            hasher,
            _types: PhantomData,
        }
    }

    /// A name for the group in traces and metrics (the `group` field or
    /// label), with the `tracing` and `metrics` features. Keys are never
    /// logged: they often carry tokens. The default is `"default"`.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<u64, u64> = Group::builder().name("user-lookups").build();
    /// assert_eq!(group.name(), "user-lookups");
    /// ```
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.policy.observer.name = name.into();
        self
    }

    /// Makes the group.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<u64, u64> = Group::builder().build();
    /// assert_eq!(group.in_flight(), 0);
    /// ```
    pub fn build(self) -> Group<K, V, S>
    where
        S: BuildHasher,
    {
        Group::from_parts(
            self.shards.unwrap_or_else(default_shard_count),
            self.hasher,
            self.policy,
        )
    }
}

impl<K, V, S> fmt::Debug for GroupBuilder<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupBuilder")
            .field("name", &self.policy.observer.name)
            .field("max_flight_age", &self.policy.max_flight_age)
            .field("max_followers", &self.policy.max_followers)
            .field("retries", &self.policy.retries)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}
