//! The harness's hold on a child process on each system: wait for its exit
//! without giving up the process, force it, reap it. Unix keeps the exited
//! child unreaped (its pid stays the harness's) and can send any signal;
//! Windows holds the process handle, and can only kill.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(super) use unix::{Process, wait_gone};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(super) use windows::{Process, wait_gone};
