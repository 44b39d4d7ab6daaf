//! No CPU placement off Linux (there is no `sched_setaffinity`): every
//! pin fails with that reason, so the bench times unpinned and names the
//! figures so.

/// The name of a figure timed unpinned: this system cannot pin.
pub const UNPINNED: &str = "unpinned (no CPU placement on this system)";

const WHY: &str = "CPU placement needs Linux (sched_setaffinity)";

/// Nothing to remember: nothing is ever pinned.
pub(super) fn original() {}

/// Fails: this system has no CPU placement.
pub fn pin_process(_cpu: Option<usize>) -> Result<(), String> {
    Err(WHY.to_owned())
}

/// Fails: this system has no CPU placement.
pub fn pin_other(_pid: u32, _cpu: Option<usize>) -> Result<(), String> {
    Err(WHY.to_owned())
}

/// Fails: this system has no CPU placement.
pub fn pin_thread(_cpu: Option<usize>) -> Result<(), String> {
    Err(WHY.to_owned())
}
