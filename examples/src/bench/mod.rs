//! The benchmark's measurements, one module per area.
//!
//! Each area module has `pub fn run(report: &mut Report, quick: bool) ->
//! Result<(), String>`; an error is the area's failure (slow figures never
//! are). `quick` shrinks the work so the whole run stays under a minute (CI
//! runs it so the benchmark cannot rot). The shared pieces: [`child`] (the
//! bench binary re-executed as a child), [`floor`] (the raw ipc-channel
//! ping-pong every cross-process figure is timed against; [`links`] times
//! it beside each link kind), [`placement`]
//! (the cores both processes are pinned to while a round trip is timed), [`redis_peer`]
//! (Redis driven by the same workloads) and [`timing`].

pub mod channel;
pub mod child;
pub mod floor;
pub mod ipc;
pub mod links;
pub mod placement;
pub mod pubsub;
pub mod queue;
pub mod redis_backend;
pub mod redis_peer;
pub mod shmread;
pub mod store;
pub mod timing;
