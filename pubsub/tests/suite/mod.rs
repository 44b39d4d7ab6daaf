//! One behavioural suite for every backend of `PubSub`: the same test bodies
//! run in one process (`local.rs`), over the in-thread transport
//! (`inthread.rs`), inside a child process over a real link (`ipc.rs`) and on
//! a Redis server (`redis.rs`). A harness supplies the handles of main and of
//! the children; in one process they may all be one.
//!
//! Delivery may be asynchronous (another process, a Redis server), so the
//! bodies wait for what must arrive and prove that nothing else did with an
//! end marker published last: delivery is FIFO per publisher per
//! subscription, so once the marker is in, everything before it is too.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use yuki_pubsub::{Error, Message, PubSub, Subscription};

/// A bound on every wait of the suite.
pub const WAIT: Duration = Duration::from_secs(20);

/// Every backend under `pubsub/src/backend/`, with the test files that run
/// the suite over it (checked by `local.rs`).
pub const BACKENDS: &[(&str, &[&str])] = &[
    ("local", &["local"]),
    ("transport", &["inthread", "ipc"]),
    ("redis", &["redis"]),
];

/// Supplies the pub/sub handles of one test.
pub trait Harness {
    /// Main's handle.
    fn main(&self) -> PubSub;
    /// The handle of child `index` (0 to 4): the same state for the same
    /// index; in one process, main's.
    fn child(&self, index: usize) -> PubSub;
    /// Whether `publish` counts subscriptions; Redis counts the subscribed
    /// connections (one per channel or glob each).
    fn counts_subscriptions(&self) -> bool {
        true
    }
}

/// Calls `$then!($($args)*; body, body, ...)` with every body of the suite:
/// the one list the generated tests and [`ALL`] are made from.
macro_rules! with_bodies {
    ($($then:ident)::+ !($($args:tt)*)) => {
        $($then)::+! { $($args)*;
            every_receive_form, invalid_topics_and_patterns_are_refused,
            fan_out_from_main_exact_and_wildcard, fan_out_from_a_child_reaches_everyone,
            dropping_the_last_subscription_stops_delivery,
            per_publisher_order_with_concurrent_publishers,
            a_full_subscription_loses_the_oldest_and_learns_how_many,
            a_message_of_another_type_is_the_same_value_or_an_error_naming_both,
            sync_handlers_survive_a_panicking_neighbour, async_handlers_run_in_order,
            async_receive_stream_and_publish, many_subscriptions_count_exactly,
            batches_keep_order_and_count_deliveries, a_message_that_cannot_be_encoded_is_an_error }
    };
}
#[allow(unused_imports)]
pub(crate) use with_bodies;

/// Generates one `#[test]` per body for a harness constructor, each with the
/// attribute given first, if any (such as `#[ignore = "..."]`).
#[allow(unused_macros)]
macro_rules! pubsub_suite {
    (#[$attr:meta] $make:expr) => {
        suite::with_bodies!(suite::pubsub_suite!(@tests [$attr] $make));
    };
    ($make:expr) => {
        suite::pubsub_suite!(#[cfg(all())] $make);
    };
    (@tests [$attr:meta] $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            #[$attr]
            fn $name() {
                let harness = $make;
                suite::$name(&harness);
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use pubsub_suite;

/// One test body of the suite.
pub type Body = fn(&dyn Harness);

macro_rules! all {
    (; $($name:ident),* $(,)?) => {
        &[$((stringify!($name), $name as Body)),*]
    };
}

/// Every body of the suite, for running them all in one process.
pub const ALL: &[(&str, Body)] = with_bodies!(all!());

/// The next message, within [`WAIT`].
pub fn next<M: DeserializeOwned>(s: &Subscription<M>) -> M {
    s.recv_timeout(WAIT)
        .expect("a message in time")
        .into_value()
}

/// Checks what a publish reported: `want` subscriptions, or on a backend
/// that counts connections, at most that many and none only when `want` is.
pub fn reached(h: &dyn Harness, got: usize, want: usize) {
    if h.counts_subscriptions() {
        assert_eq!(got, want, "deliveries");
    } else {
        assert!(got <= want && (got == 0) == (want == 0), "{got} for {want}");
    }
}

/// Publishes with `publish` until it reports `want` (a subscription made or
/// dropped elsewhere takes effect after the call that made it returned on
/// some backends); the reports before must be at least `want`.
pub fn reached_eventually(h: &dyn Harness, want: usize, publish: impl Fn() -> usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = publish();
        let settled = if h.counts_subscriptions() {
            got == want
        } else {
            (got == 0) == (want == 0)
        };
        if settled {
            return reached(h, got, want);
        }
        assert!(
            Instant::now() < deadline,
            "still {got} deliveries, not {want}"
        );
        thread::yield_now();
    }
}

pub fn every_receive_form(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child(0));
    let sub = child.subscribe::<u32>("a.b").unwrap();
    assert_eq!(sub.pattern().as_str(), "a.b");
    assert_eq!(sub.capacity(), yuki_pubsub::DEFAULT_CAPACITY);
    assert_eq!(sub.try_recv().unwrap_err(), Error::Empty);
    let short = Duration::from_millis(10);
    assert_eq!(sub.recv_timeout(short).unwrap_err(), Error::Timeout(short));
    reached(h, main.publish("a.b", &1u32).unwrap(), 1);
    reached(h, main.publish("a.c", &9u32).unwrap(), 0);
    for i in 2..=4u32 {
        reached(h, main.publish("a.b", &i).unwrap(), 1);
    }
    let m = sub.recv_timeout(WAIT).unwrap();
    assert_eq!((m.topic(), *m.value()), ("a.b", 1));
    assert_eq!(sub.recv().unwrap().into_value(), 2);
    let deadline = Instant::now() + WAIT;
    while sub.len() < 2 {
        assert!(Instant::now() < deadline, "the last two never arrived");
        thread::yield_now();
    }
    assert!(!sub.is_empty());
    assert_eq!(sub.try_recv().unwrap().into_value(), 3);
    assert_eq!(next(&sub), 4);
    assert!(sub.is_empty());
    assert!(format!("{sub:?}").contains("a.b"));
    drop(sub);
    reached_eventually(h, 0, || main.publish("a.b", &5u32).unwrap());
}

pub fn invalid_topics_and_patterns_are_refused(h: &dyn Harness) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for ps in [h.main(), h.child(0)] {
        for topic in ["a..b", "a.*", "", "a b"] {
            let refused = |r: yuki_pubsub::Result<usize>| {
                assert!(
                    matches!(r, Err(Error::InvalidTopic { .. })),
                    "{topic:?}: {r:?}"
                )
            };
            refused(ps.publish(topic, &1u8));
            refused(ps.publish_batch(topic, &[1u8, 2]));
            refused(rt.block_on(ps.publish_async(topic, &1u8)));
        }
        for pattern in ["a.>.b", "", "a..b"] {
            assert!(matches!(
                ps.subscribe::<u8>(pattern),
                Err(Error::InvalidPattern { .. })
            ));
            assert!(matches!(
                ps.on_message(pattern, |_: Message<u8>| {}),
                Err(Error::InvalidPattern { .. })
            ));
        }
    }
}

pub fn fan_out_from_main_exact_and_wildcard(h: &dyn Harness) {
    let main = h.main();
    let children: Vec<PubSub> = (0..4).map(|i| h.child(i)).collect();
    let subscribe = |pattern: &str| -> Vec<Subscription<String>> {
        children
            .iter()
            .map(|p| p.subscribe::<String>(pattern).unwrap())
            .collect()
    };
    let (exact, wild, deep) = (
        subscribe("news.sport"),
        subscribe("news.*"),
        subscribe("news.>"),
    );
    reached(h, main.publish("news.sport", "goal").unwrap(), 12);
    reached(h, main.publish("news.weather", "rain").unwrap(), 8);
    reached(h, main.publish("news.weather.today", "sun").unwrap(), 4);
    reached(h, main.publish("other", "x").unwrap(), 0);
    reached(h, main.publish("news.sport", "end").unwrap(), 12);
    for (subs, want) in [
        (&exact, &["goal", "end"][..]),
        (&wild, &["goal", "rain", "end"]),
        (&deep, &["goal", "rain", "sun", "end"]),
    ] {
        for s in subs {
            let got: Vec<String> = want.iter().map(|_| next(s)).collect();
            assert_eq!(got, want, "{}", s.pattern());
            assert_eq!(s.try_recv().unwrap_err(), Error::Empty);
        }
    }
}

pub fn fan_out_from_a_child_reaches_everyone(h: &dyn Harness) {
    let publisher = h.child(4);
    let subs: Vec<_> = (0..4)
        .map(|i| h.child(i).subscribe::<u64>("jobs.*.done").unwrap())
        .collect();
    let in_main = h.main().subscribe::<u64>("jobs.>").unwrap();
    reached(h, publisher.publish("jobs.7.done", &7u64).unwrap(), 5);
    reached(h, publisher.publish("jobs.7.started", &8u64).unwrap(), 1);
    for s in &subs {
        assert_eq!(next(s), 7);
    }
    assert_eq!(next(&in_main), 7);
    assert_eq!(next(&in_main), 8);
    // The publisher receives what it subscribed to itself.
    let own = publisher.subscribe::<u64>("jobs.*.done").unwrap();
    reached(h, publisher.publish("jobs.8.done", &9u64).unwrap(), 6);
    for s in subs.iter().chain([&own, &in_main]) {
        assert_eq!(next(s), 9);
    }
}

pub fn dropping_the_last_subscription_stops_delivery(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child(0));
    let a = child.subscribe::<u8>("t.*").unwrap();
    let b = child.subscribe::<u8>("t.*").unwrap();
    reached(h, main.publish("t.x", &1u8).unwrap(), 2);
    assert_eq!((next(&a), next(&b)), (1, 1));
    drop(a);
    reached_eventually(h, 1, || main.publish("t.x", &2u8).unwrap());
    assert_eq!(next(&b), 2);
    drop(b);
    reached_eventually(h, 0, || main.publish("t.x", &3u8).unwrap());
    // A new subscription gets what is published from now on, only.
    let c = child.subscribe::<u8>("t.*").unwrap();
    reached(h, main.publish("t.x", &4u8).unwrap(), 1);
    assert_eq!(next(&c), 4);
}

pub fn per_publisher_order_with_concurrent_publishers(h: &dyn Harness) {
    const PER: u64 = 2000;
    let in_main = h
        .main()
        .with_capacity(10_000)
        .subscribe::<(u64, u64)>("seq.*")
        .unwrap();
    let in_child = h
        .child(2)
        .with_capacity(10_000)
        .subscribe::<(u64, u64)>("seq.>")
        .unwrap();
    let publishers = [h.main(), h.child(0), h.child(1)];
    let start = Barrier::new(publishers.len());
    let counts: Vec<Vec<usize>> = thread::scope(|s| {
        let threads: Vec<_> = publishers
            .iter()
            .enumerate()
            .map(|(id, ps)| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    (0..PER)
                        .map(|seq| {
                            ps.publish(&format!("seq.p{id}"), &(id as u64, seq))
                                .unwrap()
                        })
                        .collect()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for n in counts.into_iter().flatten() {
        reached(h, n, 2);
    }
    for sub in [&in_main, &in_child] {
        let mut next_seq = [0u64; 3];
        for _ in 0..3 * PER {
            let (id, seq) = next(sub);
            assert_eq!(seq, next_seq[id as usize], "publisher {id} out of order");
            next_seq[id as usize] += 1;
        }
        assert_eq!(next_seq, [PER; 3]);
    }
}

pub fn a_full_subscription_loses_the_oldest_and_learns_how_many(h: &dyn Harness) {
    let child = h.child(0);
    let small = child.with_capacity(8).subscribe::<u32>("lag").unwrap();
    assert_eq!(small.capacity(), 8);
    let end = child.subscribe::<u32>("lag.end").unwrap();
    let reader = h
        .child(1)
        .with_capacity(200)
        .subscribe::<u32>("lag")
        .unwrap();
    for i in 0..100u32 {
        reached(h, h.main().publish("lag", &i).unwrap(), 2);
    }
    // Published after the others on another topic: once it is in, the
    // process has queued all the others in `small`.
    reached(h, h.main().publish("lag.end", &0u32).unwrap(), 1);
    assert_eq!(next(&end), 0);
    // Another subscription to the same topic that reads loses nothing.
    let got: Vec<u32> = (0..100).map(|_| next(&reader)).collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert_eq!(small.try_recv().unwrap_err(), Error::Lagged(92));
    let rest: Vec<u32> = (0..8)
        .map(|_| small.try_recv().unwrap().into_value())
        .collect();
    assert_eq!(rest, (92..100).collect::<Vec<_>>());
    assert_eq!(small.try_recv().unwrap_err(), Error::Empty);
    assert!(Error::Lagged(3).to_string().contains("larger capacity"));
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

/// The same shape as `Point` under another name.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Size {
    w: i32,
    h: i32,
}

/// Checks that `r` is a decode error naming `topic`, the type published
/// and the subscription's.
fn wrong<M: std::fmt::Debug>(r: yuki_pubsub::Result<Message<M>>, topic: &str, published: &str) {
    match r {
        Err(e @ Error::Decode { .. }) => {
            let message = e.to_string();
            let Error::Decode {
                topic: t,
                written,
                type_name,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!((t.as_str(), written.as_str()), (topic, published));
            assert_eq!(type_name, std::any::type_name::<M>());
            assert!(
                message.contains(topic) && message.contains(published),
                "{message}"
            );
        }
        other => panic!("expected a decode error naming {topic} and {published}, got {other:?}"),
    }
}

pub fn a_message_of_another_type_is_the_same_value_or_an_error_naming_both(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child(0));
    // Both directions: main to a child, a child to main.
    for (publisher, subscriber) in [(&main, &child), (&child, &main)] {
        let unsigned = subscriber.subscribe::<u64>("t.int").unwrap();
        let point = subscriber.subscribe::<Size>("t.point").unwrap();
        publisher.publish("t.int", &7i64).unwrap();
        publisher.publish("t.int", &-1i64).unwrap();
        publisher.publish("t.int", "7").unwrap();
        publisher.publish_batch("t.int", &[8i32, -8]).unwrap();
        publisher.publish("t.int", &(1u32, 2u32)).unwrap();
        publisher.publish("t.point", &Point { x: 1, y: 2 }).unwrap();
        publisher.publish("t.point", &Size { w: 3, h: 4 }).unwrap();
        publisher.publish("t.int", &9u8).unwrap();
        assert_eq!(next(&unsigned), 7);
        wrong(unsigned.recv_timeout(WAIT), "t.int", "i64");
        wrong(unsigned.recv_timeout(WAIT), "t.int", "string");
        assert_eq!(next(&unsigned), 8);
        wrong(unsigned.recv_timeout(WAIT), "t.int", "i32");
        wrong(unsigned.recv_timeout(WAIT), "t.int", "(u32, u32)");
        assert_eq!(next(&unsigned), 9);
        wrong(point.recv_timeout(WAIT), "t.point", "Point");
        assert_eq!(next(&point), Size { w: 3, h: 4 });
        assert_eq!(unsigned.try_recv().unwrap_err(), Error::Empty);
    }
}

type Seen = std::sync::mpsc::Sender<(&'static str, u32)>;

pub fn sync_handlers_survive_a_panicking_neighbour(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let (tx_main, tx_child): (Mutex<Seen>, Mutex<Seen>) = (Mutex::new(tx.clone()), Mutex::new(tx));
    let bad = main
        .on_message("h.*", |m: Message<u32>| {
            if *m.value() == 1 {
                panic!("handler fails on purpose");
            }
        })
        .unwrap();
    let good_main = main
        .on_message("h.*", move |m: Message<u32>| {
            let _ = tx_main.lock().unwrap().send(("main", *m.value()));
        })
        .unwrap();
    let good_child = child
        .on_message("h.>", move |m: Message<u32>| {
            let _ = tx_child.lock().unwrap().send(("child", *m.value()));
        })
        .unwrap();
    assert_eq!(good_child.pattern().as_str(), "h.>");
    assert!(format!("{bad:?}").contains("h.*"));
    reached(h, child.publish("h.a", &1u32).unwrap(), 3);
    reached(h, main.publish("h.a", &2u32).unwrap(), 3);
    let mut seen: Vec<_> = (0..4).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    seen.sort();
    assert_eq!(seen, [("child", 1), ("child", 2), ("main", 1), ("main", 2)]);
    bad.stop();
    drop(good_main);
    reached_eventually(h, 1, || main.publish("h.b", &3u32).unwrap());
    // A detached handler keeps running, for the rest of the process.
    good_child.detach();
    reached(h, main.publish("h.c", &4u32).unwrap(), 1);
}

pub fn async_handlers_run_in_order(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child(0));
    assert_eq!(
        main.on_message_async("a", |_: Message<u8>| async {})
            .unwrap_err(),
        Error::NoRuntime
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let panicked = Arc::new(AtomicBool::new(false));
    let p = panicked.clone();
    let listener = rt.block_on(async {
        main.on_message_async("async.*", move |m: Message<u32>| {
            let tx = tx.clone();
            let p = p.clone();
            async move {
                if *m.value() == 0 && !p.swap(true, Ordering::SeqCst) {
                    panic!("async handler fails on purpose");
                }
                tokio::task::yield_now().await;
                tx.send((m.topic().to_owned(), *m.value())).unwrap();
            }
        })
        .unwrap()
    });
    for i in 0..5u32 {
        reached(h, child.publish("async.x", &i).unwrap(), 1);
    }
    let got = rt.block_on(async {
        let mut got = Vec::new();
        for _ in 1..5 {
            let item = tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap();
            got.push(item.1);
        }
        got
    });
    assert_eq!(got, vec![1, 2, 3, 4]);
    assert!(panicked.load(Ordering::SeqCst));
    drop(listener);
    reached_eventually(h, 0, || main.publish("async.x", &9u32).unwrap());
}

pub fn async_receive_stream_and_publish(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut stream = child.subscribe::<String>("s.>").unwrap();
        let single = main.subscribe::<String>("s.one").unwrap();
        reached(h, child.publish_async("s.one", "a").await.unwrap(), 2);
        reached(h, main.publish_async("s.two", "b").await.unwrap(), 1);
        let got = tokio::time::timeout(WAIT, single.recv_async())
            .await
            .unwrap();
        assert_eq!(got.unwrap().into_value(), "a");
        let first = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
        let first = first.unwrap().unwrap();
        assert_eq!((first.topic(), first.value().as_str()), ("s.one", "a"));
        let second = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
        assert_eq!(second.unwrap().unwrap().into_value(), "b");
        // A receiver waiting before the message arrives is woken.
        let publisher = main.clone();
        let sender = tokio::spawn(async move {
            tokio::task::yield_now().await;
            publisher.publish("s.three", "c").unwrap()
        });
        let third = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
        assert_eq!(third.unwrap().unwrap().into_value(), "c");
        reached(h, sender.await.unwrap(), 1);
    });
}

pub fn many_subscriptions_count_exactly(h: &dyn Harness) {
    let main = h.main();
    let mut keep = Vec::new();
    for p in [h.child(0), h.child(1)] {
        for pattern in ["c.a.b", "c.*.b", "c.>", "*.a.*", ">", "c.a"] {
            keep.push(p.subscribe::<u8>(pattern).unwrap());
        }
    }
    for pattern in ["c.a.b", "x.>"] {
        keep.push(main.subscribe::<u8>(pattern).unwrap());
    }
    reached(h, main.publish("c.a.b", &1u8).unwrap(), 2 * 5 + 1);
    reached(h, h.child(0).publish("c.a", &2u8).unwrap(), 2 * 3);
    reached(h, h.child(1).publish("x.y.z", &3u8).unwrap(), 2 + 1);
    reached(h, main.publish("d", &4u8).unwrap(), 2);
}

pub fn batches_keep_order_and_count_deliveries(h: &dyn Harness) {
    let subs: Vec<_> = (0..2)
        .map(|i| {
            h.child(i)
                .with_capacity(20_000)
                .subscribe::<u64>("b.*")
                .unwrap()
        })
        .collect();
    let in_main = h
        .main()
        .with_capacity(20_000)
        .subscribe::<u64>("b.>")
        .unwrap();
    // About 20 bytes a message: several pieces of 64 KiB.
    let values: Vec<u64> = (0..10_000).collect();
    reached(
        h,
        h.main().publish_batch("b.x", &values).unwrap(),
        3 * 10_000,
    );
    let from_child: Vec<u64> = (10_000..10_100).collect();
    reached(
        h,
        h.child(2).publish_batch("b.y", &from_child).unwrap(),
        300,
    );
    reached(
        h,
        h.child(2).publish_batch("b.y", &[] as &[u64]).unwrap(),
        0,
    );
    for sub in subs.iter().chain([&in_main]) {
        // In order per publisher: main's then the child's, each in order.
        let (mut from_main, mut from_child) = (0u64, 10_000u64);
        for _ in 0..10_100 {
            match next(sub) {
                v if v < 10_000 => {
                    assert_eq!(v, from_main);
                    from_main += 1;
                }
                v => {
                    assert_eq!(v, from_child);
                    from_child += 1;
                }
            }
        }
        assert_eq!((from_main, from_child), (10_000, 10_100));
        assert_eq!(sub.try_recv().unwrap_err(), Error::Empty);
    }
}

/// A value that cannot be encoded.
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to be encoded"))
    }
}

pub fn a_message_that_cannot_be_encoded_is_an_error(h: &dyn Harness) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for ps in [h.main(), h.child(0)] {
        let sub = ps.subscribe::<u8>("e").unwrap();
        let encode = |r: yuki_pubsub::Result<usize>| {
            assert!(matches!(r, Err(Error::Encode { .. })), "{r:?}")
        };
        encode(ps.publish("e", &Unencodable));
        encode(ps.publish_batch("e", [&Unencodable]));
        encode(rt.block_on(ps.publish_async("e", &Unencodable)));
        // Nothing was sent: the next message is the first to arrive.
        reached_eventually(h, 1, || ps.publish("e", &1u8).unwrap());
        assert_eq!(next(&sub), 1);
    }
}
