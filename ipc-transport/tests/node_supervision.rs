//! Supervision with real children: restarts with back-off and a budget,
//! stop escalation, requests from the child, and kill -9 while sending.

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use yuki_channel::{PeerEvent, PeerId, codec};
use yuki_ipc_transport::{Lifecycle, Node, RestartPolicy, WhenMainGone};
use yuki_testkit::{Harness, run_child};

const WAIT: Duration = Duration::from_secs(15);

type Seen = Arc<Mutex<Vec<(Instant, Lifecycle)>>>;

fn record(node: &Node) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    node.on_lifecycle(move |e| s.lock().unwrap().push((Instant::now(), e.clone())));
    seen
}

fn blocks_forever() {
    let (_tx, rx) = std::sync::mpsc::channel::<()>();
    let _ = rx.recv();
}

#[test]
fn a_crashing_child_is_restarted_with_backoff_until_the_budget_runs_out() {
    if run_child(|_| {
        let _node = Node::init().unwrap();
        std::process::exit(3);
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let seen = record(&node);
    let child = node
        .child("crasher", h.command("crasher", 0))
        .restart_policy(RestartPolicy::OnFailure)
        .backoff(Duration::from_millis(20), Duration::from_millis(50))
        .restart_budget(3)
        .spawn()
        .unwrap();
    let exit = child
        .wait_timeout(WAIT)
        .expect("the supervisor gives up in time");
    assert!(exit.gave_up);
    assert_eq!(exit.restarts, 3);
    assert_eq!(exit.status.code(), Some(3));
    assert_eq!(child.restarts(), 3);

    let seen = seen.lock().unwrap().clone();
    let kinds: Vec<_> = seen
        .iter()
        .map(|(_, e)| match e {
            Lifecycle::Exited { .. } => "exit".to_owned(),
            Lifecycle::Restarting { attempt, delay, .. } => {
                format!("restart {attempt} {}ms", delay.as_millis())
            }
            Lifecycle::GaveUp { restarts, .. } => format!("gave up {restarts}"),
            Lifecycle::Stopping { .. } => "stop".to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "exit",
            "restart 1 20ms",
            "exit",
            "restart 2 40ms",
            "exit",
            "restart 3 50ms",
            "exit",
            "gave up 3"
        ]
    );
    // Each restart waited at least its back-off.
    for pair in seen.windows(2) {
        if let (_, Lifecycle::Restarting { delay, .. }) = &pair[0] {
            assert!(pair[1].0 - pair[0].0 >= *delay);
        }
    }
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn stop_escalates_from_asking_to_sigterm_to_sigkill() {
    if run_child(|s| {
        let _node = Node::builder()
            .when_main_gone(WhenMainGone::Stay)
            .init()
            .unwrap();
        if s.name() == "deaf" {
            // SAFETY: ignoring a signal installs no handler code.
            unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
        }
        blocks_forever();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let seen = record(&node);

    // Ignores the stop request but dies of SIGTERM, after the grace period.
    let stubborn = node.spawn("stubborn", h.command("stubborn", 0)).unwrap();
    let asked = Instant::now();
    let exit = stubborn.stop(Duration::from_millis(200)).unwrap();
    assert!(asked.elapsed() >= Duration::from_millis(200));
    assert_eq!(exit.status.signal(), Some(libc::SIGTERM));

    // Ignores SIGTERM too: SIGKILL.
    let deaf = node.spawn("deaf", h.command("deaf", 0)).unwrap();
    let exit = deaf.stop(Duration::from_millis(200)).unwrap();
    assert_eq!(exit.status.signal(), Some(libc::SIGKILL));
    assert_eq!(deaf.try_wait(), Some(exit));
    // Stopping again reports the same end.
    assert_eq!(deaf.stop(Duration::from_millis(1)).unwrap(), exit);

    let stops = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| matches!(e, Lifecycle::Stopping { .. }))
        .count();
    assert_eq!(stops, 2);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_polite_child_exits_on_the_shutdown_message() {
    if run_child(|_| {
        let node = Node::init().unwrap();
        node.wait_for_stop().unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let seen = record(&node);
    let child = node.spawn("polite", h.command("polite", 0)).unwrap();
    assert!(child.is_running());
    let start = Instant::now();
    let exit = child.stop(WAIT).unwrap();
    assert!(start.elapsed() < WAIT, "it did not need SIGTERM");
    assert_eq!(exit.status.code(), Some(0));
    assert!(!child.is_running());
    let seen = seen.lock().unwrap();
    assert!(matches!(seen[0].1, Lifecycle::Stopping { ref name, .. } if name == "polite"));
    assert!(matches!(seen[1].1, Lifecycle::Exited { ref name, .. } if name == "polite"));
    drop(seen);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn kill_and_restart_from_main() {
    if run_child(|_| {
        let node = Node::init().unwrap();
        node.wait_for_stop().unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let seen = record(&node);
    let child = node
        .child("worker", h.command("worker", 0))
        .restart_policy(RestartPolicy::Always)
        .spawn()
        .unwrap();
    let (pid, peer) = (child.pid(), child.id());
    child.restart().unwrap();
    assert_ne!(child.pid(), pid);
    assert_ne!(child.id(), peer);
    assert_eq!(node.transport().peers(), vec![child.id()]);
    assert_eq!(child.restarts(), 0, "a requested restart spends no budget");
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|(_, e)| matches!(e, Lifecycle::Restarting { attempt: 0, .. }))
    );
    // kill() is for good, whatever the policy.
    let exit = child.kill().unwrap();
    assert_eq!(exit.status.signal(), Some(libc::SIGKILL));
    let said = child.restart().unwrap_err().to_string();
    assert!(said.contains("spawn it again"), "{said}");
    assert!(child.wait_timeout(Duration::from_millis(1)).is_ok());
    // The name can be used again once the child has ended.
    let again = node.spawn("worker", h.command("worker", 1)).unwrap();
    assert!(node.spawn("worker", h.command("worker", 2)).is_err());
    assert_eq!(node.children().len(), 1);
    drop(again);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_restart_whose_new_run_fails_reports_that_runs_own_error() {
    if run_child(|_| {
        // The first run joins; the next one exits before connecting.
        let mark = std::env::var("RAN_ONCE").unwrap();
        if std::fs::create_dir(&mark).is_err() {
            std::process::exit(3);
        }
        let node = Node::init().unwrap();
        node.wait_for_stop().unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let mark = std::env::temp_dir().join(format!("yuki-ran-once-{}", h.run_id()));
    let node = Node::builder().independent_main().init().unwrap();
    let mut cmd = h.command("once", 0);
    cmd.env("RAN_ONCE", &mark);
    let child = node.spawn("once", cmd).unwrap();
    let err = child.restart().unwrap_err();
    let _ = std::fs::remove_dir(&mark);
    assert!(
        matches!(err, yuki_ipc_transport::Error::ExitedEarly { ref name, .. } if name == "once"),
        "{err:?}"
    );
    assert!(err.to_string().contains("must call Node::init()"), "{err}");
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_child_asks_main_to_restart_then_stop_it() {
    if run_child(|_| {
        let node = Node::init().unwrap();
        let t = node.transport();
        let run: u32 = codec::decode(&t.call("runs", b"").unwrap()).unwrap();
        if run == 1 {
            node.request_restart().unwrap();
        } else {
            node.request_stop().unwrap();
        }
        // Main answers by asking this child to stop.
        node.wait_for_stop().unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let seen = record(&node);
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    node.transport()
        .serve(
            "runs",
            Arc::new(move |_: PeerId, _: &[u8], reply: &mut Vec<u8>| {
                codec::encode_into(&(r.fetch_add(1, Ordering::SeqCst) + 1), reply)
            }),
        )
        .unwrap();
    let child = node.spawn("asker", h.command("asker", 0)).unwrap();
    let exit = child.wait_timeout(WAIT).expect("it stops itself");
    assert!(exit.status.success());
    assert!(!exit.gave_up);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|(_, e)| matches!(e, Lifecycle::Restarting { .. }))
    );
    assert!(
        seen.iter()
            .any(|(_, e)| matches!(e, Lifecycle::Stopping { .. }))
    );
    drop(seen);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn killing_a_child_while_it_sends_leaves_main_and_the_others_serving() {
    if run_child(|s| {
        let node = Node::init().unwrap();
        let t = node.transport();
        if s.name() == "victim" {
            // Sends until it is killed.
            loop {
                t.call("count", &[1]).unwrap();
            }
        }
        for _ in 0..2000 {
            t.call("count", &[0]).unwrap();
        }
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let t = node.transport();
    let victim_calls = Arc::new(AtomicU32::new(0));
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let v = victim_calls.clone();
    t.serve(
        "count",
        Arc::new(move |_: PeerId, req: &[u8], _: &mut Vec<u8>| {
            if req == [1] && v.fetch_add(1, Ordering::SeqCst) == 100 {
                let _ = started_tx.try_send(());
            }
            Ok(())
        }),
    )
    .unwrap();
    let left = Arc::new(Mutex::new(Vec::new()));
    let l = left.clone();
    t.on_peer_event(Arc::new(move |e| {
        if let PeerEvent::Left { peer, .. } = e {
            l.lock().unwrap().push(*peer);
        }
    }));
    let victim = node.spawn("victim", h.command("victim", 0)).unwrap();
    let others: Vec<_> = (0..3)
        .map(|i| {
            node.spawn(&format!("sender-{i}"), h.command("sender", i))
                .unwrap()
        })
        .collect();
    started_rx
        .recv_timeout(WAIT)
        .expect("the victim is sending");
    let exit = victim.kill().unwrap();
    assert_eq!(exit.status.signal(), Some(libc::SIGKILL));
    for o in &others {
        let exit = o.wait_timeout(WAIT).expect("the others finish");
        assert!(exit.status.success(), "{}: {exit:?}", o.name());
    }
    assert!(left.lock().unwrap().contains(&victim.id()));
    assert!(t.peers().is_empty());
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn policies_decide_which_exits_restart() {
    if run_child(|_| {
        let _node = Node::init().unwrap();
        // A clean exit.
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let on_failure = node
        .child("clean-on-failure", h.command("clean", 0))
        .restart_policy(RestartPolicy::OnFailure)
        .spawn()
        .unwrap();
    let exit = on_failure.wait_timeout(WAIT).unwrap();
    assert!(exit.status.success());
    assert_eq!((exit.restarts, exit.gave_up), (0, false));

    let always = node
        .child("clean-always", h.command("clean", 1))
        .restart_policy(RestartPolicy::Always)
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .restart_budget(2)
        .spawn()
        .unwrap();
    let exit = always.wait_timeout(WAIT).unwrap();
    assert!(exit.status.success());
    assert_eq!((exit.restarts, exit.gave_up), (2, true));
    // wait() returns at once for a child that has ended.
    assert_eq!(always.wait().unwrap(), exit);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn children_of_ever_new_names_are_forgotten_once_ended_and_unheld() {
    if run_child(|_| {
        // Ends when main asks it to stop.
        let node = Node::init().unwrap();
        node.wait_for_stop().unwrap();
    }) {
        return;
    }
    let h = Harness::new().timeout(Duration::from_secs(300));
    let node = Node::builder().independent_main().init().unwrap();
    // A live child stays in the table without a handle.
    drop(node.spawn("resident", h.command("worker", 0)).unwrap());
    let base = node.children().len();
    assert_eq!(base, 1);
    for i in 0..1000 {
        let c = node
            .spawn(&format!("c{i}"), h.command("worker", 0))
            .unwrap();
        assert_eq!(node.children().len(), base + 1);
        c.stop(WAIT).unwrap();
        // Ended, but a handle holds it: still listed, with its exit.
        let listed = node.children();
        assert_eq!(listed.len(), base + 1, "cycle {i}");
        assert!(
            listed
                .iter()
                .any(|l| l.name() == c.name() && l.try_wait().is_some())
        );
        drop(listed);
        drop(c);
        assert_eq!(node.children().len(), base, "cycle {i}: the table grew");
    }
    let names: Vec<_> = node
        .children()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    assert_eq!(names, ["resident"]);
    drop(node);
    h.assert_no_leftovers(WAIT);
}
