//! `Group::forget`: Go's TestForget and the identity rule of Go issue 31420.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use common::{blocked_leader, spawn_follower, wait_until, with_deadline};
use sync_singleflight::Group;

// Go: TestForget. First flight blocked → Forget → second flight starts and
// blocks → first finishes → a third caller joins the second flight.
#[test]
fn forget_starts_a_new_flight_and_the_old_leader_leaves_it_alone() {
    with_deadline("forget_three_flights", || {
        let group = Arc::new(Group::<String, u32>::new());
        let (first, release_first) = blocked_leader(&group, "key".to_string(), 1);
        assert!(group.forget("key"));
        assert_eq!(group.in_flight(), 0, "a forgotten flight is not joinable");
        assert!(!group.forget("key"), "forgetting twice finds nothing");

        let (second, release_second) = blocked_leader(&group, "key".to_string(), 2);
        assert_eq!(group.in_flight(), 1);

        release_first.send(()).unwrap();
        assert_eq!(first.join().unwrap(), 1);
        assert_eq!(
            group.in_flight(),
            1,
            "the first leader must not remove the second flight"
        );

        let third_ran = Arc::new(AtomicUsize::new(0));
        let third = {
            let (group, third_ran) = (group.clone(), third_ran.clone());
            thread::spawn(move || {
                group.work("key", move || {
                    third_ran.fetch_add(1, Ordering::SeqCst);
                    3
                })
            })
        };
        wait_until("the third caller joined", || {
            group.stats().followers_joined == 1
        });
        release_second.send(()).unwrap();
        assert_eq!(second.join().unwrap(), 2);
        assert_eq!(
            third.join().unwrap(),
            2,
            "the third caller joins the second flight"
        );
        assert_eq!(third_ran.load(Ordering::SeqCst), 0);
        assert_eq!(group.in_flight(), 0);
        assert_eq!(group.stats().forgets, 1);
    });
}

#[test]
fn followers_of_a_forgotten_flight_still_get_its_value() {
    with_deadline("forget_keeps_followers", || {
        let group = Arc::new(Group::<String, u32>::new());
        let (old, release_old) = blocked_leader(&group, "key".to_string(), 1);
        let follower = spawn_follower(&group, 1, move |group| {
            group.work_with_role("key", || unreachable!())
        });
        assert!(group.forget("key"));

        let (new, release_new) = blocked_leader(&group, "key".to_string(), 2);
        release_old.send(()).unwrap();
        let got = follower.join().unwrap();
        assert_eq!((got.value, got.callers), (1, 2));
        assert_eq!(old.join().unwrap(), 1);
        release_new.send(()).unwrap();
        assert_eq!(new.join().unwrap(), 2);
        assert_eq!(group.in_flight(), 0);
    });
}

#[test]
fn forget_from_inside_the_function_lets_the_same_thread_lead_again() {
    let group: Group<String, u32> = Group::new();
    let value = group.work("key", || {
        assert!(group.forget("key"));
        // Not recursive any more: the forgotten flight cannot be joined.
        group.work("key", || 5) + 1
    });
    assert_eq!(value, 6);
    assert_eq!(group.in_flight(), 0);
}

#[test]
fn forget_of_an_idle_key_is_false() {
    let group: Group<u64, u32> = Group::new();
    assert!(!group.forget(&9));
    group.work(&9, || 1);
    assert!(!group.forget(&9), "nothing is cached, so nothing to forget");
    assert_eq!(group.stats().forgets, 0);
}
