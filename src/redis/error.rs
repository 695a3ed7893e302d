//! Errors: [`Error`] (with its [`ErrorKind`]) for strict calls,
//! [`ConfigError`] for construction.

use std::fmt;
use std::sync::Arc;

use redis::ServerErrorKind as Server;

use super::FallbackReason;

/// What exactly failed, finer than the [`FallbackReason`] it implies: tell
/// a refused connection from a timeout, a wrong password, a cluster
/// redirection or a replica without parsing [`Error::detail`].
///
/// # Examples
///
/// ```no_run
/// use sync_singleflight::redis::{ErrorKind, RedisConfig, RedisGroup};
///
/// let group: RedisGroup<String, u64> =
///     RedisGroup::open("redis://127.0.0.1:1", RedisConfig::new("demo", 1)).unwrap();
/// let err = group.try_work("k", || 42).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Unreachable);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No connection: refused, reset, closed, or the host is unknown.
    Unreachable,
    /// Connecting or a reply took longer than its timeout.
    Timeout,
    /// The server refused the credentials (`WRONGPASS`), or wants some and
    /// got none (`NOAUTH`).
    Authentication,
    /// The ACL user may not run a command or touch a key the protocol
    /// needs (`NOPERM`).
    Permission,
    /// The TLS handshake failed: an untrusted or mismatched server
    /// certificate, a refused client certificate, or a plain-text server.
    Tls,
    /// A Redis Cluster answer: `MOVED`/`ASK` (a cluster node reached
    /// through [`RedisGroup::open`](super::RedisGroup::open) instead of a
    /// cluster client), `CROSSSLOT`, `CLUSTERDOWN`, `TRYAGAIN` or
    /// `MASTERDOWN`.
    Cluster,
    /// The server is a read-only replica (`READONLY`).
    Replica,
    /// No sentinel asked monitors the primary name given to
    /// [`RedisGroup::open_sentinel`](super::RedisGroup::open_sentinel).
    UnknownPrimary,
    /// The server is loading its data or running a long script
    /// (`LOADING`, `BUSY`).
    Busy,
    /// Any other error reply from the server.
    Server,
    /// Data under this group's keys, or a reply, was not what the protocol
    /// writes.
    Malformed,
    /// The remote leader's value was over its `max_payload`.
    PayloadTooLarge,
    /// The remote leader's value could not be serialized.
    Unencodable,
    /// A limit of this process, not of Redis: every connection the group
    /// may open stayed busy for the I/O timeout (see
    /// [`max_connections`](super::RedisConfig::max_connections)), or a
    /// thread could not be started.
    LocalLimit,
    /// Recent failures opened the circuit breaker; Redis was not tried.
    BreakerOpen,
    /// Other processes' leaders kept the key longer than `max_wait`.
    WaitedTooLong,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Authentication => "authentication failed",
            ErrorKind::Permission => "no ACL permission",
            ErrorKind::Tls => "TLS failed",
            ErrorKind::Cluster => "cluster error",
            ErrorKind::Replica => "read-only replica",
            ErrorKind::UnknownPrimary => "primary name unknown to the sentinels",
            ErrorKind::Busy => "server busy",
            ErrorKind::Server => "server error",
            ErrorKind::Malformed => "malformed data",
            ErrorKind::PayloadTooLarge => "payload too large",
            ErrorKind::Unencodable => "value not encodable",
            ErrorKind::LocalLimit => "local limit",
            ErrorKind::BreakerOpen => "breaker open",
            ErrorKind::WaitedTooLong => "waited too long",
        })
    }
}

/// Why a strict call ([`RedisGroup::try_work`](super::RedisGroup::try_work))
/// returned without a value: the same reasons a failing-open call would
/// have run `f` locally for.
///
/// [`reason`](Self::reason) is what a failing-open call reports in
/// [`Source::Fallback`](super::Source::Fallback); [`kind`](Self::kind) says
/// exactly what failed. Cheap to clone, so that a process's local
/// followers share their leader's error.
///
/// # Examples
///
/// ```no_run
/// use sync_singleflight::redis::{ErrorKind, FallbackReason, RedisConfig, RedisGroup};
///
/// let group: RedisGroup<String, u64> =
///     RedisGroup::open("redis://127.0.0.1:1", RedisConfig::new("demo", 1)).unwrap();
/// let err = group.try_work("k", || 42).unwrap_err();
/// assert_eq!(err.reason(), FallbackReason::Unavailable);
/// assert_eq!(err.kind(), ErrorKind::Unreachable);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    reason: FallbackReason,
    detail: Arc<str>,
}

impl Error {
    /// An error of `kind`, with the reason that kind implies.
    pub(super) fn new(kind: ErrorKind, detail: impl Into<Arc<str>>) -> Self {
        let reason = match kind {
            ErrorKind::Unreachable
            | ErrorKind::Timeout
            | ErrorKind::Cluster
            | ErrorKind::Replica
            | ErrorKind::Busy
            | ErrorKind::Server
            | ErrorKind::LocalLimit => FallbackReason::Unavailable,
            ErrorKind::Authentication
            | ErrorKind::Permission
            | ErrorKind::Tls
            | ErrorKind::UnknownPrimary => FallbackReason::Misconfigured,
            ErrorKind::Malformed => FallbackReason::Malformed,
            ErrorKind::PayloadTooLarge => FallbackReason::PayloadTooLarge,
            ErrorKind::Unencodable => FallbackReason::Unencodable,
            ErrorKind::BreakerOpen => FallbackReason::BreakerOpen,
            ErrorKind::WaitedTooLong => FallbackReason::WaitedTooLong,
        };
        Error {
            kind,
            reason,
            detail: detail.into(),
        }
    }

    /// Classifies an error of the `redis` crate.
    pub(super) fn from_redis(e: &redis::RedisError) -> Self {
        let text = e.to_string();
        let code = e.code().unwrap_or_default();
        let kind = match e.kind() {
            _ if code == "WRONGTYPE" => {
                return Error::new(
                    ErrorKind::Malformed,
                    format!("foreign data under our keys: {text}"),
                );
            }
            redis::ErrorKind::AuthenticationFailed => ErrorKind::Authentication,
            _ if matches!(code, "NOAUTH" | "WRONGPASS") => ErrorKind::Authentication,
            // The cluster client folds every startup node's failure into one
            // I/O error ("Failed to connect to each cluster node (…:
            // Password authentication failed - AuthenticationFailed; …)"):
            // a node that refused our credentials makes it a setup to fix.
            _ if ["AuthenticationFailed", "WRONGPASS", "NOAUTH"]
                .iter()
                .any(|mark| text.contains(mark)) =>
            {
                ErrorKind::Authentication
            }
            redis::ErrorKind::Server(Server::NoPerm) => ErrorKind::Permission,
            // Inside a script an ACL refusal is a plain error reply.
            _ if text.contains("user executing the script can't") => ErrorKind::Permission,
            redis::ErrorKind::Server(
                Server::Moved
                | Server::Ask
                | Server::CrossSlot
                | Server::ClusterDown
                | Server::TryAgain
                | Server::MasterDown,
            )
            | redis::ErrorKind::ClusterConnectionNotFound => ErrorKind::Cluster,
            redis::ErrorKind::Server(Server::ReadOnly) => ErrorKind::Replica,
            redis::ErrorKind::MasterNameNotFoundBySentinel => ErrorKind::UnknownPrimary,
            redis::ErrorKind::Server(Server::BusyLoading) => ErrorKind::Busy,
            _ if code == "BUSY" => ErrorKind::Busy,
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => {
                ErrorKind::Malformed
            }
            _ if e.is_timeout() => ErrorKind::Timeout,
            _ if is_tls(&text) => ErrorKind::Tls,
            redis::ErrorKind::Io | redis::ErrorKind::Client => ErrorKind::Unreachable,
            _ => ErrorKind::Server,
        };
        let mut error = Error::new(kind, text);
        // A cluster node reached without a cluster client answers MOVED for
        // every key it does not own: the keys it owns still work, so this is
        // a setup to fix, not an outage that should stop them all.
        if matches!(
            e.kind(),
            redis::ErrorKind::Server(Server::Moved | Server::Ask | Server::CrossSlot)
        ) {
            error.reason = FallbackReason::Misconfigured;
        }
        error
    }

    /// Exactly what failed.
    ///
    /// # Examples
    ///
    /// See [`Error`].
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What a failing-open call reports for this error.
    ///
    /// # Examples
    ///
    /// See [`Error`].
    pub fn reason(&self) -> FallbackReason {
        self.reason
    }

    /// What exactly went wrong (a Redis error, a decode error, …).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use sync_singleflight::redis::{RedisConfig, RedisGroup};
    ///
    /// let group: RedisGroup<String, u64> =
    ///     RedisGroup::open("redis://127.0.0.1:1", RedisConfig::new("demo", 1)).unwrap();
    /// if let Err(err) = group.try_work("k", || 42) {
    ///     eprintln!("not deduplicated ({}): {}", err.kind(), err.detail());
    /// }
    /// ```
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Whether this error says Redis is down or overloaded, which counts
    /// towards opening the circuit breaker. A wrong password, a missing ACL
    /// permission, a TLS misconfiguration or malformed data do not: Redis
    /// answered, and skipping it would not help.
    pub(super) fn is_outage(&self) -> bool {
        self.reason == FallbackReason::Unavailable
    }
}

/// Whether a failure came from the TLS layer. The `redis` crate wraps
/// rustls's error in an `io::Error` behind an `Arc`, which hides its type
/// from `source()` (`Arc` and `io::Error` both skip themselves), so the
/// text is all there is: rustls names a refused certificate, a non-TLS peer
/// ("corrupt message"), a failed handshake or the server's alert (such as
/// `CertificateRequired`).
///
/// Not rustls's "peer closed connection without sending TLS close_notify":
/// that is a peer that hung up (a killed server, a proxy whose backend is
/// down), an outage rather than a TLS setup to fix.
fn is_tls(text: &str) -> bool {
    if text.contains("close_notify") {
        return false;
    }
    [
        "certificate",
        "corrupt message",
        "handshake",
        "fatal alert",
        "TLS",
    ]
    .iter()
    .any(|mark| text.contains(mark))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.kind, self.detail)
    }
}

impl std::error::Error for Error {}

/// A [`RedisConfig`](super::RedisConfig) or URL that cannot work.
///
/// # Examples
///
/// ```
/// use sync_singleflight::redis::{RedisConfig, RedisGroup};
///
/// let bad = RedisGroup::<String, u8>::open("redis://127.0.0.1:6379", RedisConfig::new("a{b}", 1));
/// assert!(bad.unwrap_err().to_string().contains("namespace"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub(super) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid Redis group configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS peer that closed the connection is an outage: rustls names
    /// TLS in its text, but the breaker must still count it.
    #[test]
    fn a_tls_peer_that_hung_up_is_unreachable_not_misconfigured() {
        let eof = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "peer closed connection without sending TLS close_notify: \
             https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof",
        );
        let err = Error::from_redis(&redis::RedisError::from(eof));
        assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
        assert!(err.is_outage());
        // A refused certificate stays a TLS error.
        let bad_cert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        let err = Error::from_redis(&redis::RedisError::from(bad_cert));
        assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
        assert!(!err.is_outage());
    }

    /// The cluster client's one I/O error for all its startup nodes: told
    /// apart by what the nodes said.
    #[test]
    fn a_cluster_startup_failure_says_what_the_nodes_said() {
        let startup = |detail: &str| {
            Error::from_redis(&redis::RedisError::from((
                redis::ErrorKind::Io,
                "It failed to check startup nodes.",
                detail.to_string(),
            )))
        };
        let auth = startup(
            "Failed to connect to each cluster node (127.0.0.1:7000: Password \
             authentication failed - AuthenticationFailed)",
        );
        assert_eq!(auth.kind(), ErrorKind::Authentication, "{auth}");
        assert!(!auth.is_outage());
        let tls = startup(
            "Failed to connect to each cluster node (127.0.0.1:7000: invalid peer \
             certificate: UnknownIssuer)",
        );
        assert_eq!(tls.kind(), ErrorKind::Tls, "{tls}");
        let down = startup(
            "Failed to connect to each cluster node (127.0.0.1:7000: Connection \
             refused (os error 111))",
        );
        assert_eq!(down.kind(), ErrorKind::Unreachable, "{down}");
        assert!(down.is_outage());
    }
}
