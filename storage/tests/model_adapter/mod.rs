//! Translates the testkit model's operations into store calls.
#![allow(dead_code)]

use std::collections::BTreeMap;

use yuki_storage::{Error, Store};
use yuki_testkit::kv_model::{KvOp, KvResult, KvValue};

/// Reads encoded bytes back as a model value (texts are never empty, so a
/// text never decodes as an integer).
pub fn value_of(bytes: &[u8]) -> KvValue {
    match yuki_channel::codec::mark::decode::<i64>(bytes) {
        Ok(n) => KvValue::Int(n),
        Err(_) => KvValue::Text(
            yuki_channel::codec::mark::decode::<String>(bytes).expect("an i64 or a String"),
        ),
    }
}

/// Applies one model operation to `store`.
pub fn apply(store: &Store, op: &KvOp) -> KvResult {
    match op {
        KvOp::Set { key, value } => {
            store.set(key, value).unwrap();
            KvResult::Done
        }
        KvOp::Get { key } => KvResult::Value(store.get_raw(key).unwrap().map(|b| value_of(&b))),
        KvOp::Delete { key } => KvResult::Bool(store.delete(key).unwrap()),
        KvOp::Contains { key } => KvResult::Bool(store.contains(key).unwrap()),
        KvOp::Incr { key, by } => match store.incr(key, *by) {
            Ok(n) => KvResult::Int(n),
            Err(Error::NotAnInteger { .. } | Error::Overflow { .. }) => KvResult::Failed,
            Err(e) => panic!("incr failed: {e}"),
        },
        KvOp::Cas { key, expected, new } => KvResult::Bool(
            store
                .compare_and_swap(key, expected.as_ref(), new.as_ref())
                .unwrap(),
        ),
        KvOp::Len => KvResult::Count(store.len().unwrap()),
        KvOp::Keys { prefix } => KvResult::Keys(store.keys(prefix).unwrap()),
        KvOp::Clear => KvResult::Count(store.clear().unwrap()),
    }
}

/// The store's contents as model values.
pub fn contents(store: &Store) -> BTreeMap<String, KvValue> {
    store
        .get_all_raw()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, value_of(&v)))
        .collect()
}
