//! A child that breaks the rules is cut off; main goes on serving the others.

use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use yuki_channel::{Error as ChannelError, PeerEvent, PeerId, Transport};
use yuki_ipc_transport::{Node, WhenMainGone};
use yuki_testkit::{Harness, run_child};

const WAIT: Duration = Duration::from_secs(15);

fn serve_echo(t: &Arc<dyn Transport>) {
    t.serve(
        "echo",
        Arc::new(|_: PeerId, req: &[u8], reply: &mut Vec<u8>| {
            if req == b"bad" {
                return Err(ChannelError::disconnected("a request this service refuses"));
            }
            reply.extend_from_slice(req);
            Ok(())
        }),
    )
    .unwrap();
}

fn left_reasons(t: &Arc<dyn Transport>) -> Arc<Mutex<Vec<(PeerId, String)>>> {
    let left = Arc::new(Mutex::new(Vec::new()));
    let l = left.clone();
    t.on_peer_event(Arc::new(move |e| {
        if let PeerEvent::Left { peer, reason } = e {
            l.lock().unwrap().push((*peer, reason.clone()));
        }
    }));
    left
}

#[test]
fn malformed_frames_and_refused_requests_cut_off_only_their_child() {
    if run_child(|s| {
        let node = Node::builder()
            .when_main_gone(WhenMainGone::Stay)
            .init()
            .unwrap();
        let t = node.transport();
        assert_eq!(t.call("echo", b"ok").unwrap(), b"ok");
        match s.name() {
            "garbage" => {
                // A frame that claims more bytes than the message holds.
                node.send_raw_message(&[200, 0, 0, 0, 1, 2]).unwrap();
            }
            "undecodable" => {
                // A well-framed body that is no frame at all.
                node.send_raw_message(&[3, 0, 0, 0, 0xff, 0xff, 0xff])
                    .unwrap();
            }
            "refused" => {
                let r = t.call("echo", b"bad");
                assert!(matches!(r, Err(ChannelError::Disconnected(_))), "{r:?}");
            }
            "good" => {
                for i in 0..500u32 {
                    assert_eq!(t.call("echo", &i.to_le_bytes()).unwrap(), i.to_le_bytes());
                }
                return;
            }
            other => panic!("unknown scenario {other}"),
        }
        // Main closed the link: every later call fails at once.
        let (tx, rx) = crossbeam_channel::bounded(1);
        t.on_peer_event(Arc::new(move |_| {
            let _ = tx.try_send(());
        }));
        if !node.is_disconnected() {
            rx.recv_timeout(WAIT).expect("main cuts the link");
        }
        assert!(matches!(
            t.call("echo", b"x"),
            Err(ChannelError::Disconnected(_))
        ));
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let t = node.transport();
    serve_echo(&t);
    let left = left_reasons(&t);
    let bad: Vec<_> = ["garbage", "undecodable", "refused"]
        .iter()
        .map(|n| node.spawn(n, h.command(n, 0)).unwrap())
        .collect();
    let good = node.spawn("good", h.command("good", 0)).unwrap();
    for c in bad.iter().chain([&good]) {
        let exit = c.wait_timeout(WAIT).expect("it finishes");
        assert!(exit.status.success(), "{}: {exit:?}", c.name());
    }
    let left = left.lock().unwrap().clone();
    let reason = |c: &yuki_ipc_transport::ChildHandle| {
        left.iter()
            .find(|(p, _)| *p == c.id())
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    };
    assert!(reason(&bad[0]).contains("malformed"), "{left:?}");
    assert!(reason(&bad[1]).contains("malformed"), "{left:?}");
    assert!(reason(&bad[2]).contains("refused its request"), "{left:?}");
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_child_that_does_not_read_its_pushes_is_backlogged_then_cut_off() {
    if run_child(|_| {
        let node = Node::init().unwrap();
        let t = node.transport();
        let caller = t.clone();
        // The first push stops the reader for good; a helper thread tells
        // main so (its reply is never read, and that is fine).
        t.on_push(
            "firehose",
            Arc::new(move |_: &[u8]| {
                let caller = caller.clone();
                std::thread::spawn(move || caller.call("blocked", b""));
                let (_tx, rx) = std::sync::mpsc::channel::<()>();
                let _ = rx.recv();
            }),
        )
        .unwrap();
        t.call("listening", b"").unwrap();
        let (_tx, rx) = std::sync::mpsc::channel::<()>();
        let _ = rx.recv();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder()
        .independent_main()
        .max_backlog(16 << 20)
        .stall_timeout(Duration::from_millis(300))
        .init()
        .unwrap();
    let t = node.transport();
    let left = left_reasons(&t);
    let (tx, rx) = crossbeam_channel::unbounded();
    for name in ["listening", "blocked"] {
        let tx = tx.clone();
        t.serve(
            name,
            Arc::new(move |from: PeerId, _: &[u8], _: &mut Vec<u8>| {
                let _ = tx.send(from);
                Ok(())
            }),
        )
        .unwrap();
    }
    let child = node.spawn("sleeper", h.command("sleeper", 0)).unwrap();
    let peer = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(peer, child.id());
    t.push(peer, "firehose", b"stop reading").unwrap();
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap(),
        peer,
        "the child stopped reading"
    );
    // Frames larger than any socket buffer (4 MiB at most by default on
    // Linux): the first send stays blocked, the next pushes queue until the
    // backlog is full.
    let chunk = vec![0u8; 12 << 20];
    let mut outcome = Ok(());
    for _ in 0..10 {
        outcome = t.push(peer, "firehose", &chunk);
        if outcome.is_err() {
            break;
        }
    }
    assert_eq!(outcome, Err(ChannelError::PeerBacklogged(peer)));
    // A child that reads nothing for the stall time-out is cut off and killed.
    let exit = child.wait_timeout(WAIT).expect("the watchdog ends it");
    assert_eq!(exit.status.signal(), Some(libc::SIGKILL));
    let left = left.lock().unwrap().clone();
    assert!(
        left.iter()
            .any(|(p, r)| *p == peer && r.contains("has not read")),
        "{left:?}"
    );
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_child_that_floods_requests_without_reading_replies_is_cut_off() {
    if run_child(|_| {
        let node = Node::init().unwrap();
        let t = node.transport();
        // Main answers "arm" with a push whose handler never returns: from
        // then on nobody in this child reads the link.
        t.on_push(
            "stop",
            Arc::new(|_: &[u8]| {
                let (_tx, rx) = std::sync::mpsc::channel::<()>();
                let _ = rx.recv();
            }),
        )
        .unwrap();
        let t2 = t.clone();
        std::thread::spawn(move || {
            let _ = t2.call("arm", b"");
        });
        let request = vec![0u8; 1024];
        for _ in 0..20_000 {
            t.call_with("echo", &request, Box::new(|_| {}));
        }
        let (_tx, rx) = std::sync::mpsc::channel::<()>();
        let _ = rx.recv();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder()
        .independent_main()
        .stall_timeout(Duration::from_millis(300))
        .init()
        .unwrap();
    let t = node.transport();
    serve_echo(&t);
    let pusher = Arc::downgrade(&t);
    t.serve(
        "arm",
        Arc::new(move |from: PeerId, _: &[u8], _: &mut Vec<u8>| {
            if let Some(t) = pusher.upgrade() {
                t.push(from, "stop", b"")?;
            }
            Ok(())
        }),
    )
    .unwrap();
    let left = left_reasons(&t);
    let child = node.spawn("flooder", h.command("flooder", 0)).unwrap();
    let peer = child.id();
    let exit = child.wait_timeout(WAIT).expect("the watchdog ends it");
    assert_eq!(exit.status.signal(), Some(libc::SIGKILL));
    let left = left.lock().unwrap().clone();
    assert!(
        left.iter()
            .any(|(p, r)| *p == peer && r.contains("has not read")),
        "{left:?}"
    );
    // Main still serves others.
    assert!(t.peers().is_empty());
    drop(node);
    h.assert_no_leftovers(WAIT);
}
