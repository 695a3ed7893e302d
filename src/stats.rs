//! Counters of what a group did, kept per shard so that counting never
//! becomes a point of contention between unrelated keys.

use crate::sync::{AtomicU64, Ordering};

/// A snapshot of a [`Group`](crate::Group)'s counters since it was created.
///
/// Counters live in each shard of the group and are summed when you call
/// [`Group::stats`](crate::Group::stats); there is no group-wide atomic on
/// the call path. A snapshot taken while calls are running may be a few
/// increments behind; once the group is quiet it is exact.
///
/// Every call is counted once, as what it was when it entered: a leader
/// (`leader_runs`), a follower (`followers_joined`) or a caller over the
/// follower cap (`overflows`). Every follower then ends in exactly one way,
/// so once the group is quiet:
///
/// ```text
/// followers_joined == followers_served + follower_timeouts + follower_panics
///                     + follower_own_panics + followers_promoted + followers_abandoned
/// ```
///
/// Leaders and followers are counted apart (unlike Go's `shared` flag, which
/// is also true for a leader that had company), so `followers_served /
/// leader_runs` is the real deduplication ratio. The function ran
/// `leader_runs + followers_promoted` times inside flights, plus once for
/// each overflow that ran its own function.
///
/// # Examples
///
/// ```
/// use sync_singleflight::Group;
///
/// let group: Group<String, u32> = Group::new();
/// group.work("a", || 1);
/// group.work("b", || 2);
/// let stats = group.stats();
/// assert_eq!(stats.leader_runs, 2);
/// assert_eq!(stats.followers_served, 0);
/// assert_eq!(stats.calls(), 2);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Stats {
    /// Calls that started a flight and ran their function.
    pub leader_runs: u64,
    /// Calls that found a flight in progress and waited on it.
    pub followers_joined: u64,
    /// Followers that returned the leader's value.
    pub followers_served: u64,
    /// Flights whose leader panicked: in its function, or while cloning the
    /// value for its followers (see [`Group::work`](crate::Group::work)).
    pub leader_panics: u64,
    /// Followers that unwound with [`LeaderPanicked`](crate::LeaderPanicked).
    pub follower_panics: u64,
    /// Followers that unwound from their own code after the flight landed:
    /// their copy's `V::clone`, or the `Drop` of their unused closure or key.
    pub follower_own_panics: u64,
    /// Followers that gave up: [`Timeout`](crate::Timeout), or a
    /// [`Waiter`](crate::Waiter) dropped before it returned an outcome.
    pub follower_timeouts: u64,
    /// Followers elected to lead their flight's rerun (it failed under
    /// [`ErrorPolicy::Retry`](crate::ErrorPolicy::Retry), or its guard was
    /// dropped unfilled); each ran its own function once.
    pub followers_promoted: u64,
    /// [`Waiter`](crate::Waiter)s told [`WaitError::Abandoned`](crate::WaitError::Abandoned).
    pub followers_abandoned: u64,
    /// Flights replaced because they were older than
    /// [`max_flight_age`](crate::GroupBuilder::max_flight_age).
    pub replacements: u64,
    /// Failed or panicked flights handed to an elected follower under
    /// [`ErrorPolicy::Retry`](crate::ErrorPolicy::Retry).
    pub retries: u64,
    /// [`LeaderGuard`](crate::LeaderGuard)s dropped without a value.
    pub leader_abandons: u64,
    /// Calls that found their flight at
    /// [`max_followers`](crate::GroupBuilder::max_followers) and did not join it.
    pub overflows: u64,
    /// [`forget`](crate::Group::forget) calls that found a flight to forget.
    pub forgets: u64,
}

impl Stats {
    /// Calls that entered the group: leaders, followers and overflows.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<u8, u8> = Group::new();
    /// group.work(&1, || 1);
    /// assert_eq!(group.stats().calls(), 1);
    /// ```
    pub fn calls(&self) -> u64 {
        self.leader_runs + self.followers_joined + self.overflows
    }

    /// Followers not yet accounted for by one of the ways a follower ends:
    /// 0 whenever the group is quiet (the identity above). Useful in tests.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<u8, u8> = Group::new();
    /// group.work(&1, || 1);
    /// assert_eq!(group.stats().followers_unaccounted(), 0);
    /// ```
    pub fn followers_unaccounted(&self) -> i64 {
        let ended = self.followers_served
            + self.follower_timeouts
            + self.follower_panics
            + self.follower_own_panics
            + self.followers_promoted
            + self.followers_abandoned;
        self.followers_joined as i64 - ended as i64
    }
}

/// The counters that are bumped outside the shard lock, by followers after
/// they wake and by leaders on their rarer paths. They are per shard, so
/// only threads already sharing a key's shard ever touch the same one.
#[derive(Debug, Default)]
pub(crate) struct UnlockedCounters {
    followers_served: AtomicU64,
    leader_panics: AtomicU64,
    follower_panics: AtomicU64,
    follower_own_panics: AtomicU64,
    follower_timeouts: AtomicU64,
    followers_abandoned: AtomicU64,
    retries: AtomicU64,
    leader_abandons: AtomicU64,
}

/// Which unlocked counter to bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    FollowerServed,
    LeaderPanic,
    FollowerPanic,
    FollowerOwnPanic,
    FollowerTimeout,
    FollowerAbandoned,
    Retry,
    LeaderAbandon,
}

impl UnlockedCounters {
    pub(crate) fn record(&self, event: Event) {
        let counter = match event {
            Event::FollowerServed => &self.followers_served,
            Event::LeaderPanic => &self.leader_panics,
            Event::FollowerPanic => &self.follower_panics,
            Event::FollowerOwnPanic => &self.follower_own_panics,
            Event::FollowerTimeout => &self.follower_timeouts,
            Event::FollowerAbandoned => &self.followers_abandoned,
            Event::Retry => &self.retries,
            Event::LeaderAbandon => &self.leader_abandons,
        };
        // Relaxed: a counter orders nothing; snapshots tolerate lag.
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_to(&self, stats: &mut Stats) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        stats.followers_served += load(&self.followers_served);
        stats.leader_panics += load(&self.leader_panics);
        stats.follower_panics += load(&self.follower_panics);
        stats.follower_own_panics += load(&self.follower_own_panics);
        stats.follower_timeouts += load(&self.follower_timeouts);
        stats.followers_abandoned += load(&self.followers_abandoned);
        stats.retries += load(&self.retries);
        stats.leader_abandons += load(&self.leader_abandons);
    }
}
