//! When main dies, children's calls and blocked receives fail within a
//! second, and the children exit.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use yuki_channel::{Error as ChannelError, PeerEvent, PeerId};
use yuki_ipc_transport::{Node, WhenMainGone};
use yuki_testkit::{Harness, report, run_child};

const WAIT: Duration = Duration::from_secs(20);

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes only into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn blocks_forever() {
    let (_tx, rx) = std::sync::mpsc::channel::<()>();
    let _ = rx.recv();
}

/// The middle process: a main with two children, killed by the test.
fn run_main() {
    let h = Harness::for_test("main_killed_children_fail_fast_and_exit");
    let node = Node::init().unwrap();
    let t = node.transport();
    let _inbox = node.channel::<u32>("inbox").unwrap();
    let (armed_tx, armed_rx) = crossbeam_channel::bounded(1);
    t.serve(
        "slow",
        Arc::new(move |_: PeerId, _: &[u8], _: &mut Vec<u8>| {
            let _ = armed_tx.send(());
            blocks_forever();
            Ok(())
        }),
    )
    .unwrap();
    // Grandchildren write their reports into the pipe the harness reads.
    let mut stay = h.command("watcher", 0);
    stay.stdout(Stdio::inherit());
    let _watcher = node
        .child("watcher", stay)
        .parent_death_signal(None)
        .spawn()
        .unwrap();
    let mut plain = h.command("plain", 0);
    plain.stdout(Stdio::inherit());
    // No parent-death signal: it ends by itself after its grace period.
    let plain = node
        .child("plain", plain)
        .parent_death_signal(None)
        .spawn()
        .unwrap();
    report("plain-pid", plain.pid());
    armed_rx.recv_timeout(WAIT).unwrap();
    report("ready", 1);
    blocks_forever();
}

/// A child that stays after main is gone, to time what it sees.
fn run_watcher() {
    let node = Node::builder()
        .when_main_gone(WhenMainGone::Stay)
        .init()
        .unwrap();
    let t = node.transport();
    let (left_tx, left_rx) = crossbeam_channel::bounded(1);
    t.on_peer_event(Arc::new(move |e| {
        if let PeerEvent::Left { peer, .. } = e {
            assert_eq!(*peer, PeerId::MAIN);
            let _ = left_tx.send(now_ns());
        }
    }));
    let inbox = node.channel::<u32>("inbox").unwrap();
    let receiver = std::thread::spawn(move || {
        let r = inbox.recv();
        let at = now_ns();
        // The reason is said once, not wrapped in itself.
        let said = r.as_ref().map_err(|e| e.to_string()).err();
        let once = said
            .as_deref()
            .is_some_and(|s| s.matches("main is gone").count() == 1);
        assert!(once, "{said:?}");
        (r.is_err(), at)
    });
    let in_flight = t.call("slow", b"");
    let call_ns = now_ns();
    assert!(
        matches!(in_flight, Err(ChannelError::Disconnected(_))),
        "{in_flight:?}"
    );
    let (recv_failed, recv_ns) = receiver.join().unwrap();
    assert!(recv_failed);
    let later = t.call("slow", b"");
    let later_ns = now_ns();
    assert!(
        matches!(later, Err(ChannelError::Disconnected(_))),
        "{later:?}"
    );
    assert!(node.is_disconnected());
    assert!(node.stop_requested(), "main's end asks the child to stop");
    node.wait_for_stop().unwrap();
    report("call", call_ns);
    report("recv", recv_ns);
    report("later", later_ns);
    report("left", left_rx.recv_timeout(WAIT).unwrap());
}

#[test]
fn main_killed_children_fail_fast_and_exit() {
    if run_child(|s| match s.name() {
        "main" => run_main(),
        "watcher" => run_watcher(),
        "plain" => {
            // Default settings but a short grace: exits when main goes,
            // though its program never returns.
            let _node = Node::builder()
                .stop_timeout(Duration::from_millis(300))
                .init()
                .unwrap();
            blocks_forever();
        }
        other => panic!("unknown scenario {other}"),
    }) {
        return;
    }
    let mut h = Harness::new().timeout(WAIT);
    let main = h.spawn("main").unwrap();
    assert!(
        h.wait_report(main, "ready").is_some(),
        "main and its children start"
    );
    let killed_at = now_ns();
    h.kill(main);
    let outcome = h.wait(main);
    assert!(
        !outcome.timed_out,
        "every child closed its output: {outcome:#?}"
    );
    for key in ["call", "recv", "later", "left"] {
        let at: u64 = outcome
            .value(key)
            .unwrap_or_else(|| panic!("no {key} report: {outcome:#?}"))
            .parse()
            .unwrap();
        let after = Duration::from_nanos(at.saturating_sub(killed_at));
        assert!(
            after < Duration::from_secs(1),
            "{key} failed {after:?} after main died"
        );
    }
    h.assert_no_leftovers(WAIT);
}
