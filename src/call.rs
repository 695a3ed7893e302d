//! One flight's rendezvous: the slot the leader fills and the condvar its
//! followers wait on.
//!
//! A `Call` exists only once a second caller arrives; a leader alone never
//! allocates one. No lock is ever taken inside another: a follower is
//! counted under the shard lock it joins with (so the count is final once
//! the leader has removed the flight from its shard), and waits under the
//! call lock alone.
//!
//! # Waking a herd
//!
//! parking_lot's `notify_all` requeues the waiters onto the mutex, so a herd
//! of N followers wakes as a chain of N context switches, each follower
//! waiting for the previous one to unlock. The lock here is std's, whose
//! `notify_all` wakes the whole herd with one futex call; the woken
//! followers then hold the lock only long enough to take their copy. On the
//! 2-core machine of the peer comparison this took the hot-key workload (64
//! threads, 100 µs function) from 108k to about 230k calls/s. Parking each
//! follower's own thread and waking them as a tree was also measured: better
//! wake latency for 64 followers, but only 135k–200k calls/s, because every
//! unpark is a system call of its own.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use crate::error::LeaderPanicked;
use crate::sync::HerdLock;

pub(crate) struct Call<V> {
    state: HerdLock<CallState<V>>,
}

struct CallState<V> {
    phase: Phase<V>,
    /// Followers that gave up before the flight landed.
    timed_out: usize,
    /// Set when the flight lands: followers still to collect the result
    /// (joined minus timed out; none can time out after landing).
    waiting: usize,
}

enum Phase<V> {
    Running,
    /// `value` is `None` once the last follower has taken it.
    Finished {
        value: Option<V>,
        callers: usize,
    },
    Panicked(LeaderPanicked),
}

/// How a follower's wait ended.
pub(crate) enum Waited<V> {
    /// It got a copy of the value; `callers` counts the leader plus every
    /// follower served by this flight.
    Served {
        value: V,
        callers: usize,
    },
    LeaderPanicked(LeaderPanicked),
    TimedOut,
}

impl<V> Call<V> {
    /// Created by a flight's first follower. Followers are counted by the
    /// shard (under the lock they join with), not here, so joining never
    /// takes this lock.
    pub(crate) fn new() -> Self {
        Call {
            state: HerdLock::new(CallState {
                phase: Phase::Running,
                timed_out: 0,
                waiting: 0,
            }),
        }
    }

    /// Hands the result to every registered follower and wakes them.
    /// Returns how many callers the flight served, the leader included.
    ///
    /// The leader keeps `value`; followers get clones, except that the last
    /// follower takes the stored copy, so a flight clones once per follower
    /// and no value is ever dropped inside the call (a panicking `Drop`
    /// stays in user hands).
    ///
    /// If cloning panics, the followers are told the leader panicked and the
    /// payload is handed back for the leader to resume.
    ///
    /// `joined` is the number of followers that joined the flight, final
    /// once the leader has taken the flight out of its shard.
    pub(crate) fn finish(&self, value: &V, joined: usize) -> Result<usize, Box<dyn Any + Send>>
    where
        V: Clone,
    {
        let mut state = self.state.lock();
        state.waiting = joined - state.timed_out;
        let callers = 1 + state.waiting;
        // Cloned under the lock, so no follower can time out between the
        // count and the store.
        let shared = if state.waiting == 0 {
            Ok(None)
        } else {
            panic::catch_unwind(AssertUnwindSafe(|| Some(value.clone())))
        };
        let outcome = match shared {
            Ok(value) => {
                state.phase = Phase::Finished { value, callers };
                Ok(callers)
            }
            Err(payload) => {
                state.phase = Phase::Panicked(LeaderPanicked::from_payload(&*payload));
                Err(payload)
            }
        };
        drop(state);
        self.state.notify_all();
        outcome
    }

    /// Tells every registered follower that the leader panicked.
    pub(crate) fn abandon(&self, why: LeaderPanicked) {
        self.state.lock().phase = Phase::Panicked(why);
        self.state.notify_all();
    }

    /// Parks until the flight ends or `deadline` passes. A `V::clone`
    /// panic propagates from here, after this follower has been accounted
    /// for and the lock released.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Waited<V>
    where
        V: Clone,
    {
        let mut state = self.state.lock();
        // Every wake-up, spurious or timed out, re-checks the phase.
        loop {
            if !matches!(state.phase, Phase::Running) {
                let collected = state.collect();
                drop(state);
                return collected.unwrap_or_else(|payload| panic::resume_unwind(payload));
            }
            state = match deadline {
                None => self.state.wait(state),
                Some(deadline) => {
                    let (mut state, timed_out) = self.state.wait_until(state, deadline);
                    if timed_out && matches!(state.phase, Phase::Running) {
                        state.timed_out += 1;
                        return Waited::TimedOut;
                    }
                    state
                }
            };
        }
    }
}

impl<V: Clone> CallState<V> {
    /// This follower's share of a landed flight. A panicking clone is caught
    /// so it never unwinds through the lock; the caller resumes it once the
    /// lock is released.
    fn collect(&mut self) -> Result<Waited<V>, Box<dyn Any + Send>> {
        match &mut self.phase {
            Phase::Running => unreachable!("collect is only called once the flight has landed"),
            Phase::Panicked(why) => Ok(Waited::LeaderPanicked(why.clone())),
            Phase::Finished { value, callers } => {
                let callers = *callers;
                // Counted down before cloning, so that if the clone panics the
                // last follower still takes the stored value.
                self.waiting -= 1;
                let value = if self.waiting == 0 {
                    Ok(value.take())
                } else {
                    panic::catch_unwind(AssertUnwindSafe(|| value.clone()))
                };
                value.map(|value| Waited::Served {
                    value: value.expect("each registered follower collects exactly once"),
                    callers,
                })
            }
        }
    }
}

/// Checks, in tests and models, the promise that no value is ever dropped
/// inside a call: the last follower always takes the stored copy.
#[cfg(any(debug_assertions, loom))]
impl<V> Drop for Call<V> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let state = self.state.lock();
        if let Phase::Finished { value, .. } = &state.phase {
            assert!(value.is_none(), "a finished value was never collected");
        }
    }
}
