//! The circuit breaker in front of Redis, with a half-open state: after
//! the cooldown a single caller probes while the others keep falling back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::locks;

/// Failed probes double the cooldown, up to this many times the configured
/// one: a server that stays down is probed less and less often.
const MAX_ESCALATION: u32 = 8;

/// The first cooldown after refused connections (nothing listening: most
/// often a restart in progress). Probing a refusing server costs well
/// under a millisecond, so there is no reason to give up dedup for the
/// whole cooldown; while refusals go on it doubles up to the configured
/// cooldown.
pub(super) const QUICK_COOLDOWN: Duration = Duration::from_millis(100);

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
///
/// A *quick* failure (a refused connection) opens it for
/// [`QUICK_COOLDOWN`] only, doubling up to `cooldown` while quick failures
/// go on.
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
        locks::lock(&self.state)
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

    /// Records a failure (`quick`: a refused connection); returns true when
    /// it opened (or reopened) the breaker.
    pub(super) fn failure(&self, quick: bool) -> bool {
        let mut state = self.state();
        let now = Instant::now();
        match *state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                let cooldown = if quick {
                    self.cooldown.min(QUICK_COOLDOWN)
                } else {
                    self.cooldown
                };
                *state = if failures >= self.threshold {
                    State::Open {
                        until: now + cooldown,
                        cooldown,
                    }
                } else {
                    State::Closed { failures }
                };
                failures >= self.threshold
            }
            State::HalfOpen { cooldown, .. } => {
                let cooldown = if quick {
                    (cooldown * 2).min(self.cooldown)
                } else {
                    (cooldown * 2).clamp(self.cooldown, self.cooldown * MAX_ESCALATION)
                };
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

    /// The cooldown the breaker is open (or half-open) for: read from the
    /// state, so no assertion depends on how fast this machine is.
    fn cooldown(breaker: &Breaker) -> Option<Duration> {
        match *breaker.state() {
            State::Closed { .. } => None,
            State::Open { cooldown, .. } | State::HalfOpen { cooldown, .. } => Some(cooldown),
        }
    }

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
        assert!(!breaker.failure(false));
        assert!(breaker.allows());
        assert!(breaker.failure(false));
        assert!(!breaker.allows());
        assert!(!breaker.failure(false), "already open: not a new opening");
        wait_allowed(&breaker);
        // Half-open: the others keep falling back until the probe answers.
        for _ in 0..10 {
            assert!(!breaker.allows());
        }
        breaker.success();
        assert!(breaker.allows() && breaker.allows());
        assert!(!breaker.failure(false), "the count restarted at zero");
    }

    #[test]
    fn a_failed_probe_reopens_with_a_longer_cooldown() {
        let breaker = Breaker::new(1, Duration::from_millis(30), Duration::from_secs(5));
        assert!(breaker.failure(false));
        wait_allowed(&breaker);
        assert!(breaker.failure(false), "the probe failed: reopened");
        assert_eq!(cooldown(&breaker), Some(Duration::from_millis(60)));
        let second = wait_allowed(&breaker);
        assert!(second >= Duration::from_millis(55), "{second:?}");
        breaker.success();
        assert_eq!(cooldown(&breaker), None);
        assert!(breaker.failure(false));
        assert_eq!(
            cooldown(&breaker),
            Some(Duration::from_millis(30)),
            "a success resets the escalation"
        );
    }

    #[test]
    fn a_silent_probe_is_replaced_after_its_timeout() {
        let breaker = Breaker::new(1, Duration::from_millis(10), Duration::from_millis(30));
        assert!(breaker.failure(false));
        wait_allowed(&breaker);
        assert!(!breaker.allows());
        let replaced = wait_allowed(&breaker);
        assert!(replaced >= Duration::from_millis(25), "{replaced:?}");
    }

    #[test]
    fn refusals_open_it_briefly_then_longer() {
        let breaker = Breaker::new(1, Duration::from_secs(1), Duration::from_secs(5));
        assert!(breaker.failure(true));
        assert_eq!(cooldown(&breaker), Some(QUICK_COOLDOWN));
        wait_allowed(&breaker);
        assert!(breaker.failure(true), "the probe was refused too");
        assert_eq!(cooldown(&breaker), Some(QUICK_COOLDOWN * 2));
        let second = wait_allowed(&breaker);
        assert!(
            second >= QUICK_COOLDOWN * 2 - Duration::from_millis(5),
            "{second:?}"
        );
    }
}
