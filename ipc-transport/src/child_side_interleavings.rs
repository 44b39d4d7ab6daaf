//! The reading protocol's hand-offs, forced one interleaving at a time.
//!
//! A test plays main over a real link's memory and stops the child's
//! threads at chosen [`Point`]s with one-shot gates, so each test runs
//! exactly the interleaving its name says, whatever the scheduler does:
//!
//! - the background reader is held at [`Point::BackgroundIdle`] (holding
//!   nothing) whenever a test needs a caller to lead, so who reads is
//!   decided by the test, not by timing;
//! - a caller whose deadline passed is held at [`Point::GivingUp`] while
//!   main's reply is read and matched, to cover a reply that comes before
//!   the give-up as well as after it.
//!
//! Covered: a reply matched before / after its caller gives up (invariant
//! 2), a follower giving up while another leads, a leader leaving with a
//! follower waiting (handed to the background reader) and with the
//! follower answered in the same message (invariant 3), nested calls from
//! a push handler answered and timed out, with a push that arrived during
//! the nested read run after the handler (invariants 1 and 5), callback
//! calls answered and expired by the timer, a push handler that panics on
//! the leader's thread (the dropped turn still goes to the background
//! reader), and main going away while a caller follows (invariant 6).
//! Every wait is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use ipc_channel::ipc::IpcBytesSender;

use super::*;
use crate::link::{Alive, Ends};
use crate::pipe::{Region, Way, Writer};

const BOUND: Duration = Duration::from_secs(10);
const MAX_FRAME: usize = 1 << 20;

/// Main's side of one link, and the gates of its child side.
struct Main {
    link: Arc<ChildLink>,
    up: crate::pipe::Reader,
    down: Writer,
    alive: Option<IpcBytesSender>,
    seen: Receiver<Point>,
    gates: Arc<Mutex<HashMap<Point, Receiver<()>>>>,
}

impl Main {
    /// A link whose background reader is held before it looks for the turn.
    fn new() -> (Main, Sender<()>) {
        let (seen_tx, seen) = crossbeam_channel::unbounded();
        let gates: Arc<Mutex<HashMap<Point, Receiver<()>>>> = Arc::default();
        let hook_gates = gates.clone();
        let hook: Hook = Arc::new(move |point| {
            let _ = seen_tx.send(point);
            let gate = hook_gates.lock().unwrap().remove(&point);
            if let Some(go) = gate {
                // A gate dropped, or never opened, lets the thread go on.
                let _ = go.recv_timeout(BOUND);
            }
        });
        let (tx, rx) = crossbeam_channel::bounded(1);
        gates.lock().unwrap().insert(Point::BackgroundIdle, rx);
        NEXT_HOOK.with(|h| *h.borrow_mut() = Some(hook));
        let (main_region, file) = Region::create().unwrap();
        let child_region = Region::open(file).unwrap();
        let (alive, down_rx) = crate::link::ipc::channel().unwrap();
        let joined = Joined {
            peer: 1,
            name: "child".into(),
            max_frame: MAX_FRAME,
            ends: Ends::SharedMemory {
                region: child_region,
                alive: Alive::Receiver(down_rx),
            },
        };
        let link = ChildLink::start(
            joined,
            WhenMainGone::Stay,
            Duration::ZERO,
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .unwrap();
        let main = Main {
            link,
            up: main_region.reader(Way::Up, link::message_limit(MAX_FRAME)),
            down: main_region.writer(Way::Down),
            alive: Some(alive),
            seen,
            gates,
        };
        (main, tx)
    }

    /// Holds the next thread that reaches `point` until the sender is used.
    fn stop_at(&self, point: Point) -> Sender<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.gates.lock().unwrap().insert(point, rx);
        tx
    }

    /// Waits until some thread reaches `point`.
    fn wait_for(&self, point: Point) {
        let deadline = Instant::now() + BOUND;
        loop {
            match self.seen.recv_deadline(deadline) {
                Ok(p) if p == point => return,
                Ok(_) => {}
                Err(_) => panic!("no thread reached {point:?}"),
            }
        }
    }

    /// The ids of the next `n` calls main receives.
    fn calls(&mut self, n: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        while ids.len() < n {
            let message = self
                .up
                .recv_until(Some(Instant::now() + BOUND))
                .unwrap()
                .expect("the child sent no call");
            for frame in Frames::new(&message) {
                if let Frame::Call { id, .. } = wire::parse(frame.unwrap(), MAX_FRAME).unwrap() {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// Sends `frames` as one message.
    fn send(&mut self, frames: &[Frame<'_>]) {
        let mut message = Vec::new();
        for f in frames {
            wire::put(&mut message, f).unwrap();
        }
        self.down.send(&message).unwrap();
    }

    fn reply(&mut self, id: u64, body: &[u8]) {
        self.send(&[Frame::Reply { id, body }]);
    }
}

impl Drop for Main {
    fn drop(&mut self) {
        // Main goes: the child's threads see the link close and end.
        self.alive.take();
    }
}

/// A call's result, to come on a receiver.
type Pending = Receiver<Result<Vec<u8>>>;

/// Call 1 takes the reading turn, then call 2 (with its own time-out)
/// follows it: the start of every hand-off test.
fn leader_and_follower(main: &mut Main, follower_timeout: Duration) -> (Pending, Pending) {
    let leader = call_on_thread(&main.link, BOUND);
    main.wait_for(Point::TookTurn { background: false });
    let follower = call_on_thread(&main.link, follower_timeout);
    main.wait_for(Point::Following(2));
    assert_eq!(main.calls(2), [1, 2]);
    (leader, follower)
}

/// Calls a service on a thread of its own; the result comes on the receiver.
fn call_on_thread(link: &Arc<ChildLink>, timeout: Duration) -> Pending {
    let link = link.clone();
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = tx.send(link.call("svc", b"q", timeout));
    });
    rx
}

fn join<T>(result: Receiver<T>) -> T {
    result.recv_timeout(BOUND).expect("a caller never returned")
}

#[test]
fn a_reply_matched_before_the_give_up_is_returned() {
    let (mut main, background) = Main::new();
    let giving_up = main.stop_at(Point::GivingUp(1));
    let caller = call_on_thread(&main.link, Duration::from_millis(50));
    main.wait_for(Point::TookTurn { background: false });
    assert_eq!(main.calls(1), [1]);
    main.wait_for(Point::GivingUp(1));
    // The caller left the turn at its deadline and waits to leave the
    // table; the reply comes now and the background reader matches it.
    main.reply(1, b"just in time");
    background.send(()).unwrap();
    main.wait_for(Point::Matched(1));
    giving_up.send(()).unwrap();
    assert_eq!(join(caller).unwrap(), b"just in time");
    assert_eq!(main.link.pending_calls(), 0);
}

#[test]
fn a_reply_after_the_give_up_is_dropped_and_the_next_call_gets_its_own() {
    let (mut main, background) = Main::new();
    let caller = call_on_thread(&main.link, Duration::from_millis(20));
    assert_eq!(main.calls(1), [1]);
    let err = join(caller).unwrap_err();
    assert!(matches!(err, Error::CallTimeout { .. }), "{err:?}");
    assert_eq!(main.link.pending_calls(), 0);
    main.reply(1, b"late");
    background.send(()).unwrap();
    main.wait_for(Point::Dropped(1));
    let next = call_on_thread(&main.link, BOUND);
    assert_eq!(main.calls(1), [2]);
    main.reply(2, b"fresh");
    assert_eq!(join(next).unwrap(), b"fresh");
}

#[test]
fn a_follower_that_gives_up_leaves_the_leader_reading_alone() {
    let (mut main, background) = Main::new();
    let (leader, follower) = leader_and_follower(&mut main, Duration::from_millis(20));
    let err = join(follower).unwrap_err();
    assert!(matches!(err, Error::CallTimeout { .. }), "{err:?}");
    main.reply(1, b"leader's");
    // Nobody follows any more: the turn is not handed on.
    main.wait_for(Point::PassedTurn { urgent: false });
    assert_eq!(join(leader).unwrap(), b"leader's");
    main.reply(2, b"late");
    background.send(()).unwrap();
    main.wait_for(Point::Dropped(2));
    assert_eq!(main.link.pending_calls(), 0);
}

#[test]
fn a_leader_that_leaves_hands_its_followers_to_the_background_reader() {
    let (mut main, background) = Main::new();
    let (leader, follower) = leader_and_follower(&mut main, BOUND);
    main.reply(1, b"leader's");
    main.wait_for(Point::PassedTurn { urgent: true });
    assert_eq!(join(leader).unwrap(), b"leader's");
    // Nobody reads until the background reader comes: the follower's
    // reply waits in the pipe, and the follower with it.
    main.reply(2, b"follower's");
    assert!(follower.is_empty());
    background.send(()).unwrap();
    main.wait_for(Point::TookTurn { background: true });
    main.wait_for(Point::Matched(2));
    assert_eq!(join(follower).unwrap(), b"follower's");
    main.wait_for(Point::PassedTurn { urgent: false });
}

#[test]
fn a_leader_that_reads_its_followers_reply_too_hands_nothing_on() {
    let (mut main, _background) = Main::new();
    let (leader, follower) = leader_and_follower(&mut main, BOUND);
    main.send(&[
        Frame::Reply {
            id: 2,
            body: b"follower's",
        },
        Frame::Reply {
            id: 1,
            body: b"leader's",
        },
    ]);
    main.wait_for(Point::PassedTurn { urgent: false });
    assert_eq!(join(leader).unwrap(), b"leader's");
    assert_eq!(join(follower).unwrap(), b"follower's");
}

/// What the push handlers of the nested-call tests saw, in order.
fn recording_handlers(main: &Main, inner_timeout: Duration) -> Receiver<String> {
    let (log, seen) = crossbeam_channel::unbounded();
    let link = Arc::downgrade(&main.link);
    let outer = log.clone();
    let calls: PushHandler = Arc::new(move |body: &[u8]| {
        outer
            .send(format!("s {}", String::from_utf8_lossy(body)))
            .unwrap();
        let link = link.upgrade().unwrap();
        let r = link.call("inner", b"", inner_timeout);
        let said = match r {
            Ok(reply) => String::from_utf8_lossy(&reply).into_owned(),
            Err(Error::CallTimeout { .. }) => "timed out".into(),
            Err(e) => format!("{e}"),
        };
        outer.send(format!("s done: {said}")).unwrap();
    });
    let records: PushHandler = Arc::new(move |body: &[u8]| {
        log.send(format!("t {}", String::from_utf8_lossy(body)))
            .unwrap();
    });
    let mut push = main.link.push.write().unwrap();
    push.insert("s".into(), Arc::from(vec![calls]));
    push.insert("t".into(), Arc::from(vec![records]));
    seen
}

fn next(seen: &Receiver<String>) -> String {
    seen.recv_timeout(BOUND).expect("a handler never ran")
}

#[test]
fn a_nested_call_reads_its_own_reply_and_defers_the_pushes_it_reads() {
    let (mut main, background) = Main::new();
    let seen = recording_handlers(&main, BOUND);
    background.send(()).unwrap();
    main.send(&[Frame::Push {
        stream: "s",
        body: b"1",
    }]);
    assert_eq!(next(&seen), "s 1");
    // The handler's call: the push that comes before its reply is read by
    // the nested read and must run after the handler, not inside it.
    assert_eq!(main.calls(1), [1]);
    main.send(&[Frame::Push {
        stream: "t",
        body: b"2",
    }]);
    main.reply(1, b"inner reply");
    assert_eq!(next(&seen), "s done: inner reply");
    assert_eq!(next(&seen), "t 2");
    assert_eq!(main.link.pending_calls(), 0);
}

#[test]
fn a_nested_call_times_out_and_its_late_reply_is_dropped() {
    let (mut main, background) = Main::new();
    let seen = recording_handlers(&main, Duration::from_millis(20));
    background.send(()).unwrap();
    main.send(&[Frame::Push {
        stream: "s",
        body: b"1",
    }]);
    assert_eq!(next(&seen), "s 1");
    assert_eq!(main.calls(1), [1]);
    assert_eq!(next(&seen), "s done: timed out");
    main.reply(1, b"late");
    main.wait_for(Point::Dropped(1));
    // The link still serves calls.
    let caller = call_on_thread(&main.link, BOUND);
    assert_eq!(main.calls(1), [2]);
    main.reply(2, b"fresh");
    assert_eq!(join(caller).unwrap(), b"fresh");
}

#[test]
fn callbacks_are_answered_or_expired_by_the_timer_once() {
    let (mut main, background) = Main::new();
    background.send(()).unwrap();
    let (tx, done) = crossbeam_channel::unbounded();
    let answered = tx.clone();
    main.link.call_with(
        "svc",
        b"",
        BOUND,
        Box::new(move |r| answered.send(r).unwrap()),
    );
    main.link.call_with(
        "slow",
        b"",
        Duration::from_millis(20),
        Box::new(move |r| tx.send(r).unwrap()),
    );
    assert_eq!(main.calls(2), [1, 2]);
    main.reply(1, b"in time");
    let first = done.recv_timeout(BOUND).unwrap();
    let second = done.recv_timeout(BOUND).unwrap();
    let (ok, expired) = if first.is_ok() {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(ok.unwrap(), b"in time");
    match expired.unwrap_err() {
        Error::CallTimeout { operation, .. } => {
            assert!(operation.contains("slow"), "{operation}")
        }
        e => panic!("{e:?}"),
    }
    main.reply(2, b"late");
    main.wait_for(Point::Dropped(2));
    assert!(done.try_recv().is_err(), "a callback ran twice");
    assert_eq!(main.link.pending_calls(), 0);
}

#[test]
fn main_going_away_releases_leader_and_followers() {
    let (mut main, _background) = Main::new();
    let (leader, follower) = leader_and_follower(&mut main, BOUND);
    let link = main.link.clone();
    drop(main);
    assert!(matches!(join(leader), Err(Error::Disconnected(_))));
    assert!(matches!(join(follower), Err(Error::Disconnected(_))));
    assert!(link.is_gone());
    assert_eq!(link.pending_calls(), 0);
}

#[test]
fn a_leader_whose_push_handler_panics_still_hands_the_turn_on() {
    let (mut main, background) = Main::new();
    let boom: PushHandler = Arc::new(|_: &[u8]| panic!("a push handler failed (on purpose)"));
    main.link
        .push
        .write()
        .unwrap()
        .insert("boom".into(), Arc::from(vec![boom]));
    let (leader, follower) = leader_and_follower(&mut main, BOUND);
    main.send(&[Frame::Push {
        stream: "boom",
        body: b"",
    }]);
    // The leader's thread unwinds; dropping its turn hands it on.
    main.wait_for(Point::PassedTurn { urgent: true });
    assert!(leader.recv_timeout(BOUND).is_err(), "the leader returned");
    main.reply(2, b"follower's");
    background.send(()).unwrap();
    main.wait_for(Point::TookTurn { background: true });
    assert_eq!(join(follower).unwrap(), b"follower's");
}

#[test]
fn a_caught_panic_in_a_handler_leaves_the_thread_making_plain_calls() {
    // The background reader stays held: the caller leads.
    let (mut main, _background) = Main::new();
    let boom: PushHandler = Arc::new(|_: &[u8]| panic!("a push handler failed (on purpose)"));
    main.link
        .push
        .write()
        .unwrap()
        .insert("boom".into(), Arc::from(vec![boom]));
    // This thread leads a call, reads the push and catches the panic.
    let link = main.link.clone();
    let caller = thread::spawn(move || {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            link.call("svc", b"q", BOUND)
        }));
        assert!(caught.is_err());
        Context::with(Context::handling)
    });
    main.wait_for(Point::TookTurn { background: false });
    assert_eq!(main.calls(1), [1]);
    main.send(&[Frame::Push {
        stream: "boom",
        body: b"",
    }]);
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = tx.send(caller.join());
    });
    let handling = rx.recv_timeout(BOUND).unwrap().unwrap();
    assert!(!handling, "the thread still counts as handling frames");
}
