//! Who may join, where the rendezvous lives, and who reads what: the
//! handshake socket sits in a directory only the owning user can open, and a
//! child never receives pushes meant for another.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use yuki_channel::{BOOTSTRAP_ENV, Channel, PeerId, codec};
use yuki_ipc_transport::Node;
use yuki_pubsub::PubSub;
use yuki_storage::Store;
use yuki_testkit::{Harness, run_child};

use common::{Kids, WAIT};

const MESSAGES: u64 = 100;
/// Every stream main pushes on: pub/sub, hosted channels, store watches.
const STREAMS: [&str; 3] = ["yuki.pubsub", "yuki.channel", "yuki.store.watch"];

/// Before joining, looks at the rendezvous the parent prepared.
fn inspect_rendezvous() -> String {
    let value = std::env::var(BOOTSTRAP_ENV).unwrap();
    let server = value.splitn(4, ' ').nth(3).unwrap().to_owned();
    let socket = std::path::Path::new(&server);
    let dir = socket.parent().unwrap();
    let d = std::fs::metadata(dir).unwrap();
    let s = std::fs::metadata(socket).unwrap();
    // SAFETY: getuid has no failure mode.
    let me = unsafe { libc::getuid() };
    format!(
        "{:o} {:o} {} {}",
        d.permissions().mode() & 0o777,
        s.permissions().mode() & 0o777,
        d.uid() == me,
        s.uid() == me
    )
}

fn receiver() {
    let modes = inspect_rendezvous();
    let node = Node::init().unwrap();
    let t = node.transport();
    let store = Store::attach(t.clone()).unwrap();
    let pubsub = PubSub::attach(t.clone()).unwrap();
    let sub = pubsub.subscribe::<u64>("secret.*").unwrap();
    let private = Channel::<u64>::open(&t, "private").unwrap();
    let watch = store.watch("secret.").unwrap();
    store.set("modes", &modes).unwrap();
    store.set("receiver.ready", &1u8).unwrap();
    for i in 0..MESSAGES {
        assert_eq!(sub.recv_timeout(WAIT).unwrap().into_value(), i);
        assert_eq!(private.recv_timeout(WAIT).unwrap(), i);
        watch.recv_timeout(WAIT).unwrap();
    }
    store.set("receiver.done", &1u8).unwrap();
}

/// Listens on every stream without subscribing to anything.
fn snoop() {
    let node = Node::init().unwrap();
    let t = node.transport();
    let pushes = Arc::new(AtomicUsize::new(0));
    for stream in STREAMS {
        let p = pushes.clone();
        t.on_push(
            stream,
            Arc::new(move |_: &[u8]| {
                p.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
    }
    // Main answers once the receiver has had everything.
    t.call("snoop.wait", b"").unwrap();
    let n = pushes.load(Ordering::SeqCst) as u64;
    t.call("snoop.report", &codec::encode(&n).unwrap()).unwrap();
}

#[test]
fn the_rendezvous_is_private_and_no_child_reads_anothers_pushes() {
    if run_child(|s| match s.name() {
        "receiver" => receiver(),
        "snoop" => snoop(),
        other => panic!("unknown scenario {other}"),
    }) {
        return;
    }
    let h = Harness::new().timeout(Duration::from_secs(60));
    let node = Node::builder().independent_main().init().unwrap();
    let t = node.transport();
    let store = Store::attach(t.clone()).unwrap();
    let pubsub = PubSub::attach(t.clone()).unwrap();
    let private = Channel::<u64>::open(&t, "private").unwrap();
    let (waiting_tx, waiting_rx) = crossbeam_channel::bounded::<()>(1);
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(1);
    t.serve(
        "snoop.wait",
        Arc::new(move |_: PeerId, _: &[u8], _: &mut Vec<u8>| {
            let _ = waiting_tx.send(());
            let _ = go_rx.recv_timeout(WAIT);
            Ok(())
        }),
    )
    .unwrap();
    let (report_tx, report_rx) = crossbeam_channel::bounded::<u64>(1);
    t.serve(
        "snoop.report",
        Arc::new(move |_: PeerId, req: &[u8], _: &mut Vec<u8>| {
            let _ = report_tx.send(codec::decode(req)?);
            Ok(())
        }),
    )
    .unwrap();

    let ready = store.watch("receiver.").unwrap();
    let mut kids = Kids::default();
    kids.0
        .push(node.spawn("receiver", h.command("receiver", 0)).unwrap());
    kids.0
        .push(node.spawn("snoop", h.command("snoop", 0)).unwrap());
    ready.recv_timeout(WAIT).expect("the receiver is ready");
    waiting_rx.recv_timeout(WAIT).expect("the snoop listens");
    assert_eq!(
        store.get::<String>("modes").unwrap().as_deref(),
        Some("700 600 true true"),
        "the rendezvous directory and socket must be the user's alone"
    );

    for i in 0..MESSAGES {
        assert_eq!(pubsub.publish("secret.x", &i).unwrap(), 1);
        private.send(i).unwrap();
        store.set("secret.k", &i).unwrap();
    }
    ready
        .recv_timeout(WAIT)
        .expect("the receiver has everything");
    go_tx.send(()).unwrap();
    let snooped = report_rx.recv_timeout(WAIT).expect("the snoop reports");
    assert_eq!(snooped, 0, "a child received pushes meant for another");
    kids.wait_success(WAIT);
    drop(kids);
    drop(node);
    h.assert_no_leftovers(WAIT);
}
