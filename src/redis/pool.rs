//! A bounded connection pool that never hands out a connection that has
//! failed, and counts what it opens.
//!
//! Not r2d2: with Redis down its checkout waited out its whole connection
//! timeout and PINGs on every checkout, whereas a refused direct connect
//! fails in well under a millisecond.
//!
//! The bound covers every connection of a group: the shared readers'
//! (dialled with [`Pool::dial_reader`], one each) and at most
//! `max_connections - readers` for short exchanges. A checkout that finds
//! all of those busy waits for one to come back, up to the I/O timeout.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{ConnectionLike, RedisResult};

use super::client::{Dialer, Link};
use super::locks;

/// Idle connections, plus how to open new ones.
pub(super) struct Pool {
    dialer: Dialer,
    state: Mutex<Slots>,
    returned: Condvar,
    /// Links for exchanges (the readers' are on top).
    cap: usize,
    connect_timeout: Duration,
    io_timeout: Duration,
    pub(super) stats: PoolStats,
}

struct Slots {
    idle: Vec<Link>,
    checked_out: usize,
}

/// What the pool did, for [`RedisStats`](super::RedisStats).
#[derive(Default)]
pub(super) struct PoolStats {
    pub(super) open: AtomicUsize,
    pub(super) peak: AtomicUsize,
    pub(super) dialled: AtomicU64,
    pub(super) redials: AtomicU64,
}

/// Why [`Pool::get`] returned no connection.
#[derive(Debug)]
pub(super) enum GetError {
    /// Every connection the bound allows stayed busy for the I/O timeout:
    /// this process is busy, which says nothing about the server.
    Busy(usize),
    /// Opening a connection failed.
    Dial(redis::RedisError),
}

impl Pool {
    pub(super) fn new(
        dialer: Dialer,
        cap: usize,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Self {
        Pool {
            dialer,
            state: Mutex::new(Slots {
                idle: Vec::new(),
                checked_out: 0,
            }),
            returned: Condvar::new(),
            cap,
            connect_timeout,
            io_timeout,
            stats: PoolStats::default(),
        }
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        locks::lock(&self.state)
    }

    /// An idle connection, or a new one within the connect timeout, or,
    /// when the bound is reached, the first one returned within the I/O
    /// timeout.
    pub(super) fn get(&self) -> Result<Pooled<'_>, GetError> {
        let deadline = Instant::now() + self.io_timeout;
        let mut slots = self.slots();
        loop {
            if let Some(con) = slots.idle.pop() {
                slots.checked_out += 1;
                return Ok(self.pooled(con, false));
            }
            if slots.checked_out < self.cap {
                slots.checked_out += 1;
                drop(slots);
                return match self.dial() {
                    Ok(con) => Ok(self.pooled(con, true)),
                    Err(e) => {
                        self.free_slot(None);
                        Err(GetError::Dial(e))
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(GetError::Busy(self.cap));
            }
            slots = locks::wait_timeout(&self.returned, slots, left);
        }
    }

    fn pooled(&self, con: Link, fresh: bool) -> Pooled<'_> {
        Pooled {
            con: Some(con),
            pool: self,
            healthy: true,
            fresh,
        }
    }

    /// Whether this pool's connections go to a Redis Cluster.
    pub(super) fn is_cluster(&self) -> bool {
        self.dialer.is_cluster()
    }

    /// Opens a connection with the group's timeouts and counts it.
    fn dial(&self) -> RedisResult<Link> {
        let con = self.dialer.connect(self.connect_timeout)?;
        con.set_read_timeout(Some(self.io_timeout))?;
        con.set_write_timeout(Some(self.io_timeout))?;
        self.stats.dialled.fetch_add(1, Relaxed);
        let open = self.stats.open.fetch_add(1, Relaxed) + 1;
        self.stats.peak.fetch_max(open, Relaxed);
        Ok(con)
    }

    /// A connection for a shared reader, outside the exchanges' share of
    /// the bound (each reader holds one). Give it back with
    /// [`close_reader`](Self::close_reader).
    pub(super) fn dial_reader(&self) -> RedisResult<Link> {
        self.dial()
    }

    pub(super) fn close_reader(&self, con: Link) {
        drop(con);
        self.stats.open.fetch_sub(1, Relaxed);
    }

    /// Returns a checked-out slot, with its connection when it may be reused.
    fn free_slot(&self, idle: Option<Link>) {
        let mut slots = self.slots();
        slots.checked_out -= 1;
        slots.idle.extend(idle);
        drop(slots);
        self.returned.notify_one();
    }

    /// Drops every idle connection (after an outage they are all dead).
    pub(super) fn clear(&self) {
        let dropped = std::mem::take(&mut self.slots().idle);
        self.stats.open.fetch_sub(dropped.len(), Relaxed);
    }
}

/// A checked-out connection. It goes back to the pool on drop only if no
/// call on it failed: after a timeout a late reply could still arrive and
/// be read as the answer to the next command.
pub(super) struct Pooled<'a> {
    con: Option<Link>,
    pool: &'a Pool,
    healthy: bool,
    /// Dialled for this checkout: a failure on it is evidence about the
    /// server, not about a connection that went stale while idle.
    fresh: bool,
}

impl Pooled<'_> {
    pub(super) fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Runs one exchange, retiring the connection if it fails.
    pub(super) fn call<T, E>(
        &mut self,
        op: impl FnOnce(&mut dyn ConnectionLike) -> Result<T, E>,
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

    /// Swaps a connection that failed for a freshly dialled one, in the
    /// same slot of the bound.
    pub(super) fn redial(&mut self) -> RedisResult<()> {
        self.pool.stats.redials.fetch_add(1, Relaxed);
        if self.con.take().is_some() {
            self.pool.stats.open.fetch_sub(1, Relaxed);
        }
        // Whatever happens now is about a fresh dial.
        self.fresh = true;
        self.con = Some(self.pool.dial()?);
        self.healthy = true;
        Ok(())
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        match self.con.take() {
            Some(con) if self.healthy => self.pool.free_slot(Some(con)),
            Some(con) => {
                drop(con);
                self.pool.stats.open.fetch_sub(1, Relaxed);
                self.pool.free_slot(None);
            }
            // A failed redial left the slot without a connection.
            None => self.pool.free_slot(None),
        }
    }
}
