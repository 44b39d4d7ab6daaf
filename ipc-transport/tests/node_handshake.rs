//! Each way a handshake can succeed or fail, on both sides, within bounded time.

use std::process::Command;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcOneShotServer, OpaqueIpcSender};
use yuki_ipc_transport::{Error, Node};
use yuki_testkit::{Harness, run_child};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "00112233445566778899aabbccddeeff";

#[test]
fn a_malformed_bootstrap_value_is_refused_at_once() {
    for value in [
        "",
        "garbage",
        "1 short /tmp/s",
        "9 00112233445566778899aabbccddeeff /s",
    ] {
        let err = Node::builder().bootstrap(value).init().unwrap_err();
        assert!(
            matches!(err, Error::MalformedBootstrap(_)),
            "{value:?}: {err}"
        );
        assert!(err.to_string().contains("Node::spawn"), "{err}");
    }
}

#[test]
fn a_gone_parent_is_reported_at_once() {
    let start = Instant::now();
    let value = format!("2 {TOKEN} 3 /nonexistent-yuki-dir/socket");
    let err = Node::builder().bootstrap(value).init().unwrap_err();
    assert!(matches!(err, Error::ParentGone(_)), "{err}");
    assert!(start.elapsed() < WAIT);
}

#[test]
fn a_parent_that_never_answers_times_out() {
    // A server that is listening but never accepts: the hello is buffered.
    let (_server, name) = IpcOneShotServer::<Vec<u8>>::new().unwrap();
    let start = Instant::now();
    let err = Node::builder()
        .bootstrap(format!("2 {TOKEN} 3 {name}"))
        .handshake_timeout(Duration::from_millis(200))
        .init()
        .unwrap_err();
    assert_eq!(err, Error::HandshakeTimeout(Duration::from_millis(200)));
    let took = start.elapsed();
    // poll(2) counts whole milliseconds, so allow for rounding.
    assert!(
        took >= Duration::from_millis(150) && took < WAIT,
        "{took:?}"
    );
}

/// How a child's hello looks on the wire, for a parent that only pretends.
type RawHello = (u32, String, u32, OpaqueIpcSender, OpaqueIpcSender);

#[test]
fn a_parent_that_drops_the_handshake_is_gone() {
    let (server, name) = IpcOneShotServer::<RawHello>::new().unwrap();
    // Accept the hello, then drop every channel in it without answering.
    let acceptor = std::thread::spawn(move || {
        let (_rx, (_, _, _, down, welcome)) = server.accept().unwrap();
        drop((down.to::<()>(), welcome.to::<()>()));
    });
    let start = Instant::now();
    let err = Node::builder()
        .bootstrap(format!("2 {TOKEN} 3 {name}"))
        .init()
        .unwrap_err();
    assert!(matches!(err, Error::ParentGone(_)), "{err}");
    assert!(start.elapsed() < WAIT);
    acceptor.join().unwrap();
}

/// Where a child that cannot reach main leaves its verdict.
fn verdict_file(h: &Harness) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("yuki-verdict-{}", h.run_id()))
}

#[test]
fn a_wrong_token_is_refused_on_both_sides() {
    if run_child(|_| {
        let value = std::env::var(yuki_channel::BOOTSTRAP_ENV).unwrap();
        // The socket must sit in a directory only this user can open.
        let mut parts = value.splitn(4, ' ');
        let (region, server) = (parts.nth(2).unwrap(), parts.next().unwrap());
        let dir = std::path::Path::new(server).parent().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        let forged = format!("2 {TOKEN} {region} {server}");
        let err = Node::builder().bootstrap(forged).init().unwrap_err();
        let out = std::env::var("VERDICT").unwrap();
        std::fs::write(
            out,
            format!("{mode:o} {}", matches!(err, Error::Refused(_))),
        )
        .unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::init().unwrap();
    let mut cmd = h.command("forger", 0);
    let verdict = verdict_file(&h);
    cmd.env("VERDICT", &verdict);
    let err = node.spawn("forger", cmd).unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(err.to_string().contains("wrong token"), "{err}");
    let seen = std::fs::read_to_string(&verdict).unwrap_or_default();
    let _ = std::fs::remove_file(&verdict);
    assert_eq!(seen, "700 true");
    assert!(node.transport().peers().is_empty());
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn an_impostor_connecting_first_is_refused_and_the_child_still_joins() {
    if run_child(|s| match s.name() {
        "genuine" => {
            // Before joining, another process of this user connects to the
            // child's rendezvous with a forged token, and is refused.
            let value = std::env::var(yuki_channel::BOOTSTRAP_ENV).unwrap();
            let mut parts: Vec<String> = value.splitn(4, ' ').map(str::to_owned).collect();
            parts[1] = TOKEN.into();
            let mut h = Harness::new();
            let impostor = h
                .spawn_with("impostor", |cmd| {
                    cmd.env(yuki_channel::BOOTSTRAP_ENV, parts.join(" "));
                })
                .unwrap();
            h.wait(impostor).assert_success();
            let node = Node::init().unwrap();
            assert_eq!(node.name(), "genuine");
            node.request_stop().unwrap();
            let (_tx, rx) = std::sync::mpsc::channel::<()>();
            let _ = rx.recv();
        }
        _ => {
            let err = Node::init().unwrap_err();
            assert!(matches!(err, Error::Refused(_)), "{err}");
        }
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::init().unwrap();
    let child = node.spawn("genuine", h.command("genuine", 0)).unwrap();
    let exit = child.wait_timeout(WAIT).expect("the child asked to stop");
    assert!(exit.status.success(), "{exit:?}");
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_child_that_never_joins_times_out_and_is_killed() {
    if run_child(|_| {
        // Never calls Node::init; blocks until killed.
        let (_tx, rx) = std::sync::mpsc::channel::<()>();
        let _ = rx.recv();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder()
        .handshake_timeout(Duration::from_millis(300))
        .init()
        .unwrap();
    let start = Instant::now();
    let err = node.spawn("mute", h.command("mute", 0)).unwrap_err();
    assert_eq!(err, Error::HandshakeTimeout(Duration::from_millis(300)));
    assert!(start.elapsed() < WAIT);
    h.assert_no_leftovers(WAIT);
    // The name is free again.
    let err = node.spawn("mute", Command::new("false")).unwrap_err();
    assert!(matches!(err, Error::ExitedEarly { .. }), "{err}");
}

#[test]
fn a_child_that_exits_early_is_reported_without_waiting_for_the_timeout() {
    let node = Node::builder()
        .handshake_timeout(Duration::from_secs(60))
        .init()
        .unwrap();
    let start = Instant::now();
    let err = node.spawn("quitter", Command::new("true")).unwrap_err();
    assert!(matches!(err, Error::ExitedEarly { .. }), "{err}");
    assert!(start.elapsed() < WAIT);
    let err = node
        .spawn("missing", Command::new("/nonexistent/yuki-binary"))
        .unwrap_err();
    assert!(matches!(err, Error::Os { .. }), "{err}");
}

#[test]
fn only_main_spawns_and_only_a_child_requests() {
    let node = Node::init().unwrap();
    assert!(matches!(node.request_stop(), Err(Error::WrongRole(_))));
    assert!(matches!(node.request_restart(), Err(Error::WrongRole(_))));
    assert!(!node.is_disconnected());
    assert_eq!(node.name(), "main");
    assert!(node.children().is_empty());
}

#[test]
fn an_unusable_temporary_directory_is_an_error_not_a_panic() {
    if run_child(|_| {
        // Main's side: nothing is spawned yet, so only spawning needs TMPDIR.
        let result = Node::init().and_then(|node| node.spawn("never", Command::new("true")));
        match result {
            Ok(_) => yuki_testkit::report("outcome", "spawned"),
            Err(e) => yuki_testkit::report("outcome", e),
        }
    }) {
        return;
    }
    let mut h = Harness::new();
    let id = h
        .spawn_with("bad-tmpdir", |cmd| {
            cmd.env("TMPDIR", "/nonexistent-yuki-tmpdir");
        })
        .unwrap();
    let outcome = h.wait(id);
    outcome.assert_success();
    let said = outcome.value("outcome").unwrap_or_default().to_owned();
    assert!(said.contains("TMPDIR"), "{said}");
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_rendezvous_leaves_nothing_in_the_temporary_directory() {
    if run_child(|s| {
        if s.name() == "worker" {
            let node = Node::init().unwrap();
            node.request_stop().unwrap();
            let (_tx, rx) = std::sync::mpsc::channel::<()>();
            let _ = rx.recv();
        }
        // Main, with a temporary directory of its own: a spawn whose fork
        // fails, one whose child exits early, and one that joins and stops.
        let node = Node::init().unwrap();
        let err = node
            .spawn("missing", Command::new("/nonexistent/yuki-binary"))
            .unwrap_err();
        assert!(matches!(err, Error::Os { .. }), "{err}");
        let err = node.spawn("quitter", Command::new("true")).unwrap_err();
        assert!(matches!(err, Error::ExitedEarly { .. }), "{err}");
        let h = Harness::new();
        let worker = node.spawn("worker", h.command("worker", 0)).unwrap();
        worker.wait_timeout(WAIT).expect("the worker asked to stop");
        let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        yuki_testkit::report("left", format!("{left:?}"));
    }) {
        return;
    }
    let tmp = std::env::temp_dir().join(format!("yuki-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut h = Harness::new();
    let id = h
        .spawn_with("main", |cmd| {
            cmd.env("TMPDIR", &tmp);
        })
        .unwrap();
    let outcome = h.wait(id);
    let _ = std::fs::remove_dir_all(&tmp);
    outcome.assert_success();
    assert_eq!(outcome.value("left"), Some("[]"));
    h.assert_no_leftovers(WAIT);
}
