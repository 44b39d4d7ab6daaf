//! The ipc-channel link: a byte channel each way, one ipc-channel message
//! per batch of frames.
//!
//! A message is sent with an [`IpcBytesSender`] as ipc-channel's own
//! encoding of a byte string (a varint length, then the bytes), so that the
//! receiving end can be an `IpcReceiver<ByteBuf>`: unlike a byte receiver,
//! it has a receive with a time-out (a child's call deadlines, and a
//! reader that looks at its side's close), and it hands over a buffer of
//! the message's own size rather than the 212 KB one ipc-channel receives
//! into, which must never be kept.
//!
//! Neither side trusts the other: a message that is not a well-formed byte
//! string, one over the reader's limit, or one carrying descriptors
//! ipc-channel cannot take breaks the link off with the reason. (ipc-channel
//! receives a message whole before it can be looked at: the limit bounds
//! what is kept and parsed, not what a hostile peer makes the receiver
//! read.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcBytesSender, IpcReceiver, IpcSender};
use ipc_channel::{IpcError, TryRecvError};
use serde_bytes::ByteBuf;
use yuki_channel::sync;

use super::LinkError;

/// A link's receiving end: the byte strings an [`IpcBytesSender`] sends
/// with [`Writer`]'s envelope.
pub(crate) type Receiver = IpcReceiver<ByteBuf>;

/// Batches of frames longer than this are sent as several messages, split
/// between frames: ipc-channel splits a message over about 212 KB itself,
/// over a new socket each time, which costs far more.
pub(crate) const MAX_MESSAGE: usize = 192 << 10;

/// How long a reader waits before it looks at its own side's close: only
/// a close by this process (a cut) waits that long to be seen; the other
/// side's close wakes it at once.
const NAP: Duration = Duration::from_millis(100);

/// What a message costs the socket's buffer beyond its bytes (the
/// kernel's bookkeeping of one message).
const MESSAGE_OVERHEAD: usize = 1 << 10;

/// How many bytes (with [`MESSAGE_OVERHEAD`] each) may be sent and not yet
/// shown read before a send might block: well under the socket buffer of
/// about 212 KB.
const ROOM: usize = 64 << 10;

/// Scratch buffers larger than this are not kept after a send.
const KEEP_CAPACITY: usize = 1 << 20;

/// A new channel whose sending end sends raw bytes and whose receiving end
/// has a time-out. (ipc-channel makes either kind of channel, not this
/// mix: the sender goes through one message to this process to change its
/// type, as both kinds travel the same way.)
pub(crate) fn channel() -> Result<(IpcBytesSender, Receiver), String> {
    let (typed, rx) = ipc::channel::<ByteBuf>().map_err(|e| e.to_string())?;
    let (hop_tx, hop_rx) = ipc::channel::<IpcSender<ByteBuf>>().map_err(|e| e.to_string())?;
    hop_tx.send(typed).map_err(|e| format!("{e:?}"))?;
    let tx = hop_rx
        .to_opaque()
        .to::<IpcBytesSender>()
        .recv()
        .map_err(|e| format!("{e:?}"))?;
    Ok((tx, rx))
}

/// What both ends of an ipc-channel link share in one process.
#[derive(Debug, Default)]
pub(crate) struct Carrier {
    closed: AtomicBool,
    /// Bytes sent (with their overhead) since the other side last showed
    /// it reads.
    unread: AtomicUsize,
    /// Why this side cut the link, when the other broke its rules.
    broken: Mutex<Option<String>>,
}

impl Carrier {
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub(crate) fn may_block(&self, len: usize) -> bool {
        self.unread.load(Ordering::Relaxed) + len + MESSAGE_OVERHEAD > ROOM
    }

    pub(crate) fn answered(&self) {
        self.unread.store(0, Ordering::Relaxed);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn closed(&self) -> LinkError {
        match sync::lock(&self.broken).clone() {
            Some(why) => LinkError::Corrupt(why),
            None => LinkError::Closed,
        }
    }

    fn break_off(&self, why: String) -> LinkError {
        sync::lock(&self.broken).get_or_insert_with(|| why.clone());
        self.close();
        LinkError::Corrupt(why)
    }
}

/// The sending end.
pub(crate) struct Writer {
    tx: IpcBytesSender,
    carrier: Arc<Carrier>,
    /// A message with its envelope, reused.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ipc::Writer").finish_non_exhaustive()
    }
}

impl Writer {
    pub(crate) fn new(tx: IpcBytesSender, carrier: Arc<Carrier>) -> Writer {
        Writer {
            tx,
            carrier,
            scratch: Vec::new(),
        }
    }

    pub(crate) fn carrier(&self) -> &Arc<Carrier> {
        &self.carrier
    }

    /// Sends `message` as one or more messages, split between frames.
    pub(crate) fn send(&mut self, message: &[u8]) -> Result<(), LinkError> {
        let mut rest = message;
        loop {
            let (now, later) = rest.split_at(super::split_point(rest, MAX_MESSAGE));
            self.scratch.clear();
            put_len(&mut self.scratch, now.len());
            self.scratch.extend_from_slice(now);
            self.send_unwrapped_inner()?;
            rest = later;
            if rest.is_empty() {
                break;
            }
        }
        if self.scratch.capacity() > KEEP_CAPACITY {
            self.scratch = Vec::new();
        }
        Ok(())
    }

    fn send_unwrapped_inner(&mut self) -> Result<(), LinkError> {
        if self.carrier.is_closed() {
            return Err(self.carrier.closed());
        }
        // The only failure is the other end gone.
        self.tx.send(&self.scratch).map_err(|_| {
            self.carrier.close();
            LinkError::Closed
        })?;
        let cost = self.scratch.len() + MESSAGE_OVERHEAD;
        self.carrier.unread.fetch_add(cost, Ordering::Relaxed);
        Ok(())
    }

    /// Sends `bytes` as one ipc-channel message, without the envelope.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn send_unwrapped(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.scratch.clear();
        self.scratch.extend_from_slice(bytes);
        self.send_unwrapped_inner()
    }
}

/// Writes `len` as ipc-channel (postcard) writes a byte string's length:
/// seven bits a byte, low bits first.
fn put_len(out: &mut Vec<u8>, mut len: usize) {
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
}

/// The receiving end.
pub(crate) struct Reader {
    rx: Receiver,
    carrier: Arc<Carrier>,
    limit: usize,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ipc::Reader")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn new(rx: Receiver, carrier: Arc<Carrier>, limit: usize) -> Reader {
        Reader { rx, carrier, limit }
    }

    pub(crate) fn try_recv(&mut self) -> Result<Option<Vec<u8>>, LinkError> {
        if self.carrier.is_closed() {
            return Err(self.carrier.closed());
        }
        self.receive(Duration::ZERO)
    }

    pub(crate) fn recv(&mut self) -> Result<Vec<u8>, LinkError> {
        loop {
            if let Some(m) = self.recv_until(None)? {
                return Ok(m);
            }
        }
    }

    pub(crate) fn recv_until(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Vec<u8>>, LinkError> {
        loop {
            if self.carrier.is_closed() {
                return Err(self.carrier.closed());
            }
            let wait = match deadline {
                None => NAP,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(NAP),
                    _ => return Ok(None),
                },
            };
            // poll(2) counts whole milliseconds: round up, or the last
            // millisecond before a deadline would be spent polling.
            let wait = Duration::from_millis(wait.as_micros().div_ceil(1000) as u64);
            if let Some(m) = self.receive(wait)? {
                return Ok(Some(m));
            }
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.carrier.is_closed()
    }

    pub(crate) fn closed(&self) -> LinkError {
        self.carrier.closed()
    }

    /// One receive, waiting at most `wait`.
    fn receive(&mut self, wait: Duration) -> Result<Option<Vec<u8>>, LinkError> {
        // ipc-channel panics on a message carrying a descriptor it cannot
        // map: that peer broke the rules.
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.rx.try_recv_timeout(wait)
        }));
        match got {
            Ok(Ok(message)) => {
                let message = message.into_vec();
                if message.len() > self.limit {
                    return Err(self.carrier.break_off(format!(
                        "a message of {} bytes, over the limit of {}",
                        message.len(),
                        self.limit
                    )));
                }
                Ok(Some(message))
            }
            Ok(Err(TryRecvError::Empty)) => Ok(None),
            Ok(Err(TryRecvError::IpcError(IpcError::Disconnected))) => {
                // Everything sent before the close came first.
                self.carrier.close();
                Err(self.carrier.closed())
            }
            Ok(Err(TryRecvError::IpcError(IpcError::Io(e))))
                if e.kind() == std::io::ErrorKind::Interrupted =>
            {
                Ok(None)
            }
            Ok(Err(TryRecvError::IpcError(e))) => Err(self.carrier.break_off(format!(
                "a message that is not a length-prefixed byte string ({e:?})"
            ))),
            Err(_) => Err(self
                .carrier
                .break_off("a message carrying a descriptor that cannot be taken".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(limit: usize) -> (Writer, Reader) {
        let (tx, rx) = channel().unwrap();
        let carrier = Arc::new(Carrier::default());
        (
            Writer::new(tx, carrier.clone()),
            Reader::new(rx, Arc::new(Carrier::default()), limit),
        )
    }

    fn frames(lens: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            out.extend_from_slice(&(len as u32).to_le_bytes());
            out.resize(out.len() + len, i as u8);
        }
        out
    }

    #[test]
    fn messages_arrive_whole_in_order_and_of_their_own_size() {
        let (mut tx, mut rx) = pair(1 << 20);
        for len in [0, 1, 127, 128, 300, 16_383, 16_384, 60_000] {
            let m: Vec<u8> = (0..len).map(|i| i as u8).collect();
            tx.send(&m).unwrap();
            let got = rx.recv().unwrap();
            assert_eq!(got, m, "{len} bytes");
            assert!(got.capacity() < 200_000, "not ipc-channel's buffer");
        }
        assert_eq!(rx.try_recv().unwrap(), None);
    }

    #[test]
    fn a_long_run_of_frames_is_split_between_frames_and_read_back_whole() {
        let (mut tx, mut rx) = pair(1 << 20);
        let run = frames(&[100 << 10, 100 << 10, 100 << 10]);
        // The socket holds less than the run: sent while it is read.
        let sent = run.clone();
        let sender = std::thread::spawn(move || {
            tx.send(&sent).unwrap();
            tx
        });
        let mut got = Vec::new();
        while got.len() < run.len() {
            let deadline = Instant::now() + Duration::from_secs(10);
            let m = rx.recv_until(Some(deadline)).unwrap().expect("in time");
            assert!(m.len() <= MAX_MESSAGE, "{}", m.len());
            got.extend_from_slice(&m);
        }
        assert_eq!(got, run);
        drop(sender.join().unwrap());
    }

    #[test]
    fn a_deadline_ends_a_wait_and_a_closed_sender_is_closed() {
        let (tx, mut rx) = pair(1 << 20);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(30);
        assert_eq!(rx.recv_until(Some(deadline)).unwrap(), None);
        assert!(Instant::now() >= deadline);
        drop(tx);
        assert_eq!(rx.recv(), Err(LinkError::Closed));
        assert_eq!(rx.try_recv(), Err(LinkError::Closed));
    }

    #[test]
    fn closing_this_side_wakes_its_reader() {
        let (_tx, mut rx) = pair(1 << 20);
        let carrier = rx.carrier.clone();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            carrier.close();
        });
        let start = Instant::now();
        assert_eq!(rx.recv(), Err(LinkError::Closed));
        assert!(start.elapsed() < Duration::from_secs(5));
        closer.join().unwrap();
    }

    #[test]
    fn oversized_and_malformed_messages_break_the_link_off() {
        let (mut tx, mut rx) = pair(1000);
        tx.send(&[1; 1001]).unwrap();
        let e = rx.recv().unwrap_err();
        assert!(
            matches!(&e, LinkError::Corrupt(why) if why.contains("1001 bytes")),
            "{e:?}"
        );
        assert_eq!(rx.recv(), Err(e), "once broken, always broken");

        let (tx, mut rx) = pair(1000);
        // A length of 100 with three bytes after it.
        tx.tx.send(&[100, 1, 2, 3]).unwrap();
        let e = rx.recv().unwrap_err();
        assert!(matches!(&e, LinkError::Corrupt(_)), "{e:?}");
        // A length that does not end.
        let (tx, mut rx) = pair(1000);
        tx.tx.send(&[0xff; 12]).unwrap();
        assert!(matches!(rx.recv(), Err(LinkError::Corrupt(_))));
    }

    #[test]
    fn sends_not_shown_read_make_the_next_one_one_that_may_block() {
        let (mut tx, _rx) = pair(1 << 20);
        let carrier = tx.carrier.clone();
        assert!(!carrier.may_block(100));
        // Small messages fill a socket's buffer by their count as much as
        // by their bytes.
        let mut sent = 0;
        while !carrier.may_block(100) {
            tx.send(b"call").unwrap();
            sent += 1;
            assert!(sent < 100, "never counted as full");
        }
        assert!(sent >= 16, "after {sent} messages");
        carrier.answered();
        assert!(!carrier.may_block(100));
        assert!(carrier.may_block(ROOM), "one message over the room");
    }

    #[test]
    fn a_closed_writer_fails_and_a_gone_reader_fails_sends() {
        let (mut tx, rx) = pair(1000);
        drop(rx);
        assert_eq!(tx.send(b"hello"), Err(LinkError::Closed));
        let (mut tx, _rx) = pair(1000);
        tx.carrier.close();
        assert_eq!(tx.send(b"hello"), Err(LinkError::Closed));
    }
}
