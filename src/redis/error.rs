//! Errors: [`Error`] for strict calls, [`ConfigError`] for construction.

use std::fmt;
use std::sync::Arc;

use super::FallbackReason;

/// Why a strict call ([`RedisGroup::try_work`](super::RedisGroup::try_work))
/// returned without a value: the same reasons a failing-open call would
/// have run `f` locally for.
///
/// Cheap to clone, so that a process's local followers share their
/// leader's error.
///
/// # Examples
///
/// ```no_run
/// use sync_singleflight::redis::{FallbackReason, RedisConfig, RedisGroup};
///
/// let group: RedisGroup<String, u64> =
///     RedisGroup::open("redis://127.0.0.1:1", RedisConfig::new("demo", 1)).unwrap();
/// let err = group.try_work("k", || 42).unwrap_err();
/// assert_eq!(err.reason(), FallbackReason::Unavailable);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    reason: FallbackReason,
    detail: Arc<str>,
}

impl Error {
    pub(super) fn new(reason: FallbackReason, detail: impl Into<Arc<str>>) -> Self {
        Error {
            reason,
            detail: detail.into(),
        }
    }

    /// The kind of failure.
    pub fn reason(&self) -> FallbackReason {
        self.reason
    }

    /// What exactly went wrong (a Redis error, a decode error, …).
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
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
