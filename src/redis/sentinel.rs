//! Finding the primary through Redis Sentinel, with the group's timeouts.
//!
//! Not the `redis` crate's `SentinelClient`: its synchronous lookups have
//! no timeouts (it connects with `Client::get_connection()`), so one hung
//! sentinel would hang every dial. This asks `SENTINEL
//! get-master-addr-by-name` of each sentinel in turn, each within the
//! connect and I/O timeouts, and takes the first answer.

use std::time::{Duration, Instant};

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
        }
    }

    /// The primary's address as the first sentinel that answers names it.
    /// The whole lookup stays within `budget`.
    fn primary_addr(&self, budget: Duration) -> RedisResult<(String, u16)> {
        let start = Instant::now();
        let mut last: Option<redis::RedisError> = None;
        for sentinel in &self.sentinels {
            let left = budget.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            let asked = sentinel
                .get_connection_with_timeout(left)
                .and_then(|mut con| {
                    con.set_read_timeout(Some(self.config.io_timeout))?;
                    con.set_write_timeout(Some(self.config.io_timeout))?;
                    redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(&self.service)
                        .query::<Option<(String, u16)>>(&mut con)
                });
            match asked {
                Ok(Some(addr)) => return Ok(addr),
                Ok(None) => {
                    last = Some(redis::RedisError::from((
                        redis::ErrorKind::MasterNameNotFoundBySentinel,
                        "the sentinel does not monitor this primary name",
                        self.service.clone(),
                    )))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::Io,
                "no sentinel answered within the connect timeout",
            ))
        }))
    }

    /// Asks the sentinels for the primary, then connects to it; both
    /// within `timeout` each.
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
