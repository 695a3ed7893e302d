//! The typed replies of the protocol's scripts and reads, and their
//! decoders: anything of another shape is [`Malformed`], never a panic.

use redis::Value;

use super::{Error, ErrorKind};

/// What [`Scripts::acquire`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// The lease is ours: run `f`, with this fencing token if one was
    /// asked for.
    Acquired { fence: Option<u64> },
    /// Another flight holds the lease; follow its token. `pttl_ms` is what
    /// is left of the lease (negative when the key has no TTL).
    Held { token: String, pttl_ms: i64 },
    /// The followed flight had already published this entry.
    Done(Entry),
}

/// What [`Scripts::renew`] and [`Scripts::publish`] found about the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseState {
    /// The lease was still ours (renewed, or released after publishing).
    Held,
    /// The lease expired or another flight took it.
    Lost,
}

/// One entry of a result stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) status: Status,
    pub(crate) body: Vec<u8>,
    /// The node id of the process that published it.
    pub(crate) leader: String,
}

/// How a flight ended, as written to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// The body is an encoded value.
    Value,
    /// The leader panicked or was dropped: contend again at once.
    Abandoned,
    /// The value was over the leader's `max_payload`.
    TooLarge,
    /// The value could not be encoded.
    Unencodable,
}

impl Status {
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Status::Value => "v",
            Status::Abandoned => "abandon",
            Status::TooLarge => "too_large",
            Status::Unencodable => "unencodable",
        }
    }

    fn from_tag(tag: &[u8]) -> Option<Self> {
        [
            Status::Value,
            Status::Abandoned,
            Status::TooLarge,
            Status::Unencodable,
        ]
        .into_iter()
        .find(|s| s.tag().as_bytes() == tag)
    }
}

/// A reply of a shape the protocol never produces: foreign data in our
/// keys, or a different script under our names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) String);

/// A script or read outcome: a Redis failure, or a reply of the wrong shape.
#[derive(Debug)]
pub(crate) enum CallError {
    Redis(redis::RedisError),
    Malformed(Malformed),
    /// Every connection the configured bound allows was busy (the number).
    Busy(usize),
}

impl From<Malformed> for CallError {
    fn from(e: Malformed) -> Self {
        CallError::Malformed(e)
    }
}

impl From<redis::RedisError> for CallError {
    fn from(e: redis::RedisError) -> Self {
        CallError::Redis(e)
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn describe(v: &Value) -> String {
    let text = format!("{v:?}");
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A followed flight's entry, sorted by what the follower does next.
pub(crate) enum Received {
    /// The encoded value and the node id of its leader.
    Value(Vec<u8>, String),
    Abandoned,
    Unusable(Error),
}

impl Entry {
    pub(crate) fn received(self) -> Received {
        let reason = match self.status {
            Status::Value => return Received::Value(self.body, self.leader),
            Status::Abandoned => return Received::Abandoned,
            Status::TooLarge => ErrorKind::PayloadTooLarge,
            Status::Unencodable => ErrorKind::Unencodable,
        };
        Received::Unusable(Error::new(
            reason,
            "the remote leader could not share its value",
        ))
    }
}

/// Decodes an acquire reply.
pub(crate) fn parse_acquire(reply: Value) -> Result<Acquire, Malformed> {
    let bad = || Malformed(format!("unexpected acquire reply {}", describe(&reply)));
    let Value::Array(items) = &reply else {
        return Err(bad());
    };
    match (items.first().and_then(bytes), items.len()) {
        (Some(b"acquired"), 1) => return Ok(Acquire::Acquired { fence: None }),
        (Some(b"acquired"), 2) => {
            return match items[1] {
                Value::Int(fence) if fence > 0 => Ok(Acquire::Acquired {
                    fence: Some(fence.unsigned_abs()),
                }),
                _ => Err(bad()),
            };
        }
        (Some(b"held"), 3) => {
            let token = bytes(&items[1])
                .and_then(|t| std::str::from_utf8(t).ok())
                .ok_or_else(|| {
                    Malformed(format!(
                        "the lease holds a non-token {}",
                        describe(&items[1])
                    ))
                })?;
            let Value::Int(pttl_ms) = items[2] else {
                return Err(bad());
            };
            return Ok(Acquire::Held {
                token: token.to_owned(),
                pttl_ms,
            });
        }
        // Decoded below, from the reply taken apart: the body is not copied.
        (Some(b"done"), 2) => {}
        _ => return Err(bad()),
    }
    let Value::Array(mut items) = reply else {
        unreachable!("matched as an array above");
    };
    Ok(Acquire::Done(parse_entry(&mut items[1])?))
}

/// Decodes a renew, publish or release reply: 1 is "still ours", 0 is
/// "lost"; 2 is a retried publish whose first attempt had landed (and so
/// had released the lease, if it was still ours).
pub(crate) fn parse_lease_state(reply: Value) -> Result<LeaseState, Malformed> {
    match reply {
        Value::Int(1 | 2) => Ok(LeaseState::Held),
        Value::Int(0) => Ok(LeaseState::Lost),
        other => Err(Malformed(format!(
            "unexpected lease reply {}",
            describe(&other)
        ))),
    }
}

/// One stream's part of an `XREAD` reply: its key and its entries, each
/// an id and its still undecoded `[field, value, …]` list.
#[derive(Debug)]
pub(crate) struct StreamEntries {
    pub(crate) key: String,
    pub(crate) entries: Vec<(String, Value)>,
}

/// Decodes `XREAD` over any number of streams: nil on timeout, else
/// `[[stream, [[id, [field, value, …]], …]], …]` (a map under RESP3).
pub(crate) fn parse_xread(reply: Value) -> Result<Vec<StreamEntries>, Malformed> {
    let bad = |v: &Value| Malformed(format!("unexpected stream reply {}", describe(v)));
    let streams: Vec<(Value, Value)> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|pair| match pair {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    Ok((
                        pair.next().unwrap_or(Value::Nil),
                        pair.next().unwrap_or(Value::Nil),
                    ))
                }
                other => Err(bad(&other)),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(streams) => streams,
        other => return Err(bad(&other)),
    };
    streams
        .into_iter()
        .map(|(key, entries)| {
            let key = bytes(&key)
                .and_then(|k| std::str::from_utf8(k).ok())
                .ok_or_else(|| bad(&key))?
                .to_owned();
            let Value::Array(list) = entries else {
                return Err(bad(&entries));
            };
            let entries = list
                .into_iter()
                .map(|entry| match entry {
                    Value::Array(id_fields) if id_fields.len() == 2 => {
                        let mut id_fields = id_fields.into_iter();
                        let id = id_fields.next().unwrap_or(Value::Nil);
                        let id = bytes(&id)
                            .and_then(|i| std::str::from_utf8(i).ok())
                            .ok_or_else(|| bad(&id))?
                            .to_owned();
                        Ok((id, id_fields.next().unwrap_or(Value::Nil)))
                    }
                    other => Err(bad(&other)),
                })
                .collect::<Result<_, _>>()?;
            Ok(StreamEntries { key, entries })
        })
        .collect()
}

/// Decodes `XRANGE … COUNT 1`: empty, or `[[id, [field, value, …]]]`.
pub(crate) fn parse_xrange_first(reply: Value) -> Result<Option<Entry>, Malformed> {
    let bad = |v: &Value| Malformed(format!("unexpected stream range {}", describe(v)));
    let Value::Array(mut entries) = reply else {
        return Err(bad(&reply));
    };
    if entries.is_empty() {
        return Ok(None);
    }
    match &mut entries[0] {
        Value::Array(id_fields) if id_fields.len() == 2 => parse_entry(&mut id_fields[1]).map(Some),
        other => Err(bad(other)),
    }
}

/// Decodes an entry's `[field, value, …]` list into status and body.
///
/// The body is moved out of `fields` rather than copied (it can be
/// megabytes); `fields` is left as it was when decoding fails.
pub(crate) fn parse_entry(fields: &mut Value) -> Result<Entry, Malformed> {
    let Value::Array(kv) = fields else {
        return Err(Malformed(format!("unexpected entry {}", describe(fields))));
    };
    let (mut status, mut body_at, mut leader) = (None, None, None);
    for (pair_index, pair) in kv.chunks(2).enumerate() {
        match (pair.first().and_then(bytes), pair.get(1).and_then(bytes)) {
            (Some(b"s"), Some(tag)) => {
                status = Some(Status::from_tag(tag).ok_or_else(|| {
                    Malformed(format!("unknown status {:?}", String::from_utf8_lossy(tag)))
                })?)
            }
            (Some(b"b"), Some(_)) => body_at = Some(2 * pair_index + 1),
            (Some(b"n"), Some(node)) => leader = Some(String::from_utf8_lossy(node).into_owned()),
            _ => {}
        }
    }
    match (status, body_at) {
        (Some(status), Some(at)) => {
            let body = match std::mem::replace(&mut kv[at], Value::Nil) {
                Value::BulkString(body) => body,
                Value::SimpleString(text) => text.into_bytes(),
                _ => unreachable!("`bytes` accepted it"),
            };
            // An entry without a node id comes from a build before it
            // existed: the value is still good.
            let leader = leader.unwrap_or_else(|| "unknown".into());
            Ok(Entry {
                status,
                body,
                leader,
            })
        }
        _ => Err(Malformed(format!(
            "entry without status or body: {}",
            describe(fields)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(status: &str, body: &str) -> Value {
        Value::Array(vec![bulk("s"), bulk(status), bulk("b"), bulk(body)])
    }

    #[test]
    fn acquire_replies() {
        let acquired = Value::Array(vec![bulk("acquired")]);
        assert_eq!(
            parse_acquire(acquired),
            Ok(Acquire::Acquired { fence: None })
        );
        let fenced = Value::Array(vec![bulk("acquired"), Value::Int(7)]);
        assert_eq!(
            parse_acquire(fenced),
            Ok(Acquire::Acquired { fence: Some(7) })
        );
        let held = Value::Array(vec![bulk("held"), bulk("t1"), Value::Int(900)]);
        let want = Acquire::Held {
            token: "t1".into(),
            pttl_ms: 900,
        };
        assert_eq!(parse_acquire(held), Ok(want));
        let done = Value::Array(vec![bulk("done"), entry("abandon", "")]);
        let want = Acquire::Done(Entry {
            status: Status::Abandoned,
            body: vec![],
            leader: "unknown".into(),
        });
        assert_eq!(parse_acquire(done), Ok(want));
        let negative = Value::Array(vec![bulk("acquired"), Value::Int(-1)]);
        for bad in [
            Value::Nil,
            Value::Int(1),
            Value::Array(vec![bulk("other")]),
            negative,
        ] {
            assert!(
                parse_acquire(bad)
                    .unwrap_err()
                    .0
                    .contains("unexpected acquire reply")
            );
        }
    }

    #[test]
    fn lease_replies_include_lost() {
        assert_eq!(parse_lease_state(Value::Int(1)), Ok(LeaseState::Held));
        assert_eq!(parse_lease_state(Value::Int(0)), Ok(LeaseState::Lost));
        assert!(parse_lease_state(Value::Okay).is_err());
    }

    #[test]
    fn xread_replies() {
        assert!(parse_xread(Value::Nil).unwrap().is_empty());
        let stream = |key: &str, status: &str| {
            Value::Array(vec![
                bulk(key),
                Value::Array(vec![Value::Array(vec![bulk("1-0"), entry(status, "xyz")])]),
            ])
        };
        let two = Value::Array(vec![stream("a", "v"), stream("b", "weird")]);
        let mut streams = parse_xread(two).unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(
            (streams[0].key.as_str(), streams[0].entries[0].0.as_str()),
            ("a", "1-0")
        );
        let want = Entry {
            status: Status::Value,
            body: b"xyz".to_vec(),
            leader: "unknown".into(),
        };
        assert_eq!(parse_entry(&mut streams[0].entries[0].1), Ok(want));
        let foreign = parse_entry(&mut streams[1].entries[0].1).unwrap_err();
        assert!(foreign.0.contains("unknown status"), "{foreign:?}");
        assert!(parse_xread(Value::Int(3)).is_err());
    }
}
