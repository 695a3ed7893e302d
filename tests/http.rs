//! The thundering-herd demo's server, in process on loopback, hit by
//! concurrent `ureq` requests: one SQLite query per hot id per burst with the
//! group, one per request without it, correct bodies, shared 404s, and
//! nothing left in flight.
//!
//! Each leader's query is held (by the database's query gate) until every
//! other request of the burst has joined a flight, so the counts are exact
//! rather than timing-dependent.

#[path = "../examples/thundering_herd/app.rs"]
mod app;
mod common;
#[path = "../examples/shared/scratch.rs"]
mod scratch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use app::{App, Database, Lookup, Reply, Server, User};
use common::{wait_until, with_deadline};
use sync_singleflight::Group;

const USERS: u64 = 200;

struct Harness {
    app: Arc<App>,
    server: Server,
    group: Option<Arc<Group<u64, Lookup>>>,
    /// How many followers must have joined, in all, before a leader may
    /// query: set before each burst.
    followers_due: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start(with_group: bool, workers: usize) -> Harness {
        let dir = scratch::scratch_dir("http-test").unwrap();
        let group = with_group.then(|| Arc::new(Group::new()));
        let followers_due = Arc::new(AtomicU64::new(0));
        let mut db = Database::create(dir.path(), USERS, 4, Duration::ZERO, &|| {}).unwrap();
        if let Some(group) = &group {
            let (group, due) = (group.clone(), followers_due.clone());
            db = db.with_gate(Box::new(move |_id| {
                wait_until("every request of the burst joined a flight", || {
                    group.stats().followers_joined >= due.load(Ordering::SeqCst)
                })
            }));
        }
        let app = Arc::new(App::new(db, group.clone()));
        let server = Server::start(app.clone(), workers).unwrap();
        Harness {
            app,
            server,
            group,
            followers_due,
            _dir: dir,
        }
    }

    /// Sends every request in `ids` at once (one client thread each).
    fn burst(&self, ids: &[u64], distinct: usize) -> Vec<Reply> {
        self.followers_due
            .fetch_add((ids.len() - distinct) as u64, Ordering::SeqCst);
        self.server.warm_up(ids.len());
        app::burst(&self.server.base_url(), ids, ids.len(), &|| {}).unwrap()
    }

    fn stop(self) -> Arc<App> {
        if let Some(group) = &self.group {
            assert_eq!(group.in_flight(), 0, "nothing is left in flight");
        }
        self.server.stop();
        self.app
    }
}

fn assert_found(replies: &[Reply]) {
    for reply in replies {
        assert_eq!(reply.status, 200, "id {}: {}", reply.id, reply.body);
        assert_eq!(reply.body, User::expected(reply.id).to_json());
    }
}

fn hot_ids(ids: &[u64], per_id: usize) -> Vec<u64> {
    (0..per_id).flat_map(|_| ids.iter().copied()).collect()
}

#[test]
fn with_the_group_each_hot_id_is_queried_once_per_burst() {
    with_deadline("grouped_bursts", || {
        const HOT: [u64; 3] = [1, 42, 200];
        const PER_ID: usize = 12;
        let harness = Harness::start(true, HOT.len() * PER_ID);
        let ids = hot_ids(&HOT, PER_ID);
        for burst in 1..=2u64 {
            let replies = harness.burst(&ids, HOT.len());
            assert_eq!(replies.len(), ids.len());
            assert_found(&replies);
            assert_eq!(
                harness.app.db.queries(),
                burst * HOT.len() as u64,
                "one query per hot id per burst"
            );
        }
        let app = harness.stop();
        let sizes = app.flight_sizes.lock().unwrap().clone();
        assert_eq!(
            sizes,
            vec![PER_ID; 2 * HOT.len()],
            "every flight served its whole herd"
        );
    });
}

#[test]
fn without_the_group_every_request_queries() {
    with_deadline("direct_burst", || {
        const HOT: [u64; 3] = [1, 42, 200];
        const PER_ID: usize = 8;
        let harness = Harness::start(false, HOT.len() * PER_ID);
        let ids = hot_ids(&HOT, PER_ID);
        let replies = harness.burst(&ids, ids.len());
        assert_found(&replies);
        assert_eq!(
            harness.app.db.queries(),
            ids.len() as u64,
            "one query per request"
        );
        harness.stop();
    });
}

#[test]
fn a_missing_id_is_a_404_for_every_waiter() {
    with_deadline("shared_404", || {
        const WAITERS: usize = 16;
        let harness = Harness::start(true, WAITERS);
        let missing = USERS + 1;
        let replies = harness.burst(&[missing; WAITERS], 1);
        assert_eq!(replies.len(), WAITERS);
        for reply in &replies {
            assert_eq!(reply.status, 404);
            assert_eq!(
                reply.body,
                format!(r#"{{"error":"user {missing} not found"}}"#)
            );
        }
        assert_eq!(
            harness.app.db.queries(),
            1,
            "the error was shared, not retried"
        );
        let app = harness.stop();
        assert_eq!(*app.flight_sizes.lock().unwrap(), vec![WAITERS]);
    });
}

#[test]
fn a_bad_path_is_a_400() {
    with_deadline("bad_path", || {
        let harness = Harness::start(true, 2);
        let response = app::client()
            .get(&format!("{}/users/abc", harness.server.base_url()))
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        assert_eq!(harness.app.db.queries(), 0);
        harness.stop();
    });
}

#[test]
fn metrics_are_served_in_prometheus_text() {
    with_deadline("metrics", || {
        const WAITERS: usize = 4;
        let harness = Harness::start(true, WAITERS);
        harness.burst(&[7; WAITERS], 1);
        let mut response = app::client()
            .get(&format!("{}/metrics", harness.server.base_url()))
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let scrape = response.body_mut().read_to_string().unwrap();
        // Other tests share the process-wide recorder, so only lower bounds
        // hold for the counts.
        let value = |series: &str| -> f64 {
            scrape
                .lines()
                .find_map(|line| line.strip_prefix(series))
                .unwrap_or_else(|| panic!("no {series} in:\n{scrape}"))
                .trim()
                .parse()
                .unwrap()
        };
        assert!(value(r#"demo_http_requests_total{mode="group",status="200"}"#) >= WAITERS as f64);
        assert!(value(r#"demo_sqlite_queries_total{mode="group"}"#) >= 1.0);
        assert!(scrape.contains("# TYPE demo_http_request_seconds summary"));
        harness.stop();
    });
}
