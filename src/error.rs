//! What a caller gets when it does not get the value.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// A follower gave up waiting: [`Group::work_timeout`](crate::Group::work_timeout)
/// returned before the leader finished.
///
/// The flight goes on without this caller; the leader and every other
/// follower still get the value.
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use std::thread;
/// use std::time::Duration;
/// use sync_singleflight::{Group, Timeout};
///
/// let group: Group<String, u32> = Group::new();
/// let group = &group;
/// let (started, is_started) = mpsc::channel();
/// let (release, is_released) = mpsc::channel::<()>();
/// thread::scope(|s| {
///     s.spawn(move || {
///         group.work("slow", || {
///             started.send(()).unwrap();
///             is_released.recv().unwrap();
///             1
///         })
///     });
///     is_started.recv().unwrap();
///     let waited = group.work_timeout("slow", Duration::ZERO, || unreachable!());
///     assert_eq!(waited, Err(Timeout));
///     assert_eq!(Timeout.to_string(), "timed out waiting for the leader of a flight");
///     release.send(()).unwrap();
/// });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeout;

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out waiting for the leader of a flight")
    }
}

impl std::error::Error for Timeout {}

/// Why a follower got no value: returned by
/// [`Group::work_within`](crate::Group::work_within) and by a
/// [`Waiter`](crate::Waiter).
///
/// A leader's panic is not among them: it reaches followers as a panic with
/// a [`LeaderPanicked`](crate::LeaderPanicked) payload, through every entry point alike.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sync_singleflight::{Group, WaitError};
///
/// let group: Group<String, u32> = Group::builder().max_followers(0).build();
/// let outcome = group.work_within("k", Duration::from_millis(10), || 1).unwrap();
/// assert_eq!(outcome.value, 1); // nobody else was running "k": this call led
/// assert_eq!(WaitError::Overloaded.to_string(), "the flight already has the most followers allowed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitError {
    /// The wait budget ran out before the leader finished. The flight goes
    /// on for everyone else.
    Timeout,
    /// The flight already had
    /// [`max_followers`](crate::GroupBuilder::max_followers) waiting, so
    /// this caller did not join it.
    Overloaded,
    /// The flight ended without a value for this waiter: its
    /// [`LeaderGuard`](crate::LeaderGuard) was dropped unfilled and no
    /// follower with a function of its own was there to be elected.
    /// [`join`](crate::Group::join) again to lead or follow the next flight.
    Abandoned,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitError::Timeout => "timed out waiting for the leader of a flight",
            WaitError::Overloaded => "the flight already has the most followers allowed",
            WaitError::Abandoned => "the flight ended without a value for this waiter",
        })
    }
}

impl std::error::Error for WaitError {}

impl From<Timeout> for WaitError {
    fn from(_: Timeout) -> Self {
        WaitError::Timeout
    }
}

/// Why [`Group::try_work_within`](crate::Group::try_work_within) returned
/// no value: the flight's own error, or a reason from [`WaitError`],
/// flattened into one enum.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use sync_singleflight::{Group, TryError};
///
/// let group: Group<u64, Result<String, Arc<std::io::Error>>> = Group::new();
/// let got = group.try_work_within(&1, Duration::from_secs(1), || {
///     Err(std::io::Error::other("db down"))
/// });
/// match got {
///     Err(TryError::Failed(error)) => assert_eq!(error.to_string(), "db down"),
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
///
/// Every [`WaitError`] converts into a `TryError`, so `?` works on a
/// [`Waiter`](crate::Waiter)'s result in a function returning `TryError`:
///
/// ```
/// use sync_singleflight::{TryError, Waiter};
///
/// fn collect(waiter: Waiter<'_, u64, u64>) -> Result<u64, TryError<std::io::Error>> {
///     Ok(waiter.wait()?)
/// }
/// ```
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryError<E> {
    /// The flight's function returned this error (shared by every caller).
    Failed(Arc<E>),
    /// See [`WaitError::Timeout`].
    Timeout,
    /// See [`WaitError::Overloaded`].
    Overloaded,
    /// See [`WaitError::Abandoned`]. `try_work_within` itself never returns
    /// it (a caller with a function of its own is elected to rerun an
    /// abandoned flight instead); it comes from converting a
    /// [`Waiter`](crate::Waiter)'s error with `?`.
    Abandoned,
}

impl<E> Clone for TryError<E> {
    fn clone(&self) -> Self {
        match self {
            TryError::Failed(error) => TryError::Failed(Arc::clone(error)),
            TryError::Timeout => TryError::Timeout,
            TryError::Overloaded => TryError::Overloaded,
            TryError::Abandoned => TryError::Abandoned,
        }
    }
}

impl<E> From<WaitError> for TryError<E> {
    fn from(error: WaitError) -> Self {
        match error {
            WaitError::Timeout => TryError::Timeout,
            WaitError::Overloaded => TryError::Overloaded,
            WaitError::Abandoned => TryError::Abandoned,
        }
    }
}

impl<E: fmt::Display> fmt::Display for TryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryError::Failed(error) => error.fmt(f),
            TryError::Timeout => WaitError::Timeout.fmt(f),
            TryError::Overloaded => WaitError::Overloaded.fmt(f),
            TryError::Abandoned => WaitError::Abandoned.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for TryError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TryError::Failed(error) => Some(&**error),
            _ => None,
        }
    }
}

/// The panic payload every follower of a flight unwinds with when the
/// flight's leader panicked.
///
/// A follower's [`work`](crate::Group::work) call panics through
/// [`std::panic::resume_unwind`] with a `LeaderPanicked` box, so it can be
/// recovered with [`std::panic::catch_unwind`] and
/// [`downcast_ref`](std::any::Any#method.downcast_ref-1). The leader's own thread keeps its
/// original payload.
///
/// # Examples
///
/// ```
/// use std::panic::{self, AssertUnwindSafe};
/// use std::sync::Barrier;
/// use std::thread;
/// use sync_singleflight::{Group, LeaderPanicked};
///
/// let group: Group<u32, u32> = Group::new();
/// let joined = Barrier::new(2);
/// thread::scope(|s| {
///     let leader = s.spawn(|| {
///         panic::catch_unwind(AssertUnwindSafe(|| {
///             group.work(&7, || {
///                 joined.wait(); // a follower is about to join
///                 while group.stats().followers_joined == 0 {
///                     thread::yield_now();
///                 }
///                 panic!("backend exploded")
///             })
///         }))
///     });
///     joined.wait();
///     let follower = panic::catch_unwind(AssertUnwindSafe(|| group.work(&7, || 0)));
///     let payload = follower.unwrap_err();
///     let why = payload.downcast_ref::<LeaderPanicked>().unwrap();
///     assert_eq!(why.message(), Some("backend exploded"));
///     assert!(leader.join().unwrap().is_err());
/// });
/// assert_eq!(group.in_flight(), 0);
/// ```
#[derive(Clone)]
pub struct LeaderPanicked {
    message: Option<Arc<str>>,
}

impl LeaderPanicked {
    /// Keeps the message of a `&str` or `String` payload, as `panic!` makes.
    pub(crate) fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let message = if let Some(text) = payload.downcast_ref::<&'static str>() {
            Some(Arc::from(*text))
        } else {
            payload
                .downcast_ref::<String>()
                .map(|text| Arc::from(text.as_str()))
        };
        LeaderPanicked { message }
    }

    /// For a [`LeaderGuard`](crate::LeaderGuard) dropped while its thread
    /// was unwinding: the payload is not ours to see.
    pub(crate) fn unknown() -> Self {
        LeaderPanicked { message: None }
    }

    /// The leader's panic message, when its payload was a `&str` or a
    /// `String` (what `panic!` produces); `None` for other payloads.
    ///
    /// # Examples
    ///
    /// See [`LeaderPanicked`](crate::LeaderPanicked).
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl fmt::Debug for LeaderPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderPanicked")
            .field("message", &self.message())
            .finish()
    }
}

impl fmt::Display for LeaderPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message() {
            Some(message) => write!(f, "the leader of this flight panicked: {message}"),
            None => f.write_str("the leader of this flight panicked"),
        }
    }
}

impl std::error::Error for LeaderPanicked {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_str_and_string_messages() {
        let from_str = LeaderPanicked::from_payload(&"boom");
        assert_eq!(from_str.message(), Some("boom"));
        let from_string = LeaderPanicked::from_payload(&String::from("bang"));
        assert_eq!(from_string.message(), Some("bang"));
        assert_eq!(
            from_string.to_string(),
            "the leader of this flight panicked: bang"
        );
    }

    #[test]
    fn other_payloads_have_no_message() {
        let other = LeaderPanicked::from_payload(&42_u32);
        assert_eq!(other.message(), None);
        assert_eq!(other.to_string(), "the leader of this flight panicked");
    }

    #[test]
    fn is_send_sync_error() {
        fn assert_traits<T: Send + Sync + std::error::Error + Clone + 'static>() {}
        assert_traits::<LeaderPanicked>();
        assert_traits::<Timeout>();
    }
}
