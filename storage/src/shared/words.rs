//! The region as words: every access is an atomic access to an aligned
//! 8-byte word, which is defined behaviour whatever another process does
//! to the same memory at the same time, and a load is all a child ever
//! does (its mapping is read-only; a 64-bit atomic load from read-only
//! memory is a plain load on every platform Rust supports 64-bit atomics
//! on). The one exception is main's borrow of bytes nothing stores to
//! while it lasts ([`Words::bytes`]).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// `len` bytes at `base`, reached only as atomic words.
#[derive(Clone, Copy)]
pub(crate) struct Words {
    base: NonNull<u8>,
    len: usize,
}

impl Words {
    /// Safety: `base` is 8-aligned and valid for atomic reads (and, if any
    /// store is made, writes) of `len` bytes for as long as the value lives.
    pub(crate) unsafe fn new(base: NonNull<u8>, len: usize) -> Words {
        Words { base, len }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether `n` bytes at `at` lie inside the region (overflow-safe).
    #[inline]
    pub(crate) fn fits(&self, at: usize, n: usize) -> bool {
        at % 8 == 0 && at <= self.len && n <= self.len - at
    }

    #[inline]
    fn word(&self, at: usize) -> &AtomicU64 {
        debug_assert!(self.fits(at, 8), "word at {at} of {}", self.len);
        // SAFETY: callers check `fits(at, 8)` (in bounds and aligned, the
        // base being aligned); the region outlives `self` (see `new`).
        unsafe { &*self.base.as_ptr().add(at).cast::<AtomicU64>() }
    }

    /// The word at `at`, which must be in bounds (checked by the caller).
    #[inline]
    pub(crate) fn load(&self, at: usize, order: Ordering) -> u64 {
        self.word(at).load(order)
    }

    /// The word at `at`, or `None` if it lies outside the region.
    #[inline]
    pub(crate) fn get(&self, at: usize, order: Ordering) -> Option<u64> {
        self.fits(at, 8).then(|| self.word(at).load(order))
    }

    /// Main only.
    #[inline]
    pub(crate) fn store(&self, at: usize, value: u64, order: Ordering) {
        self.word(at).store(value, order)
    }

    /// Writes `bytes` at `at`, the last word padded with zeros (main only;
    /// `at..at + pad(len)` in bounds).
    #[inline]
    pub(crate) fn put_bytes(&self, at: usize, bytes: &[u8]) {
        let whole = bytes.len() / 8;
        for i in 0..whole {
            self.store(at + 8 * i, word_at(bytes, i), Ordering::Relaxed);
        }
        if bytes.len() % 8 != 0 {
            self.store(at + 8 * whole, last_word(bytes), Ordering::Relaxed);
        }
    }

    /// Whether the words at `at` hold `bytes`, zero-padded
    /// (`at..at + pad(len)` in bounds).
    #[inline]
    pub(crate) fn holds(&self, at: usize, bytes: &[u8]) -> bool {
        let whole = bytes.len() / 8;
        for i in 0..whole {
            if self.load(at + 8 * i, Ordering::Relaxed) != word_at(bytes, i) {
                return false;
            }
        }
        bytes.len() % 8 == 0 || self.load(at + 8 * whole, Ordering::Relaxed) == last_word(bytes)
    }

    /// Replaces `out` with the `len` bytes at `at` (`at..at + pad(len)` in
    /// bounds). Allocates only when `out` lacks the capacity.
    #[inline]
    pub(crate) fn copy_out(&self, at: usize, len: usize, out: &mut Vec<u8>) {
        out.clear();
        let words = len.div_ceil(8);
        out.reserve(words * 8);
        let dst = out.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        for i in 0..words {
            let w = self.load(at + 8 * i, Ordering::Relaxed).to_le_bytes();
            // SAFETY: `out` has room for `words * 8` bytes (reserved above).
            unsafe { dst.add(8 * i).copy_from_nonoverlapping(w.as_ptr(), 8) };
        }
        // SAFETY: the first `len <= words * 8` bytes were written above.
        unsafe { out.set_len(len) };
    }

    /// The `len` bytes at `at`, borrowed.
    ///
    /// # Safety
    /// `at..at + len` lies inside the region, and nothing (in any thread
    /// or process) stores to it while the borrow lives.
    #[inline]
    pub(crate) unsafe fn bytes(&self, at: usize, len: usize) -> &[u8] {
        debug_assert!(at <= self.len && len <= self.len - at);
        // SAFETY: in bounds and unchanged while borrowed, as the caller
        // promises; loads racing with nothing are plain loads.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(at), len) }
    }

    /// Zeroes `n` bytes at `at` (main only; in bounds, whole words).
    pub(crate) fn zero(&self, at: usize, n: usize) {
        for w in (at..at + n).step_by(8) {
            self.store(w, 0, Ordering::Relaxed);
        }
    }
}

/// The `i`th whole word of `bytes` (`8 * i + 8 <= bytes.len()`).
#[inline(always)]
fn word_at(bytes: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]))
}

/// The bytes of `bytes` past its last whole word (one to seven of them:
/// its length is not a multiple of 8) as a zero-padded word, built from a
/// few loads and shifts rather than a byte copy.
#[inline(always)]
fn last_word(bytes: &[u8]) -> u64 {
    let len = bytes.len();
    let n = len % 8;
    debug_assert!(n != 0, "no bytes past the last whole word");
    if len >= 8 {
        // The last eight bytes, shifted down past the ones already written
        // as whole words.
        let last = u64::from_le_bytes(bytes[len - 8..].try_into().unwrap_or([0; 8]));
        return last >> (8 * (8 - n));
    }
    let mut w = 0;
    let mut i = 0;
    if n & 4 != 0 {
        w = u64::from(u32::from_le_bytes(bytes[..4].try_into().unwrap_or([0; 4])));
        i = 4;
    }
    if n & 2 != 0 {
        w |= u64::from(u16::from_le_bytes(
            bytes[i..i + 2].try_into().unwrap_or([0; 2]),
        )) << (8 * i);
        i += 2;
    }
    if n & 1 != 0 {
        w |= u64::from(bytes[i]) << (8 * i);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::last_word;

    #[test]
    fn last_word_is_the_trailing_bytes_zero_padded() {
        let bytes: Vec<u8> = (1..=40).collect();
        for len in (1..=bytes.len()).filter(|l| l % 8 != 0) {
            let rest = &bytes[len / 8 * 8..len];
            let mut want = [0u8; 8];
            want[..rest.len()].copy_from_slice(rest);
            assert_eq!(
                last_word(&bytes[..len]),
                u64::from_le_bytes(want),
                "length {len}"
            );
        }
    }
}
