//! Pub/sub across main and children over the in-thread transport: the
//! shared suite, then what only a transport shows (the frames main pushes,
//! a child that stops reading or is cut off, main going away).

mod suite;

use std::sync::Arc;
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

/// Main and five children, for the suite.
struct InThread(Net);

impl suite::Harness for InThread {
    fn main(&self) -> PubSub {
        self.0.main.clone()
    }
    fn child(&self, index: usize) -> PubSub {
        self.0.children[index].1.clone()
    }
}

suite::pubsub_suite!(InThread(net(5)));

fn value<M>(r: yuki_pubsub::Result<Message<M>>) -> M {
    r.unwrap().into_value()
}

#[test]
fn main_pushes_one_frame_per_child_whatever_its_subscriptions() {
    let n = net(4);
    let _subs: Vec<_> = n
        .children
        .iter()
        .flat_map(|(_, p)| {
            ["news.sport", "news.*", "news.>"].map(|pat| p.subscribe::<String>(pat).unwrap())
        })
        .collect();
    // Three matching subscriptions per child, one push per child.
    assert_eq!(n.main.publish("news.sport", "goal").unwrap(), 12);
    for (t, _) in &n.children {
        assert_eq!(n.tap.pushes(t.peer_id()), 1);
    }
    assert_eq!(n.main.publish("other", "x").unwrap(), 0);
    assert_eq!(n.tap.total_pushes(), 4);
    assert!(format!("{:?}", n.main).contains("main"));
    assert!(format!("{:?}", n.children[0].1).contains("child"));
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
fn when_main_goes_away_an_async_stream_ends() {
    let n = net(1);
    let child = n.children[0].1.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut stream = child.subscribe::<String>("s.>").unwrap();
        assert_eq!(n.main.publish_async("s.one", "a").await.unwrap(), 1);
        assert_eq!(stream.next().await.unwrap().unwrap().into_value(), "a");
        n.tap.inner().disconnect("main exits");
        assert!(
            tokio::time::timeout(WAIT, stream.next())
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            child.publish_async("s.two", "b").await,
            Err(Error::Disconnected(_))
        ));
    });
}

#[test]
fn a_batch_travels_in_frames_of_about_64_kib() {
    let n = net(1);
    let (t, child) = &n.children[0];
    let sub = child.with_capacity(20_000).subscribe::<u64>("b.*").unwrap();
    let values: Vec<u64> = (0..10_000).collect();
    // About 20 bytes a message: several frames of 64 KiB per child.
    assert_eq!(n.main.publish_batch("b.x", &values).unwrap(), 10_000);
    let pushes = n.tap.pushes(t.peer_id());
    assert!((2..=10).contains(&pushes), "{pushes} pushes for one batch");
    for want in 0..10_000 {
        assert_eq!(value(sub.try_recv()), want);
    }
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
