//! What a link's messages travel on: the seam between the link's two
//! kinds (a region of shared memory on Linux, ipc-channel byte channels
//! everywhere) and the code that reads and writes a link, which does not
//! care which it is.
//!
//! Each kind gives a [`Writer`] (one message at a time, split between
//! frames when long), a [`Reader`] (whole messages, each checked against a
//! length limit, with a deadline) and a [`Carrier`], the state both ends in
//! one process share: closing it closes the link both ways and wakes this
//! side's reader. The enums are matched, never boxed: the shared-memory
//! path costs what it did before the seam.

pub(crate) mod ipc;

use std::sync::Arc;
use std::time::Instant;

use ipc_channel::ipc::IpcSender;

use crate::wire::Welcome;

use crate::error::{Error, Result};
#[cfg(target_os = "linux")]
use crate::pipe::{self, Region};

/// The environment variable main reads for its link kind when
/// [`NodeBuilder::link`](crate::NodeBuilder::link) does not set one:
/// `shared-memory` or `ipc-channel`.
pub const LINK_ENV: &str = "YUKI_LINK";

/// Which carrier a child's link uses. Main picks it for each child and
/// tells the child in the handshake, so the two sides never disagree.
///
/// | kind | systems | how a message travels |
/// |---|---|---|
/// | [`SharedMemory`](LinkKind::SharedMemory) | Linux (the default there) | a copy into a byte pipe in a sealed region both processes map, a futex wake-up only for a sleeping reader: no system call while both ends are busy |
/// | [`IpcChannel`](LinkKind::IpcChannel) | every system (the only one off Linux) | one ipc-channel byte message per batch of frames: a system call each way, so a round trip costs about what ipc-channel's own ping-pong does |
///
/// Both carry the same messages of coalesced frames, with the same
/// deadlines, message-size checks, backlog limits and cut-off of a child
/// that breaks the rules; they differ in speed and in how a side learns
/// that the other is gone (over shared memory, main sees a child end from
/// its exit and the child watches an ipc-channel socket; over ipc-channel,
/// each side sees the other's channel close). An ipc-channel message over
/// about 212 KB is split by ipc-channel itself and slows down, so the link
/// sends batches of frames in messages of at most 192 KiB where it can.
///
/// One difference matters against a hostile child: ipc-channel allocates
/// the length a message's header claims before the message is read, so
/// over [`IpcChannel`](LinkKind::IpcChannel) a child can make main
/// allocate what it claims (and abort on a claim the system refuses).
/// The shared-memory link checks every length first: use it for children
/// you do not trust.
///
/// ```
/// use yuki_ipc_transport::LinkKind;
///
/// let kind: LinkKind = "ipc-channel".parse().unwrap();
/// assert_eq!(kind, LinkKind::IpcChannel);
/// assert_eq!(kind.to_string(), "ipc-channel");
/// assert!("carrier-pigeon".parse::<LinkKind>().is_err());
/// if cfg!(target_os = "linux") {
///     assert_eq!(LinkKind::default(), LinkKind::SharedMemory);
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkKind {
    /// Byte pipes in a sealed region of shared memory (Linux only).
    SharedMemory,
    /// ipc-channel byte channels, one each way (every system).
    IpcChannel,
}

impl Default for LinkKind {
    fn default() -> LinkKind {
        if cfg!(target_os = "linux") {
            LinkKind::SharedMemory
        } else {
            LinkKind::IpcChannel
        }
    }
}

impl LinkKind {
    /// Every kind, for tests that run over each (on a system without one,
    /// spawning a child over it fails with [`Error::LinkUnsupported`]).
    ///
    /// ```
    /// use yuki_ipc_transport::LinkKind;
    /// assert!(LinkKind::ALL.contains(&LinkKind::default()));
    /// ```
    pub const ALL: [LinkKind; 2] = [LinkKind::SharedMemory, LinkKind::IpcChannel];

    /// The name [`LINK_ENV`] takes for this kind.
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::SharedMemory => "shared-memory",
            LinkKind::IpcChannel => "ipc-channel",
        }
    }

    /// The kind [`LINK_ENV`] names, if it is set.
    pub(crate) fn from_env() -> Result<Option<LinkKind>> {
        match std::env::var_os(LINK_ENV) {
            None => Ok(None),
            Some(v) => v.to_string_lossy().parse().map(Some),
        }
    }

    /// Fails for a kind this system does not have.
    pub(crate) fn check_supported(self) -> Result<LinkKind> {
        if cfg!(not(target_os = "linux")) && self == LinkKind::SharedMemory {
            return Err(Error::LinkUnsupported(self));
        }
        Ok(self)
    }
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LinkKind {
    type Err = Error;

    /// `shared-memory` or `ipc-channel`; anything else is
    /// [`Error::UnknownLink`].
    fn from_str(s: &str) -> Result<LinkKind> {
        match s {
            "shared-memory" => Ok(LinkKind::SharedMemory),
            "ipc-channel" => Ok(LinkKind::IpcChannel),
            other => Err(Error::UnknownLink(other.to_owned())),
        }
    }
}

/// Why a link cannot carry on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkError {
    /// The link was closed, by either side or because the other process ended.
    Closed,
    /// The other side broke the link's rules; the link must be cut.
    Corrupt(String),
}

/// The state both ends of one link share in this process.
#[derive(Clone, Debug)]
pub(crate) enum Carrier {
    #[cfg(target_os = "linux")]
    SharedMemory(Arc<Region>),
    IpcChannel(Arc<ipc::Carrier>),
}

impl Carrier {
    /// Whether sending `len` more bytes now might block because the other
    /// side has not read what it was sent. Over shared memory a send waits
    /// only while the pipe is full, which the pipe's size makes rare: never
    /// asked. Over ipc-channel every message takes room in the socket's
    /// buffer, whatever its size: the sender counts what it sent since the
    /// other side last showed it reads.
    #[inline]
    pub(crate) fn may_block(&self, len: usize) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            Carrier::SharedMemory(_) => false,
            Carrier::IpcChannel(c) => c.may_block(len),
        }
    }

    /// The other side showed that it read what it was sent (a reply came).
    #[inline]
    pub(crate) fn answered(&self) {
        match self {
            #[cfg(target_os = "linux")]
            Carrier::SharedMemory(_) => {}
            Carrier::IpcChannel(c) => c.answered(),
        }
    }

    /// Closes the link both ways: this side's reader wakes and reports it,
    /// writers fail.
    pub(crate) fn close(&self) {
        match self {
            #[cfg(target_os = "linux")]
            Carrier::SharedMemory(r) => r.close(),
            Carrier::IpcChannel(c) => c.close(),
        }
    }
}

/// The writing end of a link.
#[derive(Debug)]
pub(crate) enum Writer {
    #[cfg(target_os = "linux")]
    SharedMemory(pipe::Writer),
    IpcChannel(ipc::Writer),
}

impl Writer {
    /// Sends `message` (a run of whole frames, or any bytes): split
    /// between frames when long, waiting while the carrier is full.
    #[inline]
    pub(crate) fn send(&mut self, message: &[u8]) -> Result<(), LinkError> {
        match self {
            #[cfg(target_os = "linux")]
            Writer::SharedMemory(w) => w.send(message),
            Writer::IpcChannel(w) => w.send(message),
        }
    }

    pub(crate) fn carrier(&self) -> Carrier {
        match self {
            #[cfg(target_os = "linux")]
            Writer::SharedMemory(w) => Carrier::SharedMemory(w.region().clone()),
            Writer::IpcChannel(w) => Carrier::IpcChannel(w.carrier().clone()),
        }
    }

    /// Sends `bytes` as they are, without the carrier's own envelope
    /// (fault injection: a message a real link never sends).
    #[cfg(feature = "fault-injection")]
    pub(crate) fn send_unwrapped(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        match self {
            #[cfg(target_os = "linux")]
            Writer::SharedMemory(w) => w.send(bytes),
            Writer::IpcChannel(w) => w.send_unwrapped(bytes),
        }
    }
}

/// The reading end of a link.
#[derive(Debug)]
pub(crate) enum Reader {
    #[cfg(target_os = "linux")]
    SharedMemory(pipe::Reader),
    IpcChannel(ipc::Reader),
}

impl Reader {
    /// The next message if one has fully arrived; never blocks.
    #[inline]
    pub(crate) fn try_recv(&mut self) -> Result<Option<Vec<u8>>, LinkError> {
        match self {
            #[cfg(target_os = "linux")]
            Reader::SharedMemory(r) => r.try_recv(),
            Reader::IpcChannel(r) => r.try_recv(),
        }
    }

    /// The next message, sleeping until one comes; after a close, what
    /// was sent before it (as far as the carrier still holds it), then
    /// the close's error.
    #[inline]
    pub(crate) fn recv(&mut self) -> Result<Vec<u8>, LinkError> {
        match self {
            #[cfg(target_os = "linux")]
            Reader::SharedMemory(r) => r.recv(),
            Reader::IpcChannel(r) => r.recv(),
        }
    }

    /// [`recv`](Reader::recv) giving up at `deadline` (never if `None`)
    /// with `Ok(None)`.
    #[inline]
    pub(crate) fn recv_until(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Vec<u8>>, LinkError> {
        match self {
            #[cfg(target_os = "linux")]
            Reader::SharedMemory(r) => r.recv_until(deadline),
            Reader::IpcChannel(r) => r.recv_until(deadline),
        }
    }

    /// Whether the link was closed.
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            Reader::SharedMemory(r) => r.is_closed(),
            Reader::IpcChannel(r) => r.is_closed(),
        }
    }

    /// What this end reports now that the link is closed.
    pub(crate) fn closed(&self) -> LinkError {
        match self {
            #[cfg(target_os = "linux")]
            Reader::SharedMemory(r) => r.closed(),
            Reader::IpcChannel(r) => r.closed(),
        }
    }
}

/// The longest message a reader takes from a side whose frames are at
/// most `max_frame` bytes: a split run, or one frame with its header (a
/// call's service name or a push's stream name, which no real program makes
/// longer than a few dozen bytes, may add up to 64 KiB).
pub(crate) fn message_limit(max_frame: usize) -> usize {
    (1usize << 20).max(max_frame.saturating_add(64 << 10))
}

/// How many leading bytes of `bytes` go in one message of at most `max`
/// bytes: all of them up to `max`, else whole frames up to it (at least
/// one). Bytes that are not frames (a test's raw message) go whole.
pub(crate) fn split_point(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    let mut at = 0;
    while let Some((len, _)) = bytes[at..].split_first_chunk::<4>() {
        let end = at + 4 + u32::from_le_bytes(*len) as usize;
        if end > bytes.len() {
            return bytes.len();
        }
        if end > max && at > 0 {
            return at;
        }
        at = end;
        if at >= max {
            return at;
        }
    }
    bytes.len()
}

/// This process's ends of a link, as the handshake leaves them.
pub(crate) enum Ends {
    /// The region (main made it; a child inherited it), with main's
    /// liveness socket: main keeps the sender and never writes to it, a
    /// child watches the receiver.
    #[cfg(target_os = "linux")]
    SharedMemory { region: Arc<Region>, alive: Alive },
    /// A byte channel each way.
    IpcChannel {
        tx: ipc_channel::ipc::IpcBytesSender,
        rx: ipc::Receiver,
    },
}

/// The liveness socket beside a shared-memory link.
#[cfg(target_os = "linux")]
pub(crate) enum Alive {
    /// Main's end.
    Sender(ipc_channel::ipc::IpcBytesSender),
    /// A child's end.
    Receiver(ipc::Receiver),
}

/// Which way a link's end reads and writes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Main,
    Child,
}

/// A link end: what it reads and writes with, and (main's, over shared
/// memory) the liveness sender it keeps until it closes.
pub(crate) struct End {
    pub(crate) reader: Reader,
    pub(crate) writer: Writer,
    pub(crate) alive: Option<ipc_channel::ipc::IpcBytesSender>,
    /// A child's liveness receiver, for its watching thread.
    #[cfg(target_os = "linux")]
    pub(crate) watch: Option<(ipc::Receiver, Arc<Region>)>,
}

impl Ends {
    /// This link's kind.
    pub(crate) fn kind(&self) -> LinkKind {
        match self {
            #[cfg(target_os = "linux")]
            Ends::SharedMemory { .. } => LinkKind::SharedMemory,
            Ends::IpcChannel { .. } => LinkKind::IpcChannel,
        }
    }

    /// The reader and writer of `side`, taking messages of at most `limit`
    /// bytes.
    pub(crate) fn open(self, side: Side, limit: usize) -> End {
        match self {
            #[cfg(target_os = "linux")]
            Ends::SharedMemory { region, alive } => {
                use crate::pipe::Way;
                let (read, write) = match side {
                    Side::Main => (Way::Up, Way::Down),
                    Side::Child => (Way::Down, Way::Up),
                };
                let reader = Reader::SharedMemory(region.reader(read, limit));
                let writer = Writer::SharedMemory(region.writer(write));
                let (alive, watch) = match alive {
                    Alive::Sender(s) => (Some(s), None),
                    Alive::Receiver(r) => (None, Some((r, region))),
                };
                End {
                    reader,
                    writer,
                    alive,
                    watch,
                }
            }
            Ends::IpcChannel { tx, rx } => {
                // Each side holds its own channel's two ends: no way to pick.
                let _ = side;
                let carrier = Arc::new(ipc::Carrier::default());
                End {
                    reader: Reader::IpcChannel(ipc::Reader::new(rx, carrier.clone(), limit)),
                    writer: Writer::IpcChannel(ipc::Writer::new(tx, carrier)),
                    alive: None,
                    #[cfg(target_os = "linux")]
                    watch: None,
                }
            }
        }
    }
}

/// Why main refuses a hello of the other kind.
const WRONG_KIND: &str = "a hello for another kind of link than main made";

/// Where main answers a child's hello.
type Answer = IpcSender<Welcome>;

/// Main's half of a child's link, made before the child is spawned.
pub(crate) enum Made {
    /// The region, sealed; the child inherits its file.
    #[cfg(target_os = "linux")]
    SharedMemory(Arc<Region>),
    /// Nothing yet: the child brings the channels in its hello.
    IpcChannel,
}

impl Made {
    /// Makes main's half of a link of `kind`, and the memory file the child
    /// inherits, if any.
    pub(crate) fn new(kind: LinkKind) -> Result<(Made, Option<crate::supervise::Handed>)> {
        match kind.check_supported()? {
            #[cfg(target_os = "linux")]
            LinkKind::SharedMemory => {
                let (region, file) =
                    Region::create().map_err(|e| Error::os("creating the link's memory", e))?;
                Ok((Made::SharedMemory(region), Some(file)))
            }
            _ => Ok((Made::IpcChannel, None)),
        }
    }

    /// Main's ends of the link, from the child's hello; a hello for another
    /// kind of link than main made is refused with what to tell the child.
    pub(crate) fn join(
        self,
        hello: crate::wire::Hello,
    ) -> std::result::Result<(Ends, Answer), (Answer, &'static str)> {
        use crate::wire::Hello;
        match (self, hello) {
            #[cfg(target_os = "linux")]
            (Made::SharedMemory(region), Hello::Join { down, welcome, .. }) => Ok((
                Ends::SharedMemory {
                    region,
                    alive: Alive::Sender(down),
                },
                welcome,
            )),
            (
                Made::IpcChannel,
                Hello::JoinOverIpc {
                    down, up, welcome, ..
                },
            ) => Ok((Ends::IpcChannel { tx: down, rx: up }, welcome)),
            (_, Hello::Join { welcome, .. }) => Err((welcome, WRONG_KIND)),
            #[cfg(target_os = "linux")]
            (Made::SharedMemory(_), Hello::JoinOverIpc { welcome, .. }) => {
                Err((welcome, WRONG_KIND))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_holds_every_kind_once() {
        // Adding a kind breaks this match, and then this test until the
        // kind is in `ALL` where the match puts it.
        let place = |k: LinkKind| match k {
            LinkKind::SharedMemory => 0,
            LinkKind::IpcChannel => 1,
        };
        for (i, kind) in LinkKind::ALL.into_iter().enumerate() {
            assert_eq!(place(kind), i, "{kind}");
        }
    }

    #[test]
    fn link_kinds_parse_from_their_names_only() {
        for kind in [LinkKind::SharedMemory, LinkKind::IpcChannel] {
            assert_eq!(kind.name().parse::<LinkKind>().unwrap(), kind);
        }
        for bad in ["", "shm", "Shared-Memory", "ipc-channel "] {
            let e = bad.parse::<LinkKind>().unwrap_err();
            assert_eq!(e, Error::UnknownLink(bad.to_owned()));
            let said = e.to_string();
            assert!(
                said.contains("shared-memory") && said.contains("ipc-channel"),
                "{said}"
            );
        }
    }

    fn frames(lens: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for &len in lens {
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.resize(out.len() + len, 7);
        }
        out
    }

    #[test]
    fn long_runs_split_between_frames() {
        let run = frames(&[10, 10, 10]);
        assert_eq!(split_point(&run, 100), run.len(), "short: whole");
        assert_eq!(split_point(&run, 30), 28, "two frames of 14 bytes fit");
        assert_eq!(split_point(&run, 5), 14, "at least one frame");
        let big = frames(&[100]);
        assert_eq!(split_point(&big, 10), big.len(), "one frame goes whole");
        let raw = [0xffu8; 50];
        assert_eq!(split_point(&raw, 10), raw.len(), "not frames: whole");
    }
}
