//! The incidents a Redis fleet has every week, each against a real
//! redis-server (restarted, reaping idle clients, killing clients, hung,
//! holding foreign data), with the figure users need. Two groups in this
//! process stand for two replicas (each has its own connections and local
//! group); `redis_processes.rs` has the multi-process rows.
#![cfg(feature = "redis")]

#[path = "redis_support/groups.rs"]
mod groups;
mod redis_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use groups::{LONG, config, replica, replicas, with_lease};
use redis_support::{RedisServer, client_commands, delta, wait_until};
use sync_singleflight::redis::{FallbackReason, RedisGroup, Source};

/// What [`one_flight`] saw.
#[derive(Debug)]
struct Flight {
    leader: Source,
    follower: Source,
    runs: usize,
    /// How long the follower still waited after the leader's `f` returned.
    follower_after_f: Duration,
}

/// A leader on `a` and a follower on `b` (b starts once a's `f` runs);
/// `during_f` runs while a's `f` sleeps `f_time`.
fn one_flight(
    a: &RedisGroup<String, u32>,
    b: &RedisGroup<String, u32>,
    key: &str,
    f_time: Duration,
    during_f: impl FnOnce(),
) -> Flight {
    let runs = AtomicUsize::new(0);
    let (started, leading) = mpsc::channel();
    let (ended_tx, ended_rx) = mpsc::channel();
    thread::scope(|s| {
        let lead = s.spawn(|| {
            a.work_with_outcome(key, || {
                runs.fetch_add(1, Ordering::SeqCst);
                started.send(()).unwrap();
                thread::sleep(f_time);
                ended_tx.send(Instant::now()).unwrap();
                1
            })
        });
        leading.recv_timeout(LONG).expect("a leads");
        let follow = s.spawn(|| {
            let outcome = b.work_with_outcome(key, || {
                runs.fetch_add(1, Ordering::SeqCst);
                2
            });
            (outcome, Instant::now())
        });
        during_f();
        let led = lead.join().unwrap();
        let (followed, done) = follow.join().unwrap();
        let ended = ended_rx.recv_timeout(LONG).unwrap();
        let want = if followed.source == Source::Follower {
            1
        } else {
            2
        };
        assert_eq!(followed.value, want, "{:?}", followed.source);
        Flight {
            leader: led.source,
            follower: followed.source,
            runs: runs.load(Ordering::SeqCst),
            follower_after_f: done.saturating_duration_since(ended),
        }
    })
}

fn assert_deduped(flight: &Flight) {
    assert_eq!(
        (flight.leader, flight.follower, flight.runs),
        (Source::Leader, Source::Follower, 1),
        "{flight:?}"
    );
}

fn fallbacks(group: &RedisGroup<String, u32>) -> u64 {
    group.stats().fallbacks.iter().sum()
}

#[test]
fn a_restart_while_idle_costs_no_dedup_once_the_server_accepts() {
    let server = RedisServer::start();
    let (a, b) = replicas::<u32>(&server.url(), config("restart"));
    let f = Duration::from_millis(100);
    assert_deduped(&one_flight(&a, &b, "warm", f, || ()));
    server.restart(); // returns as soon as it answers PING
    let back = Instant::now();
    let flight = one_flight(&a, &b, "after", f, || ());
    let took = back.elapsed().saturating_sub(f + flight.follower_after_f);
    println!("after a restart: {flight:?}; dedup back {took:?} after the server accepted");
    assert_deduped(&flight);
    assert!(took < Duration::from_millis(250), "{took:?}");
    for g in [&a, &b] {
        let stats = g.stats();
        assert_eq!((fallbacks(g), stats.breaker_opens), (0, 0), "{stats:?}");
        assert!(
            stats.redials >= 1,
            "a dead pooled connection was redialled: {stats:?}"
        );
    }
}

#[test]
fn idle_connections_reaped_by_the_server_cause_no_fallback() {
    let server = RedisServer::start_with(&["--timeout", "1"]);
    let (a, b) = replicas::<u32>(&server.url(), config("reaped"));
    let f = Duration::from_millis(50);
    for round in 0..3 {
        assert_deduped(&one_flight(&a, &b, &format!("k{round}"), f, || ()));
        // The server closes clients idle for 1 s: wait until it has closed
        // every one of ours (only the asking connection is left).
        wait_until("the server reaps our idle clients", LONG, || {
            server.connected_clients() == 1
        });
    }
    let flight = one_flight(&a, &b, "last", f, || ());
    println!("after 3 reapings: {flight:?}; a {:?}", a.stats());
    assert_deduped(&flight);
    for g in [&a, &b] {
        let stats = g.stats();
        assert_eq!((fallbacks(g), stats.breaker_opens), (0, 0), "{stats:?}");
        assert!(stats.redials >= 3, "{stats:?}");
    }
}

#[test]
fn a_killed_leader_connection_is_redialled_and_the_publish_retried() {
    let server = RedisServer::start();
    let cfg = with_lease(config("killed"), Duration::from_secs(2));
    let (a, b) = replicas::<u32>(&server.url(), cfg);
    let f = Duration::from_millis(300);
    assert_deduped(&one_flight(&a, &b, "warm", f, || ()));
    let flight = one_flight(&a, &b, "victim", f, || {
        wait_until("b follows", LONG, || b.stats().remote_waiting == 1);
        // Every client of both groups: a's pooled connection (idle while
        // f runs), b's blocked reader, b's pooled connection.
        assert!(server.kill_clients() >= 3);
    });
    println!("CLIENT KILL mid-flight: {flight:?}; a {:?}", a.stats());
    assert_deduped(&flight);
    // Served within about f + 50 ms, not after the 2 s lease.
    assert!(
        flight.follower_after_f < Duration::from_millis(100),
        "{flight:?}"
    );
    assert_eq!(
        (a.stats().publish_failures, fallbacks(&a) + fallbacks(&b)),
        (0, 0)
    );
    assert!(a.stats().redials >= 1 && b.stats().redials >= 1);
}

#[test]
fn an_orphaned_lease_after_a_hung_server_resumes_is_released_within_the_io_timeout() {
    let server = RedisServer::start();
    // A 5 s lease: an orphan left in place would block b for 5 s.
    let cfg = with_lease(config("orphan"), Duration::from_secs(5));
    let (a, b) = replicas::<u32>(&server.url(), cfg.clone());
    a.work("warm", || 0);
    b.work("warm-b", || 0);
    let mut probe = server.connection();
    server.pause(true);
    // a's acquire reaches the server but times out on a's side.
    let outcome = a.work_with_outcome("k", || 1);
    assert_eq!(
        outcome.source,
        Source::Fallback(FallbackReason::Unavailable)
    );
    server.pause(false);
    let resumed = Instant::now();
    // Sent after a's late acquire was queued: once it answers, the server
    // has run that acquire (so the orphan exists, or already went).
    let _: String = redis::cmd("PING").query(&mut probe).unwrap();
    let late = b.work_with_outcome("k", || 2);
    let waited = resumed.elapsed();
    wait_until("a released its orphan", LONG, || {
        a.stats().orphans_released == 1
    });
    println!(
        "after SIGCONT: b got {:?} in {waited:?}; a's orphan released by {:?} after SIGCONT",
        late.source,
        resumed.elapsed()
    );
    assert_eq!(late.value, 2);
    assert!(
        matches!(late.source, Source::Leader | Source::Takeover),
        "{late:?}"
    );
    assert!(waited < cfg.io_timeout, "{waited:?}");
    let lease: Option<String> = redis::cmd("GET")
        .arg("sf:orphan:v1:{k:k}:lease")
        .query(&mut probe)
        .unwrap();
    assert_eq!(lease, None);
}

#[test]
fn a_plain_string_without_ttl_at_a_lease_key_is_malformed_at_once() {
    let server = RedisServer::start();
    let group = replica::<u32>(&server.url(), config("foreign"));
    let mut con = server.connection();
    for (value, ttl) in [
        ("locked", None),
        ("0123456789abcdef0123456789abcdef", None),
        ("locked", Some(5000)),
    ] {
        let lease = "sf:foreign:v1:{k:k}:lease";
        let _: () = redis::cmd("SET")
            .arg(lease)
            .arg(value)
            .query(&mut con)
            .unwrap();
        if let Some(ms) = ttl {
            let _: () = redis::cmd("PEXPIRE")
                .arg(lease)
                .arg(ms)
                .query(&mut con)
                .unwrap();
        }
        let t = Instant::now();
        let err = group.try_work("k", || 1).unwrap_err();
        let open = group.work_with_outcome("k", || 2);
        let took = t.elapsed();
        println!("lease {value:?} ttl {ttl:?}: {err} ({took:?} for both calls)");
        assert_eq!(err.reason(), FallbackReason::Malformed);
        assert_eq!(
            (open.value, open.source),
            (2, Source::Fallback(FallbackReason::Malformed))
        );
        // At once: well under the 1 s lease a follower would wait out (and
        // the 20 s max_wait), with room for a loaded CI machine.
        assert!(took < Duration::from_millis(500), "{took:?}");
    }
    assert_eq!(group.stats().breaker_opens, 0);
}

#[test]
fn a_foreign_lease_with_an_abandon_entry_costs_a_handful_of_commands() {
    let server = RedisServer::start();
    let group = replica::<u32>(&server.url(), config("abandon"));
    group.work("warm", || 0);
    let token = "00000000000000000000000000000001";
    let mut con = server.connection();
    let _: () = redis::pipe()
        .cmd("SET")
        .arg("sf:abandon:v1:{k:k}:lease")
        .arg(token)
        .arg("PX")
        .arg(60_000)
        .cmd("XADD")
        .arg(format!("sf:abandon:v1:{{k:k}}:done:{token}"))
        .arg("*")
        .arg("s")
        .arg("abandon")
        .arg("b")
        .arg("")
        .query(&mut con)
        .unwrap();
    let before = server.command_counts();
    let t = Instant::now();
    let outcome = group.work_with_outcome("k", || 1);
    let took = t.elapsed();
    let commands = delta(&before, &server.command_counts());
    let sent = client_commands(&commands);
    println!(
        "foreign lease + abandon: {:?} in {took:?}, {sent} commands {commands:?}",
        outcome.source
    );
    assert_eq!(outcome.source, Source::Fallback(FallbackReason::Malformed));
    assert!(sent <= 3, "{commands:?}");
    // The command count is the bound that matters; the time only shows no
    // wait on the 60 s lease, with room for a loaded CI machine.
    assert!(took < Duration::from_millis(500), "{took:?}");
}

#[test]
fn when_the_cooldown_ends_a_single_caller_probes() {
    let server = RedisServer::start();
    let cfg = config("probe"); // breaker after 3 failures, 500 ms cooldown
    let group = replica::<u32>(&server.url(), cfg.clone());
    group.work("warm", || 0);
    // A hung server, not a dead one: its failures are timeouts, so a failed
    // probe reopens the breaker for twice the whole cooldown (1 s). A refused
    // connection would reopen it for only 200 ms, and one of the 16 threads
    // reaching the breaker later than that on a loaded machine would be a
    // second, legitimate probe.
    server.pause(true);
    for i in 0..3 {
        group.work(&format!("open{i}"), || 0);
    }
    assert_eq!(group.stats().breaker_opens, 1);
    let probe_round = |tag: &str| -> Vec<Source> {
        let n = 16;
        let start = Barrier::new(n);
        let mut sources: Vec<Source> = thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let (start, group) = (&start, &group);
                    s.spawn(move || {
                        start.wait();
                        group.work_with_outcome(&format!("{tag}{i}"), || 0).source
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        sources.sort_by_key(|s| format!("{s:?}"));
        sources
    };
    // Wait out the cooldown without calling (any call would be the probe).
    // The cooldown is a span of time: there is no condition to poll.
    thread::sleep(cfg.breaker_cooldown + Duration::from_millis(50));
    let down = probe_round("down");
    let probes = down
        .iter()
        .filter(|s| **s == Source::Fallback(FallbackReason::Unavailable))
        .count();
    println!("cooldown over, Redis still down: {down:?}");
    assert_eq!(probes, 1, "one probe, the others keep falling back");
    assert_eq!(
        group.stats().breaker_opens,
        2,
        "the failed probe reopened it"
    );
    server.pause(false);
    // The reopened breaker waits twice the cooldown, then one probe closes it.
    wait_until("a probe closes the breaker", LONG, || {
        group.work_with_outcome("up", || 0).source == Source::Leader
    });
    let up = probe_round("up");
    println!("after the successful probe: {up:?}");
    assert!(up.iter().all(|s| *s == Source::Leader), "{up:?}");
}
