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
//! Fragmentation is bounded per class: a class's free blocks are never
//! more than the most bytes that class held at once. When a block cannot
//! be had from its class or the untouched heap, a free block of up to four
//! classes larger (at most twice the size) is used instead, and a table
//! emptied of keys starts its heap afresh.

/// The smallest block: an entry's two header words, one word of key, one
/// of value.
pub(crate) const MIN_BLOCK: usize = 32;

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
        let size = class_size(class);
        if size <= self.end - self.bump {
            let at = self.bump;
            self.bump += size;
            return Some((at, class));
        }
        (class + 1..=class + BORROW)
            .find_map(|c| self.free.get_mut(c).and_then(Vec::pop).map(|at| (at, c)))
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
        for (at, class) in self.retired.drain(..) {
            if self.free.len() <= class {
                self.free.resize_with(class + 1, Vec::new);
            }
            self.free[class].push(at);
        }
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
