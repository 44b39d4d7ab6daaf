//! The demo application and the benchmark of yuki.
//!
//! The benchmark (`cargo run --release -p yuki-examples --bin bench`) measures
//! every figure beside its floor (the bare mechanism yuki is built on) and its
//! peer (Redis, when `redis-server` is installed), in one run, and prints the
//! ratios: absolute times on a shared machine mean little, ratios in one run
//! mean a lot.
//!
//! ```
//! use yuki_examples::report::{Better, Line, Report};
//!
//! let mut report = Report::default();
//! report.add(Line::new("in-thread send+recv", "M msgs/s", 20.0, Better::Higher)
//!     .floor("crossbeam", 22.0));
//! assert!(report.to_markdown().contains("in-thread send+recv"));
//! ```
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod bench;
pub mod report;
