//! Where the two processes of a round trip run: on these 2-core virtual
//! machines a round trip costs about twice as much across cores as on one,
//! and an unpinned run lands on either, so latency figures are timed under a
//! fixed placement and named with it.
//!
//! Main serves [`SERVICE`] (from [`floor::run_child`](super::floor::run_child));
//! the child asks it to pin main's threads, pins its own with
//! [`pin_process`], times each [`Placement`] and restores both afterwards.
//! Pinning that fails (one CPU, a restrictive cpuset) falls back to an
//! unpinned run, and the figure's name says so. Pinning needs Linux's
//! `sched_setaffinity`: on other systems every figure is timed unpinned
//! and named "unpinned (no CPU placement on this system)".

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux::original;
#[cfg(target_os = "linux")]
pub use linux::{UNPINNED, pin_other, pin_process, pin_thread};

#[cfg(not(target_os = "linux"))]
mod elsewhere;
#[cfg(not(target_os = "linux"))]
use elsewhere::original;
#[cfg(not(target_os = "linux"))]
pub use elsewhere::{UNPINNED, pin_other, pin_process, pin_thread};

use std::sync::Arc;

use yuki_channel::{PeerId, Transport};

/// Main's service that pins all of main's threads: the request is a CPU
/// index (one byte) or empty to restore main's original CPUs.
pub const SERVICE: &str = "bench.placement.pin";

/// The core main's threads run on under every placement.
const MAIN_CORE: usize = 0;

/// One placement of main and the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Both processes on core 0.
    SameCore,
    /// Main on core 0, the child on core 1.
    Cores01,
}

impl Placement {
    /// Every placement, in the order they are timed and reported.
    pub const ALL: [Placement; 2] = [Placement::SameCore, Placement::Cores01];

    /// The placement's name in a figure.
    pub fn label(self) -> &'static str {
        match self {
            Placement::SameCore => "same core",
            Placement::Cores01 => "cores 0/1",
        }
    }

    fn child_core(self) -> usize {
        match self {
            Placement::SameCore => MAIN_CORE,
            Placement::Cores01 => 1,
        }
    }
}

/// Like [`each`] for a server this process started (`server`, its pid)
/// and a client on the calling thread: the server takes main's core and
/// the calling thread the child's, so that a peer's round trip is timed
/// under the same placements as yuki's. If pinning fails, one unpinned
/// run is made instead, named as in [`each`]. Both are unpinned afterwards.
pub fn each_server<T>(
    server: u32,
    mut measure: impl FnMut() -> Result<T, String>,
) -> Result<Vec<(String, T)>, String> {
    let leave = || {
        let _ = pin_other(server, None);
        let _ = pin_thread(None);
    };
    let mut out = Vec::new();
    for placement in Placement::ALL {
        let pinned = pin_other(server, Some(MAIN_CORE))
            .and_then(|()| pin_thread(Some(placement.child_core())));
        if let Err(e) = pinned {
            leave();
            tracing::warn!("cannot pin the peer server or its client ({e}); timing unpinned");
            out.push((UNPINNED.to_owned(), measure()?));
            return Ok(out);
        }
        let result = measure();
        leave();
        out.push((placement.label().to_owned(), result?));
    }
    Ok(out)
}

/// Serves [`SERVICE`] on main's `transport`.
pub fn serve(transport: &Arc<dyn Transport>) -> Result<(), String> {
    // Remember main's CPUs now, before anything pins them.
    original();
    transport
        .serve(
            SERVICE,
            Arc::new(|_: PeerId, req: &[u8], reply: &mut Vec<u8>| {
                // The reply is empty on success, else the reason.
                if let Err(e) = pin_process(req.first().map(|&c| usize::from(c))) {
                    reply.extend_from_slice(e.as_bytes());
                }
                Ok(())
            }),
        )
        .map_err(|e| e.to_string())
}

/// Pins main (through [`SERVICE`]) and this child for `placement`; on
/// failure both are left unpinned and the reason is returned.
fn enter(t: &Arc<dyn Transport>, placement: Placement) -> Result<(), String> {
    let core = u8::try_from(MAIN_CORE).map_err(|e| e.to_string())?;
    let reply = t.call(SERVICE, &[core]).map_err(|e| e.to_string())?;
    let pinned = if reply.is_empty() {
        pin_process(Some(placement.child_core()))
    } else {
        Err(String::from_utf8_lossy(&reply).into_owned())
    };
    if pinned.is_err() {
        leave(t);
    }
    pinned
}

/// Restores main's and this child's CPUs; a failure leaves a process
/// pinned, which only slows the figures after it.
fn leave(t: &Arc<dyn Transport>) {
    let _ = t.call(SERVICE, &[]);
    let _ = pin_process(None);
}

/// Runs `measure` (in the child) once under each [`Placement`], main's
/// threads pinned through `t`, and returns each run's figure name with its
/// result. If pinning fails, one unpinned run is made instead, named
/// "unpinned (pinning failed)". Both processes are unpinned afterwards.
pub fn each<T>(
    t: &Arc<dyn Transport>,
    mut measure: impl FnMut() -> Result<T, String>,
) -> Result<Vec<(String, T)>, String> {
    let mut out = Vec::new();
    for placement in Placement::ALL {
        if let Err(e) = enter(t, placement) {
            tracing::warn!("cannot pin the bench processes ({e}); timing unpinned");
            out.push((UNPINNED.to_owned(), measure()?));
            return Ok(out);
        }
        let result = measure();
        leave(t);
        out.push((placement.label().to_owned(), result?));
    }
    Ok(out)
}

/// The separator between a figure's key and its placement in the names the
/// child reports to main.
pub const SEP: char = '|';

/// The placements (in the order given by `names`) of every reported name
/// `key|placement`.
pub fn labels<'a>(key: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut labels: Vec<String> = names
        .into_iter()
        .filter_map(|n| n.split_once(SEP))
        .filter(|(k, _)| *k == key)
        .map(|(_, l)| l.to_owned())
        .collect();
    // Same core first, as timed; an unpinned fallback has no order to keep.
    labels.sort_by_key(|l| {
        Placement::ALL
            .iter()
            .position(|p| p.label() == l)
            .unwrap_or(usize::MAX)
    });
    labels.dedup();
    labels
}

/// The name `key|label` a placed figure is reported under.
pub fn key(key: &str, label: &str) -> String {
    format!("{key}{SEP}{label}")
}

/// The floor to set throughput against: the cross-core one when there is
/// one (throughput runs unpinned, on both cores), else the first.
pub fn throughput_floor(floors: &[(String, f64)]) -> Option<f64> {
    floors
        .iter()
        .find(|(l, _)| l == Placement::Cores01.label())
        .or(floors.first())
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_the_timed_order_and_only_their_key() {
        let names = ["rtt|cores 0/1", "floor|same core", "rtt|same core", "x"];
        assert_eq!(labels("rtt", names), ["same core", "cores 0/1"]);
        assert_eq!(labels("floor", names), ["same core"]);
        assert!(labels("none", names).is_empty());
    }

    #[test]
    fn throughput_floor_prefers_cross_core() {
        let f = |l: &str, v| (l.to_owned(), v);
        assert_eq!(
            throughput_floor(&[f("same core", 7.0), f("cores 0/1", 15.0)]),
            Some(15.0)
        );
        assert_eq!(
            throughput_floor(&[f("unpinned (pinning failed)", 9.0)]),
            Some(9.0)
        );
        assert_eq!(throughput_floor(&[]), None);
    }
}
