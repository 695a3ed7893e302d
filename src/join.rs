//! Leading or waiting by hand: [`Group::join`](crate::Group::join)'s
//! [`LeaderGuard`] and [`Waiter`], and the landing of a flight that every
//! entry point shares (`work` is `join` with the closure run by the leader).

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{self, AssertUnwindSafe};
use std::thread;
use std::time::{Duration, Instant};

use crate::call::{Call, Departed, Waited};
use crate::error::{LeaderPanicked, WaitError};
use crate::group::{Outcome, Role, drop_caught, forget_panic};
use crate::observe::{self, LeaderWatch, WaitClock};
use crate::policy::Policy;
use crate::sharded_map::{FlightId, GiveUp, HandOver, Removed, Shard};
use crate::stats::Event;
use crate::sync::Arc;

/// Where a flight lives and the rules it runs under.
pub(crate) struct FlightCtx<'g, K, V> {
    pub(crate) shard: &'g Shard<K, V>,
    pub(crate) policy: &'g Policy,
}

impl<K, V> Clone for FlightCtx<'_, K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for FlightCtx<'_, K, V> {}

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

/// The lead of a flight, held by the caller that must produce its value.
///
/// [`fill`](LeaderGuard::fill) it with the value. Dropping it unfilled
/// abandons the flight and never leaves anyone hanging: one follower in
/// [`work`](crate::Group::work) is elected to run its own function for the
/// flight, whose other followers (waiters included) stay and get that run's
/// value; if no follower has a function, [`Waiter`]s get
/// [`WaitError::Abandoned`]. Dropped while its thread unwinds, it counts as
/// a leader panic, and followers get [`LeaderPanicked`] (or, under
/// [`ErrorPolicy::Retry`](crate::ErrorPolicy::Retry), one is elected).
///
/// A guard is not `Send`: recursion detection relies on the flight being led
/// by the thread that joined it.
///
/// # Examples
///
/// ```
/// use sync_singleflight::{Group, Joined};
///
/// let group: Group<String, u32> = Group::new();
/// if let Joined::Leader(guard) = group.join("k") {
///     drop(guard); // gave up: nobody was waiting, nothing is left behind
/// }
/// assert_eq!(group.in_flight(), 0);
/// assert_eq!(group.stats().leader_abandons, 1);
/// ```
#[must_use = "dropping the guard abandons the flight"]
pub struct LeaderGuard<'g, K, V> {
    ctx: FlightCtx<'g, K, V>,
    id: FlightId,
    /// Taken once the flight has been handed its result (or its panic).
    watch: Option<LeaderWatch>,
    _not_send: PhantomData<*const ()>,
}

impl<'g, K, V> LeaderGuard<'g, K, V> {
    pub(crate) fn new(ctx: FlightCtx<'g, K, V>, id: FlightId) -> Self {
        LeaderGuard {
            ctx,
            id,
            watch: Some(LeaderWatch::start(ctx.policy)),
            _not_send: PhantomData,
        }
    }

    /// Hands `value` to every follower of the flight and ends it. Returns
    /// the value, with `Role::Leader` and the number of callers served.
    ///
    /// # Panics
    ///
    /// If `V::clone` (the copy for the followers) panics, this panics with
    /// the clone's payload, the followers with [`LeaderPanicked`], and
    /// `value` is leaked rather than dropped inside the group.
    ///
    /// # Examples
    ///
    /// See [`Joined`].
    pub fn fill(self, value: V) -> Outcome<V>
    where
        V: Clone,
    {
        let (ctx, id, watch) = self.disarm();
        land(ctx, id, Ok(value), |_| false, watch)
    }

    /// Runs `f` and lands the flight with its value or its panic: `work`'s
    /// leader path.
    #[inline(always)]
    pub(crate) fn run<F: FnOnce() -> V>(self, f: F, failed: fn(&V) -> bool) -> Outcome<V>
    where
        V: Clone,
    {
        let (ctx, id, watch) = self.disarm();
        // Caught so the followers learn of the panic (and its message) before
        // the leader resumes it; nothing of `f`'s state is looked at afterwards.
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        land(ctx, id, result, failed, watch)
    }

    /// Takes the guard apart for a caller that lands the flight itself, so
    /// its `Drop` (the abandon path) is not even called.
    #[inline]
    fn disarm(self) -> (FlightCtx<'g, K, V>, FlightId, LeaderWatch) {
        let mut guard = ManuallyDrop::new(self);
        let watch = guard.watch.take().expect("a guard lands once");
        (guard.ctx, guard.id, watch)
    }
}

impl<K, V> Drop for LeaderGuard<'_, K, V> {
    fn drop(&mut self) {
        let Some(watch) = self.watch.take() else {
            return;
        };
        let ctx = self.ctx;
        let unwinding = thread::panicking();
        let counters = &ctx.shard.counters;
        if unwinding {
            counters.record(Event::LeaderPanic);
            watch.panicked(ctx.policy);
        } else {
            counters.record(Event::LeaderAbandon);
            watch.abandoned();
        }
        let why = if unwinding {
            GiveUp::Failed {
                retries: ctx.policy.retries,
            }
        } else {
            GiveUp::Abandoned
        };
        let Removed { call, key, .. } = match ctx.shard.hand_over(self.id, why) {
            HandOver::Elected => {
                if unwinding {
                    counters.record(Event::Retry);
                    observe::retried(ctx.policy);
                }
                return;
            }
            HandOver::Removed(removed) => removed,
        };
        if let Some(call) = call {
            if unwinding {
                call.abandon(LeaderPanicked::unknown());
            } else {
                call.abandon_waiters();
            }
        }
        let dropped = drop_caught(key);
        if unwinding {
            forget_panic(dropped);
        } else if let Err(payload) = dropped {
            panic::resume_unwind(payload);
        }
    }
}

impl<K, V> fmt::Debug for LeaderGuard<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderGuard").finish_non_exhaustive()
    }
}

/// Ends a leader's flight: under a retry policy, a failure is handed to an
/// elected follower if one can take it; otherwise the flight is taken out
/// of its shard and its followers are served or failed. Returns the
/// leader's own outcome (or resumes its panic).
#[inline(always)]
fn land<K, V: Clone>(
    ctx: FlightCtx<'_, K, V>,
    id: FlightId,
    result: std::thread::Result<V>,
    failed: fn(&V) -> bool,
    watch: LeaderWatch,
) -> Outcome<V> {
    let counters = &ctx.shard.counters;
    let failure = match &result {
        Ok(value) => failed(value),
        Err(_) => true,
    };
    let removed = if failure && ctx.policy.retries > 0 {
        let why = GiveUp::Failed {
            retries: ctx.policy.retries,
        };
        match ctx.shard.hand_over(id, why) {
            HandOver::Elected => {
                counters.record(Event::Retry);
                observe::retried(ctx.policy);
                // The key stays with the flight, for its rerun.
                return match result {
                    Ok(value) => {
                        watch.landed(ctx.policy, 1);
                        Outcome {
                            value,
                            role: Role::Leader,
                            callers: 1,
                        }
                    }
                    Err(payload) => {
                        counters.record(Event::LeaderPanic);
                        watch.panicked(ctx.policy);
                        panic::resume_unwind(payload)
                    }
                };
            }
            HandOver::Removed(removed) => removed,
        }
    } else {
        ctx.shard.remove(id)
    };
    let Removed {
        call,
        followers,
        key,
    } = removed;
    match result {
        Ok(value) => {
            let served = match call {
                None => Ok(1),
                Some(call) => call.finish(&value, followers),
            };
            match served {
                Ok(callers) => {
                    watch.landed(ctx.policy, callers);
                    // The key is this leader's own: its panic is ours.
                    if let Err(payload) = drop_caught(key) {
                        std::mem::forget(value);
                        panic::resume_unwind(payload);
                    }
                    Outcome {
                        value,
                        role: Role::Leader,
                        callers,
                    }
                }
                Err(clone_payload) => {
                    counters.record(Event::LeaderPanic);
                    watch.panicked(ctx.policy);
                    // Leaked, not dropped: a `Drop` that panicked now would
                    // replace the clone's payload.
                    std::mem::forget(value);
                    forget_panic(drop_caught(key));
                    panic::resume_unwind(clone_payload)
                }
            }
        }
        Err(payload) => {
            if let Some(call) = call {
                call.abandon(LeaderPanicked::from_payload(&*payload));
            }
            counters.record(Event::LeaderPanic);
            watch.panicked(ctx.policy);
            forget_panic(drop_caught(key));
            panic::resume_unwind(payload)
        }
    }
}

/// A place in a running flight's queue, from [`Group::join`](crate::Group::join).
///
/// Collect the value with [`wait`](Waiter::wait),
/// [`wait_timeout`](Waiter::wait_timeout) (which can be called again after
/// a timeout) or [`try_get`](Waiter::try_get) (which never blocks).
/// Dropping a waiter before it returned an outcome gives up its place, like
/// a timeout.
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use std::thread;
/// use std::time::Duration;
/// use sync_singleflight::{Group, Joined, WaitError};
///
/// let group: Group<String, u32> = Group::new();
/// let group = &group;
/// let (leading, is_leading) = mpsc::channel();
/// let (release, released) = mpsc::channel::<()>();
/// thread::scope(|s| {
///     s.spawn(move || {
///         group.work("k", || {
///             leading.send(()).unwrap();
///             released.recv().unwrap();
///             42
///         })
///     });
///     is_leading.recv().unwrap();
///     let Joined::Waiter(mut waiter) = group.join("k") else { unreachable!() };
///     assert_eq!(waiter.try_get(), None); // still running: do something else
///     assert_eq!(waiter.wait_timeout(Duration::ZERO), Err(WaitError::Timeout));
///     release.send(()).unwrap();
///     assert_eq!(waiter.wait(), Ok(42));
/// });
/// ```
#[must_use = "dropping a waiter gives up its place"]
pub struct Waiter<'g, K, V> {
    ctx: FlightCtx<'g, K, V>,
    state: WaiterState<V>,
    clock: WaitClock,
}

enum WaiterState<V> {
    Waiting(Arc<Call<V>>),
    /// Turned away by the follower cap.
    Overloaded,
    /// Its outcome has been returned.
    Done,
}

impl<'g, K, V> Waiter<'g, K, V> {
    pub(crate) fn new(ctx: FlightCtx<'g, K, V>, call: Option<Arc<Call<V>>>) -> Self {
        let state = match call {
            Some(call) => WaiterState::Waiting(call),
            None => WaiterState::Overloaded,
        };
        Waiter {
            ctx,
            state,
            clock: WaitClock::start(),
        }
    }

    /// Parks until the flight ends and returns its value.
    ///
    /// # Errors
    ///
    /// [`WaitError::Abandoned`] if the flight's guard was dropped unfilled
    /// and no follower could rerun it; [`WaitError::Overloaded`] if the
    /// follower cap turned this caller away. (A waiter stays on a flight
    /// that is replaced for its age or rerun after a failure, and gets the
    /// new run's value.)
    ///
    /// # Panics
    ///
    /// - With a [`LeaderPanicked`] payload if the leader panicked, and with
    ///   its own payload if this waiter's `V::clone` panics, as in
    ///   [`work`](crate::Group::work).
    /// - With a message containing "recursive" if the flight is being led by
    ///   this very thread, which could never land it while waiting: this
    ///   thread led the replacement that adopted the waiter (its flight
    ///   outlived [`max_flight_age`](crate::GroupBuilder::max_flight_age)),
    ///   or was elected to rerun it. The waiter gives up its place.
    /// - If the waiter already returned its outcome (from
    ///   [`try_get`](Waiter::try_get) or
    ///   [`wait_timeout`](Waiter::wait_timeout)). That value has been moved
    ///   out, so there is nothing true to answer; an error here would read
    ///   like a flight's outcome and invite a retry loop that never ends.
    ///   It is a bug in the caller, as polling a `Future` after it returned
    ///   `Ready` is.
    ///
    /// # Examples
    ///
    /// See [`Waiter`].
    pub fn wait(mut self) -> Result<V, WaitError>
    where
        V: Clone,
    {
        self.wait_until(None)
    }

    /// Like [`wait`](Waiter::wait), but for at most `timeout`. On
    /// `Err(WaitError::Timeout)` the waiter keeps its place and can wait
    /// again; every other outcome is final.
    ///
    /// # Errors
    ///
    /// As [`wait`](Waiter::wait), plus [`WaitError::Timeout`].
    ///
    /// # Panics
    ///
    /// As [`wait`](Waiter::wait).
    ///
    /// # Examples
    ///
    /// See [`Waiter`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<V, WaitError>
    where
        V: Clone,
    {
        // `None` when the deadline does not fit the clock: wait forever.
        let deadline = Instant::now().checked_add(timeout);
        match deadline {
            Some(deadline) => self.wait_until(Some(deadline)),
            None => self.wait_until(None),
        }
    }

    /// The outcome if the flight has ended, `None` if it is still running.
    /// Never blocks (beyond a brief lock), so it is the one way to ask about
    /// a flight this thread itself leads: `None` until its guard is filled.
    ///
    /// # Errors
    ///
    /// As [`wait`](Waiter::wait).
    ///
    /// # Panics
    ///
    /// As [`wait`](Waiter::wait), except that a flight led by this thread is
    /// not a panic (polling cannot deadlock).
    ///
    /// # Examples
    ///
    /// See [`Waiter`].
    pub fn try_get(&mut self) -> Option<Result<V, WaitError>>
    where
        V: Clone,
    {
        let waited = match &self.state {
            WaiterState::Waiting(call) => call.try_collect()?,
            WaiterState::Overloaded => return Some(Err(WaitError::Overloaded)),
            WaiterState::Done => already_returned(),
        };
        Some(self.settle(waited))
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<V, WaitError>
    where
        V: Clone,
    {
        let waited = match &self.state {
            WaiterState::Waiting(call) => call.wait(deadline, false),
            WaiterState::Overloaded => return Err(WaitError::Overloaded),
            WaiterState::Done => already_returned(),
        };
        self.settle(waited)
    }

    fn settle(&mut self, waited: Waited<V>) -> Result<V, WaitError> {
        if let Waited::TimedOut = waited {
            return Err(WaitError::Timeout);
        }
        self.state = WaiterState::Done;
        let counters = &self.ctx.shard.counters;
        match waited {
            Waited::Served { value, .. } => {
                counters.record(Event::FollowerServed);
                self.clock.served(self.ctx.policy);
                Ok(value)
            }
            Waited::Abandoned => {
                counters.record(Event::FollowerAbandoned);
                Err(WaitError::Abandoned)
            }
            Waited::LeaderPanicked(why) => {
                counters.record(Event::FollowerPanic);
                self.clock.leader_panicked(self.ctx.policy);
                panic::resume_unwind(Box::new(why))
            }
            Waited::ClonePanicked(payload) => {
                counters.record(Event::FollowerOwnPanic);
                panic::resume_unwind(payload)
            }
            Waited::TimedOut => unreachable!("handled above"),
            Waited::Elected => unreachable!("a waiter is never a candidate"),
        }
    }
}

fn already_returned() -> ! {
    panic!("sync_singleflight: this Waiter has already returned its outcome")
}

impl<K, V> Drop for Waiter<'_, K, V> {
    fn drop(&mut self) {
        let WaiterState::Waiting(call) = &self.state else {
            return;
        };
        let departed = call.depart();
        self.ctx.shard.counters.record(Event::FollowerTimeout);
        self.clock.timed_out(self.ctx.policy);
        if let Departed::Last(Some(value)) = departed {
            // The last copy is this waiter's to drop; while unwinding, a
            // second panic from its `Drop` would abort, so it is leaked.
            if thread::panicking() {
                std::mem::forget(value);
            } else {
                drop(value);
            }
        }
    }
}

impl<K, V> fmt::Debug for Waiter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            WaiterState::Waiting(_) => "waiting",
            WaiterState::Overloaded => "overloaded",
            WaiterState::Done => "done",
        };
        f.debug_struct("Waiter").field("state", &state).finish()
    }
}
