//! Shared test helpers of yuki: proptest strategies, reference models, a
//! multi-process harness and fault injection.
//!
//! ```
//! use yuki_testkit::kv_model::{KvModel, KvOp, KvResult};
//!
//! let mut model = KvModel::new();
//! assert_eq!(model.apply(&KvOp::Incr { key: "n".into(), by: 2 }), KvResult::Int(2));
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub mod kv_model;
