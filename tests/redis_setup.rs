//! Setting a group up against real redis-server processes: typed errors
//! for a wrong or missing password, ACL users with and without the
//! permissions the protocol needs, a refused connection and a hung server;
//! and `check()` on a healthy server, a badly configured one, a replica and
//! unreachable or refusing ones.
#![cfg(feature = "redis")]

#[path = "redis_support/groups.rs"]
mod groups;
mod redis_support;

use std::time::Duration;

use groups::{config, replica, replicas};
use redis_support::{RedisServer, free_port};
use sync_singleflight::redis::{ErrorKind, FallbackReason, Source};

/// An ACL user allowed what the protocol runs, on the keys `keys` names.
fn add_user(server: &RedisServer, user: &str, password: &str, keys: &str) {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user)
        .arg("on")
        .arg(format!(">{password}"))
        .arg(keys)
        // The scripts' own commands need permissions too.
        .arg("+@scripting")
        .arg("+@read")
        .arg("+@write")
        .arg("+ping")
        .arg("+info")
        .query(&mut server.connection())
        .unwrap();
}

#[test]
fn a_wrong_password_is_an_authentication_error_that_never_opens_the_breaker() {
    let server = RedisServer::start_with_password("s3cret");
    for url in [
        server.url_as("default", "wrong"),
        // No password at all: the server answers NOAUTH to the first command.
        format!("redis://127.0.0.1:{}", server.port()),
        server.url_as("nobody", "s3cret"),
    ] {
        let group = replica::<u32>(&url, config("auth"));
        for _ in 0..10 {
            let err = group.try_work("k", || 1).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Authentication, "{url}: {err}");
            assert_eq!(err.reason(), FallbackReason::Misconfigured, "{url}");
            let open = group.work_with_outcome("k", || 2);
            assert_eq!(open.value, 2);
            assert_eq!(open.source, Source::Fallback(FallbackReason::Misconfigured));
        }
        let stats = group.stats();
        assert_eq!(stats.breaker_opens, 0, "{url}");
        assert_eq!(stats.fallbacks_for(FallbackReason::Misconfigured), 20);
        assert_eq!(stats.fallbacks_for(FallbackReason::BreakerOpen), 0);
    }
    // The right password in the URL works, and two replicas share a flight.
    let (a, b) = replicas::<u32>(&server.url(), config("auth"));
    assert_eq!(a.work_with_outcome("k", || 3).source, Source::Leader);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            a.work("slow", || {
                tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(200));
                4
            })
        });
        rx.recv().unwrap();
        let followed = b.work_with_outcome("slow", || 5);
        assert_eq!((followed.value, followed.source), (4, Source::Follower));
    });
}

#[test]
fn acl_users_work_and_a_missing_permission_is_reported() {
    let server = RedisServer::start();
    add_user(&server, "app", "app-pw", "~sf:acl:*");
    add_user(&server, "elsewhere", "other-pw", "~other:*");
    let app = replica::<u32>(&server.url_as("app", "app-pw"), config("acl"));
    let outcome = app.try_work("k", || 7).unwrap();
    assert_eq!((outcome.value, outcome.source), (7, Source::Leader));
    let denied = replica::<u32>(&server.url_as("elsewhere", "other-pw"), config("acl"));
    let err = denied.try_work("k", || 8).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permission, "{err}");
    assert_eq!(err.reason(), FallbackReason::Misconfigured);
    assert_eq!(denied.stats().breaker_opens, 0);
}

#[test]
fn refused_and_hung_servers_are_told_apart() {
    let refused = replica::<u32>(
        &format!("redis://127.0.0.1:{}", free_port()),
        config("kinds"),
    );
    let err = refused.try_work("k", || 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert_eq!(err.reason(), FallbackReason::Unavailable);

    let server = RedisServer::start();
    let hung = replica::<u32>(&server.url(), config("kinds"));
    // Connect while it answers, so that the timeout is a read timeout.
    assert_eq!(hung.try_work("warm", || 1).unwrap().source, Source::Leader);
    server.pause(true);
    let err = hung.try_work("k", || 1).unwrap_err();
    server.pause(false);
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(err.reason(), FallbackReason::Unavailable);
}

#[test]
fn check_reports_the_server_and_warns_about_settings_that_hurt() {
    let server = RedisServer::start();
    let group = replica::<u32>(&server.url(), config("check"));
    let health = group.check(4);
    assert!(health.is_ok(), "{health:?}");
    assert!(
        health.version.starts_with(|c: char| c.is_ascii_digit()),
        "{health:?}"
    );
    assert_eq!(health.mode, "standalone");
    assert!(!health.replica);
    assert!(health.round_trip > Duration::ZERO && health.round_trip < Duration::from_secs(1));

    let mut con = server.connection();
    for (name, value) in [("maxmemory-policy", "allkeys-lru"), ("maxclients", "20")] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut con)
            .unwrap();
    }
    let health = group.check(4);
    assert!(health.error.is_none());
    let warnings = health.warnings.join("\n");
    assert!(warnings.contains("allkeys-lru"), "{warnings}");
    assert!(warnings.contains("maxclients 20"), "{warnings}");
    assert_eq!(health.warnings.len(), 2, "{warnings}");
    // One process fits in 20 connections.
    assert_eq!(group.check(1).warnings.len(), 1);

    // A replica of it.
    let replica_server = RedisServer::start();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(server.port())
        .query(&mut replica_server.connection())
        .unwrap();
    let on_replica = replica::<u32>(&replica_server.url(), config("check"));
    let health = on_replica.check(1);
    assert!(health.replica, "{health:?}");
    assert!(health.warnings.iter().any(|w| w.contains("replica")));
    // Writing to it is refused: READONLY, an outage of the primary's role.
    let err = on_replica.try_work("k", || 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Replica, "{err}");
    assert_eq!(err.reason(), FallbackReason::Unavailable);
}

#[test]
fn check_reports_why_it_could_not_connect_and_never_opens_the_breaker() {
    let down = replica::<u32>(
        &format!("redis://127.0.0.1:{}", free_port()),
        config("check"),
    );
    for _ in 0..5 {
        let health = down.check(1);
        assert_eq!(health.error.unwrap().kind(), ErrorKind::Unreachable);
        assert!(health.version.is_empty() && health.warnings.is_empty());
    }
    assert_eq!(down.stats().breaker_opens, 0);
    let server = RedisServer::start_with_password("pw");
    let wrong = replica::<u32>(&server.url_as("default", "nope"), config("check"));
    let health = wrong.check(1);
    assert_eq!(
        health.error.as_ref().unwrap().kind(),
        ErrorKind::Authentication
    );
    assert!(!health.is_ok());
}

/// Without the `redis-tls` feature a `rediss://` URL is refused at `open`,
/// with the feature to enable.
#[cfg(not(feature = "redis-tls"))]
#[test]
fn rediss_without_the_tls_feature_names_the_feature() {
    let err = sync_singleflight::redis::RedisGroup::<String, u32>::open(
        "rediss://127.0.0.1:6380",
        config("tls"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("redis-tls"), "{err}");
}

/// A stand-in for a Redis 6 server: answers `PING` and `INFO` the way
/// Redis 6.2 does, where `INFO` takes one section at most (several are
/// Redis 7.0's) and anything more is `ERR syntax error`.
fn fake_redis6() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut lines = BufReader::new(stream).lines();
                while let Some(Ok(head)) = lines.next() {
                    let n: usize = head.trim_start_matches('*').parse().unwrap_or(0);
                    let mut args = Vec::new();
                    for _ in 0..n {
                        let _len = lines.next();
                        args.push(lines.next().and_then(Result::ok).unwrap_or_default());
                    }
                    let name = args.first().map(|a| a.to_ascii_uppercase());
                    let reply = match name.as_deref() {
                        Some("PING") => "+PONG\r\n".to_string(),
                        Some("INFO") if args.len() <= 2 => {
                            let body = "# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n\
                                        # Clients\r\nconnected_clients:1\r\n\
                                        # Memory\r\nmaxmemory_policy:noeviction\r\n\
                                        # Replication\r\nrole:master\r\n";
                            format!("${}\r\n{body}\r\n", body.len())
                        }
                        Some("INFO") => "-ERR syntax error\r\n".to_string(),
                        _ => "-ERR unknown command\r\n".to_string(),
                    };
                    if out.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// `check` works on Redis 5 and 6, which the protocol supports: their
/// `INFO` takes one section.
#[test]
fn check_works_on_a_server_whose_info_takes_one_section() {
    let port = fake_redis6();
    let group = replica::<u32>(&format!("redis://127.0.0.1:{port}"), config("check6"));
    let health = group.check(1);
    assert!(health.error.is_none(), "{health:?}");
    assert_eq!(health.version, "6.2.14");
    assert_eq!(health.mode, "standalone");
    assert!(health.is_ok(), "{health:?}");
}

/// A fresh dial to a hung server (accepted by the kernel, never answered)
/// gives up within the timeouts, with and without a password to send.
#[test]
fn a_fresh_dial_to_a_hung_server_gives_up() {
    for password in [None, Some("pw")] {
        let server = match password {
            Some(pw) => RedisServer::start_with_password(pw),
            None => RedisServer::start(),
        };
        let url = match password {
            Some(pw) => server.url_as("default", pw),
            None => server.url(),
        };
        server.pause(true);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let group = replica::<u32>(&url, config("hungdial"));
            let start = std::time::Instant::now();
            let err = group.try_work("k", || 1).unwrap_err();
            let _ = tx.send((start.elapsed(), err));
        });
        let (took, err) = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("a dial to a hung server hung (password {password:?})"));
        server.pause(false);
        println!("password {password:?}: {took:?} {err}");
        assert_eq!(err.reason(), FallbackReason::Unavailable, "{err}");
    }
}
