//! The store over the in-thread transport: main and children as endpoints
//! of one process. Runs the shared suite, then what is particular to a
//! transport: attaching twice, disconnection, frame limits, slow watchers.

mod suite;

use std::sync::Arc;
use std::time::Duration;

use yuki_channel::{InThreadTransport, Transport};
use yuki_storage::{Batch, Config, Error, ManualClock, Store};

use suite::{Harness, WAIT, store_suite};

struct InThread {
    transport: Arc<InThreadTransport>,
    main: Store,
    clock: Arc<ManualClock>,
}

fn in_thread() -> InThread {
    in_thread_with(InThreadTransport::main(), Config::default())
}

fn in_thread_with(transport: Arc<InThreadTransport>, config: Config) -> InThread {
    let clock = Arc::new(ManualClock::default());
    let main = Store::attach_with(transport.clone(), config.clock(clock.clone())).unwrap();
    InThread {
        transport,
        main,
        clock,
    }
}

impl Harness for InThread {
    fn main(&self) -> Store {
        self.main.clone()
    }
    fn child(&self, name: &str) -> Store {
        Store::attach(self.transport.connect(name).unwrap()).unwrap()
    }
    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

store_suite!(in_thread());

#[test]
fn attaching_twice_gives_the_same_store() {
    let h = in_thread();
    let again = Store::attach(h.transport.clone()).unwrap();
    again.set("k", &1).unwrap();
    assert_eq!(h.main.get::<i32>("k").unwrap(), Some(1));
    assert!(again.is_owner());

    let child_t = h.transport.connect("c").unwrap();
    let a = Store::attach(child_t.clone()).unwrap();
    let b = Store::attach(child_t).unwrap();
    assert!(!a.is_owner());
    let watch = a.watch("k").unwrap();
    b.set("k", &2).unwrap();
    assert_eq!(
        watch.recv_timeout(WAIT).unwrap().decode::<i32>().unwrap(),
        Some(2)
    );
}

#[test]
fn a_dead_main_gives_disconnected_and_ends_watches() {
    let h = in_thread();
    let child = h.child("c");
    child.set("k", &1).unwrap();
    let mut watch = child.watch("").unwrap();
    h.transport.disconnect("main exits");
    assert!(matches!(child.get::<i32>("k"), Err(Error::Disconnected(_))));
    assert!(matches!(child.set("k", &2), Err(Error::Disconnected(_))));
    assert!(matches!(
        child.batch(&Batch::new()),
        Err(Error::Disconnected(_))
    ));
    assert!(matches!(child.len(), Err(Error::Disconnected(_))));
    assert!(matches!(child.watch(""), Err(Error::Disconnected(_))));
    match watch.recv_timeout(WAIT) {
        Err(Error::Disconnected(why)) => assert!(why.contains("main exits")),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    // The end is sticky, and the iterator stops after it.
    assert!(matches!(watch.try_recv(), Err(Error::Disconnected(_))));
    assert!(watch.next().is_none());
    // Main's own data is still there.
    assert_eq!(h.main.get::<i32>("k").unwrap(), Some(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(matches!(
        rt.block_on(child.get_async::<i32>("k")),
        Err(Error::Disconnected(_))
    ));
}

#[test]
fn a_child_that_leaves_loses_its_watchers_and_others_go_on() {
    let h = in_thread();
    let leaving_t = h.transport.connect("leaving").unwrap();
    let leaving = Store::attach(leaving_t.clone()).unwrap();
    let _watch = leaving.watch("").unwrap();
    let staying = h.child("staying");
    let watch = staying.watch("").unwrap();
    leaving_t.disconnect("crashed");
    assert!(matches!(
        leaving.get::<i32>("k"),
        Err(Error::Disconnected(_))
    ));
    staying.set("k", &1).unwrap();
    assert_eq!(watch.recv_timeout(WAIT).unwrap().key, "k");
    assert_eq!(h.main.get::<i32>("k").unwrap(), Some(1));
}

#[test]
fn replies_over_the_frame_limit_are_an_error_not_a_disconnect() {
    let h = in_thread_with(InThreadTransport::with_max_frame(1024), Config::default());
    let child = h.child("c");
    for i in 0..100 {
        h.main
            .set(&format!("key-{i:04}"), "some value of a few bytes")
            .unwrap();
    }
    match child.get_all_raw() {
        Err(Error::ReplyTooLarge { max, .. }) => assert_eq!(max, 1024),
        other => panic!("expected ReplyTooLarge, got {other:?}"),
    }
    // A batch's replies, encoded one by one as its operations apply, are
    // refused whole when together they pass the limit.
    let mut batch = Batch::new();
    for i in 0..60 {
        batch.get(&format!("key-{i:04}"));
    }
    match child.batch(&batch) {
        Err(Error::ReplyTooLarge { max, .. }) => assert_eq!(max, 1024),
        other => panic!("expected ReplyTooLarge, got {other:?}"),
    }
    // The link is fine afterwards.
    assert_eq!(child.len().unwrap(), 100);
    let mut small = Batch::new();
    small.get("key-0000").get("missing");
    let out = child.batch(&small).unwrap();
    assert_eq!(
        out[0].value::<String>().unwrap().as_deref(),
        Some("some value of a few bytes")
    );
    assert_eq!(out[1].value::<String>().unwrap(), None);
    assert_eq!(child.keys("key-000").unwrap().len(), 10);
    // A request over the limit is refused before it is sent.
    let value = "x".repeat(2000);
    assert!(matches!(child.set("big", &value), Err(Error::Transport(_))));
    assert!(!h.main.contains("big").unwrap());
}

#[test]
fn a_watcher_that_falls_behind_is_closed_with_lagged() {
    let h = in_thread_with(
        InThreadTransport::main(),
        Config::default().watch_capacity(3),
    );
    let child = Store::attach_with(
        h.transport.connect("c").unwrap(),
        Config::default().watch_capacity(3),
    )
    .unwrap();
    for store in [&h.main, &child] {
        let watch = store.watch("").unwrap();
        for i in 0..10 {
            h.main.set("k", &i).unwrap();
        }
        for i in 0..3 {
            assert_eq!(
                watch.recv_timeout(WAIT).unwrap().decode::<i32>().unwrap(),
                Some(i)
            );
        }
        assert_eq!(watch.recv_timeout(WAIT), Err(Error::WatchLagged));
        assert_eq!(watch.try_recv(), Err(Error::WatchLagged));
    }
}

#[test]
fn expired_keys_are_purged_in_the_background() {
    let h = in_thread_with(
        InThreadTransport::main(),
        Config::default().purge_every(Duration::from_millis(1)),
    );
    let child = h.child("c");
    let watch = child.watch("").unwrap();
    child.set_with_ttl("t", &1, Duration::from_secs(5)).unwrap();
    assert!(watch.recv_timeout(WAIT).unwrap().value.is_some());
    h.clock.advance(Duration::from_secs(5));
    // Nobody reads or purges: the removal comes from the background pass.
    let removal = watch.recv_timeout(WAIT).unwrap();
    assert_eq!(removal.key, "t");
    assert!(removal.is_removal());
    assert_eq!(h.main.purge_expired().unwrap(), 0);
}

#[test]
fn async_watch_is_a_stream() {
    let h = in_thread();
    let child = h.child("c");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut watch = child.watch_async("s.").await.unwrap();
        let main = h.main.clone();
        let writer = tokio::task::spawn_blocking(move || {
            for i in 0..20 {
                main.set(&format!("s.{i}"), &i).unwrap();
            }
        });
        let mut got = Vec::new();
        while got.len() < 20 {
            let next = tokio::time::timeout(
                WAIT,
                std::future::poll_fn(|cx| {
                    futures_core::Stream::poll_next(std::pin::Pin::new(&mut watch), cx)
                }),
            )
            .await
            .expect("a change within the wait")
            .expect("the stream goes on")
            .unwrap();
            got.push(next.decode::<i32>().unwrap().unwrap());
        }
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        writer.await.unwrap();
    });
}

#[test]
fn a_child_transport_cannot_serve() {
    let main = InThreadTransport::main();
    let child: Arc<dyn Transport> = main.connect("c").unwrap();
    // Attaching in a child before main did works too: calls then fail
    // with NoService until main attaches.
    let store = Store::attach(child).unwrap();
    assert!(matches!(store.get::<i32>("k"), Err(Error::Transport(_))));
    let main_store = Store::attach(main).unwrap();
    main_store.set("k", &1).unwrap();
    assert_eq!(store.get::<i32>("k").unwrap(), Some(1));
}

#[test]
fn a_malformed_request_cuts_off_only_that_child() {
    let h = in_thread();
    let bad_t = h.transport.connect("bad").unwrap();
    let bad = Store::attach(bad_t.clone()).unwrap();
    let good = h.child("good");
    assert!(matches!(
        bad_t.call("yuki.store", &[0xff, 0xff, 0xff]),
        Err(yuki_channel::Error::Disconnected(_))
    ));
    assert!(matches!(bad.get::<i32>("k"), Err(Error::Disconnected(_))));
    good.set("k", &1).unwrap();
    assert_eq!(h.main.get::<i32>("k").unwrap(), Some(1));
}

#[test]
fn a_garbled_reply_is_a_protocol_error() {
    // A "main" that answers every store request with garbage.
    let main = InThreadTransport::main();
    main.serve(
        "yuki.store",
        Arc::new(|_: yuki_channel::PeerId, _: &[u8], reply: &mut Vec<u8>| {
            reply.extend_from_slice(&[0xee; 3]);
            Ok(())
        }),
    )
    .unwrap();
    let child = Store::attach(main.connect("c").unwrap()).unwrap();
    assert!(matches!(child.get::<i32>("k"), Err(Error::Protocol(_))));
    assert!(matches!(child.len(), Err(Error::Protocol(_))));
    assert!(matches!(child.watch(""), Err(Error::Protocol(_))));
}
