//! A child's side of its link: calls in flight matched to replies by id,
//! and one reader thread that completes them and delivers pushes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use ipc_channel::ipc::{IpcBytesReceiver, IpcBytesSender};
use yuki_channel::codec::{self, Frames};
use yuki_channel::{Error, PeerEvent, PeerEventHandler, PeerId, PushHandler, ReplyHandler, Result};

use crate::main_side::read;
use crate::outbound::{Outbound, Refused};
use crate::wire::{self, Control, Failure, Frame};

/// What a child does when its link to main closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenMainGone {
    /// Fail pending calls, tell the peer-event handlers, then exit the process
    /// (status 0 when main asked it to shut down, 1 when main vanished).
    Exit,
    /// Fail pending calls and tell the peer-event handlers; the program
    /// decides what to do.
    Stay,
}

/// Where a blocking caller waits for its reply.
#[derive(Default)]
struct Slot {
    reply: Mutex<Option<Result<Vec<u8>>>>,
    ready: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Result<Vec<u8>>>> {
        self.reply.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fill(&self, r: Result<Vec<u8>>) {
        *self.lock() = Some(r);
        self.ready.notify_one();
    }

    fn wait(&self) -> Result<Vec<u8>> {
        let mut g = self.lock();
        loop {
            if let Some(r) = g.take() {
                return r;
            }
            g = self.ready.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

thread_local! {
    /// One slot per thread: a thread has at most one blocking call in flight.
    static SLOT: RefCell<Option<Arc<Slot>>> = const { RefCell::new(None) };
}

enum Waiter {
    Blocking(Arc<Slot>),
    Callback(ReplyHandler),
}

impl Waiter {
    fn complete(self, r: Result<Vec<u8>>) {
        match self {
            Waiter::Blocking(slot) => slot.fill(r),
            Waiter::Callback(done) => done(r),
        }
    }
}

#[derive(Default)]
struct Pending {
    calls: HashMap<u64, Waiter>,
    /// Set once main is gone: why.
    gone: Option<String>,
}

/// A child's link to main.
pub(crate) struct ChildLink {
    pub(crate) peer: PeerId,
    pub(crate) name: String,
    pub(crate) max_frame: usize,
    out: Outbound,
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    pub(crate) push: RwLock<HashMap<String, Vec<PushHandler>>>,
    pub(crate) events: RwLock<Vec<PeerEventHandler>>,
    when_gone: WhenMainGone,
}

impl ChildLink {
    pub(crate) fn start(
        peer: PeerId,
        name: String,
        max_frame: usize,
        up: IpcBytesSender,
        down: IpcBytesReceiver,
        when_gone: WhenMainGone,
    ) -> std::io::Result<Arc<ChildLink>> {
        let link = Arc::new(ChildLink {
            peer,
            name,
            max_frame,
            out: Outbound::new(up),
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            push: RwLock::default(),
            events: RwLock::default(),
            when_gone,
        });
        let writer = link.clone();
        std::thread::Builder::new()
            .name("yuki-out".into())
            .spawn(move || writer.out.run_writer())?;
        let reader = link.clone();
        std::thread::Builder::new()
            .name("yuki-link".into())
            .spawn(move || reader.read_loop(&down))?;
        Ok(link)
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `waiter` and queues the request; returns the id, or hands
    /// the waiter back with the error.
    fn enqueue(
        &self,
        service: &str,
        request: &[u8],
        waiter: Waiter,
    ) -> Result<u64, (Waiter, Error)> {
        if let Err(e) = codec::check_frame(request.len(), self.max_frame) {
            return Err((waiter, e));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut p = self.pending();
            if let Some(why) = &p.gone {
                return Err((waiter, Error::disconnected(why)));
            }
            p.calls.insert(id, waiter);
        }
        let frame = Frame::Call {
            id,
            service,
            body: request,
        };
        let queued = self.out.append(usize::MAX, |buf| wire::put(buf, &frame));
        let err = match queued {
            Ok(Ok(())) => return Ok(id),
            Ok(Err(e)) => e,
            Err(Refused::Closed | Refused::Full) => {
                Error::disconnected("the link to main is closed")
            }
        };
        match self.pending().calls.remove(&id) {
            Some(w) => Err((w, err)),
            // The reader failed it already; the waiter has its answer.
            None => Ok(id),
        }
    }

    pub(crate) fn call(&self, service: &str, request: &[u8]) -> Result<Vec<u8>> {
        let slot = SLOT.with(|s| s.borrow_mut().get_or_insert_with(Arc::default).clone());
        match self.enqueue(service, request, Waiter::Blocking(slot.clone())) {
            Ok(_) => {}
            Err((_, e)) => return Err(e),
        }
        if self.out.flush().is_err() {
            self.main_gone("the link to main closed".into(), false);
        }
        slot.wait()
    }

    pub(crate) fn call_with(&self, service: &str, request: &[u8], done: ReplyHandler) {
        match self.enqueue(service, request, Waiter::Callback(done)) {
            Ok(_) => self.out.kick(),
            Err((w, e)) => w.complete(Err(e)),
        }
    }

    pub(crate) fn send_control(&self, control: Control) -> Result<()> {
        if let Some(why) = &self.pending().gone {
            return Err(Error::disconnected(why));
        }
        match self
            .out
            .append(usize::MAX, |buf| wire::put(buf, &Frame::Control(control)))
        {
            Ok(r) => r?,
            Err(_) => return Err(Error::disconnected("the link to main is closed")),
        }
        self.out
            .flush()
            .map_err(|()| Error::disconnected("the link to main is closed"))
    }

    pub(crate) fn send_raw(&self, message: &[u8]) -> Result<()> {
        self.out
            .append(usize::MAX, |buf| buf.extend_from_slice(message))
            .map_err(|_| Error::disconnected("the link to main is closed"))?;
        self.out
            .flush()
            .map_err(|()| Error::disconnected("the link to main is closed"))
    }

    fn read_loop(&self, down: &IpcBytesReceiver) {
        loop {
            let message = match down.recv() {
                Ok(m) => m,
                Err(e) => return self.main_gone(format!("main is gone ({e:?})"), false),
            };
            for frame in Frames::new(&message) {
                let frame = match frame.and_then(|f| wire::parse(f, self.max_frame)) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(reason = %e, "malformed frame from main; closing the link");
                        return self.main_gone(format!("main sent a malformed frame: {e}"), false);
                    }
                };
                match frame {
                    Frame::Reply { id, body } => {
                        if let Some(w) = self.pending().calls.remove(&id) {
                            w.complete(Ok(body.to_vec()));
                        }
                    }
                    Frame::Failed { id, failure } => {
                        let e = match failure {
                            Failure::NoService(s) => Error::NoService(s.to_owned()),
                            Failure::Other(why) => Error::Remote(why.to_owned()),
                        };
                        if let Some(w) = self.pending().calls.remove(&id) {
                            w.complete(Err(e));
                        }
                    }
                    Frame::Push { stream, body } => {
                        let handlers = read(&self.push).get(stream).cloned().unwrap_or_default();
                        for h in handlers {
                            h(body);
                        }
                    }
                    Frame::Control(Control::Shutdown) => {
                        return self.main_gone("main asked this child to shut down".into(), true);
                    }
                    other => {
                        tracing::warn!(frame = ?other, "main sent a frame only children send; closing the link");
                        return self.main_gone("main broke the protocol".into(), false);
                    }
                }
            }
        }
    }

    /// Fails every call, tells the handlers, and exits unless told to stay.
    fn main_gone(&self, reason: String, asked: bool) {
        let calls = {
            let mut p = self.pending();
            if p.gone.is_some() {
                return;
            }
            p.gone = Some(reason.clone());
            std::mem::take(&mut p.calls)
        };
        self.out.close();
        for (_, w) in calls {
            w.complete(Err(Error::disconnected(&reason)));
        }
        let event = PeerEvent::Left {
            peer: PeerId::MAIN,
            reason: reason.clone(),
        };
        let handlers = read(&self.events).clone();
        for h in handlers {
            h(&event);
        }
        if self.when_gone == WhenMainGone::Exit {
            tracing::info!(%reason, "link to main closed; exiting");
            std::process::exit(if asked { 0 } else { 1 });
        }
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.pending().gone.is_some()
    }
}
