//! The in-flight table: keys to flights, split into cache-padded shards so
//! that calls on different keys rarely touch the same lock or cache line.
//!
//! Each shard holds a short vector of flights rather than a hash map. The
//! key is hashed once by the group; the shard is picked by the top bits of
//! that hash and a flight is found by comparing the full 64-bit hash before
//! calling the key's `Eq`. In blocking code every in-flight key has a leader
//! thread running its function, so a shard holds at most (threads ÷ shards)
//! live entries, and a scan of a few cached hashes beats rehashing into a map.
//! A vector also lets a forgotten flight stay findable by its leader (by id)
//! while new callers for the same key start a fresh flight beside it.

use std::borrow::Borrow;
use std::num::NonZeroUsize;

use crossbeam_utils::CachePadded;

use crate::call::Call;
use crate::stats::{Stats, UnlockedCounters};
use crate::sync::{Arc, Mutex, ThreadToken, current_thread};

/// Identifies one flight within its shard, so a leader removes its own
/// flight and never a newer one for the same key (Go issue 31420).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlightId(u64);

pub(crate) struct ShardedMap<K, V> {
    shards: Box<[CachePadded<Shard<K, V>>]>,
    /// `64 - log2(shards.len())`: the hash's top bits pick the shard.
    shift: u32,
}

pub(crate) struct Shard<K, V> {
    flights: Mutex<Flights<K, V>>,
    pub(crate) counters: UnlockedCounters,
}

struct Flights<K, V> {
    list: Vec<Flight<K, V>>,
    next_id: u64,
    // Counted under the lock the call already holds, so they cost nothing.
    leader_runs: u64,
    followers_joined: u64,
    forgets: u64,
    /// The key of the last flight to land, kept so the next leader can
    /// `clone_into` its buffer instead of allocating: for `String` keys
    /// this makes the uncontended path allocation-free. It costs one key
    /// per shard, held until the shard's next flight replaces it.
    spare_key: Option<K>,
}

struct Flight<K, V> {
    hash: u64,
    id: FlightId,
    key: K,
    leader: ThreadToken,
    /// A forgotten flight still runs, and its leader still removes it, but
    /// no new caller joins it.
    forgotten: bool,
    /// Allocated by the first follower; a lone leader never needs one.
    call: Option<Arc<Call<V>>>,
    /// Followers that joined; final once the leader removes the flight.
    followers: usize,
}

/// How a caller entered a flight.
pub(crate) enum Entered<V> {
    Leader(FlightId),
    Follower(Arc<Call<V>>),
}

/// What a leader takes back out of its shard when its function returns.
pub(crate) struct Removed<K, V> {
    pub(crate) call: Option<Arc<Call<V>>>,
    pub(crate) followers: usize,
    /// The spare key its own key displaced, for the leader to drop outside
    /// the lock once its followers are served (a key's `Drop` is user code).
    pub(crate) replaced_key: Option<K>,
}

fn default_shard_count() -> usize {
    if cfg!(loom) {
        // Models explore every lock; two shards keep them small and still
        // exercise the shard choice.
        return 2;
    }
    static COUNT: once_cell::race::OnceNonZeroUsize = once_cell::race::OnceNonZeroUsize::new();
    COUNT
        .get_or_init(|| {
            // Four shards per core keeps two busy threads on distinct keys
            // apart most of the time, for a few KiB per group.
            let cores = std::thread::available_parallelism().map_or(4, NonZeroUsize::get);
            let count = (cores * 4).next_power_of_two().clamp(16, 1024);
            NonZeroUsize::new(count).expect("clamped to at least 16")
        })
        .get()
}

impl<K, V> ShardedMap<K, V> {
    pub(crate) fn new() -> Self {
        let count = default_shard_count();
        debug_assert!(count.is_power_of_two() && count >= 2);
        let shards = (0..count)
            .map(|_| {
                CachePadded::new(Shard {
                    flights: Mutex::new(Flights {
                        list: Vec::new(),
                        next_id: 0,
                        leader_runs: 0,
                        followers_joined: 0,
                        forgets: 0,
                        spare_key: None,
                    }),
                    counters: UnlockedCounters::default(),
                })
            })
            .collect();
        ShardedMap {
            shards,
            shift: 64 - count.trailing_zeros(),
        }
    }

    pub(crate) fn shard(&self, hash: u64) -> &Shard<K, V> {
        &self.shards[(hash >> self.shift) as usize]
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.shards.iter().map(|shard| shard.in_flight()).sum()
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for shard in self.shards.iter() {
            shard.add_stats_to(&mut stats);
        }
        stats
    }
}

impl<K, V> Flights<K, V> {
    /// The flight a new caller for `key` would join: same hash (compared
    /// first, so the key's `Eq` runs only on a likely match), not
    /// forgotten, equal key.
    fn live<Q>(&mut self, hash: u64, key: &Q) -> Option<&mut Flight<K, V>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        self.list
            .iter_mut()
            .find(|flight| flight.hash == hash && !flight.forgotten && flight.key.borrow() == key)
    }
}

impl<K, V> Shard<K, V> {
    /// Joins the live flight for `key`, or starts one led by this thread.
    ///
    /// # Panics
    ///
    /// If the live flight for `key` is led by the calling thread (waiting on
    /// it would deadlock), or if the key's `Eq`, `Borrow` or `ToOwned`
    /// panics. Nothing is changed in either case.
    pub(crate) fn enter<Q>(&self, hash: u64, key: &Q) -> Entered<V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq + ToOwned<Owned = K>,
    {
        let me = current_thread();
        let mut flights = self.flights.lock();
        if let Some(flight) = flights.live(hash, key) {
            if flight.leader == me {
                drop(flights);
                panic!(
                    "sync_singleflight: recursive call for a key whose flight this thread is \
                     already leading; waiting for itself would deadlock"
                );
            }
            let call = Arc::clone(flight.call.get_or_insert_with(|| Arc::new(Call::new())));
            flight.followers += 1;
            flights.followers_joined += 1;
            return Entered::Follower(call);
        }
        // `clone_into` may drop the spare's old contents (user code) under
        // the lock; a panic there leaves the list untouched.
        let key = match flights.spare_key.take() {
            Some(mut spare) => {
                key.clone_into(&mut spare);
                spare
            }
            None => key.to_owned(),
        };
        let id = FlightId(flights.next_id);
        flights.next_id += 1;
        flights.leader_runs += 1;
        flights.list.push(Flight {
            hash,
            id,
            key,
            leader: me,
            forgotten: false,
            call: None,
            followers: 0,
        });
        Entered::Leader(id)
    }

    /// Takes the leader's own flight out, whether or not it was forgotten.
    pub(crate) fn remove(&self, id: FlightId) -> Removed<K, V> {
        let mut flights = self.flights.lock();
        let position = flights
            .list
            .iter()
            .position(|flight| flight.id == id)
            .expect("a flight is removed only by its leader, exactly once");
        let flight = flights.list.swap_remove(position);
        let replaced = flights.spare_key.replace(flight.key);
        drop(flights);
        Removed {
            call: flight.call,
            followers: flight.followers,
            replaced_key: replaced,
        }
    }

    /// Detaches the live flight for `key` from new callers.
    pub(crate) fn forget<Q>(&self, hash: u64, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Eq,
    {
        let mut flights = self.flights.lock();
        match flights.live(hash, key) {
            Some(flight) => {
                flight.forgotten = true;
                flights.forgets += 1;
                true
            }
            None => false,
        }
    }

    fn in_flight(&self) -> usize {
        let flights = self.flights.lock();
        flights
            .list
            .iter()
            .filter(|flight| !flight.forgotten)
            .count()
    }

    fn add_stats_to(&self, stats: &mut Stats) {
        {
            let flights = self.flights.lock();
            stats.leader_runs += flights.leader_runs;
            stats.followers_joined += flights.followers_joined;
            stats.forgets += flights.forgets;
        }
        self.counters.add_to(stats);
    }
}
