//! What a group does beyond Go's semantics, chosen once in the builder.

use std::borrow::Cow;
use std::time::Duration;

use crate::observe::Observer;

/// What the followers of a failed flight do. Chosen with
/// [`GroupBuilder::error_policy`](crate::GroupBuilder::error_policy).
///
/// A flight *fails* when its function panics, or when it returns `Err`
/// through [`Group::try_work`](crate::Group::try_work) or
/// [`Group::try_work_within`](crate::Group::try_work_within). (A plain
/// [`work`](crate::Group::work) cannot tell an error from a value, so its
/// values are always shared.)
///
/// | policy | the leader | its followers |
/// |---|---|---|
/// | `Share` (default, Go's) | gets its error, or unwinds with its panic | get the same error, or unwind with [`LeaderPanicked`](crate::LeaderPanicked) |
/// | `Retry { retries }` | gets its error, or unwinds with its panic | **one** of them (the first to wake, among those with a function of their own) is elected and reruns the flight with its own function; the others, and [`Waiter`](crate::Waiter)s, stay on the same flight and get the rerun's result; after `retries` failed reruns in a row the failure is shared as under `Share` |
///
/// A retry never becomes a herd: the flight stays in the table under the
/// same identity while its leader changes, so exactly one follower reruns
/// it, however quickly that rerun finishes, and callers that arrive
/// meanwhile join it. With no follower that has a function (only
/// `Waiter`s), the failure is shared.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sync_singleflight::{ErrorPolicy, Group};
///
/// let group: Group<u64, Result<String, Arc<std::io::Error>>> = Group::builder()
///     .error_policy(ErrorPolicy::Retry { retries: 2 })
///     .build();
/// let name = group.try_work(&1, || Ok::<_, std::io::Error>("ada".to_string()));
/// assert_eq!(name.unwrap(), "ada");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ErrorPolicy {
    /// Every caller of a failed flight gets its failure. Go's behaviour.
    #[default]
    Share,
    /// The followers of a failed flight elect one new leader, at most
    /// `retries` times in a row; then the failure is shared.
    Retry {
        /// How many reruns may follow one failed flight.
        retries: u32,
    },
}

/// The builder's choices, as the call path reads them.
pub(crate) struct Policy {
    pub(crate) max_flight_age: Option<Duration>,
    pub(crate) max_followers: Option<usize>,
    pub(crate) retries: u32,
    /// The group's name, and what the tracing and metrics hooks keep.
    pub(crate) observer: Observer,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_flight_age: None,
            max_followers: None,
            retries: 0,
            observer: Observer::new(Cow::Borrowed("default")),
        }
    }
}
