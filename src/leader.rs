//! The lead of a flight: the [`LeaderGuard`] that [`Group::join`](crate::Group::join)
//! hands out, and the landing of a flight that every entry point shares
//! (`work`'s leader is a guard filled with its function's value).

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{self, AssertUnwindSafe};
use std::thread;

use crate::error::LeaderPanicked;
use crate::flights::{FlightId, GiveUp, HandOver, Removed};
use crate::observe::{self, LeaderWatch};
use crate::outcome::{Outcome, Role};
use crate::sharded_map::FlightCtx;
use crate::stats::Event;
use crate::unwind::{drop_caught, forget_panic};

/// The lead of a flight, held by the caller that must produce its value.
///
/// [`fill`](LeaderGuard::fill) it with the value. Dropping it unfilled
/// abandons the flight and never leaves anyone hanging: one follower in
/// [`work`](crate::Group::work) is elected to run its own function for the
/// flight, whose other followers (waiters included) stay and get that run's
/// value; if no follower has a function, [`Waiter`](crate::Waiter)s get
/// [`WaitError::Abandoned`](crate::WaitError::Abandoned). Dropped while its thread unwinds, it counts as
/// a leader panic, and followers get [`LeaderPanicked`](crate::LeaderPanicked) (or, under
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
            watch: Some(LeaderWatch::start(&ctx.policy.observer)),
            _not_send: PhantomData,
        }
    }

    /// Hands `value` to every follower of the flight and ends it. Returns
    /// the value, with `Role::Leader` and the number of callers served.
    ///
    /// # Panics
    ///
    /// If `V::clone` (the copy for the followers) panics, this panics with
    /// the clone's payload, the followers with [`LeaderPanicked`](crate::LeaderPanicked), and
    /// `value` is leaked rather than dropped inside the group.
    ///
    /// # Examples
    ///
    /// See [`Joined`](crate::Joined).
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
            watch.panicked(&ctx.policy.observer);
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
                    observe::retried(&ctx.policy.observer);
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
                observe::retried(&ctx.policy.observer);
                // The key stays with the flight, for its rerun.
                return match result {
                    Ok(value) => {
                        watch.landed(&ctx.policy.observer, 1);
                        Outcome {
                            value,
                            role: Role::Leader,
                            callers: 1,
                        }
                    }
                    Err(payload) => {
                        counters.record(Event::LeaderPanic);
                        watch.panicked(&ctx.policy.observer);
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
                    watch.landed(&ctx.policy.observer, callers);
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
                    watch.panicked(&ctx.policy.observer);
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
            watch.panicked(&ctx.policy.observer);
            forget_panic(drop_caught(key));
            panic::resume_unwind(payload)
        }
    }
}
