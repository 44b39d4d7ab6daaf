//! An allocator that counts what a test binary holds, for tests that bound
//! the memory an operation costs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes held and the most held since
/// [`CountingAllocator::start`]. Install it in a test binary with
/// `#[global_allocator]`.
///
/// ```
/// use yuki_testkit::CountingAllocator;
///
/// static COUNT: CountingAllocator = CountingAllocator::new();
/// // In a test binary: #[global_allocator] static COUNT: ... = ...;
/// COUNT.start();
/// assert_eq!(COUNT.grown(), 0);
/// ```
#[derive(Debug)]
pub struct CountingAllocator {
    held: AtomicUsize,
    peak: AtomicUsize,
    base: AtomicUsize,
}

impl CountingAllocator {
    /// A counter holding nothing yet.
    pub const fn new() -> CountingAllocator {
        CountingAllocator {
            held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            base: AtomicUsize::new(0),
        }
    }

    /// Starts a measure: [`grown`](CountingAllocator::grown) counts from
    /// what is held now.
    pub fn start(&self) {
        let now = self.held.load(Ordering::SeqCst);
        self.base.store(now, Ordering::SeqCst);
        self.peak.store(now, Ordering::SeqCst);
    }

    /// The most bytes held at once since [`start`](CountingAllocator::start),
    /// beyond what was held then.
    pub fn grown(&self) -> usize {
        self.peak.load(Ordering::SeqCst) - self.base.load(Ordering::SeqCst)
    }
}

impl Default for CountingAllocator {
    fn default() -> CountingAllocator {
        CountingAllocator::new()
    }
}

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = self.held.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        self.peak.fetch_max(now, Ordering::SeqCst);
        // SAFETY: the caller's layout, as the trait requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.held.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}
