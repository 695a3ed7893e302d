//! The constructors of a [`RedisGroup`], one per kind of deployment: one
//! server ([`open`](RedisGroup::open)), a primary managed by Redis
//! Sentinel ([`open_sentinel`](RedisGroup::open_sentinel)), or a Redis
//! Cluster ([`open_cluster`](RedisGroup::open_cluster)).

use redis::cluster::ClusterClient;

use super::client::{self, Dialer};
use super::sentinel::Sentinel;
use super::{ConfigError, RedisConfig, RedisGroup};

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
    /// breaker threshold, a lease, result TTL, timeout or breaker cooldown
    /// over a year, no reader, or `max_connections` not above `readers`).
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
        let client = client::single(url, &config)?;
        Ok(Self::assemble(config, Dialer::Single(Box::new(client))))
    }

    /// A group on the primary that Redis Sentinel monitors under
    /// `primary_name`, asking the `sentinels` (`redis://host:port` URLs,
    /// with the sentinels' own credentials if they need any; `rediss://`
    /// ones use [`RedisConfig::tls`](super::RedisConfig) like the primary)
    /// in turn.
    ///
    /// `primary_url` gives everything about the primary but its address:
    /// scheme (`rediss://` for TLS), user, password and database, as in
    /// `redis://:secret@primary/0`; its host and port are ignored and
    /// replaced by what the sentinels report. Every new connection asks
    /// the sentinels first (within the connect and I/O timeouts, so a hung
    /// sentinel only costs its timeout), so after a failover the old
    /// primary's connections fail or answer `READONLY`, are retired, and
    /// the next ones go to the promoted replica. Results published on the
    /// old primary and not yet replicated are lost with it: their followers
    /// wait out the lease, then one takes over.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for an empty sentinel list, a URL that does not
    /// parse, or a configuration [`open`](Self::open) would refuse.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::redis::{RedisConfig, RedisGroup};
    ///
    /// // Opening does not connect: this works with no sentinel running.
    /// let group = RedisGroup::<String, u32>::open_sentinel(
    ///     &["redis://127.0.0.1:26379", "redis://127.0.0.1:26380", "redis://127.0.0.1:26381"],
    ///     "mymaster",
    ///     "redis://:secret@primary/0",
    ///     RedisConfig::new("prices", 1),
    /// );
    /// assert!(group.is_ok());
    /// ```
    pub fn open_sentinel(
        sentinels: &[&str],
        primary_name: &str,
        primary_url: &str,
        config: RedisConfig,
    ) -> Result<Self, ConfigError> {
        config.validate().map_err(ConfigError)?;
        if sentinels.is_empty() {
            return Err(ConfigError("no sentinel given".into()));
        }
        let sentinels = sentinels
            .iter()
            .map(|url| {
                client::connection_info(url).and_then(|info| {
                    client::client(info, &config).map_err(|e| client::bad_url(url, &e))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let primary = client::connection_info(primary_url)?;
        // Refuse a bad TLS setup now rather than at every dial.
        client::client(primary.clone(), &config).map_err(|e| client::bad_url(primary_url, &e))?;
        let sentinel = Sentinel::new(sentinels, primary_name, primary, config.clone());
        Ok(Self::assemble(config, Dialer::Sentinel(Box::new(sentinel))))
    }

    /// A group on a Redis Cluster, through the `redis` crate's synchronous
    /// cluster client: every command goes to the node that owns its key's
    /// slot, and `MOVED` and `ASK` are followed. `nodes` are
    /// `redis://host:port` URLs (or `rediss://`, with credentials) of some
    /// of the cluster's nodes; the rest are discovered.
    ///
    /// All keys of one key share a hash tag, so every script touches one
    /// slot. An `XREAD` over many flights' streams would not
    /// (`CROSSSLOT`), so on a cluster a follower polls its flight's stream
    /// instead of sharing a blocked reader: from every 2 ms backing off to
    /// every 50 ms, which bounds how late it sees a result. When a master
    /// dies, its keys fall back (and may open the breaker) until its
    /// replica is promoted. The cluster client retries timeouts twice, so a
    /// call on a hung node costs up to three I/O timeouts, and a new
    /// connection to a hung cluster up to one per node. Results a dead
    /// master had not replicated are lost with it, and their followers
    /// take over after the lease.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for an empty node list, a URL that does not parse,
    /// or a configuration [`open`](Self::open) would refuse.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::redis::{RedisConfig, RedisGroup};
    ///
    /// // Opening does not connect: this works with no node running.
    /// let group = RedisGroup::<String, u32>::open_cluster(
    ///     &["redis://127.0.0.1:7000", "redis://127.0.0.1:7001", "redis://127.0.0.1:7002"],
    ///     RedisConfig::new("prices", 1),
    /// );
    /// assert!(group.is_ok());
    /// ```
    pub fn open_cluster(nodes: &[&str], config: RedisConfig) -> Result<Self, ConfigError> {
        config.validate().map_err(ConfigError)?;
        if nodes.is_empty() {
            return Err(ConfigError("no cluster node given".into()));
        }
        let infos = nodes
            .iter()
            .map(|url| client::connection_info(url))
            .collect::<Result<Vec<_>, _>>()?;
        let bad = |e: redis::RedisError| ConfigError(format!("cluster nodes {nodes:?}: {e}"));
        // Two retries cover a MOVED and an ASK; an outage is left to the
        // group's own fallback and breaker rather than retried for seconds.
        let builder = ClusterClient::builder(infos)
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.io_timeout)
            .retries(2)
            .min_retry_wait(5)
            .max_retry_wait(50);
        #[cfg(feature = "redis-tls")]
        let builder = if config.tls.is_custom() {
            builder.certs(config.tls.certificates().map_err(ConfigError)?)
        } else {
            builder
        };
        let client = builder.build().map_err(bad)?;
        Ok(Self::assemble(config, Dialer::Cluster(Box::new(client))))
    }
}
