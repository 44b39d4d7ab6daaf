//! [`SharedRegion`]: memory main shares with its children, handed from a
//! transport to the components above it.
//!
//! A transport that can share memory (the ipc transport on Linux) makes
//! one region for the store: main maps it read-write, every child maps it
//! read-only. The store writes its table there in main and reads it in a
//! child without a message to main. The transport only makes, seals,
//! hands down and maps the memory; what is in it is the store's business.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

/// A mapped region of memory shared between main and its children.
///
/// In main it is writable and one component at a time may write it (see
/// [`SharedRegion::claim`]); in a child it is mapped read-only, so that no
/// child can change what main and the other children read. The mapping
/// lives as long as this value.
///
/// ```
/// use std::ptr::NonNull;
/// use yuki_channel::SharedRegion;
///
/// // Any memory that outlives the region will do: here a heap buffer.
/// let mut words = vec![0u64; 512].into_boxed_slice();
/// let base = NonNull::new(words.as_mut_ptr().cast::<u8>()).unwrap();
/// // SAFETY: the buffer is 4096 bytes, writable, and moved into the
/// // region, which keeps it alive (a Box's heap memory does not move).
/// let region = unsafe { SharedRegion::new(base, 4096, true, words) };
/// assert_eq!(region.len(), 4096);
/// assert!(region.claim(), "the first writer gets it");
/// assert!(!region.claim(), "and nobody else");
/// ```
pub struct SharedRegion {
    base: NonNull<u8>,
    len: usize,
    writable: bool,
    claimed: AtomicBool,
    closed: AtomicBool,
    /// Keeps the memory mapped; dropped last.
    _owner: Box<dyn Send + Sync>,
}

// SAFETY: the region is plain shared memory reached through its base
// pointer; whoever reads or writes it says how (atomics, a seqlock). The
// owner that keeps it mapped is itself Send and Sync.
unsafe impl Send for SharedRegion {}
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// A region of `len` bytes at `base`, kept mapped by `owner`.
    ///
    /// # Safety
    ///
    /// `base..base + len` must stay mapped (readable, and writable if
    /// `writable`) for as long as `owner` lives, and must be aligned to at
    /// least 64 bytes.
    pub unsafe fn new(
        base: NonNull<u8>,
        len: usize,
        writable: bool,
        owner: impl Send + Sync + 'static,
    ) -> SharedRegion {
        SharedRegion {
            base,
            len,
            writable,
            claimed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            _owner: Box::new(owner),
        }
    }

    /// The first byte.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this process may write it (main) or only read it (a child).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Takes the region for one writer: `true` the first time, `false`
    /// ever after and in a child. Two writers that each laid out the memory
    /// their own way would corrupt each other, so a component writes only
    /// a region it claimed.
    pub fn claim(&self) -> bool {
        self.writable && !self.claimed.swap(true, Ordering::AcqRel)
    }
}

impl SharedRegion {
    /// Marks the region's contents as no longer kept: in a child, main is
    /// gone. The memory stays mapped, but readers stop trusting it and ask
    /// main (and so learn it is gone). A transport closes it before it
    /// fails the calls that were waiting on main, so a caller woken by
    /// that failure never reads the dead main's data after it.
    ///
    /// ```
    /// # use std::ptr::NonNull;
    /// # use yuki_channel::SharedRegion;
    /// # let mut words = vec![0u64; 8].into_boxed_slice();
    /// # let base = NonNull::new(words.as_mut_ptr().cast::<u8>()).unwrap();
    /// # // SAFETY: 64 bytes owned by the region.
    /// # let region = unsafe { SharedRegion::new(base, 64, false, words) };
    /// assert!(region.is_open());
    /// region.close();
    /// assert!(!region.is_open());
    /// ```
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether the writer still keeps the region (see [`SharedRegion::close`]).
    #[inline]
    pub fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }
}

impl fmt::Debug for SharedRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRegion")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("writable", &self.writable)
            .field("claimed", &self.claimed.load(Ordering::Relaxed))
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_region_is_never_claimed() {
        let mut words = vec![0u64; 8].into_boxed_slice();
        let base = NonNull::new(words.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: 64 bytes owned by the region.
        let region = unsafe { SharedRegion::new(base, 64, false, words) };
        assert!(!region.claim());
        assert!(!region.is_writable());
    }
}
