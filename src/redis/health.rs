//! [`RedisGroup::check`]: a startup probe of the server and of the settings
//! that hurt the protocol, reported as [`Health`].

use std::time::{Duration, Instant};

use super::backend::By;
use super::reply::CallError;
use super::{Error, RedisGroup};

/// What [`RedisGroup::check`] found.
///
/// # Examples
///
/// ```no_run
/// use sync_singleflight::redis::{RedisConfig, RedisGroup};
///
/// let group: RedisGroup<String, u64> =
///     RedisGroup::open("redis://127.0.0.1:6379", RedisConfig::new("demo", 1)).unwrap();
/// let health = group.check(8);
/// match &health.error {
///     Some(err) => eprintln!("Redis is not usable yet ({err}); calls will run locally"),
///     None => println!("Redis {} ({}), round trip {:?}", health.version, health.mode, health.round_trip),
/// }
/// for warning in &health.warnings {
///     eprintln!("warning: {warning}");
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Why the server could not be checked (unreachable, authentication,
    /// TLS, …); the other fields are empty then.
    pub error: Option<Error>,
    /// The server's version (`redis_version`, also set by Valkey).
    pub version: String,
    /// `standalone`, `cluster` or `sentinel`, as the server says
    /// (`redis_mode`).
    pub mode: String,
    /// Whether the server is a replica (`role:slave`): it refuses writes.
    pub replica: bool,
    /// The best of three `PING` round trips on one connection.
    pub round_trip: Duration,
    /// Settings that make dedup fail or degrade, each with what to do.
    pub warnings: Vec<String>,
}

impl Health {
    /// Whether the server answered and nothing needs attention.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::redis::Health;
    ///
    /// // What `check` returns is never built by hand; the default is a
    /// // healthy report with nothing in it.
    /// assert!(Health::default().is_ok());
    /// ```
    pub fn is_ok(&self) -> bool {
        self.error.is_none() && self.warnings.is_empty()
    }
}

/// The text of an `INFO` reply: one server's, or on a cluster (where it
/// goes to every master, keyed by address) the first master's followed by
/// the others', so a field is read from the first that has it.
fn info_text(reply: redis::Value) -> Result<String, CallError> {
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    };
    let texts: Option<Vec<String>> = match &reply {
        redis::Value::Map(nodes) => nodes.iter().map(|(_, v)| text(v)).collect(),
        other => text(other).map(|t| vec![t]),
    };
    texts.map(|t| t.join("\n")).ok_or_else(|| {
        CallError::Malformed(super::reply::Malformed(format!("INFO replied {reply:?}")))
    })
}

impl<K, V> RedisGroup<K, V> {
    /// Connects and reports the server version and mode, the round-trip
    /// time, and warnings for settings that hurt the protocol: an
    /// `allkeys-*` or `volatile-*` eviction policy (leases and results can
    /// be evicted: duplicate runs), `maxclients` below what
    /// `expected_processes` need (each may hold
    /// [`max_connections`](super::RedisConfig::max_connections)), a replica or a
    /// cluster node reached as a single server, a server older than 5.0
    /// (no streams). Call it at startup and log the result.
    ///
    /// Never panics and never opens the circuit breaker: a failure is
    /// reported in [`Health::error`]. Uses one pooled connection, within the
    /// configured timeouts.
    ///
    /// # Examples
    ///
    /// See [`Health`].
    pub fn check(&self, expected_processes: usize) -> Health {
        match self.probe(expected_processes) {
            Ok(health) => health,
            Err(e) => Health {
                error: Some(self.shared.backend.error(e)),
                ..Health::default()
            },
        }
    }

    fn probe(&self, expected_processes: usize) -> Result<Health, CallError> {
        let b = &*self.shared.backend;
        let config = &b.config;
        // One exchange, so the pings share a connection; not the caller's
        // kind, so a failure here never counts towards the breaker.
        let (round_trip, info) = b.exchange(By::Background, |c| {
            let mut round_trip = Duration::MAX;
            for _ in 0..3 {
                let sent = Instant::now();
                redis::cmd("PING").query::<String>(c)?;
                round_trip = round_trip.min(sent.elapsed());
            }
            // The default sections (server, clients, memory, replication
            // among them): naming several is Redis 7's, and Redis 5 and 6
            // answer it with a syntax error.
            let info: redis::Value = redis::cmd("INFO").query(c)?;
            Ok::<_, CallError>((round_trip, info_text(info)?))
        })?;
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let mut health = Health {
            error: None,
            version: field("redis_version"),
            mode: field("redis_mode"),
            replica: field("role") == "slave",
            round_trip,
            warnings: Vec::new(),
        };
        let warn = &mut health.warnings;
        let major: u32 = health
            .version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 5 {
            warn.push(format!(
                "server version {:?}: the protocol needs streams (Redis 5.0 or later)",
                health.version
            ));
        }
        let policy = field("maxmemory_policy");
        if policy.starts_with("allkeys-") || policy.starts_with("volatile-") {
            warn.push(format!(
                "maxmemory-policy {policy}: under memory pressure Redis may evict leases and \
                 results, which costs duplicate runs; give it headroom or use noeviction"
            ));
        }
        let per_process = config.max_connections;
        let need = expected_processes.saturating_mul(per_process);
        if let Ok(max) = field("maxclients").parse::<usize>() {
            if max < need {
                warn.push(format!(
                    "maxclients {max} is below the {need} connections {expected_processes} \
                     processes may hold ({per_process} each, max_connections)"
                ));
            }
        }
        if health.replica {
            warn.push(
                "connected to a replica: it refuses writes (READONLY); point the group at the \
                 primary (or use Sentinel)"
                    .into(),
            );
        }
        if health.mode == "cluster" && !b.pool.is_cluster() {
            warn.push(
                "this server is a Redis Cluster node reached as a single server: keys on other \
                 nodes answer MOVED; open the group for a cluster"
                    .into(),
            );
        }
        Ok(health)
    }
}
