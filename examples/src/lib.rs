//! The demo application and the benchmark of yuki.
//!
//! The demo (`cargo run --release -p yuki-examples --bin demo`, code in
//! [`demo`]) is a bot core with two plugin-host child processes sharing a
//! store, pub/sub topics and a channel, with a requested restart and a
//! crash the restart policy repairs.
//!
//! The benchmark (`cargo run --release -p yuki-examples --bin bench`) measures
//! every figure beside its floor (the bare mechanism yuki is built on) and its
//! peer (Redis, when `redis-server` is installed), in one run, and prints the
//! ratios: absolute times on a shared machine mean little, ratios in one run
//! mean a lot. It also writes the table as Markdown and CSV and draws it
//! ([`chart`]).
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
pub mod chart;
pub mod demo;
pub mod report;

/// The examples of the workspace README, compiled and run as doctests so
/// they keep working.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
