use super::*;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Other {
    x: i32,
    y: i32,
}

fn marked<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    encode(v).unwrap()
}

#[test]
fn integers_convert_exactly_or_are_refused_naming_both_types() {
    let seven = marked(&7i64);
    assert_eq!(seven, [I64, 14]);
    assert_eq!(decode::<u64>(&seven).unwrap(), 7);
    assert_eq!(decode::<u8>(&seven).unwrap(), 7);
    assert_eq!(decode::<i128>(&seven).unwrap(), 7);
    let minus = marked(&-1i32);
    let e = decode::<u64>(&minus).unwrap_err();
    assert_eq!((e.written.as_str(), e.asked), ("i32", "u64"));
    assert!(e.reason.contains("-1"), "{e}");
    let big = marked(&u64::MAX);
    assert!(decode::<i64>(&big).is_err());
    assert_eq!(decode::<u128>(&big).unwrap(), u128::from(u64::MAX));
    assert_eq!(decode::<usize>(&marked(&5usize)).unwrap(), 5);
    // Kinds never mix.
    assert!(decode::<f64>(&seven).is_err());
    assert!(decode::<String>(&seven).is_err());
    assert!(decode::<bool>(&marked(&1u8)).is_err());
}

#[test]
fn floats_narrow_only_when_exact() {
    assert_eq!(decode::<f64>(&marked(&1.5f32)).unwrap(), 1.5);
    assert_eq!(decode::<f32>(&marked(&1.5f64)).unwrap(), 1.5);
    assert!(decode::<f32>(&marked(&0.1f64)).is_err());
    assert!(decode::<f32>(&marked(&f64::NAN)).unwrap().is_nan());
    assert_eq!(
        decode::<f32>(&marked(&f64::INFINITY)).unwrap(),
        f32::INFINITY
    );
    assert!(decode::<i64>(&marked(&1.0f64)).is_err());
}

#[test]
fn strings_are_any_string_type_and_nothing_else() {
    let text = marked("hello");
    assert_eq!(text[0], STR);
    assert_eq!(&text[1..], &crate::codec::encode("hello").unwrap()[..]);
    assert_eq!(decode::<String>(&text).unwrap(), "hello");
    assert_eq!(&*decode::<Box<str>>(&text).unwrap(), "hello");
    assert_eq!(decode::<&str>(&text).unwrap(), "hello");
    assert!(decode::<ByteBuf>(&text).is_err());
    assert!(decode::<char>(&marked("x")).is_err());
    assert!(decode::<String>(&marked(&'x')).is_err());
    let bytes = marked(&ByteBuf::from(b"abc".to_vec()));
    assert_eq!(bytes[0], BYTES);
    assert_eq!(decode::<ByteBuf>(&bytes).unwrap().into_vec(), b"abc");
    assert!(decode::<String>(&bytes).is_err());
    assert!(decode::<Vec<u8>>(&bytes).is_err());
    assert!(decode::<String>(&[STR, 2, 0xff, 0xfe]).is_err());
}

#[test]
fn options_are_read_as_their_contents_are() {
    assert_eq!(
        decode::<Option<u64>>(&marked(&Some(7i64))).unwrap(),
        Some(7)
    );
    assert!(decode::<Option<u64>>(&marked(&Some(-7i64))).is_err());
    assert_eq!(
        decode::<Option<String>>(&marked(&None::<u8>)).unwrap(),
        None
    );
    assert!(decode::<u64>(&marked(&Some(7u64))).is_err());
    assert!(decode::<Option<u64>>(&marked(&7u64)).is_err());
    assert_eq!(
        decode::<Option<Option<u8>>>(&marked(&Some(None::<u8>))).unwrap(),
        Some(None)
    );
    let p = Some(Point { x: 1, y: 2 });
    let bytes = marked(&p);
    assert_eq!(bytes[0], NAMED);
    assert_eq!(decode::<Option<Point>>(&bytes).unwrap(), p);
    assert!(decode::<Option<Other>>(&bytes).is_err());
    assert_eq!(written(&marked(&Some(Some(1u8)))), "Option<Option<u8>>");
}

#[test]
fn other_types_are_read_only_under_their_own_name() {
    let p = Point { x: 1, y: -2 };
    let bytes = marked(&p);
    assert_eq!(decode::<Point>(&bytes).unwrap(), p);
    let e = decode::<Other>(&bytes).unwrap_err();
    assert_eq!(e.written, "Point");
    assert!(e.asked.ends_with("Other"), "{e}");
    assert!(decode::<(i32, i32)>(&bytes).is_err());
    let v = marked(&vec![1u8, 2]);
    assert_eq!(decode::<Vec<u8>>(&v).unwrap(), vec![1, 2]);
    assert!(decode::<Vec<i8>>(&v).is_err());
    assert!(decode::<ByteBuf>(&v).is_err());
    assert!(decode::<Point>(&marked(&7u8)).is_err());
    assert!(decode::<u8>(&bytes).is_err());
}

#[test]
fn malformed_input_is_refused_without_panicking() {
    let deep = vec![SOME; 10_000];
    assert!(decode::<Option<u8>>(&deep).is_err());
    assert_eq!(written(&[]), "nothing (no bytes)");
    for bytes in [
        &[][..],
        &[0],
        &[99],
        &[NAMED],
        &[NAMED, 5, b'a'],
        &[UNIT, 0],
        &[I64],
    ] {
        assert!(decode::<u8>(bytes).is_err(), "{bytes:?}");
        assert!(decode::<Point>(bytes).is_err(), "{bytes:?}");
        let _ = written(bytes);
    }
}

#[test]
fn integers_add_within_their_type() {
    for (bytes, t) in [
        (marked(&0u8), IntType::U8),
        (marked(&0u16), IntType::U16),
        (marked(&0u32), IntType::U32),
        (marked(&0u64), IntType::U64),
        (marked(&0usize), IntType::U64),
        (marked(&0i8), IntType::I8),
        (marked(&0i16), IntType::I16),
        (marked(&0i32), IntType::I32),
        (marked(&0i64), IntType::I64),
        (marked(&0isize), IntType::I64),
    ] {
        let n = Integer::read(&bytes).unwrap();
        assert_eq!(n.int_type(), t);
        let (min, max) = t.bounds();
        let top = Integer::new(t, max).unwrap();
        assert!(top.checked_add(1).is_none());
        let bottom = Integer::new(t, min).unwrap();
        assert!(bottom.checked_add(-1).is_none());
        let mut out = Vec::new();
        top.encode_into(&mut out);
        assert_eq!(Integer::read(&out), Some(top));
        assert_eq!(decode::<i128>(&out).unwrap(), max);
    }
    assert!(Integer::read(&marked(&1u128)).is_none());
    assert!(Integer::read(&marked("1")).is_none());
    assert!(Integer::read(&marked(&1.0f64)).is_none());
}

#[test]
fn references_and_smart_pointers_around_a_value_are_not_part_of_its_name() {
    use std::borrow::Cow;
    let p = Point { x: 1, y: 2 };
    let plain = marked(&p);
    assert_eq!(marked(&&p), plain);
    assert_eq!(marked(&Box::new(Point { x: 1, y: 2 })), plain);
    assert_eq!(marked(&Cow::Borrowed(&p)), plain);
    assert_eq!(*decode::<Box<Point>>(&plain).unwrap(), p);
    // serde's `rc` feature gives Arc and Rc the same encoding.
    assert_eq!(bare("alloc::sync::Arc<alloc::rc::Rc<x::P>>"), "x::P");
    assert_eq!(bare("&&mut alloc::boxed::Box<x::P>"), "x::P");
    assert_eq!(bare("alloc::borrow::Cow<'_, x::P>"), "x::P");
    assert_eq!(bare("&'_ x::P"), "x::P");
    assert_eq!(
        bare("(alloc::boxed::Box<x::P>, u8)"),
        "(alloc::boxed::Box<x::P>, u8)"
    );
    // Inside the value they are part of the name.
    assert!(decode::<Vec<Point>>(&marked(&vec![Box::new(Point { x: 1, y: 2 })])).is_err());
}

#[test]
fn a_named_value_carries_a_fingerprint_and_its_short_name() {
    let bytes = marked(&Some(vec![Point { x: 1, y: 2 }]));
    assert_eq!(bytes[0], NAMED);
    assert_eq!(written(&bytes), "Option<Vec<Point>>");
    let (print, name, _) = named(&bytes[1..]).unwrap();
    assert_eq!(name, b"Option<Vec<Point>>");
    assert_eq!(print, fingerprint(type_name::<Option<Vec<Point>>>()));
    assert_eq!(written(&marked(&(1u8, String::new()))), "(u8, String)");
    // Another type of the same short name is told apart by its fingerprint.
    mod elsewhere {
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        pub(super) struct Point {
            pub(super) x: i32,
            pub(super) y: i32,
        }
    }
    let e = decode::<elsewhere::Point>(&marked(&Point { x: 1, y: 2 })).unwrap_err();
    assert_eq!(e.written, "Point");
    assert!(e.asked.ends_with("elsewhere::Point"), "{e}");
    assert!(e.reason.contains("same name"), "{e}");
    // A cut mark is refused.
    for cut in 1..bytes.len().min(20) {
        assert!(decode::<Option<Vec<Point>>>(&bytes[..cut]).is_err());
    }
}
