//! The Lua scripts of the protocol and their replies, decoded into typed
//! values. Each script touches keys of one hash tag only.

use redis::{Connection, Script, ScriptInvocation, Value};

/// Take the lease, or name who holds it. With a second key (the result
/// stream of the flight the caller followed), first check whether that
/// flight published, so a follower whose wait timed out never starts a
/// duplicate run over a result that landed meanwhile.
const ACQUIRE: &str = r#"
if #KEYS > 1 then
  local e = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #e > 0 then return {'done', e[1][2]} end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'acquired'}
end
return {'held', redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"#;

/// Compare-and-PEXPIRE: extend the lease only while it is still ours.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Publish a flight's result to its own stream, give the stream its TTL and
/// release the lease if it is still ours, all in one step: a follower sees
/// either the lease or the result, never neither.
const PUBLISH: &str = r#"
redis.call('XADD', KEYS[2], '*', 's', ARGV[2], 'b', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// The three scripts, hashed once per group.
pub(super) struct Scripts {
    acquire: Script,
    renew: Script,
    publish: Script,
}

/// What [`Scripts::acquire`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// The lease is ours: run `f`.
    Acquired,
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

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            publish: Script::new(PUBLISH),
        }
    }

    pub(super) fn acquire(
        &self,
        con: &mut Connection,
        lease_key: &str,
        followed_done: Option<&str>,
        token: &str,
        lease_ms: u64,
    ) -> Result<Acquire, CallError> {
        let mut call = self.acquire.key(lease_key);
        if let Some(done) = followed_done {
            call.key(done);
        }
        run(call.arg(token).arg(lease_ms), con, parse_acquire)
    }

    pub(super) fn renew(
        &self,
        con: &mut Connection,
        lease_key: &str,
        token: &str,
        lease_ms: u64,
    ) -> Result<LeaseState, CallError> {
        run(
            self.renew.key(lease_key).arg(token).arg(lease_ms),
            con,
            parse_lease_state,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish(
        &self,
        con: &mut Connection,
        lease_key: &str,
        done_key: &str,
        token: &str,
        status: Status,
        body: &[u8],
        ttl_ms: u64,
    ) -> Result<LeaseState, CallError> {
        run(
            self.publish
                .key(lease_key)
                .key(done_key)
                .arg(token)
                .arg(status.tag())
                .arg(body)
                .arg(ttl_ms),
            con,
            parse_lease_state,
        )
    }
}

/// Runs a script and decodes its reply.
fn run<T>(
    call: &ScriptInvocation<'_>,
    con: &mut Connection,
    parse: fn(Value) -> Result<T, Malformed>,
) -> Result<T, CallError> {
    Ok(parse(call.invoke(con)?)?)
}

/// Blocks up to `block_ms` for the first entry of a result stream.
/// `Ok(None)` means nothing was published in that time.
pub(super) fn read_result(
    con: &mut Connection,
    done_key: &str,
    block_ms: u64,
) -> Result<Option<Entry>, CallError> {
    let reply: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(block_ms.max(1))
        .arg("STREAMS")
        .arg(done_key)
        .arg("0-0")
        .query(con)?;
    Ok(parse_xread(reply)?)
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

/// Decodes an acquire reply.
pub(crate) fn parse_acquire(reply: Value) -> Result<Acquire, Malformed> {
    let bad = || Malformed(format!("unexpected acquire reply {}", describe(&reply)));
    let Value::Array(items) = &reply else {
        return Err(bad());
    };
    match (items.first().and_then(bytes), items.len()) {
        (Some(b"acquired"), 1) => return Ok(Acquire::Acquired),
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
    Ok(Acquire::Done(parse_fields(&mut items[1])?))
}

/// Decodes a renew or publish reply: 1 is "still ours", 0 is "lost".
pub(crate) fn parse_lease_state(reply: Value) -> Result<LeaseState, Malformed> {
    match reply {
        Value::Int(1) => Ok(LeaseState::Held),
        Value::Int(0) => Ok(LeaseState::Lost),
        other => Err(Malformed(format!(
            "unexpected lease reply {}",
            describe(&other)
        ))),
    }
}

/// Decodes `XREAD` on one stream: nil on timeout, else
/// `[[stream, [[id, [field, value, …]]]]]`.
pub(crate) fn parse_xread(mut reply: Value) -> Result<Option<Entry>, Malformed> {
    let bad = |v: &Value| Malformed(format!("unexpected stream reply {}", describe(v)));
    let stream = match &mut reply {
        Value::Nil => return Ok(None),
        Value::Array(streams) if streams.len() == 1 => &mut streams[0],
        Value::Map(streams) if streams.len() == 1 => &mut streams[0].1,
        other => return Err(bad(other)),
    };
    let entries = match stream {
        Value::Array(pair) if pair.len() == 2 => &mut pair[1],
        other => other,
    };
    let Value::Array(list) = entries else {
        return Err(bad(entries));
    };
    if list.is_empty() {
        return Ok(None);
    }
    if let Some(Value::Array(id_fields)) = list.first_mut() {
        if id_fields.len() == 2 {
            return parse_fields(&mut id_fields[1]).map(Some);
        }
    }
    Err(bad(entries))
}

/// Decodes an entry's `[field, value, …]` list into status and body.
///
/// The body is moved out of `fields` rather than copied (it can be
/// megabytes); `fields` is left as it was when decoding fails.
fn parse_fields(fields: &mut Value) -> Result<Entry, Malformed> {
    let Value::Array(kv) = fields else {
        return Err(Malformed(format!("unexpected entry {}", describe(fields))));
    };
    let (mut status, mut body_at) = (None, None);
    for (pair_index, pair) in kv.chunks(2).enumerate() {
        match (pair.first().and_then(bytes), pair.get(1).and_then(bytes)) {
            (Some(b"s"), Some(tag)) => {
                status = Some(Status::from_tag(tag).ok_or_else(|| {
                    Malformed(format!("unknown status {:?}", String::from_utf8_lossy(tag)))
                })?)
            }
            (Some(b"b"), Some(_)) => body_at = Some(2 * pair_index + 1),
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
            Ok(Entry { status, body })
        }
        _ => Err(Malformed(format!(
            "entry without status or body: {}",
            describe(fields)
        ))),
    }
}

#[cfg(test)]
#[path = "../../tests/redis_support/mod.rs"]
mod test_server;

#[cfg(test)]
mod tests {
    use super::*;

    /// The same decoders against what a real server replies.
    #[test]
    fn replies_from_a_real_server_are_typed() {
        let server = test_server::RedisServer::start();
        let mut con = server.connection();
        let s = Scripts::new();
        let lease = "sf:t:v1:{k:a}:lease";
        let done = "sf:t:v1:{k:a}:done:t1";
        assert_eq!(
            s.acquire(&mut con, lease, None, "t1", 1000).unwrap(),
            Acquire::Acquired
        );
        match s.acquire(&mut con, lease, Some(done), "t2", 1000).unwrap() {
            Acquire::Held { token, pttl_ms } => {
                assert_eq!(token, "t1");
                assert!((1..=1000).contains(&pttl_ms), "{pttl_ms}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.renew(&mut con, lease, "t2", 1000).unwrap(),
            LeaseState::Lost
        );
        assert_eq!(
            s.renew(&mut con, lease, "t1", 1000).unwrap(),
            LeaseState::Held
        );
        assert_eq!(read_result(&mut con, done, 5).unwrap(), None);
        let published = s.publish(&mut con, lease, done, "t1", Status::Value, b"body", 5000);
        assert_eq!(published.unwrap(), LeaseState::Held);
        let entry = Entry {
            status: Status::Value,
            body: b"body".to_vec(),
        };
        assert_eq!(read_result(&mut con, done, 5).unwrap(), Some(entry.clone()));
        let after = s.acquire(&mut con, lease, Some(done), "t2", 1000).unwrap();
        assert_eq!(after, Acquire::Done(entry));
        let ttl: i64 = redis::cmd("PTTL").arg(done).query(&mut con).unwrap();
        assert!((1..=5000).contains(&ttl), "{ttl}");
        // A late publish after another flight took the lease: "lease lost",
        // and the new holder keeps its lease.
        assert_eq!(
            s.acquire(&mut con, lease, None, "t2", 1000).unwrap(),
            Acquire::Acquired
        );
        let late = s.publish(&mut con, lease, done, "t1", Status::Abandoned, b"", 5000);
        assert_eq!(late.unwrap(), LeaseState::Lost);
        let holder: String = redis::cmd("GET").arg(lease).query(&mut con).unwrap();
        assert_eq!(holder, "t2");
        // Foreign data: a hash where the lease should be.
        let _: () = redis::pipe()
            .del(lease)
            .hset(lease, "f", "v")
            .query(&mut con)
            .unwrap();
        let err = s.acquire(&mut con, lease, None, "t3", 1000).unwrap_err();
        assert!(matches!(err, CallError::Redis(e) if e.to_string().contains("WRONGTYPE")));
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(status: &str, body: &str) -> Value {
        Value::Array(vec![bulk("s"), bulk(status), bulk("b"), bulk(body)])
    }

    #[test]
    fn acquire_replies() {
        let acquired = Value::Array(vec![bulk("acquired")]);
        assert_eq!(parse_acquire(acquired), Ok(Acquire::Acquired));
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
        });
        assert_eq!(parse_acquire(done), Ok(want));
        for bad in [Value::Nil, Value::Int(1), Value::Array(vec![bulk("other")])] {
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
        assert_eq!(parse_xread(Value::Nil), Ok(None));
        let one = Value::Array(vec![Value::Array(vec![
            bulk("k"),
            Value::Array(vec![Value::Array(vec![bulk("1-0"), entry("v", "xyz")])]),
        ])]);
        let want = Entry {
            status: Status::Value,
            body: b"xyz".to_vec(),
        };
        assert_eq!(parse_xread(one), Ok(Some(want)));
        let foreign = Value::Array(vec![Value::Array(vec![
            bulk("k"),
            Value::Array(vec![Value::Array(vec![bulk("1-0"), entry("weird", "")])]),
        ])]);
        assert!(
            parse_xread(foreign)
                .unwrap_err()
                .0
                .contains("unknown status")
        );
    }
}
