//! Pub/sub across real processes: main and children started with `Node`.
//!
//! The shared suite runs inside child processes, where every handle is the
//! child's own: each message goes to main over the link and back. Then what
//! only real processes show: fan-out to several of them, a child killed or
//! stopped, main killed.
//!
//! Each test re-executes the test binary as its children (see
//! `yuki_testkit::run_child`); children coordinate with main over pub/sub
//! itself: they publish on `ctl.ready` once subscribed and on `ctl.done`
//! with what they received.

mod suite;

use std::sync::Arc;
use std::time::Duration;

use yuki_channel::PeerEvent;
use yuki_ipc_transport::{LinkKind, Node};
use yuki_pubsub::{Error, PubSub};
use yuki_testkit::{Harness, run_child};

const WAIT: Duration = Duration::from_secs(20);
/// The link kind main gave a child, which the child checks it has.
const LINK_KIND_ENV: &str = "YUKI_TEST_LINK_KIND";

/// Main's side: the node, its pub/sub and the control subscriptions.
struct Main {
    node: Node,
    pubsub: PubSub,
    ready: yuki_pubsub::Subscription<u64>,
    done: yuki_pubsub::Subscription<(u64, u64)>,
}

fn main_side() -> Main {
    let node = Node::builder()
        .independent_main()
        .init()
        .expect("main starts");
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

/// In a child every handle is the child's one pub/sub.
struct InChild(PubSub);

impl suite::Harness for InChild {
    fn main(&self) -> PubSub {
        self.0.clone()
    }
    fn child(&self, _index: usize) -> PubSub {
        self.0.clone()
    }
}

#[test]
fn the_suite_runs_in_child_processes() {
    if run_child(|_| {
        let (node, pubsub) = child_side();
        let expected = std::env::var(LINK_KIND_ENV).unwrap();
        assert_eq!(node.link_kind().name(), expected);
        let h = InChild(pubsub);
        for (name, body) in suite::ALL {
            eprintln!("suite in a child process: {name}");
            body(&h);
        }
    }) {
        return;
    }
    let h = Harness::new();
    let m = main_side();
    // A child per link kind runs the suite, one after the other, on one main.
    for (i, kind) in LinkKind::ALL.into_iter().enumerate() {
        let mut cmd = h.command("suite", i);
        cmd.env(LINK_KIND_ENV, kind.name());
        let child = m
            .node
            .child(&format!("suite-{i}"), cmd)
            .link(kind)
            .spawn()
            .expect("the child starts");
        let exit = child
            .wait_timeout(3 * WAIT)
            .expect("the child finishes in time");
        assert!(exit.status.success(), "suite-{i} failed: {exit:?}");
    }
    drop(m);
    h.assert_no_leftovers(WAIT);
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

/// The middle process of the next test: a main with one subscriber child,
/// killed by the test.
fn run_doomed_main() {
    let h = Harness::for_test("main_killed_wakes_a_blocked_subscriber_in_a_child");
    let m = main_side();
    // The grandchild writes its reports into the pipe the harness reads.
    let mut cmd = h.command("watcher", 0);
    cmd.stdout(std::process::Stdio::inherit());
    let _watcher = m
        .node
        .child("watcher", cmd)
        .parent_death_signal(None)
        .spawn()
        .unwrap();
    expect(&m.ready);
    yuki_testkit::report("ready", 1);
    let (_tx, rx) = std::sync::mpsc::channel::<()>();
    let _ = rx.recv();
}

/// A child that stays after main is gone, to see what its pub/sub does.
fn run_watcher() {
    let node = Node::builder()
        .when_main_gone(yuki_ipc_transport::WhenMainGone::Stay)
        .init()
        .unwrap();
    let pubsub = PubSub::attach(node.transport()).unwrap();
    let sub = pubsub.subscribe::<u64>("never").unwrap();
    pubsub.publish("ctl.ready", &0u64).unwrap();
    // Main takes the message before it answers the publish: main may be
    // killed as soon as it has it, so the test waits for this report, not
    // for main's, before it kills main.
    yuki_testkit::report("watching", 1);
    let woke = sub.recv_timeout(WAIT);
    assert!(matches!(woke, Err(Error::Disconnected(_))), "{woke:?}");
    yuki_testkit::report("woke", "disconnected");
    assert!(matches!(
        pubsub.subscribe::<u64>("later"),
        Err(Error::Disconnected(_))
    ));
    assert!(matches!(
        pubsub.publish("x", &1u64),
        Err(Error::Disconnected(_))
    ));
    yuki_testkit::report("after", "disconnected");
}

#[test]
fn main_killed_wakes_a_blocked_subscriber_in_a_child() {
    if run_child(|s| match s.name() {
        "main" => run_doomed_main(),
        "watcher" => run_watcher(),
        other => panic!("unknown scenario {other}"),
    }) {
        return;
    }
    let mut h = Harness::new().timeout(WAIT);
    let main = h.spawn("main").unwrap();
    assert!(
        h.wait_report(main, "ready").is_some(),
        "main and its child start"
    );
    assert!(
        h.wait_report(main, "watching").is_some(),
        "the child's publish is answered"
    );
    h.kill(main);
    let outcome = h.wait(main);
    assert!(!outcome.timed_out, "the child ended: {outcome:#?}");
    assert_eq!(outcome.value("woke"), Some("disconnected"), "{outcome:#?}");
    assert_eq!(outcome.value("after"), Some("disconnected"), "{outcome:#?}");
    h.assert_no_leftovers(WAIT);
}

/// Stops and continues a process in a duty cycle until dropped, then
/// leaves it running: `run` out of every `period`.
struct Throttle {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pid: libc::pid_t,
}

impl Throttle {
    fn start(pid: libc::pid_t, run: Duration, period: Duration) -> Throttle {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: signals a child this test started and still owns.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                std::thread::sleep(period - run);
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGCONT) };
                std::thread::sleep(run);
            }
        });
        Throttle {
            stop,
            thread: Some(thread),
            pid,
        }
    }
}

impl Throttle {
    /// Ends the cycle with the process stopped (until dropped).
    fn park(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(self.pid, libc::SIGSTOP) }, 0);
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // SAFETY: as above; on every path, so the child is never left stopped.
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
    }
}

#[test]
fn a_throttled_subscriber_loses_the_oldest_and_learns_every_loss() {
    type Flood = (u64, bool);
    if run_child(|_| {
        let (_node, pubsub) = child_side();
        let subs = [
            pubsub.subscribe::<Flood>("flood.a").unwrap(),
            pubsub.subscribe::<Flood>("flood.*").unwrap(),
        ];
        pubsub.publish("ctl.ready", &0u64).unwrap();
        std::thread::scope(|s| {
            for (index, sub) in subs.iter().enumerate() {
                let pubsub = &pubsub;
                s.spawn(move || {
                    let (mut received, mut lagged) = (0u64, 0u64);
                    let mut last: Option<u64> = None;
                    // Read until the last message came and the count
                    // balances (a loss may be told after the last message).
                    while last.is_none_or(|l| received + lagged != l + 1) {
                        match sub.recv_timeout(WAIT) {
                            Ok(m) => {
                                received += 1;
                                if let (seq, true) = m.into_value() {
                                    last = Some(seq);
                                }
                            }
                            Err(Error::Lagged(n)) => lagged += n,
                            Err(Error::Empty) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    let result = (index as u64, received, lagged, last.unwrap_or(u64::MAX));
                    pubsub.publish("ctl.result", &result).unwrap();
                });
            }
        });
    }) {
        return;
    }
    let h = Harness::new();
    // A small backlog, so that main drops even in a debug build.
    let node = Node::builder()
        .independent_main()
        .max_backlog(1 << 20)
        .init()
        .unwrap();
    let pubsub = PubSub::attach(node.transport()).unwrap();
    let ready = pubsub.subscribe::<u64>("ctl.ready").unwrap();
    let result = pubsub
        .subscribe::<(u64, u64, u64, u64)>("ctl.result")
        .unwrap();
    let child = node.spawn("throttled", h.command("throttled", 0)).unwrap();
    expect(&ready);
    let mut throttle = Throttle::start(
        child.pid() as libc::pid_t,
        Duration::from_millis(1),
        Duration::from_millis(100),
    );
    // A flood of single messages and batches for a few seconds; the last
    // one is marked, and nothing follows it.
    let mut seq = 0u64;
    let flood = |seq: &mut u64| {
        for _ in 0..64 {
            pubsub.publish("flood.a", &(*seq, false)).unwrap();
            *seq += 1;
        }
        let batch: Vec<Flood> = (*seq..*seq + 64).map(|s| (s, false)).collect();
        pubsub.publish_batch("flood.a", &batch).unwrap();
        *seq += 64;
    };
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        flood(&mut seq);
    }
    // The end of the flood finds the child stopped and its backlog full
    // (well over 4 MiB of frames), so the last message is published into
    // a full backlog.
    throttle.park();
    for _ in 0..1000 {
        flood(&mut seq);
    }
    pubsub.publish("flood.a", &(seq, true)).unwrap();
    let published = seq + 1;
    drop(throttle);
    let mut seen = [false; 2];
    for _ in 0..2 {
        let (index, received, lagged, last) = expect(&result);
        seen[index as usize] = true;
        assert_eq!(
            last, seq,
            "subscription {index}: the last message published arrived"
        );
        assert!(
            lagged > 0,
            "subscription {index} lost nothing: the test is too gentle"
        );
        assert_eq!(
            received + lagged,
            published,
            "subscription {index}: every message arrived or was reported lost"
        );
    }
    assert_eq!(seen, [true; 2]);
    assert!(child.wait_timeout(WAIT).unwrap().status.success());
    drop(node);
    h.assert_no_leftovers(WAIT);
}
