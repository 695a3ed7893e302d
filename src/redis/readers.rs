//! Shared readers: how a process follows any number of other processes'
//! flights on a bounded number of connections.
//!
//! Each reader is a thread with one connection. While some flight is
//! followed it sits in one `XREAD BLOCK` over every followed result stream
//! plus a private wake-up stream of its own (random name, 60 s TTL,
//! refreshed on every wake-up). A follower that adds a stream to a reader
//! blocked in Redis appends one entry to the wake-up stream (once per
//! re-issue, however many followers arrive meanwhile), which ends the
//! `XREAD` at once; the reader re-issues it with the new stream. With
//! nothing to follow the reader waits on a local condition variable, not
//! in Redis, so the first flight after a quiet spell costs no wake-up.
//!
//! Followers park on the reader's condition variable with their own
//! deadline; every follower of a stream gets its first entry.
//!
//! A single `XREAD` over keys of different hash tags is refused by Redis
//! Cluster (`CROSSSLOT`): this design is for a standalone or
//! Sentinel-managed server.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::client::Link;

use super::backend::{Backend, By, is_foreign, is_stale, millis};
use super::locks;
use super::reply::{self, CallError, Entry};
use super::scripts;
use super::token::new_token;
use super::{Error, ErrorKind};

/// The longest single `XREAD BLOCK`. Followers time out on their own; this
/// only bounds how long a stream nobody follows any more stays in the read.
const MAX_BLOCK: Duration = Duration::from_secs(1);

/// A reader with nothing to follow for this long closes its connection
/// and ends its thread.
const IDLE: Duration = Duration::from_secs(10);

const WAKE_TTL: Duration = Duration::from_secs(60);

/// The readers of one group; a stream always goes to the same one.
pub(super) struct Readers {
    readers: Vec<Arc<Reader>>,
    hasher: RandomState,
}

struct Reader {
    wake_key: String,
    state: Mutex<State>,
    /// Wakes an idle reader thread: a stream to follow.
    work: Condvar,
    /// Wakes parked followers: results arrived.
    delivered: Condvar,
}

#[derive(Default)]
struct State {
    watches: HashMap<String, Watch>,
    thread_running: bool,
    /// The thread is in (or about to issue) an `XREAD` over a snapshot of
    /// the watches.
    in_redis: bool,
    /// A follower already sent a wake-up since that snapshot.
    wake_sent: bool,
    /// Followers parked right now.
    waiting: usize,
    /// The group was dropped: the thread ends once nothing is followed.
    closed: bool,
}

struct Watch {
    followers: usize,
    result: Option<Result<Entry, Error>>,
}

impl Readers {
    pub(super) fn new(prefix: &str, count: usize) -> Self {
        let readers = (0..count)
            .map(|_| {
                Arc::new(Reader {
                    wake_key: format!("{prefix}reader:{}", new_token()),
                    state: Mutex::new(State::default()),
                    work: Condvar::new(),
                    delivered: Condvar::new(),
                })
            })
            .collect();
        Readers {
            readers,
            hasher: RandomState::new(),
        }
    }

    /// Followers parked right now, over every reader.
    pub(super) fn waiting(&self) -> usize {
        self.readers.iter().map(|r| r.lock().waiting).sum()
    }

    /// Waits up to `block` for the first entry of the stream `done`.
    /// `Ok(None)` means nothing arrived in that time.
    pub(super) fn follow(
        &self,
        backend: &Arc<Backend>,
        done: &str,
        block: Duration,
    ) -> Result<Option<Entry>, Error> {
        let at = usize::try_from(self.hasher.hash_one(done)).unwrap_or(0) % self.readers.len();
        let reader = &self.readers[at];
        let deadline = Instant::now() + block;
        let mut state = reader.lock();
        let watch = state.watches.entry(done.to_owned()).or_insert(Watch {
            followers: 0,
            result: None,
        });
        watch.followers += 1;
        let new_stream = watch.followers == 1 && watch.result.is_none();
        let wake = new_stream && state.in_redis && !state.wake_sent;
        state.wake_sent |= wake;
        if !state.thread_running {
            let (shared, weak) = (Arc::clone(reader), Arc::downgrade(backend));
            let spawned = thread::Builder::new()
                .name("sf-redis-reader".into())
                .spawn(move || shared.run(&weak));
            if let Err(e) = spawned {
                state.forget(done);
                return Err(Error::new(
                    ErrorKind::LocalLimit,
                    format!("cannot start a reader thread: {e}"),
                ));
            }
            state.thread_running = true;
        }
        state.waiting += 1;
        drop(state);
        reader.work.notify_one();
        if wake {
            let ttl = millis(WAKE_TTL);
            let woken = backend.exchange(By::Caller, |c| scripts::wake(c, &reader.wake_key, ttl));
            if woken.is_err() {
                // The reader picks the stream up when its read ends anyway
                // (within MAX_BLOCK); let the next follower try again.
                reader.lock().wake_sent = false;
            }
        }
        let mut state = reader.lock();
        let found = loop {
            let watch = state.watches.get_mut(done).expect("registered above");
            if watch.result.is_some() {
                // The last follower takes the entry (it can be megabytes).
                let result = if watch.followers == 1 {
                    watch.result.take()
                } else {
                    watch.result.clone()
                };
                break result.expect("checked above").map(Some);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Ok(None);
            }
            state = locks::wait_timeout(&reader.delivered, state, left);
        };
        state.waiting -= 1;
        state.forget(done);
        found
    }
}

impl Drop for Readers {
    /// Ends idle reader threads now, closing their connections, rather
    /// than after [`IDLE`].
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.lock().closed = true;
            reader.work.notify_all();
        }
    }
}

impl State {
    /// One follower of `done` leaves.
    fn forget(&mut self, done: &str) {
        if let Some(watch) = self.watches.get_mut(done) {
            watch.followers -= 1;
            if watch.followers == 0 {
                self.watches.remove(done);
            }
        }
    }

    /// Streams followed and not yet answered.
    fn pending(&self) -> Vec<String> {
        self.watches
            .iter()
            .filter(|(_, w)| w.result.is_none())
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn deliver(&mut self, key: &str, result: Result<Entry, Error>) {
        if let Some(watch) = self.watches.get_mut(key) {
            watch.result.get_or_insert(result);
        }
    }
}

impl Reader {
    fn lock(&self) -> MutexGuard<'_, State> {
        locks::lock(&self.state)
    }

    fn run(&self, weak: &Weak<Backend>) {
        let mut conn: Option<Link> = None;
        let mut wake_id = "0-0".to_string();
        loop {
            let Some(pending) = self.next_streams(weak, &mut conn) else {
                return;
            };
            let Some(backend) = weak.upgrade() else {
                self.lock().thread_running = false;
                return;
            };
            let result = self.read(&backend, &mut conn, &wake_id, &pending);
            let mut state = self.lock();
            state.in_redis = false;
            match result {
                Ok(streams) => {
                    for mut stream in streams {
                        if stream.key == self.wake_key {
                            if let Some((id, _)) = stream.entries.pop() {
                                wake_id = id;
                            }
                        } else if let Some((_, fields)) = stream.entries.first_mut() {
                            let entry = reply::parse_entry(fields)
                                .map_err(|m| Error::new(ErrorKind::Malformed, m.0));
                            state.deliver(&stream.key, entry);
                        }
                    }
                }
                Err(CallError::Redis(e)) if is_foreign(&e) => {
                    drop(state);
                    let mut foreign = self.foreign_streams(&backend, &mut conn, &pending);
                    if foreign.is_empty() {
                        // Not found (it changed meanwhile): fail them all
                        // rather than re-issue the same refused read.
                        foreign = pending;
                    }
                    state = self.lock();
                    for key in foreign {
                        let why = format!("foreign data at {key}: {e}");
                        state.deliver(&key, Err(Error::new(ErrorKind::Malformed, why)));
                    }
                }
                Err(err) => {
                    let err = backend.error(err);
                    for key in &pending {
                        state.deliver(key, Err(err.clone()));
                    }
                }
            }
            drop(state);
            self.delivered.notify_all();
        }
    }

    /// Waits until some stream is followed; `None` after [`IDLE`] with
    /// none, or when the group is gone. The connection is closed before
    /// the thread counts as stopped, so a thread started for the next
    /// follower never holds a second one for this reader.
    fn next_streams(&self, weak: &Weak<Backend>, conn: &mut Option<Link>) -> Option<Vec<String>> {
        let mut state = self.lock();
        let idle_since = Instant::now();
        loop {
            let pending = state.pending();
            if !pending.is_empty() {
                state.in_redis = true;
                state.wake_sent = false;
                return Some(pending);
            }
            let idle = idle_since.elapsed();
            if idle >= IDLE || state.closed || weak.strong_count() == 0 {
                if let Some(con) = conn.take() {
                    match weak.upgrade() {
                        Some(backend) => backend.pool.close_reader(con),
                        None => drop(con),
                    }
                }
                state.thread_running = false;
                return None;
            }
            state = locks::wait_timeout(&self.work, state, IDLE - idle);
        }
    }

    /// One `XREAD` over the wake-up stream and `pending`. A connection
    /// that turns out stale (the server restarted, reaped it, or killed
    /// it) is redialled once and the read re-issued; even a fresh one can
    /// go stale while blocked for a long time.
    fn read(
        &self,
        backend: &Backend,
        conn: &mut Option<Link>,
        wake_id: &str,
        pending: &[String],
    ) -> Result<Vec<reply::StreamEntries>, CallError> {
        let mut streams: Vec<(&str, &str)> = vec![(&self.wake_key, wake_id)];
        streams.extend(pending.iter().map(|k| (k.as_str(), "0-0")));
        let attempt = |conn: &mut Option<Link>| -> Result<_, CallError> {
            if conn.is_none() {
                *conn = Some(backend.pool.dial_reader()?);
            }
            let con = conn.as_mut().expect("dialled above");
            con.set_read_timeout(Some(MAX_BLOCK + backend.config.io_timeout))?;
            scripts::read_streams(con, &streams, millis(MAX_BLOCK))
        };
        let mut result = attempt(conn);
        if let Err(CallError::Redis(e)) = &result {
            let stale = conn.is_some() && is_stale(e);
            if let Some(con) = conn.take() {
                backend.pool.close_reader(con);
            }
            if stale {
                backend.pool.stats.redials.fetch_add(1, Relaxed);
                result = attempt(conn);
            }
        }
        match &result {
            Ok(_) => backend.outcome(By::Caller, None),
            Err(CallError::Redis(e)) if is_foreign(e) => {}
            Err(CallError::Redis(e)) => {
                // A dial that failed, a timeout, or a second stale failure
                // on a fresh connection: evidence about the server.
                backend.outcome(By::Caller, Some((e, true)));
                if let Some(con) = conn.take() {
                    backend.pool.close_reader(con);
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Which of `pending` hold something other than a stream (the reason a
    /// whole `XREAD` was refused with WRONGTYPE).
    fn foreign_streams(
        &self,
        backend: &Backend,
        conn: &mut Option<Link>,
        pending: &[String],
    ) -> Vec<String> {
        let Some(con) = conn.as_mut() else {
            return Vec::new();
        };
        if con
            .set_read_timeout(Some(backend.config.io_timeout))
            .is_err()
        {
            return pending.to_vec();
        }
        pending
            .iter()
            .filter(|key| {
                !matches!(
                    scripts::key_type(con, key).as_deref(),
                    Ok("stream" | "none")
                )
            })
            .cloned()
            .collect()
    }
}
