//! The circuit breaker in front of Redis, with a half-open state: after
//! the cooldown a single caller probes while the others keep falling back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed probes double the cooldown, up to this many times the configured
/// one: a server that stays down is probed less and less often.
const MAX_ESCALATION: u32 = 8;

/// Consecutive-failure breaker.
///
/// - **Closed**: every call tries Redis; `threshold` failures in a row
///   open it for `cooldown`.
/// - **Open**: calls skip Redis. When the cooldown ends, the next caller
///   becomes the single probe (half-open).
/// - **Half-open**: only the probe talks to Redis. Its success closes the
///   breaker; its failure reopens it for twice the previous cooldown (at
///   most [`MAX_ESCALATION`] × `cooldown`). A probe that reports nothing
///   within `probe_timeout` (its call was lost on some unusual path) lets
///   the next caller probe.
pub(super) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    probe_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        cooldown: Duration,
    },
    HalfOpen {
        probe_until: Instant,
        cooldown: Duration,
    },
}

impl Breaker {
    pub(super) fn new(threshold: u32, cooldown: Duration, probe_timeout: Duration) -> Self {
        Breaker {
            threshold,
            cooldown,
            probe_timeout,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this caller may try Redis now (as the probe, when the
    /// breaker is half-open).
    pub(super) fn allows(&self) -> bool {
        let mut state = self.state();
        let now = Instant::now();
        match *state {
            State::Closed { .. } => true,
            State::Open { until, cooldown }
            | State::HalfOpen {
                probe_until: until,
                cooldown,
            } if now >= until => {
                *state = State::HalfOpen {
                    probe_until: now + self.probe_timeout,
                    cooldown,
                };
                true
            }
            State::Open { .. } | State::HalfOpen { .. } => false,
        }
    }

    /// Any successful exchange closes the breaker.
    pub(super) fn success(&self) {
        let mut state = self.state();
        if *state != (State::Closed { failures: 0 }) {
            *state = State::Closed { failures: 0 };
        }
    }

    /// Records a failure; returns true when it opened (or reopened) the
    /// breaker.
    pub(super) fn failure(&self) -> bool {
        let mut state = self.state();
        let now = Instant::now();
        match *state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                *state = if failures >= self.threshold {
                    State::Open {
                        until: now + self.cooldown,
                        cooldown: self.cooldown,
                    }
                } else {
                    State::Closed { failures }
                };
                failures >= self.threshold
            }
            State::HalfOpen { cooldown, .. } => {
                let cooldown = (cooldown * 2).min(self.cooldown * MAX_ESCALATION);
                *state = State::Open {
                    until: now + cooldown,
                    cooldown,
                };
                true
            }
            // A call that started before the breaker opened.
            State::Open { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_allowed(breaker: &Breaker) -> Duration {
        let start = Instant::now();
        while !breaker.allows() {
            assert!(start.elapsed() < Duration::from_secs(2));
            std::thread::sleep(Duration::from_millis(2));
        }
        start.elapsed()
    }

    #[test]
    fn opens_after_threshold_then_lets_one_probe_through() {
        let breaker = Breaker::new(2, Duration::from_millis(40), Duration::from_secs(5));
        assert!(breaker.allows());
        assert!(!breaker.failure());
        assert!(breaker.allows());
        assert!(breaker.failure());
        assert!(!breaker.allows());
        assert!(!breaker.failure(), "already open: not a new opening");
        wait_allowed(&breaker);
        // Half-open: the others keep falling back until the probe answers.
        for _ in 0..10 {
            assert!(!breaker.allows());
        }
        breaker.success();
        assert!(breaker.allows() && breaker.allows());
        assert!(!breaker.failure(), "the count restarted at zero");
    }

    #[test]
    fn a_failed_probe_reopens_with_a_longer_cooldown() {
        let breaker = Breaker::new(1, Duration::from_millis(30), Duration::from_secs(5));
        assert!(breaker.failure());
        wait_allowed(&breaker);
        assert!(breaker.failure(), "the probe failed: reopened");
        let second = wait_allowed(&breaker);
        assert!(second >= Duration::from_millis(55), "{second:?}");
        breaker.success();
        assert!(breaker.failure());
        let reset = wait_allowed(&breaker);
        assert!(reset < Duration::from_millis(55), "{reset:?}");
    }

    #[test]
    fn a_silent_probe_is_replaced_after_its_timeout() {
        let breaker = Breaker::new(1, Duration::from_millis(10), Duration::from_millis(30));
        assert!(breaker.failure());
        wait_allowed(&breaker);
        assert!(!breaker.allows());
        let replaced = wait_allowed(&breaker);
        assert!(replaced >= Duration::from_millis(25), "{replaced:?}");
    }
}
