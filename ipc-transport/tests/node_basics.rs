//! A child joins main, calls its services and receives its pushes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use yuki_channel::{Error as ChannelError, PeerEvent, PeerId, Role, Transport};
use yuki_ipc_transport::{Node, WhenMainGone};
use yuki_testkit::{Harness, run_child};

const WAIT: Duration = Duration::from_secs(10);

fn echo(transport: &Arc<dyn Transport>) {
    transport
        .serve(
            "echo",
            Arc::new(|from: PeerId, req: &[u8], reply: &mut Vec<u8>| {
                reply.extend_from_slice(&from.0.to_le_bytes());
                reply.extend_from_slice(req);
                Ok(())
            }),
        )
        .unwrap();
}

fn child_node() -> Node {
    Node::builder()
        .when_main_gone(WhenMainGone::Stay)
        .init()
        .expect("the child joins main")
}

#[test]
fn a_child_joins_and_calls_from_many_threads() {
    if run_child(|_| {
        let node = child_node();
        assert_eq!(node.role(), Role::Child);
        assert_eq!(node.name(), "worker");
        let t = node.transport();
        let me = t.peer_id();
        assert_ne!(me, PeerId::MAIN);
        std::thread::scope(|s| {
            for i in 0..4u32 {
                let t = t.clone();
                s.spawn(move || {
                    for j in 0..200u32 {
                        let req = (i * 1000 + j).to_le_bytes();
                        let reply = t.call("echo", &req).unwrap();
                        assert_eq!(reply[..8], me.0.to_le_bytes());
                        assert_eq!(reply[8..], req);
                    }
                });
            }
        });
        assert_eq!(
            t.call("nope", b""),
            Err(ChannelError::NoService("nope".into()))
        );
        let too_big = vec![0; t.max_frame() + 1];
        assert!(matches!(
            t.call("echo", &too_big),
            Err(ChannelError::FrameTooLarge { .. })
        ));
        assert!(matches!(
            t.serve("x", Arc::new(|_: PeerId, _: &[u8], _: &mut Vec<u8>| Ok(()))),
            Err(ChannelError::WrongRole { .. })
        ));
        assert!(matches!(
            t.push(PeerId::MAIN, "s", b""),
            Err(ChannelError::WrongRole { .. })
        ));
        assert!(t.peers().is_empty());
        assert!(
            node.spawn("grandchild", std::process::Command::new("true"))
                .is_err()
        );
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder()
        .independent_main()
        .max_frame(1 << 16)
        .init()
        .unwrap();
    assert_eq!(node.role(), Role::Main);
    let t = node.transport();
    echo(&t);
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    t.on_peer_event(Arc::new(move |e| ev.lock().unwrap().push(e.clone())));

    let child = node.spawn("worker", h.command("worker", 0)).unwrap();
    assert_eq!(child.name(), "worker");
    assert_eq!(t.peers(), vec![child.id()]);
    let exit = child.wait_timeout(WAIT).expect("the child finishes");
    assert!(exit.status.success(), "{exit:?}");
    assert_eq!(exit.restarts, 0);
    let events = events.lock().unwrap().clone();
    assert_eq!(
        events[0],
        PeerEvent::Joined {
            peer: child.id(),
            name: "worker".into()
        }
    );
    assert!(matches!(events[1], PeerEvent::Left { peer, .. } if peer == child.id()));
    assert!(t.peers().is_empty());
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn main_pushes_reach_the_child_in_order() {
    if run_child(|_| {
        let node = child_node();
        let t = node.transport();
        let (tx, rx) = crossbeam_channel::unbounded();
        t.on_push(
            "numbers",
            Arc::new(move |f: &[u8]| {
                let _ = tx.send(f.to_vec());
            }),
        )
        .unwrap();
        // Tell main we listen, then expect 1000 frames in order.
        t.call("ready", b"").unwrap();
        for i in 0..1000u32 {
            let f = rx.recv_timeout(WAIT).expect("a push");
            assert_eq!(f, i.to_le_bytes());
        }
        t.call("done", b"").unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let t = node.transport();
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
    let ready = ready_tx.clone();
    t.serve(
        "ready",
        Arc::new(move |from: PeerId, _: &[u8], _: &mut Vec<u8>| {
            let _ = ready.send(from);
            Ok(())
        }),
    )
    .unwrap();
    t.serve(
        "done",
        Arc::new(move |from: PeerId, _: &[u8], _: &mut Vec<u8>| {
            let _ = ready_tx.send(from);
            Ok(())
        }),
    )
    .unwrap();
    let child = node.spawn("listener", h.command("listener", 0)).unwrap();
    let peer = ready_rx.recv_timeout(WAIT).unwrap();
    assert_eq!(peer, child.id());
    for i in 0..1000u32 {
        t.push(peer, "numbers", &i.to_le_bytes()).unwrap();
    }
    assert_eq!(ready_rx.recv_timeout(WAIT).unwrap(), peer);
    assert!(child.wait_timeout(WAIT).unwrap().status.success());
    assert_eq!(
        t.push(peer, "numbers", b""),
        Err(ChannelError::NoPeer(peer))
    );
    assert!(matches!(
        t.push(PeerId(999), "numbers", &vec![0; t.max_frame() + 1]),
        Err(ChannelError::FrameTooLarge { .. })
    ));
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn blocking_calls_pipelined_calls_and_pushes_mix_in_one_child() {
    if run_child(|_| {
        let node = child_node();
        let t = node.transport();
        let (push_tx, push_rx) = crossbeam_channel::unbounded();
        t.on_push(
            "ticks",
            Arc::new(move |f: &[u8]| {
                let _ = push_tx.send(f.to_vec());
            }),
        )
        .unwrap();
        let me = t.peer_id();
        std::thread::scope(|s| {
            // Blocking callers, some with pauses so the link changes readers.
            for i in 0..3u32 {
                let t = t.clone();
                s.spawn(move || {
                    for j in 0..300u32 {
                        let req = (i << 16 | j).to_le_bytes();
                        let reply = t.call("echo", &req).unwrap();
                        assert_eq!(reply[8..], req);
                        if j % 50 == 0 {
                            std::thread::yield_now();
                        }
                    }
                });
            }
            // A pipelined caller.
            let t2 = t.clone();
            s.spawn(move || {
                let (done_tx, done_rx) = crossbeam_channel::unbounded();
                for j in 0..2000u32 {
                    let done_tx = done_tx.clone();
                    t2.call_with(
                        "echo",
                        &j.to_le_bytes(),
                        Box::new(move |r| {
                            let _ = done_tx.send((j, r));
                        }),
                    );
                }
                let mut seen = vec![false; 2000];
                for _ in 0..2000 {
                    let (j, r) = done_rx.recv_timeout(WAIT).expect("every callback runs");
                    assert_eq!(r.unwrap()[8..], j.to_le_bytes());
                    seen[j as usize] = true;
                }
                assert!(seen.iter().all(|s| *s));
            });
        });
        // Ask for pushes and take them in order.
        t.call("tick", b"").unwrap();
        for i in 0..500u32 {
            assert_eq!(push_rx.recv_timeout(WAIT).unwrap(), i.to_le_bytes());
        }
        assert_ne!(me, PeerId::MAIN);
    }) {
        return;
    }
    main_pushes_when_called("tick", "ticks", 500, "mixer");
}

#[test]
fn handlers_and_callbacks_may_make_blocking_calls() {
    if run_child(|_| {
        let node = child_node();
        let t = node.transport();
        let (tx, rx) = crossbeam_channel::unbounded();
        let caller = t.clone();
        // Each push handler calls main and waits: the thread that reads the
        // link must not wait for itself, and later pushes keep their order.
        t.on_push(
            "jobs",
            Arc::new(move |f: &[u8]| {
                let reply = caller.call("echo", f).expect("a call from a handler");
                let _ = tx.send((f.to_vec(), reply[8..].to_vec()));
            }),
        )
        .unwrap();
        t.call("start", b"").unwrap();
        for i in 0..200u32 {
            let (pushed, echoed) = rx.recv_timeout(WAIT).expect("every push is handled");
            assert_eq!(pushed, i.to_le_bytes(), "pushes stay in order");
            assert_eq!(echoed, pushed);
        }
        // A reply callback may call too.
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let caller = t.clone();
        t.call_with(
            "echo",
            b"outer",
            Box::new(move |r| {
                let inner = caller.call("echo", b"inner").map(|v| v[8..].to_vec());
                let _ = done_tx.send((r.map(|v| v[8..].to_vec()), inner));
            }),
        );
        let (outer, inner) = done_rx.recv_timeout(WAIT).unwrap();
        assert_eq!(outer.unwrap(), b"outer");
        assert_eq!(inner.unwrap(), b"inner");
    }) {
        return;
    }
    main_pushes_when_called("start", "jobs", 200, "nester");
}

/// Main's side of a test whose child calls `service` to be pushed `count`
/// frames (0, 1, … as `u32`) on `stream`: serves `echo` and `service`, runs
/// the child `scenario` and checks that it succeeded.
fn main_pushes_when_called(
    service: &'static str,
    stream: &'static str,
    count: u32,
    scenario: &str,
) {
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let t = node.transport();
    echo(&t);
    let pusher = Arc::downgrade(&t);
    t.serve(
        service,
        Arc::new(move |from: PeerId, _: &[u8], _: &mut Vec<u8>| {
            let t = pusher.upgrade().expect("main runs");
            for i in 0..count {
                t.push(from, stream, &i.to_le_bytes())?;
            }
            Ok(())
        }),
    )
    .unwrap();
    let child = node.spawn(scenario, h.command(scenario, 0)).unwrap();
    let exit = child.wait_timeout(WAIT).expect("the child finishes");
    assert!(exit.status.success(), "{exit:?}");
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn calls_complete_with_the_reply_spin_off_or_on_at_either_end() {
    // Child 0 blocks at once for every reply; child 1 polls for a long
    // while. Main blocks at once: every combination of spinning and
    // blocking ends answers every call.
    if run_child(|s| {
        let spin = [Duration::ZERO, Duration::from_millis(5)][s.index()];
        let node = Node::builder()
            .when_main_gone(WhenMainGone::Stay)
            .reply_spin(spin)
            .init()
            .expect("the child joins main");
        let t = node.transport();
        // One thread calls alone (it reads its own replies); then three at
        // once, so that the background reader reads for them.
        for threads in [1u32, 3] {
            std::thread::scope(|scope| {
                for i in 0..threads {
                    let t = t.clone();
                    scope.spawn(move || {
                        for j in 0..100u32 {
                            let req = (i * 1000 + j).to_le_bytes();
                            let reply = t.call("echo", &req).unwrap();
                            assert_eq!(reply[8..], req);
                        }
                    });
                }
            });
        }
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder()
        .independent_main()
        .reply_spin(Duration::ZERO)
        .init()
        .unwrap();
    echo(&node.transport());
    for index in 0..2 {
        let child = node
            .spawn(&format!("spin-{index}"), h.command("spin", index))
            .unwrap();
        let exit = child.wait_timeout(WAIT).expect("the child finishes");
        assert!(exit.status.success(), "child {index}: {exit:?}");
    }
    drop(node);
    h.assert_no_leftovers(WAIT);
}
