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

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipc_channel::ipc::IpcBytesSender;

use crate::pipe::{Region, Writer};

/// Buffers larger than this are not kept for reuse after a send.
const KEEP_CAPACITY: usize = 1 << 20;

pub(crate) struct Outbound {
    state: Mutex<State>,
    /// Wakes the writer thread.
    wake: Condvar,
    tx: Mutex<Option<Tx>>,
    /// Closed with the link, which wakes a send stuck on a full pipe.
    region: Arc<Region>,
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
            region: tx.pipe.region().clone(),
            tx: Mutex::new(Some(tx)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut st = self.lock();
        if st.closed {
            return Err(Refused::Closed);
        }
        if st.buf.len() >= limit {
            return Err(Refused::Full);
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
        if st.buf.len() > inline_max {
            drop(st);
            self.kick();
            return Ok(());
        }
        self.send_locked(st, false)
    }

    /// Sends what is buffered on this thread, unless another thread is
    /// sending (it will take it). Fails when the other side is gone.
    pub(crate) fn flush(&self) -> Result<(), ()> {
        let st = self.lock();
        self.send_locked(st, true)
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
            drop(st);
            let sent = match &mut *self.tx.lock().unwrap_or_else(|p| p.into_inner()) {
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
        let sending = st.sending;
        drop(st);
        self.region.close();
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
                st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                st.writer_idle = false;
            }
            if st.closed {
                drop(st);
                break;
            }
            drop(st);
            if self.flush().is_err() {
                break;
            }
            st = self.lock();
        }
        // Whoever ends last drops the sender.
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
