//! Named channels hosted by main, used from real child processes.

use std::collections::HashMap;
use std::time::Duration;

use yuki_ipc_transport::Node;
use yuki_testkit::{Harness, run_child};

const WAIT: Duration = Duration::from_secs(30);
const PER_THREAD: u32 = 250;

#[test]
fn eight_children_of_four_threads_send_into_one_channel_exactly_once_in_order() {
    if run_child(|s| {
        let node = Node::init().unwrap();
        let jobs = node.channel::<(u32, u32, u32)>("jobs").unwrap();
        let child = s.index() as u32;
        std::thread::scope(|scope| {
            for thread in 0..4u32 {
                let jobs = jobs.clone();
                scope.spawn(move || {
                    for seq in 0..PER_THREAD {
                        jobs.send((child, thread, seq)).unwrap();
                    }
                });
            }
        });
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let jobs = node.channel::<(u32, u32, u32)>("jobs").unwrap();
    let children: Vec<_> = (0..8)
        .map(|i| {
            node.spawn(&format!("sender-{i}"), h.command("sender", i))
                .unwrap()
        })
        .collect();
    let mut next: HashMap<(u32, u32), u32> = HashMap::new();
    for _ in 0..8 * 4 * PER_THREAD {
        let (child, thread, seq) = jobs.recv_timeout(WAIT).expect("every item arrives");
        let expected = next.entry((child, thread)).or_insert(0);
        assert_eq!(seq, *expected, "sender ({child}, {thread}) out of order");
        *expected += 1;
    }
    assert_eq!(next.len(), 32);
    assert!(next.values().all(|n| *n == PER_THREAD));
    for c in &children {
        assert!(c.wait_timeout(WAIT).unwrap().status.success());
    }
    assert!(jobs.try_recv().is_err(), "nothing is received twice");
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn items_flow_main_to_child_child_to_main_and_child_to_child() {
    if run_child(|s| {
        let node = Node::init().unwrap();
        match s.name() {
            // main -> child -> (relay) -> child -> main
            "first" => {
                let inbox = node.channel::<u64>("to-first").unwrap();
                let relay = node.channel::<u64>("relay").unwrap();
                for i in 0..100u64 {
                    assert_eq!(inbox.recv_timeout(WAIT).unwrap(), i);
                    relay.send(i * 2).unwrap();
                }
            }
            "second" => {
                let relay = node.channel::<u64>("relay").unwrap();
                let results = node.channel::<String>("results").unwrap();
                for i in 0..100u64 {
                    assert_eq!(relay.recv_timeout(WAIT).unwrap(), i * 2);
                }
                results.send(format!("{} relayed", node.name())).unwrap();
            }
            other => panic!("unknown scenario {other}"),
        }
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let to_first = node.channel::<u64>("to-first").unwrap();
    let results = node.channel::<String>("results").unwrap();
    let _relay = node.channel::<u64>("relay").unwrap();
    let first = node.spawn("first", h.command("first", 0)).unwrap();
    let second = node.spawn("second", h.command("second", 0)).unwrap();
    for i in 0..100u64 {
        to_first.send(i).unwrap();
    }
    assert_eq!(results.recv_timeout(WAIT).unwrap(), "second relayed");
    assert!(first.wait_timeout(WAIT).unwrap().status.success());
    assert!(second.wait_timeout(WAIT).unwrap().status.success());
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_bounded_channel_opened_through_the_node_refuses_when_full() {
    let node = Node::builder().independent_main().init().unwrap();
    let small = node.channel_bounded::<u8>("small", 2).unwrap();
    small.try_send(1).unwrap();
    small.try_send(2).unwrap();
    assert!(small.try_send(3).is_err());
    assert_eq!(small.recv_timeout(WAIT).unwrap(), 1);
    // Opening the name again joins the same channel.
    let again = node.channel::<u8>("small").unwrap();
    assert_eq!(again.recv_timeout(WAIT).unwrap(), 2);
}
