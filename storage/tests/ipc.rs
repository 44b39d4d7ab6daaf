//! The store across real processes: main in the test process, children
//! started through a `Node` re-executing this test binary.

mod model_adapter;
mod suite;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use yuki_channel::{PeerId, Transport, codec};
use yuki_ipc_transport::{LinkKind, Node, WhenMainGone};
use yuki_storage::{Batch, Config, Error, ManualClock, Store};
use yuki_testkit::kv_model::{KvModel, KvOp, KvValue, kv_op};
use yuki_testkit::{Harness, run_child};

use model_adapter::{apply, contents};

const WAIT: Duration = Duration::from_secs(60);
const SEED_ENV: &str = "YUKI_STORE_TEST_SEED";
/// The link kind main gave a child, which the child checks it has.
const LINK_KIND_ENV: &str = "YUKI_TEST_LINK_KIND";
const ADVANCE: &str = "test.advance-clock";

/// Main: a node, its store on a manual clock, and a service that lets a
/// child move that clock.
struct Main {
    node: Node,
    store: Store,
}

fn start_main() -> Main {
    let node = Node::builder()
        .independent_main()
        .init()
        .expect("main starts");
    let clock = Arc::new(ManualClock::default());
    let store =
        Store::attach_with(node.transport(), Config::default().clock(clock.clone())).unwrap();
    node.transport()
        .serve(
            ADVANCE,
            Arc::new(move |_: PeerId, req: &[u8], reply: &mut Vec<u8>| {
                clock.advance(Duration::from_nanos(codec::decode::<u64>(req)?));
                reply.push(1);
                Ok(())
            }),
        )
        .unwrap();
    Main { node, store }
}

fn child_store() -> (Node, Store) {
    let node = Node::builder()
        .when_main_gone(WhenMainGone::Stay)
        .init()
        .expect("the child joins main");
    let store = Store::attach(node.transport()).unwrap();
    (node, store)
}

/// In a child every store is the child's one remote store.
struct InChild {
    store: Store,
    transport: Arc<dyn Transport>,
}

impl suite::Harness for InChild {
    fn main(&self) -> Store {
        self.store.clone()
    }
    fn child(&self, _name: &str) -> Store {
        self.store.clone()
    }
    fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap();
        self.transport
            .call(ADVANCE, &codec::encode(&nanos).unwrap())
            .unwrap();
    }
}

fn spawn(
    main: &Main,
    h: &Harness,
    scenario: &str,
    index: usize,
) -> yuki_ipc_transport::ChildHandle {
    main.node
        .spawn(&format!("{scenario}-{index}"), h.command(scenario, index))
        .expect("the child starts")
}

fn assert_exits_cleanly(child: &yuki_ipc_transport::ChildHandle) {
    let exit = child
        .wait_timeout(WAIT)
        .expect("the child finishes in time");
    assert!(exit.status.success(), "{} failed: {exit:?}", child.name());
}

#[test]
fn every_operation_works_from_child_processes() {
    if run_child(|_| {
        let (node, store) = child_store();
        let expected = std::env::var(LINK_KIND_ENV).unwrap();
        assert_eq!(node.link_kind().name(), expected);
        let h = InChild {
            store: store.clone(),
            transport: node.transport(),
        };
        for (name, body) in suite::ALL {
            store.clear().unwrap();
            eprintln!("suite in a child process: {name}");
            body(&h);
        }
    }) {
        return;
    }
    let h = Harness::new();
    let main = start_main();
    // A child per link kind runs the suite, one after the other, on one main.
    for (i, kind) in LinkKind::ALL.into_iter().enumerate() {
        let mut cmd = h.command("suite", i);
        cmd.env(LINK_KIND_ENV, kind.name());
        let child = main
            .node
            .child(&format!("suite-{i}"), cmd)
            .link(kind)
            .spawn()
            .expect("the child starts");
        assert_exits_cleanly(&child);
    }
    drop(main);
    h.assert_no_leftovers(WAIT);
}

/// The suite's bodies that move main's clock by hand, which a store on
/// the system's clock (the one children read shared memory with) cannot.
const MOVES_THE_CLOCK: &[&str] = &[
    "ttl_expires_on_every_read",
    "batch_applies_in_order_with_one_result_each",
    "watch_sees_every_change_in_order",
    "async_forms_match_blocking_forms",
    "ttl_counts_down_and_expired_keys_are_missing",
];

#[test]
fn every_operation_works_from_child_processes_reading_shared_memory() {
    if run_child(|_| {
        let (node, store) = child_store();
        let on = std::env::var("YUKI_SHARED_READS").as_deref() != Ok("0");
        assert_eq!(node.shared_reads(), on, "the region was handed down");
        assert_eq!(
            store.shares_reads(),
            on,
            "main's store keeps the shared table"
        );
        let h = InChild {
            store: store.clone(),
            transport: node.transport(),
        };
        for (name, body) in suite::ALL {
            if MOVES_THE_CLOCK.contains(name) {
                continue;
            }
            store.clear().unwrap();
            eprintln!("suite in a child process reading shared memory: {name}");
            body(&h);
        }
    }) {
        return;
    }
    let names: Vec<&str> = suite::ALL.iter().map(|(name, _)| *name).collect();
    for name in MOVES_THE_CLOCK {
        assert!(names.contains(name), "{name} is no longer in the suite");
    }
    let h = Harness::new();
    let node = Node::builder()
        .independent_main()
        .init()
        .expect("main starts");
    let store = Store::attach(node.transport()).unwrap();
    let on = std::env::var("YUKI_SHARED_READS").as_deref() != Ok("0");
    assert_eq!((node.shared_reads(), store.shares_reads()), (on, on));
    let child = node
        .spawn("suite-shared", h.command("suite", 0))
        .expect("the child starts");
    assert_exits_cleanly(&child);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

fn keys() -> Vec<String> {
    ["a", "ab", "b", "c.1", "c.2"]
        .iter()
        .map(|k| k.to_string())
        .collect()
}

/// The operations of one thread of one child, the same in main and child.
fn ops_for(seed: u64, slot: usize) -> Vec<KvOp> {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&(slot as u64).to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let prefix = format!("t{slot}.");
    proptest::collection::vec(kv_op(keys(), false), 100..200)
        .new_tree(&mut runner)
        .expect("a sample")
        .current()
        .into_iter()
        .map(|op| prefixed(op, &prefix))
        .collect()
}

fn prefixed(op: KvOp, prefix: &str) -> KvOp {
    let p = |k: String| format!("{prefix}{k}");
    match op {
        KvOp::Set { key, value } => KvOp::Set { key: p(key), value },
        KvOp::Get { key } => KvOp::Get { key: p(key) },
        KvOp::Delete { key } => KvOp::Delete { key: p(key) },
        KvOp::Contains { key } => KvOp::Contains { key: p(key) },
        KvOp::Incr { key, by } => KvOp::Incr { key: p(key), by },
        KvOp::Cas { key, expected, new } => KvOp::Cas {
            key: p(key),
            expected,
            new,
        },
        global => global,
    }
}

#[test]
fn four_children_of_two_threads_match_the_model() {
    if run_child(|s| {
        let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
        let (_node, store) = child_store();
        std::thread::scope(|scope| {
            for thread in 0..2 {
                let store = store.clone();
                scope.spawn(move || {
                    let mut model = KvModel::new();
                    for op in ops_for(seed, s.index() * 2 + thread) {
                        assert_eq!(apply(&store, &op), model.apply(&op), "{op:?}");
                    }
                });
            }
        });
    }) {
        return;
    }
    let h = Harness::new();
    let main = start_main();
    for seed in [11u64, 12, 13] {
        let children: Vec<_> = (0..4)
            .map(|i| {
                let mut cmd: Command = h.command("model", i);
                cmd.env(SEED_ENV, seed.to_string());
                main.node.spawn(&format!("model-{i}"), cmd).unwrap()
            })
            .collect();
        for child in &children {
            assert_exits_cleanly(child);
        }
        let mut expected: BTreeMap<String, KvValue> = BTreeMap::new();
        for slot in 0..8 {
            let mut model = KvModel::new();
            for op in ops_for(seed, slot) {
                model.apply(&op);
            }
            expected.extend(model.entries().clone());
        }
        assert_eq!(contents(&main.store), expected, "seed {seed}");
        main.store.clear().unwrap();
    }
    drop(main);
    h.assert_no_leftovers(WAIT);
}

const GROUP: usize = 16;

/// One batch: every key of the child's group set to `i`, and its counter
/// incremented, so a whole batch leaves count == value + 1.
fn group_batch(index: usize, i: u64) -> Batch {
    let mut b = Batch::new();
    for j in 0..GROUP {
        b.set(&format!("g{index}.{j:02}"), &i);
    }
    b.incr(&format!("g{index}.count"), 1);
    b
}

/// Checks every group in a snapshot: all values equal, count one more.
fn check_groups(all: &BTreeMap<String, Vec<u8>>, groups: usize) -> Vec<Option<u64>> {
    (0..groups)
        .map(|g| {
            let values: Vec<u64> = (0..GROUP)
                .filter_map(|j| all.get(&format!("g{g}.{j:02}")))
                .map(|b| codec::mark::decode::<u64>(b).unwrap())
                .collect();
            let count = all
                .get(&format!("g{g}.count"))
                .map(|b| codec::mark::decode::<i64>(b).unwrap());
            if values.is_empty() {
                assert_eq!(count, None, "group {g}: a counter without values");
                return None;
            }
            assert_eq!(values.len(), GROUP, "group {g}: a batch applied in part");
            assert!(
                values.iter().all(|v| *v == values[0]),
                "group {g}: {values:?}"
            );
            assert_eq!(count, Some(values[0] as i64 + 1), "group {g}");
            Some(values[0])
        })
        .collect()
}

#[test]
fn killing_a_child_mid_batches_leaves_every_batch_whole() {
    const ROUNDS: u64 = 300;
    if run_child(|s| {
        let (_node, store) = child_store();
        // Child 0 is the victim: it sends batches until it is killed.
        let rounds = if s.index() == 0 { u64::MAX } else { ROUNDS };
        for i in 0..rounds {
            let out = store.batch(&group_batch(s.index(), i)).unwrap();
            assert_eq!(out.len(), GROUP + 1);
        }
    }) {
        return;
    }
    let h = Harness::new();
    let main = start_main();
    let progress = main.store.watch("g0.count").unwrap();
    let children: Vec<_> = (0..3).map(|i| spawn(&main, &h, "batcher", i)).collect();
    for _ in 0..50 {
        progress.recv_timeout(WAIT).unwrap();
        check_groups(&main.store.get_all_raw().unwrap(), 3);
    }
    children[0].kill().unwrap();
    for child in &children[1..] {
        assert_exits_cleanly(child);
    }
    let last = check_groups(&main.store.get_all_raw().unwrap(), 3);
    assert!(last[0].unwrap() >= 49);
    assert_eq!(&last[1..], &[Some(ROUNDS - 1), Some(ROUNDS - 1)]);
    drop(main);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_watch_in_a_child_sees_every_change_of_main_in_order() {
    const N: i64 = 500;
    if run_child(|_| {
        let (_node, store) = child_store();
        let watch = store.watch("w.").unwrap();
        store.set("ready", &true).unwrap();
        for i in 0..N {
            let c = watch.recv_timeout(WAIT).unwrap();
            assert_eq!(c.key, format!("w.{:03}", i % 100));
            assert_eq!(c.decode::<i64>().unwrap(), Some(i));
        }
        let mut removed = Vec::new();
        for _ in 0..100 {
            let c = watch.recv_timeout(WAIT).unwrap();
            assert!(c.is_removal());
            removed.push(c.key);
        }
        removed.sort();
        assert_eq!(removed.len(), 100);
        assert_eq!(watch.try_recv(), Err(Error::Empty));
    }) {
        return;
    }
    let h = Harness::new();
    let main = start_main();
    let ready = main.store.watch("ready").unwrap();
    let child = spawn(&main, &h, "watcher", 0);
    ready.recv_timeout(WAIT).unwrap();
    for i in 0..N {
        main.store.set(&format!("w.{:03}", i % 100), &i).unwrap();
    }
    main.store.set("unwatched", &0).unwrap();
    assert_eq!(main.store.clear().unwrap(), 102);
    assert_exits_cleanly(&child);
    drop(main);
    h.assert_no_leftovers(WAIT);
}

/// The middle process of the next test: a main with one child, killed by the test.
fn run_doomed_main() {
    let h = Harness::for_test("a_child_gets_disconnected_when_main_is_killed");
    let main = start_main();
    let ready = main.store.watch("ready").unwrap();
    // The grandchild reports into the pipe the harness reads.
    let mut cmd = h.command("orphan", 0);
    cmd.stdout(std::process::Stdio::inherit());
    let _orphan = main
        .node
        .child("orphan", cmd)
        .parent_death_signal(None)
        .spawn()
        .unwrap();
    ready.recv_timeout(WAIT).unwrap();
    yuki_testkit::report("ready", 1);
    // Wait to be killed; the watch never sees another change.
    let _ = ready.recv_timeout(WAIT);
}

fn run_orphan() {
    let (_node, store) = child_store();
    let watch = store.watch("never.").unwrap();
    // Main tells the test as soon as it applied this, so main may be killed
    // before its reply arrives: then the reply is Disconnected too.
    let set = store.set("ready", &true);
    assert!(
        matches!(set, Ok(()) | Err(yuki_storage::Error::Disconnected(_))),
        "{set:?}"
    );
    let ended = watch.recv_timeout(WAIT);
    assert!(
        matches!(ended, Err(yuki_storage::Error::Disconnected(_))),
        "{ended:?}"
    );
    assert!(matches!(
        store.get::<bool>("ready"),
        Err(yuki_storage::Error::Disconnected(_))
    ));
    assert!(matches!(
        store.set("k", &1),
        Err(yuki_storage::Error::Disconnected(_))
    ));
    yuki_testkit::report("orphan", "disconnected");
}

#[test]
fn a_child_gets_disconnected_when_main_is_killed() {
    if run_child(|s| match s.name() {
        "middle" => run_doomed_main(),
        _ => run_orphan(),
    }) {
        return;
    }
    let mut h = Harness::new();
    let middle = h.spawn("middle").unwrap();
    assert_eq!(h.wait_report(middle, "ready").as_deref(), Some("1"));
    h.kill(middle);
    assert_eq!(
        h.wait_report(middle, "orphan").as_deref(),
        Some("disconnected"),
        "the orphan did not see main go"
    );
    h.wait(middle);
    h.assert_no_leftovers(WAIT);
}
