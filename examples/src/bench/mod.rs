//! The benchmark's measurements, one module per area.
//!
//! Each module has `pub fn run(report: &mut Report, quick: bool)`; `quick`
//! shrinks the work so the whole run stays under a minute (CI runs it so the
//! benchmark cannot rot).

pub mod channel;
pub mod ipc;
pub mod pubsub;
pub mod redis_backend;
pub mod store;
pub mod timing;
