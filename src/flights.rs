//! One shard's table of flights, and every decision taken under its lock:
//! who leads, who follows, who replaces a flight too old to join, who is
//! elected to rerun a failed one.
//!
//! A shard holds a short vector of flights rather than a hash map. The key
//! is hashed once by the group, and a flight is found by comparing the full
//! 64-bit hash before calling the key's `Eq`. In blocking code every
//! in-flight key has a leader thread running its function, so a shard holds
//! at most (threads ÷ shards) live entries, and a scan of a few cached
//! hashes beats rehashing into a map. A vector also lets a forgotten flight
//! stay findable by its leader (by id) while new callers for the same key
//! start a fresh flight beside it. For standard buffer keys (`String` and
//! the like) and keys without drop glue (`u64`), a landed flight stays in
//! place as the shard's one vacant slot, and the next leader writes its key
//! over that buffer and its fields in place: no allocation, and no flight
//! moved through the stack (a copy that stalls on store forwarding).
//!
//! The only user code that runs here is the key's `Eq` and `Borrow` (to
//! find a flight) and its `Clone` (a leader's copy of the key);
//! [`KeyCodeUnderLock`] turns a call back into a group from there into a
//! panic instead of a deadlock. No key whose `Drop` can run user code is
//! dropped under the lock, and no caller drops such a key but its own (see
//! [`is_recyclable`](crate::key)).

use std::time::Instant;

use crate::call::Call;
use crate::key::{KeyArg, is_recyclable};
use crate::policy::Policy;
use crate::stats::Stats;
use crate::sync::{Arc, KeyCodeUnderLock, ShardGuard, ThreadToken, has_aged};

/// Identifies one flight within its shard, so a leader removes its own
/// flight and never a newer one for the same key (Go issue 31420).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlightId(u64);

pub(crate) struct Flights<K, V> {
    list: Vec<Flight<K, V>>,
    next_id: u64,
    // Counted under the lock the call already holds, so they cost nothing.
    leader_runs: u64,
    followers_joined: u64,
    followers_promoted: u64,
    forgets: u64,
    replacements: u64,
    overflows: u64,
    /// Whether a landed flight may stay in the list as a vacant slot (see
    /// [`is_recyclable`]). Kept here rather than passed along, so the
    /// uncontended path carries one fewer value.
    recycle_keys: bool,
}

pub(crate) struct Flight<K, V> {
    hash: u64,
    id: FlightId,
    key: K,
    /// `None` while the flight waits for the follower elected to rerun it.
    leader: Option<ThreadToken>,
    /// A forgotten (or replaced) flight still runs, and its leader still
    /// removes it, but no new caller joins it.
    forgotten: bool,
    /// Allocated by the first follower; a lone leader never needs one.
    call: Option<Arc<Call<V>>>,
    /// Followers that joined; final once the leader removes the flight.
    followers: usize,
    /// A landed flight left in place (at most one per shard, and only for
    /// key types whose `Drop` runs no user code), so the next leader writes
    /// its key over this one's buffer and its fields in place: for `String`
    /// and `u64` keys the uncontended path allocates nothing and copies no
    /// flight. A vacant slot is also `forgotten`, so no lookup matches it.
    vacant: bool,
    /// When the flight started; only kept when a `max_flight_age` is set.
    started: Option<Instant>,
    /// 0 for a first run; n for the n-th rerun after a failure.
    attempt: u32,
}

/// Why a leader gives its flight up without a value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GiveUp {
    /// It failed (or panicked) under a retry policy allowing `retries`
    /// reruns in a row.
    Failed { retries: u32 },
    /// Its guard was dropped unfilled.
    Abandoned,
}

/// What became of a flight its leader gave up.
pub(crate) enum HandOver<K, V> {
    /// It stays in its shard, and a follower has been elected to rerun it.
    Elected,
    /// Nobody can take over: it was removed like a landed flight.
    Removed(Removed<K, V>),
}

/// How a caller entered a flight.
pub(crate) enum Entered<V> {
    Leader {
        id: FlightId,
        /// Whether this flight replaces one that outlived `max_flight_age`
        /// (and took over its followers).
        replacing: bool,
    },
    Follower(Arc<Call<V>>),
    /// The flight has `max_followers` waiting already.
    Full,
}

/// What a caller finds in the live flight for its key.
enum Arrival<V> {
    /// It followed the flight, or the cap turned it away.
    Entered(Entered<V>),
    /// The flight outlived `max_flight_age`: the caller replaces it.
    TooOld,
    /// The caller leads it: waiting would deadlock.
    OwnFlight,
}

/// Where a new flight goes: over the vacant slot (its key already written
/// there), or pushed with a key of its own.
enum Home<K> {
    Vacant(usize),
    New(K),
}

/// What a leader takes back out of its shard when its function returns.
pub(crate) struct Removed<K, V> {
    pub(crate) call: Option<Arc<Call<V>>>,
    pub(crate) followers: usize,
    /// The flight's key, for the leader to drop outside the lock once its
    /// followers are served; `None` when the flight stays as the shard's
    /// vacant slot.
    pub(crate) key: Option<K>,
}

impl<K, V> Flights<K, V> {
    pub(crate) fn new() -> Self {
        Flights {
            list: Vec::new(),
            next_id: 0,
            leader_runs: 0,
            followers_joined: 0,
            followers_promoted: 0,
            forgets: 0,
            replacements: 0,
            overflows: 0,
            recycle_keys: is_recyclable::<K>(),
        }
    }
}

impl<K, V> Flights<K, V> {
    /// Takes a flight out for good: it stays in place as the shard's vacant
    /// slot (for a recyclable key type, if the shard has none yet), or its
    /// key goes back to the caller, to be dropped outside the lock.
    #[inline(always)]
    pub(crate) fn remove(&mut self, id: FlightId) -> Removed<K, V> {
        let position = self
            .list
            .iter()
            .position(|flight| flight.id == id && !flight.vacant)
            .expect("a flight is removed only by its leader, exactly once");
        if self.recycle_keys && self.vacancy().is_none() {
            let flight = &mut self.list[position];
            flight.vacant = true;
            flight.forgotten = true;
            flight.leader = None;
            return Removed {
                call: flight.call.take(),
                followers: std::mem::take(&mut flight.followers),
                key: None,
            };
        }
        let flight = self.list.swap_remove(position);
        Removed {
            call: flight.call,
            followers: flight.followers,
            key: Some(flight.key),
        }
    }

    /// Where the vacant slot is, if the shard has one.
    #[inline(always)]
    fn vacancy(&self) -> Option<usize> {
        if !self.recycle_keys {
            return None;
        }
        self.list.iter().position(|flight| flight.vacant)
    }

    /// A flight by its id: its leader's (or elected follower's) handle.
    fn by_id(&mut self, id: FlightId) -> &mut Flight<K, V> {
        self.list
            .iter_mut()
            .find(|flight| flight.id == id && !flight.vacant)
            .expect("a flight stays in its shard until its leader removes it")
    }

    /// A caller found the live flight at `index`: it joins as a follower
    /// (or is turned away by the follower cap), unless the flight is too
    /// old to join or is led by the caller itself. Out of line: the
    /// uncontended call never gets here, and keeping it small keeps that
    /// call in registers.
    #[inline(never)]
    fn arrive(
        &mut self,
        index: usize,
        me: ThreadToken,
        policy: &Policy,
        candidate: bool,
    ) -> Arrival<V> {
        let flight = &mut self.list[index];
        // A flight waiting for its elected follower is never too old: its
        // rerun has not started. Age is judged before recursion: a flight
        // whose leader can no longer land it (its guard leaked with
        // `mem::forget`, say) is replaced like any hung one, even by the
        // thread that leaked it.
        let too_old = match (policy.max_flight_age, flight.started, flight.leader) {
            (Some(limit), Some(started), Some(_)) => has_aged(started, limit),
            _ => false,
        };
        if too_old {
            return Arrival::TooOld;
        }
        if flight.leader == Some(me) {
            return Arrival::OwnFlight;
        }
        if let Some(cap) = policy.max_followers {
            let departed = flight.call.as_ref().map_or(0, |call| call.departed());
            if flight.followers - departed >= cap {
                self.overflows += 1;
                return Arrival::Entered(Entered::Full);
            }
        }
        let leader = flight.leader;
        let call = Arc::clone(
            flight
                .call
                .get_or_insert_with(|| Arc::new(Call::new(leader))),
        );
        flight.followers += 1;
        if candidate {
            call.add_candidate();
        }
        self.followers_joined += 1;
        Arrival::Entered(Entered::Follower(call))
    }

    /// Where the flight a new caller for `key` would join is: same hash
    /// (compared first, so the key's `Eq` runs only on a likely match), not
    /// forgotten, equal key.
    fn live<A: KeyArg<K>>(&self, hash: u64, key: &A) -> Option<usize> {
        self.list
            .iter()
            .position(|flight| flight.hash == hash && !flight.forgotten && key.matches(&flight.key))
    }

    /// Joins the live flight for `key`, or starts one led by `me` (taking
    /// the key out of `key`; a key left there is the caller's to drop,
    /// outside the lock). Takes the shard's lock guard and releases it
    /// before any panic of its own, since a panic hook may call into the
    /// group; the uncontended path then returns its `Entered` straight to
    /// the caller, with no wrapper to unpack.
    ///
    /// # Panics
    ///
    /// If the live flight for `key` is led by `me` (waiting on it would
    /// deadlock), or if the key's `Eq`, `Borrow` or `Clone` panics, or calls
    /// back into a group. Nothing is changed in any case.
    #[inline(always)]
    pub(crate) fn enter<A: KeyArg<K>>(
        mut flights: ShardGuard<'_, Self>,
        hash: u64,
        key: &mut Option<A>,
        policy: &Policy,
        candidate: bool,
        me: ThreadToken,
    ) -> Entered<V> {
        let key_code = KeyCodeUnderLock::begin();
        let lookup = key.as_ref().expect("a caller enters with its key");
        let mut replaced = None;
        if let Some(index) = flights.live(hash, lookup) {
            match flights.arrive(index, me, policy, candidate) {
                Arrival::Entered(entered) => return entered,
                Arrival::TooOld => replaced = Some(index),
                Arrival::OwnFlight => {
                    drop(key_code);
                    drop(flights);
                    waiting_for_itself();
                }
            }
        }
        // The key's `Clone` may panic: nothing has been changed yet (a
        // vacant slot whose buffer it was writing stays vacant).
        let arg = key.take().expect("checked above");
        let home = match flights.vacancy() {
            Some(index) => {
                arg.write_into(&mut flights.list[index].key);
                Home::Vacant(index)
            }
            None => Home::New(arg.into_key()),
        };
        drop(key_code);
        // The old leader keeps running and removes only its own flight, now
        // without followers: they wait on the same call, which the
        // replacement adopts, so none of them re-enters.
        let (call, followers) = match replaced {
            Some(index) => {
                let old = &mut flights.list[index];
                old.forgotten = true;
                let adopted = (old.call.take(), std::mem::take(&mut old.followers));
                if let Some(call) = &adopted.0 {
                    // Its waiters now wait on this thread, which may hold one.
                    call.led_by(Some(me));
                }
                flights.replacements += 1;
                adopted
            }
            None => (None, 0),
        };
        let id = FlightId(flights.next_id);
        flights.next_id += 1;
        flights.leader_runs += 1;
        let started = policy.max_flight_age.map(|_| Instant::now());
        match home {
            // Field by field, in place: building a whole `Flight` to move
            // into the list costs a copy through the stack that stalls.
            Home::Vacant(index) => {
                let slot = &mut flights.list[index];
                slot.hash = hash;
                slot.id = id;
                slot.leader = Some(me);
                slot.forgotten = false;
                slot.call = call;
                slot.followers = followers;
                slot.started = started;
                slot.attempt = 0;
                slot.vacant = false;
            }
            Home::New(key) => flights.list.push(Flight {
                hash,
                id,
                key,
                leader: Some(me),
                forgotten: false,
                call,
                followers,
                started,
                attempt: 0,
                vacant: false,
            }),
        }
        Entered::Leader {
            id,
            replacing: replaced.is_some(),
        }
    }

    /// A leader gives its flight up without a value. If a follower with a
    /// function of its own is still waiting (and, for a failure, the retry
    /// budget allows), the flight stays in the shard under the same id,
    /// leaderless, and that follower is elected to rerun it
    /// ([`Call::elect`]); everyone else keeps waiting on the same call, so a
    /// rerun is one flight, never a herd. Otherwise the flight is removed.
    pub(crate) fn hand_over(&mut self, id: FlightId, why: GiveUp) -> HandOver<K, V> {
        let flight = self.by_id(id);
        let allowed = match why {
            GiveUp::Failed { retries } => flight.attempt < retries,
            GiveUp::Abandoned => true,
        };
        if allowed && flight.call.as_ref().is_some_and(|call| call.elect()) {
            flight.leader = None;
            if let GiveUp::Failed { .. } = why {
                flight.attempt += 1;
            }
            if flight.started.is_some() {
                flight.started = Some(Instant::now());
            }
            return HandOver::Elected;
        }
        // Under the same lock: a follower joining now would be counted
        // neither as a candidate nor as one to serve.
        HandOver::Removed(self.remove(id))
    }

    /// The follower elected on `call`, `me`, takes the lead of its flight.
    /// Returns the flight's id.
    pub(crate) fn claim(&mut self, call: &Arc<Call<V>>, me: ThreadToken) -> FlightId {
        let flight = self
            .list
            .iter_mut()
            .find(|flight| {
                flight
                    .call
                    .as_ref()
                    .is_some_and(|own| Arc::ptr_eq(own, call))
            })
            .expect("an elected follower's flight waits for it in its shard");
        debug_assert!(flight.leader.is_none());
        flight.leader = Some(me);
        flight.followers -= 1;
        let id = flight.id;
        self.followers_promoted += 1;
        id
    }

    /// Detaches the live flight for `key` from new callers.
    pub(crate) fn forget<A: KeyArg<K>>(&mut self, hash: u64, key: &A) -> bool {
        let key_code = KeyCodeUnderLock::begin();
        let found = self.live(hash, key);
        drop(key_code);
        match found {
            Some(index) => {
                self.list[index].forgotten = true;
                self.forgets += 1;
                true
            }
            None => false,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.list.iter().filter(|flight| !flight.forgotten).count()
    }

    pub(crate) fn add_stats_to(&self, stats: &mut Stats) {
        stats.leader_runs += self.leader_runs;
        stats.followers_joined += self.followers_joined;
        stats.followers_promoted += self.followers_promoted;
        stats.forgets += self.forgets;
        stats.replacements += self.replacements;
        stats.overflows += self.overflows;
    }
}

#[cold]
#[inline(never)]
fn waiting_for_itself() -> ! {
    panic!(
        "sync_singleflight: recursive call for a key whose flight this thread is already \
         leading; waiting for itself would deadlock"
    );
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::{Mutex, current_thread};

    fn lead<K, A: KeyArg<K>>(shard: &Mutex<Flights<K, u32>>, key: A) -> FlightId {
        let me = current_thread();
        match Flights::enter(
            shard.lock(),
            7,
            &mut Some(key),
            &Policy::default(),
            true,
            me,
        ) {
            Entered::Leader { id, .. } => id,
            _ => panic!("the key should have started a flight"),
        }
    }

    fn slots(shard: &Mutex<Flights<String, u32>>) -> Vec<(String, bool)> {
        shard
            .lock()
            .list
            .iter()
            .map(|flight| (flight.key.clone(), flight.vacant))
            .collect()
    }

    // Every key here hashes to 7 on purpose: only `Eq` tells them apart, so
    // a vacant slot that a lookup could match would show.
    #[test]
    fn a_landed_string_flight_stays_as_one_vacant_slot_that_nothing_joins() {
        let shard = &Mutex::new(Flights::<String, u32>::new());

        let a = lead(shard, "a");
        let removed = shard.lock().remove(a);
        assert!(removed.key.is_none(), "kept in place, not handed back");
        assert_eq!(slots(shard), [("a".to_string(), true)]);
        assert_eq!(
            shard.lock().in_flight(),
            0,
            "a vacant slot is not in flight"
        );

        // The same key again leads a new flight, in the vacant slot.
        let again = lead(shard, "a");
        assert_ne!(again, a);
        assert_eq!(slots(shard), [("a".to_string(), false)]);

        // Two at once: the second is pushed; landing both leaves one vacancy
        // and hands the other key back to be dropped outside the lock.
        let b = lead(shard, "b");
        assert_eq!(shard.lock().in_flight(), 2);
        assert!(shard.lock().remove(again).key.is_none());
        assert_eq!(shard.lock().remove(b).key.as_deref(), Some("b"));
        assert_eq!(slots(shard), [("a".to_string(), true)]);

        // A vacant slot is invisible to `forget`, and its old key's buffer
        // takes the next key.
        assert!(!shard.lock().forget(7, &"a"));
        let c = lead(shard, "c");
        assert_eq!(slots(shard), [("c".to_string(), false)]);
        assert!(shard.lock().remove(c).key.is_none());
        let mut stats = Stats::default();
        shard.lock().add_stats_to(&mut stats);
        assert_eq!(stats.leader_runs, 4);
    }

    #[test]
    fn keys_with_drop_glue_outside_std_buffers_never_leave_a_vacant_slot() {
        let shard = &Mutex::new(Flights::<Arc<str>, u32>::new());
        let id = lead(shard, "k");
        assert_eq!(shard.lock().remove(id).key.as_deref(), Some("k"));
        assert!(shard.lock().list.is_empty());
    }

    #[test]
    fn keys_without_drop_glue_leave_a_vacant_slot_too() {
        let shard = &Mutex::new(Flights::<u64, u32>::new());
        for key in [1u64, 2] {
            let id = lead(shard, &key);
            assert_eq!(shard.lock().remove(id).key, None);
            let flights = shard.lock();
            assert_eq!(flights.list.len(), 1);
            assert!(flights.list[0].vacant && flights.list[0].key == key);
        }
    }
}
