//! One behavioural suite for hosted channels: the same test bodies run over
//! the in-thread transport (`channel_hosted.rs`) and across real processes
//! (`channel_hosted_ipc.rs`). A harness supplies main's endpoint and
//! children's; each body names its own channels, so bodies can share a main.
#![allow(dead_code)]

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use yuki_channel::{Channel, ChannelOptions, Error, Transport};

/// A bound on every wait of the suite.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a wait lasts that must not end with an item.
pub const SHORT: Duration = Duration::from_millis(30);

/// Supplies the endpoints of one test.
pub trait Harness {
    /// The endpoint that hosts the channels (or, run inside a child
    /// process, that child's link to the main that hosts them).
    fn main(&self) -> Arc<dyn Transport>;
    /// A child's endpoint (a new one for each name where the harness can).
    fn child(&self, name: &str) -> Arc<dyn Transport>;
    /// Whether [`Harness::child`] gives endpoints other than
    /// [`Harness::main`]'s; the ipc harness runs the bodies inside one child
    /// process, where every endpoint is that child's link.
    fn children_are_separate(&self) -> bool;
    /// Starts a consumer of `channel` (`u32` items) with `prefetch` in an
    /// endpoint of its own, which takes `take` deliveries, holds them
    /// unsettled and ends (its endpoint leaves, as a process that exits);
    /// returns once it has ended.
    fn consumer_that_leaves(&self, channel: &str, prefetch: u32, take: usize);
}

/// One test body of the suite.
pub type Body = fn(&dyn Harness);

/// Generates one `#[test]` per suite body: `hosted_suite!(harness EXPR)`
/// runs the body on the harness `EXPR` makes; `hosted_suite!(run PATH)` calls
/// `PATH(body_name)`, for harnesses that run the body elsewhere.
/// `hosted_suite!(names)` is the list of bodies it generates tests for,
/// which a test compares with [`ALL`].
#[allow(unused_macros)]
macro_rules! hosted_suite {
    (@with $then:ident $how:tt) => {
        hosted_suite! { @ $then $how;
            send_and_recv_keep_order_both_ways,
            an_empty_channel_times_out_or_is_empty,
            a_full_bounded_channel_refuses_or_waits,
            close_wakes_every_receiver_and_refuses_sends,
            items_sent_before_close_are_still_received,
            deliveries_are_acked_requeued_or_dropped,
            a_consumer_holds_at_most_its_prefetch,
            another_item_type_at_open_is_refused,
            what_a_consumer_that_leaves_held_goes_back
        }
    };
    (harness $make:expr) => {
        hosted_suite!(@with each [harness $make]);
    };
    (run $run:path) => {
        hosted_suite!(@with each [run $run]);
    };
    (names) => {
        hosted_suite!(@with names [])
    };
    (@names []; $($name:ident),* $(,)?) => {
        [$(stringify!($name)),*]
    };
    (@each $how:tt; $($name:ident),* $(,)?) => {
        $( hosted_suite!(@one $how $name); )*
    };
    (@one [harness $make:expr] $name:ident) => {
        #[test]
        fn $name() {
            let harness = $make;
            hosted_suite::$name(&harness);
        }
    };
    (@one [run $run:path] $name:ident) => {
        #[test]
        fn $name() {
            $run(stringify!($name));
        }
    };
}
#[allow(unused_imports)]
pub(crate) use hosted_suite;

/// Every body of the suite, by name.
pub const ALL: &[(&str, Body)] = &[
    (
        "send_and_recv_keep_order_both_ways",
        send_and_recv_keep_order_both_ways,
    ),
    (
        "an_empty_channel_times_out_or_is_empty",
        an_empty_channel_times_out_or_is_empty,
    ),
    (
        "a_full_bounded_channel_refuses_or_waits",
        a_full_bounded_channel_refuses_or_waits,
    ),
    (
        "close_wakes_every_receiver_and_refuses_sends",
        close_wakes_every_receiver_and_refuses_sends,
    ),
    (
        "items_sent_before_close_are_still_received",
        items_sent_before_close_are_still_received,
    ),
    (
        "deliveries_are_acked_requeued_or_dropped",
        deliveries_are_acked_requeued_or_dropped,
    ),
    (
        "a_consumer_holds_at_most_its_prefetch",
        a_consumer_holds_at_most_its_prefetch,
    ),
    (
        "another_item_type_at_open_is_refused",
        another_item_type_at_open_is_refused,
    ),
    (
        "what_a_consumer_that_leaves_held_goes_back",
        what_a_consumer_that_leaves_held_goes_back,
    ),
];

/// The body named `name`.
pub fn body(name: &str) -> Body {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no suite body is named {name}"))
        .1
}

pub fn send_and_recv_keep_order_both_ways(h: &dyn Harness) {
    let m = Channel::<String>::open(&h.main(), "order").unwrap();
    let c = Channel::<String>::open(&h.child("c"), "order").unwrap();
    assert_eq!(c.name(), "order");
    assert!(format!("{c:?}").contains("hosted"));
    assert_eq!((m.capacity(), c.capacity()), (None, None));
    for i in 0..50 {
        c.send(format!("up {i}")).unwrap();
    }
    for i in 0..50 {
        assert_eq!(m.recv_timeout(WAIT).unwrap(), format!("up {i}"));
    }
    for i in 0..50 {
        m.send(format!("down {i}")).unwrap();
    }
    for i in 0..50 {
        assert_eq!(c.recv_timeout(WAIT).unwrap(), format!("down {i}"));
    }
    c.send("self".into()).unwrap();
    assert_eq!(c.recv_timeout(WAIT).unwrap(), "self");
}

pub fn an_empty_channel_times_out_or_is_empty(h: &dyn Harness) {
    let m = Channel::<u32>::open(&h.main(), "empty").unwrap();
    let c = Channel::<u32>::open(&h.child("c"), "empty").unwrap();
    for ch in [&m, &c] {
        assert!(matches!(ch.try_recv(), Err(Error::Empty { .. })));
        assert_eq!(ch.recv_timeout(SHORT), Err(Error::Timeout(SHORT)));
        assert!(ch.is_empty());
    }
    m.send(1).unwrap();
    assert_eq!(c.recv_timeout(WAIT), Ok(1));
    assert!(c.is_empty());
}

pub fn a_full_bounded_channel_refuses_or_waits(h: &dyn Harness) {
    let m = Channel::<u32>::open_bounded(&h.main(), "bounded", 2).unwrap();
    assert_eq!(m.capacity(), Some(2));
    let c = Channel::<u32>::open_bounded(&h.child("c"), "bounded", 2).unwrap();
    assert_eq!(c.capacity(), Some(2));
    let plain = Channel::<u32>::open(&h.child("c"), "bounded").unwrap();
    assert_eq!(plain.capacity(), Some(2));
    assert_eq!(
        Channel::<u32>::open_bounded(&h.child("d"), "bounded", 5).unwrap_err(),
        Error::CapacityMismatch {
            channel: "bounded".into(),
            requested: Some(5),
            actual: Some(2)
        }
    );
    assert!(matches!(
        Channel::<u32>::open_bounded(&h.main(), "bounded", 1),
        Err(Error::CapacityMismatch { .. })
    ));

    c.send(1).unwrap();
    m.try_send(2).unwrap();
    let err = c.try_send(3).unwrap_err();
    assert!(err.is_full());
    assert_eq!(err.into_inner(), 3);
    assert!(m.try_send(3).unwrap_err().is_full());
    assert_eq!(c.len(), 2);

    // A send into the full channel waits until a receive makes room.
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let sender = {
        let c = c.clone();
        thread::spawn(move || {
            let r = c.send(3);
            done_tx.send(()).unwrap();
            r
        })
    };
    assert!(done_rx.recv_timeout(SHORT).is_err(), "send must wait");
    assert_eq!(m.recv_timeout(WAIT), Ok(1));
    done_rx.recv_timeout(WAIT).unwrap();
    sender.join().unwrap().unwrap();
    assert_eq!(m.recv_timeout(WAIT), Ok(2));
    assert_eq!(m.recv_timeout(WAIT), Ok(3));

    // A blocked sender wakes with its value when the channel closes. Fill
    // it until it refuses: an item pushed ahead to a receiving process has
    // left main's queue and no longer counts against the capacity.
    let mut queued = 0;
    while m.try_send(4).is_ok() {
        queued += 1;
        assert!(queued <= 3, "two queued and one pushed ahead at most");
    }
    assert!(queued >= 2, "{queued}");
    let (sent_tx, sent_rx) = crossbeam_channel::bounded(1);
    {
        let c = c.clone();
        thread::spawn(move || sent_tx.send(c.send(6)).unwrap());
    }
    assert!(sent_rx.recv_timeout(SHORT).is_err(), "send must wait");
    m.close();
    let err = sent_rx
        .recv_timeout(WAIT)
        .expect("the close woke the sender")
        .unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err.into_inner(), 6);
}

pub fn close_wakes_every_receiver_and_refuses_sends(h: &dyn Harness) {
    for closer in ["main", "child"] {
        let name = format!("close.{closer}");
        let m = Channel::<u32>::open(&h.main(), &name).unwrap();
        let c = Channel::<u32>::open(&h.child("c"), &name).unwrap();
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let waiters: Vec<_> = [m.clone(), c.clone(), c.clone()]
            .into_iter()
            .map(|ch| {
                let ready = ready_tx.clone();
                thread::spawn(move || {
                    ready.send(()).unwrap();
                    ch.recv_timeout(WAIT)
                })
            })
            .collect();
        for _ in 0..3 {
            ready_rx.recv_timeout(WAIT).unwrap();
        }
        let closed_now = if closer == "main" {
            m.close()
        } else {
            c.close()
        };
        assert!(closed_now);
        assert!(!m.close() && !c.close());
        for w in waiters {
            let got = w.join().unwrap();
            assert!(
                matches!(got, Err(Error::Closed { .. })),
                "{closer}: {got:?}"
            );
        }
        assert!(m.is_closed() && c.is_closed());
        let err = c.send(1).unwrap_err();
        assert!(err.is_closed());
        assert_eq!(err.into_inner(), 1);
        assert!(m.send(2).unwrap_err().is_closed());
    }
}

pub fn items_sent_before_close_are_still_received(h: &dyn Harness) {
    let m = Channel::<u32>::open(&h.main(), "drain").unwrap();
    let c = Channel::<u32>::open(&h.child("c"), "drain").unwrap();
    c.send(1).unwrap();
    c.send(2).unwrap();
    c.close();
    assert_eq!(m.recv_timeout(WAIT), Ok(1));
    assert_eq!(c.recv_timeout(WAIT), Ok(2));
    assert!(matches!(c.recv_timeout(WAIT), Err(Error::Closed { .. })));
    assert!(matches!(m.try_recv(), Err(Error::Closed { .. })));
    // An endpoint opening it later learns it is closed.
    let late = Channel::<u32>::open(&h.child("late"), "drain").unwrap();
    assert!(late.is_closed());
    assert!(matches!(late.recv_timeout(WAIT), Err(Error::Closed { .. })));
}

pub fn deliveries_are_acked_requeued_or_dropped(h: &dyn Harness) {
    let m = Channel::<u32>::open(&h.main(), "deliveries").unwrap();
    let options = ChannelOptions::new().prefetch(1);
    let w = Channel::<u32>::open_with(&h.child("w"), "deliveries", &options).unwrap();
    for i in 0..4 {
        m.send(i).unwrap();
    }
    let d = w.recv_delivery_timeout(WAIT).unwrap();
    assert_eq!((*d, d.redelivered()), (0, false));
    d.requeue();
    // Back at the head of the queue, ahead of the rest.
    let d = w.recv_delivery_timeout(WAIT).unwrap();
    assert_eq!((*d, d.redelivered()), (0, true));
    d.ack();
    let d = w.recv_delivery_timeout(WAIT).unwrap();
    assert_eq!((*d, d.redelivered()), (1, false));
    drop(d);
    let d = w.recv_delivery_timeout(WAIT).unwrap();
    assert_eq!(
        (*d, d.redelivered()),
        (1, true),
        "a dropped delivery comes back"
    );
    d.ack();
    for i in 2..4 {
        let d = w.recv_delivery_timeout(WAIT).unwrap();
        assert_eq!((*d, d.redelivered()), (i, false));
        d.ack();
    }
    // Acknowledged deliveries never come again.
    assert_eq!(
        w.recv_delivery_timeout(SHORT).map(|d| *d),
        Err(Error::Timeout(SHORT))
    );
    assert_eq!(m.len(), 0);
}

pub fn a_consumer_holds_at_most_its_prefetch(h: &dyn Harness) {
    const PREFETCH: u32 = 3;
    let m = Channel::<u32>::open(&h.main(), "prefetch").unwrap();
    let options = ChannelOptions::new().prefetch(PREFETCH);
    let w = Channel::<u32>::open_with(&h.child("w"), "prefetch", &options).unwrap();
    for i in 0..20 {
        m.send(i).unwrap();
    }
    let held: Vec<_> = (0..PREFETCH)
        .map(|_| w.recv_delivery_timeout(WAIT).unwrap())
        .collect();
    assert_eq!(held.iter().map(|d| **d).collect::<Vec<_>>(), [0, 1, 2]);
    // Its window is full of unsettled deliveries: nothing more comes, and
    // the rest waits in main.
    assert_eq!(
        w.recv_delivery_timeout(SHORT).map(|d| *d),
        Err(Error::Timeout(SHORT))
    );
    assert_eq!(m.len(), 20 - PREFETCH as usize);
    // Settling one opens the window by one.
    let mut held = held.into_iter();
    held.next().unwrap().ack();
    let d = w.recv_delivery_timeout(WAIT).unwrap();
    assert_eq!(*d, 3);
    d.ack();
    held.for_each(|d| d.ack());
    for i in 4..20 {
        let d = w.recv_delivery_timeout(WAIT).unwrap();
        assert_eq!(*d, i);
        d.ack();
    }
    assert_eq!(m.len(), 0);
}

pub fn another_item_type_at_open_is_refused(h: &dyn Harness) {
    let m = Channel::<(u64, u64)>::open(&h.main(), "typed").unwrap();
    let child = h.child("c");
    let err = Channel::<String>::open(&child, "typed").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("String"), "{text}");
    if h.children_are_separate() {
        // Refused by main, naming both types.
        assert!(matches!(err, Error::ChannelTypeMismatch { .. }), "{err}");
        assert!(
            text.contains("\"typed\"") && text.contains("(u64, u64)"),
            "{text}"
        );
    } else {
        // Refused by the process that opened it already.
        assert!(matches!(err, Error::WrongType { .. }), "{err}");
    }
    // Bytes that happen to fit: a u128 is two u64s to bincode, yet refused.
    assert!(Channel::<u128>::open(&child, "typed").is_err());
    // The same type joins, and nothing was sent meanwhile.
    let c = Channel::<(u64, u64)>::open(&child, "typed").unwrap();
    assert!(c.is_empty());
    c.send((1, 2)).unwrap();
    assert_eq!(m.recv_timeout(WAIT), Ok((1, 2)));
}

pub fn what_a_consumer_that_leaves_held_goes_back(h: &dyn Harness) {
    let m = Channel::<u32>::open(&h.main(), "leave").unwrap();
    for i in 0..10 {
        m.send(i).unwrap();
    }
    // It takes 0 and 1, and 2 and 3 are pushed ahead to it.
    h.consumer_that_leaves("leave", 4, 2);
    let options = ChannelOptions::new().prefetch(1);
    let other = Channel::<u32>::open_with(&h.child("other"), "leave", &options).unwrap();
    let mut got = Vec::new();
    for _ in 0..10 {
        let d = other.recv_delivery_timeout(WAIT).unwrap();
        got.push((*d, d.redelivered()));
        d.ack();
    }
    let mut items: Vec<u32> = got.iter().map(|(i, _)| *i).collect();
    items.sort_unstable();
    assert_eq!(
        items,
        (0..10).collect::<Vec<_>>(),
        "each item once: {got:?}"
    );
    for (item, redelivered) in &got {
        match item {
            0 | 1 => assert!(redelivered, "{item} was held: {got:?}"),
            4.. => assert!(!redelivered, "{item} was never pushed: {got:?}"),
            _ => {}
        }
    }
    assert_eq!(
        other.recv_delivery_timeout(SHORT).map(|d| *d),
        Err(Error::Timeout(SHORT))
    );
}
