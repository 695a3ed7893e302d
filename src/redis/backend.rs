//! [`Backend`]: what every part of a group uses to talk to Redis — the
//! configuration, the bounded pool, the breaker, the scripts and the
//! counters — and the one way to run an exchange: checked out, retried once
//! on a fresh connection when the pooled one was dead, and accounted with
//! the breaker.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use redis::{ConnectionLike, RedisError};

use super::breaker::Breaker;
use super::client::Dialer;
use super::locks;
use super::outcome::Counters;
use super::pool::{GetError, Pool};
use super::reply::{Acquire, CallError, LeaseState};
use super::scripts::{Claim, Scripts};
use super::{Error, ErrorKind, RedisConfig};

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// What a group's callers, its renewal thread and its readers share.
pub(super) struct Backend {
    pub(super) config: RedisConfig,
    pub(super) prefix: String,
    pub(super) pool: Pool,
    pub(super) breaker: Breaker,
    pub(super) scripts: Scripts,
    pub(super) counters: Counters,
    pub(super) orphans_released: AtomicU64,
    orphans: Mutex<Vec<Orphan>>,
}

/// A lease the server may have set for us after we stopped waiting for its
/// reply (the acquire timed out on our side: a hung server that resumed).
#[derive(Debug, Clone)]
pub(super) struct Orphan {
    pub(super) lease_key: String,
    done_key: String,
    pub(super) token: String,
    pub(super) since: Instant,
    /// Releases the server answered "not there" to.
    answered: u32,
}

/// Who runs an exchange: a caller's failures feed the breaker, the
/// background threads' (renewals, orphan clean-up) do not, since nobody is
/// waiting on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum By {
    Caller,
    Background,
}

/// An error of a connection that went stale while pooled (the server
/// restarted or reaped it as idle), as opposed to a server that does not
/// answer: the write or the read found the peer gone.
pub(super) fn is_stale(e: &RedisError) -> bool {
    !e.is_timeout() && (e.is_io_error() || e.is_connection_dropped())
}

impl Backend {
    pub(super) fn new(config: RedisConfig, dialer: Dialer) -> Self {
        let pool = Pool::new(
            dialer,
            config.max_connections - config.readers,
            config.connect_timeout,
            config.io_timeout,
        );
        // A probe's exchange takes at most a dial and a reply.
        let probe_timeout = config.connect_timeout + 2 * config.io_timeout;
        Backend {
            prefix: config.key_prefix(),
            breaker: Breaker::new(
                config.breaker_failures,
                config.breaker_cooldown,
                probe_timeout,
            ),
            pool,
            scripts: Scripts::new(),
            counters: Counters::default(),
            orphans_released: AtomicU64::new(0),
            orphans: Mutex::new(Vec::new()),
            config,
        }
    }

    /// Runs `op` on a pooled connection. A pooled (not fresh) connection
    /// that fails as stale is replaced by a freshly dialled one and `op`
    /// runs once more, so `op` must be safe to repeat: every script is
    /// (see [`scripts`](super::scripts)).
    pub(super) fn exchange<T>(
        &self,
        by: By,
        mut op: impl FnMut(&mut dyn ConnectionLike) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let mut con = match self.pool.get() {
            Ok(con) => con,
            Err(GetError::Busy(n)) => return Err(CallError::Busy(n)),
            Err(GetError::Dial(e)) => {
                self.outcome(by, Some((&e, true)));
                return Err(CallError::Redis(e));
            }
        };
        let mut result = con.call(&mut op);
        if let Err(CallError::Redis(e)) = &result {
            if !con.is_fresh() && is_stale(e) {
                result = match con.redial() {
                    Ok(()) => con.call(&mut op),
                    Err(e) => Err(CallError::Redis(e)),
                };
            }
        }
        match &result {
            Ok(_) => self.outcome(by, None),
            Err(CallError::Redis(e)) => self.outcome(by, Some((e, con.is_fresh()))),
            Err(_) => {}
        }
        result
    }

    /// Feeds the breaker: a success closes it; a failure counts when it is
    /// evidence about the server (on a fresh connection, or a timeout).
    pub(super) fn outcome(&self, by: By, failure: Option<(&RedisError, bool)>) {
        match failure {
            None => self.breaker.success(),
            Some((e, fresh)) => {
                let evidence = fresh || e.is_timeout() || !is_stale(e);
                // A wrong password, a TLS or ACL refusal or foreign data is
                // an answer, not an outage: skipping Redis would not help.
                let outage = Error::from_redis(e).is_outage();
                if by == By::Caller
                    && evidence
                    && outage
                    && self.breaker.failure(e.is_connection_refusal())
                {
                    Counters::bump(&self.counters.breaker_opens);
                    // The idle connections very likely died with the server.
                    self.pool.clear();
                }
            }
        }
    }

    /// The acquire exchange. When it times out, the server may still run
    /// it later (a hung server resuming): the token is remembered as a
    /// possible orphan, to be released by the renewal thread.
    pub(super) fn acquire(&self, claim: &Claim<'_>, own_done: &str) -> Result<Acquire, CallError> {
        let result = self.exchange(By::Caller, |c| self.scripts.acquire(c, claim));
        if let Err(CallError::Redis(e)) = &result {
            if e.is_timeout() {
                self.lock_orphans().push(Orphan {
                    lease_key: claim.lease_key.to_owned(),
                    done_key: own_done.to_owned(),
                    token: claim.token.to_owned(),
                    since: Instant::now(),
                    answered: 0,
                });
            }
        }
        result
    }

    fn lock_orphans(&self) -> std::sync::MutexGuard<'_, Vec<Orphan>> {
        locks::lock(&self.orphans)
    }

    pub(super) fn orphans(&self) -> Vec<Orphan> {
        self.lock_orphans().clone()
    }

    pub(super) fn is_orphan(&self, token: &str) -> bool {
        self.lock_orphans().iter().any(|o| o.token == token)
    }

    /// Compare-and-deletes a possibly orphaned lease of ours, ending its
    /// flight with "abandon" for anyone following it. It is
    /// forgotten once the delete hit, or after two answers of "not there"
    /// (a server that answers twice has run every command queued before
    /// them: the late acquire either set the lease or never will), or once
    /// a whole lease has passed (it would have expired by itself).
    pub(super) fn release_orphan(&self, orphan: &Orphan, by: By) {
        let ttl = millis(self.config.result_ttl);
        let released = self.exchange(by, |c| {
            let (lease, done) = (&orphan.lease_key, &orphan.done_key);
            self.scripts.release(c, lease, done, &orphan.token, ttl)
        });
        let mut orphans = self.lock_orphans();
        let Some(at) = orphans.iter().position(|o| o.token == orphan.token) else {
            return;
        };
        let forget = match released {
            Ok(LeaseState::Held) => {
                Counters::bump(&self.orphans_released);
                true
            }
            Ok(LeaseState::Lost) => {
                orphans[at].answered += 1;
                orphans[at].answered >= 2 || orphan.since.elapsed() >= self.config.lease
            }
            Err(_) => orphan.since.elapsed() >= self.config.lease,
        };
        if forget {
            orphans.swap_remove(at);
        }
    }

    /// What a failed exchange means for the caller.
    pub(super) fn error(&self, err: CallError) -> Error {
        match err {
            CallError::Malformed(why) => Error::new(ErrorKind::Malformed, why.0),
            CallError::Busy(n) => Error::new(
                ErrorKind::LocalLimit,
                format!("all {n} connections of this group stayed busy for the I/O timeout"),
            ),
            CallError::Redis(e) if e.is_timeout() => Error::new(
                ErrorKind::Timeout,
                format!(
                    "no reply within the I/O timeout ({:?}): {e}",
                    self.config.io_timeout
                ),
            ),
            CallError::Redis(e) => Error::from_redis(&e),
        }
    }
}

/// A command refused because a key holds another type: someone else's
/// data, not an outage.
pub(super) fn is_foreign(e: &RedisError) -> bool {
    e.to_string().contains("WRONGTYPE")
}
