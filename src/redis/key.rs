//! How a local key becomes Redis key names: [`KeyBytes`] and the layout
//! `sf:<ns>:v<ver>:{k:<key>}:lease` / `…:done:<token>`.

use std::fmt::Write as _;
use std::io::Write as _;

/// Turns a key into the bytes that name it in Redis.
///
/// The encoding must be injective within one key type: two different keys
/// must never give the same bytes, or their flights would be merged. Keys
/// are never hashed, so there are no collisions to fear. Implemented for
/// strings, byte strings, integers, `char`, `bool` and tuples of two or
/// three of these (each part length-prefixed).
///
/// # Examples
///
/// ```
/// use sync_singleflight::redis::KeyBytes;
///
/// struct UserId(u64);
///
/// impl KeyBytes for UserId {
///     fn key_bytes(&self, out: &mut Vec<u8>) {
///         self.0.key_bytes(out)
///     }
/// }
///
/// let mut out = Vec::new();
/// UserId(42).key_bytes(&mut out);
/// assert_eq!(out, b"42");
/// ```
pub trait KeyBytes {
    /// Appends this key's bytes to `out`.
    fn key_bytes(&self, out: &mut Vec<u8>);
}

impl<T: KeyBytes + ?Sized> KeyBytes for &T {
    fn key_bytes(&self, out: &mut Vec<u8>) {
        (**self).key_bytes(out)
    }
}

impl KeyBytes for str {
    fn key_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes())
    }
}

impl KeyBytes for String {
    fn key_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes())
    }
}

impl KeyBytes for [u8] {
    fn key_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self)
    }
}

impl KeyBytes for Vec<u8> {
    fn key_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self)
    }
}

macro_rules! display_keys {
    ($($t:ty),*) => {$(
        impl KeyBytes for $t {
            fn key_bytes(&self, out: &mut Vec<u8>) {
                write!(out, "{self}").expect("writing to a Vec cannot fail")
            }
        }
    )*};
}
display_keys!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, char, bool
);

macro_rules! tuple_keys {
    ($($name:ident),*) => {
        impl<$($name: KeyBytes),*> KeyBytes for ($($name,)*) {
            #[allow(non_snake_case)]
            fn key_bytes(&self, out: &mut Vec<u8>) {
                let ($($name,)*) = self;
                // Netstring-style `<len>:<bytes>` per part keeps ("a:b", "c")
                // and ("a", "b:c") apart.
                $(
                    let mut part = Vec::new();
                    $name.key_bytes(&mut part);
                    write!(out, "{}:", part.len()).expect("writing to a Vec cannot fail");
                    out.extend_from_slice(&part);
                )*
            }
        }
    };
}
tuple_keys!(A, B);
tuple_keys!(A, B, C);

/// Short printable keys stay readable in `redis-cli`; anything else goes
/// in as hex. The `k:`/`x:` marker keeps the two forms from colliding.
const MAX_RAW: usize = 128;

/// The Redis key names of one logical key. All share the `{…}` hash tag, so
/// the scripts touch a single slot and stay valid on Redis Cluster.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// `sf:<ns>:v<ver>:{k:<key>}:` — everything but the suffix.
    base: String,
}

impl Keys {
    pub(super) fn new(prefix: &str, key: &(impl KeyBytes + ?Sized)) -> Self {
        let mut bytes = Vec::new();
        key.key_bytes(&mut bytes);
        let raw = bytes.len() <= MAX_RAW
            && bytes
                .iter()
                .all(|&b| b.is_ascii_graphic() && b != b'{' && b != b'}');
        let mut base = String::with_capacity(prefix.len() + 2 * bytes.len() + 8);
        base.push_str(prefix);
        if raw {
            base.push_str("{k:");
            base.extend(bytes.iter().map(|&b| char::from(b)));
        } else {
            base.push_str("{x:");
            for b in &bytes {
                let _ = write!(base, "{b:02x}");
            }
        }
        base.push_str("}:");
        Keys { base }
    }

    pub(super) fn lease(&self) -> String {
        format!("{}lease", self.base)
    }

    /// The key's fencing-token counter.
    pub(super) fn fence(&self) -> String {
        format!("{}fence", self.base)
    }

    /// The result stream of the flight led under `token`.
    pub(super) fn done(&self, token: &str) -> String {
        format!("{}done:{token}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_keys_stay_raw_and_others_go_hex() {
        assert_eq!(
            Keys::new("sf:u:v1:", "user:42").lease(),
            "sf:u:v1:{k:user:42}:lease"
        );
        assert_eq!(
            Keys::new("sf:u:v1:", "a b").lease(),
            "sf:u:v1:{x:612062}:lease"
        );
        assert_eq!(
            Keys::new("sf:u:v1:", "{").done("t"),
            "sf:u:v1:{x:7b}:done:t"
        );
        assert_eq!(Keys::new("sf:u:v1:", &7u64).lease(), "sf:u:v1:{k:7}:lease");
    }

    #[test]
    fn tuple_parts_cannot_be_confused() {
        let a = Keys::new("p:", &("a:b", "c")).lease();
        let b = Keys::new("p:", &("a", "b:c")).lease();
        assert_ne!(a, b);
        assert_eq!(a, "p:{k:3:a:b1:c}:lease");
    }
}
