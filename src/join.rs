//! Leading or waiting by hand: [`Group::join`], Go's `DoChan` for blocking
//! code, and what it makes of the caller.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use crate::flights::Entered;
use crate::follower::Waiter;
use crate::group::Group;
use crate::key::ToKey;
use crate::leader::LeaderGuard;
use crate::observe;
use crate::sync::assert_no_key_code_running;

/// What [`Group::join`](crate::Group::join) made of the caller.
///
/// # Examples
///
/// ```
/// use sync_singleflight::{Group, Joined};
///
/// let group: Group<u64, u64> = Group::new();
/// let Joined::Leader(guard) = group.join(&1) else {
///     unreachable!("nobody else is running key 1");
/// };
/// assert_eq!(guard.fill(10).value, 10);
/// ```
#[derive(Debug)]
pub enum Joined<'g, K, V> {
    /// No flight was running: this caller leads the new one.
    Leader(LeaderGuard<'g, K, V>),
    /// A flight is running (or the follower cap turned this caller away).
    Waiter(Waiter<'g, K, V>),
}

impl<'g, K, V> Joined<'g, K, V> {
    /// The guard, if this caller leads the flight.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<u64, u64> = Group::new();
    /// let guard = group.join(&1).into_leader().expect("nobody else runs key 1");
    /// assert_eq!(guard.fill(10).value, 10);
    /// ```
    pub fn into_leader(self) -> Option<LeaderGuard<'g, K, V>> {
        match self {
            Joined::Leader(guard) => Some(guard),
            Joined::Waiter(_) => None,
        }
    }

    /// The waiter, if a flight was already running (or the follower cap
    /// turned this caller away).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::thread;
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<u64, u64> = Group::new();
    /// let guard = group.join(&1).into_leader().unwrap();
    /// thread::scope(|s| {
    ///     let follower = s.spawn(|| group.join(&1).into_waiter().map(|waiter| waiter.wait()));
    ///     while group.stats().followers_joined == 0 {
    ///         thread::yield_now();
    ///     }
    ///     guard.fill(10);
    ///     assert_eq!(follower.join().unwrap(), Some(Ok(10)));
    /// });
    /// ```
    pub fn into_waiter(self) -> Option<Waiter<'g, K, V>> {
        match self {
            Joined::Waiter(waiter) => Some(waiter),
            Joined::Leader(_) => None,
        }
    }
}

impl<K: Hash + Eq, V, S: BuildHasher> Group<K, V, S> {
    /// Leads the flight for `key`, or joins it, without running anything:
    /// the building block for callers that cannot hand over a closure, or
    /// that want to do other work while they wait. Go's `DoChan`, blocking.
    ///
    /// - [`Joined::Leader`]: no flight was running; this caller leads one.
    ///   Fill its [`LeaderGuard`] with the value. Dropping the guard unfilled
    ///   abandons the flight: one of the callers in [`work`](Group::work)
    ///   waiting on it is elected to run its own function, and everyone else
    ///   (waiters included) gets that run's value; with no such caller,
    ///   [`Waiter`]s get [`WaitError::Abandoned`](crate::WaitError::Abandoned). Dropped while its thread
    ///   panics, it is a leader panic: followers get [`LeaderPanicked`](crate::LeaderPanicked).
    /// - [`Joined::Waiter`]: a flight is running; [`Waiter::wait`],
    ///   [`Waiter::wait_timeout`] or [`Waiter::try_get`] collect its value.
    ///
    /// Everything `work` promises holds: recursion is detected, a leader's
    /// panic reaches its waiters, timeouts leave the flight running,
    /// `forget`, `max_flight_age`, `max_followers` and the stats apply.
    /// `work` itself is this call with the closure run by the leader.
    ///
    /// # Panics
    ///
    /// A call for a key whose flight this thread is leading (holding its
    /// guard) panics with a message containing "recursive". A panic in the
    /// key's traits stays in the calling thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sync_singleflight::{Group, Joined};
    ///
    /// let group: Group<String, String> = Group::new();
    /// match group.join("user:1") {
    ///     Joined::Leader(guard) => {
    ///         let row = "ada".to_string(); // the slow lookup
    ///         assert_eq!(guard.fill(row).value, "ada");
    ///     }
    ///     Joined::Waiter(mut waiter) => {
    ///         let _ = waiter.wait_timeout(Duration::from_millis(10));
    ///     }
    /// }
    /// ```
    pub fn join<Q>(&self, key: &Q) -> Joined<'_, K, V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K>,
    {
        assert_no_key_code_running();
        let (ctx, hash) = self.locate(&key);
        let mut key = Some(key);
        let entered = ctx.shard.enter(hash, &mut key, ctx.policy, false);
        match entered {
            Entered::Leader { id, replacing } => {
                if replacing {
                    observe::replaced(&ctx.policy.observer);
                }
                Joined::Leader(LeaderGuard::new(ctx, id))
            }
            Entered::Follower(call) => Joined::Waiter(Waiter::new(ctx, Some(call))),
            Entered::Full => {
                observe::overflowed(&ctx.policy.observer);
                Joined::Waiter(Waiter::new(ctx, None))
            }
        }
    }
}
