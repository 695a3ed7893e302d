//! The one door through which the crate reaches synchronization primitives.
//!
//! Every lock, condition variable, reference count, atomic and thread
//! identity the core uses comes from here. In a normal build they are
//! `parking_lot` and `std`; under `RUSTFLAGS="--cfg loom"` they are loom's
//! models, so `tests/loom.rs` explores every interleaving of the real code.
//! parking_lot is invisible to loom, which is why nothing outside this module
//! may name it directly.
//!
//! The exported API is parking_lot's shape (no poisoning, `wait(&mut guard)`),
//! and the loom side adapts to it.

#[cfg(not(loom))]
mod imp {
    pub(crate) use parking_lot::{Condvar, Mutex};
    pub(crate) use std::sync::Arc;
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

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
    use std::ops::{Deref, DerefMut};
    use std::sync::PoisonError;
    use std::time::Instant;

    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

    /// A loom mutex with parking_lot's signature: no poisoning.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// Keeps the mutex next to the guard, so a timed wait can release and
    /// re-take the lock the way a real timed-out condvar wait does.
    pub(crate) struct MutexGuard<'a, T> {
        mutex: &'a loom::sync::Mutex<T>,
        guard: Option<loom::sync::MutexGuard<'a, T>>,
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard {
                mutex: &self.0,
                guard: Some(self.0.lock().unwrap_or_else(PoisonError::into_inner)),
            }
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.guard
                .as_ref()
                .expect("guard is only absent inside a wait")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.guard
                .as_mut()
                .expect("guard is only absent inside a wait")
        }
    }

    /// Mirrors `parking_lot::WaitTimeoutResult`.
    pub(crate) struct WaitTimeoutResult(bool);

    impl WaitTimeoutResult {
        pub(crate) fn timed_out(&self) -> bool {
            self.0
        }
    }

    #[derive(Debug)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.guard.take().expect("guard present");
            let inner = self.0.wait(inner).unwrap_or_else(PoisonError::into_inner);
            guard.guard = Some(inner);
        }

        /// loom has no clock, so a timed wait is modelled as "the deadline
        /// passes at some point while the lock is released": the lock is
        /// dropped and re-taken (loom may run anyone in between) and the
        /// wait reports a timeout. The caller must then re-check its
        /// condition, which is exactly the race a real timeout has.
        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _deadline: Instant,
        ) -> WaitTimeoutResult {
            drop(guard.guard.take());
            guard.guard = Some(guard.mutex.lock().unwrap_or_else(PoisonError::into_inner));
            WaitTimeoutResult(true)
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(crate) struct ThreadToken(loom::thread::ThreadId);

    pub(crate) fn current_thread() -> ThreadToken {
        ThreadToken(loom::thread::current().id())
    }
}

pub(crate) use imp::*;
