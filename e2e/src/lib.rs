//! End-to-end suites of yuki: the channel, the store, pub/sub and the
//! transport used together, across real child processes and under faults.
//! This crate has no code of its own; its tests are in `tests/`, one file
//! per area, named by its prefix:
//!
//! - `conformance_*`: a contract written once and run over every transport;
//! - `faults_*`: children killed, main killed or frozen, hostile children,
//!   restarts, and what the survivors see;
//! - `props_*`: generated programs and values checked against a model;
//! - `receivers`: the receive family waited on together;
//! - `security`: who may join and who reads what;
//! - `soak`: a mixed workload for a bounded time, with memory kept flat.
//!
//! Tests of the test helpers themselves stay in `yuki-testkit`.
#![forbid(unsafe_code)]
