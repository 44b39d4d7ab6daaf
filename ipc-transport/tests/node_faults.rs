//! A child that breaks the rules is cut off; main goes on serving the others.

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
    let node = Node::init().unwrap();
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
fn a_child_that_does_not_read_its_pushes_is_backlogged_not_a_memory_leak() {
    if run_child(|_| {
        let node = Node::init().unwrap();
        let t = node.transport();
        // The handler never returns, so the link stops reading.
        t.on_push(
            "firehose",
            Arc::new(|_: &[u8]| {
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
    let node = Node::builder().max_backlog(1 << 20).init().unwrap();
    let t = node.transport();
    let (tx, rx) = crossbeam_channel::bounded(1);
    t.serve(
        "listening",
        Arc::new(move |from: PeerId, _: &[u8], _: &mut Vec<u8>| {
            let _ = tx.try_send(from);
            Ok(())
        }),
    )
    .unwrap();
    let child = node.spawn("sleeper", h.command("sleeper", 0)).unwrap();
    let peer = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(peer, child.id());
    let chunk = vec![0u8; 64 << 10];
    let mut outcome = Ok(());
    // The socket buffers and the backlog fill well within this many pushes.
    for _ in 0..10_000 {
        outcome = t.push(peer, "firehose", &chunk);
        if outcome.is_err() {
            break;
        }
    }
    assert_eq!(outcome, Err(ChannelError::PeerBacklogged(peer)));
    drop(node);
    h.assert_no_leftovers(WAIT);
}
