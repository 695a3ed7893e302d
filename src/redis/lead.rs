//! Leading a flight across processes: run `f` under the lease while the
//! renewal thread keeps it, then publish the result to the flight's stream
//! (or "abandon" if `f` panicked).

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::codec;
use super::group::{Shared, millis};
use super::key::Keys;
use super::lease::Lease;
use super::outcome::Counters;
use super::pool::Pooled;
use super::renew::{self, Held};
use super::scripts::{CallError, LeaseState, Published, Status};

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
    /// Runs `f` holding the lease, renewing it, and publishes the result on
    /// the connection already held: a fresh checkout right after Redis died
    /// would make the leader's own callers wait for a reconnect.
    pub(super) fn lead<V: Serialize, F: FnOnce(&Lease) -> V>(
        self: &Arc<Self>,
        con: Pooled<'_>,
        won: Won<'_>,
        f: F,
    ) -> V {
        let held = Arc::new(Held::new(won.sent, self.config.lease));
        let renewal = renew::start(self, won.lease_key, won.token, Arc::clone(&held));
        let lease = Lease::new(won.fence, Some(held));
        let done_key = won.keys.done(won.token);
        let mut flight = Publisher {
            shared: self,
            con: Some(con),
            published: Published {
                lease_key: won.lease_key,
                done_key: &done_key,
                token: won.token,
                ttl_ms: millis(self.config.result_ttl),
                leader: &self.node,
            },
        };
        let value = f(&lease);
        let (status, body) = match codec::encode(&value) {
            Ok(body) if body.len() <= self.config.max_payload => (Status::Value, body),
            Ok(_) => (Status::TooLarge, Vec::new()),
            Err(_) => (Status::Unencodable, Vec::new()),
        };
        let mut lost = renewal.stop();
        match flight.publish(status, &body) {
            Ok(state) => lost |= state == LeaseState::Lost,
            Err(e) => {
                Counters::bump(&self.counters.publish_failures);
                let _ = self.failed(e);
            }
        }
        if lost {
            Counters::bump(&self.counters.lost_leases);
        }
        value
    }
}

/// Publishes a flight's end. Dropped without having published (the leader
/// panicked), it publishes "abandon" so followers contend again at once
/// instead of waiting out the lease, and releases the lease.
struct Publisher<'a> {
    shared: &'a Shared,
    con: Option<Pooled<'a>>,
    published: Published<'a>,
}

impl Publisher<'_> {
    fn publish(&mut self, status: Status, body: &[u8]) -> Result<LeaseState, CallError> {
        let mut con = self.con.take().expect("a flight publishes once");
        let s = self.shared;
        con.call(|c| s.scripts.publish(c, &self.published, status, body))
    }
}

impl Drop for Publisher<'_> {
    fn drop(&mut self) {
        if self.con.is_some() {
            // Nothing to do with a failure here: followers fall back to the
            // lease expiry, which bounds their wait anyway.
            let _ = self.publish(Status::Abandoned, &[]);
        }
    }
}
