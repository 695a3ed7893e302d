//! Typed errors against real redis-server processes: a wrong password, a
//! missing password, ACL users with and without the permissions the
//! protocol needs, a refused connection and a hung server.
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
