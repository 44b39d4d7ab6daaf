//! Main killed while its children are busy with the store, pub/sub and
//! channels: every pending and later call fails with Disconnected within a
//! second, blocked receivers wake, every child exits.

mod common;

use std::process::Stdio;
use std::time::Duration;

use yuki_channel::{Channel, Error as ChannelError};
use yuki_ipc_transport::{LinkKind, Node, WhenMainGone};
use yuki_pubsub::{Error as PubSubError, PubSub};
use yuki_storage::{Error as StoreError, Store};
use yuki_testkit::program::now_ns;
use yuki_testkit::{Harness, RUN_ENV, report, run_child};

use common::WAIT;

const TEST: &str = "main_killed_under_load_fails_every_child_call_fast";
const GRANDCHILDREN: usize = 3;
/// What each grandchild does while main dies.
const ROLES: [&str; 5] = ["writer", "batcher", "receiver", "subscriber", "watcher"];

fn block_until_killed() {
    let (_tx, rx) = std::sync::mpsc::channel::<()>();
    let _ = rx.recv_timeout(Duration::from_secs(120));
}

/// The middle process: a main serving busy grandchildren, killed by the test.
fn run_main() {
    let h = Harness::for_test(TEST);
    let node = Node::init().unwrap();
    let t = node.transport();
    let _store = Store::attach(t.clone()).unwrap();
    let _pubsub = PubSub::attach(t.clone()).unwrap();
    let ready = Channel::<u8>::open(&t, "ready").unwrap();
    let mut kids = Vec::new();
    for i in 0..GRANDCHILDREN {
        let mut cmd = h.command("busy", i);
        // Reports reach the test through main's stdout; the test's run id
        // lets it find every grandchild.
        cmd.stdout(Stdio::inherit())
            .env(RUN_ENV, std::env::var(RUN_ENV).unwrap());
        // The links alternate between the kinds: each sees main die.
        let child = node
            .child(&format!("busy-{i}"), cmd)
            .link(LinkKind::ALL[i % LinkKind::ALL.len()])
            .parent_death_signal(None)
            .spawn()
            .unwrap();
        kids.push(child);
    }
    // Each thread sends its own number: wait until every one arrived.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < GRANDCHILDREN * ROLES.len() {
        let id = ready
            .recv_timeout(WAIT)
            .expect("every grandchild thread starts");
        if !seen.insert(id) {
            report("duplicate-ready", id);
        }
    }
    report("ready", 1);
    block_until_killed();
}

fn disconnected_store(e: &StoreError) -> bool {
    matches!(e, StoreError::Disconnected(_))
        || matches!(e, StoreError::Transport(ChannelError::Disconnected(_)))
}

fn disconnected_pubsub(e: &PubSubError) -> bool {
    matches!(e, PubSubError::Disconnected(_))
        || matches!(e, PubSubError::Transport(ChannelError::Disconnected(_)))
}

/// A grandchild: one thread per role, each reporting when and how its
/// pending operation failed.
fn run_busy(index: usize) {
    let node = Node::builder()
        .when_main_gone(WhenMainGone::Stay)
        .init()
        .unwrap();
    let t = node.transport();
    let store = Store::attach(t.clone()).unwrap();
    let pubsub = PubSub::attach(t.clone()).unwrap();
    let ready = Channel::<u8>::open(&t, "ready").unwrap();
    let quiet = Channel::<u8>::open(&t, &format!("quiet.{index}")).unwrap();
    std::thread::scope(|s| {
        for (r, role) in ROLES.into_iter().enumerate() {
            let (store, pubsub, ready, quiet) = (&store, &pubsub, &ready, &quiet);
            let me = (index * ROLES.len() + r) as u8;
            s.spawn(move || {
                let failure: String = match role {
                    "writer" => {
                        // Main may die before it answers: the item may still have arrived.
                        let _ = ready.send(me);
                        let mut i = 0u64;
                        loop {
                            if let Err(e) = store.set(&format!("k{index}.{}", i % 64), &i) {
                                assert!(disconnected_store(&e), "{e:?}");
                                break format!("{e}");
                            }
                            i += 1;
                        }
                    }
                    "batcher" => {
                        // Main may die before it answers: the item may still have arrived.
                        let _ = ready.send(me);
                        loop {
                            let mut b = yuki_storage::Batch::new();
                            for j in 0..32 {
                                b.set(&format!("b{index}.{j}"), &j);
                            }
                            if let Err(e) = store.batch(&b) {
                                assert!(disconnected_store(&e), "{e:?}");
                                break format!("{e}");
                            }
                        }
                    }
                    "receiver" => {
                        // Main may die before it answers: the item may still have arrived.
                        let _ = ready.send(me);
                        let e = quiet.recv().expect_err("nobody sends");
                        assert!(matches!(e, ChannelError::Disconnected(_)), "{e:?}");
                        format!("{e}")
                    }
                    "subscriber" => {
                        let sub = pubsub.subscribe::<u8>("never").unwrap();
                        // Main may die before it answers: the item may still have arrived.
                        let _ = ready.send(me);
                        let e = sub.recv().expect_err("nobody publishes");
                        assert!(disconnected_pubsub(&e), "{e:?}");
                        format!("{e}")
                    }
                    "watcher" => {
                        let w = store.watch("never.").unwrap();
                        // Main may die before it answers: the item may still have arrived.
                        let _ = ready.send(me);
                        let e = w.recv().expect_err("nobody writes");
                        assert!(disconnected_store(&e), "{e:?}");
                        format!("{e}")
                    }
                    _ => unreachable!(),
                };
                report(&format!("woke.{index}.{role}"), now_ns());
                let _ = failure;
            });
        }
    });
    // Later calls fail at once.
    let before = now_ns();
    assert!(disconnected_store(&store.get::<u8>("k").unwrap_err()));
    assert!(disconnected_pubsub(&pubsub.publish("t", &1u8).unwrap_err()));
    assert!(matches!(
        quiet.send(1).unwrap_err().error(),
        ChannelError::Disconnected(_)
    ));
    report(&format!("later.{index}"), now_ns() - before);
}

#[test]
fn main_killed_under_load_fails_every_child_call_fast() {
    if run_child(|s| match s.name() {
        "main" => run_main(),
        "busy" => run_busy(s.index()),
        other => panic!("unknown scenario {other}"),
    }) {
        return;
    }
    let mut h = Harness::new().timeout(Duration::from_secs(60));
    let main = h.spawn("main").unwrap();
    assert_eq!(h.wait_report(main, "ready").as_deref(), Some("1"));
    let killed = now_ns();
    h.kill(main);
    for i in 0..GRANDCHILDREN {
        for role in ROLES {
            let woke: u64 = h
                .wait_report(main, &format!("woke.{i}.{role}"))
                .unwrap_or_else(|| {
                    panic!("grandchild {i}'s {role} never woke: {:#?}", h.wait(main))
                })
                .parse()
                .unwrap();
            let after = Duration::from_nanos(woke.saturating_sub(killed));
            assert!(
                after < Duration::from_secs(1),
                "grandchild {i}'s {role} woke {after:?} after main died"
            );
        }
        let later: u64 = h
            .wait_report(main, &format!("later.{i}"))
            .unwrap_or_else(|| panic!("grandchild {i}'s later calls: {:#?}", h.wait(main)))
            .parse()
            .unwrap();
        assert!(Duration::from_nanos(later) < Duration::from_millis(100));
    }
    // Every grandchild exits on its own.
    h.assert_no_leftovers(Duration::from_secs(10));
    let o = h.wait(main);
    assert_eq!(
        o.value("duplicate-ready"),
        None,
        "a hosted channel item arrived twice"
    );
}
