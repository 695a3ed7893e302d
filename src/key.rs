//! How a caller's key becomes the key a flight stores.
//!
//! A call looks its flight up by a borrowed form `&Q`, as `HashMap::get`
//! does, and only a leader needs an owned key. [`ToKey`] is that step. It
//! replaces `ToOwned<Owned = K>`, which cannot express a `Group<Arc<str>, V>`
//! looked up by `&str` (`str`'s owned form is `String`, not `Arc<str>`).

use std::borrow::Borrow;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

/// Makes a group's owned key `K` from the borrowed form a caller passes.
///
/// Every `Clone` type is its own borrowed form (`&K` makes a `K`), and the
/// standard unsized types make each of their usual owners: `&str` makes a
/// `String`, `Arc<str>`, `Rc<str>` or `Box<str>`; `&[T]` a `Vec<T>`,
/// `Arc<[T]>` or `Box<[T]>`; likewise `Path`, `OsStr` and `CStr`. Implement
/// it for your own borrowed key types.
///
/// # Examples
///
/// A group keyed by `Arc<str>`, looked up by `&str`:
///
/// ```
/// use std::sync::Arc;
/// use sync_singleflight::Group;
///
/// let group: Group<Arc<str>, usize> = Group::new();
/// assert_eq!(group.work("hello", || 5), 5);
/// ```
///
/// Your own borrowed form:
///
/// ```
/// use std::borrow::Borrow;
/// use sync_singleflight::{Group, ToKey};
///
/// #[derive(Hash, PartialEq, Eq)]
/// struct UserId(u64);
/// #[derive(Hash, PartialEq, Eq)]
/// struct Key { id: UserId }
/// impl Borrow<UserId> for Key {
///     fn borrow(&self) -> &UserId { &self.id }
/// }
/// impl ToKey<Key> for UserId {
///     fn to_key(&self) -> Key { Key { id: UserId(self.0) } }
/// }
///
/// let group: Group<Key, u64> = Group::new();
/// assert_eq!(group.work(&UserId(7), || 7), 7);
/// ```
pub trait ToKey<K> {
    /// A new owned key equal to `self`.
    fn to_key(&self) -> K;

    /// Overwrites `target` with a key equal to `self`, reusing its
    /// allocation where the type can. The group calls this only for key
    /// types whose `Drop` runs no user code (`String`, `Vec<u8>`, `PathBuf`,
    /// `OsString`, `CString`), to reuse the buffer of a landed flight's key.
    fn clone_into_key(&self, target: &mut K) {
        *target = self.to_key();
    }
}

impl<T: Clone> ToKey<T> for T {
    #[inline]
    fn to_key(&self) -> T {
        self.clone()
    }

    #[inline]
    fn clone_into_key(&self, target: &mut T) {
        target.clone_from(self);
    }
}

/// `ToOwned` and `From` impls for unsized borrowed forms, `owned` being the
/// one whose `clone_into` reuses a buffer.
macro_rules! unsized_keys {
    ($borrowed:ty => $owned:ty $(, $other:ty)*) => {
        impl ToKey<$owned> for $borrowed {
            #[inline]
            fn to_key(&self) -> $owned {
                self.to_owned()
            }

            #[inline]
            fn clone_into_key(&self, target: &mut $owned) {
                self.clone_into(target);
            }
        }
        $(
            impl ToKey<$other> for $borrowed {
                #[inline]
                fn to_key(&self) -> $other {
                    <$other>::from(self)
                }
            }
        )*
    };
}

unsized_keys!(str => String, Arc<str>, Rc<str>, Box<str>);
unsized_keys!(Path => PathBuf, Arc<Path>, Rc<Path>, Box<Path>);
unsized_keys!(OsStr => OsString, Arc<OsStr>, Rc<OsStr>, Box<OsStr>);
unsized_keys!(CStr => CString, Arc<CStr>, Rc<CStr>, Box<CStr>);

impl<T: Clone> ToKey<Vec<T>> for [T] {
    fn to_key(&self) -> Vec<T> {
        self.to_vec()
    }

    fn clone_into_key(&self, target: &mut Vec<T>) {
        self.clone_into(target);
    }
}

impl<T: Clone> ToKey<Arc<[T]>> for [T] {
    fn to_key(&self) -> Arc<[T]> {
        Arc::from(self)
    }
}

impl<T: Clone> ToKey<Box<[T]>> for [T] {
    fn to_key(&self) -> Box<[T]> {
        Box::from(self)
    }
}

/// Whether a shard may keep a landed flight (and its key) as a vacant slot
/// and overwrite that key under its lock: `K` has no drop glue at all
/// (`u64`, tuples of integers: overwriting runs no code and the slot holds
/// nothing), or is a standard buffer type whose `clone_into` reuses its
/// allocation and whose `Drop` runs no user code. Any other key is dropped
/// by its own leader, outside every lock, so that a key's `Drop` never runs
/// in an unrelated caller.
pub(crate) fn is_recyclable<K>() -> bool {
    if !std::mem::needs_drop::<K>() {
        return true;
    }
    let name = std::any::type_name::<K>();
    [
        std::any::type_name::<String>(),
        std::any::type_name::<Vec<u8>>(),
        std::any::type_name::<PathBuf>(),
        std::any::type_name::<OsString>(),
        std::any::type_name::<CString>(),
    ]
    .contains(&name)
}

/// A caller's key as a call carries it: borrowed (`work`) or owned
/// (`work_owned`).
pub(crate) trait KeyArg<K>: Sized {
    type Lookup: ?Sized + Hash;

    /// What the key is hashed as.
    fn lookup(&self) -> &Self::Lookup;

    /// Whether a flight's key equals this one (the key's `Eq`: user code).
    fn matches(&self, key: &K) -> bool;

    /// The key for a new flight.
    fn into_key(self) -> K;

    /// The key for a new flight, written over a vacant slot's key so its
    /// buffer is reused. Only for [`is_recyclable`] key types: the old
    /// key's `Drop` (for an owned key) runs no user code.
    fn write_into(self, target: &mut K);
}

impl<K, Q> KeyArg<K> for &Q
where
    K: Borrow<Q>,
    Q: ?Sized + Hash + Eq + ToKey<K>,
{
    type Lookup = Q;

    #[inline]
    fn lookup(&self) -> &Q {
        self
    }

    #[inline]
    fn matches(&self, key: &K) -> bool {
        key.borrow() == *self
    }

    #[inline]
    fn into_key(self) -> K {
        self.to_key()
    }

    #[inline]
    fn write_into(self, target: &mut K) {
        self.clone_into_key(target);
    }
}

/// A key the caller hands over, so a leader stores it without a copy.
pub(crate) struct Owned<K>(pub(crate) K);

impl<K: Hash + Eq> KeyArg<K> for Owned<K> {
    type Lookup = K;

    #[inline]
    fn lookup(&self) -> &K {
        &self.0
    }

    #[inline]
    fn matches(&self, key: &K) -> bool {
        *key == self.0
    }

    #[inline]
    fn into_key(self) -> K {
        self.0
    }

    #[inline]
    fn write_into(self, target: &mut K) {
        *target = self.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_std_buffers_and_types_without_drop_glue_are_recycled() {
        assert!(is_recyclable::<String>());
        assert!(is_recyclable::<Vec<u8>>());
        assert!(is_recyclable::<PathBuf>());
        assert!(is_recyclable::<u64>());
        assert!(is_recyclable::<(u64, [u8; 16])>());
        assert!(!is_recyclable::<(String, u64)>());
        assert!(!is_recyclable::<Arc<str>>());
        mod shadow {
            // Drop glue, so only its path could make it recyclable.
            #[derive(Clone)]
            pub struct String(#[allow(dead_code)] pub std::string::String);
        }
        assert!(
            !is_recyclable::<shadow::String>(),
            "matched by full path, not by name"
        );
    }

    #[test]
    fn borrowed_forms_make_their_owners() {
        let arc: Arc<str> = "k".to_key();
        let boxed: Box<[u8]> = [1u8, 2][..].to_key();
        let mut spare = String::with_capacity(64);
        "reused".clone_into_key(&mut spare);
        assert_eq!(
            (&*arc, &*boxed, spare.as_str()),
            ("k", &[1u8, 2][..], "reused")
        );
        assert!(spare.capacity() >= 64, "the buffer was reused");
    }
}
