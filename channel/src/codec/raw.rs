//! The codec's layout of a byte string, for hot paths in other crates that
//! write or split a frame's fields directly rather than through the general
//! encoder (the transport's pushes, pub/sub deliveries, stored strings).
//!
//! This is bincode 2's layout under the codec's configuration (varint
//! lengths, little-endian): the length in its shortest form, one byte up to
//! 250, else a marker 251, 252 or 253 followed by 2, 4 or 8 little-endian
//! bytes; then the bytes. The tests below pin it byte for byte, so a change
//! of bincode or of the configuration that moves it fails here first rather
//! than as garbled frames between crates.
//!
//! ```
//! use yuki_channel::codec::{self, raw};
//!
//! let mut out = Vec::new();
//! raw::put_bytes(&mut out, b"topic");
//! assert_eq!(out, codec::encode(&serde_bytes::Bytes::new(b"topic")).unwrap());
//! assert_eq!(out.len(), raw::bytes_len(5));
//! out.push(9);
//! assert_eq!(raw::split_bytes(&out), Some((&b"topic"[..], &[9][..])));
//! ```

/// How many bytes [`put_bytes`] writes for a byte string of `len` bytes.
pub fn bytes_len(len: usize) -> usize {
    let prefix = match len {
        0..=250 => 1,
        251..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    };
    prefix + len
}

/// Appends `bytes` exactly as the codec encodes a byte string (a
/// `serde_bytes` field, a `&str`): its length as a varint in its shortest
/// form, then the bytes.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends the length prefix of a byte string of `n` bytes.
fn put_len(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xffff => {
            out.push(251);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(252);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(253);
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
    }
}

/// Splits a byte string written as [`put_bytes`] writes it from what
/// follows it; `None` when the input is cut short or the length is not in
/// its shortest form (leave such input to [`decode_borrowed`](super::decode_borrowed), which says
/// what is wrong with it).
#[inline]
pub fn split_bytes(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    let (len, rest) = match first {
        0..=250 => (u64::from(first), rest),
        251 => {
            let (n, rest) = rest.split_first_chunk::<2>()?;
            (u64::from(u16::from_le_bytes(*n)), rest)
        }
        252 => {
            let (n, rest) = rest.split_first_chunk::<4>()?;
            (u64::from(u32::from_le_bytes(*n)), rest)
        }
        253 => {
            let (n, rest) = rest.split_first_chunk::<8>()?;
            (u64::from_le_bytes(*n), rest)
        }
        _ => return None,
    };
    let shortest = match first {
        251 => len >= 251,
        252 => len > u64::from(u16::MAX),
        253 => len > u64::from(u32::MAX),
        _ => true,
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| shortest && n <= rest.len())?;
    Some(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each varint boundary with the exact prefix the codec writes for it.
    const BOUNDARIES: [(usize, &[u8]); 7] = [
        (0, &[0]),
        (250, &[250]),
        (251, &[251, 251, 0]),
        ((1 << 16) - 1, &[251, 0xff, 0xff]),
        (1 << 16, &[252, 0, 0, 1, 0]),
        ((1 << 32) - 1, &[252, 0xff, 0xff, 0xff, 0xff]),
        (1 << 32, &[253, 0, 0, 0, 0, 1, 0, 0, 0]),
    ];

    #[test]
    fn the_length_prefix_is_pinned_at_every_varint_boundary() {
        for (len, prefix) in BOUNDARIES {
            let mut out = Vec::new();
            put_len(&mut out, len);
            assert_eq!(out, prefix, "prefix of a {len}-byte string");
            // It is bincode's own: a length is encoded as a u64 varint.
            assert_eq!(out, crate::codec::encode(&(len as u64)).unwrap(), "{len}");
            assert_eq!(bytes_len(len), prefix.len() + len, "{len}");
            // Split back when the bytes are there; refused, without
            // allocating, when they are not.
            let mut short = out.clone();
            short.push(7);
            if len == 0 {
                assert_eq!(split_bytes(&short), Some((&[][..], &[7][..])));
            } else {
                assert_eq!(split_bytes(&short), None, "{len}");
            }
        }
    }

    #[test]
    fn strings_at_the_boundaries_that_fit_in_memory_round_trip() {
        for (len, prefix) in &BOUNDARIES[..5] {
            let bytes: Vec<u8> = (0..*len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            put_bytes(&mut out, &bytes);
            assert_eq!(&out[..prefix.len()], *prefix);
            assert_eq!(&out[prefix.len()..], &bytes[..]);
            out.push(9);
            assert_eq!(split_bytes(&out), Some((&bytes[..], &[9][..])));
        }
    }

    #[test]
    fn byte_strings_are_written_and_split_as_the_codec_encodes_them() {
        for len in [0, 1, 250, 251, 65_535, 65_536, 70_000] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            put_bytes(&mut out, &bytes);
            assert_eq!(
                out,
                crate::codec::encode(&serde_bytes::Bytes::new(&bytes)).unwrap()
            );
            assert_eq!(out.len(), bytes_len(len));
            out.push(9);
            assert_eq!(split_bytes(&out), Some((&bytes[..], &[9][..])));
            // Cut short: nothing.
            assert_eq!(split_bytes(&out[..out.len() - 2]), None);
        }
        assert_eq!(split_bytes(&[]), None);
        assert_eq!(bytes_len(0xffff_ffff), 5 + 0xffff_ffff);
        assert_eq!(bytes_len(0x1_0000_0000), 9 + 0x1_0000_0000);
        let mut eight = vec![253];
        eight.extend_from_slice(&(1u64 << 33).to_le_bytes());
        assert_eq!(split_bytes(&eight), None);
        // Longer forms than needed, and unknown markers, are left to the codec.
        assert_eq!(split_bytes(&[251, 1, 0, 9]), None);
        assert_eq!(split_bytes(&[252, 1, 0, 0, 0, 9]), None);
        assert_eq!(split_bytes(&[253, 1, 0, 0, 0, 0, 0, 0, 0, 9]), None);
        assert_eq!(split_bytes(&[254, 0]), None);
    }
}
