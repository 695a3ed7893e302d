//! `RedisGroup::open_sentinel` against a real primary, a replica and three
//! `redis-server --sentinel` children: dedup through the primary the
//! sentinels name, and after the primary is SIGKILLed and the replica
//! promoted, dedup back within a bound with nobody hung.
#![cfg(feature = "redis")]

#[path = "redis_support/groups.rs"]
mod groups;
mod redis_support;

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use groups::config;
use redis_support::{RedisServer, SentinelServer, wait_until};
use sync_singleflight::redis::{RedisGroup, Source};

const LONG: Duration = Duration::from_secs(20);

/// Whether `a` leading `key` and `b` asking for it meanwhile share one run:
/// `a`'s `f` starts, then `b` calls, then `f` returns. Returns `b`'s
/// source and how long the slower of the two calls took.
fn shared_once(
    a: &RedisGroup<String, String>,
    b: &RedisGroup<String, String>,
    key: &str,
) -> (Source, Source, Duration) {
    let inside = Barrier::new(2);
    let start = Instant::now();
    thread::scope(|s| {
        let led = s.spawn(|| {
            a.work_with_outcome(key, || {
                inside.wait();
                thread::sleep(Duration::from_millis(150));
                format!("from a: {key}")
            })
        });
        inside.wait();
        let followed = b.work_with_outcome(key, || format!("from b: {key}"));
        let led = led.join().unwrap();
        (led.source, followed.source, start.elapsed())
    })
}

#[test]
fn dedup_follows_the_primary_through_a_sentinel_failover() {
    let primary = RedisServer::start();
    let primary_port = primary.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary_port]);
    let sentinels: Vec<SentinelServer> = (0..3)
        .map(|_| SentinelServer::start(primary.port(), 300))
        .collect();
    // The sentinels must know the replica and each other before a failover
    // can elect one of them (they meet through hello messages, every 2 s).
    wait_until(
        "the sentinels know the replica and each other",
        LONG,
        || {
            sentinels.iter().all(|s| {
                let replicas: Vec<redis::Value> = s
                    .try_query(redis::cmd("SENTINEL").arg("replicas").arg("mymaster"))
                    .unwrap_or_default();
                let peers: Vec<redis::Value> = s
                    .try_query(redis::cmd("SENTINEL").arg("sentinels").arg("mymaster"))
                    .unwrap_or_default();
                replicas.len() == 1 && peers.len() == 2
            })
        },
    );
    let urls: Vec<String> = sentinels.iter().map(SentinelServer::url).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut cfg = config("sentinel");
    cfg.lease = Duration::from_millis(500);
    cfg.breaker_cooldown = Duration::from_millis(200);
    let open = || {
        RedisGroup::<String, String>::open_sentinel(
            &urls,
            "mymaster",
            "redis://ignored",
            cfg.clone(),
        )
        .unwrap()
    };
    let (a, b) = (open(), open());
    let health = a.check(2);
    assert!(health.is_ok(), "{health:?}");
    let (led, followed, _) = shared_once(&a, &b, "before");
    assert_eq!((led, followed), (Source::Leader, Source::Follower));

    primary.kill();
    let killed = Instant::now();
    let mut probes = 0;
    // When the sentinels first named the replica (at a probe's end).
    let mut promoted_at = None;
    let recovered = loop {
        assert!(
            killed.elapsed() < LONG,
            "dedup did not come back in {LONG:?}"
        );
        probes += 1;
        let (led, followed, took) = shared_once(&a, &b, &format!("after-{probes}"));
        if promoted_at.is_none() && sentinels[0].primary_port() == Some(replica.port()) {
            promoted_at = Some(killed.elapsed());
        }
        // Nobody hangs while the sentinels elect and promote.
        assert!(took < Duration::from_secs(3), "a probe took {took:?}");
        if (led, followed) == (Source::Leader, Source::Follower) {
            break killed.elapsed();
        }
        thread::sleep(Duration::from_millis(20));
    };
    let promoted = sentinels[0].primary_port();
    assert_eq!(promoted, Some(replica.port()), "the replica was promoted");
    assert!(a.check(2).is_ok());
    println!(
        "dedup back {recovered:?} after the primary was killed; sentinels named the \
         replica by {promoted_at:?} ({probes} probes)"
    );
    assert!(recovered < Duration::from_secs(10), "{recovered:?}");
}

/// A sentinel that takes the connection (the kernel's backlog completes the
/// handshake) and never answers: a hung or SIGSTOPped sentinel process.
fn hung_sentinel() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// The first sentinel in the list hangs; the second answers. Every dial
/// must still find the primary: a hung sentinel costs its timeout, it does
/// not hide the healthy ones (which is what running three is for).
#[test]
fn a_hung_first_sentinel_does_not_hide_the_healthy_ones() {
    let primary = RedisServer::start();
    let sentinel = SentinelServer::start(primary.port(), 5000);
    let (_hung, hung_url) = hung_sentinel();
    let urls = [hung_url.as_str(), &sentinel.url()];
    let group = RedisGroup::<String, String>::open_sentinel(
        &urls,
        "mymaster",
        "redis://ignored",
        config("sentinel-hung"),
    )
    .unwrap();
    let outcome = group.try_work("k", || "v".to_string());
    assert_eq!(outcome.map(|o| o.source), Ok(Source::Leader));
}

/// A primary name no sentinel monitors is a setup to fix: a clear error
/// that names it, and no breaker opened over it.
#[test]
fn an_unknown_primary_name_is_a_misconfiguration_not_an_outage() {
    let primary = RedisServer::start();
    let sentinel = SentinelServer::start(primary.port(), 5000);
    let url = sentinel.url();
    let group = RedisGroup::<String, String>::open_sentinel(
        &[url.as_str()],
        "nosuchmaster",
        "redis://ignored",
        config("sentinel-name"),
    )
    .unwrap();
    for _ in 0..5 {
        let err = group.try_work("k", || "v".to_string()).unwrap_err();
        assert_eq!(
            err.reason(),
            sync_singleflight::redis::FallbackReason::Misconfigured,
            "{err}"
        );
        assert!(err.detail().contains("nosuchmaster"), "{err}");
    }
}

/// Every sentinel down: each call fails fast as unreachable, nobody hangs.
#[test]
fn all_sentinels_down_fail_fast() {
    let (_a, a) = hung_sentinel();
    let dead = format!("redis://127.0.0.1:{}", redis_support::free_port());
    let mut cfg = config("sentinel-down");
    cfg.breaker_failures = 100;
    let group = RedisGroup::<String, String>::open_sentinel(
        &[dead.as_str(), a.as_str()],
        "mymaster",
        "redis://ignored",
        cfg.clone(),
    )
    .unwrap();
    let start = Instant::now();
    let err = group.try_work("k", || "v".to_string()).unwrap_err();
    let took = start.elapsed();
    assert_eq!(
        err.reason(),
        sync_singleflight::redis::FallbackReason::Unavailable,
        "{err}"
    );
    // Each sentinel within the connect and I/O timeouts, and some slack
    // for a loaded machine.
    let bound = (cfg.connect_timeout + cfg.io_timeout) * 2 + Duration::from_secs(2);
    assert!(took < bound, "{took:?}");
}
