//! The hosted-channel suite across real processes. Each body runs in a
//! child process that a `Node` main (the test process) spawned; all of the
//! body's endpoints are that child's link, so every operation crosses it
//! and main's hosting serves it. A consumer that leaves is a second child
//! process that exits holding deliveries. Then what needs main and a child
//! in two processes: an item type main refuses at open.

mod hosted_suite;

use std::sync::{Arc, Weak};
use std::time::Duration;

use yuki_channel::{Channel, ChannelOptions, Error, PeerId, Transport};
use yuki_ipc_transport::{LinkKind, Node, WhenMainGone};
use yuki_testkit::{Harness, run_child};

use hosted_suite::hosted_suite;

const WAIT: Duration = Duration::from_secs(30);
/// The service of main that starts a consumer that leaves.
const LEAVER: &str = "suite.consumer-that-leaves";
/// What that consumer does: `channel,prefetch,take`.
const LEAVER_ENV: &str = "YUKI_SUITE_LEAVER";
/// The link kind main gave a child, which the child checks it has.
const LINK_KIND_ENV: &str = "YUKI_TEST_LINK_KIND";

/// Inside the child: every endpoint is its link to main.
struct InChild {
    transport: Arc<dyn Transport>,
}

impl hosted_suite::Harness for InChild {
    fn main(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }
    fn child(&self, _name: &str) -> Arc<dyn Transport> {
        self.transport.clone()
    }
    fn children_are_separate(&self) -> bool {
        false
    }
    fn consumer_that_leaves(&self, channel: &str, prefetch: u32, take: usize) {
        let spec = format!("{channel},{prefetch},{take}");
        let reply = self
            .transport
            .call(LEAVER, spec.as_bytes())
            .expect("main answers");
        assert_eq!(reply, [1], "main started the consumer and saw it end");
    }
}

fn join_main() -> Node {
    Node::builder()
        .when_main_gone(WhenMainGone::Stay)
        .init()
        .expect("the child joins main")
}

/// A child's half: a suite body, or the consumer that leaves.
fn child_half(scenario: &str) {
    let node = join_main();
    let expected = std::env::var(LINK_KIND_ENV).expect("main names the link kind");
    assert_eq!(node.link_kind().name(), expected);
    let transport = node.transport();
    if scenario != "leaver" {
        hosted_suite::body(scenario)(&InChild { transport });
        return;
    }
    let spec = std::env::var(LEAVER_ENV).expect("main says what to consume");
    let [channel, prefetch, take] = spec.split(',').collect::<Vec<_>>()[..] else {
        panic!("a bad consumer spec: {spec}");
    };
    let options = ChannelOptions::new().prefetch(prefetch.parse().unwrap());
    let w = Channel::<u32>::open_with(&transport, channel, &options).unwrap();
    let held: Vec<_> = (0..take.parse::<usize>().unwrap())
        .map(|_| w.recv_delivery_timeout(WAIT).unwrap())
        .collect();
    assert!(held.iter().all(|d| !d.redelivered()));
    // Ends holding them: no destructor settles anything.
    std::process::exit(0);
}

/// Main's half of a suite body, once over each link kind.
fn run_body(name: &str) {
    if run_child(|s| child_half(s.name())) {
        return;
    }
    for kind in LinkKind::ALL {
        run_body_over(name, kind);
    }
}

/// A main whose children get links of `kind`, that can start consumers
/// that leave, and the child that runs the body.
fn run_body_over(name: &str, kind: LinkKind) {
    let h = Arc::new(Harness::new());
    let node = Arc::new(
        Node::builder()
            .independent_main()
            .link(kind)
            .init()
            .expect("main starts"),
    );
    let (weak, harness): (Weak<Node>, _) = (Arc::downgrade(&node), h.clone());
    node.transport()
        .serve(
            LEAVER,
            Arc::new(move |_: PeerId, req: &[u8], reply: &mut Vec<u8>| {
                let started = weak.upgrade().and_then(|node| {
                    let spec = std::str::from_utf8(req).ok()?;
                    let mut command = harness.command("leaver", 0);
                    command.env(LEAVER_ENV, spec);
                    command.env(LINK_KIND_ENV, kind.name());
                    node.spawn("leaver", command).ok()
                });
                let ended = started.and_then(|c| c.wait_timeout(WAIT).ok());
                reply.push(u8::from(ended.is_some_and(|e| e.status.success())));
                Ok(())
            }),
        )
        .unwrap();
    let mut command = h.command(name, 0);
    command.env(LINK_KIND_ENV, kind.name());
    let child = node.spawn("suite", command).expect("the child starts");
    let exit = child
        .wait_timeout(WAIT)
        .expect("the child finishes in time");
    assert!(exit.status.success(), "{name} failed in a child: {exit:?}");
    drop(child);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

hosted_suite!(run run_body);

#[test]
fn main_refuses_a_child_that_opens_another_item_type() {
    if run_child(|_| {
        let transport = join_main().transport();
        let err = Channel::<String>::open(&transport, "typed").unwrap_err();
        assert!(matches!(err, Error::ChannelTypeMismatch { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("\"typed\"") && text.contains("(u64, u64)") && text.contains("String"),
            "{text}"
        );
        let c = Channel::<(u64, u64)>::open(&transport, "typed").unwrap();
        c.send((1, 2)).unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let m = Channel::<(u64, u64)>::open(&node.transport(), "typed").unwrap();
    let child = node.spawn("typed", h.command("typed", 0)).unwrap();
    assert_eq!(m.recv_timeout(WAIT), Ok((1, 2)));
    assert!(child.wait_timeout(WAIT).unwrap().status.success());
    drop(child);
    drop(node);
    h.assert_no_leftovers(WAIT);
}
