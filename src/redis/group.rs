//! [`RedisGroup`]: a local [`Group`] whose leaders dedup across processes.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};

use super::backend::{Backend, By, millis};
use super::client::Dialer;
use super::codec;
use super::key::{KeyBytes, Keys};
use super::lead::Won;
use super::lease::Lease;
use super::poll;
use super::readers::Readers;
use super::renew::Renewer;
use super::reply::{Acquire, Received};
use super::scripts::Claim;
use super::token::{foreign_lease, new_token};
use super::{Error, ErrorKind, RedisConfig, RedisStats, RemoteOutcome, Source};
use crate::{Group, ToKey};

/// How much longer than the lease's remaining time a follower blocks, so
/// that a publish racing the expiry is still seen by the same read.
const READ_SLACK: Duration = Duration::from_millis(50);

/// What every local flight of either mode yields: the value, how the
/// process got it and who ran `f`, or (strict mode only) why it got none.
type Flight<V> = Result<Got<V>, Error>;

/// A remote attempt that produced no value hands `f` back unrun.
type Attempt<V, F> = Result<Got<V>, (Error, F)>;

/// A flight's value, how this process got it, and the node id of the
/// process that ran `f`.
#[derive(Clone)]
struct Got<V> {
    value: V,
    source: Source,
    leader: Arc<str>,
}

/// A group that deduplicates calls by key across threads *and* processes,
/// through one Redis (or Valkey) server.
///
/// Calls first meet in a local [`Group`], so only one thread per process
/// and key talks to Redis; that thread then either takes the key's lease
/// and runs `f` for every process, or waits for the lease holder's result.
/// See the [module docs](super) for the protocol and the failure table.
///
/// [`work`](Self::work) fails open: when Redis is unavailable (or anything
/// else listed in [`FallbackReason`](super::FallbackReason) happens) the call runs `f` locally,
/// still deduplicated within this process. [`try_work`](Self::try_work)
/// returns the [`Error`] instead.
///
/// # Examples
///
/// ```no_run
/// use sync_singleflight::redis::{RedisConfig, RedisGroup};
///
/// let users: RedisGroup<u64, Option<String>> =
///     RedisGroup::open("redis://127.0.0.1:6379", RedisConfig::new("users", 1))?;
/// let name = users.work(&42, || Some("Grace".to_string()));
/// assert_eq!(name.as_deref(), Some("Grace"));
/// # Ok::<(), sync_singleflight::redis::ConfigError>(())
/// ```
pub struct RedisGroup<K, V> {
    open: Group<K, Flight<V>>,
    strict: Group<K, Flight<V>>,
    pub(super) shared: Arc<Shared>,
}

impl<K, V> std::fmt::Debug for RedisGroup<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisGroup")
            .field("keys", &self.shared.backend.prefix)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// What a group's local leaders share: the backend, the maintenance
/// thread's registry and the shared readers.
pub(super) struct Shared {
    pub(super) backend: Arc<Backend>,
    pub(super) renewer: Renewer,
    readers: Readers,
    /// [`RedisConfig::node_id`], shared by every outcome this process leads.
    pub(super) node: Arc<str>,
}

impl<K, V> RedisGroup<K, V> {
    /// A group over `dialer`'s connections, once `config` is validated.
    pub(super) fn assemble(config: RedisConfig, dialer: Dialer) -> Self {
        let shared = Shared {
            readers: Readers::new(&config.key_prefix(), config.readers),
            node: Arc::from(config.node_id.as_str()),
            renewer: Renewer::default(),
            backend: Arc::new(Backend::new(config, dialer)),
        };
        RedisGroup {
            open: Group::new(),
            strict: Group::new(),
            shared: Arc::new(shared),
        }
    }

    /// The configuration this group was opened with.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::redis::{RedisConfig, RedisGroup};
    ///
    /// let group = RedisGroup::<String, u32>::open("redis://127.0.0.1:6379", RedisConfig::new("k", 1)).unwrap();
    /// assert_eq!(group.config().namespace, "k");
    /// ```
    pub fn config(&self) -> &RedisConfig {
        &self.shared.backend.config
    }

    /// Counters for every path a call can take. `local` holds the local
    /// group's counters of [`work`](Self::work) and
    /// [`work_with_outcome`](Self::work_with_outcome) calls, `local_strict`
    /// those of [`try_work`](Self::try_work).
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::redis::{RedisConfig, RedisGroup};
    ///
    /// let group = RedisGroup::<String, u32>::open("redis://127.0.0.1:6379", RedisConfig::new("k", 1)).unwrap();
    /// assert_eq!(group.stats().remote_leaders, 0);
    /// ```
    pub fn stats(&self) -> RedisStats {
        let b = &self.shared.backend;
        let mut stats = b.counters.snapshot(self.open.stats(), self.strict.stats());
        stats.connections_open = b.pool.stats.open.load(Relaxed);
        stats.connections_peak = b.pool.stats.peak.load(Relaxed);
        stats.dialled = b.pool.stats.dialled.load(Relaxed);
        stats.redials = b.pool.stats.redials.load(Relaxed);
        stats.orphans_released = b.orphans_released.load(Relaxed);
        stats.remote_waiting = self.shared.readers.waiting();
        stats
    }

    /// Flights of this process in progress right now.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::redis::{RedisConfig, RedisGroup};
    ///
    /// let group = RedisGroup::<String, u32>::open("redis://127.0.0.1:6379", RedisConfig::new("k", 1)).unwrap();
    /// assert_eq!(group.in_flight(), 0);
    /// ```
    pub fn in_flight(&self) -> usize {
        self.open.in_flight() + self.strict.in_flight()
    }
}

impl<K, V> RedisGroup<K, V>
where
    K: Hash + Eq,
    V: Clone + Serialize + DeserializeOwned,
{
    /// Runs `f` for `key` once across every thread and process using this
    /// Redis server and namespace, or waits for the run in flight, and
    /// returns its value. Fails open: see [`FallbackReason`](super::FallbackReason) for when `f`
    /// runs locally instead.
    ///
    /// # Panics
    ///
    /// As [`Group::work`]: if `f` panics the panic continues in this thread
    /// (after publishing "abandon", so other processes contend again at
    /// once) and this process's followers unwind with
    /// [`LeaderPanicked`](crate::LeaderPanicked).
    ///
    /// # Examples
    ///
    /// See [`RedisGroup`].
    pub fn work<Q, F>(&self, key: &Q, f: F) -> V
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K> + KeyBytes,
        F: FnOnce() -> V,
    {
        self.work_with_outcome(key, f).value
    }

    /// Like [`work`](Self::work), and reports how the value was obtained.
    ///
    /// # Panics
    ///
    /// As [`work`](Self::work).
    ///
    /// # Examples
    ///
    /// See [`RemoteOutcome`].
    pub fn work_with_outcome<Q, F>(&self, key: &Q, f: F) -> RemoteOutcome<V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K> + KeyBytes,
        F: FnOnce() -> V,
    {
        self.open_flight(key, |_: &Lease| f(), false)
    }

    /// The strict variant: never runs `f` outside cross-process dedup, and
    /// returns why instead. A strict and a failing-open caller of the same
    /// key in one process do not share a local flight (they may still
    /// share a remote one).
    ///
    /// # Errors
    ///
    /// An [`Error`] whose [`reason`](Error::reason) is any
    /// [`FallbackReason`](super::FallbackReason). Once this process holds the lease, `f` runs and
    /// its value is returned even if publishing it fails.
    ///
    /// # Panics
    ///
    /// As [`work`](Self::work).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use sync_singleflight::redis::{RedisConfig, RedisGroup};
    ///
    /// let group: RedisGroup<String, u64> =
    ///     RedisGroup::open("redis://127.0.0.1:6379", RedisConfig::new("demo", 1)).unwrap();
    /// match group.try_work("k", || 42) {
    ///     Ok(outcome) => assert_eq!(outcome.value, 42),
    ///     Err(err) => eprintln!("not deduplicated: {err}"),
    /// }
    /// ```
    pub fn try_work<Q, F>(&self, key: &Q, f: F) -> Result<RemoteOutcome<V>, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K> + KeyBytes,
        F: FnOnce() -> V,
    {
        self.local_flight(key, |_: &Lease| f(), true, false)
    }

    /// A failing-open call, fenced or not.
    pub(super) fn open_flight<Q, F>(&self, key: &Q, f: F, fenced: bool) -> RemoteOutcome<V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K> + KeyBytes,
        F: FnOnce(&Lease) -> V,
    {
        match self.local_flight(key, f, false, fenced) {
            Ok(outcome) => outcome,
            Err(_) => unreachable!("a failing-open flight always has a value"),
        }
    }

    /// Meets the process's other callers in the mode's local group (strict
    /// or failing open); its local leader runs [`flight`](Self::flight).
    pub(super) fn local_flight<Q, F>(
        &self,
        key: &Q,
        f: F,
        strict: bool,
        fenced: bool,
    ) -> Result<RemoteOutcome<V>, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K> + KeyBytes,
        F: FnOnce(&Lease) -> V,
    {
        let local = if strict { &self.strict } else { &self.open };
        let outcome = local.work_with_role(key, || self.flight(key, f, strict, fenced));
        let got = outcome.value?;
        Ok(RemoteOutcome {
            value: got.value,
            role: outcome.role,
            source: got.source,
            callers: outcome.callers,
            leader: got.leader,
        })
    }

    /// The body of a local leader: the remote protocol, then the fallback.
    fn flight<Q, F>(&self, key: &Q, f: F, strict: bool, fenced: bool) -> Flight<V>
    where
        Q: ?Sized + KeyBytes,
        F: FnOnce(&Lease) -> V,
    {
        let found = self.remote(key, f, fenced);
        let source = match &found {
            Ok(got) => got.source,
            Err((err, _)) => Source::Fallback(err.reason()),
        };
        self.shared.backend.counters.source(source);
        match found {
            Ok(got) => Ok(got),
            Err((err, _)) if strict => Err(err),
            Err((_, f)) => Ok(Got {
                value: f(&Lease::new(None, None)),
                source,
                leader: Arc::clone(&self.shared.node),
            }),
        }
    }

    /// The cross-process protocol: acquire, then lead or follow, taking
    /// over from a leader that died or gave up.
    fn remote<Q, F>(&self, key: &Q, f: F, fenced: bool) -> Attempt<V, F>
    where
        Q: ?Sized + KeyBytes,
        F: FnOnce(&Lease) -> V,
    {
        let s = &*self.shared;
        let b = &*s.backend;
        if !b.breaker.allows() {
            let err = Error::new(
                ErrorKind::BreakerOpen,
                "Redis failed recently; not trying it yet",
            );
            return Err((err, f));
        }
        let keys = Keys::new(&b.prefix, key);
        let lease_key = keys.lease();
        let fence_key = keys.fence();
        let fence_ttl_ms = fenced.then(|| millis(b.config.fence_ttl));
        let token = new_token();
        // `Duration::MAX` (or any wait past the clock's range) means no
        // deadline, as for `Group::work_timeout`.
        let deadline = Instant::now().checked_add(b.config.max_wait);
        // The flight this caller last followed (its token and result
        // stream), and whether its stream must be checked before
        // contending (after a read that timed out).
        let mut followed: Option<(String, String)> = None;
        let mut check_followed = false;
        // Tokens whose flights ended in "abandon": our publish deletes the
        // lease in the same step, so finding one of them holding the lease
        // again means the lease is not ours (and following it would loop).
        let mut abandoned: Vec<String> = Vec::new();
        loop {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                let err = Error::new(
                    ErrorKind::WaitedTooLong,
                    format!(
                        "other leaders kept the key for over {:?}",
                        b.config.max_wait
                    ),
                );
                return Err((err, f));
            }
            let claim = Claim {
                lease_key: &lease_key,
                fence_key: &fence_key,
                followed_done: followed
                    .as_ref()
                    .map(|(_, done)| done.as_str())
                    .filter(|_| check_followed),
                token: &token,
                lease_ms: millis(b.config.lease),
                fence_ttl_ms,
            };
            let sent = Instant::now();
            let entry = match b.acquire(&claim, &keys.done(&token)) {
                Err(e) => {
                    s.renewer.watch_orphans(&s.backend);
                    return Err((b.error(e), f));
                }
                Ok(Acquire::Acquired { fence }) => {
                    let source = if followed.is_some() {
                        Source::Takeover
                    } else {
                        Source::Leader
                    };
                    let won = Won {
                        keys: &keys,
                        lease_key: &lease_key,
                        token: &token,
                        fence,
                        sent,
                    };
                    let value = s.lead(won, f);
                    let leader = Arc::clone(&s.node);
                    return Ok(Got {
                        value,
                        source,
                        leader,
                    });
                }
                Ok(Acquire::Done(entry)) => entry,
                Ok(Acquire::Held {
                    token: holder,
                    pttl_ms,
                }) => {
                    if b.is_orphan(&holder) {
                        // Ours, set by an acquire whose reply we gave up on.
                        s.renewer.watch_orphans(&s.backend);
                        let orphans = b.orphans();
                        if let Some(orphan) = orphans.iter().find(|o| o.token == holder) {
                            b.release_orphan(orphan, By::Caller);
                        }
                        continue;
                    }
                    if let Err(why) = foreign_lease(&holder, pttl_ms, &abandoned) {
                        return Err((Error::new(ErrorKind::Malformed, why), f));
                    }
                    let remaining = Duration::from_millis(pttl_ms.unsigned_abs());
                    let block = (remaining + READ_SLACK).min(left);
                    let done = keys.done(&holder);
                    let read = if b.pool.is_cluster() {
                        poll::follow(b, &done, block)
                    } else {
                        s.readers.follow(&s.backend, &done, block)
                    };
                    followed = Some((holder, done));
                    match read {
                        Err(err) => return Err((err, f)),
                        Ok(None) => {
                            check_followed = true;
                            continue;
                        }
                        Ok(Some(entry)) => entry,
                    }
                }
            };
            match entry.received() {
                Received::Value(bytes, leader) => {
                    return match codec::decode(&bytes, b.config.max_payload) {
                        Ok(value) => Ok(Got {
                            value,
                            source: Source::Follower,
                            leader: Arc::from(leader),
                        }),
                        Err(why) => Err((Error::new(ErrorKind::Malformed, why), f)),
                    };
                }
                Received::Abandoned => {
                    check_followed = false;
                    abandoned.extend(followed.as_ref().map(|(t, _)| t.clone()));
                }
                Received::Unusable(err) => return Err((err, f)),
            }
        }
    }
}
