//! One behavioural suite for every way of reaching a store: the same test
//! bodies run against a local store, over the in-thread transport and
//! across processes. A harness supplies main's store and children's.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use yuki_storage::{Batch, Change, Error, MAX_KEY_LEN, MAX_VALUE_LEN, Outcome, Store};

mod ttl;
mod typed;
pub use ttl::{
    keys_matching_reads_globs_as_redis_does, ttl_counts_down_and_expired_keys_are_missing,
    ttl_expire_and_persist_answer_as_redis_does,
};
pub use typed::{incr_works_on_every_integer_type, values_are_read_as_written_or_refused};

/// A bound on every wait of the suite.
pub const WAIT: Duration = Duration::from_secs(10);

/// Supplies stores for one test.
pub trait Harness {
    /// The store in main, which owns the data.
    fn main(&self) -> Store;
    /// The store of a child (a new one for each name).
    fn child(&self, name: &str) -> Store;
    /// Moves the clock main's store reads for expiry.
    fn advance(&self, by: Duration);
}

/// Generates one `#[test]` per suite body for a harness constructor.
#[allow(unused_macros)]
macro_rules! store_suite {
    ($make:expr) => {
        store_suite!(@tests $make;
            set_get_and_types, get_or_and_raw, delete_reports_existence,
            contains_keys_len_clear, get_all_is_a_typed_snapshot_copy, incr_counts,
            compare_and_swap_swaps_only_on_match, ttl_expires_on_every_read,
            batch_applies_in_order_with_one_result_each, invalid_input_is_refused,
            writes_are_visible_everywhere_at_once, watch_sees_every_change_in_order,
            batches_are_atomic_under_snapshots, concurrent_incr_loses_nothing,
            async_forms_match_blocking_forms, values_are_read_as_written_or_refused,
            incr_works_on_every_integer_type, ttl_expire_and_persist_answer_as_redis_does,
            ttl_counts_down_and_expired_keys_are_missing,
            keys_matching_reads_globs_as_redis_does);
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let harness = $make;
                suite::$name(&harness);
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use store_suite;

/// One test body of the suite.
pub type Body = fn(&dyn Harness);

/// Every body of the suite, for running them all in one process.
pub const ALL: &[(&str, Body)] = &[
    ("set_get_and_types", set_get_and_types),
    ("get_or_and_raw", get_or_and_raw),
    ("delete_reports_existence", delete_reports_existence),
    ("contains_keys_len_clear", contains_keys_len_clear),
    (
        "get_all_is_a_typed_snapshot_copy",
        get_all_is_a_typed_snapshot_copy,
    ),
    ("incr_counts", incr_counts),
    (
        "compare_and_swap_swaps_only_on_match",
        compare_and_swap_swaps_only_on_match,
    ),
    ("ttl_expires_on_every_read", ttl_expires_on_every_read),
    (
        "batch_applies_in_order_with_one_result_each",
        batch_applies_in_order_with_one_result_each,
    ),
    ("invalid_input_is_refused", invalid_input_is_refused),
    (
        "writes_are_visible_everywhere_at_once",
        writes_are_visible_everywhere_at_once,
    ),
    (
        "watch_sees_every_change_in_order",
        watch_sees_every_change_in_order,
    ),
    (
        "batches_are_atomic_under_snapshots",
        batches_are_atomic_under_snapshots,
    ),
    (
        "concurrent_incr_loses_nothing",
        concurrent_incr_loses_nothing,
    ),
    (
        "values_are_read_as_written_or_refused",
        values_are_read_as_written_or_refused,
    ),
    (
        "incr_works_on_every_integer_type",
        incr_works_on_every_integer_type,
    ),
    (
        "async_forms_match_blocking_forms",
        async_forms_match_blocking_forms,
    ),
    (
        "ttl_expire_and_persist_answer_as_redis_does",
        ttl_expire_and_persist_answer_as_redis_does,
    ),
    (
        "ttl_counts_down_and_expired_keys_are_missing",
        ttl_counts_down_and_expired_keys_are_missing,
    ),
    (
        "keys_matching_reads_globs_as_redis_does",
        keys_matching_reads_globs_as_redis_does,
    ),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    name: String,
    age: u32,
    tags: Vec<String>,
}

fn ann() -> User {
    User {
        name: "ann".into(),
        age: 31,
        tags: vec!["admin".into()],
    }
}

pub fn set_get_and_types(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    child.set("user.1", &ann()).unwrap();
    child.set("n", &7u8).unwrap();
    child.set("s", "text").unwrap();
    assert_eq!(main.get::<User>("user.1").unwrap(), Some(ann()));
    assert_eq!(child.get::<User>("user.1").unwrap(), Some(ann()));
    assert_eq!(child.get::<u8>("n").unwrap(), Some(7));
    assert_eq!(child.get::<String>("s").unwrap().as_deref(), Some("text"));
    assert_eq!(child.get::<User>("missing").unwrap(), None);
    // Overwriting with another size and the same size.
    main.set("s", "longer text").unwrap();
    assert_eq!(
        child.get::<String>("s").unwrap().as_deref(),
        Some("longer text")
    );
    main.set("s", "other text!").unwrap();
    assert_eq!(
        child.get::<String>("s").unwrap().as_deref(),
        Some("other text!")
    );

    let err = child.get::<u64>("user.1").unwrap_err();
    match &err {
        Error::WrongType { key, type_name, .. } => {
            assert_eq!(key, "user.1");
            assert_eq!(*type_name, "u64");
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    assert!(err.to_string().contains("user.1") && err.to_string().contains("u64"));

    // Bytes that are not UTF-8 are a byte string but no String, for main
    // and a child alike.
    let bytes = serde_bytes::Bytes::new(&[0xff, 0xfe]);
    child.set("bytes", bytes).unwrap();
    for store in [&main, &child] {
        let got = store.get::<serde_bytes::ByteBuf>("bytes").unwrap();
        assert_eq!(got.as_deref().map(|b| &b[..]), Some(&[0xff, 0xfe][..]));
        match store.get::<String>("bytes").unwrap_err() {
            Error::WrongType { key, type_name, .. } => {
                assert_eq!(
                    (key.as_str(), type_name),
                    ("bytes", "alloc::string::String")
                );
            }
            other => panic!("expected WrongType, got {other:?}"),
        }
    }
}

pub fn get_or_and_raw(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    assert_eq!(child.get_or("k", 5i32).unwrap(), 5);
    main.set("k", &9i32).unwrap();
    assert_eq!(child.get_or("k", 5i32).unwrap(), 9);
    let raw = child.get_raw("k").unwrap().unwrap();
    assert_eq!(raw, yuki_channel::codec::mark::encode(&9i32).unwrap());
    assert_eq!(child.get_raw("none").unwrap(), None);
    assert!(matches!(
        child.get_or("k", String::new()),
        Err(Error::WrongType { .. })
    ));
}

pub fn delete_reports_existence(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    assert!(!child.delete("k").unwrap());
    main.set("k", &1).unwrap();
    assert!(child.delete("k").unwrap());
    assert!(!child.delete("k").unwrap());
    assert_eq!(main.get::<i32>("k").unwrap(), None);
}

pub fn contains_keys_len_clear(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    assert!(child.is_empty().unwrap());
    for k in ["a.1", "a.2", "b.1"] {
        child.set(k, &0).unwrap();
    }
    assert!(child.contains("a.1").unwrap());
    assert!(!child.contains("c").unwrap());
    assert_eq!(child.len().unwrap(), 3);
    assert_eq!(main.len().unwrap(), 3);
    assert_eq!(child.keys("a.").unwrap(), vec!["a.1", "a.2"]);
    assert_eq!(child.keys("").unwrap(), vec!["a.1", "a.2", "b.1"]);
    assert!(child.keys("zzz").unwrap().is_empty());
    assert_eq!(child.clear().unwrap(), 3);
    assert_eq!(main.len().unwrap(), 0);
    assert_eq!(main.clear().unwrap(), 0);
}

pub fn get_all_is_a_typed_snapshot_copy(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    main.set("x", &1i64).unwrap();
    main.set("y", &2i64).unwrap();
    let mut all: BTreeMap<String, i64> = child.get_all().unwrap();
    assert_eq!(all, BTreeMap::from([("x".into(), 1), ("y".into(), 2)]));
    // A copy: changing it changes nothing in the store, and the reverse.
    all.insert("z".into(), 3);
    main.set("x", &10i64).unwrap();
    assert_eq!(main.get::<i64>("z").unwrap(), None);
    assert_eq!(all["x"], 1);
    assert_eq!(main.get_all::<i64>().unwrap()["x"], 10);

    main.set("b-text", "hello").unwrap();
    main.set("c-text", "later").unwrap();
    match child.get_all::<i64>().unwrap_err() {
        Error::WrongType { key, .. } => assert_eq!(key, "b-text"),
        other => panic!("expected WrongType, got {other:?}"),
    }
    let raw = child.get_all_raw().unwrap();
    assert_eq!(raw.len(), 4);
    assert_eq!(
        raw["b-text"],
        yuki_channel::codec::mark::encode("hello").unwrap()
    );
}

pub fn incr_counts(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    assert_eq!(child.incr("n", 5).unwrap(), 5);
    assert_eq!(child.incr("n", -7).unwrap(), -2);
    assert_eq!(main.get::<i64>("n").unwrap(), Some(-2));
    main.set("n", &40i64).unwrap();
    assert_eq!(child.incr("n", 2).unwrap(), 42);

    main.set("t", "text").unwrap();
    assert_eq!(
        child.incr("t", 1).unwrap_err(),
        Error::NotAnInteger { key: "t".into() }
    );
    assert_eq!(main.get::<String>("t").unwrap().as_deref(), Some("text"));

    main.set("max", &i64::MAX).unwrap();
    assert_eq!(
        child.incr("max", 1).unwrap_err(),
        Error::Overflow {
            key: "max".into(),
            by: 1
        }
    );
    assert_eq!(main.get::<i64>("max").unwrap(), Some(i64::MAX));
}

pub fn compare_and_swap_swaps_only_on_match(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    // Absent -> create.
    assert!(child.compare_and_swap::<i32>("k", None, Some(&1)).unwrap());
    assert!(!child.compare_and_swap::<i32>("k", None, Some(&2)).unwrap());
    assert!(!child.compare_and_swap("k", Some(&5), Some(&2)).unwrap());
    assert_eq!(main.get::<i32>("k").unwrap(), Some(1));
    assert!(child.compare_and_swap("k", Some(&1), Some(&2)).unwrap());
    assert_eq!(main.get::<i32>("k").unwrap(), Some(2));
    // Delete on None.
    assert!(child.compare_and_swap("k", Some(&2), None).unwrap());
    assert!(!main.contains("k").unwrap());
    assert!(child.compare_and_swap::<i32>("k", None, None).unwrap());
    assert!(!main.contains("k").unwrap());
}

pub fn ttl_expires_on_every_read(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    child
        .set_with_ttl("session", "token", Duration::from_secs(10))
        .unwrap();
    child
        .set_with_ttl("counter", &1i64, Duration::from_secs(10))
        .unwrap();
    child.set("forever", &0).unwrap();
    child
        .set_with_ttl("renewed", &0, Duration::from_secs(10))
        .unwrap();
    child.set("renewed", &1).unwrap(); // a plain set removes the deadline
    assert_eq!(child.incr("counter", 1).unwrap(), 2); // incr keeps it

    h.advance(Duration::from_secs(9));
    assert_eq!(
        child.get::<String>("session").unwrap().as_deref(),
        Some("token")
    );
    assert_eq!(main.len().unwrap(), 4);

    h.advance(Duration::from_secs(1));
    for store in [&main, &child] {
        assert_eq!(store.get::<String>("session").unwrap(), None);
        assert!(!store.contains("session").unwrap());
        assert!(!store.contains("counter").unwrap());
        assert_eq!(store.len().unwrap(), 2);
        assert_eq!(store.keys("").unwrap(), vec!["forever", "renewed"]);
        assert_eq!(store.get_all_raw().unwrap().len(), 2);
    }
    assert!(!child.delete("session").unwrap());
    assert!(
        child
            .compare_and_swap::<i64>("counter", None, Some(&5))
            .unwrap()
    );
    assert_eq!(child.incr("counter", 1).unwrap(), 6);
    assert_eq!(child.purge_expired().unwrap(), 0);

    child.set_with_ttl("gone", &0, Duration::ZERO).unwrap();
    assert_eq!(main.get::<i32>("gone").unwrap(), None);
    assert_eq!(child.purge_expired().unwrap(), 1);
    assert_eq!(main.len().unwrap(), 3);
}

pub fn batch_applies_in_order_with_one_result_each(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    main.set("text", "t").unwrap();
    main.set("old", &1).unwrap();
    let mut b = Batch::new();
    b.set("a", &1i64)
        .incr("a", 2)
        .get("a")
        .contains("a")
        .delete("old")
        .delete("old")
        .incr("text", 1)
        .compare_and_swap("a", Some(&3i64), Some(&4i64))
        .set_with_ttl("short", &0i64, Duration::from_secs(1))
        .get("missing");
    assert_eq!(b.len(), 10);
    let out = child.batch(&b).unwrap();
    assert_eq!(out.len(), 10);
    assert_eq!(out[0], Outcome::Set);
    assert_eq!(out[1], Outcome::Incremented(3));
    assert_eq!(out[2].value::<i64>().unwrap(), Some(3));
    assert_eq!(out[3], Outcome::Contains(true));
    assert_eq!(out[4], Outcome::Deleted(true));
    assert_eq!(out[5], Outcome::Deleted(false));
    assert_eq!(
        out[6],
        Outcome::Failed(Error::NotAnInteger { key: "text".into() })
    );
    assert_eq!(out[7], Outcome::Swapped(true));
    assert_eq!(out[9].value::<i64>().unwrap(), None);
    assert_eq!(main.get::<i64>("a").unwrap(), Some(4));
    h.advance(Duration::from_secs(1));
    assert!(!main.contains("short").unwrap());
    assert!(child.batch(&Batch::new()).unwrap().is_empty());
    assert!(matches!(
        out[2].value::<String>(),
        Err(Error::WrongType { .. })
    ));
}

pub fn invalid_input_is_refused(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    for store in [&main, &child] {
        assert_eq!(store.set("", &1), Err(Error::EmptyKey));
        assert_eq!(store.get::<i32>(""), Err(Error::EmptyKey));
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert!(matches!(
            store.set(&long, &1),
            Err(Error::KeyTooLong { .. })
        ));
        assert!(matches!(store.keys(&long), Err(Error::KeyTooLong { .. })));
        assert!(matches!(store.watch(&long), Err(Error::KeyTooLong { .. })));
        let big = serde_bytes::ByteBuf::from(vec![0u8; MAX_VALUE_LEN + 1]);
        match store.set("big", &big) {
            Err(Error::ValueTooLarge { key, max, .. }) => {
                assert_eq!(key, "big");
                assert_eq!(max, MAX_VALUE_LEN);
            }
            other => panic!("expected ValueTooLarge, got {other:?}"),
        }
        let mut b = Batch::new();
        b.set("ok", &1).set("", &2).set("never", &3);
        match store.batch(&b) {
            Err(Error::InvalidBatch { index, source }) => {
                assert_eq!(index, 1);
                assert_eq!(*source, Error::EmptyKey);
            }
            other => panic!("expected InvalidBatch, got {other:?}"),
        }
    }
    // Nothing of a refused write or batch was applied.
    assert_eq!(main.len().unwrap(), 0);
    // A key at the limit is fine.
    let max = "k".repeat(MAX_KEY_LEN);
    child.set(&max, &1).unwrap();
    assert_eq!(main.get::<i32>(&max).unwrap(), Some(1));
}

pub fn writes_are_visible_everywhere_at_once(h: &dyn Harness) {
    let (main, a, b) = (h.main(), h.child("a"), h.child("b"));
    for i in 0..100i64 {
        let writer = [&main, &a, &b][i as usize % 3];
        writer.set("k", &i).unwrap();
        for reader in [&main, &a, &b] {
            assert_eq!(reader.get::<i64>("k").unwrap(), Some(i));
        }
    }
}

pub fn watch_sees_every_change_in_order(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    let watch = child.watch("w.").unwrap();
    let main_watch = main.watch("").unwrap();
    main.set("w.a", &1i64).unwrap();
    child.set("other", &0).unwrap();
    child.incr("w.a", 1).unwrap();
    child.delete("w.a").unwrap();
    let mut b = Batch::new();
    b.set("w.b", "x").set("w.c", "y").delete("w.b");
    child.batch(&b).unwrap();
    child
        .set_with_ttl("w.t", &0i64, Duration::from_secs(1))
        .unwrap();
    h.advance(Duration::from_secs(1));
    child.purge_expired().unwrap();
    child.clear().unwrap();

    let expected: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("w.a", Some(enc(&1i64))),
        ("w.a", Some(enc(&2i64))),
        ("w.a", None),
        ("w.b", Some(enc("x"))),
        ("w.c", Some(enc("y"))),
        ("w.b", None),
        ("w.t", Some(enc(&0i64))),
        ("w.t", None),
        ("w.c", None),
    ];
    for (key, value) in &expected {
        let change = watch.recv_timeout(WAIT).unwrap();
        assert_eq!(
            change,
            Change {
                key: (*key).into(),
                value: value.clone()
            }
        );
    }
    assert_eq!(watch.try_recv(), Err(Error::Empty));
    // Main's own watcher saw the same, plus the key outside the prefix.
    let seen: Vec<String> = (0..expected.len() + 2)
        .map(|_| main_watch.recv_timeout(WAIT).unwrap().key)
        .collect();
    assert_eq!(seen[1], "other");
    // clear removes "other" and "w.c" together, in no particular order.
    let mut cleared = seen[seen.len() - 2..].to_vec();
    cleared.sort();
    assert_eq!(cleared, ["other", "w.c"]);
    assert_eq!(main_watch.try_recv(), Err(Error::Empty));

    // After the watch is dropped, changes are no longer sent.
    drop(watch);
    let again = child.watch("w.").unwrap();
    main.set("w.z", &1).unwrap();
    assert_eq!(again.recv_timeout(WAIT).unwrap().key, "w.z");
    assert_eq!(again.try_recv(), Err(Error::Empty));
}

fn enc<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    yuki_channel::codec::mark::encode(v).unwrap()
}

pub fn batches_are_atomic_under_snapshots(h: &dyn Harness) {
    let main = h.main();
    let (writer, reader) = (h.child("w"), h.child("r"));
    let keys: Vec<String> = (0..16).map(|i| format!("k{i}")).collect();
    let rounds = 300i64;
    let start = Arc::new(Barrier::new(2));
    let s = start.clone();
    let wkeys = keys.clone();
    let t = std::thread::spawn(move || {
        s.wait();
        for i in 0..rounds {
            let mut b = Batch::new();
            for k in &wkeys {
                b.set(k, &i);
            }
            writer.batch(&b).unwrap();
        }
    });
    start.wait();
    let mut snapshots = 0;
    while !t.is_finished() || snapshots == 0 {
        let all: BTreeMap<String, i64> = reader.get_all().unwrap();
        if !all.is_empty() {
            assert_eq!(all.len(), keys.len(), "a batch was seen half applied");
            let first = all.values().next().copied();
            assert!(
                all.values().all(|v| Some(*v) == first),
                "mixed batches: {all:?}"
            );
        }
        snapshots += 1;
    }
    t.join().unwrap();
    assert!(
        main.get_all::<i64>()
            .unwrap()
            .values()
            .all(|v| *v == rounds - 1)
    );
}

pub fn concurrent_incr_loses_nothing(h: &dyn Harness) {
    let main = h.main();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = if t % 2 == 0 {
                main.clone()
            } else {
                h.child(&format!("c{t}"))
            };
            std::thread::spawn(move || {
                for _ in 0..250 {
                    store.incr("n", 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(main.get::<i64>("n").unwrap(), Some(1000));
}

pub fn async_forms_match_blocking_forms(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for s in [&main, &child] {
            s.clear_async().await.unwrap();
            let watch = s.watch_async("").await.unwrap();
            s.set_async("a", &ann()).await.unwrap();
            assert_eq!(s.get_async::<User>("a").await.unwrap(), Some(ann()));
            assert_eq!(s.get_or_async("b", 3u8).await.unwrap(), 3);
            assert!(s.get_raw_async("a").await.unwrap().is_some());
            assert!(s.contains_async("a").await.unwrap());
            assert_eq!(s.incr_async("n", 2).await.unwrap(), 2);
            assert!(matches!(
                s.incr_async("a", 1).await,
                Err(Error::NotAnInteger { .. })
            ));
            assert!(
                s.compare_and_swap_async("n", Some(&2i64), Some(&3i64))
                    .await
                    .unwrap()
            );
            assert_eq!(s.keys_async("").await.unwrap(), vec!["a", "n"]);
            assert_eq!(s.len_async().await.unwrap(), 2);
            assert_eq!(s.get_all_raw_async().await.unwrap().len(), 2);
            assert!(s.get_all_async::<i64>().await.is_err());
            s.set_with_ttl_async("t", &1i64, Duration::from_secs(1))
                .await
                .unwrap();
            h.advance(Duration::from_secs(1));
            assert_eq!(s.purge_expired_async().await.unwrap(), 1);
            let mut b = Batch::new();
            b.get("n").delete("a").incr("n", 1).contains("a");
            let out = s.batch_async(&b).await.unwrap();
            assert_eq!(out[0].value::<i64>().unwrap(), Some(3));
            assert_eq!(
                &out[1..],
                &[
                    Outcome::Deleted(true),
                    Outcome::Incremented(4),
                    Outcome::Contains(false)
                ]
            );
            assert!(!s.delete_async("a").await.unwrap());
            assert_eq!(s.clear_async().await.unwrap(), 1);
            // The async watch saw every change, first the set of "a".
            let first = watch.recv_async().await.unwrap();
            assert_eq!(first.key, "a");
            let mut n = 1;
            loop {
                match watch.try_recv() {
                    Ok(_) => n += 1,
                    Err(Error::Empty) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(n, 8, "set a, n=2, n=3, t, t expired, del a, n=4, clear n");
        }
    });
}
