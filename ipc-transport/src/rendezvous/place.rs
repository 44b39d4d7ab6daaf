//! Where a child finds main's handshake server: what protects it, and
//! whether main can move it to a new server after refusing an impostor.
//! That depends on how ipc-channel names its servers on the system.
//!
//! - Where a server is a Unix socket file (Linux, the BSDs, illumos), the
//!   child is given a link in a directory of main's own (mode `0700`);
//!   main narrows each server's socket to its user and moves the link to a
//!   new server after each refused process, so an impostor that connects
//!   first cannot make the spawn fail ([`socket_dir`]).
//! - Where a server is a name the system keeps (macOS: a Mach bootstrap
//!   name in the user's session; Windows: a named pipe), the child is given
//!   that name itself. It is random, but other processes of the user can
//!   list such names, and there is no file whose mode could narrow it: on
//!   Windows the pipe's default security lets only its user,
//!   administrators and the system open it for writing. The token still
//!   keeps every other process from joining, but a process that connects
//!   first makes that child's spawn fail with [`Error::Refused`]
//!   (crate::Error::Refused), as the child cannot follow a new server
//!   ([`named`]).

#[cfg(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "illumos"
))]
mod socket_dir;
#[cfg(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "illumos"
))]
pub(super) use socket_dir::{FOLLOWS, Place, moving, reachable};

// Also built for the tests where servers are socket files: its knock and
// naming work over any ipc-channel backend, so they are tested there too.
#[cfg(any(
    test,
    not(any(
        target_os = "linux",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "illumos"
    ))
))]
#[cfg_attr(test, allow(dead_code))]
mod named;
#[cfg(not(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "illumos"
)))]
pub(super) use named::{FOLLOWS, Place, moving, reachable};
