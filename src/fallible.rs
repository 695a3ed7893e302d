//! [`Group::try_work`] and [`Group::try_work_within`]: the entry points for
//! a function that returns `Result`, whose error is shared through an `Arc`
//! and counts as a failed flight for the [`ErrorPolicy`](crate::ErrorPolicy).

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc as StdArc;
use std::time::Duration;

use crate::error::{TryError, WaitError};
use crate::group::{Group, Overflow};
use crate::key::ToKey;
use crate::outcome::Outcome;

impl<K, T, E, S> Group<K, Result<T, StdArc<E>>, S>
where
    K: Hash + Eq,
    S: BuildHasher,
    T: Clone,
{
    /// Like [`work`](Group::work) for a fallible function: the error is
    /// wrapped in an `Arc` so every caller of the flight can share it, the
    /// way moka's `try_get_with` does. The group's value type is
    /// `Result<T, Arc<E>>`; `E` need not be `Clone`.
    ///
    /// An `Err` is a failed flight for the
    /// [`ErrorPolicy`](crate::ErrorPolicy): shared with every follower by
    /// default, or, under `Retry`, followers elect one of themselves to run
    /// again.
    ///
    /// # Panics
    ///
    /// Exactly as [`work`](Group::work).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sync_singleflight::Group;
    ///
    /// #[derive(Debug)]
    /// struct DbError(String); // not Clone
    ///
    /// let users: Group<u64, Result<String, Arc<DbError>>> = Group::new();
    /// let name = users.try_work(&1, || Ok::<_, DbError>("ada".to_string()));
    /// assert_eq!(name.unwrap(), "ada");
    /// let missing = users.try_work(&2, || Err(DbError("no row".into())));
    /// assert_eq!(missing.unwrap_err().0, "no row");
    /// ```
    pub fn try_work<Q, F>(&self, key: &Q, f: F) -> Result<T, StdArc<E>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K>,
        F: FnOnce() -> Result<T, E>,
    {
        self.run_fallible(key, None, Overflow::RunOwn, f)
            .unwrap_or_else(|_| unreachable!("a call without a budget never fails to wait"))
            .value
    }

    /// [`try_work`](Group::try_work) with a wait budget, the role and the
    /// caller count, flattened into one `Result`: the function's error,
    /// a timeout and an overload are all [`TryError`] variants.
    ///
    /// # Panics
    ///
    /// Exactly as [`work`](Group::work).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use sync_singleflight::{Group, Role, TryError};
    ///
    /// let group: Group<u64, Result<u32, Arc<std::io::Error>>> = Group::new();
    /// let outcome = group
    ///     .try_work_within(&1, Duration::from_millis(100), || Ok::<_, std::io::Error>(7))
    ///     .unwrap();
    /// assert_eq!((outcome.value, outcome.role, outcome.callers), (7, Role::Leader, 1));
    /// ```
    pub fn try_work_within<Q, F>(
        &self,
        key: &Q,
        budget: Duration,
        f: F,
    ) -> Result<Outcome<T>, TryError<E>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K>,
        F: FnOnce() -> Result<T, E>,
    {
        let outcome = self.run_fallible(key, Some(budget), Overflow::Refuse, f)?;
        match outcome.value {
            Ok(value) => Ok(Outcome {
                value,
                role: outcome.role,
                callers: outcome.callers,
            }),
            Err(error) => Err(TryError::Failed(error)),
        }
    }

    /// A fallible function's run: its error is wrapped for sharing, and an
    /// `Err` is a failed flight for the error policy.
    fn run_fallible<Q, F>(
        &self,
        key: &Q,
        budget: Option<Duration>,
        overflow: Overflow,
        f: F,
    ) -> Result<Outcome<Result<T, StdArc<E>>>, WaitError>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToKey<K>,
        F: FnOnce() -> Result<T, E>,
    {
        self.run(
            key,
            budget,
            overflow,
            || f().map_err(StdArc::new),
            Result::is_err,
        )
    }
}
