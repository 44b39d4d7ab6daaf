//! Main's side of the table: the only writer of the region.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::atomic::{Ordering, fence};
use std::sync::{Mutex, MutexGuard};
use yuki_channel::sync;

use super::alloc::{Alloc, MAX_CLASS, class_of, class_size};
use super::hash::hash;
use super::layout::*;
use super::words::Words;

/// The most of a region a table uses: main's map names an entry by its
/// offset in words, in 32 bits ([`word_of`]).
const MAX_LEN: usize = if (usize::MAX as u64) >> 35 == 0 {
    usize::MAX
} else {
    (1u64 << 35) as usize
};

/// An entry's offset as main's map keeps it: in words, in 32 bits, which
/// every offset in a table fits ([`MAX_LEN`]).
#[inline]
pub(crate) fn word_of(at: usize) -> u32 {
    debug_assert!(at < MAX_LEN && at % 8 == 0);
    (at / 8) as u32
}

/// The offset [`word_of`] names.
#[inline]
pub(crate) fn at_of(word: u32) -> usize {
    word as usize * 8
}

/// Main's side: the only writer of the region.
///
/// The entries it gives out (the offsets [`Table::insert`] and
/// [`Table::rewrite`] return) are main's own: main's map keeps them, reads
/// them ([`Table::entry_at`]) and rewrites them in place. The rule that
/// keeps those offsets and borrows sound: an entry moves, is retired or
/// is forgotten only by a write of its own key, made with the key's shard
/// locked for writing, which hands main the new offset; [`Table::clear`]
/// only once main's map holds no offset. Main's store (`shards.rs`,
/// `data.rs`) is the one caller, and keeps it.
pub(crate) struct Table {
    words: Words,
    seed: u64,
    stripes: usize,
    writer: Mutex<Writer>,
}

// SAFETY: the region is reached through atomic words (`Words`), but for
// main's borrows of entries nothing stores to while they last; the
// writer's state and the index and heap's layout change only under
// `writer`, and an entry changes without it only by its key's writer, who
// owns the key's stripe (`Table::rewrite`).
unsafe impl Send for Table {}
unsafe impl Sync for Table {}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("len", &self.words.len())
            .field("stripes", &self.stripes)
            .finish_non_exhaustive()
    }
}

/// Where a key is, or where it would go.
struct Probe {
    /// The key's bucket and its entry.
    found: Option<(usize, usize)>,
    /// The bucket a new key would take, and whether it was never used.
    free: Option<(usize, bool)>,
}

/// What the writer keeps in main's own memory. From the region it reads
/// back only the index and the entries, which nothing but it writes, but
/// for a held entry's value and deadline, rewritten in place by the key's
/// writer (whose changes leave the head's key length and class, and the
/// key, as they were).
struct Writer {
    words: Words,
    seed: u64,
    alloc: Alloc,
    generation: u64,
    index_at: usize,
    index_class: usize,
    log2: u32,
    /// Keys in the index, and keys plus tombstones.
    live: usize,
    used: usize,
    /// The stripes made odd by the operation or batch under way.
    open: Vec<u64>,
    open_list: Vec<usize>,
    batching: bool,
    /// Keys whose latest value the region could not hold: readers must ask
    /// main about them, and about every miss while there are any.
    overflow: HashSet<Box<str>>,
    scratch: Vec<u8>,
}

impl Table {
    /// Lays out an empty table in `len` zeroed, writable bytes at `base`.
    ///
    /// # Safety
    /// `base` is 8-aligned and valid for reads and writes of `len` bytes
    /// for the table's life and after, as long as any [`View`] of it lives
    /// (readers may be mid-read at any moment); nothing else writes it.
    ///
    /// [`View`]: super::View
    pub(crate) unsafe fn create(
        base: NonNull<u8>,
        len: usize,
        seed: u64,
        clock_origin_ns: u64,
    ) -> Result<Table, String> {
        let stripes = STRIPES;
        let heap = heap_at(stripes);
        let index_len = 8 << MIN_INDEX_LOG2;
        if base.as_ptr() as usize % 8 != 0 || len < heap + 2 * class_size(class_of(index_len)) {
            return Err(format!(
                "a shared table needs an 8-aligned region of at least {} bytes, not {len} bytes at {base:p}: give it a larger region",
                heap + 2 * class_size(class_of(index_len))
            ));
        }
        if len > MAX_LEN {
            return Err(format!(
                "a shared table takes at most {MAX_LEN} bytes, not {len}: give it a smaller region"
            ));
        }
        let len = len / 8 * 8;
        // SAFETY: as promised by the caller.
        let words = unsafe { Words::new(base, len) };
        let mut alloc = Alloc::new(heap, len);
        let (index_at, index_class) = alloc
            .take(class_of(index_len))
            .ok_or_else(|| "no room for the first index".to_owned())?;
        words.zero(index_at, index_len);
        words.store(H_VERSION, LAYOUT_VERSION, Ordering::Relaxed);
        words.store(H_LEN, len as u64, Ordering::Relaxed);
        words.store(H_SEED, seed, Ordering::Relaxed);
        words.store(H_CLOCK_ORIGIN, clock_origin_ns, Ordering::Relaxed);
        words.store(H_STRIPES, stripes as u64, Ordering::Relaxed);
        words.store(H_GEN, 0, Ordering::Relaxed);
        words.store(H_INDEX_AT, index_at as u64, Ordering::Relaxed);
        words.store(H_INDEX_LOG2, u64::from(MIN_INDEX_LOG2), Ordering::Relaxed);
        words.store(H_INCOMPLETE, 0, Ordering::Relaxed);
        words.zero(STRIPES_AT, 8 * stripes);
        // The magic last: a reader that sees it sees the rest.
        words.store(H_MAGIC, MAGIC, Ordering::Release);
        let writer = Writer {
            words,
            seed,
            alloc,
            generation: 0,
            index_at,
            index_class,
            log2: MIN_INDEX_LOG2,
            live: 0,
            used: 0,
            open: vec![0; stripes.div_ceil(64)],
            open_list: Vec::new(),
            batching: false,
            overflow: HashSet::new(),
            scratch: Vec::new(),
        };
        Ok(Table {
            words,
            seed,
            stripes,
            writer: Mutex::new(writer),
        })
    }

    /// The table's hash of `key` (the same in every process).
    #[inline]
    pub(crate) fn hash(&self, key: &str) -> u64 {
        hash(self.seed, key.as_bytes())
    }

    /// The seed of the table's hash, and how many stripes it has: what a
    /// caller needs to hash keys as the table does and to know which keys
    /// share a stripe (`stripe_of`).
    pub(crate) fn seed_and_stripes(&self) -> (u64, usize) {
        (self.seed, self.stripes)
    }

    /// Sets `key`, finding its entry through the index: gives a key the
    /// table does not hold an entry (or takes one main kept back into the
    /// table), and moves a held one whose value outgrew its block. The
    /// entry's offset, or `None` if the region cannot hold the key, and
    /// readers are told to ask main about it.
    pub(crate) fn insert(
        &self,
        h: u64,
        key: &str,
        value: &[u8],
        deadline_ns: u64,
    ) -> Option<usize> {
        debug_assert_eq!(h, self.hash(key), "the hash of another key");
        let mut w = sync::lock(&self.writer);
        w.open(stripe_of(h, self.stripes));
        let at = w.set(h, key, value, deadline_ns);
        w.close_all();
        at
    }

    /// Writes a new value and deadline into `key`'s entry at `at`: in
    /// place, without the writer's lock, when the value fits the entry's
    /// block; moved by the writer otherwise. The entry's offset afterwards
    /// (`at`, or where it moved), or `None` if the region could not hold
    /// the new value and main holds the key now.
    ///
    /// `at` is the key's entry, as [`Table::insert`] or this returned it,
    /// and the caller holds the key's stripe: until this returns, no
    /// other thread writes (by any method) a key whose hash has the same
    /// `stripe_of`. Main's store holds the key's shard lock, and its
    /// shards are made of whole stripes. A live entry is never moved or
    /// reused but by a write of its own key, so `at` stays the key's for
    /// as long as the stripe is held.
    #[inline]
    pub(crate) fn rewrite(
        &self,
        h: u64,
        at: usize,
        key: &str,
        value: &[u8],
        deadline_ns: u64,
    ) -> Option<usize> {
        debug_assert_eq!(h, self.hash(key), "the hash of another key");
        debug_assert!(self.holds_key(at, key), "not the key's entry");
        let w = &self.words;
        let (_, class, _) = entry_parts(w.get(at, Ordering::Relaxed).unwrap_or(DEAD));
        let fits = class <= MAX_CLASS
            && w.fits(at, class_size(class))
            && fits_class(class_of(entry_len(key.len(), value.len())), class);
        if !fits {
            return self.insert(h, key, value, deadline_ns);
        }
        self.in_stripe(h, || write_value(w, at, class, key, value, deadline_ns));
        Some(at)
    }

    /// Gives `key`'s entry at `at` (held as for [`Table::rewrite`]) the
    /// deadline `deadline_ns` (`u64::MAX`: never), in place.
    pub(crate) fn set_deadline_at(&self, h: u64, at: usize, deadline_ns: u64) {
        if self.words.fits(at, ENTRY_HEAD) {
            self.in_stripe(h, || {
                self.words.store(at + 8, deadline_ns, Ordering::Relaxed)
            });
        }
    }

    /// Runs `write` inside the odd count of the stripe of `h`, which the
    /// caller holds (see [`Table::rewrite`]): a plain load and store of
    /// the count are enough, as nobody else stores to it meanwhile.
    #[inline]
    fn in_stripe(&self, h: u64, write: impl FnOnce()) {
        let w = &self.words;
        let seq_at = STRIPES_AT + 8 * stripe_of(h, self.stripes);
        let seq = w.load(seq_at, Ordering::Relaxed);
        debug_assert!(seq % 2 == 0, "a held stripe left open");
        w.store(seq_at, seq | 1, Ordering::Relaxed);
        // Whoever reads anything stored after this sees the stripe odd.
        fence(Ordering::Release);
        write();
        w.store(seq_at, (seq | 1) + 1, Ordering::Release);
    }

    /// Whether the entry at `at` is `key`'s (one main holds: see
    /// [`Table::rewrite`]).
    #[inline]
    pub(crate) fn holds_key(&self, at: usize, key: &str) -> bool {
        let w = &self.words;
        let Some(head) = w.get(at, Ordering::Relaxed) else {
            return false;
        };
        let (key_len, _, _) = entry_parts(head);
        head != DEAD
            && key_len == key.len()
            && w.fits(at, ENTRY_HEAD + pad(key_len))
            && w.holds(at + ENTRY_HEAD, key.as_bytes())
    }

    /// The table's hash of the key of the entry at `at`, one main holds.
    pub(crate) fn hash_at(&self, at: usize) -> u64 {
        // SAFETY: a live entry's key is written before the entry is
        // reachable and never again while it lives; its holder calls this
        // (to rehash its map) with the key's shard locked.
        hash(self.seed, unsafe { self.entry_at(at) }.0)
    }

    /// The deadline of the entry at `at`, one main holds.
    #[inline]
    pub(crate) fn deadline_at(&self, at: usize) -> u64 {
        self.words
            .get(at.wrapping_add(8), Ordering::Relaxed)
            .unwrap_or(0)
    }

    /// The key and the value of the entry at `at`, one main holds,
    /// borrowed from the region (both empty if `at` is no entry).
    ///
    /// # Safety
    /// Nothing stores to the entry while the borrows live: the caller
    /// holds the key's shard lock (read or write) for as long, and makes
    /// no write of the key meanwhile. Only a write of the key, made with
    /// its shard locked for writing, stores to a live entry's key or value.
    #[inline]
    pub(crate) unsafe fn entry_at(&self, at: usize) -> (&[u8], &[u8]) {
        let w = &self.words;
        let Some(head) = w.get(at, Ordering::Relaxed) else {
            return (&[], &[]);
        };
        let (key_len, _, value_len) = entry_parts(head);
        if head == DEAD || !w.fits(at, entry_len(key_len, value_len)) {
            return (&[], &[]);
        }
        // SAFETY: in bounds (checked above); nothing stores to them while
        // they are borrowed, as the caller promises.
        unsafe {
            (
                w.bytes(at + ENTRY_HEAD, key_len),
                w.bytes(at + ENTRY_HEAD + pad(key_len), value_len),
            )
        }
    }

    /// Sets `key` to `value` until `deadline_ns` (`u64::MAX`: never), on
    /// the clock whose origin the table was created with. Readers see the
    /// change once this returns; if the region cannot hold it, readers are
    /// told to ask main about the key instead.
    #[cfg(test)]
    pub(crate) fn set(&self, key: &str, value: &[u8], deadline_ns: u64) {
        self.insert(self.hash(key), key, value, deadline_ns);
    }

    /// Gives `key`'s value the deadline `deadline_ns` (`u64::MAX`: never);
    /// nothing if the table does not hold the key (for tests).
    #[cfg(test)]
    pub(crate) fn set_deadline(&self, key: &str, deadline_ns: u64) {
        let h = self.hash(key);
        let mut w = sync::lock(&self.writer);
        if let Some((_, at)) = w.probe(h, key).found {
            w.open(stripe_of(h, self.stripes));
            w.words.store(at + 8, deadline_ns, Ordering::Relaxed);
            w.close_all();
        }
    }

    /// Removes `key`; readers see it absent once this returns.
    pub(crate) fn remove(&self, key: &str) {
        self.remove_hashed(self.hash(key), key);
    }

    /// As [`Table::remove`], given `h`, the table's hash of `key`.
    pub(crate) fn remove_hashed(&self, h: u64, key: &str) {
        debug_assert_eq!(h, self.hash(key), "the hash of another key");
        let mut w = sync::lock(&self.writer);
        w.open(stripe_of(h, self.stripes));
        w.remove(h, key);
        w.close_all();
    }

    /// Removes every key and makes the whole heap free. Main's map must
    /// hold no offset of an entry by then (main's store empties every
    /// shard first, with all of them locked).
    pub(crate) fn clear(&self) {
        let mut w = sync::lock(&self.writer);
        w.overflow.clear();
        w.restart();
    }

    /// Runs `f` with a [`Batch`] whose changes become visible to readers
    /// all at once: a reader sees none of them or all of them, even across
    /// keys read one after another. Calling the table itself from `f`
    /// deadlocks.
    pub(crate) fn batch<R>(&self, f: impl FnOnce(&Batch<'_>) -> R) -> R {
        let mut w = sync::lock(&self.writer);
        w.batching = true;
        let batch = Batch {
            table: self,
            writer: RefCell::new(w),
        };
        f(&batch)
    }

    /// Keys the table holds (for tests).
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        sync::lock(&self.writer).live
    }

    /// Where `key`'s entry lies, if the index has it (for tests).
    #[cfg(test)]
    pub(crate) fn entry_of(&self, key: &str) -> Option<usize> {
        let h = self.hash(key);
        sync::lock(&self.writer)
            .probe(h, key)
            .found
            .map(|(_, at)| at)
    }

    /// Whether some key could not be placed (for tests).
    #[cfg(test)]
    pub(crate) fn incomplete(&self) -> bool {
        !sync::lock(&self.writer).overflow.is_empty()
    }
}

/// Changes made together: see [`Table::batch`].
pub(crate) struct Batch<'a> {
    table: &'a Table,
    writer: RefCell<MutexGuard<'a, Writer>>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").finish_non_exhaustive()
    }
}

impl Batch<'_> {
    /// As [`Table::set`], seen with the rest of the batch.
    #[cfg(test)]
    pub(crate) fn set(&self, key: &str, value: &[u8], deadline_ns: u64) -> Option<usize> {
        self.set_hashed(self.table.hash(key), key, value, deadline_ns)
    }

    /// As [`Table::insert`] and [`Table::rewrite`], seen with the rest of
    /// the batch.
    /// The entry's offset, or `None` if the region could not hold it (see
    /// [`Table::insert`]).
    pub(crate) fn set_hashed(
        &self,
        h: u64,
        key: &str,
        value: &[u8],
        deadline_ns: u64,
    ) -> Option<usize> {
        debug_assert_eq!(h, self.table.hash(key), "the hash of another key");
        let mut w = self.writer.borrow_mut();
        w.open(stripe_of(h, self.table.stripes));
        w.set(h, key, value, deadline_ns)
    }

    /// The table the batch changes.
    pub(crate) fn table(&self) -> &Table {
        self.table
    }

    /// As [`Table::set_deadline_at`], seen with the rest of the batch.
    pub(crate) fn set_deadline_at(&self, h: u64, at: usize, deadline_ns: u64) {
        let mut w = self.writer.borrow_mut();
        if w.words.fits(at, ENTRY_HEAD) {
            w.open(stripe_of(h, self.table.stripes));
            w.words.store(at + 8, deadline_ns, Ordering::Relaxed);
        }
    }

    /// As [`Table::remove`], seen with the rest of the batch.
    #[cfg(test)]
    pub(crate) fn remove(&self, key: &str) {
        self.remove_hashed(self.table.hash(key), key);
    }

    /// As [`Table::remove_hashed`], seen with the rest of the batch.
    pub(crate) fn remove_hashed(&self, h: u64, key: &str) {
        let mut w = self.writer.borrow_mut();
        w.open(stripe_of(h, self.table.stripes));
        w.remove(h, key);
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        // Also when `f` panics: a stripe left odd would send its readers
        // to main for ever.
        let w = self.writer.get_mut();
        w.batching = false;
        w.close_all();
    }
}

impl Writer {
    /// Makes `stripe` odd until [`Writer::close_all`], unless it already is.
    #[inline]
    fn open(&mut self, stripe: usize) {
        let (word, bit) = (stripe / 64, 1u64 << (stripe % 64));
        if self.open[word] & bit != 0 {
            return;
        }
        self.open[word] |= bit;
        self.open_list.push(stripe);
        let seq = STRIPES_AT + 8 * stripe;
        self.words.store(
            seq,
            self.words.load(seq, Ordering::Relaxed) + 1,
            Ordering::Relaxed,
        );
        // Whoever reads anything stored after this sees the stripe odd.
        fence(Ordering::Release);
    }

    /// Closes every open stripe, unless a batch is under way: from here on
    /// readers see the changes.
    #[inline]
    fn close_all(&mut self) {
        if self.batching {
            return;
        }
        while let Some(stripe) = self.open_list.pop() {
            let seq = STRIPES_AT + 8 * stripe;
            self.words.store(
                seq,
                self.words.load(seq, Ordering::Relaxed) + 1,
                Ordering::Release,
            );
            self.open[stripe / 64] = 0;
        }
    }

    fn buckets(&self) -> usize {
        1 << self.log2
    }

    fn probe(&self, h: u64, key: &str) -> Probe {
        let mask = self.buckets() - 1;
        let mut pos = h as usize & mask;
        let mut free = None;
        for _ in 0..=mask {
            let slot = self.index_at + 8 * pos;
            let b = self.words.load(slot, Ordering::Relaxed);
            if b == EMPTY {
                return Probe {
                    found: None,
                    free: Some(free.unwrap_or((slot, true))),
                };
            }
            if b == TOMB {
                free.get_or_insert((slot, false));
            } else if b & TAG_MASK == h & TAG_MASK {
                let at = bucket_at(b);
                let (key_len, _, _) = entry_parts(self.words.load(at, Ordering::Relaxed));
                if key_len == key.len() && self.words.holds(at + ENTRY_HEAD, key.as_bytes()) {
                    return Probe {
                        found: Some((slot, at)),
                        free,
                    };
                }
            }
            pos = (pos + 1) & mask;
        }
        Probe { found: None, free }
    }

    /// Writes a whole entry at `at` (a block of `class`, not reachable by
    /// readers through the index).
    fn write_entry(&self, at: usize, class: usize, key: &str, value: &[u8], deadline: u64) {
        self.words.store(
            at,
            entry_head(key.len(), class, value.len()),
            Ordering::Relaxed,
        );
        self.words.store(at + 8, deadline, Ordering::Relaxed);
        self.words.put_bytes(at + ENTRY_HEAD, key.as_bytes());
        self.words
            .put_bytes(at + ENTRY_HEAD + pad(key.len()), value);
    }

    /// Sets `key` (its stripe open); the entry's offset, or `None` if the
    /// region could not hold it and readers must ask main.
    fn set(&mut self, h: u64, key: &str, value: &[u8], deadline: u64) -> Option<usize> {
        let placed = if key.len() <= MAX_KEY {
            self.place(h, key, value, deadline)
        } else {
            None
        };
        if placed.is_none() {
            self.forget(h, key);
            if self.overflow.is_empty() {
                self.words.store(H_INCOMPLETE, 1, Ordering::Relaxed);
            }
            self.overflow.insert(key.into());
        } else if !self.overflow.is_empty() {
            self.settled(key);
        }
        placed
    }

    /// Takes a block out of use: a reader, or a writer without the lock,
    /// that reaches it through a bucket loaded before sees no key in it.
    fn retire(&mut self, at: usize, class: usize) {
        self.words.store(at, DEAD, Ordering::Relaxed);
        self.alloc.retire(at, class);
    }

    /// Puts the entry in the region; its offset, or `None` if the region
    /// has no room for it.
    #[inline]
    fn place(&mut self, h: u64, key: &str, value: &[u8], deadline: u64) -> Option<usize> {
        let need = entry_len(key.len(), value.len());
        if need > self.words.len() {
            return None;
        }
        let want = class_of(need);
        let probe = self.probe(h, key);
        if let Some((slot, at)) = probe.found {
            let (_, class, _) = entry_parts(self.words.load(at, Ordering::Relaxed));
            if fits_class(want, class) {
                write_value(&self.words, at, class, key, value, deadline);
                return Some(at);
            }
            let Some((new, new_class)) = self.allocate(want) else {
                // No block of the size it wants: a value that still fits
                // its own (much larger) block stays there, rather than
                // leaving the table for main.
                if want > class {
                    return None;
                }
                write_value(&self.words, at, class, key, value, deadline);
                return Some(at);
            };
            self.write_entry(new, new_class, key, value, deadline);
            self.words.store(slot, bucket(h, new), Ordering::Release);
            self.retire(at, class);
            return Some(new);
        }
        let mut free = probe.free;
        let grow = match free {
            Some((_, true)) | None => self.used + 1 > self.buckets() / 4 * 3,
            Some((_, false)) => false,
        };
        if grow {
            let log2 = self.log2_for(self.live + 1);
            if self.rebuild(log2) {
                free = self.probe(h, key).free;
            } else if self.used + 1 >= self.buckets() - self.buckets() / 8 {
                // The index cannot grow, and a fuller one would make every
                // probe long.
                return None;
            }
        }
        let (slot, fresh) = free?;
        let (at, class) = self.allocate(want)?;
        self.write_entry(at, class, key, value, deadline);
        self.words.store(slot, bucket(h, at), Ordering::Release);
        self.live += 1;
        self.used += usize::from(fresh);
        Some(at)
    }

    fn remove(&mut self, h: u64, key: &str) {
        self.forget(h, key);
        if !self.overflow.is_empty() {
            self.settled(key);
        }
        if self.live == 0 && self.alloc.handed_out() > RESTART_BYTES {
            self.restart();
        } else if self.log2 > MIN_INDEX_LOG2 && self.live < self.buckets() / 8 {
            let log2 = self.log2_for(self.live);
            self.rebuild(log2);
        }
    }

    /// Takes `key` out of the index, if it is there.
    fn forget(&mut self, h: u64, key: &str) {
        if let Some((slot, at)) = self.probe(h, key).found {
            self.words.store(slot, TOMB, Ordering::Release);
            let (_, class, _) = entry_parts(self.words.load(at, Ordering::Relaxed));
            self.retire(at, class);
            self.live -= 1;
        }
    }

    /// `key` is in the region as it should be (or absent from both).
    fn settled(&mut self, key: &str) {
        if self.overflow.remove(key) && self.overflow.is_empty() {
            self.words.store(H_INCOMPLETE, 0, Ordering::Relaxed);
        }
    }

    /// The index size for `keys` keys: at most half full.
    fn log2_for(&self, keys: usize) -> u32 {
        (keys.max(1) * 2)
            .next_power_of_two()
            .trailing_zeros()
            .max(MIN_INDEX_LOG2)
    }

    /// A block of `class` (or a little larger), recycling retired blocks
    /// when enough are waiting or none is free.
    fn allocate(&mut self, class: usize) -> Option<(usize, usize)> {
        if self.alloc.retired_bytes() >= super::alloc::RECYCLE_BYTES {
            self.recycle();
        }
        if let Some(block) = self.alloc.take(class) {
            return Some(block);
        }
        if self.alloc.retired_bytes() > 0 {
            self.recycle();
            return self.alloc.take(class);
        }
        None
    }

    /// Makes retired blocks reusable, after telling every reader under way
    /// that memory may change under it.
    fn recycle(&mut self) {
        self.bump_gen();
        self.alloc.recycle();
    }

    fn bump_gen(&mut self) {
        self.generation += 2;
        self.words.store(H_GEN, self.generation, Ordering::Release);
        // Whoever reads anything stored after this sees the new generation.
        fence(Ordering::Release);
    }

    /// Builds an index of `2^log2` buckets with every key and publishes it;
    /// false if the region has no room for it.
    fn rebuild(&mut self, log2: u32) -> bool {
        let len = 8usize << log2;
        let Some((at, class)) = self.allocate(class_of(len)) else {
            return false;
        };
        self.words.zero(at, len);
        let mask = (1 << log2) - 1;
        for old in (self.index_at..self.index_at + 8 * self.buckets()).step_by(8) {
            let b = self.words.load(old, Ordering::Relaxed);
            if b == EMPTY || b == TOMB {
                continue;
            }
            let entry = bucket_at(b);
            let (key_len, _, _) = entry_parts(self.words.load(entry, Ordering::Relaxed));
            let mut key = std::mem::take(&mut self.scratch);
            self.words.copy_out(entry + ENTRY_HEAD, key_len, &mut key);
            let mut pos = hash(self.seed, &key) as usize & mask;
            self.scratch = key;
            while self.words.load(at + 8 * pos, Ordering::Relaxed) != EMPTY {
                pos = (pos + 1) & mask;
            }
            self.words.store(at + 8 * pos, b, Ordering::Relaxed);
        }
        let (old_at, old_class) = (self.index_at, self.index_class);
        // Odd around the change of the index's place: a reader that loads
        // the new place with the old generation retries (the new buckets
        // need not be visible to it yet); one that loads the new
        // generation sees the new index whole.
        self.generation += 1;
        self.words.store(H_GEN, self.generation, Ordering::Relaxed);
        fence(Ordering::Release);
        self.words.store(H_INDEX_AT, at as u64, Ordering::Relaxed);
        self.words
            .store(H_INDEX_LOG2, u64::from(log2), Ordering::Relaxed);
        self.generation += 1;
        self.words.store(H_GEN, self.generation, Ordering::Release);
        fence(Ordering::Release);
        self.alloc.retire(old_at, old_class);
        (self.index_at, self.index_class, self.log2) = (at, class, log2);
        self.used = self.live;
        true
    }

    /// Empties the index and starts the heap afresh. Keys in `overflow`
    /// stay there (readers ask main about them).
    fn restart(&mut self) {
        // Odd while memory readers may be walking is rewritten.
        self.generation += 1;
        self.words.store(H_GEN, self.generation, Ordering::Relaxed);
        fence(Ordering::Release);
        self.alloc.reset();
        let len = 8 << MIN_INDEX_LOG2;
        let (at, class) = self
            .alloc
            .take(class_of(len))
            .expect("the first index fits, as `create` checked");
        self.words.zero(at, len);
        self.words.store(H_INDEX_AT, at as u64, Ordering::Relaxed);
        self.words
            .store(H_INDEX_LOG2, u64::from(MIN_INDEX_LOG2), Ordering::Relaxed);
        self.words.store(
            H_INCOMPLETE,
            u64::from(!self.overflow.is_empty()),
            Ordering::Relaxed,
        );
        (self.index_at, self.index_class, self.log2) = (at, class, MIN_INDEX_LOG2);
        self.live = 0;
        self.used = 0;
        self.generation += 1;
        self.words.store(H_GEN, self.generation, Ordering::Release);
        fence(Ordering::Release);
    }
}

/// A table emptied of keys starts its heap afresh once it has handed out
/// this much (below it, the reuse of free blocks is enough).
const RESTART_BYTES: usize = if cfg!(miri) { 1 << 10 } else { 64 << 10 };

/// Whether an entry that wants a block of class `want` goes in a block of
/// `class` in place: it fits, and the block is at most four classes (about
/// twice) larger.
#[inline]
fn fits_class(want: usize, class: usize) -> bool {
    want <= class && class <= want + 4
}

/// Writes a new value and deadline into `key`'s entry at `at`, a block of
/// `class`; its stripe is open, so a reader that saw any of this retries.
#[inline]
fn write_value(words: &Words, at: usize, class: usize, key: &str, value: &[u8], deadline: u64) {
    words.store(
        at,
        entry_head(key.len(), class, value.len()),
        Ordering::Relaxed,
    );
    words.store(at + 8, deadline, Ordering::Relaxed);
    words.put_bytes(at + ENTRY_HEAD + pad(key.len()), value);
}
