//! The handshake: a rendezvous per child in main, and the child's side
//! that connects to it.
//!
//! ipc-channel's one-shot server takes one connection, then it is gone. So
//! that a process connecting first cannot make a child's spawn fail, the
//! child is not told the server's socket but a link, `socket`, in a
//! directory of main's own (created `0700`), which main points at the
//! server listening now: each process that connects and is not the child
//! is refused, main opens a new server and moves the link, and the child
//! (retrying while the link is there) joins through it, until the
//! handshake time-out. A process that connects and never says anything
//! holds the server it reached, and the child's spawn then times out.
//! That is where servers are socket files; where the system names them
//! (macOS, Windows) the child is told the server itself, and a refused
//! process ends the rendezvous ([`place`] says what protects each).

mod place;

#[cfg(target_os = "linux")]
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use ipc_channel::TryRecvError;
use ipc_channel::ipc::{self, IpcOneShotServer, IpcSender};

use crate::error::{Error, Result};
use crate::link::{self, Ends};
#[cfg(target_os = "linux")]
use crate::pipe::Region;
use crate::wire::{Bootstrap, Hello, Welcome};
use place::Place;

/// How long a child waits before it tries the rendezvous again, when main
/// is between two servers.
const RETRY: Duration = Duration::from_millis(5);

/// One child's rendezvous: a thread accepting on one server after another.
pub(crate) struct Rendezvous {
    pub(crate) bootstrap: Bootstrap,
    accepted: Receiver<Accepted>,
    /// Where the child finds the server.
    place: Arc<Place>,
    stop: Arc<AtomicBool>,
    /// Disconnected once the accepting thread has ended.
    ended: Receiver<()>,
}

/// What one server received.
enum Accepted {
    Hello(Hello),
    /// Bytes that are not a hello (or carry a descriptor ipc-channel
    /// cannot take): that process is refused.
    Unreadable(String),
    /// No new server could be opened: the rendezvous cannot go on.
    Broken(String),
}

/// What ended a wait for a child's hello.
pub(crate) enum Arrival {
    Joined(Hello),
    Failed(Error),
}

impl Rendezvous {
    /// A rendezvous for the child that inherits the link's memory file at
    /// descriptor `region` (`None`: its link goes over ipc-channel).
    pub(crate) fn open(region: Option<i32>) -> Result<Rendezvous> {
        let place = Arc::new(Place::new()?);
        let stop = Arc::new(AtomicBool::new(false));
        let (bootstrap, accepted, ended) = Rendezvous::start(&place, region, stop.clone())?;
        Ok(Rendezvous {
            bootstrap,
            accepted,
            place,
            stop,
            ended,
        })
    }

    /// Opens the first server, points the place at it and starts the
    /// accepting thread.
    #[allow(clippy::type_complexity)]
    fn start(
        place: &Arc<Place>,
        region: Option<i32>,
        stop: Arc<AtomicBool>,
    ) -> Result<(Bootstrap, Receiver<Accepted>, Receiver<()>)> {
        let (server, name) = listen()?;
        place.point(&name)?;
        let bootstrap = Bootstrap::new(place.address()?, region)?;
        let (tx, accepted) = crossbeam_channel::unbounded();
        let (alive, ended) = crossbeam_channel::bounded(0);
        let place = place.clone();
        std::thread::Builder::new()
            .name("yuki-accept".into())
            .spawn(move || {
                accept_loop(server, &place, &tx, &stop);
                drop(alive);
            })
            .map_err(|e| Error::os("starting the handshake thread", e))?;
        Ok((bootstrap, accepted, ended))
    }

    /// Waits for the child's hello, for `exited` to fire, or for `timeout`.
    /// `admit` checks each hello: a process it refuses (`Err` with what to
    /// tell it and why) is told so and main waits on. Whatever ends the
    /// wait, the rendezvous closes (as when it is dropped unused).
    pub(crate) fn wait<T>(
        self,
        timeout: Duration,
        exited: &Receiver<T>,
        on_exit: impl FnOnce(T) -> Error,
        admit: impl Fn(&str, u32) -> std::result::Result<(), (&'static str, String)>,
    ) -> Arrival {
        let deadline = Instant::now() + timeout;
        let mut refused: Option<String> = None;
        let mut refuse = |why: String| {
            tracing::warn!(reason = %why, "refused a process at a child's rendezvous; waiting on for the child");
            refused = Some(why);
        };
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            select! {
                recv(self.accepted) -> r => match r {
                    Ok(Accepted::Hello(hello)) => {
                        let (token, pid, welcome) = hello.credentials();
                        match admit(token, pid) {
                            // Dropping `self` closes the rendezvous.
                            Ok(()) => return Arrival::Joined(hello),
                            Err((told, why)) => {
                                let _ = welcome.send(Welcome::Refused(told.into()));
                                refuse(why);
                            }
                        }
                    }
                    Ok(Accepted::Unreadable(e)) => refuse(unreadable(&e)),
                    Ok(Accepted::Broken(e)) => break Error::os("listening for the child", e),
                    Err(_) => break Error::os("listening for the child", "the accept thread ended"),
                },
                recv(exited) -> r => {
                    // A hello that came before the exit still says why.
                    for got in self.accepted.try_iter() {
                        match got {
                            Accepted::Hello(hello) => {
                                let (token, pid, _) = hello.credentials();
                                if let Err((_, why)) = admit(token, pid) {
                                    refuse(why);
                                }
                            }
                            Accepted::Unreadable(e) => refuse(unreadable(&e)),
                            Accepted::Broken(_) => {}
                        }
                    }
                    break match r {
                        Ok(status) => on_exit(status),
                        Err(_) => Error::os("watching the child", "the watcher ended"),
                    };
                }
                default(left) => break Error::HandshakeTimeout(timeout),
            }
        };
        // A refusal says more than the time-out or the exit that followed it.
        Arrival::Failed(match refused {
            Some(why) => Error::Refused(format!("{why}, and the child never joined")),
            None => outcome,
        })
    }
}

impl Drop for Rendezvous {
    /// Ends the accepting thread (accept() has no time-out: a knock ends
    /// it) and closes the place, even while a silent process still holds
    /// the thread.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let until = Instant::now() + Duration::from_secs(1);
        // A silent process holding the server keeps the thread until it
        // hangs up; the rendezvous is closed all the same.
        while Instant::now() < until {
            self.place.knock();
            if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
                self.ended.recv_timeout(RETRY)
            {
                break;
            }
        }
        self.place.close();
    }
}

fn unreadable(e: &str) -> String {
    format!("a process sent a hello that cannot be read ({e})")
}

/// Accepts on `server`, then (where the child can follow) on a new server
/// after each connection, until told to stop.
fn accept_loop(
    mut server: IpcOneShotServer<Hello>,
    place: &Place,
    tx: &Sender<Accepted>,
    stop: &AtomicBool,
) {
    loop {
        // ipc-channel panics on a hello carrying a descriptor it cannot
        // map or naming a channel it did not carry: that process is
        // refused, main goes on. (Channels a hello carried but the reader
        // did not take trip a debug assertion each in ipc-channel, and two
        // abort the process: the workspace builds it without them.)
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.accept()));
        let got = match got {
            Ok(Ok((_, hello))) => Accepted::Hello(hello),
            Ok(Err(e)) => Accepted::Unreadable(format!("{e:?}")),
            Err(_) => Accepted::Unreadable("a descriptor that cannot be mapped".into()),
        };
        if stop.load(Ordering::SeqCst) || tx.send(got).is_err() || !place::FOLLOWS {
            return;
        }
        // The next server, then the link moves to it; a child that tries
        // in between finds no server and tries again.
        let next = listen().and_then(|(next, name)| {
            if stop.load(Ordering::SeqCst) {
                return Err(Error::os("listening for the child", "stopped"));
            }
            place.point(&name)?;
            Ok(next)
        });
        match next {
            Ok(next) => server = next,
            Err(e) => {
                if !stop.load(Ordering::SeqCst) {
                    let _ = tx.send(Accepted::Broken(e.to_string()));
                }
                return;
            }
        }
    }
}

/// A new one-shot server and its name.
fn listen() -> Result<(IpcOneShotServer<Hello>, String)> {
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
    Ok((server, name))
}

/// What a child learns from the handshake.
pub(crate) struct Joined {
    pub(crate) peer: u64,
    pub(crate) name: String,
    pub(crate) max_frame: usize,
    pub(crate) ends: Ends,
}

/// The child's side: connect to the parent named in `value`, present the
/// token, and wait (at most `timeout`) for the answer. While the name is a
/// link that main moves between servers, a server that is gone or a hello
/// lost with its server is tried again.
pub(crate) fn join(value: &str, timeout: Duration) -> Result<Joined> {
    let deadline = Instant::now() + timeout;
    let boot = Bootstrap::parse(value)?;
    loop {
        let gone = match attempt(&boot, deadline, timeout) {
            Attempt::Joined(j) => return Ok(j),
            Attempt::Failed(e) => return Err(e),
            Attempt::Lost(why) => why,
        };
        if !place::moving(&boot.server) {
            return Err(Error::ParentGone(gone));
        }
        if Instant::now() + RETRY >= deadline {
            return Err(Error::HandshakeTimeout(timeout));
        }
        std::thread::sleep(RETRY);
    }
}

/// How one try at the rendezvous ended.
enum Attempt {
    Joined(Joined),
    Failed(Error),
    /// No server answered: why.
    Lost(String),
}

fn attempt(boot: &Bootstrap, deadline: Instant, timeout: Duration) -> Attempt {
    if let Err(why) = place::reachable(&boot.server) {
        return Attempt::Lost(why);
    }
    let server = match IpcSender::<Hello>::connect(boot.server.clone()) {
        Ok(s) => s,
        Err(e) => return Attempt::Lost(format!("cannot connect to {}: {e}", boot.server)),
    };
    let made = link::ipc::channel().and_then(|down| {
        let welcome = ipc::channel::<Welcome>().map_err(|e| e.to_string())?;
        // Over ipc-channel, a channel up as well: this child keeps its
        // sending end, main gets the other in the hello.
        let up = match boot.region {
            Some(_) => None,
            None => Some(link::ipc::channel()?),
        };
        Ok((down, welcome, up))
    });
    let ((down_tx, down), (welcome_tx, welcome), up) = match made {
        Ok(m) => m,
        Err(e) => return Attempt::Failed(Error::os("creating the link", e)),
    };
    let token = boot.token.clone();
    let pid = std::process::id();
    let (hello, up_tx) = match up {
        None => (
            Hello::Join {
                token,
                pid,
                down: down_tx,
                welcome: welcome_tx,
            },
            None,
        ),
        Some((up_tx, up)) => (
            Hello::JoinOverIpc {
                token,
                pid,
                down: down_tx,
                up,
                welcome: welcome_tx,
            },
            Some(up_tx),
        ),
    };
    if let Err(e) = server.send(hello) {
        return Attempt::Lost(format!("cannot send the handshake: {e:?}"));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    match welcome.try_recv_timeout(left) {
        Ok(Welcome::Accepted {
            peer,
            name,
            max_frame,
        }) => match child_ends(boot.region, down, up_tx) {
            Ok(ends) => Attempt::Joined(Joined {
                peer,
                name,
                max_frame: usize::try_from(max_frame).unwrap_or(usize::MAX),
                ends,
            }),
            Err(e) => Attempt::Failed(e),
        },
        Ok(Welcome::Refused(why)) => Attempt::Failed(Error::Refused(why)),
        Err(TryRecvError::Empty) => Attempt::Failed(Error::HandshakeTimeout(timeout)),
        // The hello went with a server main dropped, or main is gone.
        Err(TryRecvError::IpcError(e)) => {
            Attempt::Lost(format!("the parent closed the handshake ({e:?})"))
        }
    }
}

/// A joined child's ends of its link: the inherited region with the
/// liveness socket, or the two channels.
fn child_ends(
    region: Option<i32>,
    down: link::ipc::Receiver,
    up: Option<ipc::IpcBytesSender>,
) -> Result<Ends> {
    match (region, up) {
        #[cfg(target_os = "linux")]
        (Some(fd), _) => Ok(Ends::SharedMemory {
            region: inherited_region(fd)?,
            alive: link::Alive::Receiver(down),
        }),
        #[cfg(not(target_os = "linux"))]
        (Some(_), _) => Err(Error::LinkUnsupported(crate::LinkKind::SharedMemory)),
        (None, Some(tx)) => Ok(Ends::IpcChannel { tx, rx: down }),
        (None, None) => Err(Error::os("joining main", "no channel to main was made")),
    }
}

#[cfg(target_os = "linux")]
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
