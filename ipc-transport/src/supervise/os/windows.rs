//! Windows: children are started with `Command` as it is (no descriptor
//! is handed down: off Linux a link needs no memory file), ended with
//! `Child::kill` (`TerminateProcess`, exit code 1), and watched through
//! their process handle, which main holds until it has reaped them, so
//! the process waited for or killed is always the child.
//!
//! Windows has no signals: a child's [`Exit`](crate::Exit) has no signal,
//! and there is no parent-death signal (a child learns of main's death
//! from its link).

use std::ffi::c_void;
use std::io;
use std::os::windows::io::AsRawHandle;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::AtomicI32;
use std::sync::{Arc, Mutex};

use super::Force;
use yuki_channel::sync::lock;

/// Nothing is handed down to a child here (no link needs a memory file).
pub(crate) enum Handed {}

/// Never called: there is no [`Handed`] value.
pub(crate) fn raw(handed: &Handed) -> i32 {
    match *handed {}
}

/// One step: there is no gentler way to end another process.
pub(crate) const ESCALATION: &[Force] = &[Force::Kill];

#[link(name = "kernel32")]
unsafe extern "system" {
    fn WaitForSingleObject(handle: *mut c_void, milliseconds: u32) -> u32;
}

const INFINITE: u32 = u32::MAX;

/// The command as it is: nothing is handed down, and a parent-death
/// signal was refused before any start (`check_death_signal`).
pub(crate) fn prepare(
    cmd: Command,
    _death_signal: Option<i32>,
    _inherit: Arc<AtomicI32>,
) -> Command {
    cmd
}

/// Never a signal: Windows has none.
pub(crate) fn exit_signal(_status: &ExitStatus) -> Option<i32> {
    None
}

/// One started run of a child, until it is reaped.
pub(crate) struct Process {
    /// The child's process handle, owned by `child` and so valid as long
    /// as this `Process` lives.
    handle: usize,
    child: Mutex<Child>,
}

impl Process {
    pub(crate) fn new(child: Child) -> Process {
        Process {
            handle: child.as_raw_handle() as usize,
            child: Mutex::new(child),
        }
    }

    /// Blocks until it has exited, without holding the lock `force` takes.
    pub(crate) fn wait_exited(&self) {
        // SAFETY: the handle is the child's, open while `self` lives.
        unsafe { WaitForSingleObject(self.handle as *mut c_void, INFINITE) };
    }

    /// Its status once it has exited.
    pub(crate) fn reap(&self) -> io::Result<ExitStatus> {
        lock(&self.child).wait()
    }

    /// Ends it (`TerminateProcess`); both steps are the same here.
    pub(crate) fn force(&self, _force: Force) {
        let _ = lock(&self.child).kill();
    }
}
