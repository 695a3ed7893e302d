//! [`RedisGroup`]: a local [`Group`] whose leaders dedup across processes.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};

use super::backend::{Backend, By, millis};
use super::codec;
use super::key::{KeyBytes, Keys};
use super::outcome::Counters;
use super::readers::Readers;
use super::renew::Renewer;
use super::reply::{Acquire, CallError, LeaseState, Received, Status};
use super::token::{foreign_lease, new_token};
use super::{ConfigError, Error, FallbackReason, RedisConfig, RedisStats, RemoteOutcome, Source};
use crate::{Group, ToKey};

/// How much longer than the lease's remaining time a follower blocks, so
/// that a publish racing the expiry is still seen by the same read.
const READ_SLACK: Duration = Duration::from_millis(50);

/// What every local flight of either mode yields: the value and how the
/// process got it, or (strict mode only) why it got none.
type Flight<V> = Result<(V, Source), Error>;

/// A remote attempt that produced no value hands `f` back unrun.
type Attempt<V, F> = Result<(V, Source), (Error, F)>;

/// A group that deduplicates calls by key across threads *and* processes,
/// through one Redis (or Valkey) server.
///
/// Calls first meet in a local [`Group`], so only one thread per process
/// and key talks to Redis; that thread then either takes the key's lease
/// and runs `f` for every process, or waits for the lease holder's result.
/// See the [module docs](super) for the protocol and the failure table.
///
/// [`work`](Self::work) fails open: when Redis is unavailable (or anything
/// else listed in [`FallbackReason`] happens) the call runs `f` locally,
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
    shared: Arc<Shared>,
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
struct Shared {
    backend: Arc<Backend>,
    renewer: Renewer,
    readers: Readers,
}

impl<K, V> RedisGroup<K, V> {
    /// A group talking to the Redis server at `url` (`redis://host:port/db`,
    /// as the `redis` crate parses it). Nothing is connected yet, so a
    /// server that is down now only makes the first calls fall back.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the URL does not parse or the configuration
    /// cannot work (an empty namespace or one with braces, a lease below
    /// 30 ms, a renewal not shorter than the lease, a zero timeout or
    /// breaker threshold, no reader, or `max_connections` not above
    /// `readers`).
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::redis::{RedisConfig, RedisGroup};
    ///
    /// // Opening does not connect: this works with no server running.
    /// let group = RedisGroup::<String, u32>::open("redis://127.0.0.1:6379", RedisConfig::new("k", 1));
    /// assert!(group.is_ok());
    /// assert!(RedisGroup::<String, u32>::open("not a url", RedisConfig::new("k", 1)).is_err());
    /// ```
    pub fn open(url: &str, config: RedisConfig) -> Result<Self, ConfigError> {
        config.validate().map_err(ConfigError)?;
        let bad_url = |e: redis::RedisError| ConfigError(format!("URL {url:?}: {e}"));
        // Every exchange is one small request and one reply: no Nagle delay.
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(bad_url)?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(bad_url)?;
        let shared = Shared {
            readers: Readers::new(&config.key_prefix(), config.readers),
            renewer: Renewer::default(),
            backend: Arc::new(Backend::new(config, client)),
        };
        Ok(RedisGroup {
            open: Group::new(),
            strict: Group::new(),
            shared: Arc::new(shared),
        })
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
    /// returns its value. Fails open: see [`FallbackReason`] for when `f`
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
        let outcome = self.open.work_with_role(key, || self.flight(key, f, false));
        let (value, source) = match outcome.value {
            Ok(found) => found,
            Err(_) => unreachable!("a failing-open flight always has a value"),
        };
        RemoteOutcome {
            value,
            role: outcome.role,
            source,
            callers: outcome.callers,
        }
    }

    /// The strict variant: never runs `f` outside cross-process dedup, and
    /// returns why instead. A strict and a failing-open caller of the same
    /// key in one process do not share a local flight (they may still
    /// share a remote one).
    ///
    /// # Errors
    ///
    /// An [`Error`] whose [`reason`](Error::reason) is any
    /// [`FallbackReason`]. Once this process holds the lease, `f` runs and
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
        let outcome = self
            .strict
            .work_with_role(key, || self.flight(key, f, true));
        let (value, source) = outcome.value?;
        Ok(RemoteOutcome {
            value,
            role: outcome.role,
            source,
            callers: outcome.callers,
        })
    }

    /// The body of a local leader: the remote protocol, then the fallback.
    fn flight<Q, F>(&self, key: &Q, f: F, strict: bool) -> Flight<V>
    where
        Q: ?Sized + KeyBytes,
        F: FnOnce() -> V,
    {
        let found = self.remote(key, f);
        let source = match &found {
            Ok((_, source)) => *source,
            Err((err, _)) => Source::Fallback(err.reason()),
        };
        self.shared.backend.counters.source(source);
        match found {
            Ok(found) => Ok(found),
            Err((err, _)) if strict => Err(err),
            Err((_, f)) => Ok((f(), source)),
        }
    }

    /// The cross-process protocol: acquire, then lead or follow, taking
    /// over from a leader that died or gave up.
    fn remote<Q, F>(&self, key: &Q, f: F) -> Attempt<V, F>
    where
        Q: ?Sized + KeyBytes,
        F: FnOnce() -> V,
    {
        let s = &*self.shared;
        let b = &*s.backend;
        if !b.breaker.allows() {
            let err = Error::new(
                FallbackReason::BreakerOpen,
                "Redis failed recently; not trying it yet",
            );
            return Err((err, f));
        }
        let keys = Keys::new(&b.prefix, key);
        let lease_key = keys.lease();
        let token = new_token();
        let deadline = Instant::now() + b.config.max_wait;
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
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let err = Error::new(
                    FallbackReason::WaitedTooLong,
                    format!(
                        "other leaders kept the key for over {:?}",
                        b.config.max_wait
                    ),
                );
                return Err((err, f));
            }
            let check = followed
                .as_ref()
                .map(|(_, done)| done.as_str())
                .filter(|_| check_followed);
            let entry = match b.acquire(&lease_key, check, &token, &keys.done(&token)) {
                Err(e) => {
                    s.renewer.watch_orphans(&s.backend);
                    return Err((b.error(e), f));
                }
                Ok(Acquire::Acquired) => {
                    let source = if followed.is_some() {
                        Source::Takeover
                    } else {
                        Source::Leader
                    };
                    let value = s.lead(&keys, &lease_key, &token, f);
                    return Ok((value, source));
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
                        return Err((Error::new(FallbackReason::Malformed, why), f));
                    }
                    let remaining = Duration::from_millis(pttl_ms.unsigned_abs());
                    let block = (remaining + READ_SLACK).min(left);
                    let done = keys.done(&holder);
                    let read = s.readers.follow(&s.backend, &done, block);
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
                Received::Value(bytes) => {
                    return match codec::decode(&bytes, b.config.max_payload) {
                        Ok(value) => Ok((value, Source::Follower)),
                        Err(why) => Err((Error::new(FallbackReason::Malformed, why), f)),
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

impl Shared {
    /// Runs `f` holding the lease, renewing it, then publishes the result.
    /// No connection is held while `f` runs, so a process leading many
    /// flights stays within `max_connections`; the publish takes a pooled
    /// one (and redials once if it died meanwhile).
    fn lead<V: Serialize, F: FnOnce() -> V>(
        &self,
        keys: &Keys,
        lease_key: &str,
        token: &str,
        f: F,
    ) -> V {
        let b = &*self.backend;
        let renewal = self.renewer.start(&self.backend, lease_key, token);
        let mut flight = Publisher {
            backend: b,
            published: false,
            lease_key,
            done_key: keys.done(token),
            token,
        };
        let value = f();
        let (status, body) = match codec::encode(&value) {
            Ok(body) if body.len() <= b.config.max_payload => (Status::Value, body),
            Ok(_) => (Status::TooLarge, Vec::new()),
            Err(_) => (Status::Unencodable, Vec::new()),
        };
        let mut lost = renewal.stop();
        match flight.publish(status, &body) {
            Ok(state) => lost |= state == LeaseState::Lost,
            Err(_) => Counters::bump(&b.counters.publish_failures),
        }
        if lost {
            Counters::bump(&b.counters.lost_leases);
        }
        value
    }
}

/// Publishes a flight's end. Dropped without having published (the leader
/// panicked), it publishes "abandon" so followers contend again at once
/// instead of waiting out the lease, and releases the lease.
struct Publisher<'a> {
    backend: &'a Backend,
    published: bool,
    lease_key: &'a str,
    done_key: String,
    token: &'a str,
}

impl Publisher<'_> {
    fn publish(&mut self, status: Status, body: &[u8]) -> Result<LeaseState, CallError> {
        self.published = true;
        let b = self.backend;
        let ttl = millis(b.config.result_ttl);
        b.exchange(By::Caller, |c| {
            b.scripts.publish(
                c,
                self.lease_key,
                &self.done_key,
                self.token,
                status,
                body,
                ttl,
            )
        })
    }
}

impl Drop for Publisher<'_> {
    fn drop(&mut self) {
        if !self.published {
            // Nothing to do with a failure here: followers fall back to the
            // lease expiry, which bounds their wait anyway.
            let _ = self.publish(Status::Abandoned, &[]);
        }
    }
}
