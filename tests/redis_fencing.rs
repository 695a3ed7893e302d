//! Fencing tokens, lost-lease signals and who led, against a real
//! redis-server; the paused-leader case with real processes (this binary
//! re-executed as workers) and a SQLite store shared by them.
#![cfg(feature = "redis")]

#[path = "redis_support/groups.rs"]
mod groups;
mod redis_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use groups::{config, replica};
use redis_support::{RedisServer, Worker, command, free_port, report, role, wait_until};
use sync_singleflight::redis::{FallbackReason, Lease, RedisConfig, Source};

const LONG: Duration = Duration::from_secs(10);

fn named(namespace: &str, node: &str) -> RedisConfig {
    let mut cfg = config(namespace);
    cfg.node_id = node.to_string();
    cfg
}

#[test]
fn tokens_increase_per_key_across_replicas_and_every_caller_learns_who_led() {
    let server = RedisServer::start();
    let a = replica::<u64>(&server.url(), named("fence", "node-a"));
    let b = replica::<u64>(&server.url(), named("fence", "node-b"));
    let mut last = 0;
    for round in 0..6 {
        let (leader, name) = if round % 2 == 0 {
            (&a, "node-a")
        } else {
            (&b, "node-b")
        };
        let outcome = leader.work_fenced_with_outcome("k", |lease| {
            assert!(!lease.is_lost());
            lease.fencing_token().expect("a leader holds a token")
        });
        assert_eq!(outcome.source, Source::Leader);
        assert_eq!(&*outcome.leader, name);
        assert!(
            outcome.value > last,
            "round {round}: {} after {last}",
            outcome.value
        );
        last = outcome.value;
    }
    // Another key has its own counter, also seeded from the clock.
    let other = a.try_work_fenced("other", |lease| lease.fencing_token().unwrap());
    assert!(other.unwrap().value > 0);

    // A remote follower is told which node ran `f`.
    let inside = Barrier::new(2);
    thread::scope(|s| {
        let led = s.spawn(|| {
            a.work_fenced_with_outcome("slow", |lease| {
                inside.wait();
                thread::sleep(Duration::from_millis(300));
                lease.fencing_token().unwrap()
            })
        });
        inside.wait();
        let followed = b.work_fenced_with_outcome("slow", |_| unreachable!("a leads"));
        let led = led.join().unwrap();
        assert_eq!(followed.source, Source::Follower);
        assert_eq!(&*followed.leader, "node-a");
        assert_eq!(followed.value, led.value);
    });

    // A fallback runs here, without a token; the default node id is host:pid.
    let down = replica::<u64>(
        &format!("redis://127.0.0.1:{}", free_port()),
        config("fence"),
    );
    assert!(
        down.config()
            .node_id
            .ends_with(&format!(":{}", std::process::id()))
    );
    let outcome = down.work_fenced_with_outcome("k", |lease| {
        assert_eq!(lease.fencing_token(), None);
        assert!(!lease.is_lost());
        7
    });
    assert_eq!(
        outcome.source,
        Source::Fallback(FallbackReason::Unavailable)
    );
    assert_eq!(*outcome.leader, *down.config().node_id);
    assert!(down.try_work_fenced("k", |_| 8).is_err());
}

#[test]
fn a_stolen_lease_is_seen_as_lost_inside_f() {
    let server = RedisServer::start();
    let mut cfg = config("stolen");
    cfg.lease = Duration::from_millis(300);
    let group = replica::<bool>(&server.url(), cfg);
    let mut con = server.connection();
    let saw_lost = group.work_fenced("k", |lease| {
        assert!(!lease.is_lost());
        let _: () = redis::cmd("SET")
            .arg("sf:stolen:v1:{k:k}:lease")
            .arg("intruder")
            .query(&mut con)
            .unwrap();
        // The next renewal (every 100 ms) finds the intruder.
        wait_until("the lease is seen lost", LONG, || lease.is_lost());
        true
    });
    assert!(saw_lost);
    assert_eq!(group.stats().lost_leases, 1);
}

/// The shared store of the paused-leader test: sessions per login, each
/// with the fencing token of the flight that wrote it.
struct Store(rusqlite::Connection);

impl Store {
    fn open(path: &Path) -> Store {
        let con = rusqlite::Connection::open(path).unwrap();
        con.busy_timeout(LONG).unwrap();
        con.execute_batch(
            "CREATE TABLE IF NOT EXISTS sessions (login TEXT, id TEXT, fence INTEGER)",
        )
        .unwrap();
        Store(con)
    }

    /// Creates a session for `login`. With a fencing token, a
    /// write older than the stored session's is refused and the stored
    /// session returned instead; a newer one replaces it.
    fn create(&mut self, login: &str, token: Option<u64>) -> String {
        let id = format!("s-{}-{:?}", std::process::id(), thread::current().id());
        let tx = self
            .0
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let id = match token {
            None => {
                tx.execute("INSERT INTO sessions VALUES (?1, ?2, 0)", (login, &id))
                    .unwrap();
                id
            }
            Some(token) => {
                let newest: Option<(String, i64)> = tx
                    .query_row(
                        "SELECT id, fence FROM sessions WHERE login = ?1 ORDER BY fence DESC",
                        [login],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .ok();
                match newest {
                    Some((stored, fence)) if fence as u64 > token => stored,
                    _ => {
                        tx.execute("DELETE FROM sessions WHERE login = ?1", [login])
                            .unwrap();
                        tx.execute(
                            "INSERT INTO sessions VALUES (?1, ?2, ?3)",
                            (login, &id, token as i64),
                        )
                        .unwrap();
                        id
                    }
                }
            }
        };
        tx.commit().unwrap();
        id
    }

    fn sessions(&self, login: &str) -> u64 {
        self.0
            .query_row(
                "SELECT count(*) FROM sessions WHERE login = ?1",
                [login],
                |row| row.get(0),
            )
            .unwrap()
    }
}

/// Worker: `run <login> <threads> <pause>` creates a session for `login`
/// from `threads` threads at once; with `pause` = 1 the leader's `f` says
/// `inside` and waits for `resume` before writing.
fn worker() {
    let url = std::env::var("SF_TEST_URL").unwrap();
    let store = std::sync::Mutex::new(Store::open(Path::new(
        &std::env::var("SF_TEST_STORE").unwrap(),
    )));
    let fenced = std::env::var("SF_TEST_FENCED").unwrap() == "1";
    let mut cfg = config("paused");
    cfg.lease = Duration::from_millis(300);
    let group = replica::<String>(&url, cfg);
    group.work(&format!("warm-{}", std::process::id()), String::new);
    report("ready");
    while let Some(line) = command() {
        let parts: Vec<&str> = line.split(' ').collect();
        let ["run", login, threads, pause] = parts.as_slice() else {
            break;
        };
        let threads: usize = threads.parse().unwrap();
        let lost = AtomicBool::new(false);
        let start = Barrier::new(threads);
        let joined_before = group.stats().local.followers_joined;
        let create = |lease: &Lease| {
            // Every other caller of this process joins the flight before
            // `f` writes: on a loaded machine a thread still on its way
            // would otherwise arrive after the flight ended and lead a
            // second one, writing a second session (in B as well as in a
            // paused A, where it would also report "inside" again).
            wait_until("the other callers joined", LONG, || {
                group.stats().local.followers_joined >= joined_before + threads as u64 - 1
            });
            if *pause == "1" {
                report("inside");
                assert_eq!(command().as_deref(), Some("resume"));
                lost.store(lease.is_lost(), Ordering::SeqCst);
            }
            // Without fencing the store is handed no token: the usual
            // "create a session" write.
            let token = lease.fencing_token().filter(|_| fenced);
            store.lock().unwrap().create(login, token)
        };
        let seen: BTreeSet<String> = thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        group.work_fenced(*login, &create)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let seen: Vec<String> = seen.into_iter().collect();
        report(&format!(
            "done lost={} seen={}",
            lost.load(Ordering::SeqCst),
            seen.join(",")
        ));
    }
}

/// The paused leader: worker A leads and is SIGSTOPped inside `f` until its
/// lease has expired in Redis; worker B then leads the same login and
/// writes; A is resumed and writes too. Returns the sessions stored for the
/// login, what A's and B's callers saw, and whether A's `f` saw its lease
/// lost.
fn paused_leader(test: &str, fenced: bool) -> (u64, String, String, String) {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("sessions.db");
    drop(Store::open(&store));
    let env = [
        ("SF_TEST_URL", server.url()),
        ("SF_TEST_STORE", store.display().to_string()),
        ("SF_TEST_FENCED", if fenced { "1" } else { "0" }.to_string()),
    ];
    let mut a = Worker::spawn(test, "worker", &env);
    let mut b = Worker::spawn(test, "worker", &env);
    for w in [&a, &b] {
        assert_eq!(w.recv(LONG), "ready");
    }
    a.send("run login-1 16 1");
    assert_eq!(a.recv(LONG), "inside");
    a.signal("-STOP");
    let mut con = server.connection();
    wait_until("the paused leader's lease expires", LONG, || {
        redis::cmd("EXISTS")
            .arg("sf:paused:v1:{k:login-1}:lease")
            .query::<u64>(&mut con)
            .unwrap()
            == 0
    });
    b.send("run login-1 16 0");
    let from_b = b.recv(LONG);
    a.send("resume");
    a.signal("-CONT");
    let from_a = a.recv(LONG);
    let field = |report: &str, name: &str| {
        report
            .split(' ')
            .find_map(|kv| kv.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {report:?}"))
            .to_string()
    };
    let sessions = Store::open(&store).sessions("login-1");
    (
        sessions,
        field(&from_a, "seen="),
        field(&from_b, "seen="),
        field(&from_a, "lost="),
    )
}

#[test]
fn without_a_token_a_paused_leader_writes_a_second_session() {
    if role().is_some() {
        return worker();
    }
    let (sessions, a, b, lost) = paused_leader(
        "without_a_token_a_paused_leader_writes_a_second_session",
        false,
    );
    assert_eq!(sessions, 2, "the duplicate run wrote its own session");
    assert_ne!(a, b);
    assert_eq!(
        lost, "true",
        "the resumed leader knew its lease had run out"
    );
}

#[test]
fn with_the_token_the_store_refuses_the_paused_leader() {
    if role().is_some() {
        return worker();
    }
    let (sessions, a, b, lost) =
        paused_leader("with_the_token_the_store_refuses_the_paused_leader", true);
    assert_eq!(sessions, 1, "one session survives");
    // Every caller of both processes sees that one session.
    assert!(!a.contains(','), "{a}");
    assert_eq!(a, b);
    assert_eq!(lost, "true");
}

/// A renewal that fails once (the server hung for less than the lease)
/// does not end the renewals: the next one keeps the lease, so a blip
/// shorter than the lease does not hand the key to another process while
/// `f` still runs.
#[test]
fn one_failed_renewal_does_not_stop_the_renewals() {
    let server = RedisServer::start();
    let mut cfg = config("blip");
    cfg.lease = Duration::from_millis(1000);
    cfg.renew_every = Some(Duration::from_millis(250));
    cfg.io_timeout = Duration::from_millis(200);
    cfg.breaker_failures = 100;
    let group = replica::<bool>(&server.url(), cfg);
    let mut con = server.connection();
    let held_after = group.work_fenced("k", |lease| {
        thread::sleep(Duration::from_millis(50));
        // Hung across the first renewal (due at 250 ms, given up at 450).
        server.pause(true);
        thread::sleep(Duration::from_millis(550));
        server.pause(false);
        // Well past the lease since the last renewal Redis ran (at ~600 ms).
        thread::sleep(Duration::from_millis(1900));
        let holder: Option<String> = redis::cmd("GET")
            .arg("sf:blip:v1:{k:k}:lease")
            .query(&mut con)
            .unwrap();
        holder.is_some() && !lease.is_lost()
    });
    assert!(held_after, "the lease lapsed after one failed renewal");
}
