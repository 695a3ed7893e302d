//! How a group opens connections: to one server named by a URL, or to the
//! primary that Redis Sentinel names ([`Dialer`]); TCP without Nagle delay
//! and TLS certificates when configured.

use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{
    Client, Cmd, Connection, ConnectionInfo, ConnectionLike, IntoConnectionInfo, RedisResult, Value,
};

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
    /// A Redis Cluster: each connection is the `redis` crate's cluster
    /// connection, which routes every command by its key's slot and
    /// follows `MOVED` and `ASK`.
    Cluster(Box<ClusterClient>),
}

impl Dialer {
    /// A connection within `timeout`.
    pub(super) fn connect(&self, timeout: Duration) -> RedisResult<Link> {
        match self {
            Dialer::Single(client) => client.get_connection_with_timeout(timeout).map(Link::One),
            Dialer::Sentinel(sentinel) => sentinel.connect(timeout).map(Link::One),
            Dialer::Cluster(client) => client.get_connection().map(|c| Link::Cluster(Box::new(c))),
        }
    }

    /// Whether commands over several keys must stay within one slot, so a
    /// reader cannot wait on many flights' streams at once.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Dialer::Cluster(_))
    }
}

/// A connection to one server, or to a whole cluster.
pub(super) enum Link {
    One(Connection),
    Cluster(Box<ClusterConnection>),
}

impl Link {
    pub(super) fn set_read_timeout(&self, timeout: Option<Duration>) -> RedisResult<()> {
        match self {
            Link::One(c) => c.set_read_timeout(timeout),
            Link::Cluster(c) => c.set_read_timeout(timeout),
        }
    }

    pub(super) fn set_write_timeout(&self, timeout: Option<Duration>) -> RedisResult<()> {
        match self {
            Link::One(c) => c.set_write_timeout(timeout),
            Link::Cluster(c) => c.set_write_timeout(timeout),
        }
    }

    fn inner(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Link::One(c) => c,
            Link::Cluster(c) => c,
        }
    }

    fn inner_ref(&self) -> &dyn ConnectionLike {
        match self {
            Link::One(c) => c,
            Link::Cluster(c) => c,
        }
    }
}

/// Every method forwarded, `req_command` included: a cluster connection
/// routes by the command's keys there.
impl ConnectionLike for Link {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.inner().req_packed_command(cmd)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.inner().req_packed_commands(cmd, offset, count)
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        self.inner().req_command(cmd)
    }

    fn get_db(&self) -> i64 {
        self.inner_ref().get_db()
    }

    fn supports_pipelining(&self) -> bool {
        self.inner_ref().supports_pipelining()
    }

    fn check_connection(&mut self) -> bool {
        self.inner().check_connection()
    }

    fn is_open(&self) -> bool {
        self.inner_ref().is_open()
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

/// A client for `info`, with the configured TLS certificates if any and
/// `info` is a `rediss://` one (a plain URL ignores them, as
/// [`TlsConfig`](super::TlsConfig) says; the `redis` crate would refuse).
pub(super) fn client(info: ConnectionInfo, config: &RedisConfig) -> RedisResult<Client> {
    #[cfg(feature = "redis-tls")]
    if config.tls.is_custom() && matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
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
