//! A reference model of a key-value store, for model-based tests.
//!
//! The model is a plain ordered map with the store semantics every
//! implementation must match: `delete` reports whether the key existed,
//! `incr` counts from 0 on a missing key and fails on a text or on overflow,
//! compare-and-swap compares whole values and deletes on `None`. It knows
//! nothing of any store crate: tests translate [`KvOp`]s into calls.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::Serialize;

/// A value in the model: a counter or a non-empty text.
///
/// It serializes as the bare `i64` or `String` (no enum tag), so a store
/// that keeps encoded values holds exactly what `set(key, &n)` would.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum KvValue {
    /// An integer counter.
    Int(i64),
    /// A text; generated non-empty so its encoding never looks like an integer.
    Text(String),
}

/// One operation on the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Set a key.
    Set {
        /// The key.
        key: String,
        /// The new value.
        value: KvValue,
    },
    /// Read a key.
    Get {
        /// The key.
        key: String,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Whether a key exists.
    Contains {
        /// The key.
        key: String,
    },
    /// Add to a counter.
    Incr {
        /// The key.
        key: String,
        /// The increment.
        by: i64,
    },
    /// Compare-and-swap.
    Cas {
        /// The key.
        key: String,
        /// The value expected now (`None`: absent).
        expected: Option<KvValue>,
        /// The value to put (`None`: delete).
        new: Option<KvValue>,
    },
    /// Count the keys (a whole-store operation).
    Len,
    /// List the keys under a prefix, sorted (a whole-store operation).
    Keys {
        /// The prefix.
        prefix: String,
    },
    /// Remove every key (a whole-store operation).
    Clear,
}

impl KvOp {
    /// Whether the operation reads or changes the whole store, so its result
    /// depends on what other threads do.
    pub fn is_global(&self) -> bool {
        matches!(self, KvOp::Len | KvOp::Keys { .. } | KvOp::Clear)
    }
}

/// What an operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResult {
    /// A write that returns nothing.
    Done,
    /// A read.
    Value(Option<KvValue>),
    /// `delete`, `contains`, compare-and-swap.
    Bool(bool),
    /// `incr`'s new value.
    Int(i64),
    /// `incr` on a text or past `i64`'s range: refused, nothing changed.
    Failed,
    /// `len` and `clear`.
    Count(usize),
    /// `keys`.
    Keys(Vec<String>),
}

/// The reference store.
#[derive(Clone, Debug, Default)]
pub struct KvModel {
    map: BTreeMap<String, KvValue>,
}

impl KvModel {
    /// An empty model.
    pub fn new() -> KvModel {
        KvModel::default()
    }

    /// The model's contents.
    pub fn entries(&self) -> &BTreeMap<String, KvValue> {
        &self.map
    }

    /// Applies `op` and returns what a correct store returns.
    pub fn apply(&mut self, op: &KvOp) -> KvResult {
        match op {
            KvOp::Set { key, value } => {
                self.map.insert(key.clone(), value.clone());
                KvResult::Done
            }
            KvOp::Get { key } => KvResult::Value(self.map.get(key).cloned()),
            KvOp::Delete { key } => KvResult::Bool(self.map.remove(key).is_some()),
            KvOp::Contains { key } => KvResult::Bool(self.map.contains_key(key)),
            KvOp::Incr { key, by } => {
                let current = match self.map.get(key) {
                    None => 0,
                    Some(KvValue::Int(n)) => *n,
                    Some(KvValue::Text(_)) => return KvResult::Failed,
                };
                match current.checked_add(*by) {
                    Some(n) => {
                        self.map.insert(key.clone(), KvValue::Int(n));
                        KvResult::Int(n)
                    }
                    None => KvResult::Failed,
                }
            }
            KvOp::Cas { key, expected, new } => {
                if self.map.get(key) != expected.as_ref() {
                    return KvResult::Bool(false);
                }
                match new {
                    Some(v) => self.map.insert(key.clone(), v.clone()),
                    None => self.map.remove(key),
                };
                KvResult::Bool(true)
            }
            KvOp::Len => KvResult::Count(self.map.len()),
            KvOp::Keys { prefix } => KvResult::Keys(
                self.map
                    .keys()
                    .filter(|k| k.starts_with(prefix.as_str()))
                    .cloned()
                    .collect(),
            ),
            KvOp::Clear => {
                let n = self.map.len();
                self.map.clear();
                KvResult::Count(n)
            }
        }
    }
}

/// Values: small and extreme counters, short texts.
pub fn kv_value() -> impl Strategy<Value = KvValue> {
    prop_oneof![
        4 => (-100i64..100).prop_map(KvValue::Int),
        1 => prop_oneof![Just(i64::MAX), Just(i64::MIN)].prop_map(KvValue::Int),
        3 => "[a-z]{1,8}".prop_map(KvValue::Text),
    ]
}

/// Operations on keys drawn from `keys`; whole-store operations only when
/// `global` (they make results depend on other threads).
pub fn kv_op(keys: Vec<String>, global: bool) -> impl Strategy<Value = KvOp> {
    let key = proptest::sample::select(keys);
    let by = prop_oneof![8 => -10i64..10, 1 => Just(i64::MAX), 1 => Just(i64::MIN)];
    let key_ops = prop_oneof![
        4 => (key.clone(), kv_value()).prop_map(|(key, value)| KvOp::Set { key, value }),
        4 => key.clone().prop_map(|key| KvOp::Get { key }),
        2 => key.clone().prop_map(|key| KvOp::Delete { key }),
        1 => key.clone().prop_map(|key| KvOp::Contains { key }),
        3 => (key.clone(), by).prop_map(|(key, by)| KvOp::Incr { key, by }),
        2 => (key, proptest::option::of(kv_value()), proptest::option::of(kv_value()))
            .prop_map(|(key, expected, new)| KvOp::Cas { key, expected, new }),
    ];
    let global_ops = prop_oneof![
        Just(KvOp::Len),
        "[a-z]?".prop_map(|prefix| KvOp::Keys { prefix }),
        Just(KvOp::Clear),
    ];
    if global {
        prop_oneof![20 => key_ops, 1 => global_ops].boxed()
    } else {
        key_ops.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_follows_store_semantics() {
        let mut m = KvModel::new();
        let k = |s: &str| s.to_string();
        assert_eq!(
            m.apply(&KvOp::Incr { key: k("n"), by: 2 }),
            KvResult::Int(2)
        );
        assert_eq!(
            m.apply(&KvOp::Incr {
                key: k("n"),
                by: i64::MAX
            }),
            KvResult::Failed
        );
        m.apply(&KvOp::Set {
            key: k("t"),
            value: KvValue::Text("x".into()),
        });
        assert_eq!(
            m.apply(&KvOp::Incr { key: k("t"), by: 1 }),
            KvResult::Failed
        );
        assert_eq!(
            m.apply(&KvOp::Cas {
                key: k("t"),
                expected: None,
                new: None
            }),
            KvResult::Bool(false)
        );
        assert_eq!(
            m.apply(&KvOp::Cas {
                key: k("t"),
                expected: Some(KvValue::Text("x".into())),
                new: None
            }),
            KvResult::Bool(true)
        );
        assert_eq!(
            m.apply(&KvOp::Delete { key: k("t") }),
            KvResult::Bool(false)
        );
        assert_eq!(
            m.apply(&KvOp::Keys { prefix: k("") }),
            KvResult::Keys(vec![k("n")])
        );
        assert_eq!(m.apply(&KvOp::Clear), KvResult::Count(1));
        assert_eq!(m.apply(&KvOp::Len), KvResult::Count(0));
    }
}
