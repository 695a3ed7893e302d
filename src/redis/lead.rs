//! Leading a flight across processes: run `f` under the lease while the
//! renewal thread keeps it, then publish the result to the flight's stream
//! (or "abandon" if `f` panicked).

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::backend::{Backend, By, millis};
use super::codec;
use super::group::Shared;
use super::key::Keys;
use super::lease::Lease;
use super::outcome::Counters;
use super::renew::Held;
use super::reply::{CallError, LeaseState, Status};
use super::scripts::Published;

/// A flight this process has just won the lease for.
pub(super) struct Won<'a> {
    pub(super) keys: &'a Keys,
    pub(super) lease_key: &'a str,
    pub(super) token: &'a str,
    /// The fencing token the acquire handed out, if one was asked for.
    pub(super) fence: Option<u64>,
    /// When the acquire that set the lease was sent.
    pub(super) sent: Instant,
}

impl Shared {
    /// Runs `f` holding the lease, renewing it, then publishes the result.
    /// No connection is held while `f` runs, so a process leading many
    /// flights stays within `max_connections`; the publish takes a pooled
    /// one (and redials once if it died meanwhile).
    pub(super) fn lead<V: Serialize, F: FnOnce(&Lease) -> V>(&self, won: Won<'_>, f: F) -> V {
        let b = &*self.backend;
        let held = Arc::new(Held::new(won.sent, b.config.lease));
        let renewal =
            self.renewer
                .start(&self.backend, won.lease_key, won.token, Arc::clone(&held));
        let lease = Lease::new(won.fence, Some(held));
        let done_key = won.keys.done(won.token);
        let mut flight = Publisher {
            backend: b,
            published: false,
            flight: Published {
                lease_key: won.lease_key,
                done_key: &done_key,
                token: won.token,
                ttl_ms: millis(b.config.result_ttl),
                leader: &self.node,
            },
        };
        let value = f(&lease);
        let (status, body) = match codec::encode(&value) {
            Ok(body) if body.len() <= b.config.max_payload => (Status::Value, body),
            Ok(_) => (Status::TooLarge, Vec::new()),
            Err(_) => (Status::Unencodable, Vec::new()),
        };
        let mut lost = renewal.stop();
        match flight.publish(status, &body) {
            Ok(state) => lost |= state == LeaseState::Lost,
            Err(_) => Counters::bump(&b.counters.publish_failures),
        }
        if lost {
            Counters::bump(&b.counters.lost_leases);
        }
        value
    }
}

/// Publishes a flight's end. Dropped without having published (the leader
/// panicked), it publishes "abandon" so followers contend again at once
/// instead of waiting out the lease, and releases the lease.
struct Publisher<'a> {
    backend: &'a Backend,
    published: bool,
    flight: Published<'a>,
}

impl Publisher<'_> {
    fn publish(&mut self, status: Status, body: &[u8]) -> Result<LeaseState, CallError> {
        self.published = true;
        let b = self.backend;
        b.exchange(By::Caller, |c| {
            b.scripts.publish(c, &self.flight, status, body)
        })
    }
}

impl Drop for Publisher<'_> {
    fn drop(&mut self) {
        if !self.published {
            // Nothing to do with a failure here: followers fall back to the
            // lease expiry, which bounds their wait anyway.
            let _ = self.publish(Status::Abandoned, &[]);
        }
    }
}
