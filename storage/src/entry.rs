//! [`Entry`]: one key and its value as the shards' tables keep them.

/// The deadline of an entry that never expires.
pub(crate) const NEVER: u64 = u64::MAX;

/// One key and its encoded value, with the key's deadline.
///
/// A lookup is bound by cache misses, so a short key and value live in the
/// table's slot itself: one 64-byte slot, aligned to a cache line, holds
/// the key to compare and the value to read, and a lookup misses the cache
/// once where a pointer to a separate allocation missed twice. Longer ones
/// are boxed, exactly as long as they are (never a buffer kept from a
/// transport).
///
/// The key's hash is not kept: the table's tag bytes filter all but about
/// one in a hundred wrong candidates before a key is compared, and the
/// table rehashes keys only when it grows, so the room goes to the data.
#[repr(align(64))]
pub(crate) struct Entry(Repr);

/// The bytes: the deadline (nanoseconds on main's clock, or [`NEVER`], 8
/// bytes) and the key's length (4 bytes), little-endian; then the key's
/// bytes and the value's.
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Boxed(Box<[u8]>),
}

/// The most bytes kept in the slot: what is left of 64 after the enum's
/// tag and the length.
const INLINE: usize = 62;

const EXPIRES_AT: usize = 0;
const KEY_LEN_AT: usize = 8;
const HEADER: usize = 12;

// A key's length fits the header's 4 bytes; a slot is one cache line.
const _: () = assert!(crate::limits::MAX_KEY_LEN <= u32::MAX as usize);
const _: () = assert!(std::mem::size_of::<Entry>() == 64);

impl Entry {
    pub(crate) fn new(key: &str, value: &[u8], expires: u64) -> Entry {
        let len = HEADER + key.len() + value.len();
        if len <= INLINE {
            let mut bytes = [0; INLINE];
            fill(&mut bytes[..len], key, value, expires);
            // At most INLINE, so it fits.
            let len = len as u8;
            Entry(Repr::Inline { len, bytes })
        } else {
            let mut bytes = vec![0; len].into_boxed_slice();
            fill(&mut bytes, key, value, expires);
            Entry(Repr::Boxed(bytes))
        }
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Repr::Boxed(bytes) => bytes,
        }
    }

    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            Repr::Inline { len, bytes } => bytes.get_mut(..usize::from(*len)).unwrap_or_default(),
            Repr::Boxed(bytes) => bytes,
        }
    }

    /// The deadline, or [`NEVER`].
    #[inline]
    pub(crate) fn expires(&self) -> u64 {
        let mut word = [0; 8];
        word.copy_from_slice(&self.bytes()[EXPIRES_AT..EXPIRES_AT + 8]);
        u64::from_le_bytes(word)
    }

    pub(crate) fn set_expires(&mut self, expires: u64) {
        self.bytes_mut()[EXPIRES_AT..EXPIRES_AT + 8].copy_from_slice(&expires.to_le_bytes());
    }

    /// Where the value starts.
    #[inline]
    fn value_at(&self) -> usize {
        let mut len = [0; 4];
        len.copy_from_slice(&self.bytes()[KEY_LEN_AT..HEADER]);
        // A u32 fits every target yuki builds for; the fallback is unreachable.
        HEADER + usize::try_from(u32::from_le_bytes(len)).unwrap_or(usize::MAX - HEADER)
    }

    #[inline]
    fn key_bytes(&self) -> &[u8] {
        self.bytes()
            .get(HEADER..self.value_at())
            .unwrap_or_default()
    }

    #[inline]
    pub(crate) fn is(&self, key: &str) -> bool {
        self.key_bytes() == key.as_bytes()
    }

    pub(crate) fn key(&self) -> &str {
        // The bytes were a &str when stored; the fallback is unreachable.
        std::str::from_utf8(self.key_bytes()).unwrap_or_default()
    }

    #[inline]
    pub(crate) fn value(&self) -> &[u8] {
        self.bytes().get(self.value_at()..).unwrap_or_default()
    }

    /// Replaces the value, in place when the length is the same.
    pub(crate) fn set_value(&mut self, key: &str, value: &[u8]) {
        let at = self.value_at();
        let bytes = self.bytes_mut();
        if bytes.len() - at == value.len() {
            bytes[at..].copy_from_slice(value);
        } else {
            *self = Entry::new(key, value, self.expires());
        }
    }
}

/// Writes an entry's bytes into `out`, which is exactly as long as they are.
fn fill(out: &mut [u8], key: &str, value: &[u8], expires: u64) {
    out[EXPIRES_AT..EXPIRES_AT + 8].copy_from_slice(&expires.to_le_bytes());
    // Keys are checked against MAX_KEY_LEN before they get here.
    out[KEY_LEN_AT..HEADER].copy_from_slice(&(key.len() as u32).to_le_bytes());
    out[HEADER..HEADER + key.len()].copy_from_slice(key.as_bytes());
    out[HEADER + key.len()..].copy_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(e: &Entry) -> (u64, &str, &[u8]) {
        (e.expires(), e.key(), e.value())
    }

    fn inline(e: &Entry) -> bool {
        matches!(e.0, Repr::Inline { .. })
    }

    #[test]
    fn an_entry_keeps_its_deadline_key_and_value_through_changes() {
        let mut e = Entry::new("key", b"value", 42);
        assert_eq!(parts(&e), (42, "key", &b"value"[..]));
        assert!(e.is("key"));
        assert!(!e.is("kex") && !e.is("ke") && !e.is("keyv"));
        e.set_expires(NEVER);
        e.set_value("key", b"VALUE"); // same length: in place
        assert_eq!(parts(&e), (NEVER, "key", &b"VALUE"[..]));
        e.set_value("key", b"");
        assert_eq!(parts(&e), (NEVER, "key", &b""[..]));
        let empty = Entry::new("", b"v", 1);
        assert_eq!(parts(&empty), (1, "", &b"v"[..]));
    }

    #[test]
    fn short_entries_live_in_the_slot_and_long_ones_are_boxed_exactly() {
        let fits = vec![7u8; INLINE - HEADER - 3];
        let mut e = Entry::new("key", &fits, 5);
        assert!(inline(&e));
        assert_eq!(
            (parts(&e), e.bytes().len()),
            ((5, "key", &fits[..]), INLINE)
        );
        let over = vec![8u8; fits.len() + 1];
        e.set_value("key", &over);
        assert!(!inline(&e));
        assert_eq!(
            (parts(&e), e.bytes().len()),
            ((5, "key", &over[..]), INLINE + 1)
        );
        e.set_value("key", b"short again");
        assert!(inline(&e));
        assert_eq!(parts(&e), (5, "key", &b"short again"[..]));
        let long_key = "k".repeat(100);
        let e = Entry::new(&long_key, b"v", NEVER);
        assert!(!inline(&e));
        assert_eq!(parts(&e), (NEVER, long_key.as_str(), &b"v"[..]));
        assert_eq!(e.bytes().len(), HEADER + 101);
    }
}
