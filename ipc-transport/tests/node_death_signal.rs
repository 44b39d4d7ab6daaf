//! Linux's parent-death signal: a child spawned with the default setting
//! (SIGKILL) dies with main even when its program would stay after main is
//! gone; the same child spawned with `parent_death_signal(None)` stays, so
//! the signal, not the link, is what ended the first.
//!
//! Linux only: elsewhere there is no `PR_SET_PDEATHSIG`, and `spawn`
//! refuses a signal (tested in the crate's unit tests).
#![cfg(target_os = "linux")]

use std::time::Duration;

use yuki_ipc_transport::{Node, WhenMainGone};
use yuki_testkit::{Harness, report, run_child};

const WAIT: Duration = Duration::from_secs(20);
/// How long the unarmed child must outlive main to show it stays.
const STAYS: Duration = Duration::from_millis(500);

fn blocks_forever() {
    let (_tx, rx) = std::sync::mpsc::channel::<()>();
    let _ = rx.recv();
}

/// Kills a process that is not the test's child on every path out.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGKILL) };
    }
}

/// The middle process: main with one armed and one unarmed child.
fn run_main() {
    let h = Harness::for_test("the_default_death_signal_ends_a_child_with_main");
    let node = Node::init().unwrap();
    let armed = node.spawn("armed", h.command("stays", 0)).unwrap();
    let unarmed = node
        .child("unarmed", h.command("stays", 1))
        .parent_death_signal(None)
        .spawn()
        .unwrap();
    report("armed", armed.pid());
    report("unarmed", unarmed.pid());
    blocks_forever();
}

/// A child whose program never ends, and that stays when main is gone.
fn run_stays() {
    let _node = Node::builder()
        .when_main_gone(WhenMainGone::Stay)
        .init()
        .unwrap();
    blocks_forever();
}

#[test]
fn the_default_death_signal_ends_a_child_with_main() {
    if run_child(|s| match s.name() {
        "main" => run_main(),
        "stays" => run_stays(),
        other => panic!("unknown scenario {other}"),
    }) {
        return;
    }
    let mut h = Harness::new().timeout(WAIT);
    let main = h.spawn("main").unwrap();
    let pid = |key| -> u32 {
        h.wait_report(main, key)
            .unwrap_or_else(|| panic!("main did not report its {key} child"))
            .parse()
            .unwrap()
    };
    let armed = KillOnDrop(pid("armed"));
    let unarmed = KillOnDrop(pid("unarmed"));
    h.kill(main);
    assert!(!h.wait(main).timed_out);
    assert!(
        h.wait_gone(armed.0, WAIT),
        "the child with the default death signal outlived main"
    );
    assert!(
        !h.wait_gone(unarmed.0, STAYS),
        "the child without a death signal ended too: the test shows nothing"
    );
    drop(unarmed);
    h.assert_no_leftovers(WAIT);
}
