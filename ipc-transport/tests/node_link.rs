//! Choosing a child's link: main decides, from the builder, the child's
//! own setting or `YUKI_LINK`, and the child learns it in the handshake
//! whatever its own environment says; a `YUKI_LINK` that names no kind
//! fails main's start, naming the kinds there are.

use std::time::Duration;

use yuki_ipc_transport::{Error, LINK_ENV, LinkKind, Node, WhenMainGone};
use yuki_testkit::{Harness, report, run_child};

const WAIT: Duration = Duration::from_secs(20);

/// A child: reports the kind of link main gave it, and that calls work.
fn report_link() {
    let node = Node::builder()
        .when_main_gone(WhenMainGone::Stay)
        .init()
        .expect("the child joins main");
    assert_eq!(node.transport().call("echo", b"hi").unwrap(), b"hi");
    report("link", node.link_kind());
}

/// A main in its own process: spawns a child with what `how` says, and
/// reports what the child said its link was.
fn run_main(how: &str) {
    let h = Harness::for_test(TEST);
    let builder = Node::builder();
    let builder = match how {
        "builder-ipc" => builder.link(LinkKind::IpcChannel),
        _ => builder,
    };
    let node = match builder.init() {
        Ok(node) => node,
        Err(e) => {
            report("init", e);
            return;
        }
    };
    report("main-link", node.link_kind());
    node.transport()
        .serve(
            "echo",
            std::sync::Arc::new(|_: yuki_channel::PeerId, req: &[u8], reply: &mut Vec<u8>| {
                reply.extend_from_slice(req);
                Ok(())
            }),
        )
        .unwrap();
    let mut cmd = h.command("child", 0);
    // The child's own setting is not asked: main's choice is.
    cmd.env(LINK_ENV, "no-such-link");
    cmd.stdout(std::process::Stdio::inherit());
    let child = node.child("child", cmd);
    let child = match how {
        "child-ipc" => child.link(LinkKind::IpcChannel),
        _ => child,
    };
    let child = child.spawn().expect("the child starts");
    let exit = child.wait_timeout(WAIT).expect("the child ends");
    assert!(exit.status.success(), "{exit:?}");
}

const TEST: &str = "main_picks_each_childs_link_and_the_child_learns_it";

#[test]
fn main_picks_each_childs_link_and_the_child_learns_it() {
    if run_child(|s| match s.name() {
        "child" => report_link(),
        how => run_main(how),
    }) {
        return;
    }
    let cases = [
        ("default", None, Some("shared-memory")),
        ("default", Some("ipc-channel"), Some("ipc-channel")),
        ("default", Some("shared-memory"), Some("shared-memory")),
        // The builder wins over the variable.
        ("builder-ipc", Some("shared-memory"), Some("ipc-channel")),
        // A child's own kind wins over main's.
        ("child-ipc", Some("shared-memory"), Some("ipc-channel")),
        ("default", Some("carrier-pigeon"), None),
    ];
    let mut h = Harness::new();
    for (how, env, expected) in cases {
        let main = h
            .spawn_with(how, |cmd| {
                match env {
                    Some(v) => cmd.env(LINK_ENV, v),
                    None => cmd.env_remove(LINK_ENV),
                };
            })
            .unwrap();
        let outcome = h.wait(main);
        outcome.assert_success();
        match expected {
            Some(kind) => {
                let main_kind = if how == "child-ipc" {
                    env.unwrap_or("shared-memory")
                } else {
                    kind
                };
                assert_eq!(outcome.value("main-link"), Some(main_kind), "{how} {env:?}");
                assert_eq!(outcome.value("link"), Some(kind), "{how} {env:?}");
            }
            None => {
                let said = outcome.value("init").unwrap_or_default();
                assert!(
                    said.contains("carrier-pigeon")
                        && said.contains("shared-memory")
                        && said.contains("ipc-channel"),
                    "{said:?}"
                );
                assert_eq!(outcome.value("link"), None);
            }
        }
    }
    h.assert_no_leftovers(WAIT);
}

#[test]
fn an_unknown_link_name_is_an_error_naming_the_kinds() {
    let e = "shm".parse::<LinkKind>().unwrap_err();
    assert_eq!(e, Error::UnknownLink("shm".into()));
    let said = e.to_string();
    assert!(
        said.contains("YUKI_LINK") && said.contains("ipc-channel"),
        "{said}"
    );
}
