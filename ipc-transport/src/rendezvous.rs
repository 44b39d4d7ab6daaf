//! The handshake: a one-shot server per child in main, and the child's
//! side that connects to it.
//!
//! ipc-channel binds each one-shot server's socket as `socket` inside a new
//! directory of the system temporary directory (`$TMPDIR`, else `/tmp`),
//! created with the process's default permissions. Right after creating it,
//! yuki narrows that directory to `0700` and the socket to `0600`, so only
//! the owning user can reach it; and a child must present a 128-bit token
//! besides. To leave no window at all between creation and narrowing, start
//! main with `TMPDIR` pointing at a directory only its user can open
//! (`mkdir -m 0700 "$XDG_RUNTIME_DIR/yuki"`, say).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use ipc_channel::TryRecvError;
use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};

use crate::error::{Error, Result};
use crate::pipe::Region;
use crate::wire::{Bootstrap, Hello, Welcome};

/// A one-shot server waiting, on its own thread, for one child.
pub(crate) struct Rendezvous {
    pub(crate) bootstrap: Bootstrap,
    accepted: Receiver<std::result::Result<Hello, String>>,
}

/// What ended a wait for a child's hello.
pub(crate) enum Arrival {
    Joined(Hello),
    Failed(Error),
}

impl Rendezvous {
    /// A server for the child that inherits the link's memory file at
    /// descriptor `region`.
    pub(crate) fn open(region: i32) -> Result<Rendezvous> {
        // ipc-channel 0.23 panics instead of failing when the temporary
        // directory is unusable (a bad TMPDIR): turn that into an error.
        let (server, name) = std::panic::catch_unwind(IpcOneShotServer::<Hello>::new)
            .map_err(|_| {
                Error::os(
                    "creating the handshake socket",
                    "ipc-channel could not create it in the temporary directory; check that TMPDIR names a writable directory",
                )
            })?
            .map_err(|e| Error::os("creating the handshake socket", e))?;
        restrict(Path::new(&name))?;
        let bootstrap = Bootstrap::new(name, region)?;
        let (tx, accepted) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("yuki-accept".into())
            .spawn(move || {
                // ipc-channel panics on a hello carrying a descriptor it
                // cannot map: that child is refused, main goes on.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.accept()))
                    .map_err(|_| "its hello carried a descriptor that cannot be mapped".to_owned())
                    .and_then(|accepted| {
                        accepted
                            .map(|(_rx, hello): (IpcReceiver<Hello>, Hello)| hello)
                            .map_err(|e| format!("{e:?}"))
                    });
                let _ = tx.send(r);
            })
            .map_err(|e| Error::os("starting the handshake thread", e))?;
        Ok(Rendezvous {
            bootstrap,
            accepted,
        })
    }

    /// Waits for the child's hello, for `exited` to fire, or for `timeout`.
    /// Whatever ends the wait, the accept thread is released.
    pub(crate) fn wait<T>(
        self,
        timeout: Duration,
        exited: &Receiver<T>,
        on_exit: impl FnOnce(T) -> Error,
    ) -> Arrival {
        let outcome = select! {
            recv(self.accepted) -> r => match r {
                Ok(Ok(hello)) => return Arrival::Joined(hello),
                Ok(Err(e)) => Error::os("accepting the child's connection", e),
                Err(_) => Error::os("accepting the child's connection", "the accept thread ended"),
            },
            recv(exited) -> r => match r {
                Ok(status) => on_exit(status),
                Err(_) => Error::os("watching the child", "the watcher ended"),
            },
            default(timeout) => Error::HandshakeTimeout(timeout),
        };
        // accept() has no time-out: connect and say "abort" to end it.
        if let Ok(tx) = IpcSender::<Hello>::connect(self.bootstrap.server.clone()) {
            let _ = tx.send(Hello::Abort);
        }
        if let Ok(Ok(Hello::Join { .. })) = self.accepted.recv_timeout(Duration::from_secs(1)) {
            // The child joined just as we gave up; dropping its hello closes its link.
        }
        Arrival::Failed(outcome)
    }
}

/// Narrows the socket's directory to its owner.
fn restrict(socket: &Path) -> Result<()> {
    let dir = socket
        .parent()
        .ok_or_else(|| Error::os("securing the handshake socket", "it has no directory"))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .and_then(|()| std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)))
        .map_err(|e| Error::os("securing the handshake socket", e))
}

/// What a child learns from the handshake.
pub(crate) struct Joined {
    pub(crate) peer: u64,
    pub(crate) name: String,
    pub(crate) max_frame: usize,
    pub(crate) region: Arc<Region>,
    pub(crate) down: ipc::IpcBytesReceiver,
}

/// The child's side: connect to the parent named in `value`, present the
/// token, and wait (at most `timeout`) for the answer.
pub(crate) fn join(value: &str, timeout: Duration) -> Result<Joined> {
    let deadline = Instant::now() + timeout;
    let boot = Bootstrap::parse(value)?;
    let server = IpcSender::<Hello>::connect(boot.server.clone())
        .map_err(|e| Error::ParentGone(format!("cannot connect to {}: {e}", boot.server)))?;
    let (down_tx, down) = ipc::bytes_channel().map_err(|e| Error::os("creating the link", e))?;
    let (welcome_tx, welcome) =
        ipc::channel::<Welcome>().map_err(|e| Error::os("creating the link", e))?;
    server
        .send(Hello::Join {
            token: boot.token,
            pid: std::process::id(),
            down: down_tx,
            welcome: welcome_tx,
        })
        .map_err(|e| Error::ParentGone(format!("cannot send the handshake: {e:?}")))?;
    let left = deadline.saturating_duration_since(Instant::now());
    match welcome.try_recv_timeout(left) {
        Ok(Welcome::Accepted {
            peer,
            name,
            max_frame,
        }) => Ok(Joined {
            peer,
            name,
            max_frame: usize::try_from(max_frame).unwrap_or(usize::MAX),
            region: inherited_region(boot.region)?,
            down,
        }),
        Ok(Welcome::Refused(why)) => Err(Error::Refused(why)),
        Err(TryRecvError::Empty) => Err(Error::HandshakeTimeout(timeout)),
        Err(TryRecvError::IpcError(e)) => Err(Error::ParentGone(format!(
            "the parent closed the handshake ({e:?})"
        ))),
    }
}

/// Maps the link's memory file that main handed down at descriptor `fd`,
/// after checking its size and seals; then closes `fd` (the region keeps
/// its own copy, closed on exec).
pub(crate) fn inherited_region(fd: i32) -> Result<Arc<Region>> {
    let failed = |why: String| Error::os("opening the link's memory", why);
    // A copy first: `fd` is only known to be the file once it is checked.
    // SAFETY: fcntl on a descriptor number; it fails if nothing is open there.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(failed(format!(
            "descriptor {fd} from the bootstrap value: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `copy` is new and owned by nobody else.
    let copy = unsafe { OwnedFd::from_raw_fd(copy) };
    let region = Region::open(copy).map_err(failed)?;
    // SAFETY: `fd` is the inherited file (checked through its copy), which
    // nothing else in this process uses.
    unsafe { libc::close(fd) };
    Ok(region)
}
