//! One flight's rendezvous: the slot the leader fills, and the list of
//! followers parked until it does.
//!
//! A `Call` exists only once a second caller arrives; a leader alone never
//! allocates one. Lock order is shard, then call: a follower registers under
//! the shard lock (so the registration is final once the leader has removed
//! the flight from its shard), and nobody takes a shard lock while holding a
//! call lock.
//!
//! # Waking a herd
//!
//! A condition variable's `notify_all` hands its waiters to the mutex one at
//! a time (parking_lot requeues them onto it), so a herd of N followers
//! wakes as a chain of N context switches. Here each follower parks its own
//! thread, and waking is a tree: the leader unparks [`RUSH`] followers, and
//! every follower that collects the result unparks up to [`RUSH`] more
//! before it returns. N followers are awake after about log(N) rounds of
//! wake-ups spread over all cores, and no woken follower waits for another.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use crate::error::{LeaderPanicked, Timeout};
use crate::sync::{self, Mutex, Thread};

/// How many parked followers each finisher or collector wakes.
const RUSH: usize = 2;

pub(crate) struct Call<V> {
    state: Mutex<CallState<V>>,
}

struct CallState<V> {
    phase: Phase<V>,
    /// Followers registered and not yet gone. Once the phase leaves
    /// `Running` no follower can time out, so this is then exactly the
    /// number of followers still to collect the result.
    waiting: usize,
    sleepers: Sleepers,
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

/// Followers that parked (or are about to) while the flight runs, in
/// arrival order. A follower keeps its slot index; a slot is emptied when
/// someone takes the thread to wake it, or when its follower leaves on its
/// own (timed out, or woke before anyone got to it), so nobody is woken
/// twice and leaving costs O(1).
#[derive(Default)]
struct Sleepers {
    slots: Vec<Option<Thread>>,
    /// Slots before this one have all been emptied.
    next: usize,
}

/// Threads taken from the list to be unparked once the lock is released.
type Wakeups = [Option<Thread>; RUSH];

impl Sleepers {
    fn add(&mut self, thread: Thread) -> usize {
        self.slots.push(Some(thread));
        self.slots.len() - 1
    }

    fn leave(&mut self, slot: usize) {
        self.slots[slot] = None;
    }

    fn take_some(&mut self) -> Wakeups {
        let mut taken: Wakeups = Default::default();
        let mut filled = 0;
        while filled < RUSH && self.next < self.slots.len() {
            if let Some(thread) = self.slots[self.next].take() {
                taken[filled] = Some(thread);
                filled += 1;
            }
            self.next += 1;
        }
        taken
    }
}

fn wake(threads: Wakeups) {
    for thread in threads.into_iter().flatten() {
        thread.unpark();
    }
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
                sleepers: Sleepers::default(),
            }),
        }
    }

    /// Registers one more follower. Must be called under the shard lock.
    pub(crate) fn add_follower(&self) {
        self.state.lock().waiting += 1;
    }

    /// Hands the result to every registered follower and starts waking them.
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
        let (phase, outcome) = if state.waiting == 0 {
            (
                Phase::Finished {
                    value: None,
                    callers,
                },
                Ok(callers),
            )
        } else {
            match panic::catch_unwind(AssertUnwindSafe(|| value.clone())) {
                Ok(shared) => (
                    Phase::Finished {
                        value: Some(shared),
                        callers,
                    },
                    Ok(callers),
                ),
                Err(payload) => (
                    Phase::Panicked(LeaderPanicked::from_payload(&*payload)),
                    Err(payload),
                ),
            }
        };
        state.phase = phase;
        let first = state.sleepers.take_some();
        drop(state);
        wake(first);
        outcome
    }

    /// Tells every registered follower that the leader panicked.
    pub(crate) fn abandon(&self, why: LeaderPanicked) {
        let mut state = self.state.lock();
        state.phase = Phase::Panicked(why);
        let first = state.sleepers.take_some();
        drop(state);
        wake(first);
    }

    /// Parks until the flight ends or `deadline` passes.
    ///
    /// Returns `Err(LeaderPanicked)` if the leader panicked; the caller
    /// turns that into an unwind after recording it. A `V::clone` panic
    /// propagates from here, after this follower has been accounted for and
    /// has passed the wake-up on.
    pub(crate) fn wait(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Result<Delivered<V>, LeaderPanicked>, Timeout>
    where
        V: Clone,
    {
        let mut state = self.state.lock();
        let mut slot = None;
        // Every wake-up, spurious or timed out, re-checks the phase.
        loop {
            if !matches!(state.phase, Phase::Running) {
                if let Some(slot) = slot {
                    state.sleepers.leave(slot);
                }
                let next = state.sleepers.take_some();
                let collected = state.collect();
                drop(state);
                wake(next);
                return Ok(collected.unwrap_or_else(|payload| panic::resume_unwind(payload)));
            }
            if slot.is_none() {
                slot = Some(state.sleepers.add(sync::current_thread_handle()));
            }
            drop(state);
            let timed_out = match deadline {
                None => {
                    sync::park();
                    false
                }
                Some(deadline) => sync::park_until(deadline),
            };
            state = self.state.lock();
            if timed_out && matches!(state.phase, Phase::Running) {
                if let Some(slot) = slot {
                    state.sleepers.leave(slot);
                }
                state.waiting -= 1;
                return Err(Timeout);
            }
        }
    }
}

impl<V: Clone> CallState<V> {
    /// This follower's share of a landed flight. A panicking clone is caught
    /// so it never unwinds through the lock; the caller resumes it once the
    /// lock is released and the wake-up has been passed on.
    fn collect(&mut self) -> Result<Result<Delivered<V>, LeaderPanicked>, Box<dyn Any + Send>> {
        match &mut self.phase {
            Phase::Running => unreachable!("collect is only called once the flight has landed"),
            Phase::Panicked(why) => Ok(Err(why.clone())),
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
                value.map(|value| {
                    let value = value.expect("each registered follower collects exactly once");
                    Ok(Delivered { value, callers })
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
