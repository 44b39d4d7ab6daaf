//! One supervised child across its runs: starting a run (fork, then
//! admission), watching it exit, and applying its restart policy.

use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use yuki_channel::sync;

use crossbeam_channel::{Receiver, Sender};
use yuki_channel::{BOOTSTRAP_ENV, PeerId};

use super::os::{self, Force, Process};
use super::phase::{Ask, Event, Life, Phase};
use super::policy::{Exit, Lifecycle, Restart, RestartPolicy};
use super::{Supervisor, admission, prune};
use crate::error::{Error, Result};
use crate::link::{LinkKind, Made};
use crate::main_side::Link;
use crate::rendezvous::Rendezvous;
use crate::wire::Control;
use yuki_channel::sync::lock;

pub(super) struct ChildState {
    pub(super) pid: u32,
    /// Its current run, until it is reaped.
    pub(super) process: Option<Arc<Process>>,
    pub(super) peer: PeerId,
    /// Counts starts; a watcher only acts for its own start.
    pub(super) generation: u64,
    /// Its phase and what was asked of it.
    pub(super) life: Life,
    pub(super) restarts: u32,
    pub(super) last: Option<ExitStatus>,
    pub(super) link: Option<Arc<Link>>,
    /// Why the last start after an exit failed, for the restart that
    /// asked for it.
    pub(super) start_failed: Option<Error>,
}

impl Default for ChildState {
    fn default() -> ChildState {
        ChildState {
            pid: 0,
            process: None,
            peer: PeerId::MAIN,
            generation: 0,
            life: Life::default(),
            restarts: 0,
            last: None,
            link: None,
            start_failed: None,
        }
    }
}

impl ChildState {
    /// Applies `event` to its life; whether it moved (an illegal event is
    /// logged and changes nothing).
    pub(super) fn on(&mut self, event: Event) -> bool {
        match self.life.on(event) {
            Ok(()) => true,
            Err(illegal) => {
                tracing::warn!(%illegal, "supervisor ignored an event");
                false
            }
        }
    }
}

pub(crate) struct ChildShared {
    pub(super) name: String,
    pub(super) sup: Weak<Supervisor>,
    cmd: Arc<Mutex<Command>>,
    /// The descriptor of the link's memory file the next fork hands down.
    inherit: Arc<AtomicI32>,
    /// How many [`ChildHandle`](super::ChildHandle)s hold it.
    pub(super) handles: AtomicUsize,
    restart: Restart,
    /// The kind of link each run of it gets.
    link: LinkKind,
    state: Mutex<ChildState>,
    pub(super) changed: Condvar,
}

impl ChildShared {
    pub(super) fn new(
        name: &str,
        sup: Weak<Supervisor>,
        cmd: Command,
        restart: Restart,
        death_signal: Option<i32>,
        link: LinkKind,
    ) -> ChildShared {
        let inherit = Arc::new(AtomicI32::new(-1));
        ChildShared {
            name: name.to_owned(),
            sup,
            cmd: Arc::new(Mutex::new(os::prepare(cmd, death_signal, inherit.clone()))),
            inherit,
            handles: AtomicUsize::new(0),
            restart,
            link,
            state: Mutex::default(),
            changed: Condvar::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, ChildState> {
        lock(&self.state)
    }

    /// Applies `event` and wakes whoever waits for a change.
    fn on(&self, event: Event) {
        self.lock().on(event);
        self.changed.notify_all();
    }

    /// Forces its current run, if it has not exited yet (an exited run is
    /// not reaped before that is marked, so the process is still ours).
    pub(super) fn force(&self, force: Force) {
        let st = self.lock();
        if st.life.alive() {
            if let Some(process) = &st.process {
                process.force(force);
            }
        }
    }

    pub(super) fn wait_until(&self, deadline: Instant, done: impl Fn(&ChildState) -> bool) -> bool {
        let mut st = self.lock();
        while !done(&st) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = sync::wait_timeout(&self.changed, st, deadline - now).0;
        }
        true
    }

    /// Starts one run: fork, handshake, link. On failure the process is gone.
    pub(super) fn start(self: &Arc<Self>, sup: &Arc<Supervisor>) -> Result<()> {
        // Main makes the link's memory and seals its size before the child
        // exists: the child inherits it, and never hands main memory to map.
        // (Over ipc-channel, the child brings its channels in the hello.)
        let (made, file) = Made::new(self.link)?;
        let rendezvous = Rendezvous::open(file.as_ref().map(os::raw))?;
        lock(&self.cmd).env(BOOTSTRAP_ENV, rendezvous.bootstrap.encode());
        let (exit_tx, exit_rx) = crossbeam_channel::bounded(1);
        let pid = self.fork_run(sup, file, exit_tx)?;
        let admitted = admission::admit(self, sup, rendezvous, made, pid, &exit_rx);
        self.settle(admitted, &exit_rx)
    }

    /// Forks a run that inherits `file` (if any) and starts its watcher;
    /// its pid.
    fn fork_run(
        self: &Arc<Self>,
        sup: &Supervisor,
        file: Option<os::Handed>,
        exit_tx: Sender<ExitStatus>,
    ) -> Result<u32> {
        let generation = {
            // Marked before the fork so a concurrent stop sees a start in progress.
            let mut st = self.lock();
            if !st.on(Event::StartBegun) {
                return Err(Error::NotRunning(self.name.clone()));
            }
            st.generation += 1;
            st.generation
        };
        if let Some(file) = &file {
            self.inherit.store(os::raw(file), Ordering::Relaxed);
        }
        let forked = sup.forker.fork(&self.cmd);
        self.inherit.store(-1, Ordering::Relaxed);
        drop(file);
        let child = match forked {
            Ok(c) => c,
            Err(e) => {
                self.on(Event::StartFailed);
                return Err(e);
            }
        };
        let pid = child.id();
        let process = Arc::new(Process::new(child));
        {
            let mut st = self.lock();
            st.pid = pid;
            st.process = Some(process.clone());
            st.on(Event::Forked);
        }
        let watcher = self.clone();
        let watched = process.clone();
        if let Err(e) = std::thread::Builder::new()
            .name(format!("yuki-watch-{pid}"))
            .spawn(move || watcher.watch(&watched, generation, exit_tx))
        {
            // No watcher: nobody would reap it, so do not let it run.
            process.force(Force::Kill);
            process.wait_exited();
            let _ = process.reap();
            self.on(Event::StartFailed);
            return Err(Error::os("starting the watcher thread", e));
        }
        Ok(pid)
    }

    /// Ends a start with what the admission came to.
    fn settle(
        self: &Arc<Self>,
        admitted: Result<Arc<Link>>,
        exit_rx: &Receiver<ExitStatus>,
    ) -> Result<()> {
        match admitted {
            Ok(link) => {
                let (exited_meanwhile, asked_to_go) = {
                    let mut st = self.lock();
                    st.on(Event::Joined);
                    st.peer = link.peer;
                    st.link = Some(link.clone());
                    (st.life.phase == Phase::Idle, st.life.ask != Ask::Nothing)
                };
                self.changed.notify_all();
                if asked_to_go {
                    // A stop or restart came while the link was not yet
                    // stored here, so it could not send this itself.
                    link.send_control(Control::Shutdown);
                }
                if exited_meanwhile {
                    // Its watcher left the exit to us.
                    let me = self.clone();
                    let _ = std::thread::Builder::new()
                        .name("yuki-watch".into())
                        .spawn(move || me.after_exit());
                }
                Ok(())
            }
            Err(e) => {
                if matches!(e, Error::Refused(_)) {
                    // A refused child learns why and exits by itself; give it a moment.
                    let _ = exit_rx.recv_timeout(Duration::from_secs(1));
                }
                self.force(Force::Kill);
                // The watcher reaps it; wait for that so no process is left.
                let _ = exit_rx.recv_timeout(Duration::from_secs(5));
                self.wait_until(Instant::now() + Duration::from_secs(5), |st| {
                    !st.life.running()
                });
                self.on(Event::StartFailed);
                Err(e)
            }
        }
    }

    /// Waits for one run to exit, reaps it, then applies the policy.
    fn watch(self: Arc<Self>, process: &Process, generation: u64, exit_tx: Sender<ExitStatus>) {
        process.wait_exited();
        {
            let mut st = self.lock();
            if st.generation == generation {
                st.on(Event::Exited);
            }
        }
        let status = match process.reap() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(child = %self.name, error = %e, "cannot reap child");
                return;
            }
        };
        let down = {
            let mut st = self.lock();
            st.last = Some(status);
            if st.generation == generation {
                // Reaped: its handles (and any pipes the command kept) go now.
                st.process = None;
            }
            st.on(Event::Reaped);
            // A start in progress handles the exit itself.
            st.life.phase == Phase::Idle
        };
        self.changed.notify_all();
        let _ = exit_tx.try_send(status);
        if down {
            self.after_exit();
        }
    }

    /// Reports an exit and restarts the child if its policy says so.
    pub(super) fn after_exit(self: Arc<Self>) {
        let Some(sup) = self.sup.upgrade() else {
            return self.finish(false);
        };
        let (link, peer, status) = {
            let mut st = self.lock();
            (st.link.take(), st.peer, st.last)
        };
        let Some(mut status) = status else { return };
        if let Some(link) = link {
            sup.hub
                .disconnect(&link, &format!("the child process exited ({status})"));
        }
        sup.emit(&Lifecycle::Exited {
            name: self.name.clone(),
            peer,
            status,
        });
        loop {
            let Some(delay) = self.next_start(&sup, status) else {
                return;
            };
            // The back-off ends early if the child is stopped meanwhile.
            self.wait_until(Instant::now() + delay, |st| st.life.stopping());
            if self.lock().life.stopping() {
                return self.finish(false);
            }
            match self.start(&sup) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(child = %self.name, error = %e, "restart failed");
                    let mut st = self.lock();
                    if let Some(s) = st.last {
                        status = s;
                    }
                    st.start_failed = Some(e);
                    drop(st);
                    self.changed.notify_all();
                }
            }
        }
    }

    /// After a run ended with `status`: the back-off before the next start,
    /// or `None` once the child is finished (stopped, not restarted by its
    /// policy, or out of budget).
    fn next_start(&self, sup: &Supervisor, status: ExitStatus) -> Option<Duration> {
        let mut st = self.lock();
        if st.life.stopping() {
            drop(st);
            self.finish(false);
            return None;
        }
        if st.life.ask == Ask::Restart {
            st.on(Event::RestartTaken);
            return Some(Duration::ZERO);
        }
        let wanted = match self.restart.policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !status.success(),
            RestartPolicy::Always => true,
        };
        if !wanted {
            drop(st);
            self.finish(false);
            return None;
        }
        if st.restarts >= self.restart.budget {
            let restarts = st.restarts;
            drop(st);
            tracing::warn!(child = %self.name, restarts, "restart budget spent; giving up");
            sup.emit(&Lifecycle::GaveUp {
                name: self.name.clone(),
                restarts,
            });
            self.finish(true);
            return None;
        }
        let delay = self.restart.delay(st.restarts);
        st.restarts += 1;
        let attempt = st.restarts;
        drop(st);
        sup.emit(&Lifecycle::Restarting {
            name: self.name.clone(),
            attempt,
            delay,
        });
        Some(delay)
    }

    fn finish(&self, gave_up: bool) {
        let mut st = self.lock();
        if st.life.finished().is_none() {
            if let Some(status) = st.last {
                let exit = Exit {
                    status,
                    restarts: st.restarts,
                    gave_up,
                };
                st.on(Event::Finish(exit));
            }
        }
        let ended = st.life.finished().is_some();
        drop(st);
        self.changed.notify_all();
        if ended {
            // Forgotten now if no handle holds it (else when the last goes).
            if let Some(sup) = self.sup.upgrade() {
                prune(&mut lock(&sup.children));
            }
        }
    }
}
