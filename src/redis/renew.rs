//! Lease renewal: one thread per group renews every running leader's lease
//! (compare-and-PEXPIRE every `renew_interval`), so leading a flight costs
//! a lock and a push instead of a thread spawn. The thread exits after a
//! second with nothing to renew and is started again on demand.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::group::{Shared, millis};
use super::scripts::{CallError, LeaseState};

/// How long the renewal thread lingers with nothing to renew (at least).
const IDLE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Renewer {
    state: Mutex<Leases>,
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
    lost: Arc<AtomicBool>,
}

impl Renewer {
    fn lock(&self) -> MutexGuard<'_, Leases> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running leader's registration; dropping it (panic included) stops the
/// renewals.
pub(super) struct Renewal<'a> {
    renewer: &'a Renewer,
    id: u64,
    lost: Arc<AtomicBool>,
}

impl Renewal<'_> {
    /// Stops renewing and tells whether the lease was lost meanwhile (a
    /// "not ours" reply or a failed renewal).
    pub(super) fn stop(self) -> bool {
        self.lost.load(Ordering::Acquire)
    }
}

impl Drop for Renewal<'_> {
    fn drop(&mut self) {
        self.renewer.lock().live.retain(|l| l.id != self.id);
    }
}

/// Registers a lease for renewal, starting the thread if it is not running.
pub(super) fn start<'a>(shared: &'a Arc<Shared>, lease_key: &str, token: &str) -> Renewal<'a> {
    let renewer = &shared.renewer;
    let lost = Arc::new(AtomicBool::new(false));
    let mut leases = renewer.lock();
    let id = leases.next_id;
    leases.next_id += 1;
    leases.live.push(Live {
        id,
        lease_key: lease_key.to_owned(),
        token: token.to_owned(),
        due: Instant::now() + shared.config.renew_interval(),
        lost: Arc::clone(&lost),
    });
    // No wake-up for a running thread: it never sleeps longer than one
    // renewal interval, so it is up before this lease is due. That keeps a
    // context switch off every flight's path.
    if !leases.thread_running {
        let weak = Arc::downgrade(shared);
        let spawned = thread::Builder::new()
            .name("sf-redis-renew".into())
            .spawn(move || run(weak));
        match spawned {
            Ok(_) => leases.thread_running = true,
            // Without renewals the lease may expire under a long `f`: count it.
            Err(_) => lost.store(true, Ordering::Release),
        }
    }
    Renewal { renewer, id, lost }
}

fn run(weak: Weak<Shared>) {
    let mut idle_since: Option<Instant> = None;
    while let Some(shared) = weak.upgrade() {
        let every = shared.config.renew_interval();
        let renewer = &shared.renewer;
        let mut leases = renewer.lock();
        let now = Instant::now();
        let due: Vec<(u64, String, String)> = leases
            .live
            .iter()
            .filter(|l| l.due <= now)
            .map(|l| (l.id, l.lease_key.clone(), l.token.clone()))
            .collect();
        if due.is_empty() {
            if !leases.live.is_empty() {
                idle_since = None;
            } else if now.duration_since(*idle_since.get_or_insert(now)) >= IDLE {
                leases.thread_running = false;
                return;
            }
            let next = leases.live.iter().map(|l| l.due).min();
            let wait = next.map_or(every, |d| d.saturating_duration_since(now).min(every));
            drop(leases);
            // Not holding the group while asleep: dropping it ends the thread.
            drop(shared);
            thread::sleep(wait);
            continue;
        }
        drop(leases);
        let lease_ms = millis(shared.config.lease);
        for (id, lease_key, token) in due {
            let renewed = shared
                .pool
                .get()
                .map_err(CallError::Redis)
                .and_then(|mut con| {
                    con.call(|c| shared.scripts.renew(c, &lease_key, &token, lease_ms))
                });
            let mut leases = renewer.lock();
            let Some(at) = leases.live.iter().position(|l| l.id == id) else {
                continue; // the flight ended meanwhile
            };
            if matches!(renewed, Ok(LeaseState::Held)) {
                leases.live[at].due = Instant::now() + every;
            } else {
                leases
                    .live
                    .swap_remove(at)
                    .lost
                    .store(true, Ordering::Release);
            }
        }
    }
}
