//! Finding the primary through Redis Sentinel, with the group's timeouts.
//!
//! Not the `redis` crate's `SentinelClient`: its synchronous lookups have
//! no timeouts (it connects with `Client::get_connection()`), so one hung
//! sentinel would hang every dial. This asks `SENTINEL
//! get-master-addr-by-name` of each sentinel in turn, each within the
//! connect and I/O timeouts, and takes the first answer. The sentinel that
//! answered is asked first next time (as Redis's guidelines for sentinel
//! clients advise), so a dead or hung one costs its timeouts once, not at
//! every dial.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::{Client, Connection, ConnectionAddr, ConnectionInfo, RedisResult};

use super::RedisConfig;
use super::client;

/// The sentinels of one monitored primary, and how to reach that primary.
pub(super) struct Sentinel {
    sentinels: Vec<Client>,
    service: String,
    /// The primary's settings but for its address (credentials, database,
    /// TLS), from the `primary_url` given at open.
    primary: ConnectionInfo,
    config: RedisConfig,
    /// The sentinel that answered last: asked first.
    preferred: AtomicUsize,
}

impl Sentinel {
    pub(super) fn new(
        sentinels: Vec<Client>,
        service: &str,
        primary: ConnectionInfo,
        config: RedisConfig,
    ) -> Self {
        Sentinel {
            sentinels,
            service: service.to_owned(),
            primary,
            config,
            preferred: AtomicUsize::new(0),
        }
    }

    /// The primary's address as the first sentinel that answers names it,
    /// starting with the one that answered last. Each sentinel gets the
    /// whole `connect_timeout` and `io_timeout`: a shared budget would be
    /// spent by the first hung sentinel, hiding the healthy ones behind it.
    /// So with `n` sentinels a lookup takes at most `n` times the connect
    /// and I/O timeouts.
    fn primary_addr(&self, connect_timeout: Duration) -> RedisResult<(String, u16)> {
        let mut last: Option<redis::RedisError> = None;
        let n = self.sentinels.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        for at in (first..n).chain(0..first) {
            let asked = self.sentinels[at]
                .get_connection_with_timeout(connect_timeout)
                .and_then(|mut con| {
                    con.set_read_timeout(Some(self.config.io_timeout))?;
                    con.set_write_timeout(Some(self.config.io_timeout))?;
                    redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(&self.service)
                        .query::<Option<(String, u16)>>(&mut con)
                });
            match asked {
                Ok(Some(addr)) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return Ok(addr);
                }
                Ok(None) => {
                    last = Some(redis::RedisError::from((
                        redis::ErrorKind::MasterNameNotFoundBySentinel,
                        "the sentinel does not monitor this primary name",
                        self.service.clone(),
                    )))
                }
                // A sentinel that does not know the name says more about
                // the setup than one that is down: keep its answer.
                Err(e) if !is_unknown_name(last.as_ref()) => last = Some(e),
                Err(_) => {}
            }
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Io, "no sentinel given"))
        }))
    }

    /// Asks the sentinels for the primary (each sentinel within `timeout`
    /// and the I/O timeout), then connects to it within `timeout`.
    pub(super) fn connect(&self, timeout: Duration) -> RedisResult<Connection> {
        let (host, port) = self.primary_addr(timeout)?;
        let addr = match self.primary.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        client::client(self.primary.clone().set_addr(addr), &self.config)?
            .get_connection_with_timeout(timeout)
    }
}

fn is_unknown_name(e: Option<&redis::RedisError>) -> bool {
    e.is_some_and(|e| e.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel)
}
