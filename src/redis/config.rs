//! [`RedisConfig`]: every knob of the cross-process layer, with its default.

use std::time::Duration;

/// The longest lease, result TTL, timeout or breaker cooldown accepted:
/// a year.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Settings of a [`RedisGroup`](super::RedisGroup).
///
/// Build one with [`RedisConfig::new`] and change the public fields you
/// need; every default is listed on its field. The struct is
/// `#[non_exhaustive]` so that new knobs can be added without breaking you:
/// assign fields rather than writing a struct literal.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sync_singleflight::redis::RedisConfig;
///
/// let mut config = RedisConfig::new("users", 3);
/// config.lease = Duration::from_secs(2);
/// assert_eq!(config.renew_interval(), Duration::from_secs(2) / 3);
/// assert_eq!(config.key_prefix(), "sf:users:v3:");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The namespace of this group's keys in Redis (no `{`, `}` or
    /// whitespace). Use one namespace per kind of lookup: two groups with
    /// the same namespace and schema version share flights.
    pub namespace: String,
    /// The schema version of `V`, part of every key. Bump it whenever the
    /// serialized shape of `V` changes: binary codecs decode a reordered
    /// struct into the wrong fields without any error, so old and new
    /// replicas must never read each other's results.
    pub schema_version: u32,
    /// How long a leader's claim lives without renewal. A crashed leader's
    /// followers take over after at most this long. Default: 5 s.
    pub lease: Duration,
    /// How often a running leader renews its lease; `None` means
    /// `lease / 3` (Redisson's cadence), so two renewals can be lost before
    /// the lease runs out. Default: `None`.
    pub renew_every: Option<Duration>,
    /// The longest a caller waits behind other processes' leaders, renewals
    /// included, before it runs `f` itself; `Duration::MAX` means no
    /// limit. Default: 60 s.
    pub max_wait: Duration,
    /// How long a published result stays readable for the followers of its
    /// flight. It is never served to a later flight. Default: 30 s.
    pub result_ttl: Duration,
    /// Timeout for opening a connection. Default: 250 ms.
    pub connect_timeout: Duration,
    /// Timeout for each command's reply (a blocking read waits this much
    /// longer than its block time). Default: 500 ms.
    pub io_timeout: Duration,
    /// Consecutive connection or I/O failures that open the circuit
    /// breaker. A failure counts only when it is evidence about the
    /// server: a dial that fails, a timeout, or an error on a freshly
    /// dialled connection. A pooled connection found dead (the server
    /// restarted, or reaped it as idle) is redialled once, transparently,
    /// without counting. Default: 3.
    pub breaker_failures: u32,
    /// How long an open breaker sends every call straight to a local run
    /// before one caller probes Redis (half-open: the others keep falling
    /// back until the probe answers). A failed probe reopens the breaker
    /// for twice the previous cooldown, up to 8 × this value; any success
    /// closes it and resets the cooldown to this value. When the failures
    /// are refused connections (nothing listening: a restart in progress,
    /// cheap to probe) it opens for 100 ms at first, doubling up to this
    /// value while refusals go on. Default: 2 s.
    pub breaker_cooldown: Duration,
    /// The largest encoded value that is shared through Redis; larger
    /// values are returned to the leader's own callers and their remote
    /// followers run `f` themselves at once. Also the limit on what a
    /// follower agrees to decode. Default: 8 MiB.
    pub max_payload: usize,
    /// The most connections this group opens to Redis at once, the
    /// [`readers`](Self::readers)' included, however many keys are hot.
    /// Short exchanges (acquire, publish, renew) share the other
    /// `max_connections - readers`; when all are busy a call waits up to
    /// [`io_timeout`](Self::io_timeout) for one, then falls back with
    /// [`FallbackReason::Unavailable`](super::FallbackReason::Unavailable)
    /// (not counted toward the breaker: the server is not at fault).
    /// Default: 8.
    pub max_connections: usize,
    /// Threads that wait for other processes' results, each on one
    /// connection with one `XREAD BLOCK` over every followed flight's
    /// stream (standalone or Sentinel-managed Redis). Default: 1.
    pub readers: usize,
    /// This process's name in the fleet, published with every result it
    /// leads and reported to every caller as
    /// [`RemoteOutcome::leader`](super::RemoteOutcome::leader), so flights
    /// can be matched across replicas' logs. Default: `host:pid` (the host
    /// name from the OS, or `HOSTNAME`).
    pub node_id: String,
    /// How long a key's fencing counter lives after its last fenced flight
    /// (see [`Lease::fencing_token`](super::Lease::fencing_token)). Tokens
    /// keep increasing after it expires; the counter only guards against a
    /// server clock stepping back meanwhile. Default: 24 h.
    pub fence_ttl: Duration,
    /// Certificates for `rediss://` URLs (feature `redis-tls`). Default:
    /// the system roots, no client certificate.
    #[cfg(feature = "redis-tls")]
    pub tls: super::TlsConfig,
}

impl RedisConfig {
    /// A configuration with every default and the given namespace and
    /// schema version.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sync_singleflight::redis::RedisConfig;
    ///
    /// let config = RedisConfig::new("prices", 1);
    /// assert_eq!(config.lease, Duration::from_secs(5));
    /// ```
    pub fn new(namespace: impl Into<String>, schema_version: u32) -> Self {
        RedisConfig {
            namespace: namespace.into(),
            schema_version,
            lease: Duration::from_secs(5),
            renew_every: None,
            max_wait: Duration::from_secs(60),
            result_ttl: Duration::from_secs(30),
            connect_timeout: Duration::from_millis(250),
            io_timeout: Duration::from_millis(500),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(2),
            max_payload: 8 << 20,
            max_connections: 8,
            readers: 1,
            node_id: default_node_id(),
            fence_ttl: Duration::from_secs(24 * 60 * 60),
            #[cfg(feature = "redis-tls")]
            tls: super::TlsConfig::default(),
        }
    }

    /// The renewal cadence in force: [`renew_every`](Self::renew_every), or
    /// a third of the lease.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sync_singleflight::redis::RedisConfig;
    ///
    /// let config = RedisConfig::new("prices", 1);
    /// assert_eq!(config.renew_interval(), Duration::from_secs(5) / 3);
    /// ```
    pub fn renew_interval(&self) -> Duration {
        self.renew_every.unwrap_or(self.lease / 3)
    }

    /// The prefix of every key this configuration uses:
    /// `sf:<namespace>:v<schema_version>:`.
    ///
    /// # Examples
    ///
    /// See [`RedisConfig`].
    pub fn key_prefix(&self) -> String {
        format!("sf:{}:v{}:", self.namespace, self.schema_version)
    }

    /// Rejects settings that cannot work, with the reason.
    pub(super) fn validate(&self) -> Result<(), String> {
        let ns = &self.namespace;
        if ns.is_empty()
            || ns
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace())
        {
            return Err(format!(
                "namespace {ns:?} must be non-empty, without braces or whitespace"
            ));
        }
        if self.lease < Duration::from_millis(30) {
            return Err(format!("lease {:?} is below 30 ms", self.lease));
        }
        let renew = self.renew_interval();
        if renew.is_zero() || renew >= self.lease {
            return Err(format!(
                "renewal every {renew:?} must be above zero and below the lease {:?}",
                self.lease
            ));
        }
        for (name, value) in [
            ("result_ttl", self.result_ttl),
            ("connect_timeout", self.connect_timeout),
            ("io_timeout", self.io_timeout),
            ("fence_ttl", self.fence_ttl),
        ] {
            if value < Duration::from_millis(1) {
                return Err(format!("{name} {value:?} is below 1 ms"));
            }
        }
        // Deadlines and the breaker's escalation are computed from these:
        // `Duration::MAX` would overflow them (a panic in a call, or in
        // the reader thread). `max_wait` has no such limit.
        for (name, value) in [
            ("lease", self.lease),
            ("result_ttl", self.result_ttl),
            ("connect_timeout", self.connect_timeout),
            ("io_timeout", self.io_timeout),
            ("breaker_cooldown", self.breaker_cooldown),
        ] {
            if value > MAX_DURATION {
                return Err(format!("{name} {value:?} is over {MAX_DURATION:?}"));
            }
        }
        if self.readers == 0 || self.max_connections <= self.readers {
            return Err(format!(
                "max_connections {} must be above readers {} (at least 1)",
                self.max_connections, self.readers
            ));
        }
        if self.breaker_failures == 0 {
            return Err("breaker_failures must be at least 1".into());
        }
        Ok(())
    }
}

/// `host:pid`: the host name as the OS reports it (Linux), else from the
/// environment, else `localhost`.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}
