//! Shared test helpers of yuki: a multi-process harness whose children can be
//! killed or signalled at any point (the fault injection of the suites), the
//! proptest strategies and reference model the crates' test suites share, and
//! a throw-away `redis-server` for the Redis back-ends.
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
//!
//! For children that main spawns itself (`Node::spawn` of yuki-ipc-transport),
//! pass [`Harness::command`] as the command: the child runs the same test
//! under the named scenario, calls `Node::init()`, and the harness still
//! finds it by its run id ([`Harness::assert_no_leftovers`]) if it outlives
//! the test. Its stdout is discarded unless the command says otherwise; set
//! `stdout(Stdio::inherit())` on it inside a harness child to have its
//! [`report`]s reach the harness through the parent's pipe.
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod alloc;
pub mod kv_model;
mod procs;
pub mod program;
mod redis_server;
mod tap;

pub use alloc::CountingAllocator;
pub use procs::{
    Harness, INDEX_ENV, Outcome, ProcId, RUN_ENV, SCENARIO_ENV, Scenario, report, run_child,
    scenario,
};
pub use redis_server::RedisServer;
pub use tap::Tap;
