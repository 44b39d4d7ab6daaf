//! Shared test helpers of yuki: a multi-process harness, and the strategies,
//! reference model and fault injection the crates' test suites share.
//!
//! The harness re-executes the test binary as a child running a chosen
//! scenario (see [`Harness`] and [`run_child`]):
//!
//! ```no_run
//! #[test]
//! fn child_reports_a_value() {
//!     if yuki_testkit::run_child(|s| yuki_testkit::report("answer", 40 + s.index())) {
//!         return; // this process was the child
//!     }
//!     let mut harness = yuki_testkit::Harness::new();
//!     let id = harness.spawn("answer").unwrap();
//!     let outcome = harness.wait(id);
//!     outcome.assert_success();
//!     assert_eq!(outcome.value("answer"), Some("40"));
//! }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod procs;

pub use procs::{
    Harness, INDEX_ENV, Outcome, ProcId, RUN_ENV, SCENARIO_ENV, Scenario, report, run_child,
    scenario,
};
