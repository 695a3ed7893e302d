//! Dropping and discarding what user code hands the group, catching its
//! panics so that a caller can settle its accounts before it unwinds.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

/// Drops what a caller brought (its unused closure, its key), catching a
/// panic in their `Drop` so the caller can settle its accounts first.
pub(crate) fn drop_caught<T>(leftovers: T) -> Result<(), Box<dyn Any + Send>> {
    panic::catch_unwind(AssertUnwindSafe(move || drop(leftovers)))
}

/// Discards a second panic's payload (without running its `Drop`, which is
/// user code too), keeping the first one the caller is about to resume.
pub(crate) fn forget_panic(result: Result<(), Box<dyn Any + Send>>) {
    if let Err(second) = result {
        std::mem::forget(second);
    }
}
