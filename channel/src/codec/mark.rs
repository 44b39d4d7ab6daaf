//! Values that carry a mark of their type, so that reading one as another
//! type gives the same value or an error naming both types: never another
//! value.
//!
//! Plain bincode has no mark: `7i64` is the byte 14 (zigzag), which a `u64`
//! reads as 14. The store and the topics keep values written by one program
//! and read by another, so their values are marked here.
//!
//! # The mark
//!
//! A value whose serde shape is a scalar gets one byte naming that shape,
//! then the scalar as the codec encodes it:
//!
//! | byte | shape |
//! |---|---|
//! | 1–5 | `u8`, `u16`, `u32`, `u64`, `u128` |
//! | 6–10 | `i8`, `i16`, `i32`, `i64`, `i128` |
//! | 11, 12 | `f32`, `f64` |
//! | 13, 14 | `bool`, `char` |
//! | 15 | a string (the codec's length and UTF-8 bytes) |
//! | 16 | a byte string (`serde_bytes`; the codec's length and bytes) |
//! | 17 | `()` |
//! | 18 | `None` |
//! | 19 | `Some`, followed by the marked inner value |
//! | 20 | any other type: a fingerprint of its name ([`std::any::type_name`], 8 bytes), its name without paths as a byte string (`Vec<Point>`), then the value as the codec encodes it |
//!
//! `usize` and `isize` are `u64` and `i64` to serde, so they are marked so.
//!
//! # Why this mark
//!
//! Scalars are what programs most often read back under a neighbouring
//! type (`i64` and `u64`, `String` and `Box<str>`, `&str` and `String`).
//! Their one-byte mark is read back through serde's own visitors, so an
//! integer converts exactly when the asked type holds it and is refused
//! (naming the value) when it does not, a string is any string type, and a
//! float narrows to `f32` only when exact. Kinds never mix: an integer is
//! not read as a float, a byte string not as a string, a `char` not as a
//! string. Counters ([`Integer`]) need the written integer type too, to add
//! within its range, and the byte gives it without decoding anything else.
//!
//! For every other shape (structs, enums, tuples, sequences, maps, an
//! `Option` of one of these) there is no cheap rule for which other types
//! read the same value, so the mark is the type's identity and only the
//! same type reads it: a 64-bit fingerprint of its full name, which every
//! process and build computes alike, and the name without its paths
//! (`Option<Point>` for `core::option::Option<app::geo::Point>`), kept
//! only so that an error in any process, even one that never saw the
//! type, can name it. The full name itself would name it best but costs
//! its length in every value (`yuki_examples::bench::pubsub::Tick` is 34
//! bytes, more than the message it marks), and pushes small values out of
//! the inline slots of the store and of subscriptions; the short name
//! costs a few bytes. A type renamed or moved between builds reads as
//! another type: an error, never a wrong value. Two different types of
//! the same full name (two versions of one crate) are not told apart.
//! References and smart pointers around the whole value (`&T`, `Box<T>`,
//! `Arc<T>`, `Rc<T>`, `Cow<T>`) are left out of the name, as serde leaves
//! them out of the encoding; inside it (`Vec<Box<T>>` against `Vec<T>`)
//! they are not, and the two read as different types.
//!
//! `None` is marked alone, so it reads as `None` of any `Option`; `Some`
//! of a scalar is the scalar's mark after the `Some` byte, so an
//! `Option<i64>` reads as an `Option<u64>` as its contents do.
//!
//! The mark costs one byte for a scalar: a string is written straight
//! into the buffer (one byte, its length, its bytes), with no encoder in
//! between, and read back through a shortcut.

use std::any::type_name;
use std::fmt;

use serde::de::{self, Deserialize, Visitor};
use serde::ser::{self, Impossible, Serialize};

use super::raw::{put_bytes, split_bytes};
use super::{append_limited, decode_borrowed, encode_into as encode_plain};
use crate::error::{Error, Result};

/// The byte before an unsigned 8-bit integer.
pub const U8: u8 = 1;
/// The byte before a `u16`.
pub const U16: u8 = 2;
/// The byte before a `u32`.
pub const U32: u8 = 3;
/// The byte before a `u64` (and a `usize`).
pub const U64: u8 = 4;
/// The byte before a `u128`.
pub const U128: u8 = 5;
/// The byte before an `i8`.
pub const I8: u8 = 6;
/// The byte before an `i16`.
pub const I16: u8 = 7;
/// The byte before an `i32`.
pub const I32: u8 = 8;
/// The byte before an `i64` (and an `isize`).
pub const I64: u8 = 9;
/// The byte before an `i128`.
pub const I128: u8 = 10;
/// The byte before an `f32`.
pub const F32: u8 = 11;
/// The byte before an `f64`.
pub const F64: u8 = 12;
/// The byte before a `bool`.
pub const BOOL: u8 = 13;
/// The byte before a `char`.
pub const CHAR: u8 = 14;
/// The byte before a string.
pub const STR: u8 = 15;
/// The byte before a byte string.
pub const BYTES: u8 = 16;
/// The byte of `()`.
pub const UNIT: u8 = 17;
/// The byte of `None`.
pub const NONE: u8 = 18;
/// The byte before the marked contents of a `Some`.
pub const SOME: u8 = 19;
/// The byte before a type name and a value of that type.
pub const NAMED: u8 = 20;

/// How deep `Some(Some(...))` may nest: deeper input is refused rather
/// than followed down the stack.
const MAX_DEPTH: usize = 64;

/// Appends `value` with its mark to `out`.
///
/// ```
/// use yuki_channel::codec::mark;
///
/// let mut bytes = Vec::new();
/// mark::encode_into(&7i64, &mut bytes).unwrap();
/// assert_eq!(mark::decode::<u64>(&bytes).unwrap(), 7);
/// assert!(mark::decode::<String>(&bytes).is_err());
/// ```
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    encode_marked(value, out, usize::MAX)
}

/// Appends `value` with its mark to `out`, refusing it with
/// [`Error::FrameTooLarge`] (its full marked size and `max`) as soon as the
/// encoding passes `max` bytes, so an oversized value never costs more
/// memory than the maximum; `out` is then as it was.
///
/// ```
/// use yuki_channel::{Error, codec::mark};
///
/// let mut bytes = Vec::new();
/// mark::encode_into_limited(&"hi", &mut bytes, 16).unwrap();
/// assert_eq!(mark::decode::<String>(&bytes).unwrap(), "hi");
/// let big = vec![0u32; 1000];
/// let err = mark::encode_into_limited(&big, &mut bytes, 16).unwrap_err();
/// assert!(matches!(err, Error::FrameTooLarge { max: 16, size } if size > 1000));
/// assert_eq!(mark::decode::<String>(&bytes).unwrap(), "hi");
/// ```
pub fn encode_into_limited<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    max: usize,
) -> Result<()> {
    let start = out.len();
    match encode_marked(value, out, max) {
        Ok(()) if out.len() - start > max => {
            // A scalar, small enough to write before counting.
            let size = out.len() - start;
            out.truncate(start);
            Err(Error::FrameTooLarge { size, max })
        }
        done => done,
    }
}

/// [`encode_into`], stopping early once the marked bytes pass `max` (for
/// strings, byte strings and named values: scalars are checked after).
fn encode_marked<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>, max: usize) -> Result<()> {
    let start = out.len();
    match value.serialize(Marker {
        out: &mut *out,
        start,
        max,
    }) {
        Ok(()) => Ok(()),
        Err(Refusal::Named) => {
            out.truncate(start);
            out.push(NAMED);
            identity(type_name::<T>(), |print, short| {
                out.extend_from_slice(&print.to_le_bytes());
                out.extend_from_slice(short);
            });
            if max == usize::MAX {
                return encode_plain(value, out);
            }
            let header = out.len() - start;
            match append_limited(value, out, start.saturating_add(max)) {
                Err(Error::FrameTooLarge { size, .. }) => {
                    out.truncate(start);
                    Err(Error::FrameTooLarge {
                        size: header + size,
                        max,
                    })
                }
                Err(e) => {
                    out.truncate(start);
                    Err(e)
                }
                ok => ok,
            }
        }
        Err(Refusal::TooLarge(size)) => {
            out.truncate(start);
            Err(Error::FrameTooLarge { size, max })
        }
        Err(Refusal::Custom(reason)) => {
            out.truncate(start);
            Err(Error::Encode {
                type_name: type_name::<T>(),
                reason,
            })
        }
    }
}

/// `value` with its mark, in a new buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// A marked value that cannot be read as the type asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The type the value was written as ([`written`]).
    pub written: String,
    /// The type asked for.
    pub asked: &'static str,
    /// Why it cannot be read so.
    pub reason: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "written as {}, read as {}: {}",
            self.written, self.asked, self.reason
        )
    }
}

impl std::error::Error for Mismatch {}

/// Reads a marked value as a `T`: the same value, or a [`Mismatch`] naming
/// both types. Strings and byte strings may borrow from `bytes`.
///
/// ```
/// use yuki_channel::codec::mark;
///
/// let bytes = mark::encode(&-1i64).unwrap();
/// assert_eq!(mark::decode::<i8>(&bytes).unwrap(), -1);
/// let e = mark::decode::<u64>(&bytes).unwrap_err();
/// assert_eq!((e.written.as_str(), e.asked), ("i64", "u64"));
/// ```
pub fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, Mismatch> {
    let mismatch = |reason: String| Mismatch {
        written: written(bytes),
        asked: type_name::<T>(),
        reason,
    };
    match bytes.split_first() {
        Some((&NAMED, rest)) => {
            let Some((print, name, body)) = named(rest) else {
                return Err(mismatch("the type's mark is cut short".into()));
            };
            let asked = identity(type_name::<T>(), |print, short| {
                (print, split_bytes(short).is_some_and(|(s, _)| s == name))
            });
            if let (asked, same_name) = asked
                && print != asked
            {
                return Err(mismatch(if same_name {
                    "another type of the same name; read it with the type it was written with"
                        .into()
                } else {
                    "a value of another type; read it with the type it was written with".into()
                }));
            }
            decode_borrowed::<T>(body).map_err(|e| {
                mismatch(match e {
                    Error::Decode { reason, .. } => reason,
                    other => other.to_string(),
                })
            })
        }
        _ => T::deserialize(Scalar { bytes, depth: 0 }).map_err(|e| mismatch(e.0)),
    }
}

/// `name` without the references and smart pointers around it that serde
/// sees through (`&T`, `Box<T>`, `Arc<T>`, `Rc<T>`, `Cow<T>` encode as `T`
/// does), so that a `T` written through one of them reads as a `T`.
fn bare(mut name: &str) -> &str {
    const WRAPPERS: [&str; 4] = [
        "alloc::boxed::Box<",
        "alloc::sync::Arc<",
        "alloc::rc::Rc<",
        "alloc::borrow::Cow<",
    ];
    'strip: loop {
        // A lifetime, as in `Cow<'_, T>` or `&'_ T`.
        if let Some((_, rest)) = name
            .strip_prefix('\'')
            .and_then(|rest| rest.split_once([',', ' ']))
        {
            name = rest.trim_start();
            continue;
        }
        if let Some(rest) = name.strip_prefix('&') {
            name = rest.strip_prefix("mut ").unwrap_or(rest);
            continue;
        }
        for wrapper in WRAPPERS {
            if let Some(inner) = name
                .strip_prefix(wrapper)
                .and_then(|rest| rest.strip_suffix('>'))
            {
                name = inner;
                continue 'strip;
            }
        }
        return name;
    }
}

/// What follows [`NAMED`]: the type's fingerprint, its short name and the
/// value's bytes.
fn named(bytes: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let (print, rest) = bytes.split_first_chunk::<8>()?;
    let (name, body) = split_bytes(rest)?;
    Some((u64::from_le_bytes(*print), name, body))
}

/// A type's identity as [`NAMED`] writes it, computed once per type and
/// thread.
struct Identity {
    /// Where the type's name is (`type_name` gives each type one string).
    name: (usize, usize),
    print: u64,
    /// The short name, written as a byte string.
    short: Vec<u8>,
}

thread_local! {
    /// Recent types' identities, by where their name is: hashing a name
    /// and shortening it on every value costs a tenth of a small message.
    static IDENTITIES: std::cell::RefCell<[Option<Identity>; 8]> =
        const { std::cell::RefCell::new([const { None }; 8]) };
}

/// Calls `f` with the fingerprint and the short name (a byte string) of
/// the type named `name`.
#[inline]
fn identity<R>(name: &'static str, mut f: impl FnMut(u64, &[u8]) -> R) -> R {
    let key = (name.as_ptr() as usize, name.len());
    let compute = || {
        let bare = bare(name);
        let mut short = Vec::new();
        put_short(bare, &mut short);
        Identity {
            name: key,
            print: fingerprint(bare),
            short,
        }
    };
    let slot = (key.0 >> 3 ^ key.1) % 8;
    let cached = IDENTITIES.try_with(|cell| {
        let mut slots = cell.try_borrow_mut().ok()?;
        let entry = &mut slots[slot];
        if entry.as_ref().is_none_or(|e| e.name != key) {
            *entry = Some(compute());
        }
        entry.as_ref().map(|e| f(e.print, &e.short))
    });
    match cached {
        Ok(Some(r)) => r,
        // Only while the thread ends, or when a value's `Serialize` encodes
        // another value itself.
        _ => {
            let e = compute();
            f(e.print, &e.short)
        }
    }
}

/// A fingerprint of a type's full name (64-bit FNV-1a): the same in every
/// process and build that names the type the same.
fn fingerprint(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Calls `emit` with the pieces of `name` without its paths:
/// `alloc::vec::Vec<my::Point>` is `Vec<Point>`.
fn shorten<'a>(name: &'a str, mut emit: impl FnMut(&'a str)) {
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        if end == 0 {
            emit(&rest[..c.len_utf8()]);
            rest = &rest[c.len_utf8()..];
        } else {
            let path = &rest[..end];
            emit(path.rsplit("::").next().unwrap_or(path));
            rest = &rest[end..];
        }
    }
}

/// Appends `name` without its paths as a byte string.
fn put_short(name: &str, out: &mut Vec<u8>) {
    let mut len = 0;
    shorten(name, |piece| len += piece.len());
    let mut short = Vec::with_capacity(len);
    shorten(name, |piece| short.extend_from_slice(piece.as_bytes()));
    put_bytes(out, &short);
}

/// The type a marked value was written as, for messages: `i64`, `string`,
/// `Option<u8>`, a type's name, ...
///
/// ```
/// use yuki_channel::codec::mark;
///
/// assert_eq!(mark::written(&mark::encode(&Some(3u8)).unwrap()), "Option<u8>");
/// assert_eq!(mark::written(&mark::encode("text").unwrap()), "string");
/// ```
pub fn written(bytes: &[u8]) -> String {
    let mut somes = 0;
    let mut rest = bytes;
    while let Some((&SOME, inner)) = rest.split_first() {
        somes += 1;
        rest = inner;
    }
    let inner = match rest.split_first() {
        Some((&NAMED, body)) => match named(body) {
            Some((_, name, _)) => String::from_utf8_lossy(name).into_owned(),
            None => "an unreadable value".into(),
        },
        Some((&tag, _)) => shape(tag).unwrap_or("an unmarked value").into(),
        None => "nothing (no bytes)".into(),
    };
    format!("{}{inner}{}", "Option<".repeat(somes), ">".repeat(somes))
}

fn shape(tag: u8) -> Option<&'static str> {
    Some(match tag {
        U8 => "u8",
        U16 => "u16",
        U32 => "u32",
        U64 => "u64",
        U128 => "u128",
        I8 => "i8",
        I16 => "i16",
        I32 => "i32",
        I64 => "i64",
        I128 => "i128",
        F32 => "f32",
        F64 => "f64",
        BOOL => "bool",
        CHAR => "char",
        STR => "string",
        BYTES => "byte string",
        UNIT => "()",
        NONE => "None",
        _ => return None,
    })
}

// ---- counters ----

/// An integer type a counter may have: every width up to 64 bits, signed
/// or not (`usize` and `isize` are `u64` and `i64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntType {
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64` (and `usize`).
    U64,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64` (and `isize`).
    I64,
}

impl IntType {
    /// The smallest and largest value of the type.
    pub fn bounds(self) -> (i128, i128) {
        match self {
            IntType::U8 => (0, u8::MAX.into()),
            IntType::U16 => (0, u16::MAX.into()),
            IntType::U32 => (0, u32::MAX.into()),
            IntType::U64 => (0, u64::MAX.into()),
            IntType::I8 => (i8::MIN.into(), i8::MAX.into()),
            IntType::I16 => (i16::MIN.into(), i16::MAX.into()),
            IntType::I32 => (i32::MIN.into(), i32::MAX.into()),
            IntType::I64 => (i64::MIN.into(), i64::MAX.into()),
        }
    }

    fn tag(self) -> u8 {
        match self {
            IntType::U8 => U8,
            IntType::U16 => U16,
            IntType::U32 => U32,
            IntType::U64 => U64,
            IntType::I8 => I8,
            IntType::I16 => I16,
            IntType::I32 => I32,
            IntType::I64 => I64,
        }
    }
}

/// A marked integer of at most 64 bits: a counter's value and its type.
///
/// ```
/// use yuki_channel::codec::mark::{self, IntType, Integer};
///
/// let five = Integer::read(&mark::encode(&5u8).unwrap()).unwrap();
/// assert_eq!((five.int_type(), five.value()), (IntType::U8, 5));
/// assert_eq!(five.checked_add(250).unwrap().value(), 255);
/// assert!(five.checked_add(251).is_none());
/// assert!(five.checked_add(-6).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Integer {
    int_type: IntType,
    value: i128,
}

impl Integer {
    /// `value` as a `int_type`, `None` when the type cannot hold it.
    pub fn new(int_type: IntType, value: i128) -> Option<Integer> {
        let (min, max) = int_type.bounds();
        (min..=max)
            .contains(&value)
            .then_some(Integer { int_type, value })
    }

    /// The integer `bytes` hold, `None` when they hold anything else (a
    /// 128-bit integer included).
    pub fn read(bytes: &[u8]) -> Option<Integer> {
        let (&tag, body) = bytes.split_first()?;
        let (int_type, value) = match tag {
            U8 => (IntType::U8, i128::from(decode_borrowed::<u8>(body).ok()?)),
            U16 => (IntType::U16, decode_borrowed::<u16>(body).ok()?.into()),
            U32 => (IntType::U32, decode_borrowed::<u32>(body).ok()?.into()),
            U64 => (IntType::U64, decode_borrowed::<u64>(body).ok()?.into()),
            I8 => (IntType::I8, decode_borrowed::<i8>(body).ok()?.into()),
            I16 => (IntType::I16, decode_borrowed::<i16>(body).ok()?.into()),
            I32 => (IntType::I32, decode_borrowed::<i32>(body).ok()?.into()),
            I64 => (IntType::I64, decode_borrowed::<i64>(body).ok()?.into()),
            _ => return None,
        };
        Some(Integer { int_type, value })
    }

    /// The type it was written as.
    pub fn int_type(self) -> IntType {
        self.int_type
    }

    /// The value.
    pub fn value(self) -> i128 {
        self.value
    }

    /// `self + by` in the same type, `None` when the type cannot hold it.
    pub fn checked_add(self, by: i64) -> Option<Integer> {
        Integer::new(self.int_type, self.value + i128::from(by))
    }

    /// Appends the marked integer to `out`, as [`encode_into`] writes a
    /// value of its type.
    pub fn encode_into(self, out: &mut Vec<u8>) {
        out.push(self.int_type.tag());
        // In range by construction, so each conversion holds and the codec
        // cannot fail on a primitive.
        let _ = match self.int_type {
            IntType::U8 => encode_plain(&(self.value as u8), out),
            IntType::U16 => encode_plain(&(self.value as u16), out),
            IntType::U32 => encode_plain(&(self.value as u32), out),
            IntType::U64 => encode_plain(&(self.value as u64), out),
            IntType::I8 => encode_plain(&(self.value as i8), out),
            IntType::I16 => encode_plain(&(self.value as i16), out),
            IntType::I32 => encode_plain(&(self.value as i32), out),
            IntType::I64 => encode_plain(&(self.value as i64), out),
        };
    }
}

// ---- writing ----

/// Writes a scalar with its mark; refuses every other shape, which is then
/// written under its name.
struct Marker<'a> {
    out: &'a mut Vec<u8>,
    /// Where this value's bytes begin in `out`.
    start: usize,
    /// The most bytes the marked value may take.
    max: usize,
}

#[derive(Debug)]
enum Refusal {
    /// Not a scalar: write it under its type's name.
    Named,
    /// The value's `Serialize` failed.
    Custom(String),
    /// The marked value would take this many bytes, over the maximum.
    TooLarge(usize),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Named => f.write_str("not a scalar"),
            Refusal::Custom(reason) => f.write_str(reason),
            Refusal::TooLarge(size) => write!(f, "{size} bytes, over the maximum"),
        }
    }
}

impl std::error::Error for Refusal {}

impl ser::Error for Refusal {
    fn custom<T: fmt::Display>(msg: T) -> Refusal {
        Refusal::Custom(msg.to_string())
    }
}

impl Marker<'_> {
    /// Refuses a string or byte string of `n` bytes, with its mark and
    /// length, that would take the value past the maximum.
    #[inline]
    fn room_for(&self, n: usize) -> Result<(), Refusal> {
        let length = match n {
            0..=250 => 1,
            251..=0xffff => 3,
            0x1_0000..=0xffff_ffff => 5,
            _ => 9,
        };
        let size = self.out.len() - self.start + 1 + length + n;
        if size > self.max {
            return Err(Refusal::TooLarge(size));
        }
        Ok(())
    }

    #[inline]
    fn scalar<T: Serialize>(self, tag: u8, v: T) -> Result<(), Refusal> {
        self.out.push(tag);
        encode_plain(&v, self.out).map_err(|e| Refusal::Custom(e.to_string()))
    }
}

impl ser::Serializer for Marker<'_> {
    type Ok = ();
    type Error = Refusal;
    type SerializeSeq = Impossible<(), Refusal>;
    type SerializeTuple = Impossible<(), Refusal>;
    type SerializeTupleStruct = Impossible<(), Refusal>;
    type SerializeTupleVariant = Impossible<(), Refusal>;
    type SerializeMap = Impossible<(), Refusal>;
    type SerializeStruct = Impossible<(), Refusal>;
    type SerializeStructVariant = Impossible<(), Refusal>;

    fn serialize_bool(self, v: bool) -> Result<(), Refusal> {
        self.scalar(BOOL, v)
    }
    fn serialize_i8(self, v: i8) -> Result<(), Refusal> {
        self.scalar(I8, v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), Refusal> {
        self.scalar(I16, v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), Refusal> {
        self.scalar(I32, v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), Refusal> {
        self.scalar(I64, v)
    }
    fn serialize_i128(self, v: i128) -> Result<(), Refusal> {
        self.scalar(I128, v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Refusal> {
        self.scalar(U8, v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), Refusal> {
        self.scalar(U16, v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), Refusal> {
        self.scalar(U32, v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), Refusal> {
        self.scalar(U64, v)
    }
    fn serialize_u128(self, v: u128) -> Result<(), Refusal> {
        self.scalar(U128, v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), Refusal> {
        self.scalar(F32, v)
    }
    fn serialize_f64(self, v: f64) -> Result<(), Refusal> {
        self.scalar(F64, v)
    }
    fn serialize_char(self, v: char) -> Result<(), Refusal> {
        self.scalar(CHAR, v)
    }
    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), Refusal> {
        // The codec's layout of a string, written directly.
        self.room_for(v.len())?;
        self.out.push(STR);
        put_bytes(self.out, v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Refusal> {
        self.room_for(v.len())?;
        self.out.push(BYTES);
        put_bytes(self.out, v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Refusal> {
        self.out.push(NONE);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Refusal> {
        self.out.push(SOME);
        value.serialize(Marker {
            out: self.out,
            start: self.start,
            max: self.max,
        })
    }
    fn serialize_unit(self) -> Result<(), Refusal> {
        self.out.push(UNIT);
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Refusal> {
        Err(Refusal::Named)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), Refusal> {
        Err(Refusal::Named)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Refusal> {
        Err(Refusal::Named)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Refusal> {
        Err(Refusal::Named)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Refusal> {
        Err(Refusal::Named)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Refusal> {
        Err(Refusal::Named)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Refusal> {
        Err(Refusal::Named)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Refusal> {
        Err(Refusal::Named)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Refusal> {
        Err(Refusal::Named)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Refusal> {
        Err(Refusal::Named)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Refusal> {
        Err(Refusal::Named)
    }
    // As the codec's: types that encode differently for humans take the
    // same branch as there.
    fn is_human_readable(&self) -> bool {
        false
    }
}

// ---- reading ----

/// Why a scalar cannot be read as the type asked for.
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl de::Error for Refused {
    fn custom<T: fmt::Display>(msg: T) -> Refused {
        Refused(msg.to_string())
    }
}

/// A marked value that is not under a name: a scalar, `None` or `Some`.
struct Scalar<'de> {
    bytes: &'de [u8],
    depth: usize,
}

/// The value a scalar mark holds.
enum Held<'de> {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    U128(u128),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    I128(i128),
    F32(f32),
    F64(f64),
    Bool(bool),
    Char(char),
    Str(&'de str),
    Bytes(&'de [u8]),
    Unit,
    None,
    Some(&'de [u8]),
    /// A value under a name, inside a `Some`: [`encode_into`] never writes
    /// one, so it comes from elsewhere and is refused.
    Named,
}

impl Held<'_> {
    fn is_integer(&self) -> bool {
        matches!(
            self,
            Held::U8(_)
                | Held::U16(_)
                | Held::U32(_)
                | Held::U64(_)
                | Held::U128(_)
                | Held::I8(_)
                | Held::I16(_)
                | Held::I32(_)
                | Held::I64(_)
                | Held::I128(_)
        )
    }
}

fn plain<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, Refused> {
    decode_borrowed::<T>(body).map_err(|e| {
        Refused(match e {
            Error::Decode { reason, .. } => reason,
            other => other.to_string(),
        })
    })
}

impl<'de> Scalar<'de> {
    fn held(&self) -> Result<Held<'de>, Refused> {
        let Some((&tag, body)) = self.bytes.split_first() else {
            return Err(Refused("no bytes: not a marked value".into()));
        };
        let whole = |b: &'de [u8]| -> Result<&'de [u8], Refused> {
            match split_bytes(b) {
                Some((contents, [])) => Ok(contents),
                _ => Err(Refused("a malformed length or trailing bytes".into())),
            }
        };
        Ok(match tag {
            U8 => Held::U8(plain(body)?),
            U16 => Held::U16(plain(body)?),
            U32 => Held::U32(plain(body)?),
            U64 => Held::U64(plain(body)?),
            U128 => Held::U128(plain(body)?),
            I8 => Held::I8(plain(body)?),
            I16 => Held::I16(plain(body)?),
            I32 => Held::I32(plain(body)?),
            I64 => Held::I64(plain(body)?),
            I128 => Held::I128(plain(body)?),
            F32 => Held::F32(plain(body)?),
            F64 => Held::F64(plain(body)?),
            BOOL => Held::Bool(plain(body)?),
            CHAR => Held::Char(plain(body)?),
            STR => Held::Str(
                std::str::from_utf8(whole(body)?)
                    .map_err(|e| Refused(format!("a string that is not UTF-8: {e}")))?,
            ),
            BYTES => Held::Bytes(whole(body)?),
            UNIT | NONE if !body.is_empty() => {
                return Err(Refused(format!("{} trailing bytes", body.len())));
            }
            UNIT => Held::Unit,
            NONE => Held::None,
            SOME => Held::Some(body),
            NAMED => Held::Named,
            other => return Err(Refused(format!("no value is marked {other}"))),
        })
    }

    /// Hands the held value to `visitor` as what it is.
    fn visit<V: Visitor<'de>>(self, held: Held<'de>, visitor: V) -> Result<V::Value, Refused> {
        match held {
            Held::U8(v) => visitor.visit_u8(v),
            Held::U16(v) => visitor.visit_u16(v),
            Held::U32(v) => visitor.visit_u32(v),
            Held::U64(v) => visitor.visit_u64(v),
            Held::U128(v) => visitor.visit_u128(v),
            Held::I8(v) => visitor.visit_i8(v),
            Held::I16(v) => visitor.visit_i16(v),
            Held::I32(v) => visitor.visit_i32(v),
            Held::I64(v) => visitor.visit_i64(v),
            Held::I128(v) => visitor.visit_i128(v),
            Held::F32(v) => visitor.visit_f32(v),
            Held::F64(v) => visitor.visit_f64(v),
            Held::Bool(v) => visitor.visit_bool(v),
            Held::Char(v) => visitor.visit_char(v),
            Held::Str(v) => visitor.visit_borrowed_str(v),
            Held::Bytes(v) => visitor.visit_borrowed_bytes(v),
            Held::Unit => visitor.visit_unit(),
            Held::None => visitor.visit_none(),
            Held::Some(inner) => {
                if self.depth >= MAX_DEPTH {
                    return Err(Refused(format!("Options nested over {MAX_DEPTH} deep")));
                }
                visitor.visit_some(Scalar {
                    bytes: inner,
                    depth: self.depth + 1,
                })
            }
            Held::Named => Err(Refused("a named value inside an Option".into())),
        }
    }

    /// Hands the held value over if `fits` says it is of the kind asked
    /// for; else refuses it, naming the kind asked for.
    fn visit_if<V: Visitor<'de>>(
        self,
        fits: impl FnOnce(&Held<'de>) -> bool,
        asked: &str,
        visitor: V,
    ) -> Result<V::Value, Refused> {
        let held = self.held()?;
        if fits(&held) {
            self.visit(held, visitor)
        } else {
            Err(Refused(format!("not {asked}")))
        }
    }

    fn integer<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.visit_if(Held::is_integer, "an integer", visitor)
    }
}

macro_rules! integers {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
                self.integer(visitor)
            }
        )*
    };
}

macro_rules! refused {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Refused> {
                Err(Refused("a scalar is not a composite value".into()))
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Scalar<'de> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        let held = self.held()?;
        self.visit(held, visitor)
    }

    integers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        // An f32 widens exactly.
        self.visit_if(
            |h| matches!(h, Held::F32(_) | Held::F64(_)),
            "a float",
            visitor,
        )
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self.held()? {
            Held::F32(v) => visitor.visit_f32(v),
            // Serde's f32 would round an f64; only an exact one is taken.
            Held::F64(v) if f64::from(v as f32) == v || v.is_nan() => visitor.visit_f32(v as f32),
            Held::F64(v) => Err(Refused(format!("{v} is not exactly an f32"))),
            _ => Err(Refused("not a float".into())),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.visit_if(|h| matches!(h, Held::Bool(_)), "a bool", visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.visit_if(|h| matches!(h, Held::Char(_)), "a char", visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.visit_if(|h| matches!(h, Held::Str(_)), "a string", visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.visit_if(|h| matches!(h, Held::Bytes(_)), "a byte string", visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.visit_if(
            |h| matches!(h, Held::None | Held::Some(_)),
            "an Option",
            visitor,
        )
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.visit_if(|h| matches!(h, Held::Unit), "()", visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_unit()
    }

    refused! {
        deserialize_seq deserialize_map deserialize_identifier
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, Refused> {
        Err(Refused("a scalar is not a composite value".into()))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: V,
    ) -> Result<V::Value, Refused> {
        Err(Refused("a scalar is not a composite value".into()))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Refused> {
        Err(Refused("a scalar is not a composite value".into()))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, Refused> {
        Err(Refused("a scalar is not a composite value".into()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Refused> {
        Err(Refused("a scalar is not a composite value".into()))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Refused> {
        Err(Refused("a scalar is not a composite value".into()))
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests;
