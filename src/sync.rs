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
use std::time::Instant;

#[cfg(not(loom))]
mod imp {
    pub(crate) use parking_lot::Mutex;
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
    pub(crate) use std::sync::{Arc, Condvar as HerdCondvar, Mutex as HerdMutex, MutexGuard};

    /// Identifies the calling thread for recursion detection.
    ///
    /// The address of a thread-local byte is unique among live threads and
    /// costs one TLS offset to compute, unlike `thread::current()`, which
    /// touches a reference count. An address may be reused after its thread
    /// exits, but a flight never outlives its leader thread, so no stale
    /// token is ever compared.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(crate) struct ThreadToken(usize);

    pub(crate) fn current_thread() -> ThreadToken {
        thread_local! {
            static ANCHOR: u8 = const { 0 };
        }
        ANCHOR.with(|anchor| ThreadToken(std::ptr::from_ref(anchor) as usize))
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
    pub(crate) use loom::sync::{Arc, Condvar as HerdCondvar, Mutex as HerdMutex, MutexGuard};

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

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(crate) struct ThreadToken(loom::thread::ThreadId);

    pub(crate) fn current_thread() -> ThreadToken {
        ThreadToken(loom::thread::current().id())
    }
}

pub(crate) use imp::{Arc, AtomicU64, Mutex, Ordering, ThreadToken, current_thread};
use imp::{HerdCondvar, HerdMutex, MutexGuard};

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
