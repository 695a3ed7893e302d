//! The envelope around every shared value: magic, format version, codec
//! id, then the postcard body, with no trailing bytes allowed.

use serde::{Serialize, de::DeserializeOwned};

const MAGIC: [u8; 2] = *b"SF";
const FORMAT_VERSION: u8 = 1;
const CODEC_POSTCARD: u8 = 1;
const HEADER: usize = 4;

/// Encodes `value`; fails if postcard cannot serialize it.
pub(super) fn encode<V: Serialize>(value: &V) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(CODEC_POSTCARD);
    postcard::to_extend(value, out).map_err(|e| format!("cannot encode the value: {e}"))
}

/// Decodes an envelope of at most `limit` bytes. Every refusal says what
/// was wrong, for the strict caller's error and the logs.
pub(super) fn decode<V: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<V, String> {
    if bytes.len() > limit {
        return Err(format!(
            "the envelope is {} bytes, over the {limit}-byte limit",
            bytes.len()
        ));
    }
    if bytes.len() < HEADER || bytes[..2] != MAGIC {
        return Err("not a sync-singleflight envelope (bad magic)".into());
    }
    if bytes[2] != FORMAT_VERSION {
        return Err(format!(
            "envelope format version {}, this build reads {FORMAT_VERSION}",
            bytes[2]
        ));
    }
    if bytes[3] != CODEC_POSTCARD {
        return Err(format!("unknown codec id {}", bytes[3]));
    }
    // Postcard preallocates through serde's cautious size hints, so a forged
    // length cannot make it reserve more than the input could hold.
    match postcard::take_from_bytes(&bytes[HEADER..]) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} trailing bytes after the value", rest.len())),
        Err(e) => Err(format!("the body does not decode as this type: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = encode(&("a".to_string(), 7u32)).unwrap();
        assert_eq!(&bytes[..4], b"SF\x01\x01");
        assert_eq!(
            decode::<(String, u32)>(&bytes, 100).unwrap(),
            ("a".into(), 7)
        );
    }

    #[test]
    fn refusals_are_explicit() {
        let good = encode(&5u32).unwrap();
        let mut trailing = good.clone();
        trailing.push(0);
        let cases: [(&[u8], &str); 6] = [
            (b"", "bad magic"),
            (b"garbage!", "bad magic"),
            (b"SF\x02\x01\x05", "format version 2"),
            (b"SF\x01\x09\x05", "codec id 9"),
            (&trailing, "1 trailing bytes"),
            (b"SF\x01\x01", "does not decode"),
        ];
        for (input, want) in cases {
            let err = decode::<u32>(input, 100).unwrap_err();
            assert!(err.contains(want), "{input:?}: {err}");
        }
        assert!(decode::<u32>(&good, 4).unwrap_err().contains("limit"));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..2000 {
            let mut input = b"SF\x01\x01".to_vec();
            for _ in 0..len % 64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                input.push(x as u8);
            }
            let _ = decode::<(String, Vec<u64>, Option<i8>)>(&input, 1 << 20);
        }
    }
}
