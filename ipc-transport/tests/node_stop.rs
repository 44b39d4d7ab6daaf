//! A child asked to stop learns of it and ends on its own terms: it
//! finishes what it writes, may still talk to main, and exits cleanly by
//! returning from `main`; one that ignores the request is killed after the
//! grace period.

use std::future::Future;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use yuki_channel::{PeerId, codec};
use yuki_ipc_transport::{Error, Node};
use yuki_testkit::{Harness, run_child};

const WAIT: Duration = Duration::from_secs(20);
const LOG_ENV: &str = "YUKI_TEST_STOP_LOG";

fn blocks_forever() {
    let (_tx, rx) = std::sync::mpsc::channel::<()>();
    let _ = rx.recv();
}

/// Serves `name` in main: each call's body arrives on the returned receiver.
fn inbox(node: &Node, name: &str) -> crossbeam_channel::Receiver<Vec<u8>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    node.transport()
        .serve(
            name,
            Arc::new(move |_: PeerId, req: &[u8], _: &mut Vec<u8>| {
                let _ = tx.send(req.to_vec());
                Ok(())
            }),
        )
        .unwrap();
    rx
}

/// Polls `future` on this thread until it is ready.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[test]
fn a_child_asked_to_stop_finishes_its_log_line_saves_through_main_and_exits_cleanly() {
    if run_child(|_| {
        let node = Node::init().unwrap();
        node.wait_for_stop().unwrap();
        // Slow on purpose: the old link reader exited the process at the
        // shutdown message, cutting this line short.
        let path = std::env::var(LOG_ENV).unwrap();
        let mut log = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        for i in 0..50 {
            write!(log, "{i},").unwrap();
            log.flush().unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        writeln!(log, "end").unwrap();
        log.flush().unwrap();
        // The link is still open while the child stops.
        node.transport().call("saved", b"state").unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let dir = std::env::temp_dir().join(format!("yuki-stop-{}", h.run_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("child.log");
    let node = Node::builder().independent_main().init().unwrap();
    let saved = inbox(&node, "saved");
    let mut cmd = h.command("writer", 0);
    cmd.env(LOG_ENV, &path);
    let child = node.spawn("writer", cmd).unwrap();
    let asked = Instant::now();
    let exit = child.stop(WAIT).unwrap();
    assert!(asked.elapsed() < WAIT, "it did not need SIGTERM");
    assert_eq!(exit.status.code(), Some(0), "{exit:?}");
    let line = std::fs::read_to_string(&path).unwrap();
    let expected: String = (0..50).map(|i| format!("{i},")).collect::<String>() + "end\n";
    assert_eq!(line, expected);
    assert_eq!(saved.try_recv().unwrap(), b"state");
    let _ = std::fs::remove_dir_all(&dir);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_child_that_ignores_the_stop_is_killed_after_the_grace_period() {
    if run_child(|_| {
        let _node = Node::init().unwrap();
        blocks_forever();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let child = node.spawn("deaf", h.command("deaf", 0)).unwrap();
    // wait_timeout has stop's shape: a time-out is an error.
    assert!(matches!(
        child.wait_timeout(Duration::from_millis(1)),
        Err(Error::Transport(yuki_channel::Error::Timeout(_)))
    ));
    let grace = Duration::from_millis(300);
    let asked = Instant::now();
    let exit = child.stop(grace).unwrap();
    assert!(asked.elapsed() >= grace, "killed before its grace ran out");
    assert_eq!(exit.status.signal(), Some(libc::SIGTERM), "{exit:?}");
    assert_eq!(child.wait().unwrap(), exit);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn an_on_stop_hook_runs_and_may_call_main() {
    if run_child(|_| {
        let node = Node::init().unwrap();
        let t = node.transport();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        node.on_stop(move || {
            t.call("hook", b"ran").unwrap();
            done_tx.send(()).unwrap();
        })
        .unwrap();
        node.transport().call("hook", b"armed").unwrap();
        done_rx.recv_timeout(WAIT).unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let hook = inbox(&node, "hook");
    let child = node.spawn("hooked", h.command("hooked", 0)).unwrap();
    assert_eq!(hook.recv_timeout(WAIT).unwrap(), b"armed");
    let exit = child.stop(WAIT).unwrap();
    assert_eq!(exit.status.code(), Some(0), "{exit:?}");
    assert_eq!(hook.try_recv().unwrap(), b"ran");
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn the_polled_timed_and_async_forms_see_the_stop() {
    if run_child(|_| {
        let node = Node::init().unwrap();
        let t = node.transport();
        let before = (
            node.stop_requested(),
            node.wait_for_stop_timeout(Duration::from_millis(5))
                .unwrap(),
        );
        t.call("seen", &codec::encode(&before).unwrap()).unwrap();
        block_on(node.wait_for_stop_async()).unwrap();
        let after = (
            node.stop_requested(),
            node.wait_for_stop_timeout(Duration::ZERO).unwrap(),
        );
        node.wait_for_stop().unwrap();
        t.call("seen", &codec::encode(&after).unwrap()).unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let seen = inbox(&node, "seen");
    let child = node.spawn("forms", h.command("forms", 0)).unwrap();
    let before: (bool, bool) = codec::decode(&seen.recv_timeout(WAIT).unwrap()).unwrap();
    assert_eq!(before, (false, false));
    let exit = child.stop(WAIT).unwrap();
    assert_eq!(exit.status.code(), Some(0), "{exit:?}");
    let after: (bool, bool) = codec::decode(&seen.try_recv().unwrap()).unwrap();
    assert_eq!(after, (true, true));
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn main_is_never_asked_to_stop() {
    if run_child(|_| {}) {
        return;
    }
    let node = Node::builder().independent_main().init().unwrap();
    assert!(!node.stop_requested());
    assert!(matches!(node.wait_for_stop(), Err(Error::WrongRole(_))));
    assert!(matches!(
        node.wait_for_stop_timeout(Duration::ZERO),
        Err(Error::WrongRole(_))
    ));
    assert!(matches!(
        block_on(node.wait_for_stop_async()),
        Err(Error::WrongRole(_))
    ));
    assert!(matches!(node.on_stop(|| {}), Err(Error::WrongRole(_))));
}
