//! Main's bookkeeping of the heap's blocks, kept in main's own memory
//! (never in the region, so nothing a child can see steers it).
//!
//! Blocks come in size classes, four per doubling (at most a quarter of a
//! block is padding), from 32 bytes up. A freed block is first *retired*:
//! a reader may still be copying from it. Retired blocks become reusable
//! only when the table recycles them, which it does after bumping the
//! generation word every reader validates, so a read that overlapped the
//! reuse is retried. Recycling waits until [`RECYCLE_BYTES`] are retired
//! (or a block is wanted and none is free), so readers see a bump once per
//! many frees, not once per free.
//!
//! Blocks are laid out so that reading or writing an entry touches as few
//! cache lines as it can: a block of a line or less never straddles two,
//! a larger one starts at a line. The gap this can leave becomes a free
//! block when it is one class's size (32 to 56 bytes).
//!
//! Fragmentation is bounded per class: a class's free blocks are never
//! more than the most bytes that class held at once. When a block cannot
//! be had from its class or the untouched heap, a free block of up to four
//! classes larger (at most twice the size) is used instead, and a table
//! emptied of keys starts its heap afresh.

/// The smallest block: an entry's two header words, one word of key, one
/// of value.
pub(crate) const MIN_BLOCK: usize = 32;

/// A cache line, which blocks are laid out not to straddle needlessly.
const LINE: usize = 64;

/// Retired bytes that make the next allocation recycle first.
pub(crate) const RECYCLE_BYTES: usize = if cfg!(miri) { 512 } else { 1 << 20 };

/// The largest class (blocks of 2^60 bytes and more are never made).
pub(crate) const MAX_CLASS: usize = 5 + (60 - 6) * 4;

/// How many classes up a block may come from when its own has none.
const BORROW: usize = 4;

/// The class of a block of at least `size` bytes.
#[inline]
pub(crate) fn class_of(size: usize) -> usize {
    if size <= 64 {
        return size.max(MIN_BLOCK).div_ceil(8) - 4;
    }
    let k = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
    5 + (k - 6) * 4 + (((size - 1) >> (k - 2)) - 4)
}

/// The bytes a block of `class` has.
#[inline]
pub(crate) fn class_size(class: usize) -> usize {
    if class <= 4 {
        return (class + 4) * 8;
    }
    let k = (class - 5) / 4 + 6;
    let step = (class - 5) % 4;
    (5 + step) << (k - 2)
}

/// The heap between `start` and `end`.
#[derive(Debug)]
pub(crate) struct Alloc {
    start: usize,
    end: usize,
    /// Below it, every byte is in a block; above it, none was ever handed out.
    bump: usize,
    free: Vec<Vec<usize>>,
    retired: Vec<(usize, usize)>,
    retired_bytes: usize,
}

impl Alloc {
    pub(crate) fn new(start: usize, end: usize) -> Alloc {
        Alloc {
            start,
            end,
            bump: start,
            free: Vec::new(),
            retired: Vec::new(),
            retired_bytes: 0,
        }
    }

    /// A block of `class` or up to [`BORROW`] classes larger, and its
    /// class, or `None` if none is free or untouched.
    pub(crate) fn take(&mut self, class: usize) -> Option<(usize, usize)> {
        if let Some(at) = self.free.get_mut(class).and_then(Vec::pop) {
            return Some((at, class));
        }
        if let Some(at) = self.bump_take(class_size(class)) {
            return Some((at, class));
        }
        (class + 1..=class + BORROW)
            .find_map(|c| self.free.get_mut(c).and_then(Vec::pop).map(|at| (at, c)))
    }

    /// `size` bytes from the untouched heap, placed so that a block of a
    /// cache line or less lies within one line and a larger one starts at
    /// a line: reading or writing an entry then touches as few lines as it
    /// can. A gap this leaves becomes a free block when one fits it.
    fn bump_take(&mut self, size: usize) -> Option<usize> {
        let offset = self.bump % LINE;
        let at = if (size <= LINE && offset + size > LINE) || (size > LINE && offset != 0) {
            self.bump.next_multiple_of(LINE)
        } else {
            self.bump
        };
        if at > self.end || size > self.end - at {
            return None;
        }
        let gap = at - self.bump;
        if gap >= MIN_BLOCK && class_size(class_of(gap)) == gap {
            self.give(self.bump, class_of(gap));
        }
        self.bump = at + size;
        Some(at)
    }

    /// Adds a block nobody uses or reads to the free blocks of `class`.
    fn give(&mut self, at: usize, class: usize) {
        if self.free.len() <= class {
            self.free.resize_with(class + 1, Vec::new);
        }
        self.free[class].push(at);
    }

    /// Hands back a block that readers may still be copying from.
    pub(crate) fn retire(&mut self, at: usize, class: usize) {
        self.retired.push((at, class));
        self.retired_bytes += class_size(class);
    }

    pub(crate) fn retired_bytes(&self) -> usize {
        self.retired_bytes
    }

    /// Makes every retired block reusable. Call only once readers can tell
    /// that memory may have been reused (the generation was bumped).
    pub(crate) fn recycle(&mut self) {
        let mut retired = std::mem::take(&mut self.retired);
        for (at, class) in retired.drain(..) {
            self.give(at, class);
        }
        // The list's memory is kept for the next retirements.
        self.retired = retired;
        self.retired_bytes = 0;
    }

    /// Forgets every block: the whole heap is untouched again. The same
    /// condition as for [`Alloc::recycle`] applies.
    pub(crate) fn reset(&mut self) {
        self.bump = self.start;
        self.free.iter_mut().for_each(Vec::clear);
        self.retired.clear();
        self.retired_bytes = 0;
    }

    /// Bytes handed out since the heap was last fresh.
    pub(crate) fn handed_out(&self) -> usize {
        self.bump - self.start
    }

    /// Bytes never handed out.
    #[cfg(test)]
    pub(crate) fn untouched(&self) -> usize {
        self.end - self.bump
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "long under Miri")]
    fn classes_fit_their_sizes_with_at_most_a_quarter_spare() {
        let mut last = 0;
        for size in 1..(1 << 20) {
            let c = class_of(size);
            let s = class_size(c);
            assert!(s >= size && s >= MIN_BLOCK, "{size} in class {c} of {s}");
            assert!(s <= MIN_BLOCK.max(size + size / 4 + 8), "{size}: {s}");
            assert!(
                c == last || c == last + 1,
                "classes are consecutive at {size}"
            );
            assert_eq!(class_of(s), c, "a class's own size stays in it");
            assert_eq!(s % 8, 0);
            last = c;
        }
        assert!(class_of(1 << 40) < 256, "a class fits in an entry's byte");
    }

    #[test]
    fn retired_blocks_are_reused_only_after_recycling() {
        let mut a = Alloc::new(1024, 1024 + 256);
        let (x, cx) = a.take(class_of(64)).unwrap();
        let (y, _) = a.take(class_of(64)).unwrap();
        assert_ne!(x, y);
        a.take(class_of(128)).unwrap();
        assert_eq!(a.untouched(), 0);
        assert_eq!(a.take(class_of(64)), None, "full");
        a.retire(x, cx);
        assert_eq!(a.retired_bytes(), 64);
        assert_eq!(a.take(class_of(64)), None, "retired, not yet free");
        a.recycle();
        assert_eq!(a.retired_bytes(), 0);
        assert_eq!(a.take(class_of(64)), Some((x, cx)));
        assert_eq!(a.take(class_of(64)), None);
    }

    #[test]
    fn blocks_straddle_no_cache_line_they_need_not_and_gaps_are_reused() {
        let mut a = Alloc::new(0, 4096);
        // 32 bytes fit in the first line; 40 more would cross into the
        // second, so they start it, and the 32-byte gap left behind
        // becomes a free block of its class.
        assert_eq!(a.take(class_of(32)), Some((0, class_of(32))));
        assert_eq!(a.take(class_of(40)), Some((64, class_of(40))));
        assert_eq!(a.take(class_of(32)), Some((32, class_of(32))), "the gap");
        // Larger than a line: starts at one (the 8-byte gap is lost).
        let (at, _) = a.take(class_of(100)).unwrap();
        assert_eq!(at % LINE, 0);
        for size in [32, 48, 64, 72, 200, 1000] {
            let (at, class) = a.take(class_of(size)).unwrap();
            let len = class_size(class);
            if len <= LINE {
                assert_eq!(at / LINE, (at + len - 1) / LINE, "{size} bytes at {at}");
            } else {
                assert_eq!(at % LINE, 0, "{size} bytes at {at}");
            }
        }
    }

    #[test]
    fn a_small_block_may_borrow_a_larger_free_one_and_keeps_its_class() {
        let mut a = Alloc::new(0, 128);
        let (x, c) = a.take(class_of(128)).unwrap();
        a.retire(x, c);
        a.recycle();
        assert_eq!(a.take(class_of(96)), Some((x, c)), "one class up");
        a.retire(x, c);
        a.recycle();
        assert_eq!(a.take(class_of(32)), None, "more than four classes up");
        a.reset();
        assert_eq!(a.untouched(), 128);
        assert_eq!(a.take(class_of(32)), Some((0, 0)));
    }
}
