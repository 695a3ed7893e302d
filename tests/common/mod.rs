//! Helpers shared by the integration tests: every test that could hang runs
//! under a deadline and fails with a message instead.

#![allow(dead_code)]

use std::hash::Hash;
use std::panic;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
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
    let (release, released) = mpsc::channel::<()>();
    let leader = spawn_leader(group, move |group, running| {
        group.work(&key, move || {
            running();
            released.recv().unwrap();
            value
        })
    });
    (leader, release)
}

/// Spawns `call` on its own thread with its own clone of `group` (an
/// `Arc` of a group, or a `&'static` one) and a `running` signal, and
/// returns once `call` has signalled: the leader's function calls
/// `running()` as its first step, so on return the flight is running.
pub fn spawn_leader<G, T>(
    group: &G,
    call: impl FnOnce(&G, &dyn Fn()) -> T + Send + 'static,
) -> thread::JoinHandle<T>
where
    G: Clone + Send + 'static,
    T: Send + 'static,
{
    let (entered, leader_entered) = mpsc::channel();
    let group = group.clone();
    let leader = thread::spawn(move || call(&group, &|| entered.send(()).unwrap()));
    leader_entered.recv().unwrap();
    leader
}

/// Spawns `call` on its own thread with its own handle to `group` and to
/// `gate`, and returns once one more caller has reached the gate: `call`'s
/// function passes the gate first, so on return it is running and held
/// there until the test opens the gate.
pub fn gated<K, V, S, T>(
    group: &Arc<Group<K, V, S>>,
    gate: &Arc<Gate>,
    call: impl FnOnce(&Group<K, V, S>, &Gate) -> T + Send + 'static,
) -> thread::JoinHandle<T>
where
    Group<K, V, S>: Send + Sync + 'static,
    T: Send + 'static,
{
    let reached = gate.reached();
    let handle = {
        let (group, gate) = (Arc::clone(group), Arc::clone(gate));
        thread::spawn(move || call(&group, &gate))
    };
    wait_until("the gated function is running", || {
        gate.reached() == reached + 1
    });
    handle
}

/// Waits (inside a leader's function) until `group` has counted
/// `followers` followers in all.
pub fn wait_for_followers<K, V, S>(group: &Group<K, V, S>, followers: u64) {
    wait_until(&format!("{followers} followers joined"), || {
        group.stats().followers_joined == followers
    });
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
    counting_followers_with(group, count, move |g, runs| {
        g.work(&key, || {
            runs.fetch_add(1, Ordering::SeqCst);
            value
        })
    })
}

/// Spawns followers 1..=`count`, each running its own copy of `call` with
/// its own handle to `group` and a run counter they all share (for their
/// functions to count their runs in); returns the counter and the
/// followers once all of them have joined.
pub fn counting_followers_with<K, V, T>(
    group: &Arc<Group<K, V>>,
    count: u64,
    call: impl FnOnce(&Group<K, V>, &AtomicUsize) -> T + Clone + Send + 'static,
) -> (Arc<AtomicUsize>, Vec<thread::JoinHandle<T>>)
where
    K: Send + Sync + 'static,
    V: Send + 'static,
    T: Send + 'static,
{
    let runs = Arc::new(AtomicUsize::new(0));
    let followers = (1..=count)
        .map(|joined| {
            let (runs, call) = (Arc::clone(&runs), call.clone());
            spawn_follower(group, joined, move |g| call(g, &runs))
        })
        .collect();
    (runs, followers)
}

/// A closure capture whose `Drop` panics (when not already unwinding).
pub struct BadCapture;

impl Drop for BadCapture {
    fn drop(&mut self) {
        if !thread::panicking() {
            panic!("expected-panic in F::drop");
        }
    }
}

/// A countdown shared by a value and its clones, for a `V::clone` that
/// panics: each clone takes one, and the clone that takes the last panics
/// with "expected-panic in V::clone".
#[derive(Debug)]
pub struct ClonesLeft(Arc<AtomicIsize>);

impl ClonesLeft {
    /// Room for `clones - 1` clones: the clone numbered `clones` (from 1)
    /// panics.
    pub fn new(clones: isize) -> Self {
        ClonesLeft(Arc::new(AtomicIsize::new(clones)))
    }

    /// Takes one for a clone, handing the clone its share of the countdown;
    /// panics if it was the last.
    pub fn take(&self) -> Self {
        let left = self.0.fetch_sub(1, Ordering::SeqCst) - 1;
        assert!(left != 0, "expected-panic in V::clone");
        ClonesLeft(Arc::clone(&self.0))
    }
}

/// Asserts counters of one `Stats` snapshot of a group, by name:
/// `assert_stats!(group, { retries: 1, followers_served: 3 })`. A failure
/// names the counter and shows the whole snapshot.
#[allow(unused_macros)]
macro_rules! assert_stats {
    ($group:expr, { $($counter:ident: $expected:expr),+ $(,)? }) => {{
        let stats = $group.stats();
        $(
            assert_eq!(
                stats.$counter,
                $expected,
                concat!(stringify!($counter), ": {:?}"),
                stats
            );
        )+
    }};
}
#[allow(unused_imports)]
pub(crate) use assert_stats;
