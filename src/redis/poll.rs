//! Following a flight on a Redis Cluster: the shared readers' `XREAD` over
//! many result streams is refused there (`CROSSSLOT`: each key has its own
//! hash tag, so its own slot), so a follower polls its flight's stream with
//! short reads, backing off from 2 ms to 50 ms. A result is thus seen at
//! most 50 ms after it lands (plus a round trip), and no connection is
//! held between polls, so `max_connections` still bounds the process.

use std::thread;
use std::time::{Duration, Instant};

use super::Error;
use super::backend::{Backend, By};
use super::reply::Entry;
use super::scripts;

/// The first pause between polls, doubled after each empty one.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
/// The longest pause between polls.
pub(super) const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Polls `done` until it has an entry or `block` has passed (`Ok(None)`).
pub(super) fn follow(
    backend: &Backend,
    done: &str,
    block: Duration,
) -> Result<Option<Entry>, Error> {
    let deadline = Instant::now() + block;
    let mut pause = FIRST_PAUSE;
    loop {
        match backend.exchange(By::Caller, |c| scripts::first_entry(c, done)) {
            Ok(Some(entry)) => return Ok(Some(entry)),
            Ok(None) => {}
            Err(e) => return Err(backend.error(e)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        thread::sleep(pause.min(left));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}
