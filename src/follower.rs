//! Following a flight: `work`'s follower, which waits or is elected to
//! rerun the flight, and the [`Waiter`] that [`Group::join`](crate::Group::join)
//! hands out.

use std::fmt;
use std::panic;
use std::thread;
use std::time::{Duration, Instant};

use crate::call::{Call, Departed, Waited};
use crate::error::WaitError;
use crate::key::KeyArg;
use crate::leader::LeaderGuard;
use crate::observe::{FollowerSpan, WaitClock};
use crate::outcome::{Outcome, Role};
use crate::sharded_map::FlightCtx;
use crate::stats::Event;
use crate::sync::Arc;
use crate::unwind::{drop_caught, forget_panic};

/// The follower's side of `Group::run`: wait for the flight, or be
/// elected to rerun it. Kept out of line so the uncontended leader path
/// stays small enough for the compiler to keep in registers.
#[inline(never)]
pub(crate) fn follow<K, V, A, F>(
    ctx: FlightCtx<'_, K, V>,
    key: Option<A>,
    call: Arc<Call<V>>,
    budget: Option<Duration>,
    f: F,
    failed: fn(&V) -> bool,
) -> Result<Outcome<V>, WaitError>
where
    A: KeyArg<K>,
    F: FnOnce() -> V,
    V: Clone,
{
    // `None` when the deadline does not fit the clock: wait forever.
    let deadline = budget.and_then(|budget| Instant::now().checked_add(budget));
    let clock = WaitClock::start();
    let waited = {
        let _span = FollowerSpan::enter(&ctx.policy.observer);
        call.wait(deadline, true)
    };
    if let Waited::Elected = waited {
        let id = ctx.shard.claim(&call);
        drop(call);
        drop(key);
        return Ok(LeaderGuard::new(ctx, id).run(f, failed));
    }
    drop(call);
    let counters = &ctx.shard.counters;
    match waited {
        // A follower with a function of its own is a candidate: while one
        // waits, a leader that gives up elects instead of abandoning
        // (both decided under the shard and call locks).
        Waited::Elected | Waited::Abandoned => {
            unreachable!("a candidate is elected, never abandoned")
        }
        Waited::Served { value, callers } => {
            // Dropped only now that the follower is settled, so a
            // panicking `Drop` cannot strand a registration.
            if let Err(payload) = drop_caught((f, key)) {
                counters.record(Event::FollowerOwnPanic);
                std::mem::forget(value);
                panic::resume_unwind(payload);
            }
            counters.record(Event::FollowerServed);
            clock.served(&ctx.policy.observer);
            Ok(Outcome {
                value,
                role: Role::Follower,
                callers,
            })
        }
        Waited::TimedOut => {
            counters.record(Event::FollowerTimeout);
            clock.timed_out(&ctx.policy.observer);
            drop((f, key));
            Err(WaitError::Timeout)
        }
        Waited::LeaderPanicked(why) => {
            counters.record(Event::FollowerPanic);
            clock.leader_panicked(&ctx.policy.observer);
            drop((f, key));
            panic::resume_unwind(Box::new(why));
        }
        Waited::ClonePanicked(payload) => {
            counters.record(Event::FollowerOwnPanic);
            // The clone's payload is the one to report.
            forget_panic(drop_caught((f, key)));
            panic::resume_unwind(payload);
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
    /// - With a [`LeaderPanicked`](crate::LeaderPanicked) payload if the leader panicked, and with
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
                self.clock.served(&self.ctx.policy.observer);
                Ok(value)
            }
            Waited::Abandoned => {
                counters.record(Event::FollowerAbandoned);
                Err(WaitError::Abandoned)
            }
            Waited::LeaderPanicked(why) => {
                counters.record(Event::FollowerPanic);
                self.clock.leader_panicked(&self.ctx.policy.observer);
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
        self.clock.timed_out(&self.ctx.policy.observer);
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
