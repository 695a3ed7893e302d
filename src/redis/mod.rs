//! Deduplication across processes through Redis or Valkey (feature
//! `redis`).
//!
//! A [`RedisGroup`] is a local [`Group`](crate::Group) whose leaders
//! coordinate through one Redis deployment (a server, a Sentinel-managed
//! primary or a Cluster: see [`RedisGroup::open`],
//! [`RedisGroup::open_sentinel`], [`RedisGroup::open_cluster`]; `rediss://`
//! with the `redis-tls` feature): the first thread per process and
//! key meets the other processes there, so a hot key runs `f` once for the
//! whole fleet, not once per replica. It is for **efficiency, not mutual
//! exclusion**: a leader paused past its lease (GC, SIGSTOP, a partition)
//! can cause a rare duplicate run. Never use it to protect an invariant,
//! unless the store `f` writes to checks the fencing token that
//! [`RedisGroup::work_fenced`] hands `f` in its [`Lease`].
//!
//! # Protocol
//!
//! Keys: `sf:<namespace>:v<schema>:{k:<key>}:lease` and
//! `…:done:<token>`, all of one key under one hash tag.
//!
//! 1. **Acquire** (a script): `SET lease token NX PX lease`, or return the
//!    holder's token and the lease's PTTL. A fenced call also draws the
//!    key's next fencing token in the same step.
//! 2. **Lead**: run `f` while the group's renewal thread renews the lease every `lease / 3`
//!    with a compare-and-PEXPIRE (a "not ours" reply counts as a lost
//!    lease; a failed renewal is tried again while the lease lasts, and
//!    counts as lost if the flight ends before one succeeds; the leader
//!    still publishes). Then one script
//!    `XADD`s the result to the flight's own stream `…:done:<token>`, sets
//!    its TTL and deletes the lease if it is still ours.
//! 3. **Follow**: wait for the first entry of the holder's stream for the
//!    lease's PTTL plus a slack. The wait is shared: a reader thread (one
//!    connection) runs one `XREAD BLOCK` over every followed stream plus a
//!    private wake-up stream, so following 64 flights costs one
//!    connection, not 64. The entry persists, so a late reader returns at
//!    once and no wake-up can be lost.
//! 4. **Take over**: when that read times out, acquire again in one atomic
//!    step that first checks whether the followed flight has published.
//!    Only one process wins the free lease; the others follow it.
//! 5. **Panic**: a drop guard publishes `abandon` and releases the lease;
//!    remote followers contend again at once, local followers unwind with
//!    [`LeaderPanicked`](crate::LeaderPanicked).
//!
//! Normal cost per process per flight: two commands for a leader (plus a
//! renewal every `lease / 3`), two for a follower. Every step is safe to
//! repeat and is retried once on a fresh connection when its pooled one
//! turns out dead (the Retries table of `docs/redis.md` says why). At most
//! [`RedisConfig::max_connections`] connections per group.
//!
//! # Failures
//!
//! | what happens | [`work`](RedisGroup::work) (fails open) | [`try_work`](RedisGroup::try_work) (strict) |
//! |---|---|---|
//! | Redis down, refusing or timing out | local run, [`FallbackReason::Unavailable`]; failures open the breaker | `Err`, same reason |
//! | a wrong password or ACL user, a missing ACL permission, a TLS failure | local run, [`FallbackReason::Misconfigured`]; the breaker stays closed | `Err`; [`Error::kind`] says which |
//! | a pooled connection died (restart, idle reaping, `CLIENT KILL`) | redialled once, the step re-run; not a breaker failure | same |
//! | breaker open | local run at once, [`FallbackReason::BreakerOpen`]; after the cooldown one caller probes (half-open) | `Err` |
//! | an acquire timed out, then the hung server ran it | the orphaned lease is compare-and-deleted as soon as the server answers | same |
//! | the leader process dies | its followers take over after at most the lease; one runs `f` ([`Source::Takeover`]) | same |
//! | the leader panics | remote followers contend again at once; local followers get `LeaderPanicked` | same |
//! | a leader stalls past its lease | a second run (the efficiency-only case) | same |
//! | a leader keeps renewing past `max_wait` | local run, [`FallbackReason::WaitedTooLong`] | `Err` |
//! | the value's encoding is over `max_payload` | its followers run `f` at once, [`FallbackReason::PayloadTooLarge`] | `Err` |
//! | foreign or corrupt data under our keys, or a lease we never write (not our token format, no TTL) | local run at once, [`FallbackReason::Malformed`]; never a panic | `Err` with the decode error |
//! | Redis fails after `f` ran | the leader's callers get the value; remote followers fall back | same |
//!
//! # What it uses of the crate
//!
//! Only the public API of [`Group`](crate::Group): `new`, `work_with_role`
//! (with [`Outcome`](crate::Outcome) and [`Role`](crate::Role)),
//! `in_flight`, `stats` and its [`Stats`](crate::Stats), and the
//! [`LeaderPanicked`](crate::LeaderPanicked) payload. No Redis type appears
//! outside this module.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use sync_singleflight::redis::{RedisConfig, RedisGroup, Source};
//!
//! let mut config = RedisConfig::new("prices", 2); // schema version 2 of the value
//! config.lease = Duration::from_secs(2);
//! let prices: RedisGroup<String, u64> = RedisGroup::open("redis://127.0.0.1:6379", config)?;
//! let outcome = prices.work_with_outcome("sku-1", || 120);
//! assert_eq!(outcome.value, 120);
//! if let Source::Fallback(reason) = outcome.source {
//!     eprintln!("ran locally: {reason}");
//! }
//! # Ok::<(), sync_singleflight::redis::ConfigError>(())
//! ```

mod backend;
mod breaker;
mod client;
mod codec;
mod config;
mod error;
mod fenced;
mod group;
mod health;
mod key;
mod lead;
mod lease;
mod locks;
mod open;
mod outcome;
mod poll;
mod pool;
mod readers;
mod renew;
mod reply;
mod scripts;
mod sentinel;
#[cfg(feature = "redis-tls")]
mod tls;
mod token;

pub use config::RedisConfig;
pub use error::{ConfigError, Error, ErrorKind};
pub use group::RedisGroup;
pub use health::Health;
pub use key::KeyBytes;
pub use lease::Lease;
pub use outcome::{FallbackReason, RedisStats, RemoteOutcome, Source};
#[cfg(feature = "redis-tls")]
pub use tls::TlsConfig;
