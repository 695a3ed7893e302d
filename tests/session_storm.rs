//! The session-storm demo's handler, driven by bursts of threads released
//! together: without the group every caller verifies and writes its own
//! session; with it, one verification, one session and one id per token,
//! and one error instance shared by every caller of an expired token.
//!
//! Exact counts come from the provider's gate, not from timing. Without the
//! group, each verification waits until every caller has started one (so
//! all of them missed the lookup); with it, each leader's verification
//! waits until every other caller has joined a flight.

mod common;
#[path = "../examples/session_storm/sessions.rs"]
mod sessions;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{wait_until, with_deadline};
use sessions::{AuthError, Call, Figures, Provider, Proxy, Store};
use sync_singleflight::Group;

const CALLERS: usize = 48;
const VALID: [&str; 3] = ["tok-ada", "tok-bob", "tok-cy"];
const EXPIRED: &str = "tok-old";

/// A proxy whose provider knows `VALID` and `EXPIRED`, and whose
/// verifications are held until the burst of `callers` is where it should be.
fn gated_proxy(grouped: bool, tokens: usize) -> Proxy {
    let group = grouped.then(|| Arc::new(Group::new()));
    let started = Arc::new(AtomicU64::new(0));
    let gate: sessions::Gate = match &group {
        // Every caller is a leader or a follower; followers must all have
        // joined before any flight may land.
        Some(group) => {
            let group: Arc<Group<String, sessions::SessionResult>> = group.clone();
            Box::new(move || {
                wait_until("every caller joined a flight", || {
                    group.stats().followers_joined >= (CALLERS - tokens) as u64
                })
            })
        }
        // Every caller must reach the provider before any of them writes.
        None => Box::new(move || {
            started.fetch_add(1, Ordering::SeqCst);
            wait_until("every caller started verifying", || {
                started.load(Ordering::SeqCst) >= CALLERS as u64
            })
        }),
    };
    let mut provider = Provider::new(Duration::ZERO).with_gate(gate);
    for (n, token) in VALID.iter().enumerate() {
        provider = provider.issue(token, &format!("user{n}"), false);
    }
    Proxy {
        store: Store::open().unwrap(),
        provider: provider.issue(EXPIRED, "gone", true),
        group,
    }
}

/// One gated burst of `CALLERS` threads, round-robin over `tokens`.
fn gated_burst(grouped: bool, tokens: &[&str]) -> (Proxy, Vec<Call>, Figures) {
    let proxy = gated_proxy(grouped, tokens.len());
    let calls = sessions::burst(&proxy, &callers(tokens)).unwrap().calls;
    let figures = Figures::of(&proxy, &calls);
    (proxy, calls, figures)
}

fn callers(tokens: &[&str]) -> Vec<String> {
    (0..CALLERS)
        .map(|i| tokens[i % tokens.len()].to_string())
        .collect()
}

const MIXED: [&str; 4] = [VALID[0], VALID[1], VALID[2], EXPIRED];
const PER_TOKEN: usize = CALLERS / MIXED.len();

fn ids_per_token(figures: &Figures) -> Vec<(&str, usize)> {
    figures
        .ids_per_token
        .iter()
        .map(|(token, ids)| (token.as_str(), *ids))
        .collect()
}

fn assert_expired_for_all(calls: &[Call]) {
    for call in calls.iter().filter(|c| c.token == EXPIRED) {
        assert!(
            matches!(
                call.result.as_ref().map_err(|e| &**e),
                Err(AuthError::Expired)
            ),
            "{}",
            call.token
        );
    }
}

#[test]
fn without_the_group_one_token_gets_a_session_per_caller() {
    with_deadline("direct_one_token", || {
        let (_proxy, _calls, figures) = gated_burst(false, &["tok-ada"]);
        assert_eq!(figures.verifications, CALLERS as u64);
        assert_eq!(figures.sessions_written, CALLERS as u64);
        assert_eq!(ids_per_token(&figures), [("tok-ada", CALLERS)]);
        assert_eq!(figures.errors, 0);
    });
}

#[test]
fn with_the_group_one_token_gets_one_verification_one_session_one_id() {
    with_deadline("grouped_one_token", || {
        let (proxy, calls, figures) = gated_burst(true, &["tok-ada"]);
        assert_eq!(figures.verifications, 1);
        assert_eq!(figures.sessions_written, 1);
        assert_eq!(ids_per_token(&figures), [("tok-ada", 1)]);
        let session = calls[0].result.clone().unwrap();
        assert_eq!(session.user, "user0");

        // Nothing is cached by the group: the next burst's flight finds the
        // session in the store, and still nobody verifies again.
        let again = sessions::burst(&proxy, &callers(&["tok-ada"]))
            .unwrap()
            .calls;
        let figures = Figures::of(&proxy, &again);
        assert_eq!((figures.verifications, figures.sessions_written), (1, 1));
        assert!(
            again
                .iter()
                .all(|c| c.result.as_ref().ok() == Some(&session))
        );
        assert_eq!(proxy.group.as_ref().unwrap().in_flight(), 0);
    });
}

#[test]
fn without_the_group_distinct_tokens_duplicate_and_errors_are_separate() {
    with_deadline("direct_tokens", || {
        let (_proxy, calls, figures) = gated_burst(false, &MIXED);
        assert_eq!(figures.verifications, CALLERS as u64);
        assert_eq!(figures.sessions_written, (CALLERS - PER_TOKEN) as u64);
        assert_eq!(
            ids_per_token(&figures),
            VALID.map(|t| (t, PER_TOKEN)),
            "several ids per token"
        );
        assert_eq!(
            (figures.errors, figures.error_instances),
            (PER_TOKEN, PER_TOKEN)
        );
        assert_expired_for_all(&calls);
    });
}

#[test]
fn with_the_group_distinct_tokens_get_one_session_each_and_share_one_error() {
    with_deadline("grouped_tokens", || {
        let (proxy, calls, figures) = gated_burst(true, &MIXED);
        assert_eq!(figures.verifications, MIXED.len() as u64);
        assert_eq!(figures.sessions_written, VALID.len() as u64);
        assert_eq!(ids_per_token(&figures), VALID.map(|t| (t, 1)));
        assert_eq!(
            (figures.errors, figures.error_instances),
            (PER_TOKEN, 1),
            "one error instance, shared by every caller of the expired token"
        );
        assert_expired_for_all(&calls);
        let stats = proxy.group.as_ref().unwrap().stats();
        assert_eq!(stats.leader_runs, MIXED.len() as u64);
        assert_eq!(stats.followers_served, (CALLERS - MIXED.len()) as u64);
    });
}

#[test]
fn an_unknown_token_is_an_error_and_writes_nothing() {
    with_deadline("unknown_token", || {
        let proxy = Proxy {
            store: Store::open().unwrap(),
            provider: Provider::new(Duration::ZERO),
            group: Some(Arc::new(Group::new())),
        };
        let result = proxy.get_or_create("tok-nobody");
        assert!(matches!(
            result.as_ref().map_err(|e| &**e),
            Err(AuthError::UnknownToken)
        ));
        assert_eq!(proxy.store.written(), 0);
    });
}
