//! `RedisGroup` against a real redis-server, one process: two groups in
//! this process stand for two replicas (each has its own local group and
//! connections, so they meet only through Redis).
#![cfg(feature = "redis")]

#[path = "redis_support/groups.rs"]
mod groups;
mod redis_support;

use std::panic::{self, AssertUnwindSafe};
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use groups::{
    LONG, config, herd, lead_and_follow, max_latency, replica, replicas, sources, with_lease,
};
use redis_support::{RedisServer, client_commands, delta, wait_until};
use sync_singleflight::redis::{FallbackReason, RedisConfig, RedisGroup, Source};
use sync_singleflight::{LeaderPanicked, Role};

#[test]
fn local_first_costs_two_commands_per_process_per_flight() {
    let server = RedisServer::start();
    let (a, b) = replicas::<u32>(&server.url(), config("first"));
    // Warm up: scripts loaded, one pooled connection each.
    a.work("warm-a", || 0);
    b.work("warm-b", || 0);

    let before = server.command_counts();
    let alone = herd(&a, "k1", 16, || {
        thread::sleep(Duration::from_millis(100));
        1
    });
    let leader_only = delta(&before, &server.command_counts());
    assert!(
        alone
            .iter()
            .all(|(o, _)| o.value == 1 && o.source == Source::Leader)
    );
    println!("leader, 16 threads: {leader_only:?}");
    assert_eq!(
        client_commands(&leader_only),
        2,
        "acquire + publish: {leader_only:?}"
    );

    let before = server.command_counts();
    let (from_a, from_b) = lead_and_follow(&server, &a, &b, "k2", 16, || 2, || 99);
    let both = delta(&before, &server.command_counts());
    println!("leader + remote follower, 16 threads each: {both:?}");
    assert!(
        from_a
            .iter()
            .all(|(o, _)| o.value == 2 && o.source == Source::Leader)
    );
    assert!(
        from_b
            .iter()
            .all(|(o, _)| o.value == 2 && o.source == Source::Follower)
    );
    assert_eq!(
        from_b
            .iter()
            .filter(|(o, _)| o.role == Role::Leader)
            .count(),
        1
    );
    // Leader 2, follower 2 (acquire + XREAD).
    assert_eq!(client_commands(&both), 4, "{both:?}");
    assert_eq!(both.get("xread"), Some(&1));
}

#[test]
fn slow_healthy_leader_keeps_its_lease() {
    let server = RedisServer::start();
    // Renewals every lease / 3 = 333 ms: only a stall of over 600 ms in
    // the renewal thread or the server could cost the lease, so a loaded
    // CI machine does not turn this into a takeover.
    let cfg = with_lease(config("slow"), Duration::from_secs(1));
    let (a, b) = replicas::<String>(&server.url(), cfg);
    let runs = AtomicUsize::new(0);
    let before = server.command_counts();
    let (from_a, from_b) = lead_and_follow(
        &server,
        &a,
        &b,
        "k",
        4,
        || {
            runs.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_secs(3)); // 3 × lease
            "slow".to_string()
        },
        || {
            runs.fetch_add(1, Ordering::SeqCst);
            "duplicate".to_string()
        },
    );
    let commands = delta(&before, &server.command_counts());
    println!(
        "f = 3 x lease: runs={} commands={commands:?} b waited {:?}",
        runs.load(Ordering::SeqCst),
        max_latency(&from_b)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(sources(&from_a), [Source::Leader]);
    assert_eq!(sources(&from_b), [Source::Follower]);
    assert!(from_b.iter().all(|(o, _)| o.value == "slow"));
    assert_eq!(a.stats().lost_leases, 0);
    assert_eq!(b.stats().takeovers, 0);
    // The follower re-checked the renewed lease at least once.
    assert!(commands["evalsha"] >= 2 + 2 + 2, "{commands:?}");
}

#[test]
fn redis_killed_mid_run_serves_everyone_then_dedup_resumes() {
    let server = RedisServer::start();
    let url = server.url();
    let (a, b) = replicas::<String>(&url, config("outage"));
    a.work("warm-a", String::new);
    b.work("warm-b", String::new);
    let f_time = Duration::from_millis(300);
    let (from_a, from_b) = lead_and_follow(
        &server,
        &a,
        &b,
        "k",
        8,
        || {
            // a holds the lease and b's leader is blocked reading: kill Redis.
            server.kill();
            thread::sleep(f_time);
            "a".to_string()
        },
        || {
            thread::sleep(f_time);
            "b".to_string()
        },
    );
    let (a_max, b_max) = (max_latency(&from_a), max_latency(&from_b));
    println!(
        "redis killed mid-flight: a's callers (leader side) max {a_max:?}, b's callers (fell back) max {b_max:?}"
    );
    assert!(
        from_a
            .iter()
            .all(|(o, _)| o.value == "a" && o.source == Source::Leader)
    );
    assert!(from_b.iter().all(|(o, _)| o.value == "b"));
    assert_eq!(
        sources(&from_b),
        [Source::Fallback(FallbackReason::Unavailable)]
    );
    // The leader's callers are not delayed by a reconnect: publishing on
    // the dead connection fails at once.
    assert!(a_max < f_time + Duration::from_millis(250), "{a_max:?}");
    // b's wait: until the kill, then its own run; bounded by the timeouts.
    assert!(b_max < 2 * f_time + Duration::from_millis(800), "{b_max:?}");
    assert!(a.stats().publish_failures == 1);

    // While Redis is down: refused connects, then the breaker; all fast.
    let mut reasons = Vec::new();
    for i in 0..6 {
        let t = Instant::now();
        let o = a.work_with_outcome(&format!("down-{i}"), || "local".to_string());
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(o.value, "local");
        reasons.push(o.source);
    }
    println!("calls while down: {reasons:?}");
    assert_eq!(
        reasons.last(),
        Some(&Source::Fallback(FallbackReason::BreakerOpen))
    );
    assert!(a.stats().breaker_opens >= 1);
    let err = a.try_work("strict", || "x".to_string()).unwrap_err();
    assert_eq!(err.reason(), FallbackReason::BreakerOpen);

    // Restarted on the same port: remote dedup resumes after the cooldown.
    let restarted = RedisServer::start_on(server.port());
    let back = Instant::now();
    wait_until("a leads through Redis again", LONG, || {
        a.work_with_outcome("probe-a", String::new).source == Source::Leader
    });
    wait_until("b leads through Redis again", LONG, || {
        b.work_with_outcome("probe-b", String::new).source == Source::Leader
    });
    println!("remote dedup back {:?} after the restart", back.elapsed());
    let (from_a, from_b) = lead_and_follow(
        &restarted,
        &a,
        &b,
        "k",
        8,
        || "again".to_string(),
        || "dup".to_string(),
    );
    assert_eq!(sources(&from_a), [Source::Leader]);
    assert_eq!(sources(&from_b), [Source::Follower]);
    assert!(from_b.iter().all(|(o, _)| o.value == "again"));
}

/// Deterministic bytes that no codec bug could fake.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn four_mib_values_arrive_byte_identical() {
    let server = RedisServer::start();
    let a = replica::<Vec<u8>>(&server.url(), config("big"));
    let b = replica::<Vec<u8>>(&server.url(), config("big"));
    let value = pattern(4 << 20, 7);
    let (from_a, from_b) = lead_and_follow(&server, &a, &b, "k", 4, || value.clone(), Vec::new);
    println!("4 MiB: follower side max {:?}", max_latency(&from_b));
    assert_eq!(sources(&from_b), [Source::Follower]);
    assert!(from_a.iter().chain(&from_b).all(|(o, _)| o.value == value));
}

#[test]
fn over_max_payload_sends_followers_to_a_local_run_at_once() {
    let server = RedisServer::start();
    let mut cfg = config("huge");
    cfg.lease = Duration::from_secs(5);
    cfg.max_payload = 64 << 10;
    let a = replica::<Vec<u8>>(&server.url(), cfg.clone());
    let b = replica::<Vec<u8>>(&server.url(), cfg);
    let big = pattern(128 << 10, 3);
    let (from_a, from_b) = lead_and_follow(&server, &a, &b, "k", 4, || big.clone(), || vec![1]);
    let waited = max_latency(&from_b);
    println!("over max_payload: follower side served locally after {waited:?} (lease 5 s)");
    assert!(
        from_a
            .iter()
            .all(|(o, _)| o.value == big && o.source == Source::Leader)
    );
    assert_eq!(
        sources(&from_b),
        [Source::Fallback(FallbackReason::PayloadTooLarge)]
    );
    assert!(from_b.iter().all(|(o, _)| o.value == [1]));
    assert!(
        waited < Duration::from_secs(2),
        "did not wait out the lease: {waited:?}"
    );
}

#[test]
fn malformed_data_is_a_clear_error_or_a_labelled_local_run() {
    let server = RedisServer::start();
    let mut cfg = config("mal");
    cfg.max_payload = 1 << 20;
    let group = replica::<String>(&server.url(), cfg);
    let mut con = server.connection();
    let lease = "sf:mal:v1:{k:bad}:lease";
    // A lease of our token shape, so that the call follows it to the stream.
    const T: &str = "0123456789abcdef0123456789abcdef";
    let done = format!("sf:mal:v1:{{k:bad}}:done:{T}");
    let done = done.as_str();
    let oversized = vec![b'x'; 2 << 20];
    let cases: [(&[u8], &[u8], &str); 6] = [
        (b"v", b"garbage", "bad magic"),
        (b"v", b"SF\x01\x01\x05ab", "does not decode"),
        (b"v", b"SF\x01\x01\x01a!", "trailing bytes"),
        (b"v", b"SF\x07\x01\x01a", "format version 7"),
        (b"zzz", b"", "unknown status"),
        (b"v", &oversized, "limit"),
    ];
    for (status, body, want) in cases {
        let _: () = redis::pipe()
            .del(&[lease, done])
            .set_options(
                lease,
                T,
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(5000)),
            )
            .cmd("XADD")
            .arg(done)
            .arg("*")
            .arg("s")
            .arg(status)
            .arg("b")
            .arg(body)
            .query(&mut con)
            .unwrap();
        let err = group
            .try_work("bad", || "strict ran".to_string())
            .unwrap_err();
        println!("planted {want:?}: strict -> {err}");
        assert_eq!(err.reason(), FallbackReason::Malformed);
        assert!(err.detail().contains(want), "{err}");
        let open = group.work_with_outcome("bad", || "ran locally".to_string());
        assert_eq!(open.value, "ran locally");
        assert_eq!(open.source, Source::Fallback(FallbackReason::Malformed));
    }
    // A lease key of a foreign type.
    let _: () = redis::pipe()
        .del(&[lease, done])
        .hset(lease, "f", "v")
        .query(&mut con)
        .unwrap();
    let err = group.try_work("bad", String::new).unwrap_err();
    println!("planted a hash as the lease: strict -> {err}");
    assert_eq!(err.reason(), FallbackReason::Malformed);
    assert_eq!(group.stats().fallbacks_for(FallbackReason::Malformed), 13);
    assert_eq!(
        group.stats().breaker_opens,
        0,
        "foreign data is not an outage"
    );
}

/// Records when it is dropped.
struct Stamp<'a>(&'a std::sync::OnceLock<Instant>);

impl Drop for Stamp<'_> {
    fn drop(&mut self) {
        let _ = self.0.set(Instant::now());
    }
}

#[test]
fn leader_panic_lets_remote_followers_take_over_at_once() {
    let server = RedisServer::start();
    let cfg = with_lease(config("panic"), Duration::from_secs(5));
    let (a, b) = replicas::<String>(&server.url(), cfg);
    let panicked_at = std::sync::OnceLock::new();
    let leading = std::sync::atomic::AtomicBool::new(false);
    let start = Barrier::new(4);
    let (from_a, (from_b, b_done)) = thread::scope(|s| {
        let from_b = s.spawn(|| {
            // b's threads start once a's leader holds the lease.
            wait_until("a holds the lease", LONG, || leading.load(Ordering::SeqCst));
            let served = herd(&b, "k", 4, || "b took over".to_string());
            (served, Instant::now())
        });
        let from_a: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    panic::catch_unwind(AssertUnwindSafe(|| {
                        a.work("k", || {
                            leading.store(true, Ordering::SeqCst);
                            wait_until("b blocks on Redis", LONG, || server.blocked_clients() == 1);
                            wait_until("a's followers join", LONG, || {
                                a.stats().local.followers_joined == 3
                            });
                            // Stamped while unwinding, after the panic hook has
                            // printed: the abandon is published right after.
                            let _stamp = Stamp(&panicked_at);
                            panic!("backend exploded")
                        })
                    }))
                })
            })
            .collect();
        let from_a: Vec<_> = from_a.into_iter().map(|h| h.join().unwrap()).collect();
        (from_a, from_b.join().unwrap())
    });
    let after_panic = b_done.duration_since(*panicked_at.get().unwrap());
    let mut leader_payloads = 0;
    let mut follower_payloads = 0;
    for result in from_a {
        let payload = result.unwrap_err();
        if let Some(lp) = payload.downcast_ref::<LeaderPanicked>() {
            assert_eq!(lp.message(), Some("backend exploded"));
            follower_payloads += 1;
        } else {
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"backend exploded"));
            leader_payloads += 1;
        }
    }
    assert_eq!((leader_payloads, follower_payloads), (1, 3));
    println!("leader panic: b served {after_panic:?} after the panic (lease 5 s)");
    assert_eq!(sources(&from_b), [Source::Takeover]);
    assert!(from_b.iter().all(|(o, _)| o.value == "b took over"));
    assert!(after_panic < Duration::from_secs(1), "{after_panic:?}");
    assert_eq!(b.stats().takeovers, 1);
}

#[test]
fn a_stolen_lease_counts_as_lost_and_the_value_still_arrives() {
    let server = RedisServer::start();
    let mut cfg = config("lost");
    cfg.lease = Duration::from_millis(300);
    let group = replica::<u32>(&server.url(), cfg);
    let mut con = server.connection();
    let outcome = group.work_with_outcome("k", || {
        // Another flight's token replaces ours: the next renewal answers 0.
        let _: () = redis::cmd("SET")
            .arg("sf:lost:v1:{k:k}:lease")
            .arg("intruder")
            .query(&mut con)
            .unwrap();
        thread::sleep(Duration::from_millis(250));
        5
    });
    assert_eq!((outcome.value, outcome.source), (5, Source::Leader));
    assert_eq!(group.stats().lost_leases, 1);
    // The intruder's lease was left alone.
    let holder: String = redis::cmd("GET")
        .arg("sf:lost:v1:{k:k}:lease")
        .query(&mut con)
        .unwrap();
    assert_eq!(holder, "intruder");
}

#[test]
fn a_failed_renewal_counts_as_a_lost_lease() {
    let server = RedisServer::start();
    let group = replica::<u32>(
        &server.url(),
        with_lease(config("renewfail"), Duration::from_millis(300)),
    );
    let outcome = group.work_with_outcome("k", || {
        server.kill();
        thread::sleep(Duration::from_millis(250)); // past the first renewal, at 100 ms
        7
    });
    assert_eq!((outcome.value, outcome.source), (7, Source::Leader));
    let stats = group.stats();
    assert_eq!((stats.lost_leases, stats.publish_failures), (1, 1));
}

#[test]
fn a_hung_server_costs_at_most_the_io_timeout_then_the_breaker_opens() {
    let server = RedisServer::start();
    let cfg = config("hung"); // I/O timeout 300 ms, breaker after 3 failures
    let group = replica::<u32>(&server.url(), cfg.clone());
    group.work("warm", || 0);
    server.pause(true);
    let mut seen = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        let outcome = group.work_with_outcome(&format!("k{i}"), || 1);
        let took = t.elapsed();
        seen.push((outcome.source, took));
        assert_eq!(outcome.value, 1);
        assert!(
            took < cfg.io_timeout + cfg.connect_timeout + Duration::from_millis(300),
            "{took:?}"
        );
    }
    server.pause(false);
    println!("calls on a hung server: {seen:?}");
    assert!(matches!(
        seen[0].0,
        Source::Fallback(FallbackReason::Unavailable)
    ));
    assert_eq!(seen[4].0, Source::Fallback(FallbackReason::BreakerOpen));
    assert!(seen[4].1 < Duration::from_millis(50));
    wait_until("dedup resumes after the cooldown", LONG, || {
        group.work_with_outcome("again", || 2).source == Source::Leader
    });
}

#[test]
fn strict_calls_report_an_unreachable_server() {
    let server = RedisServer::start();
    let url = server.url();
    server.kill();
    let group = replica::<u32>(&url, config("gone"));
    let t = Instant::now();
    let err = group.try_work("k", || 1).unwrap_err();
    assert_eq!(err.reason(), FallbackReason::Unavailable);
    assert_eq!(
        group.work_with_outcome("k", || 2).source,
        Source::Fallback(FallbackReason::Unavailable)
    );
    assert!(t.elapsed() < Duration::from_millis(500));
}

#[test]
fn many_followed_flights_share_the_readers_within_max_connections() {
    let server = RedisServer::start();
    let mut cfg = config("readers");
    cfg.readers = 2;
    cfg.max_connections = 3;
    let (a, b) = replicas::<u32>(&server.url(), cfg);
    const KEYS: usize = 16;
    let leading = Barrier::new(KEYS + 1);
    let release = Barrier::new(KEYS + 1);
    let sources: Vec<Source> = thread::scope(|s| {
        let leaders: Vec<_> = (0..KEYS)
            .map(|k| {
                let (a, leading, release) = (&a, &leading, &release);
                s.spawn(move || {
                    a.work_with_outcome(&format!("k{k}"), || {
                        leading.wait();
                        release.wait();
                        k as u32
                    })
                })
            })
            .collect();
        leading.wait();
        let followers: Vec<_> = (0..KEYS)
            .map(|k| {
                let b = &b;
                s.spawn(move || b.work_with_outcome(&format!("k{k}"), || 99))
            })
            .collect();
        wait_until("every follower waits", LONG, || {
            b.stats().remote_waiting == KEYS
        });
        // Two readers, one blocked read each, however many flights (a
        // reader re-issuing its read after a wake-up is briefly unblocked).
        wait_until("both readers block", LONG, || server.blocked_clients() == 2);
        release.wait();
        for (k, h) in leaders.into_iter().enumerate() {
            assert_eq!(h.join().unwrap().value, k as u32);
        }
        followers
            .into_iter()
            .enumerate()
            .map(|(k, h)| {
                let outcome = h.join().unwrap();
                assert_eq!(outcome.value, k as u32);
                outcome.source
            })
            .collect()
    });
    assert!(
        sources.iter().all(|s| *s == Source::Follower),
        "{sources:?}"
    );
    let stats = b.stats();
    println!("16 followed flights: {stats:?}");
    assert!(stats.connections_peak <= 3, "{stats:?}");
}

#[test]
fn a_dropped_group_closes_its_reader_connection_at_once() {
    let server = RedisServer::start();
    let (a, b) = replicas::<u32>(&server.url(), config("dropped"));
    // b follows one flight of a: its reader thread dials its connection.
    let (from_a, from_b) = lead_and_follow(&server, &a, &b, "k", 1, || 1, || 2);
    assert_eq!((from_a[0].0.value, from_b[0].0.value), (1, 1));
    assert_eq!(from_b[0].0.source, Source::Follower);
    let b_open = b.stats().connections_open as u64;
    assert!(b_open >= 2, "a pooled and a reader connection: {b_open}");
    let before = server.connected_clients();
    let t = Instant::now();
    drop(b);
    // Not after the reader's 10 s idle timeout, with its thread and
    // connection left behind by every group dropped meanwhile.
    wait_until(
        "the dropped group's connections close",
        Duration::from_secs(3),
        || server.connected_clients() <= before - b_open,
    );
    println!("a dropped group's connections closed in {:?}", t.elapsed());
}

#[test]
fn max_wait_of_duration_max_means_no_limit_and_huge_timeouts_are_refused() {
    let server = RedisServer::start();
    let mut cfg = config("forever");
    // As for `Group::work_timeout`: forever, not an overflow panic.
    cfg.max_wait = Duration::MAX;
    let (a, b) = replicas::<u32>(&server.url(), cfg.clone());
    assert_eq!(a.work_with_outcome("alone", || 0).source, Source::Leader);
    let (from_a, from_b) = lead_and_follow(&server, &a, &b, "k", 1, || 1, || 2);
    assert_eq!(from_a[0].0.source, Source::Leader);
    assert_eq!(
        (from_b[0].0.value, from_b[0].0.source),
        (1, Source::Follower)
    );
    // These would overflow a deadline or the breaker's escalation: a panic
    // in `open` or in a call (or in the reader thread) instead of an error.
    type Set = fn(&mut RedisConfig);
    let huge: [Set; 5] = [
        |c| c.lease = Duration::MAX,
        |c| c.result_ttl = Duration::MAX,
        |c| c.connect_timeout = Duration::MAX,
        |c| c.io_timeout = Duration::MAX,
        |c| c.breaker_cooldown = Duration::MAX,
    ];
    for set in huge {
        let mut bad = cfg.clone();
        set(&mut bad);
        let err = RedisGroup::<String, u32>::open(&server.url(), bad).unwrap_err();
        assert!(err.to_string().contains("is over"), "{err}");
    }
}

#[test]
fn one_failed_renewal_does_not_end_the_renewals() {
    let server = RedisServer::start();
    // Renewed every 667 ms; I/O timeout 300 ms.
    let cfg = with_lease(config("blip"), Duration::from_secs(2));
    let (a, b) = replicas::<u32>(&server.url(), cfg);
    a.work("warm", || 0);
    b.work("warm", || 0);
    let runs = AtomicUsize::new(0);
    let (leading_tx, leading) = std::sync::mpsc::channel();
    let (led, followed) = thread::scope(|s| {
        let lead = s.spawn(|| {
            a.work_with_outcome("k", || {
                runs.fetch_add(1, Ordering::SeqCst);
                leading_tx.send(Instant::now()).unwrap();
                // Past the lease: only renewals keep it.
                thread::sleep(Duration::from_millis(2600));
                1
            })
        });
        let started = leading.recv_timeout(LONG).unwrap();
        let follow = s.spawn(|| {
            b.work_with_outcome("k", || {
                runs.fetch_add(1, Ordering::SeqCst);
                2
            })
        });
        wait_until("b follows", LONG, || b.stats().remote_waiting == 1);
        // A 1.2 s blip for writes (reads go on): the first renewal, at
        // 667 ms, times out; the lease set at 0 still has 1 s to run, and
        // the next renewal, after the blip, would keep it.
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1200)
            .arg("WRITE")
            .query(&mut server.connection())
            .unwrap();
        println!("paused {:?} into f", started.elapsed());
        (lead.join().unwrap(), follow.join().unwrap())
    });
    println!(
        "a: {:?} {:?}; b: {:?}; a {:?}",
        led.source,
        led.value,
        followed.source,
        a.stats()
    );
    assert_eq!(
        (
            led.source,
            followed.source,
            followed.value,
            runs.into_inner()
        ),
        (Source::Leader, Source::Follower, 1, 1)
    );
}
