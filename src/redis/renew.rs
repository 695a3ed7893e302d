//! The group's maintenance thread: it renews every running leader's lease
//! (compare-and-PEXPIRE every `renew_interval`), so leading a flight costs
//! a lock and a push instead of a thread spawn, and it releases orphaned
//! leases of ours (see [`Backend::acquire`]). The thread exits after a
//! second with nothing to do and is started again on demand.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::backend::{Backend, By, millis};
use super::locks;
use super::reply::LeaseState;

/// How long the thread lingers with nothing to do (at least).
const IDLE: Duration = Duration::from_secs(1);

/// How often a possibly orphaned lease is tried again: the server that
/// hung may resume at any time, and the lease it then sets blocks every
/// other process until it is released.
const ORPHAN_RETRY: Duration = Duration::from_millis(20);

#[derive(Default)]
pub(super) struct Renewer {
    state: Arc<State>,
}

/// The registry, and the thread's alarm clock: an orphan to release
/// cannot wait for the thread's next renewal round.
#[derive(Default)]
struct State {
    leases: Mutex<Leases>,
    orphan_found: Condvar,
}

#[derive(Default)]
struct Leases {
    next_id: u64,
    live: Vec<Live>,
    thread_running: bool,
}

struct Live {
    id: u64,
    lease_key: String,
    token: String,
    due: Instant,
    lost: Arc<Held>,
}

/// What a running leader knows about its lease, shared with the renewal
/// thread and with the [`Lease`](super::Lease) handed to `f`.
pub(super) struct Held {
    /// A renewal answered "not ours", or renewals failed until the lease's
    /// time ran out.
    lost: AtomicBool,
    /// The last renewal failed (no answer): it is being tried again.
    failing: AtomicBool,
    /// When the lease runs out unless renewed again, in nanoseconds after
    /// `epoch`: counted from before the command that set or renewed it, so
    /// it never ends later here than in Redis (clock rates aside).
    expires: AtomicU64,
    epoch: Instant,
    lease: Duration,
}

impl Held {
    /// A lease set by a command sent at `sent`.
    pub(super) fn new(sent: Instant, lease: Duration) -> Self {
        let held = Held {
            lost: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            expires: AtomicU64::new(0),
            epoch: sent,
            lease,
        };
        held.extended(sent);
        held
    }

    fn extended(&self, sent: Instant) {
        let at = sent.saturating_duration_since(self.epoch) + self.lease;
        let nanos = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        self.expires.fetch_max(nanos, Ordering::AcqRel);
    }

    fn lose(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// Whether the lease is known lost: a renewal said so, or its time ran
    /// out with no renewal confirmed (a paused process finds out
    /// here before its renewal thread runs again).
    pub(super) fn is_lost(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.lost.load(Ordering::Acquire) || now >= self.expires.load(Ordering::Acquire)
    }
}

fn lock(state: &State) -> MutexGuard<'_, Leases> {
    locks::lock(&state.leases)
}

/// A running leader's registration; dropping it (panic included) stops the
/// renewals.
pub(super) struct Renewal<'a> {
    renewer: &'a Renewer,
    id: u64,
    lost: Arc<Held>,
}

impl Renewal<'_> {
    /// Stops renewing and tells whether the lease was lost meanwhile, or
    /// may have been: a "not ours" reply, or a last renewal that failed.
    pub(super) fn stop(self) -> bool {
        self.lost.lost.load(Ordering::Acquire) || self.lost.failing.load(Ordering::Acquire)
    }
}

impl Drop for Renewal<'_> {
    fn drop(&mut self) {
        lock(&self.renewer.state).live.retain(|l| l.id != self.id);
    }
}

impl Renewer {
    /// Registers a lease for renewal, starting the thread if it is not
    /// running.
    pub(super) fn start(
        &self,
        backend: &Arc<Backend>,
        lease_key: &str,
        token: &str,
        lost: Arc<Held>,
    ) -> Renewal<'_> {
        let mut leases = lock(&self.state);
        let id = leases.next_id;
        leases.next_id += 1;
        leases.live.push(Live {
            id,
            lease_key: lease_key.to_owned(),
            token: token.to_owned(),
            due: Instant::now() + backend.config.renew_interval(),
            lost: Arc::clone(&lost),
        });
        // No wake-up for a running thread: it never sleeps longer than one
        // renewal interval, so it is up before this lease is due. That
        // keeps a context switch off every flight's path.
        if !self.spawn_if_idle(&mut leases, backend) {
            // Without renewals the lease may expire under a long `f`: count it.
            lost.lose();
        }
        Renewal {
            renewer: self,
            id,
            lost,
        }
    }

    /// Makes sure the thread runs and is awake, to release orphaned leases.
    pub(super) fn watch_orphans(&self, backend: &Arc<Backend>) {
        let mut leases = lock(&self.state);
        self.spawn_if_idle(&mut leases, backend);
        drop(leases);
        self.state.orphan_found.notify_one();
    }

    /// Whether the thread runs (now).
    fn spawn_if_idle(&self, leases: &mut Leases, backend: &Arc<Backend>) -> bool {
        if leases.thread_running {
            return true;
        }
        let (state, weak) = (Arc::clone(&self.state), Arc::downgrade(backend));
        let spawned = thread::Builder::new()
            .name("sf-redis-renew".into())
            .spawn(move || run(&state, &weak));
        leases.thread_running = spawned.is_ok();
        leases.thread_running
    }
}

fn run(state: &State, weak: &Weak<Backend>) {
    let mut idle_since: Option<Instant> = None;
    while let Some(backend) = weak.upgrade() {
        let every = backend.config.renew_interval();
        let orphans = backend.orphans();
        for orphan in &orphans {
            backend.release_orphan(orphan, By::Background);
        }
        let mut leases = lock(state);
        let now = Instant::now();
        let due: Vec<(u64, String, String)> = leases
            .live
            .iter()
            .filter(|l| l.due <= now)
            .map(|l| (l.id, l.lease_key.clone(), l.token.clone()))
            .collect();
        if due.is_empty() {
            if !leases.live.is_empty() || !orphans.is_empty() {
                idle_since = None;
            } else if now.duration_since(*idle_since.get_or_insert(now)) >= IDLE {
                leases.thread_running = false;
                return;
            }
            let next = leases.live.iter().map(|l| l.due).min();
            let mut wait = next.map_or(every, |d| d.saturating_duration_since(now).min(every));
            if !orphans.is_empty() {
                wait = wait.min(ORPHAN_RETRY);
            }
            // Not holding the group while asleep: dropping it ends the thread.
            drop(backend);
            drop(locks::wait_timeout(&state.orphan_found, leases, wait));
            continue;
        }
        drop(leases);
        let lease_ms = millis(backend.config.lease);
        for (id, lease_key, token) in due {
            let sent = Instant::now();
            let renewed = backend.exchange(By::Background, |c| {
                backend.scripts.renew(c, &lease_key, &token, lease_ms)
            });
            let mut leases = lock(state);
            let Some(at) = leases.live.iter().position(|l| l.id == id) else {
                continue; // the flight ended meanwhile
            };
            match renewed {
                Ok(LeaseState::Held) => {
                    leases.live[at].due = Instant::now() + every;
                    leases.live[at].lost.extended(sent);
                    leases.live[at].lost.failing.store(false, Ordering::Release);
                }
                // A failed renewal (a timeout, a dead connection) is tried
                // again while the lease may still be ours: giving up at the
                // first one turned a blip shorter than the lease into a
                // lease that lapsed under a running `f`.
                Err(_) if !leases.live[at].lost.is_lost() => {
                    // No faster than every 10 ms: a tiny lease against a
                    // dead server would otherwise spin this thread.
                    leases.live[at].due =
                        Instant::now() + (every / 2).max(Duration::from_millis(10));
                    leases.live[at].lost.failing.store(true, Ordering::Release);
                }
                Ok(LeaseState::Lost) | Err(_) => leases.live.swap_remove(at).lost.lose(),
            }
        }
    }
}
