//! Channels hosted by main over the in-thread transport: the shared suite
//! (`hosted_suite/`), then what is particular to one process: frames per
//! batch, disconnects, several receivers and async forms.

mod hosted_suite;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use yuki_channel::{Channel, ChannelOptions, Error, InThreadTransport, Transport};
use yuki_testkit::Tap;

use hosted_suite::hosted_suite;

const WAIT: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(30);

struct Net {
    main: Arc<InThreadTransport>,
}

impl Net {
    fn new() -> Net {
        Net {
            main: InThreadTransport::main(),
        }
    }
    fn main(&self) -> Arc<dyn Transport> {
        self.main.clone()
    }
    fn child(&self, name: &str) -> (Arc<InThreadTransport>, Arc<dyn Transport>) {
        let c = self.main.connect(name).unwrap();
        (c.clone(), c)
    }
}

impl hosted_suite::Harness for Net {
    fn main(&self) -> Arc<dyn Transport> {
        self.main.clone()
    }
    fn child(&self, name: &str) -> Arc<dyn Transport> {
        self.main.connect(name).unwrap()
    }
    fn children_are_separate(&self) -> bool {
        true
    }
    fn consumer_that_leaves(&self, channel: &str, prefetch: u32, take: usize) {
        let (endpoint, t) = Net::child(self, &format!("leaver of {channel}"));
        let options = ChannelOptions::new().prefetch(prefetch);
        let w = Channel::<u32>::open_with(&t, channel, &options).unwrap();
        let held: Vec<_> = (0..take)
            .map(|_| w.recv_delivery_timeout(WAIT).unwrap())
            .collect();
        endpoint.disconnect("the consumer ended");
        // A process that ends runs no destructors.
        std::mem::forget(held);
        std::mem::forget(w);
    }
}

hosted_suite!(harness Net::new());

/// Both harness files (this one and `channel_hosted_ipc.rs`) generate
/// their tests from the macro, so every body the list names runs over
/// every transport.
#[test]
fn the_suite_list_names_every_generated_test() {
    let listed: Vec<&str> = hosted_suite::ALL.iter().map(|(n, _)| *n).collect();
    assert_eq!(listed, hosted_suite!(names));
    let mut unique = listed.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), listed.len());
}

#[test]
fn many_children_receive_each_item_once_in_order() {
    let net = Net::new();
    let m = Channel::<u64>::open(&net.main(), "work").unwrap();
    let children: Vec<_> = (0..3).map(|i| net.child(&format!("c{i}"))).collect();
    let receivers: Vec<_> = children
        .iter()
        .map(|(_, t)| {
            let c = Channel::<u64>::open(t, "work").unwrap();
            thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match c.recv_timeout(WAIT) {
                        Ok(v) => got.push(v),
                        Err(Error::Closed { .. }) => return got,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let senders: Vec<_> = (0..2u64)
        .map(|s| {
            let (_, t) = net.child(&format!("s{s}"));
            thread::spawn(move || {
                let c = Channel::<u64>::open(&t, "work").unwrap();
                for i in 0..2000 {
                    c.send(s * 10_000 + i).unwrap();
                }
            })
        })
        .collect();
    for i in 0..2000 {
        m.send(20_000 + i).unwrap();
    }
    for s in senders {
        s.join().unwrap();
    }
    m.close();
    let mut all = Vec::new();
    for r in receivers {
        let got = r.join().unwrap();
        // Each sender's items arrive in the order sent.
        for base in [0, 10_000, 20_000] {
            let mine: Vec<_> = got
                .iter()
                .filter(|v| (base..base + 10_000).contains(*v))
                .collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]));
        }
        all.extend(got);
    }
    all.sort_unstable();
    let mut want: Vec<u64> = (0..2000)
        .chain(10_000..12_000)
        .chain(20_000..22_000)
        .collect();
    want.sort_unstable();
    assert_eq!(all, want);
}

#[test]
fn a_busy_queue_costs_one_frame_per_batch() {
    let net = Net::new();
    let tap = Tap::new(net.main.clone());
    let main: Arc<dyn Transport> = tap.clone();
    let m = Channel::<u32>::open(&main, "batch").unwrap();
    let (_c, child) = net.child("c");
    let c =
        Channel::<u32>::open_with(&child, "batch", &ChannelOptions::new().prefetch(64)).unwrap();
    for i in 0..1000 {
        m.send(i).unwrap();
    }
    assert_eq!(tap.total_pushes(), 0, "no credit yet");
    for i in 0..1000 {
        assert_eq!(c.recv_timeout(WAIT), Ok(i));
    }
    let frames = tap.total_pushes();
    // A prefetch of 64, refilled every half window: about 32 items a frame.
    assert!(frames <= 1000 / 16, "{frames} frames for 1000 items");
}

#[test]
fn the_default_prefetch_pushes_one_item_ahead() {
    let net = Net::new();
    let tap = Tap::new(net.main.clone());
    let main: Arc<dyn Transport> = tap.clone();
    let m = Channel::<u32>::open(&main, "one").unwrap();
    let (_c, child) = net.child("c");
    let c = Channel::<u32>::open(&child, "one").unwrap();
    for i in 0..10 {
        m.send(i).unwrap();
    }
    assert_eq!(c.recv_timeout(WAIT), Ok(0));
    // One taken, one pushed ahead in its place: the rest wait in main.
    assert_eq!(m.len(), 8);
    assert_eq!(tap.total_pushes(), 2);
}

#[test]
fn main_leaving_wakes_child_receivers_with_disconnected() {
    let net = Net::new();
    let (_c, child) = net.child("c");
    assert_eq!(
        Channel::<u32>::open(&child, "gone").unwrap_err(),
        Error::NoService("yuki.channel".into()),
        "main serves nothing yet"
    );
    yuki_channel::host_channels(&net.main()).unwrap();
    yuki_channel::host_channels(&net.main()).unwrap();
    let c = Channel::<u32>::open(&child, "gone").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
    let (sync_tx, sync_rx) = crossbeam_channel::bounded(1);
    {
        let c = c.clone();
        let ready = ready_tx.clone();
        thread::spawn(move || {
            ready.send(()).unwrap();
            sync_tx.send(c.recv()).unwrap();
        });
    }
    let async_waiter = {
        let c = c.clone();
        rt.spawn(async move {
            ready_tx.send(()).unwrap();
            c.recv_async().await
        })
    };
    ready_rx.recv_timeout(WAIT).unwrap();
    ready_rx.recv_timeout(WAIT).unwrap();
    net.main.disconnect("main exits");
    assert!(matches!(
        sync_rx
            .recv_timeout(WAIT)
            .expect("the disconnection woke the receiver"),
        Err(Error::Disconnected(_))
    ));
    let r = rt
        .block_on(async { tokio::time::timeout(WAIT, async_waiter).await })
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(Error::Disconnected(_))));
    let err = c.send(5).unwrap_err();
    assert!(matches!(err.error(), Error::Disconnected(_)));
    assert_eq!(err.into_inner(), 5);
    assert!(matches!(c.try_recv(), Err(Error::Disconnected(_))));
    assert!(matches!(c.recv_timeout(SHORT), Err(Error::Disconnected(_))));
    assert_eq!(c.len(), 0, "only what this process holds");
    assert!(c.is_empty());
    assert!(!c.close(), "cannot reach main to close");
    assert!(matches!(
        Channel::<u32>::open(&child, "other"),
        Err(Error::Disconnected(_))
    ));
}

#[test]
fn opening_again_shares_the_channel_and_checks_the_type() {
    let net = Net::new();
    let (_c, child) = net.child("c");
    for t in [net.main(), child.clone()] {
        let a = Channel::<u32>::open(&t, "one").unwrap();
        let b = Channel::<u32>::open(&t, "one").unwrap();
        assert!(a.same_channel(&b));
        let err = Channel::<String>::open(&t, "one").unwrap_err();
        assert!(matches!(err, Error::WrongType { .. }), "{err}");
        assert!(err.to_string().contains("u32"));
        // Another name on the same transport shares the one service.
        Channel::<u8>::open(&t, "two").unwrap();
    }
}

#[test]
fn the_first_opener_sets_the_item_type_even_a_child() {
    let net = Net::new();
    let (_a, first) = net.child("a");
    let (_b, second) = net.child("b");
    yuki_channel::host_channels(&net.main()).unwrap();
    Channel::<u8>::open(&first, "t").unwrap();
    let err = Channel::<i64>::open(&second, "t").unwrap_err();
    assert!(err.to_string().contains("u8") && err.to_string().contains("i64"));
    let err = Channel::<String>::open(&net.main(), "t").unwrap_err();
    assert!(
        matches!(
            &err,
            Error::ChannelTypeMismatch { requested, actual, .. }
                if requested.contains("String") && actual == "u8"
        ),
        "{err}"
    );
}

#[test]
fn passive_and_async_receive_in_a_child() {
    let net = Net::new();
    let (_c, child) = net.child("c");
    let m = Channel::<u32>::open(&net.main(), "p").unwrap();
    let c = Channel::<u32>::open(&child, "p").unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    c.on_receive(|n| n % 2 == 1, move |n| tx.send(*n).unwrap());
    let dispatcher = c.start_receive_loop().unwrap();
    assert!(matches!(c.recv(), Err(Error::ReceiveLoopRunning { .. })));
    for n in 0..10 {
        m.send(n).unwrap();
    }
    let got: Vec<_> = (0..5).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    assert_eq!(got, vec![1, 3, 5, 7, 9]);
    dispatcher.stop();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c2 = c.clone();
    let task = rt.spawn(async move { c2.recv_async().await });
    m.send(42).unwrap();
    let r = rt.block_on(async { tokio::time::timeout(WAIT, task).await });
    assert_eq!(r.unwrap().unwrap(), Ok(42));
}

#[test]
fn a_handle_keeps_its_transport_and_reopening_keeps_prefetched_items() {
    let net = Net::new();
    let m = Channel::<u32>::open(&net.main(), "keep").unwrap();
    let c = {
        let (_c, child) = net.child("c");
        Channel::<u32>::open(&child, "keep").unwrap()
    };
    // Only the handle holds the child's transport now.
    assert!(c.try_recv().is_err());
    m.send(1).unwrap();
    m.send(2).unwrap();
    assert_eq!(c.recv_timeout(WAIT), Ok(1));
    let (_d, other) = net.child("d");
    let o = Channel::<u32>::open(&other, "keep").unwrap();
    m.send(3).unwrap();
    drop(o);
    // Item 3 may have been pushed to the dropped handle's process: a new
    // handle there still receives it.
    let o = Channel::<u32>::open(&other, "keep").unwrap();
    let mut rest = vec![c.recv_timeout(WAIT).unwrap()];
    rest.extend(o.try_recv().ok());
    rest.extend(c.try_recv().ok());
    rest.sort_unstable();
    assert_eq!(rest, vec![2, 3]);
}

#[test]
fn large_items_travel_in_frames_that_fit() {
    let network = InThreadTransport::with_max_frame(4096);
    let main: Arc<dyn Transport> = network.clone();
    let child: Arc<dyn Transport> = network.connect("c").unwrap();
    let m = Channel::<Vec<u8>>::open(&main, "big").unwrap();
    let c = Channel::<Vec<u8>>::open(&child, "big").unwrap();
    // Too large to ever be pushed: refused with the value back.
    let err = m.send(vec![0; 5000]).unwrap_err();
    assert!(matches!(err.error(), Error::FrameTooLarge { .. }), "{err}");
    assert_eq!(err.into_inner().len(), 5000);
    let err = c.send(vec![0; 5000]).unwrap_err();
    assert!(matches!(err.error(), Error::FrameTooLarge { .. }), "{err}");
    // Many items that fit alone but not together.
    for i in 0..20u8 {
        m.send(vec![i; 1000]).unwrap();
    }
    for i in 0..20u8 {
        assert_eq!(c.recv_timeout(WAIT).unwrap(), vec![i; 1000]);
    }
}

#[test]
fn main_async_receivers_and_children_share_the_items() {
    let net = Net::new();
    let (_c, child) = net.child("c");
    let m = Channel::<u32>::open(&net.main(), "share").unwrap();
    let c = Channel::<u32>::open(&child, "share").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A main receive that gives up does not keep an item back from the child.
    rt.block_on(async {
        let r = tokio::time::timeout(Duration::from_millis(20), m.recv_async()).await;
        assert!(r.is_err());
    });
    assert!(c.try_recv().is_err(), "grants credit");
    m.send(1).unwrap();
    assert_eq!(c.recv_timeout(WAIT), Ok(1));

    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let m = m.clone();
            rt.spawn(async move {
                let mut got = Vec::new();
                while let Ok(v) = m.recv_async().await {
                    got.push(v);
                }
                got
            })
        })
        .collect();
    let child_rx = {
        let c = c.clone();
        thread::spawn(move || {
            let mut got = Vec::new();
            while let Ok(v) = c.recv_timeout(WAIT) {
                got.push(v);
            }
            got
        })
    };
    for i in 2..1000 {
        c.send(i).unwrap();
    }
    m.close();
    let mut all = child_rx.join().unwrap();
    rt.block_on(async {
        for t in tasks {
            all.extend(tokio::time::timeout(WAIT, t).await.unwrap().unwrap());
        }
    });
    all.sort_unstable();
    assert_eq!(all, (2..1000).collect::<Vec<_>>());
}
