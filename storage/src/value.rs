//! Typed values to and from the bytes the store keeps.
//!
//! A value is kept marked with its type (`yuki_channel::codec::mark`: a
//! byte naming a scalar's shape, or a fingerprint and the short name of any
//! other type, before the codec's bytes), so reading it as another type gives the same value or
//! [`Error::WrongType`] naming the key and both types, never another value.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;
use yuki_channel::codec::mark::{self, Mismatch};

use crate::error::{Error, Result};
use crate::strings::{self, Kind};

thread_local! {
    /// Reused for encoding, so a `set` allocates only what the map keeps.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Decodes the value of `key`; a wrong type names the key and both types.
///
/// A string or byte string is read directly ([`strings`]); everything else
/// goes through the borrowing decoder, used even for owned types: it hands
/// borrowed strings and byte strings over as slices, where the owning one
/// zero-fills a buffer first.
#[inline]
pub(crate) fn decode<V: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<V> {
    let fast = match bytes.split_first() {
        Some((&mark::STR, rest)) => strings::decode::<V>(rest, Kind::Text),
        Some((&mark::BYTES, rest)) => strings::decode::<V>(rest, Kind::Binary),
        _ => None,
    };
    match fast {
        Some(v) => Ok(v),
        None => mark::decode::<V>(bytes).map_err(|m| wrong_type(key, m)),
    }
}

/// [`decode`] for a value that may be absent, built in the shape `get`
/// returns.
#[inline]
pub(crate) fn decode_found<V: DeserializeOwned>(
    key: &str,
    bytes: Option<&[u8]>,
) -> Result<Option<V>> {
    match bytes {
        Some(bytes) => decode(key, bytes).map(Some),
        None => Ok(None),
    }
}

pub(crate) fn wrong_type(key: &str, m: Mismatch) -> Error {
    Error::WrongType {
        key: key.to_owned(),
        written: m.written,
        type_name: m.asked,
        reason: m.reason,
    }
}

/// Encodes `value` (checked against the size limit `max`) and hands the
/// bytes to `f`.
#[inline]
pub(crate) fn with_encoded<V, R>(
    key: &str,
    value: &V,
    max: usize,
    f: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R>
where
    V: Serialize + ?Sized,
{
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let r = encode_checked(key, value, max, &mut buf).and_then(|()| f(&buf));
            if buf.capacity() > 64 << 10 {
                *buf = Vec::new();
            }
            r
        }
        // Only reached if a Serialize impl itself uses the store.
        Err(_) => {
            let mut buf = Vec::new();
            encode_checked(key, value, max, &mut buf)?;
            f(&buf)
        }
    })
}

/// Encodes `value` into a buffer of its exact size (at most `max` bytes).
pub(crate) fn encode<V: Serialize + ?Sized>(key: &str, value: &V, max: usize) -> Result<Vec<u8>> {
    with_encoded(key, value, max, |b| Ok(b.to_vec()))
}

fn encode_checked<V: Serialize + ?Sized>(
    key: &str,
    value: &V,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<()> {
    // Refused as soon as the encoding passes the limit, so an oversized
    // value never costs more than the limit to find out.
    mark::encode_into_limited(value, buf, max).map_err(|e| match e {
        yuki_channel::Error::FrameTooLarge { size, max } => Error::ValueTooLarge {
            key: key.to_owned(),
            len: size,
            max,
        },
        yuki_channel::Error::Encode { reason, .. } => Error::Encode {
            key: key.to_owned(),
            type_name: std::any::type_name::<V>(),
            reason,
        },
        other => Error::Encode {
            key: key.to_owned(),
            type_name: std::any::type_name::<V>(),
            reason: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
        mark::encode(v).unwrap()
    }

    #[test]
    fn strings_and_other_types_decode_as_marked() {
        assert_eq!(decode::<String>("k", &marked("text")).unwrap(), "text");
        assert_eq!(
            decode::<Option<u8>>("k", &marked(&Some(7u8))).unwrap(),
            Some(7)
        );
        assert_eq!(
            decode::<(u8, u8)>("k", &marked(&(1u8, 7u8))).unwrap(),
            (1, 7)
        );
        let bytes = serde_bytes::ByteBuf::from(vec![1, 2]);
        assert_eq!(
            decode::<serde_bytes::ByteBuf>("k", &marked(&bytes)).unwrap(),
            bytes
        );
    }

    #[test]
    fn the_string_shortcut_keeps_strings_and_byte_strings_apart() {
        let text = marked("text");
        let bytes = marked(&serde_bytes::ByteBuf::from(b"text".to_vec()));
        for (value, asked) in [
            (&text, "serde_bytes::bytebuf::ByteBuf"),
            (&bytes, "alloc::string::String"),
        ] {
            let e = if asked.ends_with("String") {
                decode::<String>("k", value).unwrap_err()
            } else {
                decode::<serde_bytes::ByteBuf>("k", value).unwrap_err()
            };
            match e {
                Error::WrongType { type_name, .. } => assert_eq!(type_name, asked),
                other => panic!("expected WrongType, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_found_value_decodes_as_decode_does_and_a_missing_one_is_none() {
        assert_eq!(decode_found::<String>("k", None).unwrap(), None);
        assert_eq!(
            decode_found::<String>("k", Some(&marked("text")))
                .unwrap()
                .as_deref(),
            Some("text")
        );
        for bytes in [
            &[mark::STR, 2, 0xff, 0xfe][..],
            &[mark::STR, 5, b'a'],
            &[2, 1],
        ] {
            let found = decode_found::<String>("key", Some(bytes)).unwrap_err();
            let direct = decode::<String>("key", bytes).unwrap_err();
            assert_eq!(found.to_string(), direct.to_string());
            assert!(matches!(found, Error::WrongType { .. }), "{found:?}");
        }
    }

    #[test]
    fn a_wrong_type_names_the_key_and_both_types() {
        match decode::<String>("key", &marked(&7i64)) {
            Err(Error::WrongType {
                key,
                written,
                type_name,
                ..
            }) => {
                assert_eq!(
                    (key.as_str(), written.as_str(), type_name),
                    ("key", "i64", "alloc::string::String")
                );
            }
            other => panic!("expected WrongType, got {other:?}"),
        }
    }
}
