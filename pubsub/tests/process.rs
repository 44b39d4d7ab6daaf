//! Pub/sub across real processes: main and children started with `Node`.
//!
//! Each test re-executes the test binary as its children (see
//! `yuki_testkit::run_child`); children coordinate with main over pub/sub
//! itself: they publish on `ctl.ready` once subscribed and on `ctl.done`
//! with what they received.

use std::sync::Arc;
use std::time::Duration;

use yuki_channel::PeerEvent;
use yuki_ipc_transport::Node;
use yuki_pubsub::{Error, PubSub};
use yuki_testkit::{Harness, run_child};

const WAIT: Duration = Duration::from_secs(20);

/// Main's side: the node, its pub/sub and the control subscriptions.
struct Main {
    node: Node,
    pubsub: PubSub,
    ready: yuki_pubsub::Subscription<u64>,
    done: yuki_pubsub::Subscription<(u64, u64)>,
}

fn main_side() -> Main {
    let node = Node::init().expect("main starts");
    let pubsub = PubSub::attach(node.transport()).unwrap();
    let ready = pubsub.subscribe("ctl.ready").unwrap();
    let done = pubsub.subscribe("ctl.done").unwrap();
    Main {
        node,
        pubsub,
        ready,
        done,
    }
}

fn child_side() -> (Node, PubSub) {
    let node = Node::init().expect("the child joins main");
    let pubsub = PubSub::attach(node.transport()).unwrap();
    (node, pubsub)
}

fn expect<M: serde::de::DeserializeOwned>(sub: &yuki_pubsub::Subscription<M>) -> M {
    sub.recv_timeout(WAIT).expect("a message").into_value()
}

const N: u64 = 300;
const PATTERNS: [&str; 4] = ["news.x", "news.x", "news.*", "news.>"];

#[test]
fn fan_out_from_main_and_from_a_child_to_four_children() {
    if run_child(|s| {
        let (_node, pubsub) = child_side();
        if s.name() == "publisher" {
            for seq in 0..N {
                assert_eq!(pubsub.publish("news.x", &(1u64, seq)).unwrap(), 4);
            }
            return;
        }
        let i = s.index();
        let sub = pubsub.subscribe::<(u64, u64)>(PATTERNS[i]).unwrap();
        pubsub.publish("ctl.ready", &(i as u64)).unwrap();
        for from in [0, 1] {
            for seq in 0..N {
                assert_eq!(expect(&sub), (from, seq));
            }
            if from == 0 && PATTERNS[i] != "news.x" {
                assert_eq!(expect(&sub), (9, 9));
            }
        }
        pubsub.publish("ctl.done", &(i as u64, 2 * N)).unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let m = main_side();
    let subscribers: Vec<_> = (0..4)
        .map(|i| {
            m.node
                .spawn(&format!("sub{i}"), h.command("subscriber", i))
                .unwrap()
        })
        .collect();
    for _ in 0..4 {
        expect(&m.ready);
    }
    for seq in 0..N {
        assert_eq!(m.pubsub.publish("news.x", &(0u64, seq)).unwrap(), 4);
    }
    assert_eq!(m.pubsub.publish("news.y", &(9u64, 9u64)).unwrap(), 2);
    // The child publisher runs once main's messages are all out.
    let publisher = m.node.spawn("pub", h.command("publisher", 0)).unwrap();
    assert!(publisher.wait_timeout(WAIT).unwrap().status.success());
    let mut done: Vec<_> = (0..4).map(|_| expect(&m.done)).collect();
    done.sort();
    assert_eq!(done, (0..4).map(|i| (i, 2 * N)).collect::<Vec<_>>());
    for child in subscribers {
        assert!(child.wait_timeout(WAIT).unwrap().status.success());
    }
    drop(m);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn per_publisher_order_with_concurrent_publishers_in_three_processes() {
    if run_child(|s| {
        let (_node, pubsub) = child_side();
        let i = s.index() as u64;
        if s.name() == "publisher" {
            let go = pubsub.subscribe::<u64>("ctl.go").unwrap();
            pubsub.publish("ctl.ready", &i).unwrap();
            expect(&go);
            for seq in 0..N {
                assert_eq!(pubsub.publish(&format!("seq.p{i}"), &(i, seq)).unwrap(), 2);
            }
            return;
        }
        let sub = pubsub
            .with_capacity(4 * N as usize)
            .subscribe::<(u64, u64)>("seq.*")
            .unwrap();
        pubsub.publish("ctl.ready", &(10 + i)).unwrap();
        let mut next = [0u64; 3];
        for _ in 0..3 * N {
            let (from, seq) = expect(&sub);
            assert_eq!(seq, next[from as usize], "publisher {from} out of order");
            next[from as usize] += 1;
        }
        pubsub
            .publish("ctl.done", &(i, next.iter().sum::<u64>()))
            .unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let m = main_side();
    let mut children = Vec::new();
    for i in 0..2 {
        children.push(
            m.node
                .spawn(&format!("sub{i}"), h.command("subscriber", i))
                .unwrap(),
        );
    }
    for i in 0..2 {
        children.push(
            m.node
                .spawn(&format!("pub{i}"), h.command("publisher", i))
                .unwrap(),
        );
    }
    for _ in 0..4 {
        expect(&m.ready);
    }
    assert_eq!(m.pubsub.publish("ctl.go", &0u64).unwrap(), 2);
    for seq in 0..N {
        // Main is publisher 2.
        assert_eq!(m.pubsub.publish("seq.p2", &(2u64, seq)).unwrap(), 2);
    }
    let mut done: Vec<_> = (0..2).map(|_| expect(&m.done)).collect();
    done.sort();
    assert_eq!(done, vec![(0, 3 * N), (1, 3 * N)]);
    for child in children {
        assert!(child.wait_timeout(WAIT).unwrap().status.success());
    }
    drop(m);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_stuck_child_subscriber_lags_and_a_killed_one_only_changes_the_count() {
    if run_child(|s| {
        let (_node, pubsub) = child_side();
        let i = s.index() as u64;
        match s.name() {
            "stuck" => {
                let sub = pubsub.with_capacity(8).subscribe::<u64>("feed").unwrap();
                let go = pubsub.subscribe::<u64>("ctl.go").unwrap();
                pubsub.publish("ctl.ready", &i).unwrap();
                // Everything main published before `go` is here by now.
                expect(&go);
                assert_eq!(sub.recv_timeout(WAIT).unwrap_err(), Error::Lagged(N - 8));
                for seq in N - 8..N {
                    assert_eq!(expect(&sub), seq);
                }
                pubsub.publish("ctl.done", &(i, 8u64)).unwrap();
            }
            "reader" => {
                let sub = pubsub.subscribe::<u64>("feed").unwrap();
                pubsub.publish("ctl.ready", &i).unwrap();
                for seq in 0..N {
                    assert_eq!(expect(&sub), seq);
                }
                pubsub.publish("ctl.done", &(i, N)).unwrap();
            }
            _ => {
                // "victim": subscribed, then killed by main.
                let _sub = pubsub.subscribe::<u64>("feed").unwrap();
                pubsub.publish("ctl.ready", &i).unwrap();
                let _ = pubsub.subscribe::<u64>("never").unwrap().recv_timeout(WAIT);
            }
        }
    }) {
        return;
    }
    let h = Harness::new();
    let m = main_side();
    let (left_tx, left_rx) = crossbeam_channel::unbounded();
    m.node.transport().on_peer_event(Arc::new(move |e| {
        if let PeerEvent::Left { peer, .. } = e {
            let _ = left_tx.send(*peer);
        }
    }));
    let stuck = m.node.spawn("stuck", h.command("stuck", 0)).unwrap();
    let reader = m.node.spawn("reader", h.command("reader", 1)).unwrap();
    let victim = m.node.spawn("victim", h.command("victim", 2)).unwrap();
    for _ in 0..3 {
        expect(&m.ready);
    }
    assert_eq!(m.pubsub.publish("feed", &0u64).unwrap(), 3);
    victim.kill().unwrap();
    assert_eq!(left_rx.recv_timeout(WAIT).unwrap(), victim.id());
    for seq in 1..N {
        assert_eq!(m.pubsub.publish("feed", &seq).unwrap(), 2);
    }
    assert_eq!(m.pubsub.publish("ctl.go", &0u64).unwrap(), 1);
    let mut done: Vec<_> = (0..2).map(|_| expect(&m.done)).collect();
    done.sort();
    assert_eq!(done, vec![(0, 8), (1, N)]);
    for child in [stuck, reader] {
        assert!(child.wait_timeout(WAIT).unwrap().status.success());
    }
    drop(m);
    h.assert_no_leftovers(WAIT);
}
