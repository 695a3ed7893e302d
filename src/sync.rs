//! The one door through which the crate reaches synchronization primitives.
//!
//! Every lock, condition variable, reference count, atomic and thread
//! identity the core uses comes from here. In a normal build they are
//! `parking_lot` and `std`; under `RUSTFLAGS="--cfg loom"` they are loom's
//! models, so `tests/loom.rs` explores every interleaving of the real code.
//! parking_lot is invisible to loom, which is why nothing outside this module
//! may name it directly.
//!
//! The exported API has no poisoning, and the loom side adapts to it. The
//! shard locks are parking_lot's; the per-flight wait is a [`HerdLock`].

use std::sync::PoisonError;
use std::time::{Duration, Instant};

#[cfg(not(loom))]
mod imp {
    use std::cell::Cell;
    use std::num::NonZeroU64;

    pub(crate) use parking_lot::{Mutex, MutexGuard as ShardGuard};
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    pub(crate) use std::sync::{Arc, Condvar as HerdCondvar, Mutex as HerdMutex, MutexGuard};
    pub(crate) use std::thread::yield_now;

    thread_local! {
        /// How many group locks this thread holds while it runs a key's
        /// trait code.
        static KEY_CODE_DEPTH: Cell<u32> = const { Cell::new(0) };
        /// This thread's [`ThreadToken`], or 0 until it first asks.
        static TOKEN: Cell<u64> = const { Cell::new(0) };
    }

    /// Identifies the calling thread for recursion detection.
    ///
    /// A number handed out once per thread, never reused. (An address of a
    /// thread-local would be cheaper, but the C library hands it to the next
    /// thread once this one exits, and a flight can outlive its leader
    /// thread: a `LeaderGuard` leaked with `mem::forget` does.) Never zero,
    /// so an `Option<ThreadToken>` takes one word.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(crate) struct ThreadToken(NonZeroU64);

    #[inline]
    pub(crate) fn current_thread() -> ThreadToken {
        TOKEN.with(|token| match NonZeroU64::new(token.get()) {
            Some(known) => ThreadToken(known),
            None => first_token(token),
        })
    }

    #[cold]
    #[inline(never)]
    fn first_token(token: &Cell<u64>) -> ThreadToken {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // 2^64 threads would take millennia to start: the count never wraps.
        let fresh = NEXT.fetch_add(1, Ordering::Relaxed);
        token.set(fresh);
        ThreadToken(NonZeroU64::new(fresh).expect("counted up from 1"))
    }

    #[inline]
    pub(crate) fn key_code_depth<R>(f: impl FnOnce(&Cell<u32>) -> R) -> R {
        KEY_CODE_DEPTH.with(f)
    }
}

#[cfg(loom)]
mod imp {
    use std::cell::Cell;

    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    pub(crate) use loom::sync::{Arc, Condvar as HerdCondvar, Mutex as HerdMutex, MutexGuard};
    pub(crate) use loom::thread::yield_now;

    loom::thread_local! {
        static KEY_CODE_DEPTH: Cell<u32> = Cell::new(0);
    }

    pub(crate) fn key_code_depth<R>(f: impl FnOnce(&Cell<u32>) -> R) -> R {
        KEY_CODE_DEPTH.with(f)
    }

    /// A loom mutex with parking_lot's signature: no poisoning.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(HerdMutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(HerdMutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(super::PoisonError::into_inner)
        }
    }

    pub(crate) type ShardGuard<'a, T> = MutexGuard<'a, T>;

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(crate) struct ThreadToken(loom::thread::ThreadId);

    pub(crate) fn current_thread() -> ThreadToken {
        ThreadToken(loom::thread::current().id())
    }
}

pub(crate) use imp::{
    Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, ShardGuard, ThreadToken,
    current_thread, yield_now,
};
use imp::{HerdCondvar, HerdMutex, MutexGuard, key_code_depth};

/// Marks, until dropped, that this thread runs a key's `Eq`, `Borrow` or
/// `Clone` while holding a group lock.
///
/// The group's locks are not re-entrant. A key whose trait code calls back
/// into a group (a metrics hook calling `in_flight`, say) would deadlock on
/// the lock its own thread holds; with this mark the call panics at once
/// instead ([`assert_no_key_code_running`]). Dropping the mark on unwind
/// keeps the count right when the key's code panics.
pub(crate) struct KeyCodeUnderLock(());

impl KeyCodeUnderLock {
    // Inlined: these run on every call, from generic code instantiated in
    // the caller's crate, where a plain function call would not be.
    #[inline]
    pub(crate) fn begin() -> Self {
        key_code_depth(|depth| depth.set(depth.get() + 1));
        KeyCodeUnderLock(())
    }
}

impl Drop for KeyCodeUnderLock {
    #[inline]
    fn drop(&mut self) {
        key_code_depth(|depth| depth.set(depth.get() - 1));
    }
}

/// Panics if the calling thread is inside a key's trait code that a group
/// runs under one of its locks. Every public entry point that takes a group
/// lock calls this first.
#[inline]
pub(crate) fn assert_no_key_code_running() {
    if key_code_depth(|depth| depth.get()) != 0 {
        key_code_called_back();
    }
}

#[cold]
#[inline(never)]
fn key_code_called_back() -> ! {
    panic!(
        "sync_singleflight: a key's Eq, Borrow or Clone called back into a group; \
         that code runs while the group holds a lock, so the call would deadlock"
    );
}

/// A mutex and condvar pair whose `notify_all` wakes every waiter with one
/// futex call (std's), rather than requeueing them onto the mutex to be
/// woken one unlock at a time (parking_lot's): a herd of followers then
/// wakes in one go and only contends briefly on the lock. Poisoning is
/// ignored: no code holding this lock can panic.
#[derive(Debug)]
pub(crate) struct HerdLock<T> {
    mutex: HerdMutex<T>,
    woken: HerdCondvar,
}

pub(crate) type HerdGuard<'a, T> = MutexGuard<'a, T>;

impl<T> HerdLock<T> {
    pub(crate) fn new(value: T) -> Self {
        HerdLock {
            mutex: HerdMutex::new(value),
            woken: HerdCondvar::new(),
        }
    }

    pub(crate) fn lock(&self) -> HerdGuard<'_, T> {
        self.mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn wait<'a>(&self, guard: HerdGuard<'a, T>) -> HerdGuard<'a, T> {
        self.woken
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until notified (or spuriously woken) or `deadline`; also
    /// returns whether the deadline has passed.
    #[cfg(not(loom))]
    pub(crate) fn wait_until<'a>(
        &'a self,
        guard: HerdGuard<'a, T>,
        deadline: Instant,
    ) -> (HerdGuard<'a, T>, bool) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return (guard, true);
        };
        let (guard, _) = self
            .woken
            .wait_timeout(guard, left)
            .unwrap_or_else(PoisonError::into_inner);
        (guard, Instant::now() >= deadline)
    }

    /// loom has no clock (its `wait_timeout` never times out), so a timed
    /// wait is modelled as "the deadline passes at some point while the lock
    /// is released": the lock is dropped and re-taken (loom may run anyone
    /// in between) and the wait reports a timeout. The caller must then
    /// re-check its condition, which is exactly the race a real timeout has.
    #[cfg(loom)]
    pub(crate) fn wait_until<'a>(
        &'a self,
        guard: HerdGuard<'a, T>,
        _deadline: Instant,
    ) -> (HerdGuard<'a, T>, bool) {
        drop(guard);
        (self.lock(), true)
    }

    pub(crate) fn notify_all(&self) {
        self.woken.notify_all();
    }
}

/// Whether a flight that started at `started` is older than `limit`.
#[cfg(not(loom))]
pub(crate) fn has_aged(started: Instant, limit: Duration) -> bool {
    started.elapsed() >= limit
}

/// loom has no clock, so age is modelled as a switch the model flips at any
/// moment ([`loom_clock::age_every_flight`]): the checker then explores
/// every point at which a flight can turn too old, just as a timed wait is
/// modelled by [`HerdLock::wait_until`].
#[cfg(loom)]
pub(crate) fn has_aged(_started: Instant, _limit: Duration) -> bool {
    loom_clock::AGED.load(Ordering::SeqCst)
}

/// The model's control over flight age (`cfg(loom)` only).
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_clock {
    use super::{AtomicBool, Ordering};

    loom::lazy_static! {
        pub(crate) static ref AGED: AtomicBool = AtomicBool::new(false);
    }

    /// From now on, every flight is older than any `max_flight_age`.
    pub fn age_every_flight() {
        AGED.store(true, Ordering::SeqCst);
    }
}
