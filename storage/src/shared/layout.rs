//! Where everything lies in the region: the header, the stripes' sequence
//! words, and the heap of blocks (entries and indexes). Offsets are in
//! bytes from the region's start; every field is one 8-byte word.

/// The first word of a laid-out region.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"yukitab\0");

/// Changes whenever the layout, the hash or the protocol changes, so that a
/// child of another build refuses the region instead of misreading it.
pub(crate) const LAYOUT_VERSION: u64 = 1;

/// The deadline word of an entry that never expires.
pub(crate) const NO_DEADLINE: u64 = u64::MAX;

/// Keeps the words main changes apart from the ones it never changes.
pub(crate) const LINE: usize = 128;

// The first line: written once by `Table::create`, before any reader.
pub(crate) const H_MAGIC: usize = 0;
pub(crate) const H_VERSION: usize = 8;
pub(crate) const H_LEN: usize = 16;
pub(crate) const H_SEED: usize = 24;
pub(crate) const H_CLOCK_ORIGIN: usize = 32;
pub(crate) const H_STRIPES: usize = 40;

// The second line: what changes when the table is restructured.
/// Even while nothing is being restructured; bumped by two (through odd
/// when memory is overwritten in place) whenever an index is published or
/// freed memory becomes reusable.
pub(crate) const H_GEN: usize = LINE;
/// The published index: its offset and the log2 of its bucket count.
pub(crate) const H_INDEX_AT: usize = LINE + 8;
pub(crate) const H_INDEX_LOG2: usize = LINE + 16;
/// Non-zero while some key could not be placed: a miss then means "ask main".
pub(crate) const H_INCOMPLETE: usize = LINE + 24;

/// The stripes' sequence words start here.
pub(crate) const STRIPES_AT: usize = 2 * LINE;

/// How many stripes (sequence words) a new table gets: enough that a
/// writer rarely makes a reader of another key retry, few enough that
/// clearing a batch's stripes stays cheap.
pub(crate) const STRIPES: usize = if cfg!(miri) { 8 } else { 1024 };

/// The smallest index, in buckets.
pub(crate) const MIN_INDEX_LOG2: u32 = if cfg!(miri) { 3 } else { 6 };

/// Where the heap of blocks starts, for a table of `stripes` stripes.
pub(crate) const fn heap_at(stripes: usize) -> usize {
    (STRIPES_AT + 8 * stripes).div_ceil(LINE) * LINE
}

/// A bucket no key has used since the index was built: probing stops here.
pub(crate) const EMPTY: u64 = 0;
/// A bucket whose key was removed: probing goes on past it.
pub(crate) const TOMB: u64 = 1;

/// A bucket: the top 16 bits of the key's hash as a tag, and the entry's
/// offset in words. Entries lie past the header, so a bucket is never
/// [`EMPTY`] or [`TOMB`].
#[inline]
pub(crate) fn bucket(hash: u64, at: usize) -> u64 {
    (hash & TAG_MASK) | (at as u64 >> 3)
}

pub(crate) const TAG_MASK: u64 = 0xffff << 48;

/// The entry offset a bucket holds.
#[inline]
pub(crate) fn bucket_at(bucket: u64) -> usize {
    ((bucket & !TAG_MASK) << 3) as usize
}

/// Where a key's stripe comes from in its hash: the bits from here up.
pub(crate) const STRIPE_SHIFT: u32 = 32;

/// Which stripe guards a key.
#[inline]
pub(crate) fn stripe_of(hash: u64, stripes: usize) -> usize {
    (hash >> STRIPE_SHIFT) as usize & (stripes - 1)
}

// An entry (a block of the heap): a word of lengths and size class, the
// deadline, then the key and the value, each padded to whole words with
// zeros.
/// The entry's first word: key length (16 bits), size class (8 bits),
/// value length (40 bits).
#[inline]
pub(crate) fn entry_head(key_len: usize, class: usize, value_len: usize) -> u64 {
    key_len as u64 | (class as u64) << 16 | (value_len as u64) << 24
}

/// (key length, size class, value length) of an entry's first word.
#[inline]
pub(crate) fn entry_parts(head: u64) -> (usize, usize, usize) {
    (
        (head & 0xffff) as usize,
        ((head >> 16) & 0xff) as usize,
        (head >> 24) as usize,
    )
}

/// The head of a retired entry: no key has its length, no class is 0xff.
pub(crate) const DEAD: u64 = u64::MAX;

/// The bytes before an entry's key: its head and its deadline.
pub(crate) const ENTRY_HEAD: usize = 16;

/// The bytes an entry of these lengths takes.
#[inline]
pub(crate) fn entry_len(key_len: usize, value_len: usize) -> usize {
    ENTRY_HEAD + pad(key_len) + pad(value_len)
}

/// `n` rounded up to whole words.
#[inline]
pub(crate) fn pad(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// The longest key an entry can describe (the store's limit is lower).
pub(crate) const MAX_KEY: usize = 0xffff;
