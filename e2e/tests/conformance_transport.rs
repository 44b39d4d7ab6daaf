//! The transport seam's contract, written once and run over every
//! transport: the in-thread transport, and ipc with real child processes
//! over each link kind.
//!
//! Each case is a child's half (what a child does, and what it observes,
//! as lines of text) and main's half (what main observes). Main serves the
//! same services in every case. [`conformance!`] makes one test per case
//! per world (`in_thread::case`, `ipc::case` over shared memory,
//! `ipc_channel::case` over the ipc-channel link); a case passes only if
//! every world gives the same observations for the same faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use yuki_channel::{DEFAULT_CALL_TIMEOUT, Error, InThreadTransport, PeerEvent, PeerId, Transport};
use yuki_ipc_transport::{LinkKind, Node, WhenMainGone};
use yuki_testkit::{Harness, run_child};

/// Every transport runs with this frame limit.
const MAX: usize = 64 << 10;
/// The bound of every wait.
const WAIT: Duration = Duration::from_secs(30);
/// How long the "slow" service takes.
const SLOW: Duration = Duration::from_millis(300);
/// Where an ipc child writes its observations (its link may be cut).
const OUT_ENV: &str = "YUKI_CONFORMANCE_OUT";
/// The link kind main gave the child, which the child checks it has.
const KIND_ENV: &str = "YUKI_CONFORMANCE_LINK";

/// What a child does and observes.
type ChildHalf = fn(&Arc<dyn Transport>) -> Vec<String>;
/// What main checks, given the child's observations and main's peer events.
type MainHalf = fn(&World, &[String]);

/// The error kinds the contract names, with the details it fixes.
fn kind(e: &Error) -> String {
    match e {
        Error::NoService(s) => format!("NoService {s}"),
        Error::FrameTooLarge { size, max } => format!("FrameTooLarge {size} {max}"),
        Error::Disconnected(_) => "Disconnected".into(),
        Error::Remote(_) => "Remote".into(),
        Error::CallTimeout { .. } => "CallTimeout".into(),
        Error::WrongRole { .. } => "WrongRole".into(),
        Error::ServiceExists(s) => format!("ServiceExists {s}"),
        Error::NoPeer(_) => "NoPeer".into(),
        other => format!("unexpected {other:?}"),
    }
}

fn outcome(r: yuki_channel::Result<Vec<u8>>) -> String {
    match r {
        Ok(reply) => format!("ok {}", String::from_utf8_lossy(&reply)),
        Err(e) => kind(&e),
    }
}

/// A call through `call_with_within`, waited for.
fn call_back(t: &Arc<dyn Transport>, service: &str, request: &[u8], timeout: Duration) -> String {
    let (tx, rx) = mpsc::channel();
    t.call_with_within(
        service,
        request,
        timeout,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    outcome(rx.recv_timeout(WAIT).expect("the callback runs"))
}

/// Main's side: its transport and the peer events it saw.
struct World {
    main: Arc<dyn Transport>,
    events: Arc<(Mutex<Vec<PeerEvent>>, Condvar)>,
}

impl World {
    fn new(main: Arc<dyn Transport>) -> World {
        serve(&main);
        let events = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let e = events.clone();
        main.on_peer_event(Arc::new(move |event: &PeerEvent| {
            e.0.lock().unwrap().push(event.clone());
            e.1.notify_all();
        }));
        World { main, events }
    }

    /// Waits until main saw `n` events, and returns them.
    fn events(&self, n: usize) -> Vec<PeerEvent> {
        let (lock, cv) = &*self.events;
        let seen = cv
            .wait_timeout_while(lock.lock().unwrap(), WAIT, |e| e.len() < n)
            .unwrap()
            .0;
        assert!(seen.len() >= n, "main saw only {:?}", *seen);
        seen.clone()
    }

    /// The child's id, from its `Joined` event.
    fn child(&self) -> PeerId {
        match &self.events(1)[0] {
            PeerEvent::Joined { peer, .. } => *peer,
            other => panic!("first event {other:?}"),
        }
    }
}

/// The services main serves in every case.
fn serve(main: &Arc<dyn Transport>) {
    let echo = |_: PeerId, req: &[u8], reply: &mut Vec<u8>| {
        reply.extend_from_slice(req);
        Ok(())
    };
    main.serve("echo", Arc::new(echo)).unwrap();
    main.serve(
        "fail",
        Arc::new(|_: PeerId, _: &[u8], _: &mut Vec<u8>| {
            Err(Error::disconnected("a request this service refuses"))
        }),
    )
    .unwrap();
    main.serve(
        "big",
        Arc::new(|_: PeerId, _: &[u8], reply: &mut Vec<u8>| {
            reply.resize(MAX + 1, 7);
            Ok(())
        }),
    )
    .unwrap();
    main.serve(
        "slow",
        Arc::new(|_: PeerId, req: &[u8], reply: &mut Vec<u8>| {
            // Slow on purpose: the caller's deadline is shorter.
            std::thread::sleep(SLOW);
            reply.extend_from_slice(req);
            Ok(())
        }),
    )
    .unwrap();
    // Pushes `n` frames to the caller on streams "a" and "b" in turn, then
    // answers how many peers main has.
    let weak = Arc::downgrade(main);
    main.serve(
        "push",
        Arc::new(move |from: PeerId, req: &[u8], reply: &mut Vec<u8>| {
            let main = weak.upgrade().ok_or(Error::disconnected("main is gone"))?;
            let n = u32::from_le_bytes(req.try_into().map_err(|_| Error::Remote("n".into()))?);
            for i in 0..n {
                main.push(from, "a", &i.to_le_bytes())?;
                main.push(from, "b", &i.to_le_bytes())?;
            }
            reply.extend_from_slice(main.peers().len().to_string().as_bytes());
            Ok(())
        }),
    )
    .unwrap();
}

// ---------------------------------------------------------------- cases

fn calls_and_replies() -> (ChildHalf, MainHalf) {
    fn child(t: &Arc<dyn Transport>) -> Vec<String> {
        vec![
            format!("role {:?}", t.role()),
            format!("is main {}", t.peer_id() == PeerId::MAIN),
            format!("peers {}", t.peers().len()),
            format!("max {}", t.max_frame()),
            format!("timeout {:?}", t.call_timeout()),
            outcome(t.call("echo", b"hello")),
            outcome(t.call("echo", b"")),
            call_back(t, "echo", b"back", WAIT),
            outcome(t.call_within("echo", b"within", WAIT)),
        ]
    }
    fn main(w: &World, seen: &[String]) {
        let want = [
            "role Child".to_owned(),
            "is main false".into(),
            "peers 0".into(),
            format!("max {MAX}"),
            format!("timeout {DEFAULT_CALL_TIMEOUT:?}"),
            "ok hello".into(),
            "ok ".into(),
            "ok back".into(),
            "ok within".into(),
        ];
        assert_eq!(seen, want);
        assert_eq!(w.main.role(), yuki_channel::Role::Main);
        assert_eq!(w.main.peer_id(), PeerId::MAIN);
        assert_eq!(outcome(w.main.call("echo", b"own")), "ok own");
        assert_eq!(call_back(&w.main, "echo", b"own", WAIT), "ok own");
    }
    (child, main)
}

fn errors_of_a_childs_calls() -> (ChildHalf, MainHalf) {
    fn child(t: &Arc<dyn Transport>) -> Vec<String> {
        let echo = Arc::new(|_: PeerId, _: &[u8], _: &mut Vec<u8>| Ok(()));
        vec![
            outcome(t.call("nope", b"")),
            outcome(t.call("echo", &vec![0; MAX + 1])),
            outcome(t.call("echo", &vec![1; MAX])).len().to_string(),
            outcome(t.call("big", b"")),
            call_back(t, "nope", b"", WAIT),
            call_back(t, "big", b"", WAIT),
            kind(&t.serve("mine", echo).unwrap_err()),
            kind(&t.push(PeerId::MAIN, "s", b"").unwrap_err()),
            // Still connected after all of them.
            outcome(t.call("echo", b"still")),
        ]
    }
    fn main(_: &World, seen: &[String]) {
        let too_large = format!("FrameTooLarge {} {MAX}", MAX + 1);
        let want = [
            "NoService nope".to_owned(),
            too_large.clone(),
            (MAX + 3).to_string(),
            too_large.clone(),
            "NoService nope".into(),
            too_large,
            "WrongRole".into(),
            "WrongRole".into(),
            "ok still".into(),
        ];
        assert_eq!(seen, want);
    }
    (child, main)
}

fn errors_of_mains_own_calls() -> (ChildHalf, MainHalf) {
    fn child(_: &Arc<dyn Transport>) -> Vec<String> {
        Vec::new()
    }
    fn main(w: &World, _: &[String]) {
        let m = &w.main;
        let too_large = format!("FrameTooLarge {} {MAX}", MAX + 1);
        let echo = Arc::new(|_: PeerId, _: &[u8], _: &mut Vec<u8>| Ok(()));
        let seen = [
            outcome(m.call("nope", b"")),
            outcome(m.call("echo", &vec![0; MAX + 1])),
            outcome(m.call("big", b"")),
            // Main cannot be cut off from itself: it learns why.
            outcome(m.call("fail", b"")),
            call_back(m, "fail", b"", WAIT),
            kind(&m.serve("echo", echo).unwrap_err()),
            kind(&m.push(PeerId(u64::MAX), "s", b"").unwrap_err()),
            kind(&m.push(PeerId::MAIN, "s", &vec![0; MAX + 1]).unwrap_err()),
            outcome(m.call("echo", b"still")),
        ];
        let want = [
            "NoService nope".to_owned(),
            too_large.clone(),
            too_large.clone(),
            "Remote".into(),
            "Remote".into(),
            "ServiceExists echo".into(),
            "NoPeer".into(),
            too_large,
            "ok still".into(),
        ];
        assert_eq!(seen, want);
        // A push to main reaches main's own handlers.
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        m.on_push(
            "self",
            Arc::new(move |f: &[u8]| tx.lock().unwrap().send(f.to_vec()).unwrap()),
        )
        .unwrap();
        m.push(PeerId::MAIN, "self", b"me").unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap(), b"me");
    }
    (child, main)
}

fn a_malformed_request_cuts_the_child_off() -> (ChildHalf, MainHalf) {
    fn child(t: &Arc<dyn Transport>) -> Vec<String> {
        let (tx, left) = mpsc::channel();
        let tx = Mutex::new(tx);
        t.on_peer_event(Arc::new(move |e: &PeerEvent| {
            if let PeerEvent::Left { peer, .. } = e {
                let _ = tx.lock().unwrap().send(format!("left {peer}"));
            }
        }));
        let mut seen = vec![
            outcome(t.call("fail", b"")),
            outcome(t.call("echo", b"after")),
            call_back(t, "echo", b"after", WAIT),
        ];
        // The event may be told just after the failed call returned.
        seen.push(
            left.recv_timeout(WAIT)
                .unwrap_or_else(|_| "no Left event".into()),
        );
        seen
    }
    fn main(w: &World, seen: &[String]) {
        let want = ["Disconnected", "Disconnected", "Disconnected", "left main"];
        assert_eq!(seen, want);
        let child = w.child();
        assert!(
            matches!(&w.events(2)[1], PeerEvent::Left { peer, .. } if *peer == child),
            "main sees the child leave"
        );
        assert_eq!(kind(&w.main.push(child, "a", b"").unwrap_err()), "NoPeer");
        // Main serves the others as before.
        assert_eq!(outcome(w.main.call("echo", b"on")), "ok on");
    }
    (child, main)
}

fn pushes_arrive_in_order_per_stream() -> (ChildHalf, MainHalf) {
    fn child(t: &Arc<dyn Transport>) -> Vec<String> {
        let got: Arc<Mutex<Vec<(char, u32)>>> = Arc::default();
        for stream in ["a", "b"] {
            let g = got.clone();
            let tag = stream.chars().next().unwrap();
            t.on_push(
                stream,
                Arc::new(move |f: &[u8]| {
                    let n = u32::from_le_bytes(f.try_into().unwrap());
                    g.lock().unwrap().push((tag, n));
                }),
            )
            .unwrap();
        }
        const N: u32 = 500;
        // Every push made before the reply is handled before the call returns.
        let peers = outcome(t.call("push", &N.to_le_bytes()));
        let got = got.lock().unwrap();
        let order = |tag| {
            let ns: Vec<u32> = got.iter().filter(|(t, _)| *t == tag).map(|p| p.1).collect();
            ns == (0..N).collect::<Vec<_>>()
        };
        let interleaved = got
            .iter()
            .enumerate()
            .all(|(i, (tag, n))| *n == i as u32 / 2 && *tag == if i % 2 == 0 { 'a' } else { 'b' });
        vec![
            peers,
            format!("a in order {}", order('a')),
            format!("b in order {}", order('b')),
            format!("as sent {interleaved}"),
        ]
    }
    fn main(w: &World, seen: &[String]) {
        let want = ["ok 1", "a in order true", "b in order true", "as sent true"];
        assert_eq!(seen, want);
        // Once the child left, pushes to it fail, and it is no peer.
        let child = w.child();
        w.events(2);
        assert_eq!(kind(&w.main.push(child, "a", b"").unwrap_err()), "NoPeer");
        assert!(!w.main.peers().contains(&child));
    }
    (child, main)
}

fn peer_events_tell_join_and_leave() -> (ChildHalf, MainHalf) {
    fn child(t: &Arc<dyn Transport>) -> Vec<String> {
        vec![outcome(t.call("push", &0u32.to_le_bytes()))]
    }
    fn main(w: &World, seen: &[String]) {
        assert_eq!(seen, ["ok 1"], "main counts the child among its peers");
        let events = w.events(2);
        assert_eq!(events.len(), 2, "{events:?}");
        let PeerEvent::Joined { peer, name } = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(name, "conformance-child");
        assert!(matches!(&events[1], PeerEvent::Left { peer: p, .. } if p == peer));
        assert!(w.main.peers().is_empty());
    }
    (child, main)
}

fn a_call_past_its_deadline_times_out_and_its_reply_is_dropped() -> (ChildHalf, MainHalf) {
    fn child(t: &Arc<dyn Transport>) -> Vec<String> {
        let short = Duration::from_millis(50);
        vec![
            outcome(t.call_within("slow", b"1", short)),
            call_back(t, "slow", b"2", short),
            // The late replies find no waiter; the link goes on.
            outcome(t.call_within("slow", b"3", WAIT)),
            outcome(t.call("echo", b"4")),
        ]
    }
    fn main(w: &World, seen: &[String]) {
        assert_eq!(seen, ["CallTimeout", "CallTimeout", "ok 3", "ok 4"]);
        let short = Duration::from_millis(50);
        assert_eq!(
            outcome(w.main.call_within("slow", b"m", short)),
            "CallTimeout"
        );
        assert_eq!(call_back(&w.main, "slow", b"m", short), "CallTimeout");
        assert_eq!(outcome(w.main.call_within("slow", b"m", WAIT)), "ok m");
    }
    (child, main)
}

fn a_blocking_call_from_a_push_handler_keeps_its_deadline() -> (ChildHalf, MainHalf) {
    fn child(t: &Arc<dyn Transport>) -> Vec<String> {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let weak = Arc::downgrade(t);
        t.on_push(
            "a",
            Arc::new(move |_: &[u8]| {
                if let Some(t) = weak.upgrade() {
                    // Runs where pushes are handled: the reply must still
                    // be waited for, and given up on, from here.
                    let r = outcome(t.call_within("slow", b"n", Duration::from_millis(50)));
                    let _ = tx.lock().unwrap().send(r);
                }
            }),
        )
        .unwrap();
        let pushed = outcome(t.call("push", &1u32.to_le_bytes()));
        let nested = rx.recv_timeout(WAIT).unwrap_or_else(|_| "no push".into());
        vec![pushed, nested, outcome(t.call("echo", b"on"))]
    }
    fn main(_: &World, seen: &[String]) {
        assert_eq!(seen, ["ok 1", "CallTimeout", "ok on"]);
    }
    (child, main)
}

// ---------------------------------------------------------------- worlds

/// In one process: the child is an endpoint on a thread.
fn run_in_thread(case: fn() -> (ChildHalf, MainHalf)) {
    let (child_half, main_half) = case();
    let main = InThreadTransport::with_max_frame(MAX);
    let world = World::new(main.clone());
    let child = main.connect("conformance-child").unwrap();
    let seen = std::thread::scope(|s| {
        let c: Arc<dyn Transport> = child.clone();
        s.spawn(move || child_half(&c)).join().unwrap()
    });
    // The child's process ends.
    child.disconnect("exited");
    main_half(&world, &seen);
}

static NEXT_OUT: AtomicU64 = AtomicU64::new(0);

/// The worlds across processes: one per link kind, in [`LinkKind::ALL`]'s order.
const IPC_WORLDS: [&str; 2] = ["ipc", "ipc_channel"];

#[test]
fn every_link_kind_has_a_world() {
    assert_eq!(IPC_WORLDS.len(), LinkKind::ALL.len());
    for (world, kind) in IPC_WORLDS.iter().zip(LinkKind::ALL) {
        let expected = match kind {
            LinkKind::SharedMemory => "ipc",
            LinkKind::IpcChannel => "ipc_channel",
            other => panic!("no conformance world for the {other} link"),
        };
        assert_eq!(*world, expected);
    }
}

/// Across processes: the child is a process main spawned, linked by `kind`.
fn run_ipc(case: fn() -> (ChildHalf, MainHalf), kind: LinkKind) {
    let (child_half, main_half) = case();
    if run_child(|_| {
        let node = Node::builder()
            .when_main_gone(WhenMainGone::Stay)
            .init()
            .unwrap();
        let expected = std::env::var(KIND_ENV).unwrap();
        assert_eq!(node.link_kind().name(), expected);
        let seen = child_half(&node.transport());
        std::fs::write(std::env::var(OUT_ENV).unwrap(), seen.join("\n")).unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let out = std::env::temp_dir().join(format!(
        "yuki-conformance-{}-{}-{}",
        std::process::id(),
        h.run_id(),
        NEXT_OUT.fetch_add(1, Ordering::Relaxed)
    ));
    let node = Node::builder()
        .independent_main()
        .max_frame(MAX)
        .link(kind)
        .init()
        .unwrap();
    let world = World::new(node.transport());
    let mut cmd = h.command("child", 0);
    cmd.env(OUT_ENV, &out);
    cmd.env(KIND_ENV, kind.name());
    let child = node.child("conformance-child", cmd).spawn().unwrap();
    let exit = child.wait_timeout(WAIT).expect("the child finishes");
    assert!(exit.status.success(), "the child failed: {exit:?}");
    let seen = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let seen: Vec<String> = if seen.is_empty() {
        Vec::new()
    } else {
        seen.lines().map(str::to_owned).collect()
    };
    // The child's exit reaches main as its leaving.
    let start = Instant::now();
    world.events(2);
    assert!(start.elapsed() < WAIT);
    main_half(&world, &seen);
}

/// One test per case per transport.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod in_thread {
            $(
                #[test]
                fn $case() {
                    super::run_in_thread(super::$case);
                }
            )*
        }
        mod ipc {
            $(
                #[test]
                fn $case() {
                    super::run_ipc(super::$case, yuki_ipc_transport::LinkKind::SharedMemory);
                }
            )*
        }
        mod ipc_channel {
            $(
                #[test]
                fn $case() {
                    super::run_ipc(super::$case, yuki_ipc_transport::LinkKind::IpcChannel);
                }
            )*
        }
    };
}

conformance!(
    calls_and_replies,
    errors_of_a_childs_calls,
    errors_of_mains_own_calls,
    a_malformed_request_cuts_the_child_off,
    pushes_arrive_in_order_per_stream,
    peer_events_tell_join_and_leave,
    a_call_past_its_deadline_times_out_and_its_reply_is_dropped,
    a_blocking_call_from_a_push_handler_keeps_its_deadline,
);
