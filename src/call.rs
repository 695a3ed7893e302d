//! One flight's rendezvous: the slot the leader fills and the condvar its
//! followers park on.
//!
//! A `Call` exists only once a second caller arrives; a leader alone never
//! allocates one. Lock order is shard, then call: a follower registers under
//! the shard lock (so the registration is final once the leader has removed
//! the flight from its shard), and nobody takes a shard lock while holding a
//! call lock.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use crate::error::{LeaderPanicked, Timeout};
use crate::sync::{Condvar, Mutex};

pub(crate) struct Call<V> {
    state: Mutex<CallState<V>>,
    finished: Condvar,
}

struct CallState<V> {
    phase: Phase<V>,
    /// Followers registered and not yet gone. Once the phase leaves
    /// `Running` no follower can time out, so this is then exactly the
    /// number of followers still to collect the result.
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

/// What a follower collected.
pub(crate) struct Delivered<V> {
    pub(crate) value: V,
    /// The leader plus every follower served by this flight.
    pub(crate) callers: usize,
}

impl<V> Call<V> {
    /// A call whose first follower is the one creating it.
    pub(crate) fn with_first_follower() -> Self {
        Call {
            state: Mutex::new(CallState {
                phase: Phase::Running,
                waiting: 1,
            }),
            finished: Condvar::new(),
        }
    }

    /// Registers one more follower. Must be called under the shard lock.
    pub(crate) fn add_follower(&self) {
        self.state.lock().waiting += 1;
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
    pub(crate) fn finish(&self, value: &V) -> Result<usize, Box<dyn Any + Send>>
    where
        V: Clone,
    {
        let mut state = self.state.lock();
        let callers = 1 + state.waiting;
        // Cloned under the lock, so no follower can time out between the
        // count and the store.
        let shared = if state.waiting == 0 {
            None
        } else {
            match panic::catch_unwind(AssertUnwindSafe(|| value.clone())) {
                Ok(shared) => Some(shared),
                Err(payload) => {
                    state.phase = Phase::Panicked(LeaderPanicked::from_payload(&*payload));
                    drop(state);
                    self.finished.notify_all();
                    return Err(payload);
                }
            }
        };
        state.phase = Phase::Finished {
            value: shared,
            callers,
        };
        drop(state);
        self.finished.notify_all();
        Ok(callers)
    }

    /// Tells every registered follower that the leader panicked.
    pub(crate) fn abandon(&self, why: LeaderPanicked) {
        self.state.lock().phase = Phase::Panicked(why);
        self.finished.notify_all();
    }

    /// Parks until the flight ends or `deadline` passes.
    ///
    /// Returns `Err(LeaderPanicked)` if the leader panicked; the caller
    /// turns that into an unwind after recording it. A `V::clone` panic
    /// propagates from here, after this follower has been accounted for.
    pub(crate) fn wait(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Result<Delivered<V>, LeaderPanicked>, Timeout>
    where
        V: Clone,
    {
        let mut state = self.state.lock();
        // Every wake-up, spurious or timed out, re-checks the phase.
        loop {
            let CallState { phase, waiting } = &mut *state;
            match phase {
                Phase::Running => {}
                Phase::Panicked(why) => return Ok(Err(why.clone())),
                Phase::Finished { value, callers } => {
                    // Counted down before cloning, so that if the clone
                    // panics the last follower still takes the stored value.
                    *waiting -= 1;
                    let callers = *callers;
                    // A panicking clone is caught so it never unwinds through
                    // the guard, then resumed once the lock is released.
                    let value = if *waiting == 0 {
                        Ok(value.take())
                    } else {
                        panic::catch_unwind(AssertUnwindSafe(|| value.clone()))
                    };
                    drop(state);
                    let value = value
                        .unwrap_or_else(|payload| panic::resume_unwind(payload))
                        .expect("each registered follower collects exactly once");
                    return Ok(Ok(Delivered { value, callers }));
                }
            }
            match deadline {
                None => self.finished.wait(&mut state),
                Some(deadline) => {
                    let timed_out = self.finished.wait_until(&mut state, deadline).timed_out();
                    if timed_out && matches!(state.phase, Phase::Running) {
                        state.waiting -= 1;
                        return Err(Timeout);
                    }
                }
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
