//! Deduplicate concurrent blocking calls by key.
//!
//! When a burst of threads all ask for the same thing at once (validating
//! the same login token, loading the same user row) each would hit the
//! backend separately. A [`Group`] lets exactly one of them, the *leader*,
//! run the function; every other thread asking for that key meanwhile, a
//! *follower*, parks until the leader finishes and gets a clone of the same
//! value, errors included. Nothing is cached: once the call lands its entry
//! is gone and the next call runs the function again.
//!
//! This is the blocking-thread counterpart of Go's
//! `golang.org/x/sync/singleflight`, for threaded servers, synchronous
//! database drivers and codebases with no async runtime.
//!
//! # Quick start
//!
//! ```
//! use std::sync::{Arc, LazyLock};
//! use sync_singleflight::Group;
//!
//! #[derive(Clone, Debug, PartialEq)]
//! struct User { id: u64, name: String }
//!
//! #[derive(Debug)]
//! enum DbError { NotFound }
//!
//! // One group per kind of lookup; errors are shared through an `Arc`.
//! static USERS: LazyLock<Group<u64, Result<User, Arc<DbError>>>> = LazyLock::new(Group::new);
//!
//! fn load_user(id: u64) -> Result<User, Arc<DbError>> {
//!     USERS.work(&id, || {
//!         // The slow query; concurrent callers for the same id share one run.
//!         if id == 0 {
//!             return Err(Arc::new(DbError::NotFound));
//!         }
//!         Ok(User { id, name: format!("user {id}") })
//!     })
//! }
//!
//! assert_eq!(load_user(7).unwrap().name, "user 7");
//! assert!(matches!(*load_user(0).unwrap_err(), DbError::NotFound));
//! ```
//!
//! # What happens to a call
//!
//! | situation | the leader | each follower |
//! |---|---|---|
//! | `f` returns `v` | gets `v` | gets a clone of `v` |
//! | `f` panics | unwinds with its original payload | unwinds with [`LeaderPanicked`] (carrying the message); its own `f` never runs |
//! | [`forget`](Group::forget) during the flight | gets `v`; leaves any newer flight alone | followers already waiting get `v`; new callers start a new flight |
//! | [`work_timeout`](Group::work_timeout) | is never cut short | gives up with [`Timeout`]; the flight goes on |
//! | the key's flight is led by this very thread | — | panics at once with "recursive" instead of deadlocking |
//!
//! In every row the entry is removed and [`Group::in_flight`] returns to 0.
//!
//! # Compared with Go's `singleflight`
//!
//! | Go | this crate |
//! |---|---|
//! | `Do(key, fn) (v, err, shared)` | [`Group::work`] returns `V`; put errors in `V` (`Result<T, Arc<E>>`). [`Group::work_with_role`] returns an [`Outcome`] with the role and the number of callers served |
//! | `shared` is true for every follower, and for a leader with company | [`Outcome::role`] and [`Outcome::callers`] keep the two facts apart, so dedup metrics are not inflated; [`Stats`] counts leaders and followers separately |
//! | `DoChan(key, fn) <-chan Result` | no channel API; a follower that must not wait long uses [`Group::work_timeout`] |
//! | `Forget(key)` | [`Group::forget`], which also tells whether there was a flight; the identity check of Go issue 31420 is built in |
//! | a panic in `fn` re-panics in every `Do` waiter (and crashes the process if a `DoChan` waiter exists) | the leader keeps its payload, followers unwind with [`LeaderPanicked`]; nothing crashes or hangs |
//! | a recursive `Do` on the same key deadlocks silently | panics with a message naming the problem |
//! | no cancellation or timeouts | followers can time out; the leader always finishes |
//! | one mutex for the whole group | sharded table: distinct keys rarely share a lock, never wait for each other's function |
//!
//! # Differences from the standard library's `OnceLock`, `once_cell` and moka's `get_with`
//!
//! Those cells *cache*: a value, once computed, is kept. A group keeps
//! nothing; it only merges calls that overlap in time.
//!
//! On a panic they differ too. In `once_cell`/`OnceLock` (and moka's
//! `get_with`) a panicking initializer leaves the cell empty and a waiting
//! thread retries with its *own* closure, so a backend that crashes the
//! initializer is hit again by every waiter in turn. Here, as in Go, the
//! followers of a panicking leader share its failure: each unwinds with
//! [`LeaderPanicked`] and no follower runs its function. The next call after
//! the flight starts fresh.
//!
//! # When to use a group, and when a cache
//!
//! Use a group when results must be fresh but bursts of identical requests
//! are common: the answer may change a moment later (a token may be revoked,
//! a row updated), yet a thousand requests arriving in the same
//! millisecond can share one lookup. Use a cache when a slightly stale value
//! is acceptable for a known time. The two compose: put a group in front of
//! the cache-miss path so that a miss on a hot key loads once, not once per
//! request.
//!
//! **Keys must carry every input that shapes the result**, including tenant
//! or authorization context, or one user's result can reach another (the
//! class of bug behind Squid's collapsed-forwarding advisories).
//!
//! # Recipes
//!
//! A blocking database lookup, with errors shared:
//!
//! ```
//! use std::sync::Arc;
//! use sync_singleflight::Group;
//!
//! struct Repo { lookups: Group<u64, Result<String, Arc<std::io::Error>>> }
//!
//! impl Repo {
//!     fn name(&self, id: u64) -> Result<String, Arc<std::io::Error>> {
//!         self.lookups.work(&id, || query_db(id).map_err(Arc::new))
//!     }
//! }
//! # fn query_db(id: u64) -> std::io::Result<String> { Ok(format!("#{id}")) }
//! let repo = Repo { lookups: Group::new() };
//! assert_eq!(repo.name(3).unwrap(), "#3");
//! ```
//!
//! A key that includes the tenant, so results never cross tenants:
//!
//! ```
//! use sync_singleflight::Group;
//!
//! let sessions: Group<(String, String), bool> = Group::new();
//! let tenant = "acme".to_string();
//! let token = "t0k3n".to_string();
//! let valid = sessions.work(&(tenant, token), || true);
//! assert!(valid);
//! ```
//!
//! A follower with a budget, which falls back to its own answer:
//!
//! ```
//! use std::time::Duration;
//! use sync_singleflight::Group;
//!
//! let prices: Group<String, u32> = Group::new();
//! let price = prices
//!     .work_timeout("sku-1", Duration::from_millis(50), || 120)
//!     .unwrap_or(100); // stale default if the flight takes too long
//! assert_eq!(price, 120);
//! ```
//!
//! # Bad input gets a clear answer
//!
//! | input | what happens |
//! |---|---|
//! | a recursive call for a key this thread is leading (also through other keys) | panics at once: "…recursive call for a key whose flight this thread is already leading…" |
//! | `work_timeout` with `Duration::ZERO` | a follower gives up at once with [`Timeout`]; a leader runs `f` as usual |
//! | `work_timeout` with `Duration::MAX` (or any timeout past the clock's range) | waits forever, like [`Group::work`]; nothing overflows |
//! | a key whose `Hash`, `Eq` or `ToOwned`/`Clone` panics | the calling thread panics; no entry is added or left behind, and nobody else notices |
//! | `f` panics | the leader unwinds with its payload, its followers with [`LeaderPanicked`] |
//! | `V::clone` panics in a follower | that follower unwinds with the clone's panic; the others get their value |
//! | `V::clone` panics in the leader (copying the value for its followers) | treated as a leader panic: the followers get [`LeaderPanicked`] |
//! | a value whose `Drop` panics | the group never drops a value itself, so the panic happens where your code drops its copy |
//! | a closure whose captures panic on `Drop` (a follower's unused `f`) | it is dropped after the follower has its value, so only that follower panics |
//! | the `Group` dropped while another thread waits on it through an `Arc<Group>` | the `Arc` keeps the group alive until that thread returns; only the last owner drops it |
//!
//! Each row has a test in `tests/` (`panics.rs`, `timeout.rs`, `group.rs`).
//!
//! # FAQ
//!
//! **Does a follower's timeout cancel the leader?** No. Only a follower's
//! wait is bounded; the leader always runs to the end and the other
//! followers still get the value. Cancelling shared work because one caller
//! lost interest is the bug that forks of Go's package have had.
//!
//! **What about a deadlock across threads?** A thread that calls back into
//! a key it is itself leading is detected. A cycle *between* threads
//! (thread A leads `x` and waits for `y`, while thread B leads `y` and waits
//! for `x`) is a real deadlock in your code and is not detected; bound such
//! waits with [`Group::work_timeout`].
//!
//! **Why must `V` be `Clone`?** Every follower gets its own copy. For large
//! values use `Arc<T>`; each follower then clones a pointer. The last
//! follower takes the stored copy rather than cloning it.
//!
//! **Does the group ever drop my value?** No. The leader keeps its own
//! value and the followers' copy is always collected by the last follower,
//! so a `Drop` with side effects (or one that panics) runs in your code.
//!
//! **How much does a call cost when nobody else wants the key?** Two short
//! critical sections on the key's shard, one hash of the key, and a copy of
//! the key into a buffer the shard recycles (`ToOwned::clone_into`), so in
//! steady state no allocation at all, for `u64` and `String` keys alike. The
//! price is that each shard keeps the key of its last flight until the next
//! one replaces it (or the group is dropped): mind that if your keys are
//! megabytes long or their `Drop` does something. See the README's
//! Performance section for figures against Go.
//!
//! **Is it poisoned by a panic?** No. The shard locks are `parking_lot`
//! locks, which do not poison; the per-flight lock is std's (its condvar
//! wakes a whole herd with one futex call), is never held while user code
//! that may panic runs, and ignores poisoning anyway. Every path removes its
//! entry before unwinding.
//!
//! **Why is there no `unsafe`?** There is no need for it: the crate is
//! `#![forbid(unsafe_code)]`, and everything it synchronizes with goes
//! through one private module that the loom models replace.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "redis")]
pub mod redis;

mod call;
mod error;
mod group;
mod sharded_map;
mod stats;
mod sync;

pub use error::{LeaderPanicked, Timeout};
pub use group::{Group, Outcome, Role};
pub use stats::Stats;
