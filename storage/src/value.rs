//! Typed values to and from the bytes the store keeps.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;
use yuki_channel::codec;

use crate::error::{Error, Result};
use crate::limits::check_value;
use crate::strings;

thread_local! {
    /// Reused for encoding, so a `set` allocates only what the map keeps.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Decodes the value of `key`; a wrong type names the key and the type.
///
/// A string or byte string is read directly ([`strings`]); everything else
/// goes through the borrowing decoder, used even for owned types: it hands
/// borrowed strings and byte strings over as slices, where the owning one
/// zero-fills a buffer first.
#[inline]
pub(crate) fn decode<V: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<V> {
    match strings::decode::<V>(bytes) {
        Some(v) => Ok(v),
        None => codec::decode_borrowed::<V>(bytes).map_err(|e| wrong_type::<V>(key, e)),
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

pub(crate) fn wrong_type<V>(key: &str, e: yuki_channel::Error) -> Error {
    let reason = match e {
        yuki_channel::Error::Decode { reason, .. } => reason,
        other => other.to_string(),
    };
    Error::WrongType {
        key: key.to_owned(),
        type_name: std::any::type_name::<V>(),
        reason,
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
    codec::encode_into(value, buf).map_err(|e| Error::Encode {
        key: key.to_owned(),
        type_name: std::any::type_name::<V>(),
        reason: match e {
            yuki_channel::Error::Encode { reason, .. } => reason,
            other => other.to_string(),
        },
    })?;
    check_value(key, buf, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_other_types_decode_as_the_codec_does() {
        let text = codec::encode("text").unwrap();
        assert_eq!(decode::<String>("k", &text).unwrap(), "text");
        assert_eq!(decode::<Option<u8>>("k", &[1, 7]).unwrap(), Some(7));
        assert_eq!(decode::<(u8, u8)>("k", &[1, 7]).unwrap(), (1, 7));
    }

    #[test]
    fn a_found_value_decodes_as_decode_does_and_a_missing_one_is_none() {
        let text = codec::encode("text").unwrap();
        assert_eq!(decode_found::<String>("k", None).unwrap(), None);
        assert_eq!(
            decode_found::<String>("k", Some(&text)).unwrap().as_deref(),
            Some("text")
        );
        assert_eq!(
            decode_found::<(u8, u8)>("k", Some(&[1, 7])).unwrap(),
            Some((1, 7))
        );
        for bytes in [&[2, 0xff, 0xfe][..], &[5, b'a']] {
            let found = decode_found::<String>("key", Some(bytes)).unwrap_err();
            let direct = decode::<String>("key", bytes).unwrap_err();
            assert_eq!(found.to_string(), direct.to_string());
            assert!(matches!(found, Error::WrongType { .. }), "{found:?}");
        }
    }

    #[test]
    fn a_wrong_type_gives_the_codec_reason_with_the_key_and_type() {
        let cases: [&[u8]; 4] = [&[2, 0xff, 0xfe], &[5, b'a'], &[1, b'a', 0], &[]];
        for bytes in cases {
            let reason = match codec::decode_borrowed::<String>(bytes) {
                Err(yuki_channel::Error::Decode { reason, .. }) => reason,
                other => panic!("the codec decoded {bytes:?}: {other:?}"),
            };
            match decode::<String>("key", bytes) {
                Err(Error::WrongType {
                    key,
                    type_name,
                    reason: ours,
                }) => {
                    assert_eq!((key.as_str(), type_name), ("key", "alloc::string::String"));
                    assert_eq!(ours, reason);
                }
                other => panic!("expected WrongType for {bytes:?}, got {other:?}"),
            }
        }
    }
}
