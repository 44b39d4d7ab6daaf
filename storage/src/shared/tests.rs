//! The table's protocol on a heap region: unit cases, a property test
//! against a model, and threads reading while a writer changes everything.
//! The cases marked `miri` run under Miri too (small sizes).

use std::collections::HashMap;
use std::thread;

use proptest::prelude::*;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::layout::stripe_of;
use super::{Batch, Lookup, Table, View};

const NEVER: u64 = u64::MAX;

/// A zeroed heap region that outlives the table and views made on it.
pub(crate) struct Region {
    words: Vec<u64>,
    base: NonNull<u8>,
}

// SAFETY: only reached through `Table`/`View`, whose accesses are atomic.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    pub(crate) fn new(len: usize) -> Arc<Region> {
        let mut words = vec![0u64; len / 8];
        // A Vec, never touched again: `base` stays valid under Miri's
        // aliasing rules when the Vec moves.
        let base = NonNull::new(words.as_mut_ptr().cast::<u8>()).expect("a Vec's pointer");
        Arc::new(Region { words, base })
    }

    fn len(&self) -> usize {
        self.words.len() * 8
    }

    pub(crate) fn table(&self) -> Table {
        // SAFETY: the region is zeroed, aligned, and outlives the table in
        // every test (held in an Arc beside it); only this table writes it.
        unsafe { Table::create(self.base, self.len(), 0x5eed, 1234) }.expect("a table")
    }

    pub(crate) fn view(&self) -> View {
        // SAFETY: as above, for reads.
        unsafe { View::open(self.base, self.len()) }.expect("a view")
    }
}

fn get(view: &View, key: &str, now: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match view.get(key, now, &mut out) {
        Lookup::Found => Some(out),
        Lookup::Absent => None,
        Lookup::AskMain => panic!("{key}: ask main, with no writer running"),
    }
}

const KIB: usize = 1 << 10;

#[test]
fn miri_set_get_remove_clear() {
    let r = Region::new(64 * KIB);
    let t = r.table();
    let v = r.view();
    assert_eq!(v.clock_origin_ns(), 1234);
    assert_eq!(get(&v, "a", 0), None);
    t.set("a", b"one", NEVER);
    t.set("bb", b"", NEVER);
    t.set("a-much-longer-key-than-a-word", &[7; 30], NEVER);
    assert_eq!(get(&v, "a", 0).as_deref(), Some(&b"one"[..]));
    assert_eq!(get(&v, "bb", 0).as_deref(), Some(&b""[..]));
    assert_eq!(
        get(&v, "a-much-longer-key-than-a-word", 0),
        Some(vec![7; 30])
    );
    t.set("a", b"two!", NEVER); // in place
    assert_eq!(get(&v, "a", 0).as_deref(), Some(&b"two!"[..]));
    t.set("a", &[1; 300], NEVER); // moves to a larger block
    assert_eq!(get(&v, "a", 0), Some(vec![1; 300]));
    t.remove("a");
    t.remove("a");
    assert_eq!(get(&v, "a", 0), None);
    assert_eq!(t.live(), 2);
    t.clear();
    assert_eq!(t.live(), 0);
    assert_eq!(get(&v, "bb", 0), None);
    t.set("bb", b"back", NEVER);
    assert_eq!(get(&v, "bb", 0).as_deref(), Some(&b"back"[..]));
}

/// Main's side of the entries the table holds, as its store keeps them:
/// each key's entry, found once when placed and then written through
/// (the caller is the only writer of the keys it sets).
#[derive(Default)]
struct Held(HashMap<String, usize>);

impl Held {
    /// Sets `key` as the store does: in its entry if held, else placed.
    fn set(&mut self, t: &Table, key: &str, value: &[u8], deadline: u64) {
        let h = t.hash(key);
        let at = match self.0.get(key) {
            Some(&at) => t.rewrite(h, at, key, value, deadline),
            None => t.insert(h, key, value, deadline),
        };
        self.placed(key, at);
    }

    /// Notes where the writer placed `key` (`None`: main keeps it).
    fn placed(&mut self, key: &str, at: Option<usize>) {
        match at {
            Some(at) => self.0.insert(key.to_owned(), at),
            None => self.0.remove(key),
        };
    }

    fn remove(&mut self, t: &Table, key: &str) {
        self.0.remove(key);
        t.remove(key);
    }

    /// The entry of `key`, as main holds it.
    fn at(&self, key: &str) -> Option<usize> {
        self.0.get(key).copied()
    }
}

#[test]
fn miri_a_held_entry_is_rewritten_in_place_or_moved() {
    let r = Region::new(64 * KIB);
    let t = r.table();
    let v = r.view();
    let mut held = Held::default();
    // A new key goes in through the writer's lock.
    held.set(&t, "a", b"1", NEVER);
    let at = held.at("a").expect("placed");
    assert_eq!(t.entry_of("a"), Some(at));
    assert!(t.holds_key(at, "a") && !t.holds_key(at, "b") && !t.holds_key(at, "aa"));
    // A value that fits the block: in place, no lock.
    held.set(&t, "a", b"22", NEVER);
    assert_eq!(held.at("a"), Some(at), "in place");
    assert_eq!(get(&v, "a", 0).as_deref(), Some(&b"22"[..]));
    // SAFETY: nothing writes the key while the borrows live.
    assert_eq!(unsafe { t.entry_at(at) }, (&b"a"[..], &b"22"[..]));
    assert_eq!(t.hash_at(at), t.hash("a"));
    // Too large for the block: moved by the writer, the old one retired.
    held.set(&t, "a", &[4; 300], NEVER);
    let moved = held.at("a").expect("placed");
    assert_ne!(moved, at);
    assert_eq!(t.entry_of("a"), Some(moved));
    assert!(!t.holds_key(at, "a"), "a retired entry is no key's");
    assert_eq!(get(&v, "a", 0), Some(vec![4; 300]));
    // Much smaller: a block that size, not the large one kept.
    held.set(&t, "a", b"3", NEVER);
    assert_ne!(held.at("a"), Some(moved));
    assert_eq!(get(&v, "a", 0).as_deref(), Some(&b"3"[..]));
    // Removed: set again, placed anew.
    held.remove(&t, "a");
    assert_eq!(get(&v, "a", 0), None);
    held.set(&t, "a", b"4", NEVER);
    assert_eq!(get(&v, "a", 0).as_deref(), Some(&b"4"[..]));
    held.set(&t, "other", b"x", NEVER);
    held.set(&t, "a", b"5", NEVER);
    held.set(&t, "a", b"6", NEVER);
    assert_eq!(get(&v, "other", 0).as_deref(), Some(&b"x"[..]));
    assert_eq!(get(&v, "a", 0).as_deref(), Some(&b"6"[..]));
    assert_eq!(t.live(), 2);
    // A deadline, rewritten in place with the value, then alone.
    let at = held.at("a").expect("placed");
    held.set(&t, "a", b"7", 10);
    assert_eq!(held.at("a"), Some(at));
    assert_eq!(t.deadline_at(at), 10);
    assert_eq!(get(&v, "a", 9).as_deref(), Some(&b"7"[..]));
    assert_eq!(get(&v, "a", 10), None);
    t.set_deadline_at(t.hash("a"), at, 20);
    assert_eq!(get(&v, "a", 19).as_deref(), Some(&b"7"[..]));
    assert_eq!(get(&v, "a", 20), None);
    t.set_deadline_at(t.hash("a"), at, NEVER);
    assert_eq!(get(&v, "a", u64::MAX - 1).as_deref(), Some(&b"7"[..]));
    // Offsets that are no entry are no key's, and read as nothing.
    for nowhere in [0, 8, 4, usize::MAX - 7, 64 * KIB] {
        assert!(!t.holds_key(nowhere, "a"), "{nowhere}");
        // SAFETY: nothing writes the region meanwhile.
        let (key, value) = unsafe { t.entry_at(nowhere) };
        assert!(key.len() + value.len() <= 64 * KIB, "{nowhere}");
    }
}

#[test]
fn miri_a_held_key_the_region_cannot_hold_goes_to_main_and_back() {
    let r = Region::new(32 * KIB);
    let t = r.table();
    let v = r.view();
    let mut held = Held::default();
    held.set(&t, "small", b"1", NEVER);
    // Larger than the whole heap: main keeps it, readers ask main.
    held.set(&t, "small", &vec![9; 40 * KIB], NEVER);
    assert_eq!(held.at("small"), None);
    assert!(t.incomplete());
    let mut out = Vec::new();
    assert!(matches!(v.get("small", 0, &mut out), Lookup::AskMain));
    // Small again: back in the table, and readers read it.
    held.set(&t, "small", b"2", NEVER);
    assert!(held.at("small").is_some());
    assert!(!t.incomplete());
    assert_eq!(get(&v, "small", 0).as_deref(), Some(&b"2"[..]));
}

#[test]
fn miri_a_value_expires_at_its_deadline() {
    let r = Region::new(64 * KIB);
    let t = r.table();
    let v = r.view();
    t.set("k", b"v", 100);
    assert_eq!(get(&v, "k", 99).as_deref(), Some(&b"v"[..]));
    assert_eq!(get(&v, "k", 100), None);
    t.set("k", b"v", NEVER);
    assert_eq!(get(&v, "k", u64::MAX - 1).as_deref(), Some(&b"v"[..]));
    // A new deadline alone, as `expire` and `persist` give.
    t.set_deadline("k", 50);
    assert_eq!(get(&v, "k", 49).as_deref(), Some(&b"v"[..]));
    assert_eq!(get(&v, "k", 50), None);
    t.set_deadline("k", NEVER);
    assert_eq!(get(&v, "k", 1_000).as_deref(), Some(&b"v"[..]));
    t.set_deadline("absent", 10);
    assert_eq!(get(&v, "absent", 0), None);
}

#[test]
fn miri_a_view_refuses_what_is_not_a_table_of_its_build() {
    let r = Region::new(64 * KIB);
    // SAFETY: the region outlives the views.
    let open = |len| unsafe { View::open(r.base, len) };
    let err = open(r.len()).unwrap_err();
    assert!(err.contains("no shared table"), "{err}");
    let _t = r.table();
    assert!(open(r.len()).is_ok());
    let err = open(r.len() - 8).unwrap_err();
    assert!(err.contains("map the whole region"), "{err}");
    let mut other = Region::new(64 * KIB);
    let _u = other.table();
    let words = Arc::get_mut(&mut other).expect("one owner");
    // The version word, as a build of another layout would write it.
    // SAFETY: no table or view of `other` reads it after this.
    unsafe { words.base.as_ptr().add(8).cast::<u64>().write(99) };
    // SAFETY: as above.
    let err = unsafe { View::open(other.base, other.len()) }.unwrap_err();
    assert!(err.contains("layout version 99"), "{err}");
    // SAFETY: a region too small for any table.
    let err = unsafe { Table::create(r.base, 64, 1, 0) }.unwrap_err();
    assert!(err.contains("larger region"), "{err}");
}

#[test]
#[cfg_attr(miri, ignore = "long; the miri_ cases cover the protocol")]
fn a_batch_is_applied_whole_and_a_panic_in_it_closes_its_stripes() {
    let r = Region::new(256 * KIB);
    let t = r.table();
    let v = r.view();
    t.set("gone", b"x", NEVER);
    let n = t.batch(|b| {
        for i in 0..100 {
            b.set(&format!("k{i}"), &[i as u8; 10], NEVER);
        }
        b.remove("gone");
        42
    });
    assert_eq!(n, 42);
    assert_eq!(get(&v, "gone", 0), None);
    for i in 0..100 {
        assert_eq!(get(&v, &format!("k{i}"), 0), Some(vec![i as u8; 10]));
    }
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        t.batch(|b| {
            b.set("k1", b"new", NEVER);
            panic!("in the batch");
        })
    }));
    assert!(panicked.is_err());
    // The change made before the panic stands, and no stripe stays odd.
    assert_eq!(get(&v, "k1", 0).as_deref(), Some(&b"new"[..]));
    for i in 0..100 {
        assert!(get(&v, &format!("k{i}"), 0).is_some());
    }
}

#[test]
#[cfg_attr(miri, ignore = "long; the miri_ cases cover the protocol")]
fn a_full_region_sends_misses_to_main_until_the_unplaced_key_is_settled() {
    let r = Region::new(64 * KIB);
    let t = r.table();
    let v = r.view();
    t.set("small", b"1", NEVER);
    t.set("big", b"old", NEVER);
    let mut out = Vec::new();
    // Larger than the region: the old value must not be read any more.
    t.set("big", &vec![9; 70 * KIB], NEVER);
    assert!(t.incomplete());
    assert_eq!(v.get("big", 0, &mut out), Lookup::AskMain);
    assert_eq!(v.get("never-set", 0, &mut out), Lookup::AskMain);
    assert_eq!(
        get(&v, "small", 0).as_deref(),
        Some(&b"1"[..]),
        "hits still answer"
    );
    t.set("big", b"fits", NEVER);
    assert!(!t.incomplete());
    assert_eq!(get(&v, "big", 0).as_deref(), Some(&b"fits"[..]));
    assert_eq!(get(&v, "never-set", 0), None);
    t.set("big", &vec![9; 70 * KIB], NEVER);
    t.remove("big");
    assert!(!t.incomplete(), "a removed key is settled too");
    assert_eq!(get(&v, "never-set", 0), None);
    t.set("big", &vec![9; 70 * KIB], NEVER);
    t.clear();
    assert!(!t.incomplete());
    assert_eq!(get(&v, "big", 0), None);
}

#[test]
#[cfg_attr(miri, ignore = "long; the miri_ cases cover the protocol")]
fn keys_fill_the_region_then_overflow_and_freed_room_is_reused() {
    let r = Region::new(1 << 20);
    let t = r.table();
    let v = r.view();
    let key = |i: usize| format!("key:{i}");
    let mut placed = 0;
    while !t.incomplete() {
        t.set(&key(placed), &placed.to_le_bytes(), NEVER);
        placed += 1;
    }
    let stored = placed - 1;
    assert!(stored > 5_000, "a megabyte holds {stored} small keys");
    for i in (0..stored).step_by(97) {
        assert_eq!(get(&v, &key(i), 0), Some(i.to_le_bytes().to_vec()));
    }
    let mut out = Vec::new();
    assert_eq!(v.get(&key(stored), 0, &mut out), Lookup::AskMain);
    // Freeing half makes room for as many new keys again, many times over.
    for round in 0..5 {
        for i in (0..stored).filter(|i| i % 2 == round % 2) {
            t.remove(&key(i));
        }
        t.remove(&key(stored));
        assert!(!t.incomplete(), "round {round}");
        for i in (0..stored).filter(|i| i % 2 == round % 2) {
            t.set(&key(i), &(i + round).to_le_bytes(), NEVER);
        }
        assert!(!t.incomplete(), "round {round}: the freed room was reused");
    }
    // Emptied key by key, the table starts afresh.
    for i in 0..stored {
        t.remove(&key(i));
    }
    assert_eq!(t.live(), 0);
    for i in 0..stored {
        t.set(&key(i), &i.to_le_bytes(), NEVER);
    }
    assert!(!t.incomplete());
    assert_eq!(
        get(&v, &key(stored - 1), 0),
        Some((stored - 1).to_le_bytes().to_vec())
    );
}

#[test]
#[cfg_attr(miri, ignore = "long; the miri_ cases cover the protocol")]
fn large_values_come_and_go_in_a_region_that_holds_few_at_once() {
    let r = Region::new(16 << 20);
    let t = r.table();
    let v = r.view();
    let mut out = Vec::new();
    for round in 0..40usize {
        let len = (1 << 20) + round * 4099;
        let value: Vec<u8> = (0..len).map(|i| (i * 7 + round) as u8).collect();
        t.set(&format!("big{}", round % 5), &value, NEVER);
        assert_eq!(
            v.get(&format!("big{}", round % 5), 0, &mut out),
            Lookup::Found
        );
        assert!(out == value, "round {round}");
    }
    assert!(!t.incomplete());
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    /// Key, value length, time to live, whether the set is main's own
    /// (through the entry main holds, as its store sets) or the writer's
    /// (`Table::insert`, found through the index).
    Set(usize, usize, Option<u64>, bool),
    Remove(usize),
    /// A new deadline (or none) for a live key, as `expire`/`persist` give.
    Expire(usize, Option<u64>),
    Clear,
    Batch(Vec<(usize, Option<usize>)>),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![4 => 0..40usize, 2 => 40..600usize, 1 => 3_000..20_000usize];
    prop_oneof![
        8 => (0..24usize, len, proptest::option::of(1..50u64), any::<bool>())
            .prop_map(|(k, l, d, s)| Op::Set(k, l, d, s)),
        3 => (0..24usize).prop_map(Op::Remove),
        2 => (0..24usize, proptest::option::of(1..50u64)).prop_map(|(k, d)| Op::Expire(k, d)),
        1 => Just(Op::Clear),
        2 => proptest::collection::vec((0..24usize, proptest::option::of(0..300usize)), 1..8)
            .prop_map(Op::Batch),
        2 => (1..20u64).prop_map(Op::Advance),
    ]
}

fn key(k: usize) -> String {
    // Keys of many lengths, some longer than a word.
    format!("{k}:{}", "x".repeat(k % 13))
}

fn value(k: usize, len: usize, step: usize) -> Vec<u8> {
    (0..len).map(|i| (i ^ k ^ step) as u8).collect()
}

/// Checks every key against the model.
fn check(t: &Table, v: &View, model: &HashMap<usize, (Vec<u8>, u64)>, now: u64) {
    let mut out = Vec::new();
    for k in 0..24 {
        let want = model.get(&k).filter(|(_, d)| *d > now).map(|(v, _)| v);
        match v.get(&key(k), now, &mut out) {
            Lookup::Found => assert_eq!(Some(&out), want, "key {k} at {now}"),
            Lookup::Absent => assert_eq!(want, None, "key {k} at {now}"),
            Lookup::AskMain => assert!(t.incomplete(), "key {k}: ask main, with every key placed"),
        }
    }
}

fn run(ops: Vec<Op>, region: usize) {
    let r = Region::new(region);
    let t = r.table();
    let v = r.view();
    let mut model = HashMap::new();
    let mut held = Held::default();
    let mut now = 0;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Set(k, len, ttl, through_entry) => {
                let d = ttl.map_or(NEVER, |t| now + t);
                let val = value(k, len, step);
                if through_entry {
                    held.set(&t, &key(k), &val, d);
                } else {
                    let at = t.insert(t.hash(&key(k)), &key(k), &val, d);
                    held.placed(&key(k), at);
                }
                model.insert(k, (val, d));
            }
            Op::Remove(k) => {
                held.remove(&t, &key(k));
                model.remove(&k);
            }
            Op::Expire(k, ttl) => {
                let d = ttl.map_or(NEVER, |t| now + t);
                if let Some(entry) = model.get_mut(&k).filter(|(_, old)| *old > now) {
                    match held.at(&key(k)) {
                        Some(at) => t.set_deadline_at(t.hash(&key(k)), at, d),
                        None => t.set_deadline(&key(k), d),
                    }
                    entry.1 = d;
                }
            }
            Op::Clear => {
                held = Held::default();
                t.clear();
                model.clear();
            }
            Op::Batch(changes) => t.batch(|b: &Batch<'_>| {
                for (k, len) in changes {
                    match len {
                        Some(len) => {
                            let val = value(k, len, step);
                            held.placed(&key(k), b.set(&key(k), &val, NEVER));
                            model.insert(k, (val, NEVER));
                        }
                        None => {
                            held.placed(&key(k), None);
                            b.remove(&key(k));
                            model.remove(&k);
                        }
                    }
                }
            }),
            Op::Advance(by) => now += by,
        }
        check(&t, &v, &model, now);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        ..ProptestConfig::default()
    })]

    /// A region that holds everything: every answer is exact.
    #[test]
    fn answers_match_a_model_when_everything_fits(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops, 1 << 20);
    }

    /// A region that fills up: every answer is exact or "ask main", and
    /// "ask main" only while some key could not be placed.
    #[test]
    fn answers_match_a_model_in_a_region_that_fills_up(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops, 40 * KIB);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 256 },
        ..ProptestConfig::default()
    })]

    /// Words of a live table overwritten with garbage (what a torn read
    /// can meet): every read still returns, in bounds, without a panic and
    /// without allocating more than the region.
    #[test]
    fn reads_of_a_garbled_table_return_without_panicking(
        scribbles in proptest::collection::vec((0..(16 * KIB / 8), any::<u64>(), 0..6u8), 1..64),
    ) {
        let r = Region::new(16 * KIB);
        let t = r.table();
        for k in 0..40 {
            t.set(&key(k), &value(k, k * 5, 0), if k % 3 == 0 { 10 } else { NEVER });
        }
        let v = r.view();
        for (word, bits, kind) in scribbles {
            // SAFETY: in bounds; nothing else reads or writes the region
            // while this one thread scribbles.
            let cell = unsafe { &*r.base.as_ptr().cast::<AtomicU64>().add(word) };
            let was = cell.load(Ordering::Relaxed);
            // Any word, small numbers (offsets, lengths, classes), and the
            // word as it was with a bit flipped or its low half kept (an
            // entry's head keeps its key length: its value length and class
            // go wrong; a bucket keeps its tag and points elsewhere).
            let garbage = match kind {
                0 => bits,
                1 => bits % (32 * KIB as u64),
                2 => u64::MAX - (bits % 8),
                3 => was ^ (1 << (bits % 64)),
                4 => (was & 0xffff) | (bits & !0xffff),
                _ => (was & !0xffff_ffff) | (bits & 0xffff_ffff),
            };
            cell.store(garbage, Ordering::Relaxed);
        }
        let mut out = Vec::new();
        for k in 0..60 {
            let _ = v.get(&key(k), 5, &mut out);
            prop_assert!(out.capacity() <= 2 * r.len());
        }
    }
}

/// The bytes of version `n` of key `k`: long enough to span words, and
/// different at every byte from any other version's, so that a torn read
/// cannot pass for a whole one.
fn versioned(k: u32, n: u64) -> Vec<u8> {
    let len = 16 + (n as usize * 37 + k as usize) % 200;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&k.to_le_bytes());
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend((16..len).map(|i| (i as u64 ^ n ^ u64::from(k)) as u8));
    v
}

fn parse(v: &[u8]) -> Option<(u32, u64)> {
    let k = u32::from_le_bytes(v.get(..4)?.try_into().ok()?);
    let n = u64::from_le_bytes(v.get(4..12)?.try_into().ok()?);
    (versioned(k, n) == v).then_some((k, n))
}

/// Whether version `n` of key `k` removes it rather than sets it.
fn removes(k: u32, n: u64) -> bool {
    (n + u64::from(k)) % 5 == 0
}

/// Readers check every answer against what the writers had completed
/// before the read began and what they had begun after it ended, while
/// the writers grow the index from empty, move values between blocks of
/// every size, rewrite them in place without the writer's lock, reuse
/// freed blocks, and write pairs of keys in batches.
fn readers_never_see_torn_old_or_resurrected_values(
    keys: u32,
    versions: u64,
    readers: usize,
    writers: usize,
) {
    let r = Region::new(if cfg!(miri) { 64 * KIB } else { 8 << 20 });
    let t = r.table();
    let done: Arc<Vec<AtomicU64>> = Arc::new((0..keys).map(|_| AtomicU64::new(0)).collect());
    let begun: Arc<Vec<AtomicU64>> = Arc::new((0..keys).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let name = |k: u32| format!("key-{k}");
    let checkers: Vec<_> = (0..readers)
        .map(|seed| {
            let (r, done, begun, stop) = (r.clone(), done.clone(), begun.clone(), stop.clone());
            thread::spawn(move || {
                let v = r.view();
                let mut out = Vec::new();
                let (mut found, mut asked) = (0u64, 0u64);
                let mut k = seed as u32;
                loop {
                    let finished = stop.load(Ordering::Acquire);
                    k = (k.wrapping_mul(2_654_435_761).wrapping_add(1)) % keys;
                    let before = done[k as usize].load(Ordering::Acquire);
                    let got = v.get(&name(k), NEVER - 1, &mut out);
                    let after = begun[k as usize].load(Ordering::Acquire);
                    match got {
                        Lookup::Found => {
                            let (kk, n) = parse(&out)
                                .unwrap_or_else(|| panic!("key {k}: a torn value {out:?}"));
                            assert_eq!(kk, k, "another key's value");
                            assert!(n >= before, "key {k}: version {n}, older than {before}");
                            assert!(n <= after, "key {k}: version {n}, not begun ({after})");
                            assert!(!removes(k, n), "key {k}: version {n} removed it");
                            found += 1;
                        }
                        Lookup::Absent => assert!(
                            (before..=after).any(|n| n == 0 || removes(k, n)),
                            "key {k} absent, though set from {before} to {after}"
                        ),
                        Lookup::AskMain => asked += 1,
                    }
                    // Pairs written in one batch: the second is never
                    // older than the first read just before it.
                    let mut first = Vec::new();
                    if v.get("pair-a", NEVER - 1, &mut first) == Lookup::Found
                        && v.get("pair-b", NEVER - 1, &mut out) == Lookup::Found
                    {
                        let (_, a) = parse(&first).expect("whole");
                        let (_, b) = parse(&out).expect("whole");
                        assert!(b >= a, "a batch seen half applied: a at {a}, b at {b}");
                    }
                    if finished {
                        return (found, asked);
                    }
                }
            })
        })
        .collect();
    // Each writer owns whole stripes, as the shard lock main's store holds
    // for a write makes its holder do, and sets as the store does (owned:
    // in place without the writer's lock when the value fits); the first
    // also owns the pairs' stripes and writes the pairs in batches.
    let stripes = t.seed_and_stripes().1;
    let stripe = |key: &str| stripe_of(t.hash(key), stripes);
    let pairs = [stripe("pair-a"), stripe("pair-b")];
    let owner = |k: u32| {
        let s = stripe(&name(k));
        if pairs.contains(&s) { 0 } else { s % writers }
    };
    thread::scope(|scope| {
        for w in 0..writers {
            let (t, done, begun) = (&t, &done, &begun);
            let mine: Vec<u32> = (0..keys).filter(|&k| owner(k) == w).collect();
            scope.spawn(move || {
                let mut held = Held::default();
                for n in 1..=versions {
                    for &k in &mine {
                        // Keys join over the first versions, so the index
                        // grows while readers read.
                        if u64::from(k) * 4 > n * u64::from(keys) {
                            continue;
                        }
                        let key = name(k);
                        begun[k as usize].store(n, Ordering::Release);
                        if removes(k, n) {
                            held.remove(t, &key);
                        } else {
                            held.set(t, &key, &versioned(k, n), NEVER);
                        }
                        done[k as usize].store(n, Ordering::Release);
                    }
                    if w == 0 {
                        t.batch(|b| {
                            b.set("pair-a", &versioned(0, n), NEVER);
                            b.set("pair-b", &versioned(0, n), NEVER);
                        });
                    }
                }
            });
        }
    });
    stop.store(true, Ordering::Release);
    let mut found = 0;
    for c in checkers {
        let (f, a) = c.join().expect("a reader's checks");
        assert!(
            a <= f + 10 || cfg!(miri),
            "readers asked main {a} times, found {f}"
        );
        found += f;
    }
    assert!(found > 0);
    assert!(!t.incomplete());
}

#[test]
#[cfg_attr(miri, ignore = "long; the miri_ cases cover the protocol")]
fn readers_racing_writers_never_see_a_torn_old_or_resurrected_value() {
    readers_never_see_torn_old_or_resurrected_values(20_000, 40, 3, 2);
}

#[test]
fn miri_readers_racing_writers() {
    let (keys, versions) = if cfg!(miri) { (32, 8) } else { (300, 200) };
    readers_never_see_torn_old_or_resurrected_values(keys, versions, 2, 2);
}

/// One key rewritten in place as fast as the writer can, read as fast as
/// the readers can: each value is its version, then the version's low byte
/// repeated, so a read that overlapped a rewrite and were kept would show
/// two versions.
fn rewrites_in_place_are_never_read_torn(len: usize, rewrites: u64, readers: usize) {
    let r = Region::new(if cfg!(miri) { 64 * KIB } else { 1 << 20 });
    let t = r.table();
    let value = |n: u64| {
        let mut v = n.to_le_bytes().to_vec();
        v.resize(len, n as u8);
        v
    };
    t.set("hot", &value(0), NEVER);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let checkers: Vec<_> = (0..readers)
        .map(|_| {
            let (r, done, stop) = (r.clone(), done.clone(), stop.clone());
            thread::spawn(move || {
                let v = r.view();
                let mut out = Vec::with_capacity(len);
                while !stop.load(Ordering::Acquire) {
                    let before = done.load(Ordering::Acquire);
                    if v.get("hot", 0, &mut out) == Lookup::Found {
                        assert_eq!(out.len(), len);
                        let n = u64::from_le_bytes(out[..8].try_into().expect("8 bytes"));
                        assert!(
                            out[8..].iter().all(|&b| b == n as u8),
                            "a torn value: {out:?}"
                        );
                        assert!(n >= before, "version {n}, older than {before}");
                    }
                }
            })
        })
        .collect();
    // As main's store writes: in place, without the writer's lock.
    let at = t.entry_of("hot").expect("placed");
    let h = t.hash("hot");
    for n in 1..=rewrites {
        assert_eq!(t.rewrite(h, at, "hot", &value(n), NEVER), Some(at));
        done.store(n, Ordering::Release);
    }
    assert_eq!(t.entry_of("hot"), Some(at), "rewritten in place");
    stop.store(true, Ordering::Release);
    for c in checkers {
        c.join().expect("a reader's checks");
    }
}

#[test]
#[cfg_attr(miri, ignore = "long; the miri_ cases cover the protocol")]
fn a_value_rewritten_in_place_is_never_read_torn() {
    rewrites_in_place_are_never_read_torn(2048, 200_000, 2);
}

#[test]
fn miri_a_value_rewritten_in_place_is_never_read_torn() {
    let rewrites = if cfg!(miri) { 30 } else { 20_000 };
    rewrites_in_place_are_never_read_torn(64, rewrites, 1);
}

/// Costs of `Table::set` and `View::get` with 24-byte values and 100,000
/// keys in random order: `cargo test --release -p yuki-storage --lib
/// shared::tests::costs -- --ignored --nocapture`. Prints; asserts nothing.
#[test]
#[ignore = "a measurement, run by hand in release builds"]
fn costs_of_set_and_get() {
    use std::time::Instant;
    let n = 100_000usize;
    let r = Region::new(64 << 20);
    let t = r.table();
    let v = r.view();
    let keys: Vec<String> = (0..n).map(|i| format!("bench:key:{i}")).collect();
    // A fixed permutation: a multiplier coprime with n.
    let order: Vec<usize> = (0..n).map(|i| (i * 7_919 + 13) % n).collect();
    let value = [7u8; 24];
    let per = |start: Instant| start.elapsed().as_nanos() as f64 / n as f64;
    let mut held = Held::default();
    let start = Instant::now();
    for &i in &order {
        held.set(&t, &keys[i], &value, NEVER);
    }
    println!("insert {:.1} ns", per(start));
    for round in 0..5 {
        let start = Instant::now();
        for &i in &order {
            t.set(&keys[i], &value, NEVER);
        }
        let set = per(start);
        let start = Instant::now();
        for &i in &order {
            held.set(&t, &keys[i], &value, NEVER);
        }
        let owned = per(start);
        let mut out = Vec::with_capacity(64);
        let start = Instant::now();
        for &i in &order {
            assert_eq!(v.get(&keys[i], 0, &mut out), Lookup::Found);
        }
        let get = per(start);
        let start = Instant::now();
        for &i in &order {
            std::hint::black_box(t.hash(&keys[i]));
        }
        let hash = per(start);
        println!(
            "round {round}: set through the index {set:.1} ns, through the entry held {owned:.1} ns, get {get:.1} ns, hash {hash:.1} ns"
        );
    }
}

/// The table in a memory file that main maps read-write and the reader maps
/// read-only, as a child does: a store by the reader would kill the test
/// with a fault. Main sets, moves, removes, batches and clears meanwhile.
#[cfg(all(target_os = "linux", target_env = "gnu", not(miri)))]
#[test]
fn a_view_reads_a_read_only_mapping_while_main_writes() {
    use std::ptr::null_mut;
    let len = 4 << 20;
    // SAFETY: plain system calls on a memory file this test owns; each
    // result is checked before use, and both mappings outlive the threads
    // that use them (a scope), then are unmapped.
    unsafe {
        let fd = libc::memfd_create(c"yuki-shared-table-test".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0, "memfd_create");
        assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0, "ftruncate");
        let map = |prot| {
            let p = libc::mmap(null_mut(), len, prot, libc::MAP_SHARED, fd, 0);
            assert_ne!(p, libc::MAP_FAILED, "mmap");
            NonNull::new(p.cast::<u8>()).expect("a mapping")
        };
        let rw = map(libc::PROT_READ | libc::PROT_WRITE);
        let ro = map(libc::PROT_READ);
        libc::close(fd);
        let t = Table::create(rw, len, 9, 0).expect("a table");
        let v = View::open(ro, len).expect("a view of the read-only mapping");
        let stop = AtomicBool::new(false);
        thread::scope(|s| {
            s.spawn(|| {
                let mut out = Vec::new();
                let mut found = 0u64;
                while !stop.load(Ordering::Acquire) {
                    for k in 0..200 {
                        if v.get(&key(k), 0, &mut out) == Lookup::Found {
                            found += 1;
                        }
                    }
                }
                assert!(found > 0);
            });
            for round in 0..30 {
                for k in 0..2_000 {
                    t.set(&key(k), &value(k, (k + round) % 300, round), NEVER);
                }
                t.batch(|b| {
                    for k in (0..2_000).step_by(3) {
                        b.remove(&key(k));
                    }
                });
                if round % 10 == 9 {
                    t.clear();
                }
            }
            stop.store(true, Ordering::Release);
        });
        drop((t, v));
        assert_eq!(libc::munmap(rw.as_ptr().cast(), len), 0);
        assert_eq!(libc::munmap(ro.as_ptr().cast(), len), 0);
    }
}
