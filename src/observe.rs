//! What a group tells the ecosystem's own tools: `tracing` spans and events
//! (feature `tracing`) and `metrics` counters and histograms (feature
//! `metrics`), each labelled with the group's name and never with a key,
//! which may carry a token.
//!
//! Without the features every type here is empty and every function a
//! no-op the compiler removes, so the call path is the same as without
//! this module.

use std::borrow::Cow;
#[cfg(feature = "metrics")]
use std::time::Instant;

/// Watches a leader's flight from its start to its landing.
pub(crate) struct LeaderWatch {
    #[cfg(feature = "tracing")]
    _span: tracing::span::EnteredSpan,
    #[cfg(feature = "metrics")]
    started: Instant,
}

/// Times a follower's wait, for the `metrics` feature. It holds no span,
/// so a [`Waiter`](crate::Waiter) can carry it across threads.
pub(crate) struct WaitClock {
    #[cfg(feature = "metrics")]
    started: Instant,
}

/// A follower's span while it waits inside a `work` call (not `Send`, so
/// it is never kept in a `Waiter`).
pub(crate) struct FollowerSpan {
    #[cfg(feature = "tracing")]
    _span: tracing::span::EnteredSpan,
}

/// The metric handles of one group, registered on first use, so a recorder
/// installed after the group was built (but before its first call) counts.
#[cfg(feature = "metrics")]
pub(crate) struct Handles {
    flights: metrics::Counter,
    followers_served: metrics::Counter,
    follower_timeouts: metrics::Counter,
    leader_panics: metrics::Counter,
    follower_panics: metrics::Counter,
    replacements: metrics::Counter,
    retries: metrics::Counter,
    overflows: metrics::Counter,
    leader_run: metrics::Histogram,
    follower_wait: metrics::Histogram,
    callers: metrics::Histogram,
}

/// A group as the tools see it: the name that labels its spans and metrics
/// and, with the `metrics` feature, its metric handles.
pub(crate) struct Observer {
    pub(crate) name: Cow<'static, str>,
    #[cfg(feature = "metrics")]
    handles: once_cell::sync::OnceCell<Handles>,
}

impl Observer {
    pub(crate) fn new(name: Cow<'static, str>) -> Self {
        Observer {
            name,
            #[cfg(feature = "metrics")]
            handles: once_cell::sync::OnceCell::new(),
        }
    }

    #[cfg(feature = "metrics")]
    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| {
            let group = self.name.to_string();
            let counter = |name: &'static str| metrics::counter!(name, "group" => group.clone());
            let histogram =
                |name: &'static str| metrics::histogram!(name, "group" => group.clone());
            Handles {
                flights: counter("singleflight_flights_total"),
                followers_served: counter("singleflight_followers_served_total"),
                follower_timeouts: counter("singleflight_follower_timeouts_total"),
                leader_panics: counter("singleflight_leader_panics_total"),
                follower_panics: counter("singleflight_follower_panics_total"),
                replacements: counter("singleflight_replacements_total"),
                retries: counter("singleflight_retries_total"),
                overflows: counter("singleflight_overflows_total"),
                leader_run: histogram("singleflight_leader_run_seconds"),
                follower_wait: histogram("singleflight_follower_wait_seconds"),
                callers: histogram("singleflight_callers_per_flight"),
            }
        })
    }
}

impl LeaderWatch {
    #[inline]
    #[cfg_attr(
        not(any(feature = "tracing", feature = "metrics")),
        allow(unused_variables)
    )]
    pub(crate) fn start(group: &Observer) -> Self {
        #[cfg(feature = "metrics")]
        group.handles().flights.increment(1);
        LeaderWatch {
            #[cfg(feature = "tracing")]
            _span:
                tracing::debug_span!("singleflight.flight", group = %group.name, role = "leader")
                    .entered(),
            #[cfg(feature = "metrics")]
            started: Instant::now(),
        }
    }

    /// The flight landed with a value for `callers` callers.
    #[inline]
    #[cfg_attr(
        not(any(feature = "tracing", feature = "metrics")),
        allow(unused_variables)
    )]
    pub(crate) fn landed(self, group: &Observer, callers: usize) {
        #[cfg(feature = "metrics")]
        {
            let handles = group.handles();
            handles
                .leader_run
                .record(self.started.elapsed().as_secs_f64());
            handles.callers.record(callers as f64);
        }
        #[cfg(feature = "tracing")]
        tracing::debug!(callers, "flight landed");
    }

    /// The leader's function (or its clone for followers) panicked, or its
    /// guard was dropped while unwinding.
    #[inline]
    #[cfg_attr(
        not(any(feature = "tracing", feature = "metrics")),
        allow(unused_variables)
    )]
    pub(crate) fn panicked(self, group: &Observer) {
        #[cfg(feature = "metrics")]
        {
            let handles = group.handles();
            handles
                .leader_run
                .record(self.started.elapsed().as_secs_f64());
            handles.leader_panics.increment(1);
        }
        #[cfg(feature = "tracing")]
        tracing::warn!("the leader of a flight panicked; its followers are told");
    }

    /// The guard was dropped without a value.
    #[inline]
    pub(crate) fn abandoned(self) {
        #[cfg(feature = "tracing")]
        tracing::debug!("the leader's guard was dropped unfilled");
    }
}

impl FollowerSpan {
    #[inline]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn enter(group: &Observer) -> Self {
        FollowerSpan {
            #[cfg(feature = "tracing")]
            _span:
                tracing::debug_span!("singleflight.flight", group = %group.name, role = "follower")
                    .entered(),
        }
    }
}

impl WaitClock {
    #[inline]
    pub(crate) fn start() -> Self {
        WaitClock {
            #[cfg(feature = "metrics")]
            started: Instant::now(),
        }
    }

    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn served(&self, group: &Observer) {
        #[cfg(feature = "metrics")]
        {
            let handles = group.handles();
            handles.followers_served.increment(1);
            handles
                .follower_wait
                .record(self.started.elapsed().as_secs_f64());
        }
    }

    #[inline]
    #[cfg_attr(
        not(any(feature = "tracing", feature = "metrics")),
        allow(unused_variables)
    )]
    pub(crate) fn timed_out(&self, group: &Observer) {
        #[cfg(feature = "metrics")]
        group.handles().follower_timeouts.increment(1);
        #[cfg(feature = "tracing")]
        tracing::debug!(group = %group.name, "a follower gave up waiting; the flight goes on");
    }

    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn leader_panicked(&self, group: &Observer) {
        #[cfg(feature = "metrics")]
        group.handles().follower_panics.increment(1);
    }
}

/// A flight older than `max_flight_age` was replaced.
#[inline]
#[cfg_attr(
    not(any(feature = "tracing", feature = "metrics")),
    allow(unused_variables)
)]
pub(crate) fn replaced(group: &Observer) {
    #[cfg(feature = "metrics")]
    group.handles().replacements.increment(1);
    #[cfg(feature = "tracing")]
    tracing::warn!(
        group = %group.name,
        "a flight outlived max_flight_age; a replacement flight starts and its followers move over"
    );
}

/// A failed flight's followers were sent to elect a new leader.
#[inline]
#[cfg_attr(
    not(any(feature = "tracing", feature = "metrics")),
    allow(unused_variables)
)]
pub(crate) fn retried(group: &Observer) {
    #[cfg(feature = "metrics")]
    group.handles().retries.increment(1);
    #[cfg(feature = "tracing")]
    tracing::info!(
        group = %group.name,
        "a flight failed; one of its followers is elected to run it again"
    );
}

/// A caller found its flight at `max_followers`.
#[inline]
#[cfg_attr(
    not(any(feature = "tracing", feature = "metrics")),
    allow(unused_variables)
)]
pub(crate) fn overflowed(group: &Observer) {
    #[cfg(feature = "metrics")]
    group.handles().overflows.increment(1);
    #[cfg(feature = "tracing")]
    tracing::debug!(group = %group.name, "a flight is at max_followers; a caller did not join");
}
