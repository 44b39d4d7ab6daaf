//! Encoding typed values and frames with bincode 2.
//!
//! Every value that crosses a process boundary is encoded here, so every
//! process agrees on the bytes. Decoding never trusts the input: garbage and
//! truncated bytes give [`Error::Decode`], a frame larger than the maximum
//! gives [`Error::FrameTooLarge`], and a length prefix that claims more than
//! the input holds is refused before anything is allocated for it.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bincode::enc::write::{SizeWriter, Writer};
use bincode::error::EncodeError;
use serde::Serialize;
use serde::de::{Deserialize, DeserializeOwned};

use crate::error::{Error, Result};

pub mod mark;
pub mod raw;

/// The default largest frame, in bytes, that yuki sends or accepts (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// The hard ceiling on what one decode may claim, whatever the configured
/// maximum: no decode can be made to reserve more than this.
const HARD_LIMIT: usize = 1 << 30;

type Config = Configuration<LittleEndian, Varint, Limit<HARD_LIMIT>>;

const CONFIG: Config = bincode::config::standard().with_limit::<HARD_LIMIT>();

/// Encodes `value` into a new buffer.
///
/// ```
/// let bytes = yuki_channel::codec::encode(&("key", 7u32)).unwrap();
/// let back: (String, u32) = yuki_channel::codec::decode(&bytes).unwrap();
/// assert_eq!(back, ("key".to_string(), 7));
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `value` to `out` (no new buffer: replies and
/// coalesced frames are written this way).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    bincode::serde::encode_into_std_write(value, out, CONFIG)
        .map(|_| ())
        .map_err(|e| Error::Encode {
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        })
}

/// Encodes `value` into a new buffer of at most `max` bytes. A value whose
/// encoding is larger is refused with [`Error::FrameTooLarge`] as soon as
/// the encoder passes `max`, so it never costs more memory than the
/// maximum; its full size is then counted without storing it.
///
/// ```
/// use yuki_channel::{Error, codec};
/// assert_eq!(codec::encode_limited(&7u8, 16).unwrap(), [7]);
/// let big = serde_bytes::ByteBuf::from(vec![0u8; 1000]);
/// assert!(matches!(
///     codec::encode_limited(&big, 16),
///     Err(Error::FrameTooLarge { size: 1003, max: 16 })
/// ));
/// ```
pub fn encode_limited<T: Serialize + ?Sized>(value: &T, max: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    append_limited(value, &mut out, max)?;
    Ok(out)
}

/// Appends `value` to `out` while `out` stays within `limit` bytes in all.
/// Past it, `out` is cut back to where it was and the error is
/// [`Error::FrameTooLarge`] with `limit` and the value's own encoded size,
/// counted without storing it.
pub(crate) fn append_limited<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<()> {
    struct Capped<'a> {
        out: &'a mut Vec<u8>,
        limit: usize,
        over: bool,
    }
    impl Writer for Capped<'_> {
        fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), EncodeError> {
            if bytes.len() > self.limit.saturating_sub(self.out.len()) {
                self.over = true;
                return Err(EncodeError::Other("the value is larger than the maximum"));
            }
            self.out.extend_from_slice(bytes);
            Ok(())
        }
    }
    let encode_error = |e: EncodeError| Error::Encode {
        type_name: std::any::type_name::<T>(),
        reason: e.to_string(),
    };
    let start = out.len();
    let mut capped = Capped {
        out,
        limit,
        over: false,
    };
    match bincode::serde::encode_into_writer(value, &mut capped, CONFIG) {
        Ok(()) => Ok(()),
        Err(e) => {
            let over = capped.over;
            capped.out.truncate(start);
            if !over {
                return Err(encode_error(e));
            }
            let mut size = SizeWriter::default();
            bincode::serde::encode_into_writer(value, &mut size, CONFIG).map_err(encode_error)?;
            Err(Error::FrameTooLarge {
                size: size.bytes_written,
                max: limit,
            })
        }
    }
}

/// Decodes a `T` that must fill `bytes` exactly: trailing bytes are an error,
/// since they mean the sender wrote another type.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    check_len::<T>(bytes)?;
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, CONFIG)
        .map_err(|e| decode_error::<T>(e.to_string()))?;
    trailing::<T>(used, bytes.len())?;
    Ok(value)
}

/// Decodes a `T` that borrows from `bytes` (keys as `&str`, payloads as
/// `&[u8]` with `serde_bytes`), so a request can be served without copying.
pub fn decode_borrowed<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    check_len::<T>(bytes)?;
    let (value, used) = bincode::serde::borrow_decode_from_slice::<T, _>(bytes, CONFIG)
        .map_err(|e| decode_error::<T>(e.to_string()))?;
    trailing::<T>(used, bytes.len())?;
    Ok(value)
}

fn check_len<T>(bytes: &[u8]) -> Result<()> {
    if bytes.len() > HARD_LIMIT {
        return Err(decode_error::<T>(format!(
            "{} bytes exceed the hard limit of {HARD_LIMIT}",
            bytes.len()
        )));
    }
    Ok(())
}

fn trailing<T>(used: usize, len: usize) -> Result<()> {
    if used != len {
        return Err(decode_error::<T>(format!(
            "{} trailing bytes after the value",
            len - used
        )));
    }
    Ok(())
}

fn decode_error<T>(reason: String) -> Error {
    Error::Decode {
        type_name: std::any::type_name::<T>(),
        reason,
    }
}

/// Checks a frame against a maximum size before it is sent or accepted.
pub fn check_frame(size: usize, max: usize) -> Result<()> {
    if size > max {
        Err(Error::FrameTooLarge { size, max })
    } else {
        Ok(())
    }
}

/// Appends one length-prefixed frame to `out`, so that many frames can travel
/// in one message and be split again by [`Frames`].
pub fn put_frame(out: &mut Vec<u8>, frame: &[u8]) {
    // Frames are bounded by the transport's maximum well below 4 GiB.
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(frame);
}

/// Iterates over the frames that [`put_frame`] wrote into one buffer.
///
/// A truncated buffer yields one [`Error::Decode`] and then stops.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Frames<'a> {
    /// Splits `buffer` into its frames.
    pub fn new(buffer: &'a [u8]) -> Frames<'a> {
        Frames { rest: buffer }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let fail = |rest: &mut &'a [u8], reason: String| {
            *rest = &[];
            Some(Err(Error::Decode {
                type_name: "frame",
                reason,
            }))
        };
        let Some((len, body)) = self.rest.split_first_chunk::<4>() else {
            return fail(&mut self.rest, "truncated length prefix".into());
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > body.len() {
            return fail(
                &mut self.rest,
                format!("frame claims {len} bytes but {} remain", body.len()),
            );
        }
        let (frame, rest) = body.split_at(len);
        self.rest = rest;
        Some(Ok(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        tags: Vec<String>,
        map: BTreeMap<u32, i64>,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        opt: Option<f64>,
    }

    #[test]
    fn round_trips_structs() {
        let s = Sample {
            name: "n".into(),
            tags: vec!["a".into(), "b".into()],
            map: [(1, -1), (2, 2)].into(),
            blob: vec![1, 2, 3],
            opt: Some(1.5),
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(decode::<Sample>(&bytes).unwrap(), s);
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&1u8).unwrap();
        bytes.push(0);
        let err = decode::<u8>(&bytes).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
        assert!(err.to_string().contains("trailing"));
    }

    #[test]
    fn wrong_type_names_the_type() {
        let bytes = encode(&"text").unwrap();
        let err = decode::<[u64; 9]>(&bytes).unwrap_err();
        assert!(err.to_string().contains("[u64; 9]"), "{err}");
    }

    #[test]
    fn huge_claimed_length_is_refused_without_allocating() {
        // Varint marker 0xFD = u64 follows: a string claiming 2^62 bytes.
        let mut bytes = vec![0xFD];
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(decode::<String>(&bytes).is_err());
        assert!(decode::<Vec<u8>>(&bytes).is_err());
        assert!(decode::<Vec<String>>(&bytes).is_err());
    }

    #[test]
    fn borrowed_decode_does_not_copy() {
        let bytes = encode(&("key", serde_bytes::Bytes::new(b"abc"))).unwrap();
        let (k, v): (&str, &serde_bytes::Bytes) = decode_borrowed(&bytes).unwrap();
        assert_eq!(k, "key");
        assert_eq!(&v[..], b"abc");
    }

    #[test]
    fn frames_split_and_detect_truncation() {
        let mut buf = Vec::new();
        put_frame(&mut buf, b"one");
        put_frame(&mut buf, b"");
        put_frame(&mut buf, b"three");
        let frames: Vec<_> = Frames::new(&buf).map(|f| f.unwrap().to_vec()).collect();
        assert_eq!(frames, vec![b"one".to_vec(), vec![], b"three".to_vec()]);

        let cut = &buf[..buf.len() - 1];
        let results: Vec<_> = Frames::new(cut).collect();
        assert_eq!(results.len(), 3);
        assert!(results[2].is_err());
        assert!(Frames::new(&[1, 0]).next().unwrap().is_err());
    }

    #[test]
    fn a_limited_encoding_is_the_encoding_or_the_exact_size_refused() {
        let values = [
            encode(&"text").unwrap(),
            encode(&vec![1u32, 300, 70_000]).unwrap(),
            encode(&(7u8, "k", serde_bytes::ByteBuf::from(vec![9u8; 500]))).unwrap(),
        ];
        assert_eq!(encode_limited(&"text", 100).unwrap(), values[0]);
        assert_eq!(
            encode_limited(&vec![1u32, 300, 70_000], values[1].len()).unwrap(),
            values[1]
        );
        let big = (7u8, "k", serde_bytes::ByteBuf::from(vec![9u8; 500]));
        assert_eq!(encode_limited(&big, values[2].len()).unwrap(), values[2]);
        for max in [0, 1, 3, values[2].len() - 1] {
            assert_eq!(
                encode_limited(&big, max),
                Err(Error::FrameTooLarge {
                    size: values[2].len(),
                    max
                })
            );
        }
    }

    #[test]
    fn check_frame_reports_sizes() {
        assert!(check_frame(10, 10).is_ok());
        assert_eq!(
            check_frame(11, 10),
            Err(Error::FrameTooLarge { size: 11, max: 10 })
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Sample>(&bytes);
            let _ = decode::<String>(&bytes);
            let _ = decode::<Vec<Vec<u8>>>(&bytes);
            let _ = decode_borrowed::<(&str, &serde_bytes::Bytes)>(&bytes);
            for f in Frames::new(&bytes) { let _ = f; }
        }

        #[test]
        fn values_round_trip(s in ".*", n in any::<i64>(), v in proptest::collection::vec(any::<u16>(), 0..50)) {
            let bytes = encode(&(s.clone(), n, v.clone())).unwrap();
            prop_assert_eq!(decode::<(String, i64, Vec<u16>)>(&bytes).unwrap(), (s, n, v));
        }
    }
}
