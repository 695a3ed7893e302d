//! Helpers shared by the integration tests: every test that could hang runs
//! under a deadline and fails with a message instead.

#![allow(dead_code)]

use std::hash::Hash;
use std::panic;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use sync_singleflight::Group;

/// How long any single test may take before it is declared hung. Generous:
/// this is an upper bound on a deadlock, not a timing assertion.
pub const HANG: Duration = Duration::from_secs(30);

/// Runs `body` on a helper thread and fails with a clear message if it has
/// not finished within [`HANG`]. A panic in `body` is re-raised here.
pub fn with_deadline<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, finished) = mpsc::channel();
    let worker = thread::Builder::new()
        .name(format!("{name}-body"))
        .spawn(move || {
            let result = panic::catch_unwind(panic::AssertUnwindSafe(body));
            let _ = done.send(());
            result
        })
        .expect("spawn test body");
    match finished.recv_timeout(HANG) {
        Ok(()) => match worker.join().expect("body result is caught") {
            Ok(value) => value,
            Err(payload) => panic::resume_unwind(payload),
        },
        Err(_) => panic!("{name}: hung for more than {HANG:?} (a caller never returned)"),
    }
}

/// Polls `condition` until it holds; fails after [`HANG`] naming `what`.
/// Used to wait for a state (such as "3 followers joined") rather than
/// sleeping and hoping.
pub fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < HANG, "gave up waiting until {what}");
        thread::yield_now();
    }
}

/// Silences the default panic message for panics the test provokes on
/// purpose, while keeping it for everything else.
pub fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !text.contains("expected-panic") && !text.contains("recursive") {
                default(info);
            }
        }));
    });
}

/// The message of a panic payload made by `panic!`, if any.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}

/// Starts a leader for `key` whose function reports that it is running and
/// then blocks until released, returning `value`. Returns once the function
/// is running, with the leader's handle and its release switch.
pub fn blocked_leader<K, V>(
    group: &Arc<Group<K, V>>,
    key: K,
    value: V,
) -> (thread::JoinHandle<V>, mpsc::Sender<()>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    let (entered, leader_entered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let group = group.clone();
    let leader = thread::spawn(move || {
        group.work(&key, move || {
            entered.send(()).unwrap();
            released.recv().unwrap();
            value
        })
    });
    leader_entered.recv().unwrap();
    (leader, release)
}

/// Spawns `call` on its own thread with its own handle to `group`, and
/// returns once the group has counted `joined` followers in all, so the
/// caller knows the new thread is parked on a flight.
pub fn spawn_follower<K, V, T>(
    group: &Arc<Group<K, V>>,
    joined: u64,
    call: impl FnOnce(&Group<K, V>) -> T + Send + 'static,
) -> thread::JoinHandle<T>
where
    K: Send + Sync + 'static,
    V: Send + 'static,
    T: Send + 'static,
{
    let handle = {
        let group = group.clone();
        thread::spawn(move || call(&group))
    };
    wait_until(&format!("{joined} followers joined"), || {
        group.stats().followers_joined == joined
    });
    handle
}

/// Asserts that a group is quiet and consistent: no flight left behind, and
/// every follower ended in exactly one counted way (the `Stats` identity).
pub fn assert_quiet<K, V, S>(group: &Group<K, V, S>) {
    assert_eq!(group.in_flight(), 0, "a flight was left behind");
    let stats = group.stats();
    assert_eq!(
        stats.followers_unaccounted(),
        0,
        "followers not accounted for: {stats:?}"
    );
}

/// A key whose `Eq` counts its calls (in a counter shared by all clones).
///
/// The group runs a key's `Eq` only when a caller finds a live flight with
/// the same hash, under the shard lock it joins with: so the count tells a
/// test exactly how many callers have (re)joined a running flight, which no
/// counter in `Stats` shows for followers re-entering after a rerun.
#[derive(Clone, Debug)]
pub struct EqProbe {
    pub id: u64,
    pub eqs: Arc<std::sync::atomic::AtomicUsize>,
}

impl EqProbe {
    pub fn new(id: u64) -> Self {
        EqProbe {
            id,
            eqs: Arc::default(),
        }
    }

    /// How many times `Eq` has run on this key or its clones.
    pub fn eqs(&self) -> usize {
        self.eqs.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Hash for EqProbe {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl PartialEq for EqProbe {
    fn eq(&self, other: &Self) -> bool {
        self.eqs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.id == other.id
    }
}

impl Eq for EqProbe {}

/// A turnstile for functions that must block until the test lets them
/// through, one `open` per `pass`, whichever thread happens to run them.
#[derive(Debug)]
pub struct Gate {
    open: std::sync::Mutex<mpsc::Sender<()>>,
    pass: std::sync::Mutex<mpsc::Receiver<()>>,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Default for Gate {
    fn default() -> Self {
        let (open, pass) = mpsc::channel();
        Gate {
            open: std::sync::Mutex::new(open),
            pass: std::sync::Mutex::new(pass),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

impl Gate {
    /// Blocks until the test opens the gate once for this caller.
    pub fn pass(&self) {
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.pass.lock().unwrap().recv().unwrap();
    }

    /// How many callers have reached the gate so far (passed or not).
    pub fn reached(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets one caller through (now or when it arrives).
    pub fn open(&self) {
        self.open.lock().unwrap().send(()).unwrap();
    }
}

/// Spawns followers 1..=`count` of key `key`, each with a function of its
/// own that counts its runs in the returned counter and returns `value`;
/// returns once all of them have joined.
pub fn counting_followers(
    group: &Arc<Group<u64, u64>>,
    key: u64,
    count: u64,
    value: u64,
) -> (Arc<AtomicUsize>, Vec<thread::JoinHandle<u64>>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let followers = (1..=count)
        .map(|joined| {
            let runs = Arc::clone(&runs);
            spawn_follower(group, joined, move |g| {
                g.work(&key, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    value
                })
            })
        })
        .collect();
    (runs, followers)
}
