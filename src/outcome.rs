//! What a caller learns besides the value: the [`Role`] it played and,
//! with it, the flight's [`Outcome`].

/// Which part a caller played in its flight.
///
/// # Examples
///
/// ```
/// use sync_singleflight::{Group, Role};
///
/// let group: Group<u8, u8> = Group::new();
/// assert_eq!(group.work_with_role(&1, || 1).role, Role::Leader);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// This caller ran the function.
    Leader,
    /// This caller waited for another thread's run and got a clone of its value.
    Follower,
}

/// A value together with how it was obtained; returned by
/// [`Group::work_with_role`](crate::Group::work_with_role).
///
/// This is the counterpart of Go's `shared` flag, split into the two facts
/// it mixes: whether *this* caller ran the function, and how many callers
/// the run served.
///
/// # Examples
///
/// ```
/// use sync_singleflight::{Group, Outcome, Role};
///
/// let group: Group<u8, &str> = Group::new();
/// let Outcome { value, role, callers } = group.work_with_role(&1, || "one");
/// assert_eq!((value, role, callers), ("one", Role::Leader, 1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<V> {
    /// The flight's value.
    pub value: V,
    /// Whether this caller ran the function.
    pub role: Role,
    /// How many callers this flight's value was handed to: the leader plus
    /// every follower still waiting when it landed. Fixed at that moment, so
    /// the leader and every follower report the same figure. Followers that
    /// timed out before are not counted; a follower whose own `V::clone`
    /// panics afterwards is (it was handed the value, and
    /// [`Stats::follower_own_panics`](crate::Stats::follower_own_panics) counts what happened next).
    pub callers: usize,
}

impl<V> Outcome<V> {
    /// Whether the value went to more than one caller: Go's `shared`.
    ///
    /// # Examples
    ///
    /// ```
    /// use sync_singleflight::Group;
    ///
    /// let group: Group<u8, u8> = Group::new();
    /// assert!(!group.work_with_role(&1, || 1).is_shared());
    /// ```
    pub fn is_shared(&self) -> bool {
        self.callers > 1
    }
}
