//! The multi-process harness, exercised with real child processes.

use std::time::Duration;

use yuki_testkit::{Harness, report, run_child};

#[test]
fn children_report_values_and_exit_status() {
    if run_child(|s| match s.name() {
        "ok" => report("square", s.index() * s.index()),
        "fail" => panic!("this child fails on purpose"),
        other => panic!("unknown scenario {other}"),
    }) {
        return;
    }
    let mut h = Harness::new();
    h.spawn_n("ok", 3).unwrap();
    h.spawn("fail").unwrap();
    let outcomes = h.wait_all();
    for (i, o) in outcomes[..3].iter().enumerate() {
        o.assert_success();
        assert_eq!(o.value("square"), Some((i * i).to_string().as_str()));
    }
    assert!(!outcomes[3].success());
    assert!(!outcomes[3].finished);
    h.assert_no_leftovers(Duration::from_secs(5));
}

#[test]
fn a_missing_test_name_is_not_a_success() {
    let mut h = Harness::for_test("no_such_test_exists");
    let id = h.spawn("anything").unwrap();
    let o = h.wait(id);
    assert!(o.status.unwrap().success(), "libtest ran zero tests");
    assert!(!o.success(), "but the child body never ran");
}

#[test]
fn hanging_children_are_killed_at_the_deadline() {
    if run_child(|_| {
        report("ready", 1);
        // Blocks until killed.
        let (_tx, rx) = std::sync::mpsc::channel::<()>();
        let _ = rx.recv();
    }) {
        return;
    }
    let mut h = Harness::new().timeout(Duration::from_millis(1500));
    let id = h.spawn("hang").unwrap();
    assert_eq!(h.wait_report(id, "ready").as_deref(), Some("1"));
    let o = h.wait(id);
    assert!(o.timed_out);
    assert!(!o.success());
    h.assert_no_leftovers(Duration::from_secs(5));
}

#[test]
fn dropping_the_harness_kills_children_even_on_panic() {
    if run_child(|_| {
        report("ready", 1);
        let (_tx, rx) = std::sync::mpsc::channel::<()>();
        let _ = rx.recv();
    }) {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = std::thread::current().name().unwrap().to_owned();
    let panicked = std::thread::spawn(move || {
        let mut h = Harness::for_test(&name);
        let id = h.spawn("hang").unwrap();
        assert!(h.wait_report(id, "ready").is_some());
        tx.send((h.run_id().to_owned(), h.pid(id))).unwrap();
        panic!("the test fails while its child runs");
    })
    .join();
    assert!(panicked.is_err());
    let (_run, pid) = rx.recv().unwrap();
    // The child was reaped by the harness's drop: no such process remains.
    // SAFETY: signal 0 only checks for existence.
    let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    assert!(!alive, "child {pid} survived its harness");
}

#[test]
fn kill_ends_a_child_and_commands_carry_the_run_id() {
    if run_child(|s| {
        report("ready", s.index());
        let (_tx, rx) = std::sync::mpsc::channel::<()>();
        let _ = rx.recv();
    }) {
        return;
    }
    let mut h = Harness::new();
    let id = h.spawn("hang").unwrap();
    assert!(h.wait_report(id, "ready").is_some());
    assert_eq!(h.leftovers(), vec![h.pid(id)]);
    h.kill(id);
    let o = h.wait(id);
    assert!(!o.timed_out);
    assert!(!o.success());
    h.assert_no_leftovers(Duration::from_secs(5));

    // A command started by other code is found by the run id too.
    let mut outside = h.command("hang", 7).spawn().unwrap();
    // spawn() returns after the exec, so the environment is in place.
    let found = h.leftovers();
    // Killed before the check: the harness does not own it, so a failed
    // assertion would leave it running.
    outside.kill().unwrap();
    outside.wait().unwrap();
    assert_eq!(found, vec![outside.id()]);
    h.assert_no_leftovers(Duration::from_secs(5));
}
