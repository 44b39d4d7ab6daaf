//! Each way a handshake can succeed or fail, on both sides, within bounded time.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{IpcOneShotServer, IpcSender, OpaqueIpcSender};
use yuki_channel::{PeerId, Role};
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
    let said = err.to_string();
    assert!(said.contains("started but did not finish"), "{said}");
    assert!(said.contains("NodeBuilder::handshake_timeout"), "{said}");
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
    let node = Node::builder().independent_main().init().unwrap();
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
            node.wait_for_stop().unwrap();
        }
        _ => {
            let err = Node::init().unwrap_err();
            assert!(matches!(err, Error::Refused(_)), "{err}");
        }
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let child = node.spawn("genuine", h.command("genuine", 0)).unwrap();
    let exit = child.wait_timeout(WAIT).expect("the child asked to stop");
    assert!(exit.status.success(), "{exit:?}");
    drop(node);
    h.assert_no_leftovers(WAIT);
}

/// Three channels: more than main's rendezvous reads from a bad hello.
type Spares = (OpaqueIpcSender, OpaqueIpcSender, OpaqueIpcSender);

#[test]
fn hellos_carrying_channels_main_cannot_read_are_refused_and_main_lives() {
    if run_child(|s| {
        // Before joining, this process sends its rendezvous a hello main
        // cannot read, carrying channels: ipc-channel drops each channel a
        // reader did not take with a debug assertion, and two failing in
        // one drop abort the process (main, here).
        let value = std::env::var(yuki_channel::BOOTSTRAP_ENV).unwrap();
        let link = value.splitn(4, ' ').nth(3).unwrap().to_owned();
        let spare = || ipc_channel::ipc::channel::<()>().unwrap().0.to_opaque();
        let spares: Spares = (spare(), spare(), spare());
        match s.name() {
            // No such variant: nothing is read, all three are dropped.
            "bad-variant" => IpcSender::<(u32, Spares)>::connect(link)
                .unwrap()
                .send((99, spares))
                .unwrap(),
            // A channel index past the three sent: ipc-channel panics while
            // reading, and the three stay behind, to be dropped by the
            // next hello read on that thread (the child's own).
            _ => IpcSender::<(u32, String, u32, u32, u32, Spares)>::connect(link)
                .unwrap()
                .send((0, TOKEN.into(), 1, 7, 8, spares))
                .unwrap(),
        }
        let node = Node::init().unwrap();
        node.request_stop().unwrap();
        node.wait_for_stop().unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    for (i, scenario) in ["bad-variant", "bad-index"].into_iter().enumerate() {
        let child = node.spawn(scenario, h.command(scenario, i)).unwrap();
        let exit = child.wait_timeout(WAIT).expect("the child asked to stop");
        assert!(exit.status.success(), "{scenario}: {exit:?}");
    }
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
        .independent_main()
        .handshake_timeout(Duration::from_millis(300))
        .init()
        .unwrap();
    let start = Instant::now();
    let err = node.spawn("mute", h.command("mute", 0)).unwrap_err();
    assert!(
        matches!(err, Error::NeverConnected { ref name, waited, .. }
            if name == "mute" && waited == Duration::from_millis(300)),
        "{err:?}"
    );
    let said = err.to_string();
    assert!(said.contains("started but never connected"), "{said}");
    assert!(said.contains("must call Node::init() first"), "{said}");
    assert!(start.elapsed() < WAIT);
    h.assert_no_leftovers(WAIT);
    // The name is free again.
    let err = node.spawn("mute", Command::new("false")).unwrap_err();
    assert!(matches!(err, Error::ExitedEarly { .. }), "{err}");
}

#[test]
fn a_child_that_exits_early_is_reported_without_waiting_for_the_timeout() {
    let node = Node::builder()
        .independent_main()
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
    let node = Node::builder().independent_main().init().unwrap();
    assert!(matches!(node.request_stop(), Err(Error::WrongRole(_))));
    let said = node.request_stop().unwrap_err().to_string();
    assert!(said.contains("check Node::role()"), "{said}");
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
            node.wait_for_stop().unwrap();
            return;
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
}

#[test]
fn init_twice_in_a_child_shares_the_one_link() {
    if run_child(|_| {
        let first = Node::init().unwrap();
        // The one-time token is spent: a second join would be refused.
        let second = Node::init().unwrap();
        assert_eq!(second.peer_id(), first.peer_id());
        assert_eq!(second.name(), first.name());
        drop(first);
        assert_eq!(
            second.transport().call("echo", b"still here").unwrap(),
            b"still here"
        );
        assert_eq!(yuki_channel::role(), Role::Child);
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    node.transport()
        .serve(
            "echo",
            Arc::new(|_: PeerId, req: &[u8], reply: &mut Vec<u8>| {
                reply.extend_from_slice(req);
                Ok(())
            }),
        )
        .unwrap();
    let child = node.spawn("twice", h.command("twice", 0)).unwrap();
    let exit = child.wait_timeout(WAIT).expect("the child finishes");
    assert!(exit.status.success(), "{exit:?}");
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn init_twice_in_main_is_an_error_while_the_first_lives() {
    if run_child(|_| {
        // A harness child has no YUKI_BOOTSTRAP: it is a main.
        let first = Node::init().unwrap();
        let err = Node::init().unwrap_err();
        assert_eq!(err, Error::AlreadyMain);
        assert!(err.to_string().contains("once per process"), "{err}");
        let independent = Node::builder().independent_main().init().unwrap();
        drop(independent);
        assert_eq!(Node::init().unwrap_err(), Error::AlreadyMain);
        drop(first);
        let _again = Node::init().unwrap();
        yuki_testkit::report("checked", 1);
    }) {
        return;
    }
    let mut h = Harness::new();
    let id = h.spawn("twice-main").unwrap();
    let outcome = h.wait(id);
    outcome.assert_success();
    assert_eq!(outcome.value("checked"), Some("1"));
    h.assert_no_leftovers(WAIT);
}

/// Takes the bootstrap value out of the environment, as a program that
/// gets it some other way would run.
fn take_bootstrap() -> String {
    let value = std::env::var(yuki_channel::BOOTSTRAP_ENV).unwrap();
    // SAFETY: the child's test thread is the only one that reads the
    // environment at this point.
    unsafe { std::env::remove_var(yuki_channel::BOOTSTRAP_ENV) };
    value
}

#[test]
fn a_bootstrap_given_in_code_makes_role_agree() {
    if run_child(|s| {
        let value = take_bootstrap();
        if s.name() == "asked-first" {
            // Something read the role before the node started: main.
            assert_eq!(yuki_channel::role(), Role::Main);
            let err = Node::builder().bootstrap(value).init().unwrap_err();
            assert_eq!(
                err,
                Error::RoleConflict {
                    fixed: Role::Main,
                    wanted: Role::Child
                }
            );
            assert!(err.to_string().contains("call Node::init before"), "{err}");
        } else {
            let node = Node::builder().bootstrap(value).init().unwrap();
            assert_eq!(node.role(), Role::Child);
            assert_eq!(yuki_channel::role(), Role::Child);
            assert!(!yuki_channel::is_main_process());
        }
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    for name in ["agrees", "asked-first"] {
        let child = node.spawn(name, h.command(name, 0)).unwrap();
        let exit = child.wait_timeout(WAIT).expect("the child finishes");
        assert!(exit.status.success(), "{name}: {exit:?}");
    }
    drop(node);
    h.assert_no_leftovers(WAIT);
}
