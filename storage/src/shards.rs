//! Main's data: a map split into shards, each behind its own lock.
//!
//! A key is hashed once; the hash picks the shard (from middle bits) and
//! finds the entry in that shard's maps (from the low bits and the top
//! seven, which the maps use), so no lookup hashes twice. When children
//! read the data in shared memory, the entries live in the shared table
//! and a shard maps each key to its entry there (falling back to an entry
//! of its own for a key the table cannot hold); that one hash is then the
//! table's, and each shard is a set of whole stripes of it
//! ([`Hasher::Shared`]).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use yuki_channel::sync;

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;

use crate::clock::Clock;
use crate::entry::{Entry, NEVER};
use crate::mirror::Sink;
use crate::shared::{Table, at_of, word_of};

/// Whether an entry with deadline `expires` ([`NEVER`] for none) is live at
/// `now` (main's clock, nanoseconds).
#[inline]
pub(crate) fn live_at(expires: u64, now: u64) -> bool {
    expires == NEVER || expires > now
}

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

    /// Whether an entry with deadline `expires` is live now; reads the
    /// clock only if it has a deadline.
    #[inline]
    pub(crate) fn keeps(&mut self, expires: u64) -> bool {
        expires == NEVER || live_at(expires, self.get())
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

/// Notes that a map freed `bytes`.
fn freed(bytes: usize) {
    FREED.fetch_add(bytes, Ordering::Relaxed);
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

/// One shard's map.
#[derive(Default)]
pub(crate) struct Shard {
    /// Entries main keeps in its own memory: every key when there is no
    /// shared table; with one, the keys it could not hold.
    own: HashTable<Entry>,
    /// With a shared table, the keys whose entry it holds, by the entry's
    /// offset ([`word_of`]): the value lives once, in the region. Four
    /// bytes a key keep this map in the processor's cache, so a lookup
    /// misses the cache once, on the entry, as one in `own` does.
    held: HashTable<u32>,
    /// How many entries have a deadline: shards with none skip the clock.
    with_ttl: usize,
}

/// A key's entry, found in a shard: in main's own memory, or one the
/// shared table holds. Borrowed from the shard, whose lock the borrower
/// holds: no write of the key can happen while it lives.
#[derive(Clone, Copy)]
pub(crate) enum Found<'a> {
    Own(&'a Entry),
    Held { table: &'a Table, at: usize },
}

impl<'a> Found<'a> {
    /// The deadline, or [`NEVER`].
    #[inline]
    pub(crate) fn expires(&self) -> u64 {
        match *self {
            Found::Own(e) => e.expires(),
            Found::Held { table, at } => table.deadline_at(at),
        }
    }

    #[inline]
    pub(crate) fn value(&self) -> &'a [u8] {
        match *self {
            Found::Own(e) => e.value(),
            // SAFETY: `at` is a live entry of the shard this borrows, whose
            // lock the borrower holds; writes of its key need the shard
            // mutably, which cannot happen while `self` lives.
            Found::Held { table, at } => unsafe { table.entry_at(at) }.1,
        }
    }

    pub(crate) fn key(&self) -> &'a str {
        match *self {
            Found::Own(e) => e.key(),
            // SAFETY: as for `value`. The bytes were a &str when stored;
            // the fallback is unreachable.
            Found::Held { table, at } => {
                std::str::from_utf8(unsafe { table.entry_at(at) }.0).unwrap_or_default()
            }
        }
    }

    #[inline]
    pub(crate) fn live(&self, now: &mut Now<'_>) -> bool {
        now.keeps(self.expires())
    }
}

impl Shard {
    /// `key`'s entry, reading the entries `table` holds (the store's
    /// table, if it has one).
    #[inline]
    pub(crate) fn find<'a>(
        &'a self,
        table: Option<&'a Table>,
        hash: u64,
        key: &str,
    ) -> Option<Found<'a>> {
        if let Some(table) = table {
            if let Some(&w) = self.held.find(hash, |&w| table.holds_key(at_of(w), key)) {
                return Some(Found::Held {
                    table,
                    at: at_of(w),
                });
            }
            if self.own.is_empty() {
                return None;
            }
        }
        self.own.find(hash, |e| e.is(key)).map(Found::Own)
    }

    /// The entry if it exists and has not expired.
    #[inline]
    pub(crate) fn find_live<'a>(
        &'a self,
        table: Option<&'a Table>,
        hash: u64,
        key: &str,
        now: &mut Now<'_>,
    ) -> Option<Found<'a>> {
        self.find(table, hash, key).filter(|e| e.live(now))
    }

    /// Counts a deadline changed from `old` to `new`.
    #[inline]
    fn recount(&mut self, old: u64, new: u64) {
        self.with_ttl = self.with_ttl + usize::from(new != NEVER) - usize::from(old != NEVER);
    }

    /// Sets `key` to a copy of `value` until `expires`: in its entry in the
    /// table when the table holds (or can now take) the key, in main's
    /// map otherwise. `hasher` rehashes keys when a map grows.
    #[inline]
    pub(crate) fn put<S: Sink + ?Sized>(
        &mut self,
        sink: &S,
        hasher: &Hasher,
        hash: u64,
        key: &str,
        value: &[u8],
        expires: u64,
    ) {
        let table = sink.table();
        if let Some(table) = table
            && let Ok(found) = self
                .held
                .find_entry(hash, |&w| table.holds_key(at_of(w), key))
        {
            let at = at_of(*found.get());
            let old = table.deadline_at(at);
            match sink.rewrite(hash, at, key, value, expires) {
                Some(moved) => *found.into_mut() = word_of(moved),
                None => {
                    let _ = found.remove();
                    self.own
                        .insert_unique(hash, Entry::new(key, value, expires), |e| {
                            hasher.hash_one(e.key())
                        });
                }
            }
            self.recount(old, expires);
            return;
        }
        let old = match self.own.find_entry(hash, |e| e.is(key)) {
            Ok(found) => {
                let old = found.get().expires();
                // A key main kept goes to the table as soon as it has room.
                match sink.insert(hash, key, value, expires).zip(table) {
                    Some((at, table)) => {
                        let _ = found.remove();
                        self.hold(table, hash, at);
                    }
                    None => {
                        let e = found.into_mut();
                        e.set_value(key, value);
                        e.set_expires(expires);
                    }
                }
                old
            }
            Err(_) => {
                match sink.insert(hash, key, value, expires).zip(table) {
                    Some((at, table)) => self.hold(table, hash, at),
                    None => {
                        self.own
                            .insert_unique(hash, Entry::new(key, value, expires), |e| {
                                hasher.hash_one(e.key())
                            });
                    }
                }
                NEVER
            }
        };
        self.recount(old, expires);
    }

    /// Notes that `table` holds the key hashed `hash` at `at`.
    fn hold(&mut self, table: &Table, hash: u64, at: usize) {
        self.held
            .insert_unique(hash, word_of(at), |&w| table.hash_at(at_of(w)));
    }

    /// Gives an existing entry the deadline `expires` ([`NEVER`] for none).
    pub(crate) fn set_expires<S: Sink + ?Sized>(
        &mut self,
        sink: &S,
        hash: u64,
        key: &str,
        expires: u64,
    ) {
        if let Some(table) = sink.table()
            && let Some(&w) = self.held.find(hash, |&w| table.holds_key(at_of(w), key))
        {
            let at = at_of(w);
            let old = table.deadline_at(at);
            sink.set_deadline(hash, at, expires);
            self.recount(old, expires);
        } else if let Some(e) = self.own.find_mut(hash, |e| e.is(key)) {
            // The table does not hold the key: nothing to change there.
            let old = e.expires();
            e.set_expires(expires);
            self.recount(old, expires);
        }
    }

    /// Removes `key` (live or expired), from the table too; its deadline
    /// if it was there. `hasher` rehashes keys when a map shrinks.
    pub(crate) fn remove<S: Sink + ?Sized>(
        &mut self,
        sink: &S,
        hasher: &Hasher,
        hash: u64,
        key: &str,
    ) -> Option<u64> {
        let table = sink.table();
        let held = table.and_then(|table| {
            let found = self
                .held
                .find_entry(hash, |&w| table.holds_key(at_of(w), key))
                .ok()?;
            let expires = table.deadline_at(at_of(*found.get()));
            let _ = found.remove();
            Some(expires)
        });
        let expires = match held {
            Some(expires) => expires,
            None => {
                let found = self.own.find_entry(hash, |e| e.is(key)).ok()?;
                found.remove().0.expires()
            }
        };
        sink.remove(hash, key);
        self.with_ttl -= usize::from(expires != NEVER);
        self.shrink_if_sparse(hasher, table);
        Some(expires)
    }

    /// Gives memory back once a map is mostly empty: at under an eighth
    /// full it shrinks to about twice what it holds, so a map emptied key
    /// by key shrinks a few times, each costing a move of what is left,
    /// never once per removal.
    #[inline]
    fn shrink_if_sparse(&mut self, hasher: &Hasher, table: Option<&Table>) {
        let (len, slots) = (self.own.len(), self.own.capacity());
        if slots > KEEP_SLOTS && len < slots / 8 {
            self.own.shrink_to(len * 2, |e| hasher.hash_one(e.key()));
            freed((slots - self.own.capacity()) * std::mem::size_of::<Entry>());
        }
        let (len, slots) = (self.held.len(), self.held.capacity());
        if let Some(table) = table
            && slots > KEEP_SLOTS
            && len < slots / 8
        {
            self.held.shrink_to(len * 2, |&w| table.hash_at(at_of(w)));
            freed((slots - self.held.capacity()) * std::mem::size_of::<u32>());
        }
    }

    /// How many entries the maps have room for (their memory, in entries).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.own.capacity() + self.held.capacity()
    }

    /// The live entries.
    pub(crate) fn live<'s>(
        &'s self,
        table: Option<&'s Table>,
        now: &mut Now<'_>,
    ) -> impl Iterator<Item = Found<'s>> + 's {
        let now = if self.with_ttl == 0 { 0 } else { now.get() };
        let held = table.into_iter().flat_map(move |table| {
            self.held.iter().map(move |&w| Found::Held {
                table,
                at: at_of(w),
            })
        });
        self.own
            .iter()
            .map(Found::Own)
            .chain(held)
            .filter(move |e| live_at(e.expires(), now))
    }

    /// How many live entries there are.
    pub(crate) fn live_len(&self, table: Option<&Table>, now: &mut Now<'_>) -> usize {
        if self.with_ttl == 0 {
            self.own.len() + self.held.len()
        } else {
            self.live(table, now).count()
        }
    }

    /// Removes every expired entry, handing each key to `gone` once it is
    /// out of the shard (the caller takes it out of the table).
    /// `hasher` rehashes keys when a map shrinks.
    pub(crate) fn purge(
        &mut self,
        table: Option<&Table>,
        hasher: &Hasher,
        now: &mut Now<'_>,
        mut gone: impl FnMut(&str),
    ) -> usize {
        if self.with_ttl == 0 {
            return 0;
        }
        let now = now.get();
        let expired = |expires: u64| !live_at(expires, now);
        let mut removed = 0;
        self.own.retain(|e| {
            let keep = !expired(e.expires());
            if !keep {
                gone(e.key());
                removed += 1;
            }
            keep
        });
        if let Some(table) = table {
            let mut keys = Vec::new();
            self.held.retain(|&mut w| {
                let at = at_of(w);
                let keep = !expired(table.deadline_at(at));
                if !keep {
                    // A copy: taking the key out of the table may reuse
                    // its memory.
                    // SAFETY: a live entry of this shard, locked for
                    // writing by the caller, and nothing writes the key
                    // until `retain` is done.
                    let key = unsafe { table.entry_at(at) }.0;
                    keys.push(String::from_utf8_lossy(key).into_owned());
                }
                keep
            });
            removed += keys.len();
            keys.iter().for_each(|k| gone(k));
        }
        self.with_ttl -= removed;
        self.shrink_if_sparse(hasher, table);
        removed
    }

    /// Removes everything, handing each live key to `gone` (the caller
    /// empties the table).
    pub(crate) fn clear(
        &mut self,
        table: Option<&Table>,
        now: &mut Now<'_>,
        mut gone: impl FnMut(&str),
    ) -> usize {
        let mut removed = 0;
        for e in self.live(table, now) {
            gone(e.key());
            removed += 1;
        }
        // The maps' memory goes too, not only their entries.
        freed(
            self.own.capacity() * std::mem::size_of::<Entry>()
                + self.held.capacity() * std::mem::size_of::<u32>(),
        );
        self.own = HashTable::new();
        self.held = HashTable::new();
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
    /// own lock (`Table::rewrite`).
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
        // A panic while a lock was held cannot leave a shard half changed:
        // no step of a change panics once it began (a failed allocation
        // aborts), so a poisoned lock is still good.
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
    use crate::mirror::Nowhere;
    use crate::shared::tests::Region;
    use crate::shared::{Lookup, Table};
    use std::sync::Arc;
    use std::time::Duration;

    fn put(shard: &mut Shard, shards: &Shards, key: &str, value: &[u8], expires: u64) {
        shard.put(
            &Nowhere,
            shards.hasher(),
            shards.hash(key),
            key,
            value,
            expires,
        );
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
        put(&mut shard, &shards, "c", b"4", 10); // the same deadline
        assert_eq!(shard.with_ttl, 2);
        assert!(
            shard
                .remove(&Nowhere, shards.hasher(), shards.hash("b"), "b")
                .is_some()
        );
        assert_eq!(shard.with_ttl, 1);

        clock.advance(Duration::from_nanos(10));
        let mut now = Now::new(&clock);
        assert_eq!(shard.live_len(None, &mut now), 1);
        let mut gone = Vec::new();
        assert_eq!(
            shard.purge(None, shards.hasher(), &mut now, |k| gone.push(k.to_owned())),
            1
        );
        assert_eq!(gone, ["c"]);
        assert_eq!(shard.with_ttl, 0);
        assert_eq!(shard.live_len(None, &mut now), 1);
        assert_eq!(shard.clear(None, &mut now, |_| {}), 1);
        assert_eq!(shard.live_len(None, &mut now), 0);
    }

    #[test]
    fn values_are_replaced_whatever_their_size() {
        let shards = Shards::new(1, Hasher::default());
        let mut shard = Shard::default();
        let hash = shards.hash("k");
        let mut big = Vec::with_capacity(4096);
        big.extend_from_slice(b"abc");
        shard.put(&Nowhere, shards.hasher(), hash, "k", &big, NEVER);
        let e = shard.find(None, hash, "k").unwrap();
        assert_eq!((e.key(), e.value()), ("k", &b"abc"[..]));
        shard.put(&Nowhere, shards.hasher(), hash, "k", b"xyz", NEVER); // same length: in place
        shard.put(&Nowhere, shards.hasher(), hash, "k", b"longer", NEVER);
        let e = shard.find(None, hash, "k").unwrap();
        assert_eq!(e.value(), b"longer");
        assert!(shard.find(None, shards.hash("x"), "x").is_none());
    }

    #[test]
    fn keys_are_found_after_the_table_grows_and_rehashes_them() {
        let shards = Shards::new(1, Hasher::default());
        let mut shard = Shard::default();
        let keys: Vec<String> = (0..2_000).map(|i| format!("key:{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            put(&mut shard, &shards, k, &i.to_le_bytes(), NEVER);
        }
        assert_eq!(shard.own.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            let e = shard.find(None, shards.hash(k), k).unwrap();
            assert_eq!((e.key(), e.value()), (k.as_str(), &i.to_le_bytes()[..]));
        }
        assert!(
            shard
                .find(None, shards.hash("key:2000"), "key:2000")
                .is_none()
        );
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
            assert!(
                shard
                    .remove(&Nowhere, shards.hasher(), shards.hash(k), k)
                    .is_some()
            );
        }
        assert!(
            shard.capacity() <= full / 16,
            "{} of {full}",
            shard.capacity()
        );
        for k in &keys[..1_000] {
            let e = shard
                .find(None, shards.hash(k), k)
                .expect("a key kept through the shrinks");
            assert_eq!(e.value(), k.as_bytes());
        }
        assert!(
            shard
                .find(None, shards.hash("key:1000"), "key:1000")
                .is_none()
        );
        // Purging most keys does too.
        for k in &keys[1_000..] {
            put(&mut shard, &shards, k, k.as_bytes(), 10);
        }
        assert!(shard.capacity() >= keys.len());
        clock.advance(Duration::from_nanos(10));
        let mut later = Now::new(&clock);
        assert_eq!(
            shard.purge(None, shards.hasher(), &mut later, |_| {}),
            99_000
        );
        assert!(
            shard.capacity() <= full / 16,
            "{} of {full}",
            shard.capacity()
        );
        assert_eq!(shard.live_len(None, &mut now), 1_000);
        // Clearing gives everything back.
        for k in &keys {
            put(&mut shard, &shards, k, k.as_bytes(), NEVER);
        }
        assert_eq!(shard.clear(None, &mut now, |_| {}), keys.len());
        assert_eq!(shard.capacity(), 0);
        // A small table is left as it is.
        put(&mut shard, &shards, "a", b"1", NEVER);
        put(&mut shard, &shards, "b", b"1", NEVER);
        let small = shard.capacity();
        assert!(
            shard
                .remove(&Nowhere, shards.hasher(), shards.hash("a"), "a")
                .is_some()
        );
        assert_eq!(shard.capacity(), small);
    }

    /// A shard of a store with a shared table in a region of `len` bytes.
    fn with_table(len: usize) -> (Arc<Region>, Table, Shards) {
        let region = Region::new(len);
        let table = region.table();
        let (seed, stripes) = table.seed_and_stripes();
        (
            region,
            table,
            Shards::new(1, Hasher::Shared { seed, stripes }),
        )
    }

    fn held_put(shard: &mut Shard, t: &Table, s: &Shards, key: &str, value: &[u8], expires: u64) {
        shard.put(t, s.hasher(), s.hash(key), key, value, expires);
    }

    fn value_of(shard: &Shard, t: &Table, s: &Shards, key: &str) -> Option<(Vec<u8>, bool)> {
        shard
            .find(Some(t), s.hash(key), key)
            .map(|e| (e.value().to_vec(), matches!(e, Found::Held { .. })))
    }

    #[test]
    fn with_a_table_a_shard_keeps_in_its_own_map_only_what_the_table_cannot_hold() {
        let (region, t, s) = with_table(64 << 10);
        let v = region.view();
        let mut shard = Shard::default();
        held_put(&mut shard, &t, &s, "a", b"1", NEVER);
        assert_eq!(value_of(&shard, &t, &s, "a"), Some((b"1".to_vec(), true)));
        assert_eq!((shard.held.len(), shard.own.len()), (1, 0));
        // Larger than the region: main keeps it, readers ask main.
        let big = vec![3u8; 80 << 10];
        held_put(&mut shard, &t, &s, "a", &big, NEVER);
        assert_eq!(value_of(&shard, &t, &s, "a"), Some((big.clone(), false)));
        assert_eq!((shard.held.len(), shard.own.len()), (0, 1));
        assert!(t.incomplete());
        let mut out = Vec::new();
        assert_eq!(v.get("a", 0, &mut out), Lookup::AskMain);
        // Small again: back in the table.
        held_put(&mut shard, &t, &s, "a", b"22", NEVER);
        assert_eq!(value_of(&shard, &t, &s, "a"), Some((b"22".to_vec(), true)));
        assert_eq!((shard.held.len(), shard.own.len()), (1, 0));
        assert!(!t.incomplete());
        assert_eq!(
            (v.get("a", 0, &mut out), &out[..]),
            (Lookup::Found, &b"22"[..])
        );

        // Deadlines are counted wherever the entry lives.
        let clock = ManualClock::default();
        held_put(&mut shard, &t, &s, "b", b"b", 10);
        held_put(&mut shard, &t, &s, "c", &big, 10);
        assert_eq!(shard.with_ttl, 2);
        shard.set_expires(&t, s.hash("b"), "b", NEVER);
        shard.set_expires(&t, s.hash("c"), "c", NEVER);
        assert_eq!(shard.with_ttl, 0);
        shard.set_expires(&t, s.hash("b"), "b", 10);
        shard.set_expires(&t, s.hash("c"), "c", 10);
        assert_eq!(shard.with_ttl, 2);
        assert_eq!(t.deadline_at(t.entry_of("b").expect("held")), 10);
        clock.advance(Duration::from_nanos(5));
        let mut now = Now::new(&clock);
        assert_eq!(shard.live_len(Some(&t), &mut now), 3);
        clock.advance(Duration::from_nanos(5));
        let mut now = Now::new(&clock);
        assert_eq!(shard.live_len(Some(&t), &mut now), 1);
        let mut gone = Vec::new();
        let purged = shard.purge(Some(&t), s.hasher(), &mut now, |k| {
            t.remove(k);
            gone.push(k.to_owned());
        });
        gone.sort();
        assert_eq!((purged, gone), (2, vec!["b".to_owned(), "c".to_owned()]));
        assert_eq!(shard.with_ttl, 0);
        assert_eq!(v.get("b", 0, &mut out), Lookup::Absent);
        assert!(!t.incomplete(), "a purged key main kept is settled");
        // Removing, listing and clearing see both maps.
        held_put(&mut shard, &t, &s, "d", &big, NEVER);
        let mut keys: Vec<String> = shard
            .live(Some(&t), &mut now)
            .map(|e| e.key().to_owned())
            .collect();
        keys.sort();
        assert_eq!(keys, ["a", "d"]);
        assert_eq!(shard.remove(&t, s.hasher(), s.hash("d"), "d"), Some(NEVER));
        assert_eq!(shard.remove(&t, s.hasher(), s.hash("d"), "d"), None);
        assert!(!t.incomplete());
        assert_eq!(shard.clear(Some(&t), &mut now, |_| {}), 1);
        t.clear();
        assert_eq!(
            shard.find(Some(&t), s.hash("a"), "a").map(|e| e.key()),
            None
        );
    }

    #[test]
    fn a_map_of_held_entries_grows_and_shrinks_and_keeps_its_keys() {
        let (region, t, s) = with_table(16 << 20);
        let v = region.view();
        let mut shard = Shard::default();
        let keys: Vec<String> = (0..20_000).map(|i| format!("key:{i}")).collect();
        for k in &keys {
            held_put(&mut shard, &t, &s, k, k.as_bytes(), NEVER);
        }
        assert_eq!(shard.held.len(), keys.len());
        let full = shard.capacity();
        for k in &keys[500..] {
            assert_eq!(shard.remove(&t, s.hasher(), s.hash(k), k), Some(NEVER));
        }
        assert!(
            shard.capacity() <= full / 16,
            "{} of {full}",
            shard.capacity()
        );
        let mut out = Vec::new();
        for k in &keys[..500] {
            assert_eq!(
                value_of(&shard, &t, &s, k),
                Some((k.as_bytes().to_vec(), true))
            );
            assert_eq!(v.get(k, 0, &mut out), Lookup::Found);
        }
        assert!(shard.find(Some(&t), s.hash("key:500"), "key:500").is_none());
        assert_eq!(v.get("key:500", 0, &mut out), Lookup::Absent);
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
