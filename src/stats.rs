//! Counters of what a group did, kept per shard so that counting never
//! becomes a point of contention between unrelated keys.

use crate::sync::{AtomicU64, Ordering};

/// A snapshot of a [`Group`](crate::Group)'s counters since it was created.
///
/// Counters live in each shard of the group and are summed when you call
/// [`Group::stats`](crate::Group::stats); there is no group-wide atomic on
/// the call path. A snapshot taken while calls are running may be a few
/// increments behind; once the group is quiet it is exact, and then:
///
/// `followers_joined == followers_served + follower_timeouts + follower_panics + (followers whose clone of the value panicked)`
///
/// Leaders and followers are counted apart (unlike Go's `shared` flag, which
/// is also true for a leader that had company), so `followers_served /
/// leader_runs` is the real deduplication ratio.
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
    /// Calls that became a flight's leader and ran their function.
    pub leader_runs: u64,
    /// Calls that found a flight in progress and waited on it.
    pub followers_joined: u64,
    /// Followers that returned the leader's value.
    pub followers_served: u64,
    /// Leaders that panicked: in their function, or while cloning the value
    /// for their followers.
    pub leader_panics: u64,
    /// Followers that unwound with [`LeaderPanicked`](crate::LeaderPanicked).
    pub follower_panics: u64,
    /// Followers that gave up with [`Timeout`](crate::Timeout).
    pub follower_timeouts: u64,
    /// [`forget`](crate::Group::forget) calls that found a flight to forget.
    pub forgets: u64,
}

impl Stats {
    /// Calls that entered a flight, as leader or follower.
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
        self.leader_runs + self.followers_joined
    }
}

/// The counters that are bumped outside the shard lock, by followers after
/// they wake and by leaders on the rare panic path. They are per shard, so
/// only threads already sharing a key's shard ever touch the same one.
#[derive(Debug, Default)]
pub(crate) struct UnlockedCounters {
    followers_served: AtomicU64,
    leader_panics: AtomicU64,
    follower_panics: AtomicU64,
    follower_timeouts: AtomicU64,
}

/// Which unlocked counter to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    FollowerServed,
    LeaderPanic,
    FollowerPanic,
    FollowerTimeout,
}

impl UnlockedCounters {
    pub(crate) fn record(&self, event: Event) {
        let counter = match event {
            Event::FollowerServed => &self.followers_served,
            Event::LeaderPanic => &self.leader_panics,
            Event::FollowerPanic => &self.follower_panics,
            Event::FollowerTimeout => &self.follower_timeouts,
        };
        // Relaxed: a counter orders nothing; snapshots tolerate lag.
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_to(&self, stats: &mut Stats) {
        stats.followers_served += self.followers_served.load(Ordering::Relaxed);
        stats.leader_panics += self.leader_panics.load(Ordering::Relaxed);
        stats.follower_panics += self.follower_panics.load(Ordering::Relaxed);
        stats.follower_timeouts += self.follower_timeouts.load(Ordering::Relaxed);
    }
}
