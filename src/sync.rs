//! The one door through which the crate reaches synchronization primitives.
//!
//! Every lock, condition variable, reference count, atomic and thread
//! identity the core uses comes from here. In a normal build they are
//! `parking_lot` and `std`; under `RUSTFLAGS="--cfg loom"` they are loom's
//! models, so `tests/loom.rs` explores every interleaving of the real code.
//! parking_lot is invisible to loom, which is why nothing outside this module
//! may name it directly.
//!
//! The exported API is parking_lot's shape (no poisoning) plus std's thread
//! parking, and the loom side adapts to it.

#[cfg(not(loom))]
mod imp {
    use std::time::Instant;

    pub(crate) use parking_lot::Mutex;
    pub(crate) use std::sync::Arc;
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
    pub(crate) use std::thread::{Thread, park};

    pub(crate) fn current_thread_handle() -> Thread {
        std::thread::current()
    }

    /// Parks until unparked, woken spuriously, or `deadline`; returns
    /// whether the deadline has passed.
    pub(crate) fn park_until(deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::park_timeout(deadline - now);
        Instant::now() >= deadline
    }

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
    use std::sync::PoisonError;
    use std::time::Instant;

    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

    /// A loom mutex with parking_lot's signature: no poisoning.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    pub(crate) use loom::thread::{Thread, park};

    pub(crate) fn current_thread_handle() -> Thread {
        loom::thread::current()
    }

    /// loom has no clock, so a timed park is modelled as "the deadline
    /// passes before anyone unparks us": it yields (loom may run anyone in
    /// between) and reports a timeout. The caller must then re-check its
    /// condition under its lock, which is exactly the race a real timeout
    /// has with the flight landing.
    pub(crate) fn park_until(_deadline: Instant) -> bool {
        loom::thread::yield_now();
        true
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(crate) struct ThreadToken(loom::thread::ThreadId);

    pub(crate) fn current_thread() -> ThreadToken {
        ThreadToken(loom::thread::current().id())
    }
}

pub(crate) use imp::*;
