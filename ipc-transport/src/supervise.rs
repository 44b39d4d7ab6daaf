//! Spawning and supervising children: one long-lived thread forks every
//! child (so `PR_SET_PDEATHSIG` ties children to main, not to a passing
//! thread), one watcher thread per child waits for it to exit and applies
//! its restart policy.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use yuki_channel::{BOOTSTRAP_ENV, PeerId};

use crate::error::{Error, Result};
use crate::main_side::{Hub, Link, read, write};
use crate::pipe::Region;
use crate::rendezvous::{Arrival, Rendezvous};
use crate::wire::{self, Control, Hello, Welcome};

/// When a child that exited is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never: an exit is final.
    #[default]
    Never,
    /// When it exits with a failure (a non-zero status or a signal).
    OnFailure,
    /// Whenever it exits, unless it was stopped.
    Always,
}

/// Restart settings of one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart {
    /// When to restart.
    pub policy: RestartPolicy,
    /// The wait before the first restart; doubled for each next one.
    pub backoff: Duration,
    /// The longest wait between restarts.
    pub max_backoff: Duration,
    /// How many restarts are allowed before the supervisor gives up.
    pub budget: u32,
}

impl Default for Restart {
    fn default() -> Restart {
        Restart {
            policy: RestartPolicy::Never,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            budget: 5,
        }
    }
}

impl Restart {
    fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// How a child ended for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The status of its last run.
    pub status: ExitStatus,
    /// How many times it was restarted by its policy.
    pub restarts: u32,
    /// Whether the supervisor gave up after the restart budget ran out.
    pub gave_up: bool,
}

/// A moment in a child's life, reported to the hooks of
/// [`Node::on_lifecycle`](crate::Node::on_lifecycle) on a main thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// The child is about to be stopped (by `stop`, `kill` or its own request).
    Stopping {
        /// Its name.
        name: String,
        /// Its current peer id.
        peer: PeerId,
    },
    /// The child is about to be started again.
    Restarting {
        /// Its name.
        name: String,
        /// Which restart this is by policy (0 for a requested restart).
        attempt: u32,
        /// The back-off before it starts.
        delay: Duration,
    },
    /// The child's process exited.
    Exited {
        /// Its name.
        name: String,
        /// The peer id it had.
        peer: PeerId,
        /// How it exited.
        status: ExitStatus,
    },
    /// The restart budget ran out; the child stays down.
    GaveUp {
        /// Its name.
        name: String,
        /// How many restarts it had.
        restarts: u32,
    },
}

/// A hook run at each [`Lifecycle`] moment.
pub(crate) type LifecycleHook = Arc<dyn Fn(&Lifecycle) + Send + Sync>;

type Job = Box<dyn FnOnce() + Send>;

/// Drops the children that ended for good and that no handle holds any
/// more, so that spawning and stopping children of ever new names leaves
/// main's table as it was.
fn prune(children: &mut HashMap<String, Arc<ChildShared>>) {
    children.retain(|_, c| c.handles.load(Ordering::Acquire) > 0 || c.lock().finished.is_none());
}

/// Main's supervisor: forks children on its own thread and tracks them.
pub(crate) struct Supervisor {
    pub(crate) hub: Arc<Hub>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) stop_timeout: Duration,
    forker: Mutex<Option<Sender<Job>>>,
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
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        std::thread::Builder::new()
            .name("yuki-supervisor".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map_err(|e| Error::os("starting the supervisor thread", e))?;
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
            forker: Mutex::new(Some(tx)),
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

    /// Runs `spawn` on the supervisor thread and returns its result.
    fn fork(&self, cmd: &Arc<Mutex<Command>>) -> Result<Child> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let cmd = cmd.clone();
        let job: Job = Box::new(move || {
            let r = lock(&cmd).spawn();
            let _ = tx.send(r);
        });
        let sent = lock(&self.forker).as_ref().map(|f| f.send(job).is_ok());
        if sent != Some(true) {
            return Err(Error::os("spawning a child", "the node is shutting down"));
        }
        rx.recv()
            .map_err(|_| Error::os("spawning a child", "the supervisor thread ended"))?
            .map_err(|e| Error::os("spawning a child", e))
    }

    pub(crate) fn spawn(
        self: &Arc<Self>,
        name: &str,
        cmd: Command,
        restart: Restart,
        death_signal: Option<i32>,
    ) -> Result<ChildHandle> {
        let shared = {
            let mut children = lock(&self.children);
            prune(&mut children);
            if let Some(c) = children.get(name) {
                if c.lock().finished.is_none() {
                    return Err(Error::NameTaken(name.to_owned()));
                }
            }
            let inherit = Arc::new(AtomicI32::new(-1));
            let shared = Arc::new(ChildShared {
                name: name.to_owned(),
                sup: Arc::downgrade(self),
                cmd: Arc::new(Mutex::new(prepare(cmd, death_signal, inherit.clone()))),
                inherit,
                handles: AtomicUsize::new(0),
                restart,
                state: Mutex::default(),
                changed: Condvar::new(),
            });
            children.insert(name.to_owned(), shared.clone());
            shared
        };
        if let Err(e) = shared.start(self) {
            lock(&self.children).remove(name);
            let mut st = shared.lock();
            if st.finished.is_none() {
                st.stopping = true;
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
            c.lock().stopping = true;
            c.changed.notify_all();
            c.signal(libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &children {
            c.wait_until(deadline, |st| {
                st.finished.is_some() || (!st.running && !st.starting)
            });
        }
        self.hub.close_all("main is shutting down");
        lock(&self.forker).take();
        lock(&self.watchdog).take();
    }
}

/// Sets what every start of this command needs: the link's memory file
/// (whose descriptor `inherit` holds at each fork) stays open across exec,
/// and the parent-death signal.
fn prepare(mut cmd: Command, death_signal: Option<i32>, inherit: Arc<AtomicI32>) -> Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (an atomic load, fcntl) run
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = inherit.load(Ordering::Relaxed);
            if fd >= 0 && libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    #[cfg(target_os = "linux")]
    if let Some(sig) = death_signal {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) run
        // between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died before the signal was armed.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = death_signal;
    cmd
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct ChildState {
    pid: u32,
    peer: PeerId,
    /// Counts starts; a watcher only acts for its own start.
    generation: u64,
    /// The process of this generation exists (maybe as an unreaped zombie).
    running: bool,
    /// It exited but may not be reaped yet: its pid is still ours.
    exited: bool,
    /// A start is waiting for the handshake; it handles an early exit itself.
    starting: bool,
    stopping: bool,
    restart_requested: bool,
    /// Why the last start after an exit failed, for the restart that
    /// asked for it.
    start_failed: Option<Error>,
    restarts: u32,
    last: Option<ExitStatus>,
    finished: Option<Exit>,
    link: Option<Arc<Link>>,
}

impl Default for ChildState {
    fn default() -> ChildState {
        ChildState {
            pid: 0,
            peer: PeerId::MAIN,
            generation: 0,
            running: false,
            exited: false,
            starting: false,
            stopping: false,
            restart_requested: false,
            start_failed: None,
            restarts: 0,
            last: None,
            finished: None,
            link: None,
        }
    }
}

pub(crate) struct ChildShared {
    name: String,
    sup: Weak<Supervisor>,
    cmd: Arc<Mutex<Command>>,
    /// The descriptor of the link's memory file the next fork hands down.
    inherit: Arc<AtomicI32>,
    /// How many [`ChildHandle`]s hold it.
    handles: AtomicUsize,
    restart: Restart,
    state: Mutex<ChildState>,
    changed: Condvar,
}

impl ChildShared {
    fn lock(&self) -> MutexGuard<'_, ChildState> {
        lock(&self.state)
    }

    fn signal(&self, sig: i32) {
        let st = self.lock();
        if st.running && !st.exited {
            // SAFETY: kill(2) has no memory effects; the pid is unreaped, so ours.
            unsafe { libc::kill(st.pid as libc::pid_t, sig) };
        }
    }

    fn wait_until(&self, deadline: Instant, done: impl Fn(&ChildState) -> bool) -> bool {
        let mut st = self.lock();
        while !done(&st) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Starts one run: fork, handshake, link. On failure the process is gone.
    fn start(self: &Arc<Self>, sup: &Arc<Supervisor>) -> Result<()> {
        // Main makes the link's memory and seals its size before the child
        // exists: the child inherits it, and never hands main memory to map.
        let (region, file) =
            Region::create().map_err(|e| Error::os("creating the link's memory", e))?;
        let rendezvous = Rendezvous::open(file.as_raw_fd())?;
        lock(&self.cmd).env(BOOTSTRAP_ENV, rendezvous.bootstrap.encode());
        self.inherit.store(file.as_raw_fd(), Ordering::Relaxed);
        let token = rendezvous.bootstrap.token.clone();
        let (exit_tx, exit_rx) = crossbeam_channel::bounded(1);
        let generation = {
            // Marked before the fork so a concurrent stop sees a start in progress.
            let mut st = self.lock();
            st.starting = true;
            st.generation += 1;
            st.generation
        };
        let forked = sup.fork(&self.cmd);
        self.inherit.store(-1, Ordering::Relaxed);
        drop(file);
        let child = match forked {
            Ok(c) => c,
            Err(e) => {
                self.lock().starting = false;
                self.changed.notify_all();
                return Err(e);
            }
        };
        let pid = child.id();
        {
            let mut st = self.lock();
            st.pid = pid;
            st.running = true;
            st.exited = false;
        }
        let watcher = self.clone();
        if let Err(e) = std::thread::Builder::new()
            .name(format!("yuki-watch-{pid}"))
            .spawn(move || watcher.watch(child, generation, exit_tx))
        {
            // No watcher: nobody would reap it, so do not let it run.
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            self.lock().starting = false;
            return Err(Error::os("starting the watcher thread", e));
        }

        let name = self.name.clone();
        // Any process of this user may connect first: one with a wrong
        // token or another pid is refused, and main waits on for the child.
        let admit = |presented: &str, their_pid: u32| {
            if !wire::same_token(presented, &token) {
                Err((
                    "wrong token",
                    "a process presented a wrong token".to_owned(),
                ))
            } else if their_pid != pid {
                Err((
                    "not the spawned process",
                    format!(
                        "process {their_pid} tried to join in place of the spawned child {pid}"
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let on_exit = |status: ExitStatus| Error::ExitedEarly {
            name,
            status: status.to_string(),
        };
        let arrival = rendezvous.wait(sup.handshake_timeout, &exit_rx, on_exit, admit);
        let result = match arrival {
            Arrival::Joined(Hello::Join { down, welcome, .. }) => {
                let peer = sup.hub.next_peer();
                // Before the welcome: a stop or restart the child asks for
                // the moment it joins finds it by this id.
                self.lock().peer = peer;
                let accepted = Welcome::Accepted {
                    peer: peer.0,
                    name: self.name.clone(),
                    max_frame: sup.hub.max_frame as u64,
                };
                match welcome.send(accepted) {
                    Err(e) => Err(Error::os("answering the handshake", format!("{e:?}"))),
                    Ok(()) => {
                        let weak = Arc::downgrade(self);
                        let kill = Box::new(move || {
                            if let Some(c) = weak.upgrade() {
                                c.signal(libc::SIGKILL);
                            }
                        });
                        sup.hub
                            .attach(peer, &self.name, region, down, Some(kill))
                            .map_err(Error::from)
                    }
                }
            }
            // No hello at all: the child never connected.
            Arrival::Failed(Error::HandshakeTimeout(waited)) => Err(Error::NeverConnected {
                name: self.name.clone(),
                pid,
                waited,
            }),
            Arrival::Failed(e) => Err(e),
        };

        match result {
            Ok(link) => {
                let (exited_meanwhile, asked_to_go) = {
                    let mut st = self.lock();
                    st.starting = false;
                    st.peer = link.peer;
                    st.link = Some(link.clone());
                    (!st.running, st.stopping || st.restart_requested)
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
                self.signal(libc::SIGKILL);
                // The watcher reaps it; wait for that so no process is left.
                let _ = exit_rx.recv_timeout(Duration::from_secs(5));
                self.wait_until(Instant::now() + Duration::from_secs(5), |st| !st.running);
                self.lock().starting = false;
                self.changed.notify_all();
                Err(e)
            }
        }
    }

    /// Waits for one run to exit, reaps it, then applies the policy.
    fn watch(self: Arc<Self>, mut child: Child, generation: u64, exit_tx: Sender<ExitStatus>) {
        wait_exited_keep_zombie(child.id());
        {
            let mut st = self.lock();
            if st.generation == generation {
                st.exited = true;
            }
        }
        let status = match child.wait() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(child = %self.name, error = %e, "cannot reap child");
                return;
            }
        };
        let starting = {
            let mut st = self.lock();
            st.running = false;
            st.last = Some(status);
            st.starting
        };
        self.changed.notify_all();
        let _ = exit_tx.try_send(status);
        if !starting {
            self.after_exit();
        }
    }

    /// Reports an exit and restarts the child if its policy says so.
    fn after_exit(self: Arc<Self>) {
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
            let delay = {
                let mut st = self.lock();
                if st.stopping {
                    drop(st);
                    return self.finish(false);
                }
                if st.restart_requested {
                    st.restart_requested = false;
                    Duration::ZERO
                } else {
                    let wanted = match self.restart.policy {
                        RestartPolicy::Never => false,
                        RestartPolicy::OnFailure => !status.success(),
                        RestartPolicy::Always => true,
                    };
                    if !wanted {
                        drop(st);
                        return self.finish(false);
                    }
                    if st.restarts >= self.restart.budget {
                        let restarts = st.restarts;
                        drop(st);
                        tracing::warn!(child = %self.name, restarts, "restart budget spent; giving up");
                        sup.emit(&Lifecycle::GaveUp {
                            name: self.name.clone(),
                            restarts,
                        });
                        return self.finish(true);
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
                    delay
                }
            };
            // The back-off ends early if the child is stopped meanwhile.
            self.wait_until(Instant::now() + delay, |st| st.stopping);
            if self.lock().stopping {
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

    fn finish(&self, gave_up: bool) {
        let mut st = self.lock();
        if st.finished.is_none() {
            if let Some(status) = st.last {
                st.finished = Some(Exit {
                    status,
                    restarts: st.restarts,
                    gave_up,
                });
            }
        }
        let ended = st.finished.is_some();
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

/// Blocks until `pid` has exited, without reaping it (so its pid stays ours
/// and signals cannot reach a stranger).
fn wait_exited_keep_zombie(pid: u32) {
    loop {
        // SAFETY: waitid writes only into `info`, which we own.
        let r = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Main's handle on one supervised child (cheap to clone).
pub struct ChildHandle {
    shared: Arc<ChildShared>,
}

impl ChildHandle {
    fn new(shared: Arc<ChildShared>) -> ChildHandle {
        shared.handles.fetch_add(1, Ordering::Relaxed);
        ChildHandle { shared }
    }
}

impl Clone for ChildHandle {
    fn clone(&self) -> ChildHandle {
        ChildHandle::new(self.shared.clone())
    }
}

impl Drop for ChildHandle {
    fn drop(&mut self) {
        // The last handle of an ended child lets the table forget it now,
        // whichever internal thread still holds it for a moment.
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(sup) = self.shared.sup.upgrade() {
                prune(&mut lock(&sup.children));
            }
        }
    }
}

/// How long [`ChildHandle::kill`] waits for a killed child's exit.
const KILL_WAIT: Duration = Duration::from_secs(60);

impl ChildHandle {
    /// The name it was spawned with.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The process id of its current (or last) run.
    pub fn pid(&self) -> u32 {
        self.shared.lock().pid
    }

    /// Its peer id on the transport for its current (or last) run; a
    /// restarted child joins with a new id.
    pub fn id(&self) -> PeerId {
        self.shared.lock().peer
    }

    /// How many times its policy restarted it.
    pub fn restarts(&self) -> u32 {
        self.shared.lock().restarts
    }

    fn sup(&self) -> Result<Arc<Supervisor>> {
        self.shared
            .sup
            .upgrade()
            .ok_or_else(|| Error::NotRunning(self.shared.name.clone()))
    }

    /// Stops it for good: asks it over its link (its
    /// [`Node::wait_for_stop`](crate::Node::wait_for_stop) returns and its
    /// `on_stop` hooks run), waits up to `timeout` (the grace period) for
    /// its program to return from `main`, then sends SIGTERM, waits
    /// `timeout` again, then SIGKILL. Runs the [`Lifecycle::Stopping`]
    /// hooks first. See [Stopping](crate::Node#stopping).
    pub fn stop(&self, timeout: Duration) -> Result<Exit> {
        let sup = self.sup()?;
        let (link, peer) = {
            let mut st = self.shared.lock();
            if let Some(done) = st.finished {
                return Ok(done);
            }
            st.stopping = true;
            (st.link.clone(), st.peer)
        };
        self.shared.changed.notify_all();
        sup.emit(&Lifecycle::Stopping {
            name: self.shared.name.clone(),
            peer,
        });
        if let Some(link) = link {
            link.send_control(Control::Shutdown);
        }
        for (signal, wait) in [
            (None, timeout),
            (Some(libc::SIGTERM), timeout),
            (Some(libc::SIGKILL), Duration::from_secs(5)),
        ] {
            if let Some(s) = signal {
                self.shared.signal(s);
            }
            if let Ok(exit) = self.wait_timeout(wait) {
                return Ok(exit);
            }
        }
        Err(Error::Transport(yuki_channel::Error::Timeout(timeout)))
    }

    /// Kills it at once with SIGKILL, for good, and waits for its exit.
    ///
    /// SIGKILL cannot be caught or ignored, so the child always exits; how
    /// soon depends only on the kernel scheduling it, which on a loaded
    /// machine can take seconds. `kill` therefore waits until the exit has
    /// been reaped, for up to a minute: a bound only against a process stuck
    /// in an uninterruptible kernel wait (a hung disk or network file
    /// system), after which it returns [`Error::Transport`] with a time-out and
    /// the exit is still reaped later ([`ChildHandle::wait`] sees it).
    pub fn kill(&self) -> Result<Exit> {
        {
            let mut st = self.shared.lock();
            if let Some(done) = st.finished {
                return Ok(done);
            }
            st.stopping = true;
        }
        self.shared.changed.notify_all();
        self.shared.signal(libc::SIGKILL);
        self.wait_timeout(KILL_WAIT)
    }

    /// Stops it (as [`ChildHandle::stop`], with the node's
    /// [`stop_timeout`](crate::NodeBuilder::stop_timeout) as the grace
    /// period) and starts it again at once; returns when the new run has
    /// joined, or with the new run's own error when it could not start
    /// (such as [`Error::ExitedEarly`] or [`Error::NeverConnected`]). See
    /// [Stopping](crate::Node#stopping).
    pub fn restart(&self) -> Result<()> {
        let sup = self.sup()?;
        let (link, generation) = {
            let mut st = self.shared.lock();
            if st.finished.is_some() || st.stopping {
                return Err(Error::NotRunning(self.shared.name.clone()));
            }
            st.restart_requested = true;
            st.start_failed = None;
            (st.link.clone(), st.generation)
        };
        sup.emit(&Lifecycle::Restarting {
            name: self.shared.name.clone(),
            attempt: 0,
            delay: Duration::ZERO,
        });
        if let Some(link) = link {
            link.send_control(Control::Shutdown);
        }
        let gone = |st: &ChildState| st.generation > generation || !st.running;
        let timeout = sup.stop_timeout;
        for signal in [None, Some(libc::SIGTERM), Some(libc::SIGKILL)] {
            if let Some(s) = signal {
                self.shared.signal(s);
            }
            if self.shared.wait_until(Instant::now() + timeout, gone) {
                break;
            }
        }
        let up = |st: &ChildState| {
            st.finished.is_some()
                || st.start_failed.is_some()
                || (st.generation > generation && !st.starting && st.running)
        };
        let deadline = Instant::now() + timeout + sup.handshake_timeout;
        let joined = self.shared.wait_until(deadline, up);
        // The new run's own failure (it exited early, never connected...)
        // says more than the time-out or the end that followed it.
        if let Some(e) = self.shared.lock().start_failed.take() {
            return Err(e);
        }
        if !joined {
            return Err(Error::HandshakeTimeout(sup.handshake_timeout));
        }
        if self.shared.lock().finished.is_some() {
            return Err(Error::NotRunning(self.shared.name.clone()));
        }
        Ok(())
    }

    /// Waits until it has ended for good (stopped, or not restarted), and
    /// says how: the same shape as [`ChildHandle::stop`] and
    /// [`ChildHandle::kill`].
    ///
    /// ```no_run
    /// # use yuki_ipc_transport::Node;
    /// # let node = Node::init()?;
    /// let exe = std::env::current_exe().unwrap();
    /// let child = node.spawn("worker", std::process::Command::new(exe))?;
    /// let exit = child.wait()?;
    /// println!("worker ended: {}", exit.status);
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn wait(&self) -> Result<Exit> {
        loop {
            match self.wait_timeout(Duration::from_secs(3600)) {
                Err(Error::Transport(yuki_channel::Error::Timeout(_))) => {}
                other => return other,
            }
        }
    }

    /// Like [`ChildHandle::wait`], giving up after `timeout` with
    /// [`Error::Transport`] holding a time-out, as `stop` does.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Exit> {
        self.shared
            .wait_until(Instant::now() + timeout, |st| st.finished.is_some());
        self.try_wait()
            .ok_or(Error::Transport(yuki_channel::Error::Timeout(timeout)))
    }

    /// How it ended, if it has ended for good.
    pub fn try_wait(&self) -> Option<Exit> {
        self.shared.lock().finished
    }

    /// Whether its process is running now.
    pub fn is_running(&self) -> bool {
        let st = self.shared.lock();
        st.running && !st.exited
    }
}

impl fmt::Debug for ChildHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("ChildHandle")
            .field("name", &self.shared.name)
            .field("pid", &st.pid)
            .field("peer", &st.peer)
            .field("running", &st.running)
            .field("finished", &st.finished)
            .finish()
    }
}
