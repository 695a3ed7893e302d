//! [`Lease`]: what a fenced flight's `f` knows about its claim on the key.

use std::sync::Arc;

use super::renew::Held;

/// The lease of the flight running `f`, handed to `f` by
/// [`RedisGroup::work_fenced`](super::RedisGroup::work_fenced) and its
/// variants.
///
/// The group is for efficiency: a leader paused past its lease (a GC pause,
/// SIGSTOP, a partition) loses it, another process takes over, and both may
/// finish `f`. The [fencing token](Self::fencing_token) makes that duplicate
/// harmless wherever `f` writes to a store that can check it: the token
/// strictly increases per key across the whole fleet, so a store that
/// remembers the highest token it has seen for a key and refuses a write
/// with a lower one turns the stale leader's late write into a no-op
/// (Kleppmann, "How to do distributed locking", 2016).
///
/// # Examples
///
/// ```no_run
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use sync_singleflight::redis::{Lease, RedisConfig, RedisGroup};
///
/// /// A store that keeps, per login, the session and the token that wrote it.
/// struct Sessions(Mutex<HashMap<String, (u64, String)>>);
///
/// impl Sessions {
///     /// Writes unless a newer flight already wrote; returns what is stored.
///     fn put(&self, login: &str, lease: &Lease, session: String) -> String {
///         let mut map = self.0.lock().unwrap();
///         let token = lease.fencing_token().unwrap_or(0);
///         match map.get(login) {
///             Some((seen, stored)) if *seen > token => stored.clone(), // stale leader: refused
///             _ => {
///                 map.insert(login.to_string(), (token, session.clone()));
///                 session
///             }
///         }
///     }
/// }
///
/// let store = Sessions(Mutex::new(HashMap::new()));
/// let group: RedisGroup<String, String> =
///     RedisGroup::open("redis://127.0.0.1:6379", RedisConfig::new("sessions", 1))?;
/// let session = group.work_fenced("login-42", |lease| {
///     store.put("login-42", lease, "new session".to_string())
/// });
/// # Ok::<(), sync_singleflight::redis::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Lease {
    fencing_token: Option<u64>,
    held: Option<Arc<Held>>,
}

impl Lease {
    /// A held lease (`held`), with its fencing token if one was asked for;
    /// neither for a run without cross-process dedup (a fallback).
    pub(super) fn new(fencing_token: Option<u64>, held: Option<Arc<Held>>) -> Self {
        Lease {
            fencing_token,
            held,
        }
    }

    /// The flight's fencing token: strictly greater than every token handed
    /// out earlier for this key by any process using the same Redis
    /// deployment and namespace. Tokens are seeded from the server's clock
    /// in microseconds, so a counter lost to its TTL, a restart without
    /// persistence or a failover still gives a larger token, as long as no
    /// server's clock steps back and a promoted replica's clock is not
    /// behind the old primary's by more than the failover took (keep the
    /// servers on NTP). The counter is replicated asynchronously like the
    /// lease: a failover that loses both lets a second leader start while
    /// the first still runs, and only the clocks order their tokens then.
    ///
    /// `None` when `f` runs without a lease: a fallback of
    /// [`work_fenced`](super::RedisGroup::work_fenced) (Redis unavailable,
    /// misconfigured, …). A store that must never take an unfenced write
    /// should refuse then, or use
    /// [`try_work_fenced`](super::RedisGroup::try_work_fenced), which never
    /// runs `f` without one.
    ///
    /// # Examples
    ///
    /// See [`Lease`].
    pub fn fencing_token(&self) -> Option<u64> {
        self.fencing_token
    }

    /// Whether the lease is known to be lost: a renewal found another
    /// holder, or the lease's time ran out with no renewal confirmed (a
    /// failed renewal is tried again while the lease lasts). A `false`
    /// answer is no guarantee (the process may be paused right after
    /// asking): only the fencing token, checked by the store, is. Long `f`s can check it between steps and stop early.
    /// Always `false` without a lease.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use sync_singleflight::redis::{RedisConfig, RedisGroup};
    ///
    /// let group: RedisGroup<String, u32> =
    ///     RedisGroup::open("redis://127.0.0.1:6379", RedisConfig::new("batch", 1)).unwrap();
    /// let done = group.work_fenced("nightly", |lease| {
    ///     let mut steps = 0;
    ///     for _ in 0..100 {
    ///         if lease.is_lost() {
    ///             break; // another process may be running it now: stop early
    ///         }
    ///         steps += 1; // one step of the long job
    ///     }
    ///     steps
    /// });
    /// ```
    pub fn is_lost(&self) -> bool {
        self.held.as_ref().is_some_and(|held| held.is_lost())
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("fencing_token", &self.fencing_token)
            .field("lost", &self.is_lost())
            .finish()
    }
}
