//! The Redis layer's std locks, taken through poisoning. The layer's state
//! behind them (idle connections, watches, leases, the breaker) is whole
//! after a panic elsewhere: a thread that panicked while holding one left
//! nothing half-changed that a later caller could trip over, and refusing
//! every later call would turn one panic into a lasting outage.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Locks `mutex`, whether or not it is poisoned.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits on `condvar` for at most `timeout`, whether or not the lock is
/// poisoned. Like [`Condvar::wait_timeout`], it may wake early: callers
/// re-check their condition in a loop.
pub(super) fn wait_timeout<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    condvar
        .wait_timeout(guard, timeout)
        .unwrap_or_else(|e| e.into_inner())
        .0
}
