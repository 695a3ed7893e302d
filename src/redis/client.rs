//! How a group opens connections: to one server named by a URL, or to the
//! primary that Redis Sentinel names ([`Dialer`]); TCP without Nagle delay
//! and TLS certificates when configured.

use std::time::Duration;

use redis::{Client, Connection, ConnectionInfo, IntoConnectionInfo, RedisResult};

use super::sentinel::Sentinel;
use super::{ConfigError, RedisConfig};

/// Opens the connections of a group's pool and readers.
pub(super) enum Dialer {
    /// One server, always the same.
    Single(Box<Client>),
    /// Whichever server the sentinels name as the primary, asked at every
    /// dial: after a failover the old primary's connections fail (or answer
    /// `READONLY`) and are retired, and the next dial finds the new one.
    Sentinel(Box<Sentinel>),
}

impl Dialer {
    /// A connection within `timeout`, with the I/O timeout set.
    pub(super) fn connect(&self, timeout: Duration) -> RedisResult<Connection> {
        match self {
            Dialer::Single(client) => client.get_connection_with_timeout(timeout),
            Dialer::Sentinel(sentinel) => sentinel.connect(timeout),
        }
    }
}

/// The connection settings of `url`, with `TCP_NODELAY`: every exchange is
/// one small request and one reply.
pub(super) fn connection_info(url: &str) -> Result<ConnectionInfo, ConfigError> {
    let info = url.into_connection_info().map_err(|e| bad_url(url, &e))?;
    Ok(info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true)))
}

/// A client for one server.
pub(super) fn single(url: &str, config: &RedisConfig) -> Result<Client, ConfigError> {
    client(connection_info(url)?, config).map_err(|e| bad_url(url, &e))
}

/// A client for `info`, with the configured TLS certificates if any.
pub(super) fn client(info: ConnectionInfo, config: &RedisConfig) -> RedisResult<Client> {
    #[cfg(feature = "redis-tls")]
    if config.tls.is_custom() {
        let certificates = config.tls.certificates().map_err(|why| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "bad TLS configuration",
                why,
            ))
        })?;
        return Client::build_with_tls(info, certificates);
    }
    let _ = config;
    Client::open(info)
}

pub(super) fn bad_url(url: &str, e: &redis::RedisError) -> ConfigError {
    let hint = if url.starts_with("rediss://") && !cfg!(feature = "redis-tls") {
        " (rediss:// needs this crate's `redis-tls` feature)"
    } else {
        ""
    };
    ConfigError(format!("URL {url:?}: {e}{hint}"))
}
