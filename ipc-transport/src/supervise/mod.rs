//! Spawning and supervising children: one long-lived thread forks every
//! child ([`forker`]), each child's runs follow one state machine
//! ([`phase`]) driven by [`child`], a forked child is admitted by its
//! handshake ([`admission`]), and main holds a [`ChildHandle`] on it.

mod admission;
mod child;
mod forker;
mod handle;
mod os;
mod phase;
mod policy;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use yuki_channel::PeerId;

use crate::error::{Error, Result};
use crate::main_side::Hub;
use crate::wire::Control;
use child::ChildShared;
use forker::Forker;
use phase::{Event, Phase};
use yuki_channel::sync::{lock, read, write};

pub use handle::ChildHandle;
pub(crate) use os::{DEFAULT_DEATH_SIGNAL, Handed};
pub(crate) use policy::LifecycleHook;

use crate::link::LinkKind;
pub use policy::{Exit, Lifecycle, Restart, RestartPolicy};

/// Drops the children that ended for good and that no handle holds any
/// more, so that spawning and stopping children of ever new names leaves
/// main's table as it was.
fn prune(children: &mut HashMap<String, Arc<ChildShared>>) {
    children.retain(|_, c| {
        c.handles.load(std::sync::atomic::Ordering::Acquire) > 0
            || c.lock().life.finished().is_none()
    });
}

/// Main's supervisor: forks children on its own thread and tracks them.
pub(crate) struct Supervisor {
    pub(crate) hub: Arc<Hub>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) stop_timeout: Duration,
    forker: Forker,
    watchdog: Mutex<Option<Sender<()>>>,
    children: Mutex<HashMap<String, Arc<ChildShared>>>,
    hooks: RwLock<Vec<LifecycleHook>>,
}

impl Supervisor {
    pub(crate) fn start(
        hub: Arc<Hub>,
        handshake_timeout: Duration,
        stop_timeout: Duration,
        stall_timeout: Duration,
    ) -> Result<Arc<Supervisor>> {
        let forker = Forker::start()?;
        // The watchdog looks for children that stopped reading; it ends
        // when the node shuts down and drops `watchdog`.
        let (watchdog, stop) = crossbeam_channel::bounded::<()>(0);
        let watched = hub.clone();
        let period = (stall_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        std::thread::Builder::new()
            .name("yuki-watchdog".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stop.recv_timeout(period)
                {
                    watched.cut_stalled(stall_timeout);
                }
            })
            .map_err(|e| Error::os("starting the watchdog thread", e))?;
        let sup = Arc::new(Supervisor {
            hub,
            handshake_timeout,
            stop_timeout,
            forker,
            watchdog: Mutex::new(Some(watchdog)),
            children: Mutex::default(),
            hooks: RwLock::default(),
        });
        let weak = Arc::downgrade(&sup);
        *write(&sup.hub.control) = Some(Arc::new(move |peer, control| {
            if let Some(sup) = weak.upgrade() {
                sup.on_request(peer, control);
            }
        }));
        Ok(sup)
    }

    pub(crate) fn on_lifecycle(&self, hook: LifecycleHook) {
        write(&self.hooks).push(hook);
    }

    fn emit(&self, event: &Lifecycle) {
        let hooks = read(&self.hooks).clone();
        for h in hooks {
            h(event);
        }
    }

    pub(crate) fn spawn(
        self: &Arc<Self>,
        name: &str,
        cmd: Command,
        restart: Restart,
        death_signal: Option<i32>,
        link: LinkKind,
    ) -> Result<ChildHandle> {
        os::check_death_signal(death_signal, os::DEATH_SIGNAL_SUPPORTED)?;
        let shared = {
            let mut children = lock(&self.children);
            prune(&mut children);
            if let Some(c) = children.get(name) {
                if c.lock().life.finished().is_none() {
                    return Err(Error::NameTaken(name.to_owned()));
                }
            }
            let shared = Arc::new(ChildShared::new(
                name,
                Arc::downgrade(self),
                cmd,
                restart,
                death_signal,
                link,
            ));
            children.insert(name.to_owned(), shared.clone());
            shared
        };
        if let Err(e) = shared.start(self) {
            lock(&self.children).remove(name);
            let mut st = shared.lock();
            if st.life.finished().is_none() {
                st.on(Event::StopAsked);
            }
            return Err(e);
        }
        Ok(ChildHandle::new(shared))
    }

    pub(crate) fn children(&self) -> Vec<ChildHandle> {
        let mut children = lock(&self.children);
        prune(&mut children);
        let mut v: Vec<_> = children.values().cloned().map(ChildHandle::new).collect();
        drop(children);
        v.sort_by(|a, b| a.shared.name.cmp(&b.shared.name));
        v
    }

    /// A child asked to be stopped or restarted: do it off the link thread.
    fn on_request(&self, peer: PeerId, control: Control) {
        let child = lock(&self.children)
            .values()
            .find(|c| c.lock().peer == peer)
            .cloned();
        let Some(child) = child else { return };
        let handle = ChildHandle::new(child);
        let timeout = self.stop_timeout;
        let _ = std::thread::Builder::new()
            .name("yuki-request".into())
            .spawn(move || match control {
                Control::Stop => {
                    let _ = handle.stop(timeout);
                }
                Control::Restart => {
                    if let Err(e) = handle.restart() {
                        tracing::warn!(child = %handle.name(), error = %e, "requested restart failed");
                    }
                }
                Control::Shutdown => {}
            });
    }

    /// Kills every child and waits for them (main is going away).
    pub(crate) fn shutdown(&self) {
        let children: Vec<_> = lock(&self.children).values().cloned().collect();
        for c in &children {
            {
                let mut st = c.lock();
                if st.life.finished().is_none() {
                    st.on(Event::StopAsked);
                }
            }
            c.changed.notify_all();
            c.force(os::Force::Kill);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &children {
            c.wait_until(deadline, |st| {
                matches!(st.life.phase, Phase::Finished(_) | Phase::Idle)
            });
        }
        self.hub.close_all("main is shutting down");
        self.forker.close();
        lock(&self.watchdog).take();
    }
}
