//! Network faults between the groups and a real redis-server, injected by
//! the TCP fault proxy in `redis_support/proxy.rs`: added latency, a
//! blackhole that heals, and connection resets during a publish. Two
//! groups in this process stand for two replicas.
#![cfg(feature = "redis")]

#[path = "redis_support/groups.rs"]
mod groups;
#[path = "redis_support/history.rs"]
mod history;
#[path = "redis_support/proxy.rs"]
mod proxy;
mod redis_support;

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use groups::{LONG, config, replicas, with_lease};
use history::{Event, Log, check};
use proxy::FaultProxy;
use redis_support::{RedisServer, wait_until};
use sync_singleflight::redis::{RedisGroup, Source};

/// Both replicas: `threads` threads each call `key` at once; every call
/// and run goes to `log`. Returns each call's latency.
fn burst(
    groups: [&RedisGroup<String, u64>; 2],
    key: &str,
    threads: usize,
    f_time: Duration,
    log: &Log,
    burst_id: u64,
) -> Vec<Duration> {
    let start = Barrier::new(2 * threads);
    thread::scope(|s| {
        let handles: Vec<_> = (0..2 * threads)
            .map(|i| {
                let (start, group) = (&start, groups[i % 2]);
                s.spawn(move || {
                    start.wait();
                    let t = Instant::now();
                    log.call(i as u64, || {
                        group.work(key, || log.run(burst_id, || thread::sleep(f_time)))
                    });
                    t.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn fifty_ms_latency_each_way_still_makes_one_run_per_burst() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let (a, b) = replicas::<u64>(&proxy.url(), config("latency"));
    a.work("warm", || 0);
    b.work("warm", || 0);
    let latency = Duration::from_millis(50);
    proxy.set_latency(latency);
    let rtt = 2 * latency;
    let f = Duration::from_millis(100);
    let log = Log::default();
    let mut worst = Duration::ZERO;
    for round in 0..3 {
        let took = burst([&a, &b], &format!("k{round}"), 8, f, &log, round);
        worst = worst.max(took.into_iter().max().unwrap());
    }
    let summary = check(&log.drain()).unwrap();
    println!(
        "50 ms each way: {summary:?}, slowest call {worst:?}; a {:?}",
        a.stats()
    );
    assert_eq!(summary.calls, 3 * 16);
    assert!(
        summary.runs_per_burst.values().all(|&runs| runs == 1),
        "{summary:?}"
    );
    // The documented bound: f plus 4 round trips (acquire, publish, the
    // follower's acquire and its read's delivery overlap partly).
    assert!(worst < f + 4 * rtt, "{worst:?}");
    let fallbacks: u64 = a.stats().fallbacks.iter().chain(&b.stats().fallbacks).sum();
    assert_eq!(fallbacks, 0);
}

#[test]
fn a_two_second_blackhole_mid_flight_leaves_nobody_waiting_past_the_bound() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let cfg = config("blackhole"); // lease 1 s, connect 200 ms, I/O 300 ms
    let (a, b) = replicas::<u64>(&proxy.url(), cfg.clone());
    let strict = groups::replica::<u64>(&proxy.url(), cfg.clone());
    for g in [&a, &b, &strict] {
        g.work("warm", || 0);
    }
    // The documented bound behind an unresponsive server: the rest of the
    // lease plus the read slack, then one more exchange (connect + I/O).
    let bound = cfg.lease + Duration::from_millis(50) + cfg.connect_timeout + 2 * cfg.io_timeout;
    let (leading_tx, leading) = mpsc::channel();
    let runs = AtomicUsize::new(0);
    let hole = Duration::from_secs(2);
    let (served, errors, slowest) = thread::scope(|s| {
        let lead = s.spawn(|| {
            a.work("k", || {
                runs.fetch_add(1, Ordering::SeqCst);
                leading_tx.send(()).unwrap();
                thread::sleep(Duration::from_millis(200));
                1
            })
        });
        leading.recv_timeout(LONG).unwrap();
        let followers: Vec<_> = (0..4)
            .map(|i| {
                let (b, strict) = (&b, &strict);
                s.spawn(move || {
                    let t = Instant::now();
                    let got = if i % 2 == 0 {
                        Ok(b.work("k", || 2))
                    } else {
                        strict.try_work("k", || 3).map(|o| o.value)
                    };
                    (got, t.elapsed())
                })
            })
            .collect();
        wait_until("both replicas follow", LONG, || {
            b.stats().remote_waiting + strict.stats().remote_waiting == 2
        });
        proxy.blackhole(true);
        let started = Instant::now();
        assert_eq!(
            lead.join().unwrap(),
            1,
            "the leader's callers get its value"
        );
        let results: Vec<_> = followers.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            started.elapsed() < hole,
            "everyone returned inside the blackhole"
        );
        thread::sleep(hole.saturating_sub(started.elapsed()));
        proxy.blackhole(false);
        let served = results.iter().filter(|(r, _)| r.is_ok()).count();
        let errors: Vec<String> = results
            .iter()
            .filter_map(|(r, _)| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        let slowest = results.iter().map(|(_, t)| *t).max().unwrap();
        (served, errors, slowest)
    });
    println!(
        "2 s blackhole: {served} served, errors {errors:?}, slowest {slowest:?} (bound {bound:?})"
    );
    assert_eq!(served + errors.len(), 4, "everyone got a value or an error");
    assert!(served >= 2, "the failing-open callers got a value");
    assert!(slowest < bound, "{slowest:?} over {bound:?}");
    wait_until("dedup resumes after the heal", LONG, || {
        let (mut sa, mut sb) = (Source::Leader, Source::Leader);
        let (tx, rx) = mpsc::channel();
        thread::scope(|s| {
            let lead = s.spawn(|| {
                a.work_with_outcome("after", || {
                    tx.send(()).unwrap();
                    thread::sleep(Duration::from_millis(100));
                    1
                })
                .source
            });
            if rx.recv_timeout(LONG).is_ok() {
                sb = b.work_with_outcome("after", || 2).source;
            }
            sa = lead.join().unwrap();
        });
        (sa, sb) == (Source::Leader, Source::Follower)
    });
}

#[test]
fn a_reset_during_the_publish_still_makes_one_run_and_serves_everyone() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port());
    let cfg = with_lease(config("reset"), Duration::from_secs(2));
    let (a, b) = replicas::<u64>(&proxy.url(), cfg);
    a.work("warm", || 0);
    b.work("warm", || 0);
    let log = Log::default();
    // The publish request lost on its way, then its reply lost after the
    // server ran it: both are retried on a fresh connection.
    for (round, to_server) in [(0, true), (1, false)] {
        let key = format!("k{round}");
        let blocked = server.blocked_clients();
        let (leading_tx, leading) = mpsc::channel();
        let started = Instant::now();
        thread::scope(|s| {
            let lead = s.spawn(|| {
                log.call(0, || {
                    a.work(&key, || {
                        log.run(round, || {
                            leading_tx.send(()).unwrap();
                            // Arm the reset once b's reader is blocked: the
                            // next chunk is then the publish (or its reply).
                            wait_until("b's reader blocks", LONG, || {
                                server.blocked_clients() > blocked
                            });
                            proxy.reset_on_next(to_server);
                        })
                    })
                })
            });
            leading.recv_timeout(LONG).unwrap();
            let followers: Vec<_> = (0..4)
                .map(|i| {
                    let (b, log, key) = (&b, &log, &key);
                    s.spawn(move || log.call(i + 1, || b.work(key, || log.run(round, || ()))))
                })
                .collect();
            lead.join().unwrap();
            for h in followers {
                h.join().unwrap();
            }
        });
        println!(
            "reset {} during the publish: all served in {:?}",
            if to_server {
                "before the server"
            } else {
                "after the server"
            },
            started.elapsed()
        );
    }
    let events: Vec<Event> = log.drain();
    let summary = check(&events).unwrap();
    println!("{summary:?}; a {:?}; b {:?}", a.stats(), b.stats());
    assert_eq!(summary.calls, 10);
    assert!(
        summary.runs_per_burst.values().all(|&runs| runs == 1),
        "{summary:?}"
    );
    assert_eq!(a.stats().publish_failures, 0);
    // The request-side reset always hits the publish; the reply-side one
    // can hit the follower's read reply first, and the publish reply may
    // then still get out before the connections close.
    assert!(a.stats().redials >= 1, "{:?}", a.stats());
}
