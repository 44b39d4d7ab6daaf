//! A child's side of the wire: every operation is a call to main, except
//! `get` and `contains` while main shares its table (`mirror.rs`): those
//! read it in place, and ask main only when the table cannot tell.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use yuki_channel::sync;

use yuki_channel::{PeerEvent, PeerId, Transport, codec};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::mirror::Reader;
use crate::protocol::{Op, Pushed, Reply, Request, SERVICE, WATCH_STREAM};
use crate::watch::{Change, Watch, WatchQueue};

/// The child's end: the transport to main and the watches open here.
pub(crate) struct Remote {
    transport: Arc<dyn Transport>,
    watches: Mutex<HashMap<u64, Arc<WatchQueue>>>,
    next_watch: AtomicU64,
    watch_capacity: usize,
    /// Main's shared table, when it shares one.
    shared: Option<Reader>,
}

impl Remote {
    pub(crate) fn new(transport: Arc<dyn Transport>, watch_capacity: usize) -> Result<Arc<Remote>> {
        let remote = Arc::new(Remote {
            transport: transport.clone(),
            watches: Mutex::default(),
            next_watch: AtomicU64::new(1),
            watch_capacity,
            shared: Reader::new(transport.shared_region()),
        });
        let weak = Arc::downgrade(&remote);
        transport.on_push(
            WATCH_STREAM,
            Arc::new(move |frame: &[u8]| {
                if let Some(remote) = weak.upgrade() {
                    remote.pushed(frame);
                }
            }),
        )?;
        let weak: Weak<Remote> = Arc::downgrade(&remote);
        transport.on_peer_event(Arc::new(move |event: &PeerEvent| {
            if let PeerEvent::Left { peer, reason } = event {
                if *peer == PeerId::MAIN {
                    if let Some(remote) = weak.upgrade() {
                        remote.main_left(reason);
                    }
                }
            }
        }));
        Ok(remote)
    }

    /// Whether reads go to the shared table now.
    pub(crate) fn shares_reads(&self) -> bool {
        self.shared.as_ref().is_some_and(Reader::is_open)
    }

    /// Answers `request` from the shared table if it is a read the table
    /// can answer now; otherwise hands `read` back, for a call to main.
    #[inline]
    fn read_shared<R, P>(&self, request: &Request<'_>, read: P) -> std::result::Result<Result<R>, P>
    where
        P: FnOnce(Reply<'_>) -> Result<R>,
    {
        let Some(shared) = &self.shared else {
            return Err(read);
        };
        let mut read = Some(read);
        let answered = match request {
            Request::Op(Op::Get(key)) => shared.read(key, |value| {
                let read = read.take().expect("read once");
                read(Reply::Value(value.map(serde_bytes::Bytes::new)))
            }),
            Request::Op(Op::Contains(key)) => shared.read(key, |value| {
                let read = read.take().expect("read once");
                read(Reply::Bool(value.is_some()))
            }),
            _ => None,
        };
        match (answered, read) {
            (Some(answered), _) => Ok(answered),
            (None, Some(read)) => Err(read),
            (None, None) => unreachable!("a read is used only when the table answers"),
        }
    }

    fn watches(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<WatchQueue>>> {
        sync::lock(&self.watches)
    }

    /// A change (or the end of a watch) pushed by main.
    fn pushed(&self, frame: &[u8]) {
        match codec::decode_borrowed::<Pushed<'_>>(frame) {
            Ok(Pushed::Change { id, key, value }) => {
                let inbox = self.watches().get(&id).cloned();
                if let Some(inbox) = inbox {
                    inbox.deliver(Change {
                        key: key.to_owned(),
                        value: value.map(|v| v.to_vec()),
                    });
                }
            }
            Ok(Pushed::Lagged { id }) => {
                if let Some(inbox) = self.watches().get(&id) {
                    inbox.close(Error::WatchLagged);
                }
            }
            Err(e) => tracing::warn!(error = %e, "dropping a malformed change notification"),
        }
    }

    fn main_left(&self, reason: &str) {
        for (_, inbox) in self.watches().drain() {
            inbox.close(Error::Disconnected(reason.to_owned()));
        }
    }

    fn encode(request: &Request<'_>) -> Result<Vec<u8>> {
        // Most requests are a key and a small value: one allocation, no regrowth.
        let mut frame = Vec::with_capacity(128);
        codec::encode_into(request, &mut frame).map_err(|e| Error::Protocol(e.to_string()))?;
        Ok(frame)
    }

    /// Sends `request` and hands main's reply to `parse`, waiting at most
    /// `timeout` (the transport's call time-out if `None`).
    fn request<R>(
        &self,
        request: &Request<'_>,
        timeout: Option<Duration>,
        parse: impl FnOnce(Reply<'_>) -> Result<R>,
    ) -> Result<R> {
        let frame = Remote::encode(request)?;
        let timeout = timeout.unwrap_or_else(|| self.transport.call_timeout());
        let reply = self
            .transport
            .call_within(SERVICE, &frame, timeout)
            .map_err(|e| name_timeout(e, request))?;
        parse(decode_reply(&reply)?)
    }

    /// The async form of [`Remote::request`]: the request leaves at once.
    fn request_async<R, P>(
        &self,
        request: &Request<'_>,
        timeout: Option<Duration>,
        parse: P,
    ) -> impl Future<Output = Result<R>> + Send + 'static + use<R, P>
    where
        R: 'static,
        P: FnOnce(Reply<'_>) -> Result<R> + Send + 'static,
    {
        let timeout = timeout.unwrap_or_else(|| self.transport.call_timeout());
        let operation = request.describe();
        let sent = Remote::encode(request)
            .map(|frame| self.transport.call_async_within(SERVICE, &frame, timeout));
        async move {
            let reply = sent?.await.map_err(|e| match e {
                yuki_channel::Error::CallTimeout { after, .. } => {
                    Error::CallTimeout { operation, after }
                }
                other => other.into(),
            })?;
            parse(decode_reply(&reply)?)
        }
    }

    /// Opens a watch: registered here first, so no pushed change is missed.
    fn start_watch(self: &Arc<Self>, prefix: &str, timeout: Option<Duration>) -> Result<Watch> {
        let (id, watch) = self.open_watch();
        match self.request(&Request::Watch { id, prefix }, timeout, expect_done) {
            Ok(()) => Ok(watch),
            Err(e) => Err(self.watch_failed(id, e)),
        }
    }

    /// The async form of [`Remote::start_watch`].
    async fn start_watch_async(
        self: &Arc<Self>,
        prefix: &str,
        timeout: Option<Duration>,
    ) -> Result<Watch> {
        let (id, watch) = self.open_watch();
        match self
            .request_async(&Request::Watch { id, prefix }, timeout, expect_done)
            .await
        {
            Ok(()) => Ok(watch),
            Err(e) => Err(self.watch_failed(id, e)),
        }
    }

    /// Forgets watch `id`, which failed to open with `e`; a watch main did
    /// not confirm in time may still be opened there, so it is closed
    /// there too (the close follows the open on the link).
    fn watch_failed(&self, id: u64, e: Error) -> Error {
        self.watches().remove(&id);
        if matches!(e, Error::CallTimeout { .. }) {
            if let Ok(frame) = Remote::encode(&Request::Unwatch { id }) {
                self.transport.call_with(SERVICE, &frame, Box::new(|_| {}));
            }
        }
        e
    }

    fn open_watch(self: &Arc<Self>) -> (u64, Watch) {
        let id = self.next_watch.fetch_add(1, Ordering::Relaxed);
        let (inbox, rx) = WatchQueue::new(self.watch_capacity);
        self.watches().insert(id, inbox.clone());
        let weak = Arc::downgrade(self);
        let cancel = Box::new(move || {
            if let Some(remote) = weak.upgrade() {
                remote.watches().remove(&id);
                // Nobody waits for the answer; a gone main needs no unwatch.
                if let Ok(frame) = Remote::encode(&Request::Unwatch { id }) {
                    remote
                        .transport
                        .call_with(SERVICE, &frame, Box::new(|_| {}));
                }
            }
        });
        (id, Watch::new(inbox, rx, cancel))
    }
}

impl Backend for Arc<Remote> {
    #[inline]
    fn execute<R>(
        &self,
        request: Request<'_>,
        timeout: Option<Duration>,
        read: impl FnOnce(Reply<'_>) -> Result<R>,
    ) -> Result<R> {
        match self.read_shared(&request, read) {
            Ok(answered) => answered,
            Err(read) => self.request(&request, timeout, read),
        }
    }

    fn execute_async<R, P>(
        &self,
        request: Request<'_>,
        timeout: Option<Duration>,
        read: P,
    ) -> impl Future<Output = Result<R>> + Send + 'static
    where
        R: Send + 'static,
        P: FnOnce(Reply<'_>) -> Result<R> + Send + 'static,
    {
        let answer = match self.read_shared(&request, read) {
            Ok(answered) => Ok(answered),
            Err(read) => Err(self.request_async(&request, timeout, read)),
        };
        async move {
            match answer {
                Ok(answered) => answered,
                Err(call) => call.await,
            }
        }
    }

    fn watch(&self, prefix: &str, timeout: Option<Duration>) -> Result<Watch> {
        self.start_watch(prefix, timeout)
    }

    fn watch_async(
        &self,
        prefix: &str,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Watch>> + Send {
        self.start_watch_async(prefix, timeout)
    }
}

/// The transport's error, a time-out naming the store operation.
fn name_timeout(e: yuki_channel::Error, request: &Request<'_>) -> Error {
    match e {
        yuki_channel::Error::CallTimeout { after, .. } => Error::CallTimeout {
            operation: request.describe(),
            after,
        },
        other => other.into(),
    }
}

/// Decodes main's reply; a failure main reports becomes its [`Error`].
pub(crate) fn decode_reply(bytes: &[u8]) -> Result<Reply<'_>> {
    match codec::decode_borrowed::<Reply<'_>>(bytes) {
        Ok(Reply::Failed(f)) => Err(f.into()),
        Ok(reply) => Ok(reply),
        Err(e) => Err(Error::Protocol(e.to_string())),
    }
}

pub(crate) fn expect_done(reply: Reply<'_>) -> Result<()> {
    match reply {
        Reply::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn unexpected(reply: &Reply<'_>) -> Error {
    Error::Protocol(format!("unexpected reply {reply:?}"))
}
