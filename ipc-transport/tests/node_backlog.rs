//! Main's backlog for a child that does not keep up: pushes on a lossy
//! stream drop the oldest and hand them back; other pushes keep their order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use yuki_channel::PeerId;
use yuki_ipc_transport::Node;
use yuki_testkit::{Harness, run_child};

const WAIT: Duration = Duration::from_secs(15);

/// Pushes a stopped child is sent: far more than its backlog, its pipe and
/// a send in progress can hold.
const PUSHES: u64 = 50_000;

fn frame(seq: u64) -> Vec<u8> {
    let mut f = seq.to_le_bytes().to_vec();
    f.resize(64, 0);
    f
}

fn seq_of(frame: &[u8]) -> u64 {
    u64::from_le_bytes(frame[..8].try_into().unwrap())
}

/// Continues the child on every path, so it is never left stopped.
struct Stopped(libc::pid_t);

impl Stopped {
    fn new(pid: libc::pid_t) -> Stopped {
        // SAFETY: signals a child this test started and still owns.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[test]
fn a_stopped_child_loses_the_oldest_lossy_pushes_and_main_learns_which() {
    if run_child(|_| {
        let node = Node::init().unwrap();
        let t = node.transport();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        t.on_push(
            "lossy",
            Arc::new(move |f: &[u8]| g.lock().unwrap().push(seq_of(f))),
        )
        .unwrap();
        let (end_tx, end_rx) = crossbeam_channel::bounded(1);
        t.on_push(
            "ctl",
            Arc::new(move |_: &[u8]| {
                let _ = end_tx.try_send(());
            }),
        )
        .unwrap();
        t.call("ready", b"").unwrap();
        end_rx.recv_timeout(WAIT).expect("main's end of the pushes");
        // Everything on "lossy" came before "end", on one ordered link.
        let got = got.lock().unwrap().clone();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order");
        let mut report = (got.len() as u64).to_le_bytes().to_vec();
        report.extend_from_slice(&got.last().copied().unwrap_or(u64::MAX).to_le_bytes());
        t.call("report", &report).unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder()
        .independent_main()
        .max_backlog(256 << 10)
        .init()
        .unwrap();
    let t = node.transport();
    let (tx, rx) = crossbeam_channel::unbounded();
    for name in ["ready", "report"] {
        let tx = tx.clone();
        t.serve(
            name,
            Arc::new(move |_: PeerId, req: &[u8], _: &mut Vec<u8>| {
                let _ = tx.send(req.to_vec());
                Ok(())
            }),
        )
        .unwrap();
    }
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let d = dropped.clone();
    t.on_push_dropped(
        "lossy",
        Arc::new(move |_: PeerId, frames: &[&[u8]]| {
            d.lock().unwrap().extend(frames.iter().map(|f| seq_of(f)));
        }),
    )
    .unwrap();
    let child = node.spawn("stopped", h.command("stopped", 0)).unwrap();
    rx.recv_timeout(WAIT).expect("the child is ready");
    let peer = child.id();
    let stopped = Stopped::new(child.pid() as libc::pid_t);
    for seq in 0..PUSHES {
        assert_eq!(t.push(peer, "lossy", &frame(seq)), Ok(()), "push {seq}");
    }
    // A push that may not be dropped still finds room, made by dropping
    // lossy ones (those of other streams are refused once they alone fill
    // the backlog: see node_faults).
    assert_eq!(t.push(peer, "ctl", b"end"), Ok(()));
    drop(stopped);
    let report = rx.recv_timeout(WAIT).expect("the child's report");
    let (received, last) = (seq_of(&report), seq_of(&report[8..]));
    let dropped = dropped.lock().unwrap().clone();
    assert!(
        !dropped.is_empty(),
        "nothing was dropped: the test is too gentle"
    );
    assert!(
        dropped.windows(2).all(|w| w[0] < w[1]),
        "dropped oldest first, once each"
    );
    assert_eq!(last, PUSHES - 1, "the newest push arrived");
    assert_eq!(
        received + dropped.len() as u64,
        PUSHES,
        "every push arrived or was handed back"
    );
    assert!(child.wait_timeout(WAIT).unwrap().status.success());
    drop(node);
    h.assert_no_leftovers(WAIT);
}
