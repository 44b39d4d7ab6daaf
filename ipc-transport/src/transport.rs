//! [`IpcTransport`]: the [`Transport`] seam over shared memory links.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use yuki_channel::{
    DropHandler, Error, Extensions, PeerEventHandler, PeerId, PushHandler, ReplyHandler, Result,
    Role, Service, SharedRegion, Transport,
};

use crate::child_side::ChildLink;
use crate::main_side::Hub;
use yuki_channel::sync::write;

/// The transport of one process over ipc: main's hub of links, or a
/// child's link to main. Obtain it from [`Node::transport`](crate::Node::transport).
pub struct IpcTransport {
    side: Side,
    extensions: Extensions,
    /// The deadline of main's own calls that name none.
    call_timeout: Duration,
    /// The store's region (`store_region.rs`), when shared reads are on.
    shared_region: Option<Arc<SharedRegion>>,
}

pub(crate) enum Side {
    Main(Arc<Hub>),
    Child(Arc<ChildLink>),
}

impl IpcTransport {
    pub(crate) fn new(side: Side, call_timeout: Duration) -> IpcTransport {
        IpcTransport {
            side,
            extensions: Extensions::default(),
            call_timeout,
            shared_region: None,
        }
    }

    /// This transport, handing `region` to the store.
    #[cfg(target_os = "linux")]
    pub(crate) fn with_shared_region(mut self, region: Option<Arc<SharedRegion>>) -> IpcTransport {
        self.shared_region = region;
        self
    }

    /// See [`Node::pending_calls`](crate::Node::pending_calls).
    pub(crate) fn pending_calls(&self) -> usize {
        match &self.side {
            Side::Main(_) => 0,
            Side::Child(link) => link.pending_calls(),
        }
    }

    pub(crate) fn side(&self) -> &Side {
        &self.side
    }
}

fn main_only(operation: &'static str) -> Error {
    Error::WrongRole {
        operation,
        needed: Role::Main,
    }
}

impl Transport for IpcTransport {
    fn role(&self) -> Role {
        match self.side {
            Side::Main(_) => Role::Main,
            Side::Child(_) => Role::Child,
        }
    }

    fn peer_id(&self) -> PeerId {
        match &self.side {
            Side::Main(_) => PeerId::MAIN,
            Side::Child(link) => link.peer,
        }
    }

    fn max_frame(&self) -> usize {
        match &self.side {
            Side::Main(hub) => hub.max_frame,
            Side::Child(link) => link.max_frame,
        }
    }

    fn call(&self, service: &str, request: &[u8]) -> Result<Vec<u8>> {
        self.call_within(service, request, self.call_timeout())
    }

    fn call_with(&self, service: &str, request: &[u8], done: ReplyHandler) {
        self.call_with_within(service, request, self.call_timeout(), done);
    }

    fn call_timeout(&self) -> Duration {
        match &self.side {
            Side::Child(link) => link.call_timeout,
            Side::Main(_) => self.call_timeout,
        }
    }

    fn call_within(&self, service: &str, request: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        match &self.side {
            Side::Child(link) => link.call(service, request, timeout),
            Side::Main(hub) => {
                yuki_channel::codec::check_frame(request.len(), hub.max_frame)?;
                let svc = hub
                    .service(service)
                    .ok_or_else(|| Error::NoService(service.to_owned()))?;
                let start = Instant::now();
                let mut reply = Vec::new();
                svc.call(PeerId::MAIN, request, &mut reply).map_err(|e| {
                    Error::Remote(format!("service {service:?} refused its request: {e}"))
                })?;
                // The service ran here and cannot be interrupted: a reply
                // past the deadline is dropped, as it would be from afar.
                if start.elapsed() > timeout {
                    return Err(Error::call_timeout(service, timeout));
                }
                yuki_channel::codec::check_frame(reply.len(), hub.max_frame)?;
                Ok(reply)
            }
        }
    }

    fn call_with_within(
        &self,
        service: &str,
        request: &[u8],
        timeout: Duration,
        done: ReplyHandler,
    ) {
        match &self.side {
            Side::Child(link) => link.call_with(service, request, timeout, done),
            Side::Main(_) => done(self.call_within(service, request, timeout)),
        }
    }

    fn serve(&self, name: &str, service: Arc<dyn Service>) -> Result<()> {
        match &self.side {
            Side::Main(hub) => hub.serve(name, service),
            Side::Child(_) => Err(main_only("serving a service")),
        }
    }

    fn push(&self, to: PeerId, stream: &str, frame: &[u8]) -> Result<()> {
        match &self.side {
            Side::Main(hub) => hub.push(to, stream, frame),
            Side::Child(_) => Err(main_only("pushing to a peer")),
        }
    }

    fn on_push(&self, stream: &str, handler: PushHandler) -> Result<()> {
        let push = match &self.side {
            Side::Main(hub) => &hub.push,
            Side::Child(link) => &link.push,
        };
        let mut push = write(push);
        let entry = push
            .entry(stream.to_owned())
            .or_insert_with(|| Arc::new([]));
        *entry = entry.iter().cloned().chain([handler]).collect();
        Ok(())
    }

    fn on_push_dropped(&self, stream: &str, handler: DropHandler) -> Result<()> {
        match &self.side {
            Side::Main(hub) => {
                hub.on_push_dropped(stream, handler);
                Ok(())
            }
            Side::Child(_) => Err(main_only("handling dropped pushes")),
        }
    }

    fn on_peer_event(&self, handler: PeerEventHandler) {
        let events = match &self.side {
            Side::Main(hub) => &hub.events,
            Side::Child(link) => &link.events,
        };
        write(events).push(handler);
    }

    fn peers(&self) -> Vec<PeerId> {
        match &self.side {
            Side::Main(hub) => hub.peers(),
            Side::Child(_) => Vec::new(),
        }
    }

    fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    fn shared_region(&self) -> Option<Arc<SharedRegion>> {
        self.shared_region.clone()
    }
}

impl fmt::Debug for IpcTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("IpcTransport");
        match &self.side {
            Side::Main(hub) => d
                .field("role", &Role::Main)
                .field("children", &hub.peers().len()),
            Side::Child(link) => d
                .field("role", &Role::Child)
                .field("peer", &link.peer)
                .field("name", &link.name),
        };
        d.finish_non_exhaustive()
    }
}
