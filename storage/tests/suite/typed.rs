//! Reading a value as another type than it was written with: the same
//! value or a typed error naming the key and both types, never another
//! value; and counters of every integer type.

use std::any::type_name;
use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use yuki_storage::{Error, Store};

use super::Harness;

/// A value as a reader sees it, whatever Rust type holds it: two reads
/// give the same value when their canonical forms are equal.
#[derive(Debug, Clone, PartialEq)]
pub enum Canon {
    Int(i128),
    /// An f64's bits (an f32 widens exactly), every NaN as one.
    Float(u64),
    Bool(bool),
    Char(char),
    Str(String),
    Bytes(Vec<u8>),
    Unit,
    None,
    Some(Box<Canon>),
    Seq(Vec<Canon>),
    /// A struct or enum variant: its type and variant names, its fields.
    Named(&'static str, Vec<Canon>),
}

fn float(v: f64) -> Canon {
    Canon::Float(if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    })
}

/// A type of the table: written and read by the tests.
pub trait Typed: Serialize + DeserializeOwned + Debug {
    fn canon(&self) -> Canon;
}

macro_rules! ints {
    ($($t:ty)*) => { $(impl Typed for $t {
        fn canon(&self) -> Canon { Canon::Int(*self as i128) }
    })* };
}
ints!(u8 u16 u32 u64 usize i8 i16 i32 i64 i128 isize);

impl Typed for u128 {
    fn canon(&self) -> Canon {
        // Past i128 the value is still told apart from any other.
        match i128::try_from(*self) {
            Ok(v) => Canon::Int(v),
            Err(_) => Canon::Str(format!("u128 {self}")),
        }
    }
}

impl Typed for f32 {
    fn canon(&self) -> Canon {
        float(f64::from(*self))
    }
}

impl Typed for f64 {
    fn canon(&self) -> Canon {
        float(*self)
    }
}

impl Typed for bool {
    fn canon(&self) -> Canon {
        Canon::Bool(*self)
    }
}

impl Typed for char {
    fn canon(&self) -> Canon {
        Canon::Char(*self)
    }
}

impl Typed for String {
    fn canon(&self) -> Canon {
        Canon::Str(self.clone())
    }
}

impl Typed for Box<str> {
    fn canon(&self) -> Canon {
        Canon::Str(self.to_string())
    }
}

impl Typed for ByteBuf {
    fn canon(&self) -> Canon {
        Canon::Bytes(self.to_vec())
    }
}

impl Typed for Vec<u8> {
    fn canon(&self) -> Canon {
        Canon::Bytes(self.clone())
    }
}

impl Typed for Vec<i8> {
    fn canon(&self) -> Canon {
        Canon::Seq(self.iter().map(Typed::canon).collect())
    }
}

impl Typed for () {
    fn canon(&self) -> Canon {
        Canon::Unit
    }
}

impl<T: Typed> Typed for Option<T> {
    fn canon(&self) -> Canon {
        match self {
            None => Canon::None,
            Some(v) => Canon::Some(Box::new(v.canon())),
        }
    }
}

impl<A: Typed, B: Typed> Typed for (A, B) {
    fn canon(&self) -> Canon {
        Canon::Seq(vec![self.0.canon(), self.1.canon()])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    x: i32,
    y: i32,
}

impl Typed for Point {
    fn canon(&self) -> Canon {
        Canon::Named("Point", vec![self.x.canon(), self.y.canon()])
    }
}

/// The same shape as [`Point`] under another name: plain bincode reads
/// one as the other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Size {
    w: i32,
    h: i32,
}

impl Typed for Size {
    fn canon(&self) -> Canon {
        Canon::Named("Size", vec![self.w.canon(), self.h.canon()])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    Circle(u32),
    Square { side: u16 },
    Empty,
}

impl Typed for Shape {
    fn canon(&self) -> Canon {
        match self {
            Shape::Circle(r) => Canon::Named("Shape::Circle", vec![r.canon()]),
            Shape::Square { side } => Canon::Named("Shape::Square", vec![side.canon()]),
            Shape::Empty => Canon::Named("Shape::Empty", vec![]),
        }
    }
}

/// Reads `key` as `R` from `store` and checks the answer against the value
/// written (`want`) and the name of the type it was written as.
fn read_as<R: Typed>(store: &Store, key: &str, want: &Canon, written: &str) -> Result<(), String> {
    match store.get::<R>(key) {
        Ok(Some(v)) if v.canon() == *want => Ok(()),
        Ok(Some(v)) => Err(format!(
            "{key}: written {want:?} as {written}, read as {} it is {v:?}: another value",
            type_name::<R>()
        )),
        Ok(None) => Err(format!("{key}: the value is gone")),
        Err(Error::WrongType {
            key: k,
            written: w,
            type_name: t,
            reason,
        }) => {
            let message = Error::WrongType {
                key: k.clone(),
                written: w.clone(),
                type_name: t,
                reason,
            }
            .to_string();
            if k == key && w == written && t == type_name::<R>() && message.contains(written) {
                Ok(())
            } else {
                Err(format!(
                    "{key}: expected an error naming {key}, {written} and {}, got: {message}",
                    type_name::<R>()
                ))
            }
        }
        Err(other) => Err(format!("{key}: read as {}: {other}", type_name::<R>())),
    }
}

type Reader = fn(&Store, &str, &Canon, &str) -> Result<(), String>;

/// The table: each type with how a test makes values of it and the name
/// the store gives the type it was written as.
macro_rules! table {
    ($($var:ident($ty:ty) = $strategy:expr, $written:expr;)*) => {
        #[derive(Debug, Clone)]
        pub enum Sample { $($var($ty)),* }

        impl Sample {
            fn set(&self, store: &Store, key: &str) -> yuki_storage::Result<()> {
                match self { $(Sample::$var(v) => store.set(key, v)),* }
            }
            fn canon(&self) -> Canon {
                match self { $(Sample::$var(v) => v.canon()),* }
            }
            fn written(&self) -> String {
                match self { $(Sample::$var(v) => {
                    let f: fn(&$ty) -> String = $written;
                    f(v)
                }),* }
            }
        }

        fn samples() -> impl Strategy<Value = Sample> {
            prop_oneof![$(($strategy).prop_map(Sample::$var)),*]
        }

        const READERS: &[Reader] = &[$(read_as::<$ty>),*];
    };
}

fn optional<T>(v: &Option<T>, inner: &str) -> String {
    match v {
        None => "None".into(),
        Some(_) => format!("Option<{inner}>"),
    }
}

fn small_ints() -> impl Strategy<Value = i64> {
    // Edges of every width and small values, where conversions succeed.
    prop_oneof![
        -300i64..300,
        Just(i64::from(i8::MIN)),
        Just(i64::from(u8::MAX)),
        Just(i64::from(i16::MIN)),
        Just(i64::from(u16::MAX)),
        Just(i64::from(i32::MIN)),
        Just(i64::from(u32::MAX)),
        Just(i64::MIN),
        Just(i64::MAX),
        any::<i64>(),
    ]
}

table! {
    U8(u8) = any::<u8>(), |_| "u8".into();
    U16(u16) = any::<u16>(), |_| "u16".into();
    U32(u32) = any::<u32>(), |_| "u32".into();
    U64(u64) = any::<u64>(), |_| "u64".into();
    U128(u128) = any::<u128>(), |_| "u128".into();
    Usize(usize) = any::<usize>(), |_| "u64".into();
    I8(i8) = any::<i8>(), |_| "i8".into();
    I16(i16) = any::<i16>(), |_| "i16".into();
    I32(i32) = any::<i32>(), |_| "i32".into();
    I64(i64) = small_ints(), |_| "i64".into();
    I128(i128) = any::<i128>(), |_| "i128".into();
    Isize(isize) = any::<isize>(), |_| "i64".into();
    F32(f32) = any::<f32>(), |_| "f32".into();
    F64(f64) = prop_oneof![any::<f64>(), Just(0.5), Just(0.1)], |_| "f64".into();
    Bool(bool) = any::<bool>(), |_| "bool".into();
    Char(char) = any::<char>(), |_| "char".into();
    Text(String) = ".{0,12}", |_| "string".into();
    BoxStr(Box<str>) = "[a-z]{0,4}".prop_map(String::into_boxed_str), |_| "string".into();
    Bytes(ByteBuf) = proptest::collection::vec(any::<u8>(), 0..6).prop_map(ByteBuf::from), |_| "byte string".into();
    VecU8(Vec<u8>) = proptest::collection::vec(any::<u8>(), 0..6), |_| "Vec<u8>".into();
    VecI8(Vec<i8>) = proptest::collection::vec(any::<i8>(), 0..6), |_| "Vec<i8>".into();
    Unit(()) = Just(()), |_| "()".into();
    OptI64(Option<i64>) = proptest::option::of(small_ints()), |v| optional(v, "i64");
    OptU8(Option<u8>) = proptest::option::of(any::<u8>()), |v| optional(v, "u8");
    OptText(Option<String>) = proptest::option::of("[a-z]{0,4}"), |v| optional(v, "string");
    OptPoint(Option<Point>) = proptest::option::of((any::<i32>(), any::<i32>()).prop_map(|(x, y)| Point { x, y })),
        |v| if v.is_some() { "Option<Point>".into() } else { "None".into() };
    Pair((i32, String)) = (any::<i32>(), "[a-z]{0,4}"), |_| "(i32, String)".into();
    Bytes2((u8, u8)) = (any::<u8>(), any::<u8>()), |_| "(u8, u8)".into();
    AtPoint(Point) = (any::<i32>(), any::<i32>()).prop_map(|(x, y)| Point { x, y }), |_| "Point".into();
    AtSize(Size) = (any::<i32>(), any::<i32>()).prop_map(|(w, h)| Size { w, h }), |_| "Size".into();
    AnyShape(Shape) = prop_oneof![
        any::<u32>().prop_map(Shape::Circle),
        any::<u16>().prop_map(|side| Shape::Square { side }),
        Just(Shape::Empty),
    ], |_| "Shape".into();
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Every value of the table written by one process and read as every type
/// of the table by main and a child: the same value or an error naming the
/// key and both types.
pub fn values_are_read_as_written_or_refused(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("typed"));
    let n = std::sync::atomic::AtomicU64::new(0);
    let result = runner(48).run(&(samples(), any::<bool>()), |(sample, by_main)| {
        let key = format!(
            "typed.{}",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let writer = if by_main { &main } else { &child };
        sample
            .set(writer, &key)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (want, written) = (sample.canon(), sample.written());
        for store in [&main, &child] {
            for read in READERS {
                read(store, &key, &want, &written).map_err(TestCaseError::fail)?;
            }
        }
        main.delete(&key)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The integer types a counter may have, with their bounds.
#[derive(Debug, Clone, Copy)]
enum Counter {
    U8,
    U16,
    U32,
    U64,
    Usize,
    I8,
    I16,
    I32,
    I64,
    Isize,
}

const COUNTERS: [Counter; 10] = [
    Counter::U8,
    Counter::U16,
    Counter::U32,
    Counter::U64,
    Counter::Usize,
    Counter::I8,
    Counter::I16,
    Counter::I32,
    Counter::I64,
    Counter::Isize,
];

impl Counter {
    fn bounds(self) -> (i128, i128) {
        match self {
            Counter::U8 => (0, u8::MAX.into()),
            Counter::U16 => (0, u16::MAX.into()),
            Counter::U32 => (0, u32::MAX.into()),
            Counter::U64 | Counter::Usize => (0, u64::MAX.into()),
            Counter::I8 => (i8::MIN.into(), i8::MAX.into()),
            Counter::I16 => (i16::MIN.into(), i16::MAX.into()),
            Counter::I32 => (i32::MIN.into(), i32::MAX.into()),
            Counter::I64 | Counter::Isize => (i64::MIN.into(), i64::MAX.into()),
        }
    }

    /// Writes `v` (in range) as this type.
    fn set(self, store: &Store, key: &str, v: i128) {
        let r = match self {
            Counter::U8 => store.set(key, &(v as u8)),
            Counter::U16 => store.set(key, &(v as u16)),
            Counter::U32 => store.set(key, &(v as u32)),
            Counter::U64 => store.set(key, &(v as u64)),
            Counter::Usize => store.set(key, &(v as usize)),
            Counter::I8 => store.set(key, &(v as i8)),
            Counter::I16 => store.set(key, &(v as i16)),
            Counter::I32 => store.set(key, &(v as i32)),
            Counter::I64 => store.set(key, &(v as i64)),
            Counter::Isize => store.set(key, &(v as isize)),
        };
        r.unwrap();
    }

    /// The stored bytes of `v` written as this type.
    fn bytes(self, v: i128) -> Vec<u8> {
        use yuki_channel::codec::mark::encode;
        match self {
            Counter::U8 => encode(&(v as u8)),
            Counter::U16 => encode(&(v as u16)),
            Counter::U32 => encode(&(v as u32)),
            Counter::U64 => encode(&(v as u64)),
            Counter::Usize => encode(&(v as usize)),
            Counter::I8 => encode(&(v as i8)),
            Counter::I16 => encode(&(v as i16)),
            Counter::I32 => encode(&(v as i32)),
            Counter::I64 => encode(&(v as i64)),
            Counter::Isize => encode(&(v as isize)),
        }
        .unwrap()
    }

    /// What `incr(by)` on `v` must give: the new value, or `None` for
    /// overflow (out of the type, or of the i64 incr returns).
    fn expect(self, v: i128, by: i64) -> Option<i64> {
        let (min, max) = self.bounds();
        let next = v + i128::from(by);
        if next < min || next > max {
            return None;
        }
        i64::try_from(next).ok()
    }
}

fn check_incr(
    main: &Store,
    child: &Store,
    key: &str,
    t: Counter,
    v: i128,
    by: i64,
) -> Result<(), String> {
    t.set(main, key, v);
    let got = child.incr(key, by);
    let kept = main.get_raw(key).map_err(|e| e.to_string())?;
    match (t.expect(v, by), got) {
        (Some(want), Ok(n)) if n == want => {
            if kept.as_deref() != Some(&t.bytes(i128::from(want))[..]) {
                return Err(format!(
                    "{t:?} {v} + {by}: the value lost its type: {kept:?}"
                ));
            }
            Ok(())
        }
        (None, Err(Error::Overflow { key: k, by: b })) if k == key && b == by => {
            if kept.as_deref() != Some(&t.bytes(v)[..]) {
                return Err(format!("{t:?} {v} + {by}: an overflow changed the value"));
            }
            Ok(())
        }
        (want, got) => Err(format!("{t:?} {v} + {by}: expected {want:?}, got {got:?}")),
    }
}

/// `incr` on every integer type: within the type's range, failing with
/// `Overflow` at each bound, the value keeping its type; anything else is
/// `NotAnInteger`.
pub fn incr_works_on_every_integer_type(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("counter"));
    // The cases.
    main.set("count", &5u64).unwrap();
    assert_eq!(child.incr("count", 1).unwrap(), 6);
    assert_eq!(main.get::<u64>("count").unwrap(), Some(6));
    main.set("small", &3usize).unwrap();
    assert!(matches!(
        child.incr("small", -4),
        Err(Error::Overflow { .. })
    ));
    assert_eq!(main.get::<usize>("small").unwrap(), Some(3));
    // Each bound of each type.
    for t in COUNTERS {
        let (min, max) = t.bounds();
        for (v, by) in [
            (max, 1),
            (max, 0),
            (min, -1),
            (min, 0),
            (min, 1),
            (max, -1),
            (0, 1),
        ] {
            check_incr(&main, &child, "bound", t, v, by).unwrap();
        }
    }
    // A u64 past i64::MAX cannot be returned.
    main.set("big", &(i64::MAX as u64)).unwrap();
    assert!(matches!(child.incr("big", 1), Err(Error::Overflow { .. })));
    // Not integers of at most 64 bits.
    for (key, bytes) in [
        ("f", yuki_channel::codec::mark::encode(&1.0f64)),
        ("w", yuki_channel::codec::mark::encode(&1u128)),
        ("s", yuki_channel::codec::mark::encode("1")),
        ("o", yuki_channel::codec::mark::encode(&Some(1i64))),
    ] {
        let bytes = bytes.unwrap();
        main.set_raw(key, &bytes).unwrap();
        assert_eq!(
            child.incr(key, 1).unwrap_err(),
            Error::NotAnInteger { key: key.into() }
        );
        assert_eq!(main.get_raw(key).unwrap(), Some(bytes));
    }
    // Any start and step.
    let counters = proptest::sample::select(&COUNTERS[..]);
    let cases = (counters, any::<u64>(), small_ints()).prop_map(|(t, pick, by)| {
        let (min, max) = t.bounds();
        let span = (max - min) as u128 + 1;
        (t, min + (u128::from(pick) % span) as i128, by)
    });
    let result = runner(96).run(&cases, |(t, v, by)| {
        check_incr(&main, &child, "any", t, v, by).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
