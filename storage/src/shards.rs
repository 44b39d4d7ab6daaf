//! Main's data: a map split into shards, each behind its own lock.
//!
//! A key is hashed once; the hash picks the shard (from middle bits) and
//! finds the entry in that shard's table (from the low bits and the top
//! seven, which the table uses), so no lookup hashes twice. When children
//! read a copy of the data in shared memory, that one hash is the shared
//! table's and each shard is a set of whole stripes of it
//! ([`Hasher::Shared`]).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use yuki_channel::sync;

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;

use crate::clock::Clock;
use crate::entry::{Entry, NEVER};

/// Reads main's clock at most once per operation, and only when an entry
/// with a deadline is met.
pub(crate) struct Now<'a> {
    clock: &'a dyn Clock,
    at: Option<u64>,
}

impl<'a> Now<'a> {
    pub(crate) fn new(clock: &'a dyn Clock) -> Now<'a> {
        Now { clock, at: None }
    }

    #[inline]
    pub(crate) fn get(&mut self) -> u64 {
        *self
            .at
            .get_or_insert_with(|| u64::try_from(self.clock.now().as_nanos()).unwrap_or(NEVER - 1))
    }
}

/// A table of this many slots or fewer is kept whatever it holds: below
/// it, giving memory back is not worth the moves.
const KEEP_SLOTS: usize = 64;

/// Once tables have freed this many bytes, the allocator is asked to hand
/// free memory back to the system ([`give_back`]): often enough that a
/// store emptied key by key shrinks in the system's eyes too, rarely
/// enough that the walk of the heap this costs stays a small share of the
/// deletes that freed it.
const GIVE_BACK_BYTES: usize = 16 << 20;

/// Bytes freed by tables since the last [`give_back`] that gave back.
static FREED: AtomicUsize = AtomicUsize::new(0);

/// Notes that a table of `slots` entries was freed.
fn freed(slots: usize) {
    FREED.fetch_add(slots * std::mem::size_of::<Entry>(), Ordering::Relaxed);
}

/// Asks the allocator to return free memory to the system once tables
/// have freed much: without it, glibc keeps freed memory that lies below
/// memory still in use, and the process's resident size stays at its
/// peak. Costs one load otherwise; call it with no shard locked, as it
/// may take a while.
pub(crate) fn give_back() {
    if FREED.load(Ordering::Relaxed) >= GIVE_BACK_BYTES
        && FREED.swap(0, Ordering::Relaxed) >= GIVE_BACK_BYTES
    {
        trim();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases memory the allocator holds free;
    // it may be called at any time, from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// One shard's table.
#[derive(Default)]
pub(crate) struct Shard {
    table: HashTable<Entry>,
    /// How many entries have a deadline: shards with none skip the clock.
    with_ttl: usize,
}

impl Shard {
    #[inline]
    pub(crate) fn find(&self, hash: u64, key: &str) -> Option<&Entry> {
        self.table.find(hash, |e| e.is(key))
    }

    /// The entry if it exists and has not expired.
    #[inline]
    pub(crate) fn find_live(&self, hash: u64, key: &str, now: &mut Now<'_>) -> Option<&Entry> {
        self.find(hash, key).filter(|e| e.live(now))
    }

    /// Sets `key` to a copy of `value`, reusing the old allocation when the
    /// length is the same.
    /// `hasher` rehashes the keys when the table grows.
    pub(crate) fn put(
        &mut self,
        hasher: &Hasher,
        hash: u64,
        key: &str,
        value: &[u8],
        expires: u64,
    ) {
        match self.table.find_mut(hash, |e| e.is(key)) {
            Some(e) => {
                e.set_value(key, value);
                self.with_ttl = self.with_ttl + usize::from(expires != NEVER)
                    - usize::from(e.expires() != NEVER);
                e.set_expires(expires);
            }
            None => {
                self.with_ttl += usize::from(expires != NEVER);
                self.table
                    .insert_unique(hash, Entry::new(key, value, expires), |e| {
                        hasher.hash_one(e.key())
                    });
            }
        }
    }

    /// Gives an existing entry the deadline `expires` ([`NEVER`] for none).
    pub(crate) fn set_expires(&mut self, hash: u64, key: &str, expires: u64) {
        if let Some(e) = self.table.find_mut(hash, |e| e.is(key)) {
            self.with_ttl =
                self.with_ttl + usize::from(expires != NEVER) - usize::from(e.expires() != NEVER);
            e.set_expires(expires);
        }
    }

    /// Replaces the value of an existing entry, keeping its deadline.
    pub(crate) fn replace_value(&mut self, hash: u64, key: &str, value: &[u8]) {
        if let Some(e) = self.table.find_mut(hash, |e| e.is(key)) {
            e.set_value(key, value);
        }
    }

    /// Removes `key`, returning its entry (live or expired).
    /// `hasher` rehashes the keys when the table shrinks.
    pub(crate) fn remove(&mut self, hasher: &Hasher, hash: u64, key: &str) -> Option<Entry> {
        let found = self.table.find_entry(hash, |e| e.is(key)).ok()?;
        let (e, _) = found.remove();
        self.with_ttl -= usize::from(e.expires() != NEVER);
        self.shrink_if_sparse(hasher);
        Some(e)
    }

    /// Gives memory back once the table is mostly empty: at under an
    /// eighth full it shrinks to about twice what it holds, so a table
    /// emptied key by key shrinks a few times, each costing a move of
    /// what is left, never once per removal.
    #[inline]
    fn shrink_if_sparse(&mut self, hasher: &Hasher) {
        let (len, slots) = (self.table.len(), self.table.capacity());
        if slots > KEEP_SLOTS && len < slots / 8 {
            self.table.shrink_to(len * 2, |e| hasher.hash_one(e.key()));
            freed(slots - self.table.capacity());
        }
    }

    /// How many entries the table has room for (its memory, in entries).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// The live entries.
    pub(crate) fn live<'s>(&'s self, now: &mut Now<'_>) -> impl Iterator<Item = &'s Entry> + 's {
        let now = if self.with_ttl == 0 { 0 } else { now.get() };
        self.table
            .iter()
            .filter(move |e| e.expires() == NEVER || e.expires() > now)
    }

    /// How many live entries there are.
    pub(crate) fn live_len(&self, now: &mut Now<'_>) -> usize {
        if self.with_ttl == 0 {
            self.table.len()
        } else {
            self.live(now).count()
        }
    }

    /// Removes every expired entry, handing each key to `gone`.
    /// `hasher` rehashes the keys when the table shrinks.
    pub(crate) fn purge(
        &mut self,
        hasher: &Hasher,
        now: &mut Now<'_>,
        mut gone: impl FnMut(&str),
    ) -> usize {
        if self.with_ttl == 0 {
            return 0;
        }
        let now = now.get();
        let mut removed = 0;
        self.table.retain(|e| {
            let keep = e.expires() == NEVER || e.expires() > now;
            if !keep {
                gone(e.key());
                removed += 1;
            }
            keep
        });
        self.with_ttl -= removed;
        self.shrink_if_sparse(hasher);
        removed
    }

    /// Removes everything, handing each live key to `gone`.
    pub(crate) fn clear(&mut self, now: &mut Now<'_>, mut gone: impl FnMut(&str)) -> usize {
        let mut removed = 0;
        for e in self.live(now) {
            gone(e.key());
            removed += 1;
        }
        // The table's memory goes too, not only its entries.
        freed(self.table.capacity());
        self.table = HashTable::new();
        self.with_ttl = 0;
        removed
    }
}

/// What hashes keys, for the shards and their tables alike.
#[derive(Clone)]
pub(crate) enum Hasher {
    /// foldhash, seeded by this process alone.
    Private(foldhash::fast::RandomState),
    /// The hash of the table children read in shared memory, under its
    /// seed: one hash serves the map and the table, and a shard holds
    /// whole stripes of the table (`shard = stripe % shards`), so the
    /// shard's lock makes its holder the only writer of those stripes,
    /// which lets a write rewrite a value in place without the table's
    /// own lock (`Table::set_owned`).
    ///
    /// Children know the seed (they need it to find keys), so one that
    /// picks keys to collide slows main's map as it already could slow
    /// the table's index; it cannot make main misplace or lose a key.
    Shared {
        /// The table's seed.
        seed: u64,
        /// How many stripes the table has (a power of two).
        stripes: usize,
    },
}

impl Default for Hasher {
    fn default() -> Hasher {
        Hasher::Private(foldhash::fast::RandomState::default())
    }
}

impl Hasher {
    #[inline]
    pub(crate) fn hash_one(&self, key: &str) -> u64 {
        match self {
            Hasher::Private(state) => state.hash_one(key),
            Hasher::Shared { seed, .. } => crate::shared::hash(*seed, key.as_bytes()),
        }
    }
}

/// The shards, and the hasher that places keys in them.
pub(crate) struct Shards {
    shards: Box<[CachePadded<RwLock<Shard>>]>,
    hasher: Hasher,
    /// A key's shard is `(hash >> shift) & mask`.
    shift: u32,
    mask: usize,
}

pub(crate) type ReadGuard<'a> = RwLockReadGuard<'a, Shard>;
pub(crate) type WriteGuard<'a> = RwLockWriteGuard<'a, Shard>;

impl Shards {
    /// `count` is rounded up to a power of two (and, with a shared
    /// hasher, capped at the table's stripe count: a shard is at least
    /// one stripe).
    pub(crate) fn new(count: usize, hasher: Hasher) -> Shards {
        let mut count = count.clamp(1, 1 << 12).next_power_of_two();
        let shift = match hasher {
            Hasher::Private(_) => 40,
            Hasher::Shared { stripes, .. } => {
                debug_assert!(stripes.is_power_of_two());
                count = count.min(stripes);
                crate::shared::STRIPE_SHIFT
            }
        };
        Shards {
            shards: (0..count).map(|_| CachePadded::default()).collect(),
            hasher,
            shift,
            mask: count - 1,
        }
    }

    #[inline]
    pub(crate) fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    pub(crate) fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    #[inline]
    pub(crate) fn index(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize & self.mask
    }

    #[inline]
    pub(crate) fn read(&self, index: usize) -> ReadGuard<'_> {
        // A panic while a lock was held cannot leave a table half changed
        // (every change is one table call), so a poisoned lock is still good.
        sync::read(&self.shards[index])
    }

    #[inline]
    pub(crate) fn write(&self, index: usize) -> WriteGuard<'_> {
        sync::write(&self.shards[index])
    }

    /// Every shard's read lock, taken in shard order.
    pub(crate) fn read_all(&self) -> Vec<ReadGuard<'_>> {
        (0..self.shards.len()).map(|i| self.read(i)).collect()
    }

    /// Every shard's write lock, taken in shard order.
    pub(crate) fn write_all(&self) -> Vec<WriteGuard<'_>> {
        (0..self.shards.len()).map(|i| self.write(i)).collect()
    }

    pub(crate) fn count(&self) -> usize {
        self.shards.len()
    }
}

/// The shards a batch touches, as a bitset in shard order: which to lock,
/// in order, and where each one's guard sits among those locked, found in
/// constant time where a search of the sorted list cost a few dozen
/// instructions an operation.
pub(crate) struct Touched {
    /// Per 64 shards: which are touched, and how many are before them.
    words: Vec<(u64, usize)>,
}

impl Touched {
    /// The shards at `indices` (each below `count`), repeats allowed.
    pub(crate) fn new(count: usize, indices: impl IntoIterator<Item = usize>) -> Touched {
        let mut words = vec![(0u64, 0usize); count.div_ceil(64)];
        for i in indices {
            if let Some(word) = words.get_mut(i / 64) {
                word.0 |= 1 << (i % 64);
            }
        }
        let mut before = 0;
        for word in &mut words {
            word.1 = before;
            before += word.0.count_ones() as usize;
        }
        Touched { words }
    }

    /// The touched shards' indices, in shard order.
    pub(crate) fn shards(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &(bits, _))| {
            let mut left = bits;
            std::iter::from_fn(move || {
                (left != 0).then(|| {
                    let bit = left.trailing_zeros() as usize;
                    left &= left - 1;
                    w * 64 + bit
                })
            })
        })
    }

    /// Where touched shard `index` comes in [`Touched::shards`].
    #[inline]
    pub(crate) fn slot(&self, index: usize) -> usize {
        let (bits, before) = self.words.get(index / 64).copied().unwrap_or_default();
        before + (bits & ((1u64 << (index % 64)) - 1)).count_ones() as usize
    }
}

#[cfg(test)]
mod tests {
    /// The bitset gives the sorted, deduplicated shards and each one's
    /// place among them, for one word and for many, at their edges.
    #[test]
    fn touched_shards_come_in_order_with_their_places() {
        for (count, indices) in [
            (1, vec![0, 0]),
            (64, vec![63, 0, 5, 5, 62, 1]),
            (128, vec![64, 63, 127, 0, 64]),
            (4096, vec![4095, 7, 64, 2000, 7, 128, 4032]),
            (64, vec![]),
        ] {
            let touched = Touched::new(count, indices.iter().copied());
            let mut sorted = indices.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(
                touched.shards().collect::<Vec<_>>(),
                sorted,
                "{count} shards"
            );
            for (place, &index) in sorted.iter().enumerate() {
                assert_eq!(touched.slot(index), place, "shard {index} of {count}");
            }
        }
    }

    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn put(shard: &mut Shard, shards: &Shards, key: &str, value: &[u8], expires: u64) {
        shard.put(shards.hasher(), shards.hash(key), key, value, expires);
    }

    #[test]
    fn deadlines_are_counted_through_every_change() {
        let shards = Shards::new(1, Hasher::default());
        let clock = ManualClock::default();
        let mut shard = Shard::default();
        put(&mut shard, &shards, "a", b"1", 10);
        put(&mut shard, &shards, "b", b"1", 10);
        put(&mut shard, &shards, "c", b"1", NEVER);
        assert_eq!(shard.with_ttl, 2);
        put(&mut shard, &shards, "a", b"22", NEVER); // a plain set drops the deadline
        assert_eq!(shard.with_ttl, 1);
        put(&mut shard, &shards, "c", b"3", 10);
        assert_eq!(shard.with_ttl, 2);
        shard.replace_value(shards.hash("c"), "c", b"4"); // keeps the deadline
        assert_eq!(shard.with_ttl, 2);
        assert!(
            shard
                .remove(shards.hasher(), shards.hash("b"), "b")
                .is_some()
        );
        assert_eq!(shard.with_ttl, 1);

        clock.advance(Duration::from_nanos(10));
        let mut now = Now::new(&clock);
        assert_eq!(shard.live_len(&mut now), 1);
        let mut gone = Vec::new();
        assert_eq!(
            shard.purge(shards.hasher(), &mut now, |k| gone.push(k.to_owned())),
            1
        );
        assert_eq!(gone, ["c"]);
        assert_eq!(shard.with_ttl, 0);
        assert_eq!(shard.live_len(&mut now), 1);
        assert_eq!(shard.clear(&mut now, |_| {}), 1);
        assert_eq!(shard.live_len(&mut now), 0);
    }

    #[test]
    fn values_are_replaced_whatever_their_size() {
        let shards = Shards::new(1, Hasher::default());
        let mut shard = Shard::default();
        let hash = shards.hash("k");
        let mut big = Vec::with_capacity(4096);
        big.extend_from_slice(b"abc");
        shard.put(shards.hasher(), hash, "k", &big, NEVER);
        let e = shard.find(hash, "k").unwrap();
        assert_eq!((e.key(), e.value()), ("k", &b"abc"[..]));
        shard.put(shards.hasher(), hash, "k", b"xyz", NEVER); // same length: in place
        shard.put(shards.hasher(), hash, "k", b"longer", NEVER);
        let e = shard.find(hash, "k").unwrap();
        assert_eq!(e.value(), b"longer");
        assert!(shard.find(shards.hash("x"), "x").is_none());
    }

    #[test]
    fn keys_are_found_after_the_table_grows_and_rehashes_them() {
        let shards = Shards::new(1, Hasher::default());
        let mut shard = Shard::default();
        let keys: Vec<String> = (0..2_000).map(|i| format!("key:{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            put(&mut shard, &shards, k, &i.to_le_bytes(), NEVER);
        }
        assert_eq!(shard.table.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            let e = shard.find(shards.hash(k), k).unwrap();
            assert_eq!((e.key(), e.value()), (k.as_str(), &i.to_le_bytes()[..]));
        }
        assert!(shard.find(shards.hash("key:2000"), "key:2000").is_none());
    }

    #[test]
    fn a_table_gives_memory_back_when_mostly_empty_and_keeps_its_keys() {
        let shards = Shards::new(1, Hasher::default());
        let clock = ManualClock::default();
        let mut now = Now::new(&clock);
        let mut shard = Shard::default();
        let keys: Vec<String> = (0..100_000).map(|i| format!("key:{i}")).collect();
        for k in &keys {
            put(&mut shard, &shards, k, k.as_bytes(), NEVER);
        }
        let full = shard.capacity();
        assert!(full >= keys.len());
        // Deleting most keys, one by one, shrinks the table.
        for k in &keys[1_000..] {
            assert!(shard.remove(shards.hasher(), shards.hash(k), k).is_some());
        }
        assert!(
            shard.capacity() <= full / 16,
            "{} of {full}",
            shard.capacity()
        );
        for k in &keys[..1_000] {
            let e = shard
                .find(shards.hash(k), k)
                .expect("a key kept through the shrinks");
            assert_eq!(e.value(), k.as_bytes());
        }
        assert!(shard.find(shards.hash("key:1000"), "key:1000").is_none());
        // Purging most keys does too.
        for k in &keys[1_000..] {
            put(&mut shard, &shards, k, k.as_bytes(), 10);
        }
        assert!(shard.capacity() >= keys.len());
        clock.advance(Duration::from_nanos(10));
        let mut later = Now::new(&clock);
        assert_eq!(shard.purge(shards.hasher(), &mut later, |_| {}), 99_000);
        assert!(
            shard.capacity() <= full / 16,
            "{} of {full}",
            shard.capacity()
        );
        assert_eq!(shard.live_len(&mut now), 1_000);
        // Clearing gives everything back.
        for k in &keys {
            put(&mut shard, &shards, k, k.as_bytes(), NEVER);
        }
        assert_eq!(shard.clear(&mut now, |_| {}), keys.len());
        assert_eq!(shard.capacity(), 0);
        // A small table is left as it is.
        put(&mut shard, &shards, "a", b"1", NEVER);
        put(&mut shard, &shards, "b", b"1", NEVER);
        let small = shard.capacity();
        assert!(
            shard
                .remove(shards.hasher(), shards.hash("a"), "a")
                .is_some()
        );
        assert_eq!(shard.capacity(), small);
    }

    #[test]
    fn shard_counts_are_powers_of_two() {
        assert_eq!(Shards::new(0, Hasher::default()).count(), 1);
        assert_eq!(Shards::new(3, Hasher::default()).count(), 4);
        assert_eq!(Shards::new(64, Hasher::default()).count(), 64);
        let s = Shards::new(8, Hasher::default());
        assert!((0..1000).all(|i| s.index(s.hash(&i.to_string())) < 8));
    }

    #[test]
    fn with_the_shared_tables_hash_a_shard_holds_whole_stripes() {
        let shared = |count, stripes| Shards::new(count, Hasher::Shared { seed: 7, stripes });
        // At most one shard per stripe.
        assert_eq!(shared(64, 16).count(), 16);
        let s = shared(8, 64);
        assert_eq!(s.count(), 8);
        let mut shard_of_stripe = std::collections::HashMap::new();
        let mut used = std::collections::HashSet::new();
        for i in 0..4_000 {
            let key = format!("key:{i}");
            let h = s.hash(&key);
            assert_eq!(
                h,
                crate::shared::hash(7, key.as_bytes()),
                "the table's hash"
            );
            let stripe = (h >> crate::shared::STRIPE_SHIFT) as usize & 63;
            let shard = s.index(h);
            assert_eq!(
                *shard_of_stripe.entry(stripe).or_insert(shard),
                shard,
                "stripe {stripe} split over shards"
            );
            used.insert(shard);
        }
        assert_eq!(used.len(), 8, "keys spread over every shard");
    }
}
