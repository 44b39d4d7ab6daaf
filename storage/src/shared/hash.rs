//! The table's keyed hash: main and every child compute the same hash of
//! a key from the seed in the region's header.
//!
//! A folded-multiply hash in the manner of wyhash: fast on short keys (one
//! or two multiplications up to 16 bytes) and well mixed, so that the low
//! bits (the bucket), the middle bits (the stripe) and the top bits (the
//! tag) are each usable on their own. It is part of the layout: changing it
//! changes [`LAYOUT_VERSION`](super::layout::LAYOUT_VERSION).

const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;

#[inline(always)]
fn mix(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline(always)]
fn r8(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

#[inline(always)]
fn r4(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(
        b[at..at + 4].try_into().unwrap_or([0; 4]),
    ))
}

/// The hash of `key` under `seed`.
#[inline]
pub(crate) fn hash(seed: u64, key: &[u8]) -> u64 {
    let len = key.len();
    let mut s = seed ^ P0;
    let (a, b) = if len <= 16 {
        if len >= 4 {
            // Two overlapping reads cover 4 to 16 bytes without a loop.
            let quarter = (len >> 3) << 2;
            (
                (r4(key, 0) << 32) | r4(key, quarter),
                (r4(key, len - 4) << 32) | r4(key, len - 4 - quarter),
            )
        } else if len > 0 {
            let k = (u64::from(key[0]) << 16)
                | (u64::from(key[len >> 1]) << 8)
                | u64::from(key[len - 1]);
            (k, 0)
        } else {
            (0, 0)
        }
    } else {
        let mut at = 0;
        while len - at > 16 {
            s = mix(r8(key, at) ^ P1, r8(key, at + 8) ^ s);
            at += 16;
        }
        (r8(key, len - 16), r8(key, len - 8))
    };
    mix(P1 ^ len as u64, mix(a ^ P1, b ^ s) ^ P2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn depends_on_every_byte_the_length_and_the_seed() {
        let base: Vec<u8> = (0..40u8).collect();
        for len in 0..base.len() {
            let key = &base[..len];
            let h = hash(7, key);
            assert_ne!(h, hash(8, key), "seed, len {len}");
            if len > 0 {
                assert_ne!(h, hash(7, &base[..len - 1]), "length {len}");
            }
            for i in 0..len {
                let mut other = key.to_vec();
                other[i] ^= 1;
                assert_ne!(h, hash(7, &other), "byte {i} of {len}");
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "long under Miri")]
    fn spreads_similar_keys_over_low_middle_and_top_bits() {
        let n = 1 << 14;
        let hashes: Vec<u64> = (0..n)
            .map(|i| hash(1, format!("key:{i}").as_bytes()))
            .collect();
        for shift in [0, 32, 48] {
            let buckets: HashSet<u64> = hashes.iter().map(|h| (h >> shift) & 0xfff).collect();
            // 16,384 keys in 4,096 buckets leave about 75 empty.
            assert!(
                buckets.len() > 3_900,
                "bits from {shift}: {}",
                buckets.len()
            );
        }
    }
}
