//! The `tracing` and `metrics` features: what a group reports, labelled by
//! its name and never by its key. Run with `cargo test --all-features`.

#![cfg(any(feature = "tracing", feature = "metrics"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{blocked_leader, spawn_follower, with_deadline};
use sync_singleflight::Group;

/// One flight with two followers served and one that times out, on a
/// group named "users", keyed by a secret-looking token.
fn one_busy_flight(group: &Arc<Group<String, u32>>) {
    let (leader, release) = blocked_leader(group, "token-s3cr3t".to_string(), 7);
    let served: Vec<_> = (1..=2)
        .map(|n| spawn_follower(group, n, |group| group.work("token-s3cr3t", || 0)))
        .collect();
    let impatient = spawn_follower(group, 3, |group| {
        group.work_timeout("token-s3cr3t", Duration::ZERO, || 0)
    });
    assert!(impatient.join().unwrap().is_err());
    release.send(()).unwrap();
    assert_eq!(leader.join().unwrap(), 7);
    for follower in served {
        assert_eq!(follower.join().unwrap(), 7);
    }
}

fn users_group() -> Arc<Group<String, u32>> {
    Arc::new(Group::builder().name("users").build())
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_count_flights_followers_and_timeouts_by_group_name() {
    use metrics_exporter_prometheus::PrometheusBuilder;

    with_deadline("metrics", || {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let group = users_group();
        // The group registers its handles on first use, with the recorder
        // in force then; they keep counting from every thread afterwards.
        metrics::with_local_recorder(&recorder, || group.work("warm-up", || 1));
        one_busy_flight(&group);
        let text = handle.render();
        for line in [
            r#"singleflight_flights_total{group="users"} 2"#,
            r#"singleflight_followers_served_total{group="users"} 2"#,
            r#"singleflight_follower_timeouts_total{group="users"} 1"#,
            r#"singleflight_callers_per_flight_count{group="users"} 2"#,
            r#"singleflight_leader_run_seconds_count{group="users"} 2"#,
            r#"singleflight_follower_wait_seconds_count{group="users"} 2"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(
            !text.contains("s3cr3t"),
            "a key reached the metrics:\n{text}"
        );
    });
}

#[cfg(feature = "tracing")]
mod traces {
    use std::fmt::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    /// Writes every span and event, with its fields, as one line into a
    /// list the test keeps a handle to.
    #[derive(Default)]
    pub struct Lines {
        pub lines: Arc<Mutex<Vec<String>>>,
        next_id: AtomicU64,
    }

    struct Fields<'a>(&'a mut String);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
    }

    impl Subscriber for Lines {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }

        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let mut line = format!("span {}", span.metadata().name());
            span.record(&mut Fields(&mut line));
            self.lines.lock().unwrap().push(line);
            Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
        }

        fn record(&self, _: &Id, _: &Record<'_>) {}

        fn record_follows_from(&self, _: &Id, _: &Id) {}

        fn event(&self, event: &Event<'_>) {
            let mut line = format!("event {}", event.metadata().level());
            event.record(&mut Fields(&mut line));
            self.lines.lock().unwrap().push(line);
        }

        fn enter(&self, _: &Id) {}

        fn exit(&self, _: &Id) {}
    }
}

#[cfg(feature = "tracing")]
#[test]
fn tracing_has_a_span_per_flight_with_role_and_group_but_no_key() {
    with_deadline("tracing", || {
        let subscriber = traces::Lines::default();
        let lines = subscriber.lines.clone();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        let group = users_group();
        one_busy_flight(&group);
        let lines = lines.lock().unwrap().join("\n");
        let leader_span = "span singleflight.flight group=users role=\"leader\"";
        let follower_span = "span singleflight.flight group=users role=\"follower\"";
        assert!(lines.contains(leader_span), "{lines}");
        assert_eq!(lines.matches(follower_span).count(), 3, "{lines}");
        assert!(
            lines.contains("gave up waiting"),
            "the timeout is an event:\n{lines}"
        );
        assert!(
            !lines.contains("s3cr3t"),
            "a key reached the traces:\n{lines}"
        );
    });
}
