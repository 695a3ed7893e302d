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
//! # Features and MSRV
//!
//! None of the optional features is on by default:
//!
//! | feature | adds |
//! |---|---|
//! | `tracing` | a `singleflight.flight` span per flight, with the group's name and the caller's role, and events for timeouts, panics, age replacements and retries |
//! | `metrics` | counters and histograms through the `metrics` facade, labelled with the group's name: `singleflight_flights_total`, `_followers_served_total`, `_follower_timeouts_total`, `_leader_panics_total`, `_follower_panics_total`, `_replacements_total`, `_retries_total`, `_overflows_total`, and the histograms `singleflight_leader_run_seconds`, `_follower_wait_seconds` and `_callers_per_flight` |
//! | `redis` | the `redis` module: `RedisGroup`, one run per key across processes through Redis or Valkey (one server, Sentinel or Cluster) |
//! | `redis-tls` | `rediss://` URLs for the `redis` module, through rustls with ring |
//!
//! The crate builds on Rust 1.85 and newer (edition 2024).
//!
//! # What happens to a call
//!
//! | situation | the leader | each follower |
//! |---|---|---|
//! | `f` returns `v` | gets `v` | gets a clone of `v` |
//! | `f` panics | unwinds with its original payload | unwinds with [`LeaderPanicked`] (carrying the message); its own `f` never runs |
//! | `f` panics, or [`try_work`](Group::try_work)'s `f` returns `Err`, under [`ErrorPolicy::Retry`] | unwinds / gets its error | exactly one of them is elected to rerun the flight with its own `f` (at most `retries` times in a row); the rest, waiters included, stay on the flight and get that run's result |
//! | [`forget`](Group::forget) during the flight | gets `v`; leaves any newer flight alone | followers already waiting get `v`; new callers start a new flight |
//! | the flight is older than [`max_flight_age`](crate::GroupBuilder::max_flight_age) when a new caller arrives | keeps running, gets `v` alone, leaves the replacement alone | are adopted by the replacement flight, which that new caller leads, and get its value |
//! | the flight already has [`max_followers`](crate::GroupBuilder::max_followers) waiting | — | a newcomer does not join: it runs its own `f` in `work`, gets `Err(Timeout)` / `Overloaded` where the call has an error |
//! | [`work_timeout`](Group::work_timeout) / [`work_within`](Group::work_within) | is never cut short | gives up with [`Timeout`] / [`WaitError::Timeout`]; the flight goes on |
//! | a [`LeaderGuard`] from [`join`](Group::join) is dropped unfilled | — | one `work` follower is elected to rerun the flight with its `f`, and the rest get that run's value; with no `work` follower, [`Waiter`]s get [`WaitError::Abandoned`] |
//! | the key's flight is led by this very thread (or a [`Waiter`] is asked to wait for one: its thread led the replacement that adopted it, or was elected to rerun it) | — | panics at once with "recursive" instead of deadlocking |
//!
//! In every row the entry is removed and [`Group::in_flight`] returns to 0,
//! and every follower is counted once in [`Stats`] (see its identity).

//! # Compared with Go's `singleflight`
//!
//! | Go | this crate |
//! |---|---|
//! | `Do(key, fn) (v, err, shared)` | [`Group::work`] returns `V`; put errors in `V` (`Result<T, Arc<E>>`). [`Group::work_with_role`] returns an [`Outcome`] with the role and the number of callers served |
//! | `shared` is true for every follower, and for a leader with company | [`Outcome::role`] and [`Outcome::callers`] keep the two facts apart, so dedup metrics are not inflated; [`Stats`] counts leaders and followers separately |
//! | `DoChan(key, fn) <-chan Result`, mostly used to `select` on a deadline | [`Group::join`] returns a [`LeaderGuard`] to fill or a [`Waiter`] with `wait`, `wait_timeout` and a non-blocking `try_get`; or [`Group::work_timeout`] / [`Group::work_within`] for a budget |
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
//! | input | what happens | test |
//! |---|---|---|
//! | a recursive call for a key this thread is leading (also through other keys, or holding a [`LeaderGuard`]) | panics at once: "…recursive call for a key whose flight this thread is already leading…" | `panics.rs`: `a_recursive_call_on_the_same_key_panics_instead_of_deadlocking`, `a_cycle_through_other_keys_on_one_thread_panics` |
//! | a key whose `Eq`, `Borrow` or `Clone` calls back into a group (a metrics hook calling `in_flight`, say) | that code runs under a shard lock, so the call back panics at once: "a key's Eq, Borrow or Clone called back into a group…"; nothing is added, the group stays usable | `hostile.rs`: `a_key_whose_clone_calls_back_into_the_group_panics_instead_of_hanging`, `a_key_whose_eq_calls_back_into_the_group_panics_and_the_flight_goes_on` |
//! | `work_timeout` with `Duration::ZERO` | a follower gives up at once with [`Timeout`]; a leader runs `f` as usual | `timeout.rs` |
//! | `work_timeout` with `Duration::MAX` (or any timeout past the clock's range) | waits forever, like [`Group::work`]; nothing overflows | `timeout.rs` |
//! | `shards(0)` or more than [`MAX_SHARDS`] | panics in the builder, naming the range | `policies.rs` |
//! | a key whose `Hash`, `Eq` or `Clone` panics | the calling thread panics; no entry is added or left behind, and nobody else notices | `panics.rs`: `panicking_key_traits_hurt_only_their_caller` |
//! | a key whose `Drop` panics | only the call that made that copy of the key sees it (a leader drops its own copy when its flight lands; a `work_owned` follower its own key); no unrelated call, and no other panic's payload, is ever replaced | `hostile.rs`: `a_keys_panicking_drop_stays_with_the_call_that_made_the_copy`, `a_follower_whose_owned_key_panics_on_drop_is_counted_once` |
//! | `f` panics | the leader unwinds with its payload, its followers with [`LeaderPanicked`] | `panics.rs`: `every_caller_sees_the_leaders_panic` |
//! | `V::clone` panics in a follower | that follower unwinds with the clone's panic (counted in `follower_own_panics`); the others get their value | `panics.rs`: `a_panicking_clone_in_a_follower_hurts_only_that_follower` |
//! | `V::clone` panics in the leader (copying the value for its followers) | the leader unwinds with the clone's payload and its own value is leaked, not dropped (so a panicking `Drop` cannot replace that payload); the followers get [`LeaderPanicked`] with the clone's message; `leader_panics` counts it | `hostile.rs`: `a_leader_clone_panic_keeps_its_payload_even_if_the_value_panics_on_drop` (in a child process) |
//! | a value whose `Drop` panics | the group never drops a value itself, so the panic happens where your code drops its copy | `panics.rs`: `the_group_never_drops_a_value_itself` |
//! | a follower's unused closure (or owned key) panics on `Drop` | that follower unwinds with that payload and is counted once (`follower_own_panics`); the value meant for it is leaked rather than dropped inside the group, so a `V` whose `Drop` panics too cannot abort the process | `hostile.rs`: `a_follower_whose_closure_and_value_both_panic_on_drop_does_not_abort` (in a child process) |
//! | the `Group` dropped while another thread waits on it through an `Arc<Group>` | the `Arc` keeps the group alive until that thread returns; only the last owner drops it | `group.rs` |
//!
//! The two leaks are the price of "no value is dropped inside the group":
//! they happen only when a caller is already unwinding from its own code.

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
//! so a `Drop` with side effects (or one that panics) runs in your code. On
//! the two paths where a caller unwinds from its own code while holding a
//! value (see the table above) the value is leaked instead.
//!
//! **Which user code runs under a lock?** Only the key's `Eq` and `Borrow`
//! (to find the flight) and its `Clone` (`ToKey`: a leader's copy of the
//! key), under the key's shard lock. Never your function, `V::clone`, or any
//! `Drop`. A call back into a group from that key code panics instead of
//! deadlocking; a key that blocks on another thread from there can still
//! deadlock, as it would in a `HashMap` behind a mutex.
//!
//! **How much does a call cost when nobody else wants the key?** Two short
//! critical sections on the key's shard, one hash of the key, and a copy of
//! the key. For `String` (and `Vec<u8>`, `PathBuf`, `OsString`, `CString`)
//! keys and keys without drop glue (`u64`, tuples of integers), a landed
//! flight stays in its shard as a vacant slot, and the next leader copies
//! its key into that slot's buffer: in steady state no allocation at all,
//! for `u64` and `String` keys alike; each shard then keeps the key of its
//! last flight until the next one. Other key types are dropped by their own
//! leader when the flight lands (their `Drop` may be user code); use
//! [`Group::work_owned`] to hand over a composite key without a copy. See
//! the README's Performance section for figures against Go.
//!
//! **What does an unset policy cost?** Nothing measurable. On the
//! uncontended path an unset `max_flight_age` and retry policy are one
//! check each; `max_followers` is checked only when a caller finds a
//! flight already running. Measured against the core before policies
//! existed, in alternating runs, the uncontended call got faster (W1 56.7
//! to 49.3 ns; see the CHANGELOG).
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
// On docs.rs (nightly, `--cfg docsrs`), every item behind a feature is marked
// with the feature it needs; `doc_cfg` now includes what `doc_auto_cfg` did.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
#[cfg(feature = "redis")]
pub mod redis;

mod call;
mod error;
mod fallible;
mod flights;
mod follower;
mod group;
mod join;
mod key;
mod leader;
mod observe;
mod outcome;
mod policy;
mod sharded_map;
mod stats;
mod sync;
mod unwind;

pub use builder::{GroupBuilder, MAX_SHARDS};
pub use error::{LeaderPanicked, Timeout, TryError, WaitError};
pub use follower::Waiter;
pub use group::Group;
pub use join::Joined;
pub use key::ToKey;
pub use leader::LeaderGuard;
pub use outcome::{Outcome, Role};
pub use policy::ErrorPolicy;
pub use stats::Stats;
#[cfg(loom)]
#[doc(hidden)]
pub use sync::loom_clock;

/// Compiles and runs every Rust block of the README as a doctest, so the
/// README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
