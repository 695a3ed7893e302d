//! How a caller got its value ([`RemoteOutcome`], [`Source`],
//! [`FallbackReason`]) and the counters for each path ([`RedisStats`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::{Role, Stats};

/// Why a call ran `f` without cross-process dedup (or, for
/// [`RedisGroup::try_work`](super::RedisGroup::try_work), why it failed).
///
/// # Examples
///
/// ```
/// use sync_singleflight::redis::FallbackReason;
///
/// assert_eq!(FallbackReason::BreakerOpen.to_string(), "the circuit breaker is open");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FallbackReason {
    /// Redis could not be reached, or a command failed or timed out.
    Unavailable,
    /// Recent failures opened the circuit breaker; Redis was not tried.
    BreakerOpen,
    /// Other processes' leaders kept the key longer than `max_wait`.
    WaitedTooLong,
    /// The remote leader's value was over its `max_payload`, so it was not
    /// shared.
    PayloadTooLarge,
    /// The remote leader's value could not be serialized.
    Unencodable,
    /// Data under this group's keys was not what the protocol writes: a
    /// foreign or corrupt entry, a value of another schema, an oversized
    /// entry, or a reply of the wrong shape.
    Malformed,
    /// Redis answered, but the setup is wrong: a wrong password or ACL
    /// user, a missing ACL permission, a TLS failure, or a cluster node
    /// reached without a cluster client. Unlike an outage this does not
    /// open the circuit breaker; [`Error::kind`](super::Error::kind) says
    /// which.
    Misconfigured,
}

impl FallbackReason {
    /// Every reason, in the order of [`RedisStats::fallbacks`].
    pub const ALL: [FallbackReason; 7] = [
        FallbackReason::Unavailable,
        FallbackReason::BreakerOpen,
        FallbackReason::WaitedTooLong,
        FallbackReason::PayloadTooLarge,
        FallbackReason::Unencodable,
        FallbackReason::Malformed,
        FallbackReason::Misconfigured,
    ];

    /// Its place in [`ALL`](Self::ALL), which lists the variants in
    /// declaration order.
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FallbackReason::Unavailable => "Redis is unavailable",
            FallbackReason::BreakerOpen => "the circuit breaker is open",
            FallbackReason::WaitedTooLong => "waited longer than max_wait behind other leaders",
            FallbackReason::PayloadTooLarge => "the leader's value was over max_payload",
            FallbackReason::Unencodable => "the leader's value could not be encoded",
            FallbackReason::Malformed => "malformed data in Redis",
            FallbackReason::Misconfigured => "Redis refused this client's setup",
        })
    }
}

/// How this process obtained a flight's value.
///
/// # Examples
///
/// ```
/// use sync_singleflight::redis::{FallbackReason, Source};
///
/// assert!(Source::Leader.ran_here());
/// assert!(!Source::Follower.ran_here());
/// assert!(Source::Fallback(FallbackReason::Unavailable).ran_here());
/// ```
///
/// `#[non_exhaustive]`, like [`FallbackReason`]: a match needs a `_` arm,
/// so a new way to obtain a value is not a breaking change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// This process held the lease and ran `f` (remote leader).
    Leader,
    /// Another process ran `f`; the value came through Redis (remote
    /// follower).
    Follower,
    /// This process followed a leader that died, stalled past its lease or
    /// panicked, then won the lease and ran `f` itself.
    Takeover,
    /// This process ran `f` without cross-process dedup, for this reason.
    Fallback(FallbackReason),
}

impl Source {
    /// Whether `f` ran in this process for this flight.
    pub fn ran_here(self) -> bool {
        !matches!(self, Source::Follower)
    }
}

/// A value together with how it was obtained, locally and across
/// processes; returned by [`RedisGroup::work_with_outcome`](super::RedisGroup::work_with_outcome).
///
/// The six paths of a call are `role` (local leader or local follower)
/// combined with `source` (remote leader, remote follower, takeover or
/// fallback with its reason). A local follower's `source` is what its
/// local leader got.
///
/// # Examples
///
/// ```no_run
/// use sync_singleflight::Role;
/// use sync_singleflight::redis::{RedisConfig, RedisGroup, Source};
///
/// let group: RedisGroup<String, u64> =
///     RedisGroup::open("redis://127.0.0.1:6379", RedisConfig::new("demo", 1)).unwrap();
/// let outcome = group.work_with_outcome("k", || 42);
/// assert_eq!(outcome.value, 42);
/// if outcome.role == Role::Leader && outcome.source == Source::Leader {
///     println!("this thread ran f for every process");
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOutcome<V> {
    /// The flight's value.
    pub value: V,
    /// This caller's part within its process: [`Role::Leader`] for the
    /// thread that talked to Redis (and maybe ran `f`), [`Role::Follower`]
    /// for threads that shared its result.
    pub role: Role,
    /// How the process's local leader got the value.
    pub source: Source,
    /// Callers in this process that got this value (as
    /// [`Outcome::callers`](crate::Outcome::callers)).
    pub callers: usize,
    /// The [`node_id`](super::RedisConfig::node_id) of the process that ran
    /// `f`: this process's own for a leader, a takeover or a fallback, the
    /// publisher's for a remote follower.
    pub leader: Arc<str>,
}

/// Counters of a [`RedisGroup`](super::RedisGroup), read with
/// [`RedisGroup::stats`](super::RedisGroup::stats).
///
/// # Examples
///
/// ```
/// use sync_singleflight::redis::{FallbackReason, RedisStats};
///
/// let stats = RedisStats::default();
/// assert_eq!(stats.fallbacks_for(FallbackReason::Unavailable), 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// The local group's counters (local leaders and followers, panics) of
    /// failing-open calls.
    pub local: Stats,
    /// The same for strict calls.
    pub local_strict: Stats,
    /// Flights this process led across processes.
    pub remote_leaders: u64,
    /// Flights whose value came from another process.
    pub remote_followers: u64,
    /// Flights this process took over from a dead, stalled or panicked leader.
    pub takeovers: u64,
    /// Flights that ran `f` locally (or failed, in strict calls), by reason in
    /// the order of [`FallbackReason::ALL`].
    pub fallbacks: [u64; FallbackReason::ALL.len()],
    /// Leases found lost while leading: a renewal answered "not yours", a
    /// renewal failed, or the publish found another token.
    pub lost_leases: u64,
    /// Results that could not be published (Redis failed after `f` ran).
    pub publish_failures: u64,
    /// Times the circuit breaker opened (a failed half-open probe reopens
    /// it and counts again).
    pub breaker_opens: u64,
    /// Connections to Redis open right now, the shared readers' included;
    /// never above [`RedisConfig::max_connections`](super::RedisConfig::max_connections).
    pub connections_open: usize,
    /// The most connections that were open at once.
    pub connections_peak: usize,
    /// Connections opened so far.
    pub dialled: u64,
    /// Pooled connections found dead on use (a restarted server, an idle
    /// client reaped by the server's `timeout`, a killed client) and
    /// replaced by a fresh one, transparently.
    pub redials: u64,
    /// Leases of ours that the server set after our acquire had timed out
    /// (a hung server resuming), released by compare-and-delete.
    pub orphans_released: u64,
    /// Followers waiting for another process's result right now.
    pub remote_waiting: usize,
}

impl RedisStats {
    /// The number of flights that fell back for `reason`.
    pub fn fallbacks_for(&self, reason: FallbackReason) -> u64 {
        self.fallbacks[reason.index()]
    }
}

/// The live counters behind [`RedisStats`].
#[derive(Default)]
pub(super) struct Counters {
    pub(super) remote_leaders: AtomicU64,
    pub(super) remote_followers: AtomicU64,
    pub(super) takeovers: AtomicU64,
    pub(super) fallbacks: [AtomicU64; FallbackReason::ALL.len()],
    pub(super) lost_leases: AtomicU64,
    pub(super) publish_failures: AtomicU64,
    pub(super) breaker_opens: AtomicU64,
}

impl Counters {
    pub(super) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(super) fn source(&self, source: Source) {
        Self::bump(match source {
            Source::Leader => &self.remote_leaders,
            Source::Follower => &self.remote_followers,
            Source::Takeover => &self.takeovers,
            Source::Fallback(reason) => &self.fallbacks[reason.index()],
        });
    }

    pub(super) fn snapshot(&self, local: Stats, local_strict: Stats) -> RedisStats {
        RedisStats {
            local,
            local_strict,
            remote_leaders: self.remote_leaders.load(Relaxed),
            remote_followers: self.remote_followers.load(Relaxed),
            takeovers: self.takeovers.load(Relaxed),
            fallbacks: std::array::from_fn(|i| self.fallbacks[i].load(Relaxed)),
            lost_leases: self.lost_leases.load(Relaxed),
            publish_failures: self.publish_failures.load(Relaxed),
            breaker_opens: self.breaker_opens.load(Relaxed),
            ..RedisStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FallbackReason;

    #[test]
    fn all_lists_the_reasons_in_declaration_order() {
        for (position, reason) in FallbackReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), position, "{reason:?}");
        }
    }
}
