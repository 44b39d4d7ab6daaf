//! Model-based tests: random operations on the store, checked against the
//! reference model of yuki-testkit, over the in-thread transport.

mod model_adapter;

use std::sync::Arc;

use proptest::prelude::*;
use yuki_channel::InThreadTransport;
use yuki_storage::Store;
use yuki_testkit::kv_model::{KvModel, KvOp, kv_op};

use model_adapter::{apply, contents};

fn keys(prefix: &str) -> Vec<String> {
    ["a", "ab", "b", "c.1", "c.2"]
        .iter()
        .map(|k| format!("{prefix}{k}"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// One child, every operation including whole-store ones: every result
    /// and the final state equal the model's.
    #[test]
    fn a_child_matches_the_model(ops in proptest::collection::vec(kv_op(keys(""), true), 1..80)) {
        let main_t = InThreadTransport::main();
        let main = Store::attach(main_t.clone()).unwrap();
        let child = Store::attach(main_t.connect("c").unwrap()).unwrap();
        let mut model = KvModel::new();
        for (i, op) in ops.iter().enumerate() {
            // Alternate the process that applies, as the store is the same.
            let store = if i % 3 == 0 { &main } else { &child };
            prop_assert_eq!(apply(store, op), model.apply(op), "op {} {:?}", i, op);
        }
        prop_assert_eq!(contents(&main), model.entries().clone());
    }

    /// 4 children x 2 threads on disjoint keys, run concurrently: each
    /// thread's results equal its own model exactly, and the final state
    /// is the union of the models.
    #[test]
    fn concurrent_children_match_their_models(
        runs in proptest::collection::vec(
            proptest::collection::vec(kv_op(keys("") , false), 1..40), 8)
    ) {
        let main_t = InThreadTransport::main();
        let main = Store::attach(main_t.clone()).unwrap();
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let mut threads = Vec::new();
        for child in 0..4 {
            let store = Store::attach(main_t.connect(&format!("c{child}")).unwrap()).unwrap();
            for thread in 0..2 {
                let prefix = format!("t{child}{thread}.");
                let ops: Vec<KvOp> = runs[child * 2 + thread].iter().map(|op| prefixed(op, &prefix)).collect();
                let store = store.clone();
                let barrier = barrier.clone();
                threads.push(std::thread::spawn(move || {
                    barrier.wait();
                    let mut model = KvModel::new();
                    for op in &ops {
                        assert_eq!(apply(&store, op), model.apply(op), "{op:?}");
                    }
                    model
                }));
            }
        }
        let mut expected = std::collections::BTreeMap::new();
        for t in threads {
            expected.extend(t.join().unwrap().entries().clone());
        }
        prop_assert_eq!(contents(&main), expected);
    }
}

fn prefixed(op: &KvOp, prefix: &str) -> KvOp {
    let p = |k: &String| format!("{prefix}{k}");
    match op {
        KvOp::Set { key, value } => KvOp::Set {
            key: p(key),
            value: value.clone(),
        },
        KvOp::Get { key } => KvOp::Get { key: p(key) },
        KvOp::Delete { key } => KvOp::Delete { key: p(key) },
        KvOp::Contains { key } => KvOp::Contains { key: p(key) },
        KvOp::Incr { key, by } => KvOp::Incr {
            key: p(key),
            by: *by,
        },
        KvOp::Cas { key, expected, new } => KvOp::Cas {
            key: p(key),
            expected: expected.clone(),
            new: new.clone(),
        },
        global => global.clone(),
    }
}
