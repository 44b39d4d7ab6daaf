//! The outgoing half of a link: a buffer many threads append frames to,
//! sent as one message down the link's pipe by whoever finds it non-empty.
//!
//! At most one thread sends at a time. A thread that appends while another
//! sends does not wait: the sender loops and takes what was appended, so
//! frames queued during a send leave together in the next message. Callers
//! that want the lowest latency send inline ([`Outbound::flush`], or
//! [`Outbound::send_or_kick`] for a thread that must not be held up by a
//! large backlog); callers that must never block (pushes, pipelined calls)
//! leave the send to the link's writer thread ([`Outbound::kick`]).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use yuki_channel::sync;

use ipc_channel::ipc::IpcBytesSender;

use crate::link::{Carrier, Writer};

/// Buffers larger than this are not kept for reuse after a send.
const KEEP_CAPACITY: usize = 1 << 20;

pub(crate) struct Outbound {
    state: Mutex<State>,
    /// Wakes the writer thread.
    wake: Condvar,
    tx: Mutex<Option<Tx>>,
    /// Closed with the link, which wakes a send stuck on a full pipe.
    carrier: Carrier,
}

/// What a link end sends with.
pub(crate) struct Tx {
    pipe: Writer,
    /// Main's: never written to; the child watches its receiving end, which
    /// fails when this is dropped or main ends.
    _alive: Option<IpcBytesSender>,
}

impl Tx {
    pub(crate) fn new(pipe: Writer, alive: Option<IpcBytesSender>) -> Tx {
        Tx {
            pipe,
            _alive: alive,
        }
    }
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    spare: Vec<u8>,
    sending: bool,
    /// When the send in progress started.
    send_started: Option<Instant>,
    writer_idle: bool,
    closed: bool,
    /// How many bytes at the front of `buf` are known to hold no frame
    /// that may be dropped: shedding starts after them, so a buffer full
    /// of frames that must stay is not scanned again on every append.
    keep: usize,
}

/// Why an append was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The link is closed.
    Closed,
    /// The buffer already holds more than the limit.
    Full,
}

impl Outbound {
    pub(crate) fn new(tx: Tx) -> Outbound {
        Outbound {
            state: Mutex::default(),
            wake: Condvar::new(),
            carrier: tx.pipe.carrier(),
            tx: Mutex::new(Some(tx)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        sync::lock(&self.state)
    }

    /// Appends with `write`, unless the buffer already holds `limit` bytes.
    pub(crate) fn append<R>(
        &self,
        limit: usize,
        write: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> Result<R, Refused> {
        self.append_then(limit, false, write)
    }

    /// Like [`Outbound::append`], and with `kick` also asks the writer
    /// thread to send (under the same lock).
    pub(crate) fn append_then<R>(
        &self,
        limit: usize,
        kick: bool,
        write: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> Result<R, Refused> {
        self.append_or_shed(limit, kick, |_, _| false, write)
    }

    /// Like [`Outbound::append_then`], but when the buffer holds `limit`
    /// bytes or more, `full` gets it first (under the lock) to drop what it
    /// may (see [`shed_oldest`], whose `keep` it is given), and says
    /// whether the new frame goes in even if the buffer is still that full.
    pub(crate) fn append_or_shed<R>(
        &self,
        limit: usize,
        kick: bool,
        full: impl FnOnce(&mut Vec<u8>, &mut usize) -> bool,
        write: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> Result<R, Refused> {
        let mut st = self.lock();
        if st.closed {
            return Err(Refused::Closed);
        }
        if st.buf.len() >= limit {
            let st = &mut *st;
            if !full(&mut st.buf, &mut st.keep) && st.buf.len() >= limit {
                return Err(Refused::Full);
            }
        }
        let r = write(&mut st.buf);
        if kick && st.writer_idle && !st.sending && !st.buf.is_empty() {
            // One wake-up per idle spell: the pushes that follow before
            // the writer runs join its next message without a futex call.
            st.writer_idle = false;
            self.wake.notify_one();
        }
        Ok(r)
    }

    /// Sends what is buffered on this thread when that is cheap and safe:
    /// nothing else is being sent and the buffer holds at most `inline_max`
    /// bytes (a reply or two, which a reading child's pipe takes at
    /// once). Anything larger, or queued behind a send in progress, is left
    /// to the writer thread, so a child that does not read stalls the
    /// writer, never the caller. Fails when the other side is gone.
    pub(crate) fn send_or_kick(&self, inline_max: usize) -> Result<(), ()> {
        let st = self.lock();
        if st.sending || st.buf.is_empty() {
            return Ok(());
        }
        if st.closed {
            return Err(());
        }
        if st.buf.len() > inline_max || self.carrier.may_block(st.buf.len()) {
            drop(st);
            self.kick();
            return Ok(());
        }
        self.send_locked(st, false)
    }

    /// Sends what is buffered on this thread, unless another thread is
    /// sending (it will take it). Fails when the other side is gone.
    ///
    /// A send the carrier may not take at once (see [`Carrier::may_block`])
    /// is left to the writer thread instead: a caller blocked in a send
    /// could not keep its call's deadline.
    pub(crate) fn flush(&self) -> Result<(), ()> {
        let st = self.lock();
        if !st.buf.is_empty() && self.carrier.may_block(st.buf.len()) {
            if st.closed {
                return Err(());
            }
            drop(st);
            self.kick();
            return Ok(());
        }
        self.send_locked(st, true)
    }

    /// The other side has read what this side sent (see
    /// [`Carrier::answered`]).
    pub(crate) fn answered(&self) {
        self.carrier.answered();
    }

    /// Sends the buffer; with `repeat`, again while more was appended
    /// meanwhile, else that is left to the writer thread.
    fn send_locked<'a>(&'a self, mut st: MutexGuard<'a, State>, repeat: bool) -> Result<(), ()> {
        loop {
            // Nothing left to send is success, even if the link closed
            // since: what was ours went out (close() drops what did not).
            if st.sending || st.buf.is_empty() {
                return Ok(());
            }
            if st.closed {
                return Err(());
            }
            st.sending = true;
            st.send_started = Some(Instant::now());
            let spare = std::mem::take(&mut st.spare);
            let mut data = std::mem::replace(&mut st.buf, spare);
            st.keep = 0;
            drop(st);
            let sent = match &mut *sync::lock(&self.tx) {
                Some(tx) => tx.pipe.send(&data).is_ok(),
                None => false,
            };
            data.clear();
            st = self.lock();
            st.sending = false;
            st.send_started = None;
            if data.capacity() <= KEEP_CAPACITY {
                st.spare = data;
            }
            if !sent {
                st.closed = true;
                drop(st);
                self.close();
                return Err(());
            }
            if !repeat {
                let more = !st.buf.is_empty();
                drop(st);
                if more {
                    self.kick();
                }
                return Ok(());
            }
        }
    }

    /// Sends `bytes` as one message of the carrier, without its envelope,
    /// after what is buffered (fault injection).
    #[cfg(feature = "fault-injection")]
    pub(crate) fn send_unwrapped(&self, bytes: &[u8]) -> Result<(), ()> {
        self.flush()?;
        match &mut *sync::lock(&self.tx) {
            Some(tx) => tx.pipe.send_unwrapped(bytes).map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Drops the sending end, leaving the link otherwise open (fault
    /// injection: the other side sees this side's sender close).
    #[cfg(feature = "fault-injection")]
    pub(crate) fn drop_sender(&self) {
        sync::lock(&self.tx).take();
    }

    /// How long the send in progress has been blocked, if one is: a
    /// long time means the other side does not read.
    pub(crate) fn stuck_for(&self) -> Option<Duration> {
        self.lock().send_started.map(|t| t.elapsed())
    }

    /// Asks the writer thread to send what is buffered.
    pub(crate) fn kick(&self) {
        let mut st = self.lock();
        if st.writer_idle && !st.sending && !st.buf.is_empty() {
            // One wake-up is enough: later kicks before the writer runs
            // would each cost a futex call for nothing.
            st.writer_idle = false;
            self.wake.notify_one();
        }
    }

    /// Closes the link: later appends fail, the writer thread ends, both
    /// sides' pipes close, and the sender is dropped so the other side
    /// sees the link close.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.buf = Vec::new();
        st.keep = 0;
        let sending = st.sending;
        drop(st);
        self.carrier.close();
        self.wake.notify_all();
        if !sending {
            // A sender in progress holds `tx`; it drops it when it sees `closed`.
            if let Ok(mut tx) = self.tx.try_lock() {
                tx.take();
            }
        }
    }

    /// The writer thread's body: sends whatever others append, until closed.
    pub(crate) fn run_writer(&self) {
        let mut st = self.lock();
        loop {
            while !st.closed && (st.buf.is_empty() || st.sending) {
                st.writer_idle = true;
                st = sync::wait(&self.wake, st);
                st.writer_idle = false;
            }
            if st.closed {
                drop(st);
                break;
            }
            // This thread may wait on the carrier: no `flush`, which
            // would hand the send back to it.
            if self.send_locked(st, true).is_err() {
                break;
            }
            st = self.lock();
        }
        // Whoever ends last drops the sender.
        sync::lock(&self.tx).take();
    }
}

/// Drops the oldest frames of `buf` that `lossy` accepts (given a frame
/// without its length prefix) until `buf` holds at most `target` bytes or
/// none is left to drop, keeping the others in order. The dropped frames
/// are appended to `dropped`, each with its length prefix.
///
/// The first `keep` bytes are known to hold only frames that stay and are
/// not looked at; on return `keep` covers every frame found to stay.
/// Dropping down to a target below the limit, not just one frame, lets
/// the appends that follow go in without moving the buffer again.
pub(crate) fn shed_oldest(
    buf: &mut Vec<u8>,
    keep: &mut usize,
    target: usize,
    mut lossy: impl FnMut(&[u8]) -> bool,
    dropped: &mut Vec<u8>,
) {
    let mut excess = buf.len().saturating_sub(target);
    let (mut read, mut kept) = ((*keep).min(buf.len()), (*keep).min(buf.len()));
    while excess > 0 && read + 4 <= buf.len() {
        let mut len = [0; 4];
        len.copy_from_slice(&buf[read..read + 4]);
        let end = (read + 4)
            .saturating_add(u32::from_le_bytes(len) as usize)
            .min(buf.len());
        if lossy(&buf[read + 4..end]) {
            dropped.extend_from_slice(&buf[read..end]);
            excess = excess.saturating_sub(end - read);
        } else {
            if kept != read {
                buf.copy_within(read..end, kept);
            }
            kept += end - read;
        }
        read = end;
    }
    *keep = kept;
    if read > kept {
        buf.copy_within(read.., kept);
        buf.truncate(buf.len() - (read - kept));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    #[test]
    fn shedding_drops_the_oldest_lossy_frames_and_keeps_the_rest_in_order() {
        let lossy = |f: &[u8]| f.first() == Some(&b'p');
        let mut buf = frames(&[b"p1", b"r1", b"p2", b"p3", b"r2", b"p4"]);
        let (mut dropped, mut keep) = (Vec::new(), 0);
        // Down to 3 frames of 6 bytes: p1, p2 and p3 go.
        shed_oldest(&mut buf, &mut keep, 18, lossy, &mut dropped);
        assert_eq!(buf, frames(&[b"r1", b"r2", b"p4"]));
        assert_eq!(dropped, frames(&[b"p1", b"p2", b"p3"]));
        assert_eq!(keep, 6, "r1 was seen to stay");
        // Under the target already: nothing moves.
        shed_oldest(&mut buf, &mut keep, 18, lossy, &mut dropped);
        assert_eq!(buf, frames(&[b"r1", b"r2", b"p4"]));
        // Only what is lossy may go, however far over the target.
        shed_oldest(&mut buf, &mut keep, 0, lossy, &mut dropped);
        assert_eq!(buf, frames(&[b"r1", b"r2"]));
        assert_eq!(dropped, frames(&[b"p1", b"p2", b"p3", b"p4"]));
        shed_oldest(&mut buf, &mut keep, 0, lossy, &mut dropped);
        assert_eq!(buf, frames(&[b"r1", b"r2"]));
        // What is known to stay is not looked at again.
        buf.extend_from_slice(&frames(&[b"p5"]));
        let mut looked = Vec::new();
        let record = |f: &[u8]| {
            looked.push(f.to_vec());
            lossy(f)
        };
        shed_oldest(&mut buf, &mut keep, 0, record, &mut dropped);
        assert_eq!(looked, [b"p5".to_vec()]);
        assert_eq!(buf, frames(&[b"r1", b"r2"]));
        let (mut empty, mut none) = (Vec::new(), 0);
        shed_oldest(&mut empty, &mut none, 0, lossy, &mut dropped);
        assert!(empty.is_empty());
    }
}
