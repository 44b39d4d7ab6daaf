//! Pub/sub across main and children over the in-thread transport.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use futures_util::StreamExt;
use yuki_channel::{InThreadTransport, Transport};
use yuki_pubsub::{Error, Message, PubSub};
use yuki_testkit::Tap;

const WAIT: Duration = Duration::from_secs(10);

/// Main and `n` children, each with its pub/sub attached.
struct Net {
    tap: Arc<Tap>,
    main: PubSub,
    children: Vec<(Arc<InThreadTransport>, PubSub)>,
}

fn net(n: usize) -> Net {
    let main_t = InThreadTransport::main();
    let tap = Tap::new(main_t.clone());
    let main = PubSub::attach(tap.clone()).unwrap();
    let children = (0..n)
        .map(|i| {
            let t = main_t.connect(&format!("child{i}")).unwrap();
            let p = PubSub::attach(t.clone()).unwrap();
            (t, p)
        })
        .collect();
    Net {
        tap,
        main,
        children,
    }
}

fn value<M>(r: yuki_pubsub::Result<Message<M>>) -> M {
    r.unwrap().into_value()
}

#[test]
fn local_publish_and_every_receive_form() {
    let ps = PubSub::local();
    let sub = ps.subscribe::<u32>("a.b").unwrap();
    assert_eq!(sub.pattern().as_str(), "a.b");
    assert_eq!(sub.capacity(), yuki_pubsub::DEFAULT_CAPACITY);
    assert_eq!(sub.try_recv().unwrap_err(), Error::Empty);
    assert_eq!(
        sub.recv_timeout(Duration::from_millis(10)).unwrap_err(),
        Error::Timeout(Duration::from_millis(10))
    );
    assert_eq!(ps.publish("a.b", &1u32).unwrap(), 1);
    assert_eq!(ps.publish("a.c", &9u32).unwrap(), 0);
    assert_eq!(ps.publish("a.b", &2u32).unwrap(), 1);
    assert_eq!(ps.publish("a.b", &3u32).unwrap(), 1);
    assert_eq!(sub.len(), 3);
    assert!(!sub.is_empty());
    let m = sub.recv().unwrap();
    assert_eq!((m.topic(), *m.value()), ("a.b", 1));
    assert_eq!(value(sub.try_recv()), 2);
    assert_eq!(value(sub.recv_timeout(WAIT)), 3);
    assert!(sub.is_empty());
    assert!(format!("{sub:?}").contains("a.b"));
    assert!(format!("{ps:?}").contains("local"));
    drop(sub);
    assert_eq!(ps.publish("a.b", &4u32).unwrap(), 0);
}

#[test]
fn invalid_topics_and_patterns_are_errors_everywhere() {
    let n = net(1);
    let child = &n.children[0].1;
    for ps in [&n.main, child, &PubSub::local()] {
        assert!(matches!(
            ps.publish("a..b", &1u8),
            Err(Error::InvalidTopic { .. })
        ));
        assert!(matches!(
            ps.publish("a.*", &1u8),
            Err(Error::InvalidTopic { .. })
        ));
        assert!(matches!(
            ps.subscribe::<u8>("a.>.b"),
            Err(Error::InvalidPattern { .. })
        ));
        assert!(matches!(
            ps.on_message("", |_: Message<u8>| {}),
            Err(Error::InvalidPattern { .. })
        ));
    }
}

#[test]
fn fan_out_from_main_to_four_children_exact_and_wildcard() {
    let n = net(4);
    let exact: Vec<_> = n
        .children
        .iter()
        .map(|(_, p)| p.subscribe::<String>("news.sport").unwrap())
        .collect();
    let wild: Vec<_> = n
        .children
        .iter()
        .map(|(_, p)| p.subscribe::<String>("news.*").unwrap())
        .collect();
    let deep: Vec<_> = n
        .children
        .iter()
        .map(|(_, p)| p.subscribe::<String>("news.>").unwrap())
        .collect();

    // Three matching subscriptions per child, one push per child.
    assert_eq!(n.main.publish("news.sport", "goal").unwrap(), 12);
    for (t, _) in &n.children {
        assert_eq!(n.tap.pushes(t.peer_id()), 1);
    }
    assert_eq!(n.main.publish("news.weather", "rain").unwrap(), 8);
    assert_eq!(n.main.publish("news.weather.today", "sun").unwrap(), 4);
    assert_eq!(n.main.publish("other", "x").unwrap(), 0);
    for s in &exact {
        assert_eq!(value(s.recv_timeout(WAIT)), "goal");
        assert!(s.is_empty());
    }
    for s in &wild {
        assert_eq!(value(s.recv_timeout(WAIT)), "goal");
        assert_eq!(value(s.recv_timeout(WAIT)), "rain");
        assert!(s.is_empty());
    }
    for s in &deep {
        for want in ["goal", "rain", "sun"] {
            assert_eq!(value(s.recv_timeout(WAIT)), want);
        }
    }
    assert!(format!("{:?}", n.main).contains("main"));
    assert!(format!("{:?}", n.children[0].1).contains("child"));
}

#[test]
fn fan_out_from_a_child_to_four_children_and_main() {
    let n = net(5);
    let publisher = &n.children[4].1;
    let subs: Vec<_> = n.children[..4]
        .iter()
        .map(|(_, p)| p.subscribe::<u64>("jobs.*.done").unwrap())
        .collect();
    let in_main = n.main.subscribe::<u64>("jobs.>").unwrap();
    assert_eq!(publisher.publish("jobs.7.done", &7u64).unwrap(), 5);
    assert_eq!(publisher.publish("jobs.7.started", &8u64).unwrap(), 1);
    for s in &subs {
        assert_eq!(value(s.recv_timeout(WAIT)), 7);
    }
    assert_eq!(value(in_main.recv_timeout(WAIT)), 7);
    assert_eq!(value(in_main.recv_timeout(WAIT)), 8);
    // The publisher itself receives what it subscribed to.
    let own = publisher.subscribe::<u64>("jobs.*.done").unwrap();
    assert_eq!(publisher.publish("jobs.8.done", &9u64).unwrap(), 6);
    assert_eq!(value(own.recv_timeout(WAIT)), 9);
}

#[test]
fn dropping_the_last_subscription_stops_forwarding() {
    let n = net(1);
    let (t, child) = &n.children[0];
    let a = child.subscribe::<u8>("t.*").unwrap();
    let b = child.subscribe::<u8>("t.*").unwrap();
    assert_eq!(n.main.publish("t.x", &1u8).unwrap(), 2);
    drop(a);
    assert_eq!(n.main.publish("t.x", &2u8).unwrap(), 1);
    assert_eq!(n.tap.pushes(t.peer_id()), 2);
    drop(b);
    assert_eq!(n.main.publish("t.x", &3u8).unwrap(), 0);
    assert_eq!(
        n.tap.pushes(t.peer_id()),
        2,
        "no push after the last unsubscribe"
    );
}

#[test]
fn attaching_twice_shares_one_state() {
    let main_t: Arc<dyn Transport> = InThreadTransport::main();
    let a = PubSub::attach(main_t.clone()).unwrap();
    let b = PubSub::attach(main_t).unwrap();
    let sub = a.subscribe::<u8>("x").unwrap();
    assert_eq!(b.publish("x", &5u8).unwrap(), 1);
    assert_eq!(value(sub.try_recv()), 5);
}

#[test]
fn a_child_before_main_attached_is_told_so() {
    let main_t = InThreadTransport::main();
    let child = PubSub::attach(main_t.connect("c").unwrap()).unwrap();
    assert_eq!(child.publish("x", &1u8).unwrap_err(), Error::NotAttached);
    assert_eq!(child.subscribe::<u8>("x").unwrap_err(), Error::NotAttached);
    assert!(Error::NotAttached.to_string().contains("PubSub::attach"));
}

#[test]
fn per_publisher_order_with_concurrent_publishers() {
    const PER: u64 = 2000;
    let n = net(3);
    let in_main = n
        .main
        .with_capacity(10_000)
        .subscribe::<(u64, u64)>("seq.*")
        .unwrap();
    let in_child = n.children[2]
        .1
        .with_capacity(10_000)
        .subscribe::<(u64, u64)>("seq.>")
        .unwrap();
    let publishers = vec![
        n.main.clone(),
        n.children[0].1.clone(),
        n.children[1].1.clone(),
    ];
    let start = Arc::new(Barrier::new(publishers.len()));
    let handles: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(id, ps)| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                for seq in 0..PER {
                    assert_eq!(
                        ps.publish(&format!("seq.p{id}"), &(id as u64, seq))
                            .unwrap(),
                        2
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for sub in [&in_main, &in_child] {
        let mut next = [0u64; 3];
        for _ in 0..3 * PER {
            let (id, seq) = value(sub.recv_timeout(WAIT));
            assert_eq!(seq, next[id as usize], "publisher {id} out of order");
            next[id as usize] += 1;
        }
        assert_eq!(next, [PER; 3]);
        assert!(sub.is_empty());
    }
}

#[test]
fn a_stuck_subscriber_loses_the_oldest_and_learns_how_many() {
    let n = net(2);
    let stuck = n.children[0]
        .1
        .with_capacity(8)
        .subscribe::<u32>("lag")
        .unwrap();
    let reader = n.children[1]
        .1
        .with_capacity(8)
        .subscribe::<u32>("lag")
        .unwrap();
    let got = thread::scope(|s| {
        let got = s.spawn(|| {
            (0..100)
                .map(|_| value(reader.recv_timeout(WAIT)))
                .collect::<Vec<_>>()
        });
        for i in 0..100u32 {
            assert_eq!(n.main.publish("lag", &i).unwrap(), 2);
            // Keep the reader within its buffer; the stuck one never reads.
            let deadline = std::time::Instant::now() + WAIT;
            while reader.len() >= 4 {
                assert!(std::time::Instant::now() < deadline, "the reader stopped");
                thread::yield_now();
            }
        }
        got.join().unwrap()
    });
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert_eq!(stuck.try_recv().unwrap_err(), Error::Lagged(92));
    let rest: Vec<_> = (0..8).map(|_| value(stuck.try_recv())).collect();
    assert_eq!(rest, (92..100).collect::<Vec<_>>());
    assert_eq!(stuck.try_recv().unwrap_err(), Error::Empty);
    assert!(Error::Lagged(3).to_string().contains("larger capacity"));
}

#[test]
fn a_child_that_does_not_read_its_pushes_gets_lag_not_a_stall() {
    let n = net(2);
    let (slow_t, slow) = &n.children[0];
    let a = slow.subscribe::<u32>("feed.*").unwrap();
    let b = slow.subscribe::<u32>("feed.>").unwrap();
    let other = n.children[1].1.subscribe::<u32>("feed.x").unwrap();
    assert_eq!(n.main.publish("feed.x", &0u32).unwrap(), 3);
    n.tap.stick(Some(slow_t.peer_id()));
    for i in 1..=5u32 {
        // Only the reading child's subscription is reached.
        assert_eq!(n.main.publish("feed.x", &i).unwrap(), 1);
    }
    n.tap.stick(None);
    assert_eq!(n.main.publish("feed.x", &6u32).unwrap(), 3);
    for s in [&a, &b] {
        assert_eq!(value(s.try_recv()), 0);
        assert_eq!(s.try_recv().unwrap_err(), Error::Lagged(5));
        assert_eq!(value(s.try_recv()), 6);
    }
    let all: Vec<_> = (0..7).map(|_| value(other.try_recv())).collect();
    assert_eq!(all, (0..7).collect::<Vec<_>>());
}

#[test]
fn a_child_disconnected_while_subscribed_only_changes_the_count() {
    let n = net(3);
    let subs: Vec<_> = n
        .children
        .iter()
        .map(|(_, p)| p.subscribe::<u8>("bye").unwrap())
        .collect();
    let publisher = &n.children[2].1;
    assert_eq!(publisher.publish("bye", &1u8).unwrap(), 3);
    n.children[0].0.disconnect("killed");
    assert_eq!(publisher.publish("bye", &2u8).unwrap(), 2);
    assert_eq!(n.main.publish("bye", &3u8).unwrap(), 2);
    assert_eq!(value(subs[1].try_recv()), 1);
    assert_eq!(value(subs[1].try_recv()), 2);
    assert_eq!(value(subs[1].try_recv()), 3);
}

#[test]
fn when_main_goes_away_blocked_receivers_wake_disconnected() {
    let n = net(1);
    let child = n.children[0].1.clone();
    let sub = child.subscribe::<u8>("x").unwrap();
    let iter_sub = child.subscribe::<u8>("y").unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        ready_tx.send(()).unwrap();
        done_tx.send(sub.recv()).unwrap();
    });
    ready_rx.recv_timeout(WAIT).unwrap();
    n.tap.inner().disconnect("main exits");
    assert!(matches!(
        done_rx
            .recv_timeout(WAIT)
            .expect("the disconnection woke the receiver"),
        Err(Error::Disconnected(_))
    ));
    assert!(iter_sub.iter().next().is_none());
    assert!(iter_sub.into_iter().next().is_none());
    assert!(matches!(
        child.subscribe::<u8>("x"),
        Err(Error::Disconnected(_))
    ));
    assert!(matches!(
        child.publish("x", &1u8),
        Err(Error::Disconnected(_))
    ));
}

#[test]
fn decode_errors_name_topic_and_type_and_the_subscription_goes_on() {
    let ps = PubSub::local();
    let sub = ps.subscribe::<u32>("mixed.*").unwrap();
    ps.publish("mixed.text", "not a number at all").unwrap();
    ps.publish("mixed.num", &42u32).unwrap();
    match sub.try_recv() {
        Err(Error::Decode {
            topic, type_name, ..
        }) => {
            assert_eq!(topic, "mixed.text");
            assert_eq!(type_name, "u32");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(value(sub.try_recv()), 42);
}

#[test]
fn sync_handlers_in_every_process_survive_a_panicking_neighbour() {
    let n = net(1);
    let (tx, rx) = crossbeam_like();
    let tx2 = tx.clone();
    let bad = n
        .main
        .on_message("h.*", |m: Message<u32>| {
            if *m.value() == 1 {
                panic!("handler fails on purpose");
            }
        })
        .unwrap();
    let good_main = n
        .main
        .on_message("h.*", move |m: Message<u32>| {
            tx.lock().unwrap().send(("main", *m.value())).unwrap()
        })
        .unwrap();
    let good_child = n.children[0]
        .1
        .on_message("h.>", move |m: Message<u32>| {
            tx2.lock().unwrap().send(("child", *m.value())).unwrap()
        })
        .unwrap();
    assert_eq!(good_child.pattern().as_str(), "h.>");
    assert!(format!("{bad:?}").contains("h.*"));
    assert_eq!(n.children[0].1.publish("h.a", &1u32).unwrap(), 3);
    assert_eq!(n.main.publish("h.a", &2u32).unwrap(), 3);
    let mut seen: Vec<_> = (0..4).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    seen.sort();
    assert_eq!(seen, [("child", 1), ("child", 2), ("main", 1), ("main", 2)]);
    bad.stop();
    drop(good_main);
    assert_eq!(n.main.publish("h.a", &3u32).unwrap(), 1);
    good_child.detach();
    assert_eq!(n.main.publish("h.a", &4u32).unwrap(), 1);
}

type Tx = Arc<Mutex<std::sync::mpsc::Sender<(&'static str, u32)>>>;

fn crossbeam_like() -> (Tx, std::sync::mpsc::Receiver<(&'static str, u32)>) {
    let (tx, rx) = std::sync::mpsc::channel();
    (Arc::new(Mutex::new(tx)), rx)
}

#[test]
fn async_handler_in_main_on_a_tokio_runtime() {
    let n = net(1);
    assert_eq!(
        n.main
            .on_message_async("a", |_: Message<u8>| async {})
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
        n.main
            .on_message_async("async.*", move |m: Message<u32>| {
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
    let child = &n.children[0].1;
    for i in 0..5u32 {
        assert_eq!(child.publish("async.x", &i).unwrap(), 1);
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
    assert_eq!(n.main.publish("async.x", &9u32).unwrap(), 0);
}

#[test]
fn async_receive_stream_and_publish() {
    let n = net(1);
    let child = n.children[0].1.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut stream = child.subscribe::<String>("s.>").unwrap();
        let single = n.main.subscribe::<String>("s.one").unwrap();
        assert_eq!(child.publish_async("s.one", "a").await.unwrap(), 2);
        assert_eq!(n.main.publish_async("s.two", "b").await.unwrap(), 1);
        assert!(matches!(
            child.publish_async("bad..", "c").await,
            Err(Error::InvalidTopic { .. })
        ));
        assert_eq!(single.recv_async().await.unwrap().into_value(), "a");
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!((first.topic(), first.value().as_str()), ("s.one", "a"));
        assert_eq!(stream.next().await.unwrap().unwrap().into_value(), "b");
        // A receiver waiting before the message arrives is woken.
        let publisher = n.main.clone();
        let sender = tokio::spawn(async move {
            tokio::task::yield_now().await;
            publisher.publish("s.three", "c").unwrap()
        });
        assert_eq!(
            tokio::time::timeout(WAIT, stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
                .into_value(),
            "c"
        );
        assert_eq!(sender.await.unwrap(), 1);
        n.tap.inner().disconnect("main exits");
        assert!(
            tokio::time::timeout(WAIT, stream.next())
                .await
                .unwrap()
                .is_none()
        );
    });
}

#[test]
fn many_subscriptions_count_exactly() {
    let n = net(2);
    let counter = Arc::new(AtomicU64::new(0));
    let mut keep = Vec::new();
    for (_, p) in &n.children {
        for pattern in ["c.a.b", "c.*.b", "c.>", "*.a.*", ">", "c.a"] {
            keep.push(p.subscribe::<u8>(pattern).unwrap());
        }
    }
    for pattern in ["c.a.b", "x.>"] {
        keep.push(n.main.subscribe::<u8>(pattern).unwrap());
    }
    counter.fetch_add(
        n.main.publish("c.a.b", &1u8).unwrap() as u64,
        Ordering::SeqCst,
    );
    assert_eq!(counter.load(Ordering::SeqCst), 2 * 5 + 1);
    assert_eq!(n.children[0].1.publish("c.a", &1u8).unwrap(), 2 * 3);
}

#[test]
fn batches_keep_order_count_deliveries_and_split_into_frames() {
    let n = net(3);
    let subs: Vec<_> = n.children[..2]
        .iter()
        .map(|(_, p)| p.with_capacity(20_000).subscribe::<u64>("b.*").unwrap())
        .collect();
    let in_main = n
        .main
        .with_capacity(20_000)
        .subscribe::<u64>("b.>")
        .unwrap();
    let pushes_before = n.tap.pushes(n.children[0].0.peer_id());
    let values: Vec<u64> = (0..10_000).collect();
    // About 20 bytes a message: several frames of 64 KiB per child.
    assert_eq!(n.main.publish_batch("b.x", &values).unwrap(), 3 * 10_000);
    let pushes = n.tap.pushes(n.children[0].0.peer_id()) - pushes_before;
    assert!((2..=10).contains(&pushes), "{pushes} pushes for one batch");
    let from_child: Vec<u64> = (10_000..10_100).collect();
    assert_eq!(
        n.children[2].1.publish_batch("b.y", &from_child).unwrap(),
        300
    );
    assert_eq!(
        n.children[2].1.publish_batch("b.y", &[] as &[u64]).unwrap(),
        0
    );
    for sub in subs.iter().chain([&in_main]) {
        for want in 0..10_100 {
            assert_eq!(value(sub.try_recv()), want);
        }
        assert!(sub.is_empty());
    }
    assert!(matches!(
        n.main.publish_batch("b..x", &values),
        Err(Error::InvalidTopic { .. })
    ));
}

#[test]
fn a_lost_batch_is_lag_of_its_length() {
    let n = net(1);
    let (t, child) = &n.children[0];
    let sub = child.subscribe::<u8>("lb").unwrap();
    n.tap.stick(Some(t.peer_id()));
    assert_eq!(n.main.publish_batch("lb", &[1u8, 2, 3]).unwrap(), 0);
    n.tap.stick(None);
    assert_eq!(n.main.publish_batch("lb", &[4u8]).unwrap(), 1);
    assert_eq!(sub.try_recv().unwrap_err(), Error::Lagged(3));
    assert_eq!(value(sub.try_recv()), 4);
}

#[test]
fn a_message_too_large_for_the_transport_is_an_error_in_main() {
    let main_t = InThreadTransport::with_max_frame(256);
    let main = PubSub::attach(main_t.clone()).unwrap();
    let child = PubSub::attach(main_t.connect("c").unwrap()).unwrap();
    let _sub = child.subscribe::<Vec<u8>>("big").unwrap();
    let big = vec![0u8; 300];
    for result in [
        main.publish("big", &big),
        main.publish_batch("big", [&big]),
        child.publish("big", &big),
    ] {
        assert!(
            matches!(
                result,
                Err(Error::Transport(yuki_channel::Error::FrameTooLarge { .. }))
            ),
            "{result:?}"
        );
    }
    assert_eq!(main.publish("big", &vec![0u8; 100]).unwrap(), 1);
}

/// A value that cannot be encoded.
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to be encoded"))
    }
}

#[test]
fn a_message_that_cannot_be_encoded_is_an_error() {
    let n = net(1);
    let child = &n.children[0].1;
    for ps in [&n.main, child] {
        assert!(matches!(
            ps.publish("e", &Unencodable),
            Err(Error::Encode { .. })
        ));
        assert!(matches!(
            ps.publish_batch("e", [&Unencodable]),
            Err(Error::Encode { .. })
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(matches!(
            rt.block_on(ps.publish_async("e", &Unencodable)),
            Err(Error::Encode { .. })
        ));
    }
}

#[test]
fn handles_are_clone_send_and_sync() {
    fn clone_send_sync<T: Clone + Send + Sync>() {}
    fn send_sync<T: Send + Sync>() {}
    clone_send_sync::<PubSub>();
    // A subscription moves to another thread whatever its message type.
    send_sync::<yuki_pubsub::Subscription<std::rc::Rc<u8>>>();
    send_sync::<yuki_pubsub::Listener>();
}

#[test]
fn a_held_subscriber_loses_the_oldest_and_learns_every_loss_even_at_the_end() {
    let n = net(2);
    let (t, child) = &n.children[0];
    let child = child.with_capacity(64);
    let subs = [
        child.subscribe::<u32>("flood.*").unwrap(),
        child.subscribe::<u32>("flood.a").unwrap(),
    ];
    let other = n.children[1].1.subscribe::<u32>("flood.a").unwrap();
    // Held and released stretches, like a process stopped and continued;
    // the flood ends held, and nothing is published after the release.
    let mut seq = 0u32;
    for _ in 0..8 {
        n.tap.hold(t.peer_id(), 100);
        for i in 0..300 {
            if i % 3 == 0 {
                let batch: Vec<u32> = (seq..seq + 10).collect();
                n.main.publish_batch("flood.a", &batch).unwrap();
                seq += 10;
            } else {
                n.main.publish("flood.a", &seq).unwrap();
                seq += 1;
            }
            // The reading child keeps up: it never lags.
            loop {
                match other.try_recv() {
                    Ok(_) => {}
                    Err(Error::Empty) => break,
                    Err(e) => panic!("the reading child: {e}"),
                }
            }
        }
        n.tap.release();
    }
    for sub in &subs {
        let (mut received, mut lagged, mut last) = (0u32, 0u64, None);
        loop {
            match sub.try_recv() {
                Ok(m) => {
                    let v = m.into_value();
                    assert!(last.is_none_or(|l| v > l), "{v} after {last:?}");
                    last = Some(v);
                    received += 1;
                }
                Err(Error::Lagged(k)) => lagged += k,
                Err(Error::Empty) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            lagged > 0,
            "the held child lost nothing: the test is too gentle"
        );
        assert_eq!(
            u64::from(received) + lagged,
            u64::from(seq),
            "every message arrived or was reported lost"
        );
        assert_eq!(last, Some(seq - 1), "the last message published arrived");
    }
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
        Err(Error::Decode {
            topic: t,
            written,
            type_name,
            reason,
        }) => {
            assert_eq!((t.as_str(), written.as_str()), (topic, published));
            assert_eq!(type_name, std::any::type_name::<M>());
            let message = Error::Decode {
                topic: t,
                written,
                type_name,
                reason,
            }
            .to_string();
            assert!(
                message.contains(topic) && message.contains(published),
                "{message}"
            );
        }
        other => panic!("expected a decode error naming {topic} and {published}, got {other:?}"),
    }
}

#[test]
fn a_message_of_another_type_is_the_same_value_or_an_error_naming_topic_and_types() {
    let n = net(1);
    let child = &n.children[0].1;
    // Both directions: main to a child, a child to main.
    for (publisher, subscriber) in [(&n.main, child), (child, &n.main)] {
        let unsigned = subscriber.subscribe::<u64>("t.int").unwrap();
        let point = subscriber.subscribe::<Size>("t.point").unwrap();
        publisher.publish("t.int", &7i64).unwrap();
        publisher.publish("t.int", &-1i64).unwrap();
        publisher.publish("t.int", "7").unwrap();
        publisher.publish_batch("t.int", &[8i32, -8]).unwrap();
        publisher.publish("t.point", &Point { x: 1, y: 2 }).unwrap();
        publisher.publish("t.point", &Size { w: 3, h: 4 }).unwrap();
        assert_eq!(value(unsigned.recv_timeout(WAIT)), 7);
        wrong(unsigned.recv_timeout(WAIT), "t.int", "i64");
        wrong(unsigned.recv_timeout(WAIT), "t.int", "string");
        assert_eq!(value(unsigned.recv_timeout(WAIT)), 8);
        wrong(unsigned.recv_timeout(WAIT), "t.int", "i32");
        wrong(point.recv_timeout(WAIT), "t.point", "Point");
        assert_eq!(value(point.recv_timeout(WAIT)), Size { w: 3, h: 4 });
        assert_eq!(unsigned.try_recv().unwrap_err(), Error::Empty);
    }
}
