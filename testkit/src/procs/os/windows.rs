//! Windows: the process handle, held until the child is reaped, to wait
//! for its exit and to kill it (`TerminateProcess`). There are no signals.

use std::ffi::c_void;
use std::io;
use std::os::windows::io::AsRawHandle;
use std::process::{Child, ExitStatus};
use std::sync::Mutex;
use std::time::Instant;

use yuki_channel::sync::lock;

#[link(name = "kernel32")]
unsafe extern "system" {
    fn WaitForSingleObject(handle: *mut c_void, milliseconds: u32) -> u32;
}

const INFINITE: u32 = u32::MAX;

/// A child the harness started, until it is reaped.
pub(in crate::procs) struct Process {
    /// The child's process handle, owned by `child`, so valid while this lives.
    handle: usize,
    child: Mutex<Child>,
}

impl Process {
    pub(in crate::procs) fn new(child: Child) -> Process {
        Process {
            handle: child.as_raw_handle() as usize,
            child: Mutex::new(child),
        }
    }

    /// Blocks until it has exited, without holding the lock `kill` takes.
    pub(in crate::procs) fn wait_exited(&self) {
        // SAFETY: the handle is the child's, open while `self` lives.
        unsafe { WaitForSingleObject(self.handle as *mut c_void, INFINITE) };
    }

    pub(in crate::procs) fn reap(&self) -> io::Result<ExitStatus> {
        lock(&self.child).wait()
    }

    /// Ends it (`TerminateProcess`).
    pub(in crate::procs) fn kill(&self) {
        let _ = lock(&self.child).kill();
    }
}

/// Leftovers are only looked for on Linux: nothing to wait for.
pub(in crate::procs) fn wait_gone(_pid: u32, _deadline: Instant) {}
