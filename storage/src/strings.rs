//! A shortcut for values that are one string or byte string (`String`,
//! `serde_bytes::ByteBuf`, ...), the common case of a shared store.
//!
//! The codec decodes an owned string into a zero-filled buffer (`calloc`,
//! which skips the allocator's per-thread cache) and copies into it; here
//! the length prefix is read directly and the string is copied once into a
//! buffer of its size. The bytes are the codec's: bincode's standard
//! configuration writes a string as its varint length and its bytes.
//!
//! The caller has read the value's mark (`yuki_channel::codec::mark`) and
//! hands over what follows it with its kind: a string is served only to a
//! `Deserialize` that asks for a string, a byte string only to one that
//! asks for bytes, as the marked decoder does.
//!
//! The shortcut gives an answer only when it is sure to be the codec's: the
//! value's `Deserialize` asked for the kind the mark names, the bytes hold
//! exactly one, and the visitor took it. Anything else (another type, bad
//! bytes, a rejected value) gives `None` and the caller decodes with the
//! codec, so every value and every error message is the codec's own.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeOwned, Visitor};

use yuki_channel::codec;

use crate::limits::MAX_VALUE_LEN;

/// What the bytes hold, as their mark says: a string is never served as a
/// byte string, nor the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string.
    Text,
    /// A byte string.
    Binary,
}

/// `bytes` (a marked value without its mark) decoded as a `V` if `V` is a
/// string or byte string of `kind`, else `None`.
#[inline]
pub(crate) fn decode<V: DeserializeOwned>(bytes: &[u8], kind: Kind) -> Option<V> {
    // Larger values (only a transport's frame could hold one) go the
    // codec's way, with its limits.
    if bytes.len() > MAX_VALUE_LEN {
        return None;
    }
    let declined = Cell::new(false);
    match V::deserialize(Whole {
        bytes,
        kind,
        declined: &declined,
    }) {
        // A `Deserialize` that swallowed the refusal and made up a value
        // would differ from the codec: its answer is not taken.
        Ok(v) if !declined.get() => Some(v),
        _ => None,
    }
}

/// The contents of a string or byte string filling `bytes` exactly, its
/// length in the shortest form (anything else is left to the codec).
#[inline]
fn contents(bytes: &[u8]) -> Option<&[u8]> {
    match codec::raw::split_bytes(bytes)? {
        (contents, []) => Some(contents),
        _ => None,
    }
}

/// A deserializer over a whole value that serves only strings and byte
/// strings, and declines everything else.
struct Whole<'de, 'a> {
    bytes: &'de [u8],
    kind: Kind,
    declined: &'a Cell<bool>,
}

impl<'de> Whole<'de, '_> {
    #[inline]
    fn text(&self) -> Option<&'de [u8]> {
        contents(self.bytes).filter(|_| self.kind == Kind::Text)
    }

    #[inline]
    fn binary(&self) -> Option<&'de [u8]> {
        contents(self.bytes).filter(|_| self.kind == Kind::Binary)
    }

    fn decline(&self) -> Declined {
        self.declined.set(true);
        Declined
    }
}

/// The shortcut does not apply; the codec decides.
#[derive(Debug)]
struct Declined;

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a string or byte string")
    }
}

impl std::error::Error for Declined {}

impl de::Error for Declined {
    fn custom<T: fmt::Display>(_: T) -> Declined {
        Declined
    }
}

impl<'de> de::Deserializer<'de> for Whole<'de, '_> {
    type Error = Declined;

    // What the codec's deserializer does with each request, read straight
    // from the bytes.
    #[inline]
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.text().and_then(|b| std::str::from_utf8(b).ok()) {
            Some(s) => visitor.visit_borrowed_str(s),
            None => Err(self.decline()),
        }
    }

    #[inline]
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.text().and_then(|b| std::str::from_utf8(b).ok()) {
            Some(s) => visitor.visit_string(s.to_owned()),
            None => Err(self.decline()),
        }
    }

    #[inline]
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.binary() {
            Some(b) => visitor.visit_borrowed_bytes(b),
            None => Err(self.decline()),
        }
    }

    #[inline]
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Declined> {
        match self.binary() {
            Some(b) => visitor.visit_byte_buf(b.to_vec()),
            None => Err(self.decline()),
        }
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Declined> {
        Err(self.decline())
    }

    // As the codec's: types that decode differently for humans take the
    // same branch as there.
    fn is_human_readable(&self) -> bool {
        false
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        option unit unit_struct newtype_struct seq tuple tuple_struct map
        struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use serde::{Deserialize, Deserializer, Serialize};
    use serde_bytes::ByteBuf;
    use yuki_channel::codec;

    use super::*;

    /// The shortcut's answer for whichever kind serves `V`.
    fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Option<V> {
        super::decode::<V>(bytes, Kind::Text).or_else(|| super::decode::<V>(bytes, Kind::Binary))
    }

    #[test]
    fn a_string_is_never_served_as_a_byte_string_nor_the_other_way() {
        let text = encoded("abc");
        assert_eq!(super::decode::<String>(&text, Kind::Binary), None);
        assert_eq!(super::decode::<ByteBuf>(&text, Kind::Text), None);
        assert_eq!(
            super::decode::<String>(&text, Kind::Text).as_deref(),
            Some("abc")
        );
        assert_eq!(
            super::decode::<ByteBuf>(&text, Kind::Binary).map(ByteBuf::into_vec),
            Some(b"abc".to_vec())
        );
    }

    /// The shortcut's answer, when it gives one, is the codec's.
    fn agrees<V>(bytes: &[u8]) -> Option<V>
    where
        V: DeserializeOwned + PartialEq + fmt::Debug,
    {
        let fast = decode::<V>(bytes);
        if let Some(v) = &fast {
            assert_eq!(Some(v), codec::decode_borrowed::<V>(bytes).ok().as_ref());
        }
        fast
    }

    fn encoded<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        codec::encode(v).unwrap()
    }

    #[test]
    fn strings_of_every_length_prefix_are_read() {
        // One-byte lengths, then the 2-, 4- and 8-byte forms' edges.
        for len in [0, 1, 32, 250, 251, 255, 65_535, 65_536, 70_000] {
            let s = "é".repeat(len / 2) + &"x".repeat(len % 2);
            assert_eq!(agrees::<String>(&encoded(&s)), Some(s.clone()), "{len}");
            let b = ByteBuf::from(vec![7u8; len]);
            assert_eq!(agrees::<ByteBuf>(&encoded(&b)), Some(b), "{len}");
            assert_eq!(
                agrees::<Box<str>>(&encoded(&s)).as_deref(),
                Some(s.as_str())
            );
        }
        // A length not in its shortest form (the encoder never writes one)
        // is left to the codec.
        let mut long = vec![253];
        long.extend_from_slice(&3u64.to_le_bytes());
        long.extend_from_slice(b"abc");
        assert_eq!(agrees::<String>(&long), None);
        let mut four = vec![252];
        four.extend_from_slice(&3u32.to_le_bytes());
        four.extend_from_slice(b"abc");
        assert_eq!(agrees::<String>(&four), None);
    }

    #[test]
    fn anything_but_exactly_one_valid_string_is_left_to_the_codec() {
        let good = encoded("hello");
        let mut trailing = good.clone();
        trailing.push(0);
        let cases: [&[u8]; 8] = [
            &[],
            &good[..good.len() - 1],
            &trailing,
            &[2, 0xff, 0xfe],   // not UTF-8
            &[251, 1],          // a cut 2-byte length
            &[252, 1, 0, 0],    // a cut 4-byte length
            &[254, 0, 0, 0],    // a 16-byte length, never a string's
            &[255, 1, 2, 3, 4], // no such marker
        ];
        for bytes in cases {
            assert_eq!(decode::<String>(bytes), None, "{bytes:?}");
        }
        assert_eq!(decode::<ByteBuf>(&trailing), None);
        // Invalid UTF-8 is still a byte string.
        assert_eq!(
            decode::<ByteBuf>(&[2, 0xff, 0xfe]).map(ByteBuf::into_vec),
            Some(vec![0xff, 0xfe])
        );
    }

    #[test]
    fn other_types_are_left_to_the_codec() {
        #[derive(Deserialize, PartialEq, Debug)]
        struct Named {
            name: String,
        }
        let text = encoded("abc");
        assert_eq!(decode::<u64>(&encoded(&7u64)), None);
        assert_eq!(decode::<Option<String>>(&encoded(&Some("abc"))), None);
        assert_eq!(decode::<Vec<u8>>(&encoded(&vec![1u8, 2])), None);
        assert_eq!(decode::<Named>(&text), None);
        assert_eq!(decode::<(String,)>(&text), None);
        assert_eq!(decode::<char>(&encoded(&'x')), None);
        // Human-readable forms are strings; the codec's form is not.
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(decode::<IpAddr>(&encoded(&ip)), None);
        assert_eq!(decode::<IpAddr>(&encoded("127.0.0.1")), None);
        let big = vec![b'a'; MAX_VALUE_LEN + 1];
        assert_eq!(decode::<ByteBuf>(&encoded(&ByteBuf::from(big))), None);
    }

    #[test]
    fn a_rejected_or_swallowed_refusal_is_left_to_the_codec() {
        /// Accepts only lowercase strings.
        #[derive(PartialEq, Debug)]
        struct Lower(String);
        impl<'de> Deserialize<'de> for Lower {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lower, D::Error> {
                let s = String::deserialize(d)?;
                if s.chars().any(char::is_uppercase) {
                    return Err(de::Error::custom("not lowercase"));
                }
                Ok(Lower(s))
            }
        }
        assert_eq!(agrees::<Lower>(&encoded("abc")), Some(Lower("abc".into())));
        assert_eq!(decode::<Lower>(&encoded("aBc")), None);

        /// Makes up a value when the deserializer refuses.
        #[derive(PartialEq, Debug)]
        struct OrZero(u32);
        impl<'de> Deserialize<'de> for OrZero {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OrZero, D::Error> {
                Ok(OrZero(u32::deserialize(d).unwrap_or(0)))
            }
        }
        assert_eq!(decode::<OrZero>(&encoded(&5u32)), None);
        assert_eq!(
            codec::decode_borrowed::<OrZero>(&encoded(&5u32)).unwrap(),
            OrZero(5)
        );
    }
}
