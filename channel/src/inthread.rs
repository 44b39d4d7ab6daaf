//! The in-thread transport: main and its "children" are endpoints in one
//! process.
//!
//! It carries the same frames as a cross-process transport and keeps the same
//! rules (roles, frame limit, disconnection, peer events), so the store, the
//! pub/sub and the hosted channels run unchanged in one process and their
//! test suites run over it as over ipc. Calls and pushes run the receiving
//! handler directly on the sender's thread: there is nothing to wake. A
//! call's deadline cannot interrupt a service running on the caller's
//! thread, so it is checked when the service returns: a reply that came
//! too late is dropped and the call fails with [`Error::CallTimeout`], as
//! over ipc.

use crate::sync::{read, write};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::Role;
use crate::codec::{DEFAULT_MAX_FRAME, check_frame};
use crate::error::{Error, Result};
use crate::transport::{
    DEFAULT_CALL_TIMEOUT, DropHandler, Extensions, PeerEvent, PeerEventHandler, PeerId,
    PushHandler, ReplyHandler, Service, Transport,
};

/// One endpoint of an in-thread network: the main endpoint, or a child
/// connected to it with [`InThreadTransport::connect`].
///
/// ```
/// use std::sync::Arc;
/// use yuki_channel::{InThreadTransport, PeerId, Transport};
///
/// let main = InThreadTransport::main();
/// main.serve("echo", Arc::new(|_from: PeerId, req: &[u8], reply: &mut Vec<u8>| {
///     reply.extend_from_slice(req);
///     Ok(())
/// })).unwrap();
/// let child = main.connect("worker").unwrap();
/// assert_eq!(child.call("echo", b"hi").unwrap(), b"hi");
/// ```
pub struct InThreadTransport {
    hub: Arc<Hub>,
    me: Arc<Endpoint>,
}

struct Hub {
    max_frame: usize,
    services: RwLock<HashMap<String, Arc<dyn Service>>>,
    endpoints: RwLock<HashMap<PeerId, Arc<Endpoint>>>,
    next_id: AtomicU64,
}

struct Endpoint {
    id: PeerId,
    name: String,
    role: Role,
    closed: AtomicBool,
    /// The default deadline of this endpoint's calls, in nanoseconds.
    call_timeout: AtomicU64,
    push: RwLock<HashMap<String, Vec<PushHandler>>>,
    events: RwLock<Vec<PeerEventHandler>>,
    extensions: Extensions,
}

impl Endpoint {
    fn new(id: PeerId, name: &str, role: Role) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            id,
            name: name.to_owned(),
            role,
            closed: AtomicBool::new(false),
            call_timeout: AtomicU64::new(nanos(DEFAULT_CALL_TIMEOUT)),
            push: RwLock::default(),
            events: RwLock::default(),
            extensions: Extensions::default(),
        })
    }

    fn emit(&self, event: &PeerEvent) {
        let handlers = read(&self.events).clone();
        for h in handlers {
            h(event);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl InThreadTransport {
    /// Creates a new in-thread network and returns its main endpoint.
    pub fn main() -> Arc<InThreadTransport> {
        InThreadTransport::with_max_frame(DEFAULT_MAX_FRAME)
    }

    /// Like [`InThreadTransport::main`], with another frame limit.
    pub fn with_max_frame(max_frame: usize) -> Arc<InThreadTransport> {
        let me = Endpoint::new(PeerId::MAIN, "main", Role::Main);
        let hub = Arc::new(Hub {
            max_frame,
            services: RwLock::default(),
            endpoints: RwLock::new(HashMap::from([(PeerId::MAIN, me.clone())])),
            next_id: AtomicU64::new(1),
        });
        Arc::new(InThreadTransport { hub, me })
    }

    /// Connects a new child endpoint named `name` to this network; main sees
    /// [`PeerEvent::Joined`]. Fails when main has shut down.
    pub fn connect(&self, name: &str) -> Result<Arc<InThreadTransport>> {
        let main = self.main_endpoint()?;
        let id = PeerId(self.hub.next_id.fetch_add(1, Ordering::Relaxed));
        let me = Endpoint::new(id, name, Role::Child);
        write(&self.hub.endpoints).insert(id, me.clone());
        main.emit(&PeerEvent::Joined {
            peer: id,
            name: name.to_owned(),
        });
        Ok(Arc::new(InThreadTransport {
            hub: self.hub.clone(),
            me,
        }))
    }

    /// Sets the deadline of this endpoint's calls that name none (the
    /// in-thread counterpart of `NodeBuilder::call_timeout`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use yuki_channel::{InThreadTransport, Transport};
    ///
    /// let child = InThreadTransport::main().connect("c").unwrap();
    /// child.set_call_timeout(Duration::from_millis(300));
    /// assert_eq!(child.call_timeout(), Duration::from_millis(300));
    /// ```
    pub fn set_call_timeout(&self, timeout: Duration) {
        self.me
            .call_timeout
            .store(nanos(timeout), Ordering::Relaxed);
    }

    /// The name this endpoint was connected with (`"main"` for main).
    pub fn name(&self) -> &str {
        &self.me.name
    }

    /// Closes this endpoint, as if its process had exited.
    ///
    /// For a child, main sees [`PeerEvent::Left`] and later calls fail with
    /// [`Error::Disconnected`]. For main, every child sees main leave and
    /// fails every later call. Closing twice does nothing.
    pub fn disconnect(&self, reason: &str) {
        if self.me.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let removed = write(&self.hub.endpoints).remove(&self.me.id);
        if removed.is_none() {
            return;
        }
        if self.me.role.is_main() {
            let children: Vec<_> = write(&self.hub.endpoints).drain().map(|(_, e)| e).collect();
            for child in children {
                child.closed.store(true, Ordering::Release);
                child.emit(&PeerEvent::Left {
                    peer: PeerId::MAIN,
                    reason: reason.to_owned(),
                });
            }
        } else if let Ok(main) = self.main_endpoint() {
            main.emit(&PeerEvent::Left {
                peer: self.me.id,
                reason: reason.to_owned(),
            });
        }
    }

    fn main_endpoint(&self) -> Result<Arc<Endpoint>> {
        read(&self.hub.endpoints)
            .get(&PeerId::MAIN)
            .cloned()
            .ok_or_else(|| Error::disconnected("main has shut down"))
    }

    fn check_open(&self) -> Result<()> {
        if self.me.closed.load(Ordering::Acquire) {
            let who = if self.me.role.is_main() {
                "this main endpoint was shut down"
            } else {
                "this child is no longer connected to main"
            };
            return Err(Error::disconnected(who));
        }
        Ok(())
    }
}

impl Transport for InThreadTransport {
    fn role(&self) -> Role {
        self.me.role
    }

    fn peer_id(&self) -> PeerId {
        self.me.id
    }

    fn max_frame(&self) -> usize {
        self.hub.max_frame
    }

    fn call(&self, service: &str, request: &[u8]) -> Result<Vec<u8>> {
        self.call_within(service, request, self.call_timeout())
    }

    fn call_with(&self, service: &str, request: &[u8], done: ReplyHandler) {
        done(self.call(service, request));
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_nanos(self.me.call_timeout.load(Ordering::Relaxed))
    }

    fn call_within(&self, service: &str, request: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        self.check_open()?;
        check_frame(request.len(), self.hub.max_frame)?;
        let handler = read(&self.hub.services)
            .get(service)
            .cloned()
            .ok_or_else(|| Error::NoService(service.to_owned()))?;
        let start = Instant::now();
        let mut reply = Vec::new();
        let served = handler.call(self.me.id, request, &mut reply);
        if let Err(e) = served {
            if self.me.role.is_main() {
                // Main cannot be cut off from itself: it learns why.
                return Err(Error::Remote(format!(
                    "service {service:?} refused its request: {e}"
                )));
            }
            // As across processes: a peer that breaks the protocol is cut off.
            let reason = format!("malformed request to {service:?}: {e}");
            tracing::warn!(peer = %self.me.id, %reason, "disconnecting peer");
            self.disconnect(&reason);
            // The child lives on, and learns that main is gone for it.
            self.me.emit(&PeerEvent::Left {
                peer: PeerId::MAIN,
                reason: reason.clone(),
            });
            return Err(Error::Disconnected(reason));
        }
        if start.elapsed() > timeout {
            // Too late for the caller, as a reply after the deadline would be.
            return Err(Error::call_timeout(service, timeout));
        }
        check_frame(reply.len(), self.hub.max_frame)?;
        Ok(reply)
    }

    fn call_with_within(
        &self,
        service: &str,
        request: &[u8],
        timeout: Duration,
        done: ReplyHandler,
    ) {
        done(self.call_within(service, request, timeout));
    }

    fn serve(&self, name: &str, service: Arc<dyn Service>) -> Result<()> {
        if !self.me.role.is_main() {
            return Err(Error::WrongRole {
                operation: "serving a service",
                needed: Role::Main,
            });
        }
        let mut services = write(&self.hub.services);
        if services.contains_key(name) {
            return Err(Error::ServiceExists(name.to_owned()));
        }
        services.insert(name.to_owned(), service);
        Ok(())
    }

    fn push(&self, to: PeerId, stream: &str, frame: &[u8]) -> Result<()> {
        if !self.me.role.is_main() {
            return Err(Error::WrongRole {
                operation: "pushing to a peer",
                needed: Role::Main,
            });
        }
        self.check_open()?;
        check_frame(frame.len(), self.hub.max_frame)?;
        let target = read(&self.hub.endpoints)
            .get(&to)
            .cloned()
            .ok_or(Error::NoPeer(to))?;
        let handlers = read(&target.push).get(stream).cloned().unwrap_or_default();
        for h in handlers {
            h(frame);
        }
        Ok(())
    }

    fn on_push(&self, stream: &str, handler: PushHandler) -> Result<()> {
        write(&self.me.push)
            .entry(stream.to_owned())
            .or_default()
            .push(handler);
        Ok(())
    }

    /// Main only, as across processes. Nothing is ever dropped here: a
    /// push runs the peer's handlers before it returns, so no backlog
    /// builds up and `handler` is never called.
    fn on_push_dropped(&self, _stream: &str, _handler: DropHandler) -> Result<()> {
        if !self.me.role.is_main() {
            return Err(Error::WrongRole {
                operation: "handling dropped pushes",
                needed: Role::Main,
            });
        }
        Ok(())
    }

    fn on_peer_event(&self, handler: PeerEventHandler) {
        write(&self.me.events).push(handler);
    }

    fn peers(&self) -> Vec<PeerId> {
        if !self.me.role.is_main() {
            return Vec::new();
        }
        let mut peers: Vec<_> = read(&self.hub.endpoints)
            .keys()
            .copied()
            .filter(|p| *p != PeerId::MAIN)
            .collect();
        peers.sort();
        peers
    }

    fn extensions(&self) -> &Extensions {
        &self.me.extensions
    }
}

impl Drop for InThreadTransport {
    /// The last handle of a child endpoint is gone: it leaves as a process
    /// that exits does, so main hands what it held to the others.
    fn drop(&mut self) {
        if !self.me.role.is_main() {
            self.disconnect("the child endpoint was dropped");
        }
    }
}

impl fmt::Debug for InThreadTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InThreadTransport")
            .field("peer", &self.me.id)
            .field("name", &self.me.name)
            .field("role", &self.me.role)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn echo() -> Arc<dyn Service> {
        Arc::new(|from: PeerId, req: &[u8], reply: &mut Vec<u8>| {
            if req == b"bad" {
                return Err(Error::disconnected("bad request"));
            }
            reply.extend_from_slice(&from.0.to_le_bytes());
            reply.extend_from_slice(req);
            Ok(())
        })
    }

    fn recorder(t: &InThreadTransport) -> Arc<Mutex<Vec<PeerEvent>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        t.on_peer_event(Arc::new(move |e| s.lock().unwrap().push(e.clone())));
        seen
    }

    #[test]
    fn calls_reach_main_with_the_caller_id() {
        let main = InThreadTransport::main();
        main.serve("echo", echo()).unwrap();
        let child = main.connect("c").unwrap();
        let reply = child.call("echo", b"x").unwrap();
        assert_eq!(reply[..8], child.peer_id().0.to_le_bytes());
        assert_eq!(&reply[8..], b"x");
        // Main may call its own services.
        assert_eq!(main.call("echo", b"y").unwrap()[..8], [0; 8]);
        assert_eq!(
            child.call("nope", b""),
            Err(Error::NoService("nope".into()))
        );
    }

    #[test]
    fn async_calls_resolve() {
        let main = InThreadTransport::main();
        main.serve("echo", echo()).unwrap();
        let child: Arc<dyn Transport> = main.connect("c").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let reply = rt.block_on(child.call_async("echo", b"z")).unwrap();
        assert_eq!(&reply[8..], b"z");
    }

    #[test]
    fn only_main_serves_and_pushes() {
        let main = InThreadTransport::main();
        let child = main.connect("c").unwrap();
        assert!(matches!(
            child.serve("s", echo()),
            Err(Error::WrongRole { .. })
        ));
        assert!(matches!(
            child.push(PeerId::MAIN, "s", b""),
            Err(Error::WrongRole { .. })
        ));
        let never: DropHandler = Arc::new(|_, _| panic!("nothing is queued in-thread"));
        assert!(matches!(
            child.on_push_dropped("s", never.clone()),
            Err(Error::WrongRole { .. })
        ));
        main.on_push_dropped("s", never).unwrap();
        main.push(child.peer_id(), "s", b"x").unwrap();
        main.serve("s", echo()).unwrap();
        assert_eq!(
            main.serve("s", echo()),
            Err(Error::ServiceExists("s".into()))
        );
    }

    #[test]
    fn pushes_reach_only_their_peer_and_stream() {
        let main = InThreadTransport::main();
        let a = main.connect("a").unwrap();
        let b = main.connect("b").unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        for (t, tag) in [(&a, "a"), (&b, "b")] {
            let g = got.clone();
            t.on_push(
                "s",
                Arc::new(move |f| g.lock().unwrap().push((tag, f.to_vec()))),
            )
            .unwrap();
        }
        main.push(a.peer_id(), "s", b"1").unwrap();
        main.push(a.peer_id(), "other", b"2").unwrap();
        main.push(b.peer_id(), "s", b"3").unwrap();
        assert_eq!(
            *got.lock().unwrap(),
            vec![("a", b"1".to_vec()), ("b", b"3".to_vec())]
        );
        assert_eq!(main.peers(), vec![a.peer_id(), b.peer_id()]);
        assert!(a.peers().is_empty());
    }

    #[test]
    fn frames_over_the_limit_are_refused() {
        let main = InThreadTransport::with_max_frame(4);
        main.serve("echo", echo()).unwrap();
        let child = main.connect("c").unwrap();
        assert_eq!(
            child.call("echo", b"12345"),
            Err(Error::FrameTooLarge { size: 5, max: 4 })
        );
        assert!(matches!(
            main.push(child.peer_id(), "s", b"12345"),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn join_and_leave_are_reported() {
        let main = InThreadTransport::main();
        let events = recorder(&main);
        let child = main.connect("c").unwrap();
        child.disconnect("exited");
        child.disconnect("again");
        let id = child.peer_id();
        assert_eq!(
            *events.lock().unwrap(),
            vec![
                PeerEvent::Joined {
                    peer: id,
                    name: "c".into()
                },
                PeerEvent::Left {
                    peer: id,
                    reason: "exited".into()
                },
            ]
        );
        assert!(matches!(child.call("x", b""), Err(Error::Disconnected(_))));
        assert_eq!(main.push(id, "s", b""), Err(Error::NoPeer(id)));
    }

    #[test]
    fn malformed_request_disconnects_the_child() {
        let main = InThreadTransport::main();
        main.serve("echo", echo()).unwrap();
        let events = recorder(&main);
        let child = main.connect("c").unwrap();
        assert!(matches!(
            child.call("echo", b"bad"),
            Err(Error::Disconnected(_))
        ));
        assert!(matches!(
            child.call("echo", b"ok"),
            Err(Error::Disconnected(_))
        ));
        assert!(matches!(
            events.lock().unwrap().last(),
            Some(PeerEvent::Left { .. })
        ));
        // Main still serves the others.
        let other = main.connect("d").unwrap();
        assert_eq!(&other.call("echo", b"ok").unwrap()[8..], b"ok");
    }

    #[test]
    fn main_shutdown_disconnects_every_child() {
        let main = InThreadTransport::main();
        main.serve("echo", echo()).unwrap();
        let child = main.connect("c").unwrap();
        let events = recorder(&child);
        main.disconnect("main exits");
        assert_eq!(
            *events.lock().unwrap(),
            vec![PeerEvent::Left {
                peer: PeerId::MAIN,
                reason: "main exits".into()
            }]
        );
        assert!(matches!(
            child.call("echo", b"x"),
            Err(Error::Disconnected(_))
        ));
        assert!(matches!(main.connect("late"), Err(Error::Disconnected(_))));
    }
}
