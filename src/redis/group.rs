//! [`RedisGroup`]: a local [`Group`] whose leaders dedup across processes.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};

use super::codec;
use super::key::{KeyBytes, Keys};
use super::lead::Won;
use super::lease::Lease;
use super::outcome::Counters;
use super::pool::{Breaker, Pool};
use super::renew::Renewer;
use super::scripts::{self, Acquire, CallError, Claim, Entry, Scripts, Status};
use super::{ConfigError, Error, ErrorKind, RedisConfig, RedisStats, RemoteOutcome, Source};
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
            .field("keys", &self.shared.prefix)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// What a group's leaders and its renewal thread share.
pub(super) struct Shared {
    pub(super) config: RedisConfig,
    prefix: String,
    pub(super) pool: Pool,
    breaker: Breaker,
    pub(super) scripts: Scripts,
    pub(super) counters: Counters,
    pub(super) renewer: Renewer,
    /// [`RedisConfig::node_id`], shared by every outcome this process leads.
    pub(super) node: Arc<str>,
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
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
    /// breaker threshold).
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
        let pool = Pool::new(
            client,
            config.max_idle_connections,
            config.connect_timeout,
            config.io_timeout,
        );
        let shared = Shared {
            prefix: config.key_prefix(),
            node: Arc::from(config.node_id.as_str()),
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            pool,
            scripts: Scripts::new(),
            counters: Counters::default(),
            renewer: Renewer::default(),
            config,
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
        &self.shared.config
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
        self.shared
            .counters
            .snapshot(self.open.stats(), self.strict.stats())
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
        self.strict_flight(key, |_: &Lease| f(), false)
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

    /// A strict call, fenced or not.
    pub(super) fn strict_flight<Q, F>(
        &self,
        key: &Q,
        f: F,
        fenced: bool,
    ) -> Result<RemoteOutcome<V>, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K> + KeyBytes,
        F: FnOnce(&Lease) -> V,
    {
        self.local_flight(key, f, true, fenced)
    }

    /// Meets the process's other callers in the mode's local group; its
    /// local leader runs [`flight`](Self::flight).
    fn local_flight<Q, F>(
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
        self.shared.counters.source(source);
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
        if !s.breaker.allows() {
            let err = Error::new(
                ErrorKind::BreakerOpen,
                "Redis failed recently; not trying it yet",
            );
            return Err((err, f));
        }
        let mut con = match s.pool.get() {
            Ok(con) => con,
            Err(e) => return Err((s.failed(CallError::Redis(e)), f)),
        };
        let keys = Keys::new(&s.prefix, key);
        let lease_key = keys.lease();
        let fence_key = keys.fence();
        let fence_ttl_ms = fenced.then(|| millis(s.config.fence_ttl));
        let token = new_token();
        let lease_ms = millis(s.config.lease);
        let deadline = Instant::now() + s.config.max_wait;
        // The result stream of the flight this caller last followed, and
        // whether it must be checked before contending (after a read that
        // timed out).
        let mut followed: Option<String> = None;
        let mut check_followed = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let err = Error::new(
                    ErrorKind::WaitedTooLong,
                    format!(
                        "other leaders kept the key for over {:?}",
                        s.config.max_wait
                    ),
                );
                return Err((err, f));
            }
            let claim = Claim {
                lease_key: &lease_key,
                fence_key: &fence_key,
                followed_done: followed.as_deref().filter(|_| check_followed),
                token: &token,
                lease_ms,
                fence_ttl_ms,
            };
            let sent = Instant::now();
            let reply = con.call(|c| s.scripts.acquire(c, &claim));
            let entry = match reply {
                Err(e) => return Err((s.failed(e), f)),
                Ok(Acquire::Acquired { fence }) => {
                    s.breaker.success();
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
                    let value = self.shared.lead(con, won, f);
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
                    s.breaker.success();
                    // A lease without a TTL is not ours to judge; wait a lease.
                    let remaining =
                        u64::try_from(pttl_ms).map_or(s.config.lease, Duration::from_millis);
                    let block = (remaining + READ_SLACK).min(left);
                    let done = keys.done(&holder);
                    let read =
                        con.call_blocking(block, |c| scripts::read_result(c, &done, millis(block)));
                    followed = Some(done);
                    match read {
                        Err(e) => return Err((s.failed(e), f)),
                        Ok(None) => {
                            check_followed = true;
                            continue;
                        }
                        Ok(Some(entry)) => entry,
                    }
                }
            };
            match s.receive(entry) {
                Received::Value(bytes, leader) => {
                    return match codec::decode(&bytes, s.config.max_payload) {
                        Ok(value) => Ok(Got {
                            value,
                            source: Source::Follower,
                            leader: Arc::from(leader),
                        }),
                        Err(why) => Err((Error::new(ErrorKind::Malformed, why), f)),
                    };
                }
                Received::Abandoned => check_followed = false,
                Received::Unusable(err) => return Err((err, f)),
            }
        }
    }
}

/// A followed flight's entry, sorted by what the follower does next.
enum Received {
    /// The encoded value and the node id of its leader.
    Value(Vec<u8>, String),
    Abandoned,
    Unusable(Error),
}

impl Shared {
    /// Classifies a failed exchange; outages feed the breaker.
    pub(super) fn failed(&self, err: CallError) -> Error {
        let error = match err {
            CallError::Malformed(why) => Error::new(ErrorKind::Malformed, why.0),
            CallError::Redis(e) => Error::from_redis(&e),
        };
        if error.is_outage() && self.breaker.failure() {
            Counters::bump(&self.counters.breaker_opens);
            // The idle connections very likely died with the server.
            self.pool.clear();
        }
        error
    }

    fn receive(&self, entry: Entry) -> Received {
        let reason = match entry.status {
            Status::Value => return Received::Value(entry.body, entry.leader),
            Status::Abandoned => return Received::Abandoned,
            Status::TooLarge => ErrorKind::PayloadTooLarge,
            Status::Unencodable => ErrorKind::Unencodable,
        };
        Received::Unusable(Error::new(
            reason,
            "the remote leader could not share its value",
        ))
    }
}

/// A flight token: 64 random bits fixed per process, then a counter, so
/// tokens never repeat within a process and collide across processes with
/// probability 2^-64. Unique, not secret.
fn new_token() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let now = std::time::SystemTime::now();
        RandomState::new().hash_one((std::process::id(), now))
    });
    format!(
        "{seed:016x}{:016x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
