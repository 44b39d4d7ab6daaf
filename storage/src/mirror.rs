//! The store's shared read path around the table of `shared/`: main's
//! data in the region the transport shares, where main's map finds it and
//! every write changes it under the write's shard lock, and a child's
//! reads of it.
//!
//! Main writes the table while it holds the lock of the key's shard (all
//! the touched shards for a batch, inside one [`Table::batch`]; every
//! shard for `clear`), before the write returns, so once a write has
//! returned anywhere every later read in every process sees it. The table
//! lock is always taken after shard locks, never before, so the order of
//! locks stays one.
//!
//! Deadlines are main's clock's nanoseconds, as in the shards. A child
//! turns its own `CLOCK_MONOTONIC` reading into that clock with the origin
//! main wrote in the table, which is why only a clock that is the system's
//! monotonic one ([`Clock::monotonic_origin_ns`]) gets a mirror.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher as _};
use std::sync::{Arc, OnceLock};

use yuki_channel::SharedRegion;

use crate::clock::Clock;
use crate::shards::Hasher;
use crate::shared::{Batch, Lookup, Table, View};

/// Where main keeps the entries it can keep in shared memory: the table,
/// one batch of it, or nowhere (main keeps every entry in its own map).
///
/// An entry the table holds is main's only copy of the key: main's map
/// keeps its offset, reads it from the region and writes it there, so a
/// value is held, and written, once. A key the table cannot hold (the
/// region is full, the key too long) stays in main's map, and the table
/// sends readers to main for it.
///
/// Each call is given the key's `hash` in main's map, which in a store
/// with a table is the table's own hash ([`Hasher::Shared`]), and is made
/// with the key's shard locked for writing, which makes its caller the
/// only writer of the key's stripe.
///
/// [`Hasher::Shared`]: crate::shards::Hasher::Shared
pub(crate) trait Sink {
    /// The table entries are kept in, to read them.
    fn table(&self) -> Option<&Table>;
    /// Gives `key`, which the table does not hold, an entry holding
    /// `value` until `expires` (main's clock, nanoseconds; `u64::MAX`
    /// never): its offset, or `None` if main must keep the key.
    fn insert(&self, hash: u64, key: &str, value: &[u8], expires: u64) -> Option<usize>;
    /// Writes `value` and `expires` into `key`'s entry at `at`: its
    /// offset afterwards (`at`, or where it moved), or `None` if the
    /// table no longer holds the key and main must keep it.
    fn rewrite(&self, hash: u64, at: usize, key: &str, value: &[u8], expires: u64)
    -> Option<usize>;
    /// Gives `key`'s entry at `at` the deadline `expires`.
    fn set_deadline(&self, hash: u64, at: usize, expires: u64);
    /// `key` is gone, whether the table held it or main did.
    fn remove(&self, hash: u64, key: &str);
}

/// No table: main's map keeps every entry.
pub(crate) struct Nowhere;

impl Sink for Nowhere {
    #[inline(always)]
    fn table(&self) -> Option<&Table> {
        None
    }
    #[inline(always)]
    fn insert(&self, _: u64, _: &str, _: &[u8], _: u64) -> Option<usize> {
        None
    }
    #[inline(always)]
    fn rewrite(&self, _: u64, _: usize, _: &str, _: &[u8], _: u64) -> Option<usize> {
        // No entry is ever in a table that does not exist.
        None
    }
    #[inline(always)]
    fn set_deadline(&self, _: u64, _: usize, _: u64) {}
    #[inline(always)]
    fn remove(&self, _: u64, _: &str) {}
}

impl Sink for Table {
    #[inline(always)]
    fn table(&self) -> Option<&Table> {
        Some(self)
    }
    #[inline]
    fn insert(&self, hash: u64, key: &str, value: &[u8], expires: u64) -> Option<usize> {
        Table::insert(self, hash, key, value, expires)
    }
    #[inline]
    fn rewrite(
        &self,
        hash: u64,
        at: usize,
        key: &str,
        value: &[u8],
        expires: u64,
    ) -> Option<usize> {
        // The caller holds the key's shard, and with it the key's stripe.
        Table::rewrite(self, hash, at, key, value, expires)
    }
    #[inline]
    fn set_deadline(&self, hash: u64, at: usize, expires: u64) {
        self.set_deadline_at(hash, at, expires);
    }
    #[inline]
    fn remove(&self, hash: u64, key: &str) {
        self.remove_hashed(hash, key);
    }
}

impl Sink for Batch<'_> {
    #[inline(always)]
    fn table(&self) -> Option<&Table> {
        Some(Batch::table(self))
    }
    #[inline]
    fn insert(&self, hash: u64, key: &str, value: &[u8], expires: u64) -> Option<usize> {
        self.set_hashed(hash, key, value, expires)
    }
    #[inline]
    fn rewrite(&self, hash: u64, _: usize, key: &str, value: &[u8], expires: u64) -> Option<usize> {
        // Under the writer's lock for the whole batch: the writer finds
        // the entry and rewrites it (in place when it fits), its stripe
        // left odd until the batch ends.
        self.set_hashed(hash, key, value, expires)
    }
    #[inline]
    fn set_deadline(&self, hash: u64, at: usize, expires: u64) {
        self.set_deadline_at(hash, at, expires);
    }
    #[inline]
    fn remove(&self, hash: u64, key: &str) {
        self.remove_hashed(hash, key);
    }
}

/// Main's table in the shared region.
pub(crate) struct Mirror {
    table: Table,
    /// Keeps the memory the table lives in mapped.
    _region: Arc<SharedRegion>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// Lays out the table in `region` if there is one this store may
    /// write and `clock` is one children can read; otherwise (logged when
    /// it is a surprise) `None`, and children ask main for every read.
    pub(crate) fn create(region: Option<Arc<SharedRegion>>, clock: &dyn Clock) -> Option<Mirror> {
        let region = region?;
        let Some(origin) = clock.monotonic_origin_ns() else {
            tracing::debug!("the store's clock is not the system's: children read from main");
            return None;
        };
        if !region.claim() {
            tracing::warn!(
                "the shared region already holds another store's table: this store's children read from main"
            );
            return None;
        }
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        // SAFETY: the region is mapped writable by this process for as long
        // as the mirror holds it (and every child's view holds its own
        // mapping); it was zeroed when made and, claimed here, nobody
        // else writes it.
        match unsafe { Table::create(region.base(), region.len(), seed, origin) } {
            Ok(table) => Some(Mirror {
                table,
                _region: region,
            }),
            Err(why) => {
                tracing::warn!(%why, "no shared table: children read the store from main");
                None
            }
        }
    }

    /// The table, to write.
    #[inline]
    pub(crate) fn table(&self) -> &Table {
        &self.table
    }

    /// What hashes keys in main's map so that one hash serves the map and
    /// the table, and each shard holds whole stripes of the table.
    pub(crate) fn hasher(&self) -> Hasher {
        let (seed, stripes) = self.table.seed_and_stripes();
        Hasher::Shared { seed, stripes }
    }
}

/// A buffer large values are not kept in: past this, a thread's read
/// buffer is dropped after use rather than kept.
const KEEP: usize = 64 << 10;

thread_local! {
    /// Each thread's buffer for values read from the table, so a read
    /// allocates nothing but the decoded value.
    static OUT: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A child's reads of main's table.
pub(crate) struct Reader {
    region: Arc<SharedRegion>,
    /// Opened at the first read after main laid the table out.
    view: OnceLock<View>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("open", &self.view.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Reads through `region` if it is a child's read-only one.
    pub(crate) fn new(region: Option<Arc<SharedRegion>>) -> Option<Reader> {
        let region = region.filter(|r| !r.is_writable())?;
        cfg!(target_os = "linux").then(|| Reader {
            region,
            view: OnceLock::new(),
        })
    }

    /// The table, once main has laid it out (until then, and for a main
    /// whose store keeps no table, reads go to main).
    #[inline]
    fn view(&self) -> Option<&View> {
        if let Some(view) = self.view.get() {
            return Some(view);
        }
        // SAFETY: the region stays mapped (read-only) for as long as the
        // reader holds it, and main never unmaps or shrinks it under us:
        // its file is sealed at its size.
        let view = unsafe { View::open(self.region.base(), self.region.len()) }.ok()?;
        Some(self.view.get_or_init(|| view))
    }

    /// Whether the table is open, so reads need no call.
    pub(crate) fn is_open(&self) -> bool {
        self.view().is_some()
    }

    /// Runs `f` on the value of `key` (or `None` when it is absent or
    /// expired) as the table has it; `None` when the table cannot tell
    /// and main must be asked.
    #[inline]
    pub(crate) fn read<R>(&self, key: &str, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        // Main gone: its last state is no answer; the call says it is gone.
        if !self.region.is_open() {
            return None;
        }
        let view = self.view()?;
        let origin = view.clock_origin_ns();
        let mut out = OUT.take();
        let read = match view.get_at(key, || now_on_mains_clock(origin), &mut out) {
            Lookup::Found => Some(f(Some(&out))),
            Lookup::Absent => Some(f(None)),
            Lookup::AskMain => None,
        };
        if out.capacity() <= KEEP {
            OUT.set(out);
        }
        read
    }
}

/// Now, on main's clock, whose zero was `origin` on `CLOCK_MONOTONIC`.
/// Never called off Linux, where there is no reader ([`Reader::new`]).
#[inline]
fn now_on_mains_clock(origin: u64) -> u64 {
    #[cfg(target_os = "linux")]
    return crate::clock::monotonic_ns().saturating_sub(origin);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = origin;
        u64::MAX
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::batch::Outcome;
    use crate::clock::SystemClock;
    use crate::data::Data;
    use crate::protocol::Op;
    use serde_bytes::Bytes;
    use std::ptr::NonNull;
    use std::time::{Duration, Instant};

    const LEN: usize = 8 << 20;

    /// Main's data with a mirror in heap memory, and a child's reader of
    /// the same memory.
    fn mirrored() -> (Arc<Data>, Reader) {
        mirrored_in(LEN)
    }

    /// As [`mirrored`], in a region of `len` bytes.
    fn mirrored_in(len: usize) -> (Arc<Data>, Reader) {
        let mut words = vec![0u64; len / 8].into_boxed_slice();
        let base = NonNull::new(words.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: the buffer is `len` bytes, 8-aligned, owned by the region.
        let main = Arc::new(unsafe { SharedRegion::new(base, len, true, words) });
        // SAFETY: the same memory, kept alive by `main`, which it holds.
        let child = unsafe { SharedRegion::new(base, len, false, main.clone()) };
        let clock = Arc::new(SystemClock::default());
        let mirror = Mirror::create(Some(main), &*clock).expect("a table");
        let data = Data::new(4, clock, Duration::from_secs(60), Some(mirror));
        (data, Reader::new(Some(Arc::new(child))).expect("a reader"))
    }

    /// What main and the reader say `key` holds; they must agree.
    fn agree(data: &Data, reader: &Reader, key: &str) -> Option<Vec<u8>> {
        let shared = reader
            .read(key, |v| v.map(<[u8]>::to_vec))
            .expect("answered");
        let owned = data.read(key, |v| v.map(<[u8]>::to_vec));
        assert_eq!(shared, owned, "{key}");
        owned
    }

    fn set<'a>(key: &'a str, value: &'a [u8], ttl_nanos: Option<u64>) -> Op<'a> {
        Op::Set {
            key,
            value: Bytes::new(value),
            ttl_nanos,
        }
    }

    #[test]
    fn every_kind_of_write_reaches_the_shared_table() {
        let (data, reader) = mirrored();
        assert!(reader.is_open() && data.is_mirrored());
        let n7 = yuki_channel::codec::mark::encode(&7i64).unwrap();
        let n9 = yuki_channel::codec::mark::encode(&9i64).unwrap();
        let hour = Some(3_600_000_000_000);
        let ops = [
            set("a", b"one", None),
            set("b", &n7, hour),
            Op::Incr { key: "b", by: 2 },
            Op::Incr { key: "c", by: 5 },
            Op::Cas {
                key: "b",
                expected: Some(Bytes::new(&n9)),
                new: Some(Bytes::new(b"swapped")),
            },
            Op::Cas {
                key: "a",
                expected: Some(Bytes::new(b"one")),
                new: None,
            },
            set("d", b"dies", None),
            Op::Expire {
                key: "d",
                ttl_nanos: 0,
            },
            set("e", b"kept", hour),
            Op::Persist("e"),
            Op::Delete("c"),
        ];
        for (i, op) in ops.iter().enumerate() {
            let outcome = data.apply_one(op);
            assert!(
                !matches!(outcome, Outcome::Failed(_)),
                "op {i}: {outcome:?}"
            );
            for key in ["a", "b", "c", "d", "e", "missing"] {
                agree(&data, &reader, key);
            }
        }
        assert_eq!(agree(&data, &reader, "b").as_deref(), Some(&b"swapped"[..]));
        let batch = [set("x", b"1", None), set("y", b"2", None), Op::Delete("b")];
        data.apply_batch(&batch);
        for key in ["x", "y", "b"] {
            agree(&data, &reader, key);
        }
        assert_eq!(agree(&data, &reader, "e").as_deref(), Some(&b"kept"[..]));
        assert_eq!(data.clear(), 3);
        for key in ["x", "y", "e"] {
            assert_eq!(agree(&data, &reader, key), None);
        }
        // Main gone: the table is no answer any more.
        data.apply_one(&set("x", b"1", None));
        assert_eq!(reader.read("x", |v| v.is_some()), Some(true));
        reader.region.close();
        assert_eq!(reader.read("x", |v| v.is_some()), None);
    }

    #[test]
    fn a_deadline_is_kept_by_incr_and_seen_by_the_reader() {
        let (data, reader) = mirrored();
        let n = yuki_channel::codec::mark::encode(&1i64).unwrap();
        data.apply_one(&set("n", &n, Some(30_000_000)));
        data.apply_one(&Op::Incr { key: "n", by: 1 });
        data.apply_one(&set("e", b"v", Some(30_000_000)));
        data.apply_one(&Op::Expire {
            key: "e",
            ttl_nanos: 20_000_000,
        });
        data.apply_one(&set("p", b"v", Some(20_000_000)));
        data.apply_one(&Op::Persist("p"));
        let started = Instant::now();
        loop {
            // The reader first: once it says absent, main must too.
            let shared = reader.read("n", |v| v.is_some()).unwrap();
            let owned = data.contains("n");
            assert!(shared || !owned, "the reader expired the key before main");
            if !owned {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never expired");
        }
        assert_eq!(reader.read("n", |v| v.is_some()), Some(false));
        assert_eq!(reader.read("e", |v| v.is_some()), Some(false));
        // Past its first deadline, the persisted key lives on.
        assert_eq!(agree(&data, &reader, "p").as_deref(), Some(&b"v"[..]));
        assert_eq!(data.purge_expired(), 2);
        assert!(agree(&data, &reader, "p").is_some());
        assert_eq!(agree(&data, &reader, "n"), None);
    }

    #[test]
    fn keys_chosen_to_collide_are_all_kept_and_read_right() {
        // A hostile child knows the seed; these keys share their bucket's
        // low bits, and so their first bucket and their shard.
        let (data, reader) = mirrored();
        let seed = data.mirror_seed().expect("a table");
        let want = crate::shared::hash(seed, b"anchor") & 0xfff;
        let keys: Vec<String> = (0u64..)
            .map(|n| format!("k{n}"))
            .filter(|k| crate::shared::hash(seed, k.as_bytes()) & 0xfff == want)
            .take(300)
            .collect();
        for (i, k) in keys.iter().enumerate() {
            data.apply_one(&set(k, &i.to_le_bytes(), None));
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(agree(&data, &reader, k), Some(i.to_le_bytes().to_vec()));
        }
        for k in keys.iter().step_by(2) {
            data.apply_one(&Op::Delete(k));
        }
        for (i, k) in keys.iter().enumerate() {
            let kept = (i % 2 == 1).then(|| i.to_le_bytes().to_vec());
            assert_eq!(agree(&data, &reader, k), kept, "{k}");
        }
    }

    /// What main says `key` holds, which the reader must say too unless it
    /// sends the read to main.
    fn agree_or_ask(data: &Data, reader: &Reader, key: &str) -> Option<Vec<u8>> {
        let main = data.read(key, |v| v.map(<[u8]>::to_vec));
        if let Some(shared) = reader.read(key, |v| v.map(<[u8]>::to_vec)) {
            assert_eq!(shared, main, "{key}");
        }
        main
    }

    #[test]
    fn keys_a_full_region_cannot_hold_stay_with_main_and_come_back() {
        // A region with room for a few large values only.
        let (data, reader) = mirrored_in(256 << 10);
        let big = vec![7u8; 40 << 10];
        let keys: Vec<String> = (0..12).map(|i| format!("big{i}")).collect();
        for k in &keys {
            data.apply_one(&set(k, &big, None));
        }
        let asked = keys
            .iter()
            .filter(|k| reader.read(k, |_| ()).is_none())
            .count();
        assert!(asked > 0, "the region held every large value");
        for k in &keys {
            assert_eq!(agree_or_ask(&data, &reader, k).as_deref(), Some(&big[..]));
        }
        assert_eq!(data.len(), keys.len());
        // Small values fit again: every key goes back to the table, and
        // the reader answers for all of them.
        for (i, k) in keys.iter().enumerate() {
            data.apply_one(&set(k, &i.to_le_bytes(), None));
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(
                agree(&data, &reader, k),
                Some(i.to_le_bytes().to_vec()),
                "{k}"
            );
        }
        // Deleting, counting and clearing see both kinds of key.
        data.apply_one(&set("big0", &big, None));
        data.apply_one(&set("big1", &big, None));
        data.apply_one(&set("big2", &big, None));
        data.apply_one(&set("big3", &big, None));
        data.apply_one(&set("big4", &big, None));
        data.apply_one(&set("big5", &big, None));
        data.apply_one(&set("big6", &big, None));
        assert!(keys.iter().any(|k| reader.read(k, |_| ()).is_none()));
        assert!(matches!(
            data.apply_one(&Op::Delete("big6")),
            Outcome::Deleted(true)
        ));
        assert!(matches!(
            data.apply_one(&Op::Delete("big9")),
            Outcome::Deleted(true)
        ));
        assert_eq!(data.len(), keys.len() - 2);
        let mut all = data.with_keys("", |keys| {
            keys.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>()
        });
        all.sort();
        let mut want: Vec<String> = keys
            .iter()
            .filter(|k| *k != "big6" && *k != "big9")
            .cloned()
            .collect();
        want.sort();
        assert_eq!(all, want);
        assert_eq!(data.clear(), keys.len() - 2);
        for k in &keys {
            assert_eq!(agree(&data, &reader, k), None);
        }
    }

    #[test]
    fn a_value_shrunk_in_a_full_region_stays_in_its_block() {
        let (data, reader) = mirrored_in(256 << 10);
        data.apply_one(&set("big", &vec![1u8; 40 << 10], None));
        // Fill the region with 256-byte entries until one spills to main,
        // then delete that one: the table is complete again, and full.
        let filler = vec![2u8; 232];
        for n in 0.. {
            let k = format!("f{n:06}");
            data.apply_one(&set(&k, &filler, None));
            if reader.read(&k, |_| ()).is_none() {
                data.apply_one(&Op::Delete(&k));
                break;
            }
        }
        assert_eq!(reader.read("absent", |v| v.is_some()), Some(false));
        // A few bytes want a far smaller block, and there is none: the
        // value stays in its own block, in the table.
        data.apply_one(&set("big", b"tiny", None));
        assert_eq!(agree(&data, &reader, "big").as_deref(), Some(&b"tiny"[..]));
        assert_eq!(reader.read("absent", |v| v.is_some()), Some(false));
    }

    /// Threads of main write keys of their own through every path at once
    /// (rewrites in place, moves, spills to main and back, batches,
    /// deadlines, deletes) while another lists, counts and purges: each
    /// checks its keys through main and through a child's reader.
    #[test]
    fn writers_on_every_path_at_once_keep_their_keys() {
        use std::collections::HashMap;
        use std::sync::atomic::{AtomicUsize, Ordering};
        const WRITERS: usize = 4;
        let hour = Some(3_600_000_000_000);
        for round in 0..2u64 {
            let (data, reader) = mirrored_in(if round == 0 { 256 << 10 } else { 1 << 20 });
            let done = AtomicUsize::new(0);
            std::thread::scope(|s| {
                for t in 0..WRITERS as u64 {
                    let (data, reader, done) = (&data, &reader, &done);
                    s.spawn(move || {
                        // Counted even if the checks below panic, so the
                        // lister stops and the scope can end.
                        struct Done<'a>(&'a AtomicUsize);
                        impl Drop for Done<'_> {
                            fn drop(&mut self) {
                                self.0.fetch_add(1, Ordering::Release);
                            }
                        }
                        let _done = Done(done);
                        let mut x = round * 1000 + t + 1;
                        let mut next = move || {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x
                        };
                        let mut model: HashMap<String, Vec<u8>> = HashMap::new();
                        for n in 0..3000u64 {
                            let k = format!("t{t}:k{}", next() % 24);
                            let len = match next() % 10 {
                                0 => 20_000 + (next() % 40_000) as usize,
                                1..=3 => (next() % 600) as usize,
                                _ => (next() % 40) as usize,
                            };
                            let v: Vec<u8> = (0..len).map(|i| (i as u64 ^ n ^ t) as u8).collect();
                            match next() % 8 {
                                0 => {
                                    data.apply_one(&Op::Delete(&k));
                                    model.remove(&k);
                                }
                                1 => {
                                    let k2 = format!("t{t}:k{}", next() % 24);
                                    let v2 = vec![n as u8; (next() % 100) as usize];
                                    data.apply_batch(&[
                                        set(&k, &v, None),
                                        Op::Delete(&k2),
                                        set(&k2, &v2, None),
                                        set(&k, &v2, None),
                                    ]);
                                    model.insert(k.clone(), v2.clone());
                                    model.insert(k2, v2);
                                }
                                2 => {
                                    data.apply_one(&set(&k, &v, hour));
                                    model.insert(k.clone(), v);
                                }
                                3 => {
                                    data.apply_one(&Op::Expire {
                                        key: &k,
                                        ttl_nanos: 3_600_000_000_000,
                                    });
                                }
                                4 => {
                                    data.apply_one(&Op::Persist(&k));
                                }
                                _ => {
                                    data.apply_one(&set(&k, &v, None));
                                    model.insert(k.clone(), v);
                                }
                            }
                            assert_eq!(
                                agree_or_ask(data, reader, &k).as_ref(),
                                model.get(&k),
                                "{k}"
                            );
                        }
                        for (k, v) in &model {
                            assert_eq!(agree_or_ask(data, reader, k).as_ref(), Some(v), "{k}");
                        }
                    });
                }
                s.spawn(|| {
                    while done.load(Ordering::Acquire) < WRITERS {
                        let bytes: usize = data.with_snapshot(|entries| {
                            entries.iter().map(|(k, v)| k.len() + v.len()).sum()
                        });
                        std::hint::black_box(bytes);
                        data.purge_expired();
                        std::hint::black_box(data.len());
                    }
                });
            });
        }
    }

    #[test]
    fn a_region_already_claimed_or_a_hand_moved_clock_gets_no_table() {
        let mut words = vec![0u64; LEN / 8].into_boxed_slice();
        let base = NonNull::new(words.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: LEN bytes, 8-aligned, owned by the region.
        let region = Arc::new(unsafe { SharedRegion::new(base, LEN, true, words) });
        let manual = crate::clock::ManualClock::default();
        assert!(Mirror::create(Some(region.clone()), &manual).is_none());
        assert!(Mirror::create(Some(region.clone()), &SystemClock::default()).is_some());
        assert!(Mirror::create(Some(region), &SystemClock::default()).is_none());
        // A reader of a region nobody laid out asks main.
        let mut words = vec![0u64; LEN / 8].into_boxed_slice();
        let base = NonNull::new(words.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: as above, read-only.
        let empty = Arc::new(unsafe { SharedRegion::new(base, LEN, false, words) });
        let reader = Reader::new(Some(empty)).unwrap();
        assert!(!reader.is_open());
        assert_eq!(reader.read("k", |_| ()), None);
    }

    /// One step of the property test: every kind of write, on a few keys,
    /// with values from a byte to more than a small region holds.
    #[derive(Debug, Clone)]
    enum Step {
        Set(usize, usize, bool),
        Delete(usize),
        Incr(usize, i64),
        Cas(usize, Option<usize>, Option<usize>),
        Expire(usize, bool),
        Persist(usize),
        Batch(Vec<(usize, Option<usize>)>),
        /// Gets and checks alone, which change nothing.
        Reads(Vec<usize>),
        Clear,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let len = prop_oneof![6 => 0..48usize, 2 => 48..600usize, 1 => 20_000..70_000usize];
        prop_oneof![
            8 => (0..16usize, len.clone(), any::<bool>()).prop_map(|(k, l, t)| Step::Set(k, l, t)),
            2 => (0..16usize).prop_map(Step::Delete),
            2 => (0..16usize, -3..4i64).prop_map(|(k, by)| Step::Incr(k, by)),
            2 => (0..16usize, proptest::option::of(0..600usize), proptest::option::of(0..600usize))
                .prop_map(|(k, e, n)| Step::Cas(k, e, n)),
            1 => (0..16usize, any::<bool>()).prop_map(|(k, now)| Step::Expire(k, now)),
            1 => (0..16usize).prop_map(Step::Persist),
            2 => proptest::collection::vec((0..16usize, proptest::option::of(len)), 1..6)
                .prop_map(Step::Batch),
            2 => proptest::collection::vec(0..16usize, 1..6).prop_map(Step::Reads),
            1 => Just(Step::Clear),
        ]
    }

    fn bytes(k: usize, len: usize, step: usize) -> Vec<u8> {
        (0..len).map(|i| (i ^ k ^ step) as u8).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Main's data with a table in a small region (so values move,
        /// spill to main and come back) answers every read, count and
        /// listing as main's data without one, and the reader agrees or
        /// asks main.
        #[test]
        fn a_mirrored_store_answers_as_one_without_a_table(steps in proptest::collection::vec(step(), 1..80)) {
            let (data, reader) = mirrored_in(if steps.len() % 2 == 0 { 96 << 10 } else { 192 << 10 });
            let plain = Data::new(4, Arc::new(SystemClock::default()), Duration::from_secs(60), None);
            let key = |k: usize| format!("key{k}:{}", "x".repeat(k % 11));
            let hour = 3_600_000_000_000;
            for (n, s) in steps.iter().enumerate() {
                let owned: Vec<(String, Option<Vec<u8>>)>;
                let ops: Vec<Op<'_>>;
                let one = |op: Op<'_>| {
                    let a = format!("{:?}", data.apply_one(&op));
                    let b = format!("{:?}", plain.apply_one(&op));
                    assert_eq!(a, b, "{op:?}");
                };
                match s {
                    Step::Set(k, len, ttl) => {
                        let (k, v) = (key(*k), bytes(*k, *len, n));
                        one(set(&k, &v, ttl.then_some(hour)));
                    }
                    Step::Delete(k) => one(Op::Delete(&key(*k))),
                    Step::Incr(k, by) => one(Op::Incr { key: &key(*k), by: *by }),
                    Step::Cas(k, expected, new) => {
                        let e = expected.map(|l| bytes(*k, l, 0));
                        let v = new.map(|l| bytes(*k, l, n));
                        let k = key(*k);
                        // Expecting the current value sometimes succeeds.
                        let current = plain.read(&k, |v| v.map(<[u8]>::to_vec));
                        let e = if n % 2 == 0 { current } else { e };
                        one(Op::Cas {
                            key: &k,
                            expected: e.as_deref().map(Bytes::new),
                            new: v.as_deref().map(Bytes::new),
                        });
                    }
                    Step::Expire(k, now) => one(Op::Expire {
                        key: &key(*k),
                        ttl_nanos: if *now { 0 } else { hour },
                    }),
                    Step::Persist(k) => one(Op::Persist(&key(*k))),
                    Step::Batch(changes) => {
                        owned = changes
                            .iter()
                            .map(|&(k, len)| (key(k), len.map(|l| bytes(k, l, n))))
                            .collect();
                        ops = owned
                            .iter()
                            .map(|(k, v)| match v {
                                Some(v) if v.len() % 3 == 0 => set(k, v, Some(hour)),
                                Some(v) if v.len() % 3 == 1 => Op::Cas {
                                    key: k,
                                    expected: None,
                                    new: Some(Bytes::new(v)),
                                },
                                Some(v) => set(k, v, None),
                                None if k.len() % 3 == 0 => Op::Expire { key: k, ttl_nanos: 0 },
                                None if k.len() % 3 == 1 => Op::Incr { key: k, by: 1 },
                                None => Op::Delete(k),
                            })
                            .collect();
                        let a = format!("{:?}", data.apply_batch(&ops));
                        let b = format!("{:?}", plain.apply_batch(&ops));
                        assert_eq!(a, b);
                    }
                    Step::Reads(keys) => {
                        owned = keys.iter().map(|&k| (key(k), None)).collect();
                        ops = owned
                            .iter()
                            .enumerate()
                            .map(|(i, (k, _))| if i % 2 == 0 { Op::Get(k) } else { Op::Contains(k) })
                            .collect();
                        let a = format!("{:?}", data.apply_batch(&ops));
                        let b = format!("{:?}", plain.apply_batch(&ops));
                        assert_eq!(a, b);
                    }
                    Step::Clear => assert_eq!(data.clear(), plain.clear()),
                }
                for k in 0..16 {
                    let k = key(k);
                    let want = plain.read(&k, |v| v.map(<[u8]>::to_vec));
                    assert_eq!(agree_or_ask(&data, &reader, &k), want, "{k} after {s:?}");
                    let ttl = |d: &Data| format!("{:?}", d.apply_one(&Op::Ttl(&k)));
                    assert_eq!(ttl(&data).contains("Some"), ttl(&plain).contains("Some"), "{k}");
                }
                assert_eq!(data.len(), plain.len());
                let listing = |d: &Data| {
                    let mut all = d.with_snapshot(|entries| {
                        entries
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                            .collect::<Vec<_>>()
                    });
                    all.sort();
                    all
                };
                assert_eq!(listing(&data), listing(&plain));
            }
        }
    }
}
