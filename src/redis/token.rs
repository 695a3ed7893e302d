//! Flight tokens: how a lease value of ours looks, so that anything else
//! found at a lease key is recognised as foreign at once.

use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every token is this many lowercase hex digits.
const LEN: usize = 32;

/// A flight token: 64 random bits fixed per process, then a counter, so
/// tokens never repeat within a process and collide across processes with
/// probability 2^-64. Unique, not secret.
pub(super) fn new_token() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let now = std::time::SystemTime::now();
        RandomState::new().hash_one((std::process::id(), now))
    });
    format!(
        "{seed:016x}{:016x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether `value` has the shape of a token we write. A lease holding
/// anything else was not set by this crate.
pub(super) fn is_token(value: &str) -> bool {
    value.len() == LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why a lease holder is not a flight of this crate, if it is not: a
/// value not in our token format, a lease without a TTL (we always set
/// one), or a flight that already ended in "abandon".
pub(super) fn foreign_lease(
    holder: &str,
    pttl_ms: i64,
    abandoned: &[String],
) -> Result<(), String> {
    if !is_token(holder) {
        return Err(format!("the lease holds {holder:?}, not a token of ours"));
    }
    if pttl_ms < 0 {
        return Err(format!(
            "the lease {holder} has no TTL; ours always have one"
        ));
    }
    if abandoned.iter().any(|t| t == holder) {
        return Err(format!(
            "the lease {holder} is still held after its flight was abandoned"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_tokens_have_our_shape_and_others_do_not() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(is_token(&a) && is_token(&b));
        for foreign in ["", "locked", "1", &a.to_uppercase(), &format!("{a}0")] {
            assert!(!is_token(foreign), "{foreign:?}");
        }
    }

    #[test]
    fn leases_we_never_write_are_foreign() {
        let ours = new_token();
        assert!(foreign_lease(&ours, 900, &[]).is_ok());
        assert!(
            foreign_lease("locked", 900, &[])
                .unwrap_err()
                .contains("not a token")
        );
        assert!(
            foreign_lease(&ours, -1, &[])
                .unwrap_err()
                .contains("no TTL")
        );
        let abandoned = [ours.clone()];
        assert!(
            foreign_lease(&ours, 900, &abandoned)
                .unwrap_err()
                .contains("abandoned")
        );
    }
}
