//! A small connection pool that never hands out a connection that has
//! failed, and the circuit breaker in front of it.
//!
//! Not r2d2: with Redis down its checkout waited out its whole connection
//! timeout and PINGs on every checkout, whereas a refused direct connect
//! fails in well under a millisecond.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::{Client, Connection, RedisResult};

/// Idle connections, plus how to open new ones.
pub(super) struct Pool {
    client: Client,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl Pool {
    pub(super) fn new(
        client: Client,
        max_idle: usize,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Self {
        Pool {
            client,
            idle: Mutex::new(Vec::new()),
            max_idle,
            connect_timeout,
            io_timeout,
        }
    }

    /// An idle connection, or a new one within the connect timeout.
    pub(super) fn get(&self) -> RedisResult<Pooled<'_>> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let con = match idle {
            Some(con) => con,
            None => {
                let con = self
                    .client
                    .get_connection_with_timeout(self.connect_timeout)?;
                con.set_read_timeout(Some(self.io_timeout))?;
                con.set_write_timeout(Some(self.io_timeout))?;
                con
            }
        };
        Ok(Pooled {
            con: Some(con),
            pool: self,
            healthy: true,
        })
    }

    /// Drops every idle connection (after an outage they are all dead).
    pub(super) fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A checked-out connection. It goes back to the pool on drop only if no
/// call on it failed: after a timeout a late reply could still arrive and
/// be read as the answer to the next command.
pub(super) struct Pooled<'a> {
    con: Option<Connection>,
    pool: &'a Pool,
    healthy: bool,
}

impl Pooled<'_> {
    /// Runs one exchange, retiring the connection if it fails.
    pub(super) fn call<T, E>(
        &mut self,
        op: impl FnOnce(&mut Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let con = self
            .con
            .as_mut()
            .expect("a pooled connection is present until drop");
        let result = op(con);
        if result.is_err() {
            self.healthy = false;
        }
        result
    }

    /// Like [`call`](Self::call), with the read timeout raised by `extra`
    /// for a blocking command.
    pub(super) fn call_blocking<T, E: From<redis::RedisError>>(
        &mut self,
        extra: Duration,
        op: impl FnOnce(&mut Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let normal = self.pool.io_timeout;
        self.call(|con| {
            con.set_read_timeout(Some(normal + extra))?;
            let result = op(con);
            con.set_read_timeout(Some(normal))?;
            result
        })
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(con) = self.con.take() {
            if self.healthy {
                let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < self.pool.max_idle {
                    idle.push(con);
                }
            }
        }
    }
}

/// Consecutive-failure circuit breaker. While open, calls skip Redis
/// entirely; after the cooldown they try again, and the next failure
/// re-opens it at once (the failure count is only reset by a success).
pub(super) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    /// Nanoseconds after `epoch` until which the breaker is open.
    open_until: AtomicU64,
    epoch: Instant,
}

impl Breaker {
    pub(super) fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold,
            cooldown,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether Redis may be tried now.
    pub(super) fn allows(&self) -> bool {
        self.now() >= self.open_until.load(Ordering::Acquire)
    }

    pub(super) fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure; returns true when this failure opened the breaker.
    pub(super) fn failure(&self) -> bool {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if failures < self.threshold {
            return false;
        }
        let now = self.now();
        let until = now.saturating_add(u64::try_from(self.cooldown.as_nanos()).unwrap_or(u64::MAX));
        let previous = self.open_until.fetch_max(until, Ordering::AcqRel);
        previous <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_and_closes_after_cooldown() {
        let breaker = Breaker::new(2, Duration::from_millis(50));
        assert!(breaker.allows());
        assert!(!breaker.failure());
        assert!(breaker.allows());
        assert!(breaker.failure());
        assert!(!breaker.allows());
        assert!(!breaker.failure(), "already open: not a new opening");
        let start = Instant::now();
        while !breaker.allows() {
            assert!(start.elapsed() < Duration::from_secs(2));
            std::thread::sleep(Duration::from_millis(5));
        }
        breaker.success();
        assert!(!breaker.failure());
    }
}
