//! Where the two processes of a round trip run: on these 2-core virtual
//! machines a round trip costs about twice as much across cores as on one,
//! and an unpinned run lands on either, so latency figures are timed under a
//! fixed placement and named with it.
//!
//! Main serves [`SERVICE`] (from [`floor::run_child`](super::floor::run_child));
//! the child asks it to pin main's threads, pins its own with
//! [`pin_process`], times each [`Placement`] and restores both afterwards.
//! Pinning that fails (one CPU, a restrictive cpuset) falls back to an
//! unpinned run, and the figure's name says so.

use std::sync::{Arc, OnceLock};

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

/// The CPUs this process could use before the bench pinned it.
static ORIGINAL: OnceLock<Option<libc::cpu_set_t>> = OnceLock::new();

fn original() -> Option<libc::cpu_set_t> {
    *ORIGINAL.get_or_init(|| {
        // SAFETY: cpu_set_t is plain data; a zeroed set is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the pointer and size describe `set`, which outlives the call.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        (rc == 0).then_some(set)
    })
}

fn one_cpu(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: as in `original`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked by the callers' core numbers).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

/// Applies `set` to every thread of this process (threads started later
/// inherit it from the thread that starts them).
fn apply(set: &libc::cpu_set_t) -> Result<(), String> {
    apply_to("self", set)
}

/// Applies `set` to every thread of process `pid` (`"self"` for this one).
fn apply_to(pid: &str, set: &libc::cpu_set_t) -> Result<(), String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("cannot list the threads of process {pid}: {e}"))?;
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // SAFETY: the pointer and size describe `set`, which outlives the call.
        let rc =
            unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            // A thread that ended since the listing is no failure.
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(format!("sched_setaffinity failed: {e}"));
            }
        }
    }
    Ok(())
}

/// Pins every thread of this process to `cpu`, or restores the CPUs it
/// had before the first pin when `cpu` is `None`.
pub fn pin_process(cpu: Option<usize>) -> Result<(), String> {
    let before = original().ok_or("sched_getaffinity failed")?;
    match cpu {
        Some(cpu) if cpu < libc::CPU_SETSIZE as usize => apply(&one_cpu(cpu)),
        Some(cpu) => Err(format!("no CPU {cpu}")),
        None => apply(&before),
    }
}

/// Pins every thread of another process (`pid`, a server the bench
/// started) to `cpu`, or restores the CPUs this process had before its
/// first pin (the ones the server inherited) when `cpu` is `None`.
pub fn pin_other(pid: u32, cpu: Option<usize>) -> Result<(), String> {
    let before = original().ok_or("sched_getaffinity failed")?;
    let pid = pid.to_string();
    match cpu {
        Some(cpu) if cpu < libc::CPU_SETSIZE as usize => apply_to(&pid, &one_cpu(cpu)),
        Some(cpu) => Err(format!("no CPU {cpu}")),
        None => apply_to(&pid, &before),
    }
}

/// Pins the calling thread alone to `cpu`, or restores this process's
/// CPUs from before its first pin when `cpu` is `None`.
pub fn pin_thread(cpu: Option<usize>) -> Result<(), String> {
    let before = original().ok_or("sched_getaffinity failed")?;
    let set = match cpu {
        Some(cpu) if cpu < libc::CPU_SETSIZE as usize => one_cpu(cpu),
        Some(cpu) => return Err(format!("no CPU {cpu}")),
        None => before,
    };
    // SAFETY: the pointer and size describe `set`, which outlives the call;
    // tid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "sched_setaffinity failed: {}",
            std::io::Error::last_os_error()
        ))
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

/// The name of a figure timed unpinned because pinning failed.
pub const UNPINNED: &str = "unpinned (pinning failed)";

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

    #[test]
    fn restoring_and_a_missing_cpu_never_panic() {
        // Pinning itself is left to the bench: it would pin every thread of
        // the test binary, the other tests' too.
        assert!(pin_process(None).is_ok());
        assert!(pin_process(Some(usize::MAX)).is_err());
        // A CPU the machine lacks: the kernel refuses it for the first
        // thread, so nothing is pinned and the bench would time unpinned.
        let refused = pin_process(Some(libc::CPU_SETSIZE as usize - 1));
        assert!(refused.is_err(), "{refused:?}");
    }
}
