//! A child's side of the table: reads only, and trusts nothing it reads.

use std::ptr::NonNull;
use std::sync::atomic::{Ordering, fence};

use super::alloc::{MAX_CLASS, class_size};
use super::hash::hash;
use super::layout::*;
use super::words::Words;

/// How many times a read starts again when main changed what it read,
/// before it gives up and asks main.
const RETRIES: usize = 64;

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The key's value, now in `out`.
    Found,
    /// The key had no live value at a moment during the read.
    Absent,
    /// The table cannot tell (a write in progress, a key the region could
    /// not hold, a structure that does not check out): ask main.
    AskMain,
}

/// What one pass over the table saw, before it is validated.
enum Seen {
    Found,
    Missing,
    Expired,
    Garbled,
    /// The value is longer than `out` has room for: a read that proves
    /// valid makes room and reads again, so that a torn read never makes a
    /// child allocate.
    NeedRoom(usize),
}

/// One pass of a read: what it is checked against, and where it walks.
struct Pass {
    stripe: usize,
    seq: u64,
    generation: u64,
    index: usize,
    log2: u64,
}

/// A child's side: reads only; the `len` bytes at `base` may be changed by
/// main at any moment.
pub(crate) struct View {
    words: Words,
    seed: u64,
    stripes: usize,
    clock_origin_ns: u64,
}

// SAFETY: the region is only loaded from, atomically.
unsafe impl Send for View {}
unsafe impl Sync for View {}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("len", &self.words.len())
            .field("stripes", &self.stripes)
            .finish_non_exhaustive()
    }
}

impl View {
    /// Opens the table main laid out at `base`, checking that it is one,
    /// of this build's layout, and of this size.
    ///
    /// # Safety
    /// `base` is 8-aligned and valid for atomic reads of `len` bytes for
    /// the view's life (main may write them at any time; nothing is ever
    /// unmapped under the view).
    pub(crate) unsafe fn open(base: NonNull<u8>, len: usize) -> Result<View, String> {
        if base.as_ptr() as usize % 8 != 0 {
            return Err(format!("a shared table must be 8-aligned, not at {base:p}"));
        }
        // SAFETY: as promised by the caller.
        let words = unsafe { Words::new(base, len / 8 * 8) };
        let word = |at| words.get(at, Ordering::Acquire);
        if word(H_MAGIC) != Some(MAGIC) {
            return Err(
                "the region holds no shared table: main must lay it out before children open it"
                    .into(),
            );
        }
        let version = word(H_VERSION).unwrap_or(0);
        if version != LAYOUT_VERSION {
            return Err(format!(
                "the shared table has layout version {version}, this build reads {LAYOUT_VERSION}: run children built with main's version of yuki"
            ));
        }
        let said = word(H_LEN).unwrap_or(0);
        if said != words.len() as u64 {
            return Err(format!(
                "the shared table says it has {said} bytes, but {} are mapped: map the whole region",
                words.len()
            ));
        }
        let stripes = word(H_STRIPES).unwrap_or(0) as usize;
        if !stripes.is_power_of_two() || stripes > 1 << 20 || heap_at(stripes) > words.len() {
            return Err(format!(
                "the shared table's header is damaged ({stripes} stripes)"
            ));
        }
        Ok(View {
            words,
            seed: word(H_SEED).unwrap_or(0),
            stripes,
            clock_origin_ns: word(H_CLOCK_ORIGIN).unwrap_or(0),
        })
    }

    /// The origin of the clock deadlines are counted on, as main gave it.
    pub(crate) fn clock_origin_ns(&self) -> u64 {
        self.clock_origin_ns
    }

    /// Reads `key` as of some moment during the call: its value into `out`
    /// ([`Lookup::Found`]), [`Lookup::Absent`] if it had none or it had
    /// expired (deadline at or before `now_ns`), or [`Lookup::AskMain`].
    /// Allocates only if `out` lacks the capacity; `out` holds garbage
    /// unless the answer is `Found`.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str, now_ns: u64, out: &mut Vec<u8>) -> Lookup {
        self.get_at(key, || now_ns, out)
    }

    /// [`View::get`] reading the clock with `now` only when the key's entry
    /// has a deadline: most have none, and a clock read can cost as much
    /// as the rest of the get (or be a system call, on some machines).
    pub(crate) fn get_at(&self, key: &str, now: impl Fn() -> u64, out: &mut Vec<u8>) -> Lookup {
        if key.len() > MAX_KEY {
            return Lookup::AskMain;
        }
        let h = hash(self.seed, key.as_bytes());
        for _ in 0..RETRIES {
            let Some(pass) = self.begin(h) else {
                std::hint::spin_loop();
                continue;
            };
            let seen = self.find(&pass, h, key, &now, out);
            let incomplete = self.words.load(H_INCOMPLETE, Ordering::Relaxed) != 0;
            if !self.still_valid(&pass) {
                std::hint::spin_loop();
                continue;
            }
            return match seen {
                Seen::NeedRoom(n) => {
                    out.reserve(n);
                    continue;
                }
                Seen::Found => Lookup::Found,
                Seen::Expired => Lookup::Absent,
                Seen::Missing if !incomplete => Lookup::Absent,
                Seen::Missing | Seen::Garbled => Lookup::AskMain,
            };
        }
        Lookup::AskMain
    }

    /// Starts a pass for the key hashed `h`: the marks it will be checked
    /// against, and the index it walks; `None` while main is changing them.
    #[inline]
    fn begin(&self, h: u64) -> Option<Pass> {
        let stripe = STRIPES_AT + 8 * stripe_of(h, self.stripes);
        let generation = self.words.load(H_GEN, Ordering::Acquire);
        let seq = self.words.load(stripe, Ordering::Acquire);
        if generation % 2 == 1 || seq % 2 == 1 {
            return None;
        }
        Some(Pass {
            stripe,
            seq,
            generation,
            index: self.words.load(H_INDEX_AT, Ordering::Relaxed) as usize,
            log2: self.words.load(H_INDEX_LOG2, Ordering::Relaxed),
        })
    }

    /// Whether nothing `pass` read changed while it read.
    #[inline]
    fn still_valid(&self, pass: &Pass) -> bool {
        // Every load of the pass comes before the checks: if any of them
        // read a word stored after main marked a change (odd stripe, new
        // generation, each followed by a Release fence), this fence
        // synchronizes with main's and the checks see the mark.
        fence(Ordering::Acquire);
        self.words.load(pass.stripe, Ordering::Relaxed) == pass.seq
            && self.words.load(H_GEN, Ordering::Relaxed) == pass.generation
    }

    /// One pass: the index, then the entry; every offset and length is
    /// checked against the region before use.
    #[inline]
    fn find(
        &self,
        pass: &Pass,
        h: u64,
        key: &str,
        now: &impl Fn() -> u64,
        out: &mut Vec<u8>,
    ) -> Seen {
        let w = &self.words;
        let (at, head) = match probe(w, pass.index, pass.log2, h, key) {
            Probed::Entry { at, head } => (at, head),
            Probed::Missing => return Seen::Missing,
            Probed::Garbled => return Seen::Garbled,
        };
        let (key_len, _, value_len) = entry_parts(head);
        let deadline = w.load(at + 8, Ordering::Relaxed);
        if deadline != NO_DEADLINE && deadline <= now() {
            return Seen::Expired;
        }
        if pad(value_len) > out.capacity() {
            return Seen::NeedRoom(pad(value_len));
        }
        w.copy_out(at + ENTRY_HEAD + pad(key_len), value_len, out);
        Seen::Found
    }
}

/// What a walk of the index for a key found.
pub(super) enum Probed {
    /// The key's entry at `at`, whose first word is `head`: its whole
    /// length lies in the region and within its class.
    Entry { at: usize, head: u64 },
    /// An empty bucket came first: the index does not hold the key.
    Missing,
    /// Something did not check out.
    Garbled,
}

/// Walks the index of `2^log2` buckets at `index` for `key` (hashed `h`)
/// and checks the entry it finds, as a reader must: every offset and
/// length against the region, so that a walk of memory changed under it
/// (which the caller then notices by validating) costs a wrong answer at
/// worst, never a fault.
#[inline]
pub(super) fn probe(w: &Words, index: usize, log2: u64, h: u64, key: &str) -> Probed {
    if log2 >= 48 || !w.fits(index, 8 << log2) {
        return Probed::Garbled;
    }
    let mask = (1usize << log2) - 1;
    let mut pos = h as usize & mask;
    for _ in 0..=mask {
        // Acquire: the entry a bucket names was written before it.
        let b = w.load(index + 8 * pos, Ordering::Acquire);
        if b == EMPTY {
            return Probed::Missing;
        }
        if b != TOMB && b & TAG_MASK == h & TAG_MASK {
            let at = bucket_at(b);
            let Some(head) = w.get(at, Ordering::Relaxed) else {
                return Probed::Garbled;
            };
            let (key_len, class, value_len) = entry_parts(head);
            if key_len == key.len() {
                let len = entry_len(key_len, value_len);
                if class > MAX_CLASS || len > class_size(class) || !w.fits(at, len) {
                    return Probed::Garbled;
                }
                if w.holds(at + ENTRY_HEAD, key.as_bytes()) {
                    return Probed::Entry { at, head };
                }
            }
        }
        pos = (pos + 1) & mask;
    }
    Probed::Garbled
}

#[cfg(test)]
mod tests {
    //! The checks of one pass, with main's changes made at chosen points
    //! between a pass's start and its end.

    use super::super::tests::Region;
    use super::*;

    const NEVER: u64 = u64::MAX;

    /// A pass over `key` that sees `change` happen between its start and
    /// its checks: whether the pass still counts.
    fn survives(region: &Region, key: &str, change: impl FnOnce()) -> bool {
        let v = region.view();
        let h = hash(v.seed, key.as_bytes());
        let pass = v.begin(h).expect("no change under way");
        change();
        let mut out = Vec::new();
        let _ = v.find(&pass, h, key, &|| 0, &mut out);
        v.still_valid(&pass)
    }

    /// A key in another stripe than `key`'s.
    fn elsewhere(v: &View, key: &str) -> String {
        let mine = stripe_of(hash(v.seed, key.as_bytes()), v.stripes);
        (0..)
            .map(|i| format!("other{i}"))
            .find(|k| stripe_of(hash(v.seed, k.as_bytes()), v.stripes) != mine)
            .expect("some key lies in another stripe")
    }

    #[test]
    fn the_clock_is_read_only_for_an_entry_with_a_deadline() {
        let r = Region::new(64 << 10);
        let t = r.table();
        t.set("forever", b"1", NEVER);
        t.set("until-10", b"2", 10);
        let v = r.view();
        let reads = std::cell::Cell::new(0);
        let reads = &reads;
        let at = |now: u64| {
            move || {
                reads.set(reads.get() + 1);
                now
            }
        };
        let mut out = Vec::new();
        assert_eq!(
            v.get_at("forever", at(u64::MAX - 1), &mut out),
            Lookup::Found
        );
        assert_eq!(v.get_at("missing", at(0), &mut out), Lookup::Absent);
        assert_eq!(reads.get(), 0, "no deadline met, no clock read");
        assert_eq!(v.get_at("until-10", at(9), &mut out), Lookup::Found);
        assert_eq!(out, b"2");
        assert_eq!(v.get_at("until-10", at(10), &mut out), Lookup::Absent);
        assert!(reads.get() >= 2, "a deadline met reads the clock");
    }

    #[test]
    fn miri_a_change_to_the_key_or_its_stripe_spoils_the_pass() {
        let r = Region::new(64 << 10);
        let t = r.table();
        t.set("k", b"1", NEVER);
        let other = elsewhere(&r.view(), "k");
        assert!(survives(&r, "k", || {}), "nothing changed");
        assert!(
            survives(&r, "k", || t.set(&other, b"x", NEVER)),
            "another stripe"
        );
        assert!(
            !survives(&r, "k", || t.set("k", b"2", NEVER)),
            "rewritten in place"
        );
        assert!(!survives(&r, "k", || t.set("k", &[3; 500], NEVER)), "moved");
        assert!(!survives(&r, "k", || t.remove("k")), "removed");
        assert!(!survives(&r, "k", || t.set("k", b"4", NEVER)), "set again");
        assert!(!survives(&r, "k", || t.clear()), "cleared");
    }

    #[test]
    fn miri_a_new_index_spoils_the_pass_even_if_the_key_is_untouched() {
        let r = Region::new(256 << 10);
        let t = r.table();
        t.set("k", b"1", NEVER);
        let v = r.view();
        let grow = || {
            for i in 0..200 {
                let k = elsewhere(&v, &format!("k{i}"));
                t.set(&format!("{k}-{i}"), b"x", NEVER);
            }
        };
        assert!(!survives(&r, "k", grow), "the index grew");
    }

    #[test]
    fn miri_reusing_freed_blocks_spoils_the_pass_even_if_the_key_is_untouched() {
        let r = Region::new(256 << 10);
        let t = r.table();
        let v = r.view();
        t.set("k", b"1", NEVER);
        let other = elsewhere(&v, "k");
        t.set(&other, &[0; 40], NEVER);
        // The other key moves between two block sizes: each move retires a
        // block, and enough retired bytes make the next move recycle them.
        let churn = || {
            let mut moved = 0;
            while moved <= super::super::alloc::RECYCLE_BYTES {
                t.set(&other, &[1; 40], NEVER);
                t.set(&other, &[2; 400], NEVER);
                moved += 40 + 400;
            }
        };
        assert!(!survives(&r, "k", churn), "freed blocks were reused");
    }

    #[test]
    fn miri_a_batch_is_unreadable_until_it_ends() {
        let r = Region::new(64 << 10);
        let t = r.table();
        let v = r.view();
        let b_key = elsewhere(&v, "a");
        t.set("a", b"old", NEVER);
        t.set(&b_key, b"old", NEVER);
        let mut out = Vec::new();
        t.batch(|b| {
            b.set("a", b"new", NEVER);
            // Readers retry, then ask main (which waits for the batch).
            assert_eq!(v.get("a", 0, &mut out), Lookup::AskMain);
            b.set(&b_key, b"new", NEVER);
            assert_eq!(v.get(&b_key, 0, &mut out), Lookup::AskMain);
        });
        assert_eq!(v.get("a", 0, &mut out), Lookup::Found);
        assert_eq!(out, b"new");
        assert_eq!(v.get(&b_key, 0, &mut out), Lookup::Found);
        assert_eq!(out, b"new");
    }
}
