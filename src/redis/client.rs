//! Turning a URL and a configuration into a `redis` crate client: TCP
//! without Nagle delay, and TLS certificates when configured.

use redis::{Client, ConnectionInfo, IntoConnectionInfo};

use super::{ConfigError, RedisConfig};

/// The connection settings of `url`, with `TCP_NODELAY`: every exchange is
/// one small request and one reply.
pub(super) fn connection_info(url: &str) -> Result<ConnectionInfo, ConfigError> {
    let info = url.into_connection_info().map_err(|e| bad_url(url, &e))?;
    Ok(info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true)))
}

/// A client for one server.
pub(super) fn single(url: &str, config: &RedisConfig) -> Result<Client, ConfigError> {
    let info = connection_info(url)?;
    #[cfg(feature = "redis-tls")]
    if config.tls.is_custom() {
        let certificates = config.tls.certificates().map_err(ConfigError)?;
        return Client::build_with_tls(info, certificates).map_err(|e| bad_url(url, &e));
    }
    let _ = config;
    Client::open(info).map_err(|e| bad_url(url, &e))
}

fn bad_url(url: &str, e: &redis::RedisError) -> ConfigError {
    let hint = if url.starts_with("rediss://") && !cfg!(feature = "redis-tls") {
        " (rediss:// needs this crate's `redis-tls` feature)"
    } else {
        ""
    };
    ConfigError(format!("URL {url:?}: {e}{hint}"))
}
