//! `Group::work_timeout`: only a follower's wait is bounded.

mod common;

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{blocked_leader, spawn_follower, wait_until, with_deadline};
use sync_singleflight::{Group, Timeout};

#[test]
fn a_follower_gives_up_and_the_flight_goes_on() {
    with_deadline("follower_timeout", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let (leader, release) = blocked_leader(&group, 1, 100);
        let patient = spawn_follower(&group, 1, move |group| {
            group.work_with_role(&1, || unreachable!())
        });

        let bound = Duration::from_millis(50);
        let started = Instant::now();
        let impatient = group.work_timeout(&1, bound, || unreachable!());
        assert_eq!(impatient, Err(Timeout));
        assert!(started.elapsed() >= bound, "gave up before its timeout");

        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 100);
        let patient = patient.join().unwrap();
        assert_eq!(patient.value, 100);
        assert_eq!(patient.callers, 2, "the timed-out follower was not served");
        let stats = group.stats();
        assert_eq!(stats.follower_timeouts, 1);
        assert_eq!(stats.followers_served, 1);
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn zero_means_do_not_wait() {
    with_deadline("zero_timeout", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let (leader, release) = blocked_leader(&group, 1, 100);
        for _ in 0..3 {
            assert_eq!(
                group.work_timeout(&1, Duration::ZERO, || unreachable!()),
                Err(Timeout)
            );
        }
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 100);
        assert_eq!(group.stats().follower_timeouts, 3);
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn max_means_wait_forever_without_overflow() {
    with_deadline("max_timeout", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let (leader, release) = blocked_leader(&group, 1, 100);
        let follower = spawn_follower(&group, 1, move |group| {
            group.work_timeout(&1, Duration::MAX, || unreachable!())
        });
        release.send(()).unwrap();
        assert_eq!(follower.join().unwrap(), Ok(100));
        assert_eq!(leader.join().unwrap(), 100);
        // A huge but representable timeout behaves the same.
        let (leader, release) = blocked_leader(&group, 1, 100);
        let follower = {
            let group = group.clone();
            let years = Duration::from_secs(100 * 365 * 24 * 3600);
            thread::spawn(move || group.work_timeout(&1, years, || unreachable!()))
        };
        wait_until("the second follower joined", || {
            group.stats().followers_joined == 2
        });
        release.send(()).unwrap();
        assert_eq!(follower.join().unwrap(), Ok(100));
        assert_eq!(leader.join().unwrap(), 100);
    });
}

#[test]
fn a_leader_is_never_cut_short() {
    with_deadline("leader_not_bounded", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let (go_on, proceed) = mpsc::channel::<()>();
        let leader = {
            let group = group.clone();
            thread::spawn(move || {
                group.work_timeout(&1, Duration::ZERO, move || {
                    proceed.recv().unwrap();
                    5
                })
            })
        };
        wait_until("the leader is in flight", || group.in_flight() == 1);
        thread::sleep(Duration::from_millis(20)); // well past its zero timeout
        go_on.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), Ok(5));
    });
}

#[test]
fn a_timed_out_follower_is_not_hit_by_a_later_leader_panic() {
    common::quiet_expected_panics();
    with_deadline("timeout_then_panic", || {
        let group = Arc::new(Group::<u64, u64>::new());
        let (entered, leader_entered) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let leader = {
            let group = group.clone();
            thread::spawn(move || {
                group.work(&1, move || {
                    entered.send(()).unwrap();
                    released.recv().unwrap();
                    panic!("expected-panic in leader")
                })
            })
        };
        leader_entered.recv().unwrap();
        assert_eq!(
            group.work_timeout(&1, Duration::from_millis(10), || unreachable!()),
            Err(Timeout)
        );
        release.send(()).unwrap();
        assert!(leader.join().is_err());
        assert_eq!(group.in_flight(), 0);
        assert_eq!(group.work_timeout(&1, Duration::ZERO, || 3), Ok(3));
    });
}
