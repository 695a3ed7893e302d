//! The Lua scripts of the protocol and the reads, each touching keys of
//! one hash tag only. Every script is safe to run twice with the same
//! arguments (a retry after a lost reply): see each one's comment.

use redis::{ConnectionLike, Script, ScriptInvocation, Value};

use super::reply::{self, Acquire, CallError, Entry, LeaseState, Malformed, Status, StreamEntries};

/// Take the lease, or name who holds it. With a third key (the result
/// stream of the flight the caller followed), first check whether that
/// flight published, so a follower whose wait timed out never starts a
/// duplicate run over a result that landed meanwhile.
///
/// With `ARGV[3] == '1'` a new lease also gets a fencing token from the
/// key's counter `KEYS[2]`: `max(last + 1, the server clock in µs)`. The
/// clock seed is what lets the counter carry a TTL (`ARGV[4]`) instead of
/// living forever: once it has expired the next token is the clock, which
/// is above every earlier token (each was at most the clock when issued)
/// unless the server's clock stepped back. While it lives, `last + 1`
/// keeps tokens increasing across such a step. Lua numbers are doubles:
/// exact up to 2^53 µs, about 285 years.
///
/// Retry-safe: a lease that already holds the caller's token answers
/// "acquired" again (the first attempt's reply was lost), with the token
/// the counter got then (nobody else can have drawn one while we hold the
/// lease), or a new one if the counter expired meanwhile (a `fence_ttl`
/// shorter than the lost reply took): the lost reply's token reached
/// nobody, so skipping it keeps the tokens increasing. That check comes
/// before the followed stream's: if that flight published between the two
/// attempts, answering "done" would leave the lease the first attempt set
/// to block every other process for a whole lease, with nobody to renew,
/// publish or release it.
const ACQUIRE: &str = r#"
local function draw()
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  local fence = math.max(last + 1, now)
  redis.call('SET', KEYS[2], string.format('%.0f', fence), 'PX', ARGV[4])
  return fence
end
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  if ARGV[3] ~= '1' then return {'acquired'} end
  local kept = redis.call('GET', KEYS[2])
  if not kept then return {'acquired', draw()} end
  return {'acquired', tonumber(kept) or 0}
end
if #KEYS > 2 then
  local e = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
  if #e > 0 then return {'done', e[1][2]} end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if ARGV[3] ~= '1' then return {'acquired'} end
  return {'acquired', draw()}
end
return {'held', holder, redis.call('PTTL', KEYS[1])}
"#;

/// Compare-and-PEXPIRE: extend the lease only while it is still ours.
/// Retry-safe: extending twice is extending once.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Publish a flight's result to its own stream, give the stream its TTL and
/// release the lease if it is still ours, all in one step: a follower sees
/// either the lease or the result, never neither.
///
/// Retry-safe: a stream that already has an entry is this flight's first
/// attempt (only this token's leader writes it), so nothing is added and
/// the reply is 2.
const PUBLISH: &str = r#"
if redis.call('XLEN', KEYS[2]) > 0 then return 2 end
redis.call('XADD', KEYS[2], '*', 's', ARGV[2], 'b', ARGV[3], 'n', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// Compare-and-delete an orphaned lease of ours (set by an acquire whose
/// reply we gave up on): drop it only if it holds this token, and then
/// end its flight with "abandon", so that anyone who started following
/// it contends again at once instead of waiting out the lease.
/// Retry-safe: the second run finds the lease gone and does nothing.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('XADD', KEYS[2], '*', 's', ARGV[2], 'b', '')
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
return 0
"#;

/// How a lease is asked for.
pub(crate) struct Claim<'a> {
    pub(crate) lease_key: &'a str,
    pub(crate) fence_key: &'a str,
    /// The result stream of the flight the caller followed, to check first.
    pub(crate) followed_done: Option<&'a str>,
    pub(crate) token: &'a str,
    pub(crate) lease_ms: u64,
    /// The fencing counter's TTL, when a fencing token is wanted.
    pub(crate) fence_ttl_ms: Option<u64>,
}

/// Where and by whom a flight's end is published.
pub(crate) struct Published<'a> {
    pub(crate) lease_key: &'a str,
    pub(crate) done_key: &'a str,
    pub(crate) token: &'a str,
    pub(crate) ttl_ms: u64,
    /// The publishing process's node id.
    pub(crate) leader: &'a str,
}

/// The scripts, hashed once per group.
pub(super) struct Scripts {
    acquire: Script,
    renew: Script,
    publish: Script,
    release: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            publish: Script::new(PUBLISH),
            release: Script::new(RELEASE),
        }
    }

    pub(super) fn acquire(
        &self,
        con: &mut dyn ConnectionLike,
        claim: &Claim<'_>,
    ) -> Result<Acquire, CallError> {
        let mut call = self.acquire.key(claim.lease_key);
        call.key(claim.fence_key);
        if let Some(done) = claim.followed_done {
            call.key(done);
        }
        call.arg(claim.token).arg(claim.lease_ms);
        match claim.fence_ttl_ms {
            Some(ttl) => call.arg("1").arg(ttl),
            None => call.arg("0").arg(0),
        };
        run(&call, con, reply::parse_acquire)
    }

    pub(super) fn renew(
        &self,
        con: &mut dyn ConnectionLike,
        lease_key: &str,
        token: &str,
        lease_ms: u64,
    ) -> Result<LeaseState, CallError> {
        run(
            self.renew.key(lease_key).arg(token).arg(lease_ms),
            con,
            reply::parse_lease_state,
        )
    }

    /// Deletes the lease if it holds `token` and abandons that flight:
    /// `Held` when it did.
    pub(super) fn release(
        &self,
        con: &mut dyn ConnectionLike,
        lease_key: &str,
        done_key: &str,
        token: &str,
        ttl_ms: u64,
    ) -> Result<LeaseState, CallError> {
        run(
            self.release
                .key(lease_key)
                .key(done_key)
                .arg(token)
                .arg(Status::Abandoned.tag())
                .arg(ttl_ms),
            con,
            reply::parse_lease_state,
        )
    }

    pub(super) fn publish(
        &self,
        con: &mut dyn ConnectionLike,
        flight: &Published<'_>,
        status: Status,
        body: &[u8],
    ) -> Result<LeaseState, CallError> {
        run(
            self.publish
                .key(flight.lease_key)
                .key(flight.done_key)
                .arg(flight.token)
                .arg(status.tag())
                .arg(body)
                .arg(flight.ttl_ms)
                .arg(flight.leader),
            con,
            reply::parse_lease_state,
        )
    }
}

/// Runs a script and decodes its reply.
fn run<T>(
    call: &ScriptInvocation<'_>,
    con: &mut dyn ConnectionLike,
    parse: fn(Value) -> Result<T, Malformed>,
) -> Result<T, CallError> {
    Ok(parse(call.invoke(con)?)?)
}

/// Blocks up to `block_ms` for entries after the given ids, over any
/// number of streams (one `XREAD`, the first entry of each stream).
/// Empty when nothing arrived in that time.
pub(super) fn read_streams(
    con: &mut dyn ConnectionLike,
    streams: &[(&str, &str)],
    block_ms: u64,
) -> Result<Vec<StreamEntries>, CallError> {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(block_ms.max(1))
        .arg("STREAMS");
    for (key, _) in streams {
        cmd.arg(*key);
    }
    for (_, id) in streams {
        cmd.arg(*id);
    }
    Ok(reply::parse_xread(cmd.query(con)?)?)
}

/// Adds an entry to a reader's wake-up stream and refreshes its TTL, in
/// one round trip: the blocked `XREAD` that includes it returns at once.
pub(super) fn wake(
    con: &mut dyn ConnectionLike,
    wake_key: &str,
    ttl_ms: u64,
) -> Result<(), CallError> {
    redis::pipe()
        .cmd("XADD")
        .arg(wake_key)
        .arg("MAXLEN")
        .arg(1)
        .arg("*")
        .arg("w")
        .arg(1)
        .ignore()
        .cmd("PEXPIRE")
        .arg(wake_key)
        .arg(ttl_ms)
        .ignore()
        .query::<()>(con)?;
    Ok(())
}

/// The first entry of a result stream, without blocking (`XRANGE … COUNT
/// 1`): how a follower polls on a Redis Cluster.
pub(super) fn first_entry(
    con: &mut dyn ConnectionLike,
    done_key: &str,
) -> Result<Option<Entry>, CallError> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(done_key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query(con)?;
    Ok(reply::parse_xrange_first(reply)?)
}

/// `TYPE key`: to find which of many followed keys made an `XREAD` fail
/// with WRONGTYPE.
pub(super) fn key_type(con: &mut dyn ConnectionLike, key: &str) -> Result<String, CallError> {
    Ok(redis::cmd("TYPE").arg(key).query(con)?)
}

#[cfg(test)]
#[path = "../../tests/redis_support/mod.rs"]
mod test_server;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::reply::Entry;

    fn first(con: &mut dyn ConnectionLike, done: &str) -> Option<Entry> {
        let mut streams = read_streams(con, &[(done, "0-0")], 5).unwrap();
        let mut entries = streams.pop()?.entries;
        Some(reply::parse_entry(&mut entries.remove(0).1).unwrap())
    }

    /// The same decoders against what a real server replies.
    #[test]
    fn replies_from_a_real_server_are_typed() {
        let server = test_server::RedisServer::start();
        let mut con = server.connection();
        let s = Scripts::new();
        let lease = "sf:t:v1:{k:a}:lease";
        let fence = "sf:t:v1:{k:a}:fence";
        let done = "sf:t:v1:{k:a}:done:t1";
        let claim = |token, followed_done, fence_ttl_ms| Claim {
            lease_key: lease,
            fence_key: fence,
            followed_done,
            token,
            lease_ms: 1000,
            fence_ttl_ms,
        };
        let publish = |con: &mut dyn ConnectionLike, done_key, token, status, body: &[u8]| {
            let flight = Published {
                lease_key: lease,
                done_key,
                token,
                ttl_ms: 5000,
                leader: "host:1",
            };
            s.publish(con, &flight, status, body)
        };
        let unfenced = Acquire::Acquired { fence: None };
        assert_eq!(
            s.acquire(&mut con, &claim("t1", None, None)).unwrap(),
            unfenced
        );
        // A retried acquire (the first reply lost) is still ours.
        assert_eq!(
            s.acquire(&mut con, &claim("t1", None, None)).unwrap(),
            unfenced
        );
        match s.acquire(&mut con, &claim("t2", Some(done), None)).unwrap() {
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
        assert_eq!(first(&mut con, done), None);
        let published = publish(&mut con, done, "t1", Status::Value, b"body");
        assert_eq!(published.unwrap(), LeaseState::Held);
        let entry = Entry {
            status: Status::Value,
            body: b"body".to_vec(),
            leader: "host:1".into(),
        };
        assert_eq!(first(&mut con, done), Some(entry.clone()));
        // Retried: the stream keeps one entry, the reply says so.
        let again = publish(&mut con, done, "t1", Status::Value, b"other");
        assert_eq!(again.unwrap(), LeaseState::Held);
        let len: u64 = redis::cmd("XLEN").arg(done).query(&mut con).unwrap();
        assert_eq!(len, 1);
        let after = s.acquire(&mut con, &claim("t2", Some(done), None)).unwrap();
        assert_eq!(after, Acquire::Done(entry));
        let ttl: i64 = redis::cmd("PTTL").arg(done).query(&mut con).unwrap();
        assert!((1..=5000).contains(&ttl), "{ttl}");
        // A fenced acquire: the token is the server clock in µs or above.
        let Acquire::Acquired { fence: Some(token) } = s
            .acquire(&mut con, &claim("t2", None, Some(60_000)))
            .unwrap()
        else {
            panic!("a fenced acquire returns a token");
        };
        let (secs, _): (u64, u64) = redis::cmd("TIME").query(&mut con).unwrap();
        assert!(token <= (secs + 1) * 1_000_000 && token > (secs - 60) * 1_000_000);
        // Retried, it answers the same token.
        let retried = s
            .acquire(&mut con, &claim("t2", None, Some(60_000)))
            .unwrap();
        assert_eq!(retried, Acquire::Acquired { fence: Some(token) });
        // A late publish after another flight took the lease: "lease lost",
        // and the new holder keeps its lease.
        let late_done = "sf:t:v1:{k:a}:done:t0";
        let late = publish(&mut con, late_done, "t0", Status::Abandoned, b"");
        assert_eq!(late.unwrap(), LeaseState::Lost);
        let holder: String = redis::cmd("GET").arg(lease).query(&mut con).unwrap();
        assert_eq!(holder, "t2");
        // Compare-and-delete: another token's release leaves it alone.
        let done2 = "sf:t:v1:{k:a}:done:t2";
        assert_eq!(
            s.release(&mut con, lease, done, "t1", 5000).unwrap(),
            LeaseState::Lost
        );
        assert_eq!(first(&mut con, done2), None);
        assert_eq!(
            s.release(&mut con, lease, done2, "t2", 5000).unwrap(),
            LeaseState::Held
        );
        assert_eq!(first(&mut con, done2).unwrap().status, Status::Abandoned);
        assert_eq!(
            s.release(&mut con, lease, done2, "t2", 5000).unwrap(),
            LeaseState::Lost
        );
        // The counter runs ahead of the clock: the next token is above it
        // even when the clock is behind (a server clock stepped back).
        let ahead = token + 10_000_000_000;
        let _: () = redis::cmd("SET")
            .arg(fence)
            .arg(ahead)
            .query(&mut con)
            .unwrap();
        let next = s
            .acquire(&mut con, &claim("t4", None, Some(60_000)))
            .unwrap();
        assert_eq!(
            next,
            Acquire::Acquired {
                fence: Some(ahead + 1)
            }
        );
        let ttl: i64 = redis::cmd("PTTL").arg(fence).query(&mut con).unwrap();
        assert!((1..=60_000).contains(&ttl), "{ttl}");
        // A retried takeover (its first reply lost) is still ours even if
        // the flight it followed published late in between: answering
        // "done" would strand the lease it set.
        let _: () = redis::cmd("DEL").arg(lease).query(&mut con).unwrap();
        let old_done = "sf:t:v1:{k:a}:done:t4";
        assert_eq!(
            s.acquire(&mut con, &claim("t5", Some(old_done), None))
                .unwrap(),
            unfenced
        );
        let late = publish(&mut con, old_done, "t4", Status::Value, b"late");
        assert_eq!(late.unwrap(), LeaseState::Lost);
        assert_eq!(
            s.acquire(&mut con, &claim("t5", Some(old_done), None))
                .unwrap(),
            unfenced
        );
        // Foreign data: a hash where the lease should be.
        let _: () = redis::pipe()
            .del(lease)
            .hset(lease, "f", "v")
            .query(&mut con)
            .unwrap();
        let err = s.acquire(&mut con, &claim("t3", None, None)).unwrap_err();
        assert!(matches!(err, CallError::Redis(e) if e.to_string().contains("WRONGTYPE")));
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    /// A retried fenced acquire (its first reply lost) whose counter has
    /// expired meanwhile (a `fence_ttl` shorter than the reply took) still
    /// gets a token, above the one the lost reply carried.
    #[test]
    fn a_retried_fenced_acquire_survives_its_counter_expiring() {
        let server = super::test_server::RedisServer::start();
        let mut con = server.connection();
        let s = Scripts::new();
        let claim = Claim {
            lease_key: "sf:r:v1:{k:a}:lease",
            fence_key: "sf:r:v1:{k:a}:fence",
            followed_done: None,
            token: "t1",
            lease_ms: 10_000,
            fence_ttl_ms: Some(60_000),
        };
        let Acquire::Acquired { fence: Some(first) } = s.acquire(&mut con, &claim).unwrap() else {
            panic!("a fenced acquire returns a token");
        };
        let _: () = redis::cmd("DEL")
            .arg(claim.fence_key)
            .query(&mut con)
            .unwrap();
        let retried = s.acquire(&mut con, &claim).unwrap();
        let Acquire::Acquired { fence: Some(again) } = retried else {
            panic!("{retried:?}");
        };
        assert!(again >= first, "{again} < {first}");
    }
}
