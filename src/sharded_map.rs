//! The in-flight table: keys to flights, split into cache-padded shards so
//! that calls on different keys rarely touch the same lock or cache line.
//! The shard is picked by the top bits of the key's hash; each shard's
//! table and the decisions taken under its lock are in [`flights`](crate::flights).

use std::num::NonZeroUsize;

use crossbeam_utils::CachePadded;

use crate::call::Call;
use crate::flights::{Entered, FlightId, Flights, GiveUp, HandOver, Removed};
use crate::key::KeyArg;
use crate::policy::Policy;
use crate::stats::{Stats, UnlockedCounters};
use crate::sync::{Arc, Mutex, current_thread};

/// Where a flight lives and the rules it runs under.
pub(crate) struct FlightCtx<'g, K, V> {
    pub(crate) shard: &'g Shard<K, V>,
    pub(crate) policy: &'g Policy,
}

impl<K, V> Clone for FlightCtx<'_, K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for FlightCtx<'_, K, V> {}

pub(crate) struct ShardedMap<K, V> {
    shards: Box<[CachePadded<Shard<K, V>>]>,
}

pub(crate) struct Shard<K, V> {
    flights: Mutex<Flights<K, V>>,
    pub(crate) counters: UnlockedCounters,
}

/// The number of shards a group gets unless the builder says otherwise.
pub(crate) fn default_shard_count() -> usize {
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
    pub(crate) fn new(count: usize) -> Self {
        assert!(count >= 1, "validated by the builder");
        let shards = (0..count)
            .map(|_| {
                CachePadded::new(Shard {
                    flights: Mutex::new(Flights::new()),
                    counters: UnlockedCounters::default(),
                })
            })
            .collect();
        ShardedMap { shards }
    }

    pub(crate) fn shard(&self, hash: u64) -> &Shard<K, V> {
        // Multiply-shift maps the hash's top bits onto any shard count, so
        // the count need not be a power of two.
        let index = (u128::from(hash) * self.shards.len() as u128) >> 64;
        &self.shards[index as usize]
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

impl<K, V> Shard<K, V> {
    /// Joins the live flight for `key`, or starts one led by this thread
    /// (taking the key out of `key`; a key left there is the caller's to
    /// drop, outside the lock).
    ///
    /// # Panics
    ///
    /// If the live flight for `key` is led by the calling thread (waiting on
    /// it would deadlock), or if the key's `Eq`, `Borrow` or `Clone`
    /// panics, or calls back into a group. Nothing is changed in any case.
    #[inline(always)]
    pub(crate) fn enter<A: KeyArg<K>>(
        &self,
        hash: u64,
        key: &mut Option<A>,
        policy: &Policy,
        candidate: bool,
    ) -> Entered<V> {
        let me = current_thread();
        Flights::enter(self.flights.lock(), hash, key, policy, candidate, me)
    }

    /// A leader gives its flight up without a value. If a follower with a
    /// function of its own is still waiting (and, for a failure, the retry
    /// budget allows), the flight stays in the shard under the same id,
    /// leaderless, and that follower is elected to rerun it
    /// ([`Call::elect`]); everyone else keeps waiting on the same call, so a
    /// rerun is one flight, never a herd. Otherwise the flight is removed.
    pub(crate) fn hand_over(&self, id: FlightId, why: GiveUp) -> HandOver<K, V> {
        self.flights.lock().hand_over(id, why)
    }

    /// The follower elected on `call` takes the lead of its flight. Returns
    /// the flight's id.
    pub(crate) fn claim(&self, call: &Arc<Call<V>>) -> FlightId {
        let me = current_thread();
        self.flights.lock().claim(call, me)
    }

    /// Takes the leader's own flight out, whether or not it was forgotten.
    #[inline(always)]
    pub(crate) fn remove(&self, id: FlightId) -> Removed<K, V> {
        self.flights.lock().remove(id)
    }

    /// Detaches the live flight for `key` from new callers.
    pub(crate) fn forget<A: KeyArg<K>>(&self, hash: u64, key: &A) -> bool {
        self.flights.lock().forget(hash, key)
    }

    fn in_flight(&self) -> usize {
        self.flights.lock().in_flight()
    }

    fn add_stats_to(&self, stats: &mut Stats) {
        self.flights.lock().add_stats_to(stats);
        self.counters.add_to(stats);
    }
}
