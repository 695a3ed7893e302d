//! The fenced calls: `f` receives the flight's [`Lease`], with a fencing
//! token a store can check.

use std::borrow::Borrow;
use std::hash::Hash;

use serde::{Serialize, de::DeserializeOwned};

use super::key::KeyBytes;
use super::{Error, Lease, RedisGroup, RemoteOutcome};
use crate::ToKey;

impl<K, V> RedisGroup<K, V>
where
    K: Hash + Eq,
    V: Clone + Serialize + DeserializeOwned,
{
    /// Like [`work`](Self::work), and `f` receives the flight's [`Lease`]:
    /// a fencing token that strictly increases per key across the fleet,
    /// and whether the lease is known lost. Pass the token to the store `f`
    /// writes to; a store that refuses a lower token than it has seen makes
    /// the rare duplicate run (a leader paused past its lease) harmless.
    ///
    /// Fails open like `work`: a fallback run gets a lease with no token
    /// ([`Lease::fencing_token`] is `None`). Use one mode per key: a flight
    /// led by a plain `work` call hands out no token.
    ///
    /// # Panics
    ///
    /// As [`work`](Self::work).
    ///
    /// # Examples
    ///
    /// See [`Lease`].
    pub fn work_fenced<Q, F>(&self, key: &Q, f: F) -> V
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K> + KeyBytes,
        F: FnOnce(&Lease) -> V,
    {
        self.open_flight(key, f, true).value
    }

    /// Like [`work_fenced`](Self::work_fenced), and reports how the value
    /// was obtained.
    ///
    /// # Panics
    ///
    /// As [`work`](Self::work).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use sync_singleflight::redis::{RedisConfig, RedisGroup, Source};
    ///
    /// let group: RedisGroup<String, u64> =
    ///     RedisGroup::open("redis://127.0.0.1:6379", RedisConfig::new("demo", 1)).unwrap();
    /// let outcome = group.work_fenced_with_outcome("k", |lease| lease.fencing_token().unwrap_or(0));
    /// if outcome.source == Source::Leader {
    ///     assert!(outcome.value > 0, "a leader always gets a token");
    /// }
    /// ```
    pub fn work_fenced_with_outcome<Q, F>(&self, key: &Q, f: F) -> RemoteOutcome<V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K> + KeyBytes,
        F: FnOnce(&Lease) -> V,
    {
        self.open_flight(key, f, true)
    }

    /// The strict fenced variant: `f` only ever runs under a lease with a
    /// fencing token.
    ///
    /// # Errors
    ///
    /// As [`try_work`](Self::try_work).
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
    /// let token = group.try_work_fenced("k", |lease| lease.fencing_token().expect("strict: always fenced"));
    /// ```
    pub fn try_work_fenced<Q, F>(&self, key: &Q, f: F) -> Result<RemoteOutcome<V>, Error>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K> + KeyBytes,
        F: FnOnce(&Lease) -> V,
    {
        self.local_flight(key, f, true, true)
    }
}
