//! CPU placement on Linux: `sched_setaffinity` on every thread of a process.

use std::sync::OnceLock;

/// The name of a figure timed unpinned because pinning failed.
pub const UNPINNED: &str = "unpinned (pinning failed)";

/// The CPUs this process could use before the bench pinned it.
static ORIGINAL: OnceLock<Option<libc::cpu_set_t>> = OnceLock::new();

pub(super) fn original() -> Option<libc::cpu_set_t> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
