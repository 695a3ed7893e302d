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
//! threads, 100 µs function) from 108k to about 230k calls/s.
//!
//! A follower that finds the flight still running yields its core once
//! before it parks. On a hot key with a short function most followers then
//! find the flight landed (the `landed` flag) and never sleep: a parked
//! thread costs a futex wake and a context switch, a yield about half that.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use crate::error::LeaderPanicked;
use crate::sync::{
    AtomicBool, AtomicUsize, HerdGuard, HerdLock, Ordering, ThreadToken, current_thread, yield_now,
};

pub(crate) struct Call<V> {
    state: HerdLock<CallState<V>>,
    /// Set (before the wake-up) once the phase has left `Running`; read
    /// without the lock only as a hint whether parking is worth it.
    landed: AtomicBool,
    /// Followers that left before the flight landed (timed out, or dropped
    /// their waiter). Changed under the call lock; read without it by the
    /// follower cap, for which a momentary lag is harmless.
    departed: AtomicUsize,
    /// Registered followers that hold a function of their own and so can be
    /// elected to lead a rerun (`work` callers, not `Waiter`s), minus those
    /// that departed or were elected. Raised under the shard lock as they
    /// join, lowered under the call lock.
    candidates: AtomicUsize,
}

struct CallState<V> {
    phase: Phase<V>,
    /// The thread running the flight's function, as its shard records it
    /// (`None` while a rerun waits for its elected follower). Kept here too
    /// because a [`Waiter`](crate::Waiter) reaches the flight through this
    /// call alone, and a waiter whose own thread leads the flight (it led
    /// the replacement that adopted it, or was elected to rerun it) would
    /// otherwise wait for itself forever.
    leader: Option<ThreadToken>,
    /// Set when the flight lands: followers still to collect the result
    /// (joined minus departed; none can depart after landing).
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
    /// The leader gave up without a value (it failed under a retry policy,
    /// or its guard was dropped) and the flight, still in its shard under
    /// the same id, needs a new leader: the first candidate follower to see
    /// this takes the lead (and sets the phase back to `Running`); everyone
    /// else keeps waiting for that rerun.
    Elect,
    /// The leader gave up without a value and no follower could take over:
    /// waiters get `WaitError::Abandoned`.
    Abandoned,
}

/// How a follower's wait ended.
pub(crate) enum Waited<V> {
    /// It got a copy of the value; `callers` counts the leader plus every
    /// follower the value was handed to.
    Served {
        value: V,
        callers: usize,
    },
    LeaderPanicked(LeaderPanicked),
    /// This follower was elected to lead the rerun (see [`Phase::Elect`]).
    Elected,
    /// See [`Phase::Abandoned`].
    Abandoned,
    TimedOut,
    /// Its own `V::clone` panicked, after it was accounted for and the lock
    /// released; the caller records it and resumes the payload.
    ClonePanicked(Box<dyn Any + Send>),
}

impl<V> Call<V> {
    /// Created by a flight's first follower. Followers are counted by the
    /// shard (under the lock they join with), not here, so joining never
    /// takes this lock.
    pub(crate) fn new(leader: Option<ThreadToken>) -> Self {
        Call {
            state: HerdLock::new(CallState {
                phase: Phase::Running,
                leader,
                waiting: 0,
            }),
            landed: AtomicBool::new(false),
            departed: AtomicUsize::new(0),
            candidates: AtomicUsize::new(0),
        }
    }

    /// The flight changed hands: a caller replacing it for its age adopted
    /// this call (under the shard lock; shard then call, as in
    /// [`elect`](Call::elect)).
    pub(crate) fn led_by(&self, leader: Option<ThreadToken>) {
        self.state.lock().leader = leader;
    }

    /// A follower with a function of its own joined (under the shard lock).
    pub(crate) fn add_candidate(&self) {
        self.candidates.fetch_add(1, Ordering::Relaxed);
    }

    /// Called by a leader that gives up without a value, holding the shard
    /// lock of the flight (the one place two locks nest, always shard then
    /// call, and no user code runs here): if a candidate follower is still
    /// waiting, the flight goes to `Elect` and `true` is returned; the
    /// caller then keeps the flight in its shard for the elected one.
    /// Joins (shard lock) and departures (call lock) are both excluded, so
    /// the candidate counted here is certain to see the election.
    pub(crate) fn elect(&self) -> bool {
        let mut state = self.state.lock();
        if !matches!(state.phase, Phase::Running) || self.candidates.load(Ordering::Relaxed) == 0 {
            return false;
        }
        state.phase = Phase::Elect;
        state.leader = None;
        drop(state);
        self.state.notify_all();
        true
    }

    /// Followers that left before the flight landed.
    pub(crate) fn departed(&self) -> usize {
        self.departed.load(Ordering::Relaxed)
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
        debug_assert!(
            matches!(state.phase, Phase::Running),
            "only the leader lands a flight"
        );
        state.waiting = joined - self.departed.load(Ordering::Relaxed);
        let callers = 1 + state.waiting;
        // Cloned under the lock, so no follower can depart between the
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
        self.land(state);
        outcome
    }

    /// Tells every registered follower that the leader panicked, unless the
    /// flight has already ended for them.
    pub(crate) fn abandon(&self, why: LeaderPanicked) {
        let mut state = self.state.lock();
        if matches!(state.phase, Phase::Running) {
            state.phase = Phase::Panicked(why);
            self.land(state);
        }
    }

    /// Tells every registered waiter the flight ended without a value for
    /// it (see [`Phase::Abandoned`]).
    pub(crate) fn abandon_waiters(&self) {
        let mut state = self.state.lock();
        if matches!(state.phase, Phase::Running) {
            state.phase = Phase::Abandoned;
            self.land(state);
        }
    }

    fn land(&self, state: HerdGuard<'_, CallState<V>>) {
        self.landed.store(true, Ordering::Release);
        drop(state);
        // Woken after the unlock, so the herd does not wake into a held lock.
        self.state.notify_all();
    }

    /// Parks until the flight ends or `deadline` passes. A `candidate`
    /// (a follower with a function of its own, which departs on a timeout)
    /// may come back `Elected`; a `Waiter` (not a candidate) stays
    /// registered on a timeout and may wait again.
    ///
    /// # Panics
    ///
    /// If the flight is running on the calling thread: it could never land
    /// while that thread waits.
    pub(crate) fn wait(&self, deadline: Option<Instant>, candidate: bool) -> Waited<V>
    where
        V: Clone,
    {
        if !self.landed.load(Ordering::Acquire) {
            yield_now();
        }
        let me = current_thread();
        let mut state = self.state.lock();
        // Every wake-up, spurious or timed out, re-checks the phase.
        loop {
            match state.phase {
                Phase::Running if state.leader == Some(me) => {
                    drop(state);
                    waiting_for_itself();
                }
                Phase::Running => {}
                Phase::Elect if candidate => {
                    // Elected even past its deadline: a leader always runs,
                    // and once elected nobody else may be left waiting.
                    state.phase = Phase::Running;
                    state.leader = Some(me);
                    self.candidates.fetch_sub(1, Ordering::Relaxed);
                    return Waited::Elected;
                }
                Phase::Elect => {}
                _ => return state.collect(),
            }
            state = match deadline {
                None => self.state.wait(state),
                Some(deadline) => {
                    let (state, timed_out) = self.state.wait_until(state, deadline);
                    // An elected candidate takes the lead at the loop's top,
                    // deadline or not; anyone else still waiting gives up.
                    let waiting = match state.phase {
                        Phase::Running => true,
                        Phase::Elect => !candidate,
                        _ => false,
                    };
                    if timed_out && waiting {
                        if candidate {
                            self.departed.fetch_add(1, Ordering::Relaxed);
                            self.candidates.fetch_sub(1, Ordering::Relaxed);
                        }
                        return Waited::TimedOut;
                    }
                    state
                }
            };
        }
    }

    /// The outcome if the flight has ended, without waiting.
    pub(crate) fn try_collect(&self) -> Option<Waited<V>>
    where
        V: Clone,
    {
        let mut state = self.state.lock();
        match state.phase {
            Phase::Running | Phase::Elect => None,
            _ => Some(state.collect()),
        }
    }

    /// A registered follower leaves without taking the value. Returns
    /// `Departed::Early` if the flight was still running; otherwise the
    /// follower's share is settled, and if it was the last one the stored
    /// value comes back for the caller to dispose of.
    pub(crate) fn depart(&self) -> Departed<V> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        match &mut state.phase {
            Phase::Running | Phase::Elect => {
                self.departed.fetch_add(1, Ordering::Relaxed);
                Departed::Early
            }
            Phase::Finished { value, .. } => {
                let last = state.waiting == 1;
                let value = if last { value.take() } else { None };
                state.waiting -= 1;
                if last {
                    Departed::Last(value)
                } else {
                    Departed::Late
                }
            }
            Phase::Panicked(_) | Phase::Abandoned => Departed::Late,
        }
    }
}

/// Unlocked first, by the caller: a panic hook may call into the group.
#[cold]
#[inline(never)]
fn waiting_for_itself() -> ! {
    panic!(
        "sync_singleflight: recursive wait on a flight this thread is leading (it led the \
         replacement that adopted this Waiter, or was elected to rerun its flight); waiting \
         for itself would deadlock"
    );
}

/// What [`Call::depart`] found.
pub(crate) enum Departed<V> {
    /// The flight was still running; the follower is no longer counted.
    Early,
    /// The flight had ended; nothing is left for this follower to take.
    Late,
    /// The flight had ended and this was the last follower: the stored copy.
    Last(Option<V>),
}

impl<V: Clone> CallState<V> {
    /// This follower's share of a landed flight. A panicking clone is caught
    /// so it never unwinds through the lock; the caller resumes it once the
    /// lock is released.
    fn collect(&mut self) -> Waited<V> {
        match &mut self.phase {
            Phase::Running | Phase::Elect => {
                unreachable!("collect is only called once the flight has landed")
            }
            Phase::Panicked(why) => Waited::LeaderPanicked(why.clone()),
            Phase::Abandoned => Waited::Abandoned,
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
                match value {
                    Ok(value) => Waited::Served {
                        value: value.expect("each registered follower collects exactly once"),
                        callers,
                    },
                    Err(payload) => Waited::ClonePanicked(payload),
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
