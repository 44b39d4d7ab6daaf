//! [`Node`]: what a process gets from start-up, by role.

use std::fmt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use yuki_channel::sync::lock;

use serde::Serialize;
use serde::de::DeserializeOwned;
use yuki_channel::codec::DEFAULT_MAX_FRAME;
use yuki_channel::{BOOTSTRAP_ENV, Channel, ChannelOptions, PeerId, Role, Transport};

use crate::child_side::{ChildLink, WhenMainGone};
use crate::error::{Error, Result};
use crate::link::LinkKind;
use crate::main_side::Hub;
use crate::rendezvous;
use crate::spin;
use crate::stop::{self, NOT_IN_MAIN, WaitForStop};
use crate::supervise::{
    ChildHandle, DEFAULT_DEATH_SIGNAL, Lifecycle, Restart, RestartPolicy, Supervisor,
};
use crate::transport::{IpcTransport, Side};
use crate::wire::Control;

/// This process's place in a yuki application: main with its supervised
/// children, or a child connected to main.
///
/// Dropping main's node kills its children and waits for them.
///
/// # Stopping
///
/// Either side may start a child's stop or restart; the child always ends
/// the same way, by returning from its `main`:
///
/// | who asks | stop | restart |
/// |---|---|---|
/// | main | [`ChildHandle::stop`]`(grace)` | [`ChildHandle::restart`]`()` (grace: [`NodeBuilder::stop_timeout`]) |
/// | the child itself | [`Node::request_stop`]`()` | [`Node::request_restart`]`()` (main then does as in the row above, with [`NodeBuilder::stop_timeout`]) |
///
/// 1. Main runs its [`Lifecycle::Stopping`](crate::Lifecycle::Stopping) or
///    [`Lifecycle::Restarting`](crate::Lifecycle::Restarting) hooks and asks
///    the child to stop over its link.
/// 2. In the child, [`Node::stop_requested`] turns `true`,
///    [`Node::wait_for_stop`] (and its timed and async forms) return, and
///    the [`Node::on_stop`] hooks run. The link stays open: the child may
///    still save its state in the store, publish or flush.
/// 3. The child's program finishes its work and returns from `main`; the
///    process exits with that status. Nothing ends it from a background
///    thread while its code runs.
/// 4. If it has not exited within the grace period, main sends SIGTERM,
///    waits the grace period again, then sends SIGKILL (on Windows, which
///    has no signals, main terminates it at once with `TerminateProcess`).
///    A restart then starts it again.
///
/// A child whose main is gone is asked to stop in the same way (and its
/// calls fail with `Disconnected`); see [`WhenMainGone`].
///
/// ```no_run
/// use yuki_ipc_transport::Node;
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let node = Node::init()?;
///     if node.role().is_main() {
///         let exe = std::env::current_exe()?;
///         let worker = node.spawn("worker", std::process::Command::new(exe))?;
///         let exit = worker.stop(std::time::Duration::from_secs(2))?;
///         assert!(exit.status.success(), "it returned from main in time");
///     } else {
///         node.wait_for_stop()?;
///         println!("saved my state; bye");
///     }
///     Ok(())
/// }
/// ```
pub struct Node {
    transport: Arc<IpcTransport>,
    supervisor: Option<Arc<Supervisor>>,
    name: String,
    /// This node is the process's main node (see [`NodeBuilder::independent_main`]).
    holds_main: bool,
    /// Main's store region, which every child it spawns inherits.
    #[cfg(target_os = "linux")]
    store_region: Option<Arc<crate::store_region::MainRegion>>,
}

/// Whether the process's main node is alive: a second `init` in main is
/// an error rather than a second, separate main.
static MAIN_ALIVE: AtomicBool = AtomicBool::new(false);

/// A child joins main once (its one-time token is then spent): later
/// `init` calls share this link.
static JOINED: Mutex<Option<(Arc<IpcTransport>, String)>> = Mutex::new(None);

/// Options for [`Node::init`]; start with [`Node::builder`].
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    handshake_timeout: Duration,
    stop_timeout: Duration,
    max_frame: usize,
    max_backlog: usize,
    stall_timeout: Duration,
    when_main_gone: WhenMainGone,
    reply_spin: Duration,
    call_timeout: Duration,
    bootstrap: Option<String>,
    independent: bool,
    link: Option<LinkKind>,
    shared_reads: bool,
}

impl Default for NodeBuilder {
    fn default() -> NodeBuilder {
        NodeBuilder {
            handshake_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(5),
            max_frame: DEFAULT_MAX_FRAME,
            max_backlog: 64 << 20,
            stall_timeout: Duration::MAX,
            when_main_gone: WhenMainGone::Exit,
            reply_spin: spin::DEFAULT,
            call_timeout: yuki_channel::DEFAULT_CALL_TIMEOUT,
            bootstrap: None,
            independent: false,
            link: None,
            shared_reads: true,
        }
    }
}

impl NodeBuilder {
    /// How long a handshake may take, on either side (default 5 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> NodeBuilder {
        self.handshake_timeout = timeout;
        self
    }

    /// The stop grace period (default 5 s). In main: how long a child gets
    /// at each step of a stop or restart that main starts by itself (a
    /// child's [`Node::request_stop`] or [`Node::request_restart`], a
    /// [`ChildHandle::restart`]) before main sends SIGTERM, then SIGKILL
    /// (terminates it, on Windows).
    /// In a child: how long its program has to end by itself once main is
    /// gone (see [`WhenMainGone::Exit`]).
    pub fn stop_timeout(mut self, timeout: Duration) -> NodeBuilder {
        self.stop_timeout = timeout;
        self
    }

    /// The largest frame sent or accepted (main's setting applies to every
    /// child; default [`DEFAULT_MAX_FRAME`]).
    pub fn max_frame(mut self, bytes: usize) -> NodeBuilder {
        self.max_frame = bytes;
        self
    }

    /// How many bytes may wait for one child (default 64 MiB). Past that,
    /// pushes on lossy streams (pub/sub's: see `Transport::on_push_dropped`)
    /// drop the oldest ones queued on such streams, down to three quarters
    /// of this, and are queued; other pushes fail with `PeerBacklogged`
    /// unless that made room, and a child whose replies alone fill it is
    /// cut off.
    pub fn max_backlog(mut self, bytes: usize) -> NodeBuilder {
        self.max_backlog = bytes;
        self
    }

    /// Turns on the stall watchdog: a child that has not read what main
    /// sends it for `timeout` (one send to it blocked that long) is cut off
    /// and killed. Off by default: a child that is merely slow, or stopped
    /// for a while, costs main at most its bounded backlog, and its lossy
    /// pushes drop the oldest.
    pub fn stall_timeout(mut self, timeout: Duration) -> NodeBuilder {
        self.stall_timeout = timeout;
        self
    }

    /// What a child does when its link to main closes (default: exit).
    pub fn when_main_gone(mut self, action: WhenMainGone) -> NodeBuilder {
        self.when_main_gone = action;
        self
    }

    /// How long a link end polls for the next message after activity
    /// before it blocks: a child's caller for its reply, main's reader of
    /// each child link for the next request (default 50 µs; zero blocks at
    /// once). Each poll yields the CPU and the poll only follows a call or
    /// a handled message, so idle processes do not spin; a link end whose
    /// polls keep finding nothing (messages further apart than the spin)
    /// polls ever more rarely, so a steady trickle does not burn a core.
    /// It saves the wake-up of a sleeping thread, which on another core of
    /// a virtual machine costs several times a round trip.
    pub fn reply_spin(mut self, spin: Duration) -> NodeBuilder {
        self.reply_spin = spin;
        self
    }

    /// How long a call to main waits for its answer (default 30 s,
    /// [`DEFAULT_CALL_TIMEOUT`](yuki_channel::DEFAULT_CALL_TIMEOUT)): every
    /// store, pub/sub and hosted-channel operation of a child that main
    /// does not answer in time fails with a time-out error instead of
    /// waiting for ever on a main that is alive but frozen (stopped,
    /// swapping, deadlocked). The request may still take effect later;
    /// its reply is then dropped. Per-call deadlines (`Store::with_timeout`,
    /// `PubSub::with_timeout`, `Channel::send_timeout`) override it.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let node = yuki_ipc_transport::Node::builder()
    ///     .call_timeout(Duration::from_secs(2))
    ///     .init()
    ///     .unwrap();
    /// assert_eq!(node.transport().call_timeout(), Duration::from_secs(2));
    /// ```
    pub fn call_timeout(mut self, timeout: Duration) -> NodeBuilder {
        self.call_timeout = timeout;
        self
    }

    /// The kind of link main gives the children it spawns (in main;
    /// a child's link is the kind main chose for it). Without it, main reads
    /// [`LINK_ENV`](crate::LINK_ENV) (`YUKI_LINK`: `shared-memory` or
    /// `ipc-channel`; another value fails [`init`](NodeBuilder::init) with
    /// [`Error::UnknownLink`]), else takes the system's default
    /// ([`LinkKind::default`]). A kind the system does not have fails
    /// `init` with [`Error::LinkUnsupported`].
    ///
    /// ```
    /// use yuki_ipc_transport::{LinkKind, Node};
    /// let node = Node::builder()
    ///     .independent_main()
    ///     .link(LinkKind::IpcChannel)
    ///     .init()?;
    /// assert_eq!(node.link_kind(), LinkKind::IpcChannel);
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn link(mut self, kind: LinkKind) -> NodeBuilder {
        self.link = Some(kind);
        self
    }

    /// Uses `value` in place of the `YUKI_BOOTSTRAP` environment variable
    /// (the process then starts as a child, and [`yuki_channel::role()`]
    /// says so too).
    pub fn bootstrap(mut self, value: impl Into<String>) -> NodeBuilder {
        self.bootstrap = Some(value.into());
        self
    }

    /// Lets this main start beside the process's main node, with its own
    /// store, channels and children: several applications in one process,
    /// as tests run them. Without it a second main fails with
    /// [`Error::AlreadyMain`]. No effect in a child.
    ///
    /// ```
    /// use yuki_ipc_transport::Node;
    /// let a = Node::builder().independent_main().init()?;
    /// let b = Node::builder().independent_main().init()?;
    /// assert!(a.role().is_main() && b.role().is_main());
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn independent_main(mut self) -> NodeBuilder {
        self.independent = true;
        self
    }

    /// Whether children read the store from memory main shares with them
    /// (default: on, where supported). Main's setting decides for every
    /// child; the environment variable `YUKI_SHARED_READS=0` in main turns
    /// it off as well.
    ///
    /// On, main keeps a copy of its store's keys and values in a region
    /// every child maps read-only (Linux only; sealed so that no child can
    /// write it), and a child's `get` and `contains` read it without a
    /// message to main. They keep the store's promises: a write returned
    /// anywhere is seen by every later read, a batch is never seen half
    /// applied, an expired key is absent. Off, every read is a call to
    /// main. [`Node::shared_reads`] tells whether it is on.
    ///
    /// ```
    /// use yuki_ipc_transport::Node;
    /// let node = Node::builder().independent_main().shared_reads(false).init()?;
    /// assert!(!node.shared_reads());
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn shared_reads(mut self, on: bool) -> NodeBuilder {
        self.shared_reads = on;
        self
    }

    /// Starts the node: the server side in main; in a child, the handshake
    /// with main, which fails within the handshake time-out.
    ///
    /// The role comes from [`NodeBuilder::bootstrap`] if given, else from
    /// [`yuki_channel::role()`]: both always agree. A process starts once:
    /// in a child a second `init` returns a node on the same link (the
    /// options of the first apply); in main it fails with
    /// [`Error::AlreadyMain`] while the first main node lives.
    ///
    /// ```
    /// use yuki_ipc_transport::{Error, Node};
    /// let node = Node::init()?; // main: no YUKI_BOOTSTRAP here
    /// assert_eq!(Node::init().unwrap_err(), Error::AlreadyMain);
    /// drop(node);
    /// let again = Node::init()?; // once the first is gone, a new main may start
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn init(self) -> Result<Node> {
        if let Some((transport, name)) = lock(&JOINED).clone() {
            return Ok(Node::child_node(transport, name));
        }
        if let Some(v) = self.bootstrap.clone() {
            return self.init_child(&v);
        }
        match yuki_channel::role() {
            Role::Main => self.init_main(),
            Role::Child => match std::env::var_os(BOOTSTRAP_ENV) {
                Some(v) => self.init_child(&v.to_string_lossy()),
                None => Err(Error::MalformedBootstrap(format!(
                    "{BOOTSTRAP_ENV} was removed from the environment after this process read its role"
                ))),
            },
        }
    }

    fn init_main(self) -> Result<Node> {
        let holds_main = !self.independent;
        if holds_main && MAIN_ALIVE.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyMain);
        }
        let node = self.start_main(holds_main);
        if node.is_err() && holds_main {
            MAIN_ALIVE.store(false, Ordering::Release);
        }
        node
    }

    fn start_main(self, holds_main: bool) -> Result<Node> {
        let link = match self.link {
            Some(kind) => kind,
            None => LinkKind::from_env()?.unwrap_or_default(),
        }
        .check_supported()?;
        let hub = Arc::new(Hub::new(
            self.max_frame,
            self.max_backlog,
            self.reply_spin,
            link,
        ));
        let supervisor = Supervisor::start(
            hub.clone(),
            self.handshake_timeout,
            self.stop_timeout,
            self.stall_timeout,
        )?;
        let transport = IpcTransport::new(Side::Main(hub), self.call_timeout);
        #[cfg(target_os = "linux")]
        let store_region = self.store_region();
        #[cfg(target_os = "linux")]
        let transport =
            transport.with_shared_region(store_region.as_ref().map(|r| r.region.clone()));
        let transport = Arc::new(transport);
        // Children may open a named channel before main opens any.
        let seam: Arc<dyn Transport> = transport.clone();
        yuki_channel::host_channels(&seam)?;
        Ok(Node {
            transport,
            supervisor: Some(supervisor),
            name: "main".into(),
            holds_main,
            #[cfg(target_os = "linux")]
            store_region,
        })
    }

    /// Main's store region, if shared reads are on and it can be made
    /// (else logged: reads then go to main).
    #[cfg(target_os = "linux")]
    fn store_region(&self) -> Option<Arc<crate::store_region::MainRegion>> {
        use crate::store_region::{self, LEN, MainRegion, OFF_ENV};
        if !self.shared_reads {
            return None;
        }
        if !store_region::allowed_by_env() {
            tracing::debug!("{OFF_ENV}=0: store reads go to main");
            return None;
        }
        match MainRegion::create(LEN) {
            Ok(region) => Some(Arc::new(region)),
            Err(why) => {
                tracing::warn!(%why, "no shared store region; store reads go to main");
                None
            }
        }
    }

    fn init_child(self, value: &str) -> Result<Node> {
        // One join at a time: a second caller waits and shares the link.
        let mut joined_slot = lock(&JOINED);
        if let Some((transport, name)) = joined_slot.clone() {
            return Ok(Node::child_node(transport, name));
        }
        let joined = rendezvous::join(value, self.handshake_timeout)?;
        // Fixed only once joined, so a failed join leaves the role alone;
        // on a conflict the joined link is dropped, which main sees as this
        // child leaving.
        if let Err(fixed) = yuki_channel::set_role(Role::Child) {
            return Err(Error::RoleConflict {
                fixed,
                wanted: Role::Child,
            });
        }
        let (peer, name) = (joined.peer, joined.name.clone());
        let link = ChildLink::start(
            joined,
            self.when_main_gone,
            self.reply_spin,
            self.call_timeout,
            self.stop_timeout,
        )
        .map_err(|e| Error::os("starting the link threads", e))?;
        tracing::debug!(peer, %name, "joined main");
        #[cfg(target_os = "linux")]
        let region = crate::store_region::inherited();
        #[cfg(target_os = "linux")]
        if let Some(region) = &region {
            let _ = link.store_region.set(region.clone());
            // Main may have gone while the region was being mapped.
            if link.is_gone() {
                region.close();
            }
        }
        let transport = IpcTransport::new(Side::Child(link), self.call_timeout);
        #[cfg(target_os = "linux")]
        let transport = transport.with_shared_region(region);
        let transport = Arc::new(transport);
        *joined_slot = Some((transport.clone(), name.clone()));
        Ok(Node::child_node(transport, name))
    }
}

/// Options for one child; start with [`Node::child`].
#[derive(Debug)]
pub struct ChildBuilder<'a> {
    node: &'a Node,
    name: String,
    command: Command,
    restart: Restart,
    death_signal: Option<i32>,
    link: Option<LinkKind>,
}

impl ChildBuilder<'_> {
    /// The kind of this child's link (default: main's, see
    /// [`NodeBuilder::link`]); the child learns it in the handshake. A
    /// kind this system does not have fails the spawn with
    /// [`Error::LinkUnsupported`].
    ///
    /// ```no_run
    /// # use yuki_ipc_transport::{LinkKind, Node};
    /// # let node = Node::init()?;
    /// let exe = std::env::current_exe().unwrap();
    /// let worker = node
    ///     .child("worker", std::process::Command::new(exe))
    ///     .link(LinkKind::IpcChannel)
    ///     .spawn()?;
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn link(mut self, kind: LinkKind) -> Self {
        self.link = Some(kind);
        self
    }

    /// When to restart it (default: never). (Named apart from
    /// [`ChildHandle::restart`], which restarts a child now.)
    ///
    /// ```no_run
    /// # use yuki_ipc_transport::{Node, RestartPolicy};
    /// # let node = Node::init()?;
    /// let exe = std::env::current_exe().unwrap();
    /// let worker = node
    ///     .child("worker", std::process::Command::new(exe))
    ///     .restart_policy(RestartPolicy::OnFailure)
    ///     .spawn()?;
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.restart.policy = policy;
        self
    }

    /// The first back-off (doubled at each restart) and its ceiling.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.restart.backoff = first;
        self.restart.max_backoff = max;
        self
    }

    /// How many restarts before the supervisor gives up (default 5).
    pub fn restart_budget(mut self, restarts: u32) -> Self {
        self.restart.budget = restarts;
        self
    }

    /// The signal the child gets if main dies without closing its link
    /// (`PR_SET_PDEATHSIG`; `None` disables it). Linux only: there the
    /// default is SIGKILL; elsewhere the default is `None`, and `spawn`
    /// refuses a signal with [`Error::Unsupported`]. Without one a child
    /// still learns of main's death from its link and exits (see
    /// [`WhenMainGone`](crate::WhenMainGone)).
    ///
    /// ```no_run
    /// # use yuki_ipc_transport::Node;
    /// # let node = Node::init()?;
    /// let exe = std::env::current_exe().unwrap();
    /// // Portable: rely on the link alone to end it when main is gone.
    /// let worker = node
    ///     .child("worker", std::process::Command::new(exe))
    ///     .parent_death_signal(None)
    ///     .spawn()?;
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn parent_death_signal(mut self, signal: Option<i32>) -> Self {
        self.death_signal = signal;
        self
    }

    /// Starts the child and waits for its handshake.
    pub fn spawn(self) -> Result<ChildHandle> {
        let sup = self.node.supervisor()?;
        let link = self
            .link
            .unwrap_or(self.node.link_kind())
            .check_supported()?;
        #[allow(unused_mut)]
        let mut command = self.command;
        #[cfg(target_os = "linux")]
        match &self.node.store_region {
            Some(region) => region.hand_down(&mut command),
            None => crate::store_region::withhold(&mut command),
        }
        sup.spawn(&self.name, command, self.restart, self.death_signal, link)
    }
}

impl Node {
    /// Starts this process's node with the default options: see
    /// [`NodeBuilder::init`].
    pub fn init() -> Result<Node> {
        NodeBuilder::default().init()
    }

    /// Options for [`Node::init`].
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// A child's node on its joined link.
    fn child_node(transport: Arc<IpcTransport>, name: String) -> Node {
        Node {
            transport,
            supervisor: None,
            name,
            holds_main: false,
            #[cfg(target_os = "linux")]
            store_region: None,
        }
    }

    /// Whether the store's reads in children go through shared memory
    /// (see [`NodeBuilder::shared_reads`]): in main, whether the region was
    /// made; in a child, whether it was handed down and mapped. A store
    /// whose clock is not the system's (`yuki_storage::ManualClock`) still
    /// reads from main.
    ///
    /// ```
    /// use yuki_ipc_transport::Node;
    /// let node = Node::builder().independent_main().init()?;
    /// // On by default where it is supported, unless YUKI_SHARED_READS=0.
    /// let expected = cfg!(target_os = "linux")
    ///     && std::env::var("YUKI_SHARED_READS").as_deref() != Ok("0");
    /// assert_eq!(node.shared_reads(), expected);
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn shared_reads(&self) -> bool {
        self.transport.shared_region().is_some()
    }

    /// This process's role.
    pub fn role(&self) -> Role {
        self.transport.role()
    }

    /// This process's peer id ([`PeerId::MAIN`] in main).
    pub fn peer_id(&self) -> PeerId {
        self.transport.peer_id()
    }

    /// This process's name (`"main"` in main; a child's name from main).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind of link: in main, the kind it gives the children it
    /// spawns ([`NodeBuilder::link`]); in a child, the kind of its link to
    /// main, which main chose.
    pub fn link_kind(&self) -> LinkKind {
        match self.transport.side() {
            Side::Main(hub) => hub.link_kind,
            Side::Child(link) => link.kind,
        }
    }

    /// The transport, for yuki-storage, yuki-pubsub and hosted channels.
    pub fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }

    /// Calls this process has sent to main that are neither answered nor
    /// given up (always 0 in main, whose own calls run in place). A call
    /// given up at its deadline leaves at once, and its reply, if one comes
    /// later, is dropped: after a burst of time-outs this falls back to 0.
    ///
    /// ```no_run
    /// let node = yuki_ipc_transport::Node::init().unwrap();
    /// assert_eq!(node.pending_calls(), 0);
    /// ```
    pub fn pending_calls(&self) -> usize {
        self.transport.pending_calls()
    }

    /// Opens the channel `name` hosted by main, from any process: every
    /// process may send and receive, and each item is received once, in
    /// the order main accepted it (see [`Channel::open`]).
    pub fn channel<T>(&self, name: &str) -> yuki_channel::Result<Channel<T>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        Channel::open(&self.transport(), name)
    }

    /// Like [`Node::channel`], with [`ChannelOptions`]: a capacity for a
    /// channel this open creates, and this process's prefetch (see
    /// [`Channel::open_with`]).
    ///
    /// ```no_run
    /// use yuki_channel::ChannelOptions;
    /// use yuki_ipc_transport::Node;
    ///
    /// let node = Node::init().unwrap();
    /// let jobs = node.channel_with::<u64>("jobs", &ChannelOptions::new().prefetch(16)).unwrap();
    /// if !node.role().is_main() {
    ///     let job = jobs.recv_delivery().unwrap();
    ///     println!("working on {}", *job);
    ///     job.ack();
    /// }
    /// ```
    pub fn channel_with<T>(
        &self,
        name: &str,
        options: &ChannelOptions,
    ) -> yuki_channel::Result<Channel<T>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        Channel::open_with(&self.transport(), name, options)
    }

    /// Like [`Node::channel`], creating it bounded to `capacity` items
    /// (see [`Channel::open_bounded`]).
    pub fn channel_bounded<T>(
        &self,
        name: &str,
        capacity: usize,
    ) -> yuki_channel::Result<Channel<T>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        Channel::open_bounded(&self.transport(), name, capacity)
    }

    fn supervisor(&self) -> Result<&Arc<Supervisor>> {
        self.supervisor
            .as_ref()
            .ok_or(Error::WrongRole("only main spawns children"))
    }

    /// Spawns `command` as the child `name` (main only) and waits for its
    /// handshake; the child must call [`Node::init`] at start-up.
    pub fn spawn(&self, name: &str, command: Command) -> Result<ChildHandle> {
        self.child(name, command).spawn()
    }

    /// Options for spawning `command` as the child `name`.
    pub fn child(&self, name: &str, command: Command) -> ChildBuilder<'_> {
        ChildBuilder {
            node: self,
            name: name.to_owned(),
            command,
            restart: Restart::default(),
            death_signal: DEFAULT_DEATH_SIGNAL,
            link: None,
        }
    }

    /// The children spawned so far that may still run, and those that
    /// ended for good while a handle still holds them, by name. A child
    /// that ended and has no handle left is forgotten, so spawning and
    /// stopping children of ever new names does not grow main.
    pub fn children(&self) -> Vec<ChildHandle> {
        self.supervisor
            .as_ref()
            .map(|s| s.children())
            .unwrap_or_default()
    }

    /// Adds a hook run in main before a child stops, before it restarts,
    /// and when it exits. Does nothing in a child (a child learns of its
    /// own stop with [`Node::on_stop`]).
    ///
    /// ```no_run
    /// # use yuki_ipc_transport::{Lifecycle, Node};
    /// # let node = Node::init()?;
    /// node.on_lifecycle(|moment| {
    ///     if let Lifecycle::Exited { name, status, .. } = moment {
    ///         println!("{name} exited ({status})");
    ///     }
    /// });
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn on_lifecycle(&self, hook: impl Fn(&Lifecycle) + Send + Sync + 'static) {
        if let Some(s) = &self.supervisor {
            s.on_lifecycle(Arc::new(hook));
        }
    }

    fn child_link(&self, operation: &'static str) -> Result<&Arc<ChildLink>> {
        match self.transport.side() {
            Side::Child(link) => Ok(link),
            Side::Main(_) => Err(Error::WrongRole(operation)),
        }
    }

    /// Asks main to stop this child (child only); main then asks it to stop
    /// as [`ChildHandle::stop`] does. See [Stopping](Node#stopping).
    pub fn request_stop(&self) -> Result<()> {
        let link = self.child_link("only a child asks main to stop it")?;
        Ok(link.send_control(Control::Stop)?)
    }

    /// Asks main to restart this child (child only); main then asks it to
    /// stop as [`ChildHandle::restart`] does, and starts it again once it
    /// has exited. See [Stopping](Node#stopping).
    pub fn request_restart(&self) -> Result<()> {
        let link = self.child_link("only a child asks main to restart it")?;
        Ok(link.send_control(Control::Restart)?)
    }

    /// Whether this child has been asked to stop, or main is gone (always
    /// `false` in main). See [Stopping](Node#stopping).
    ///
    /// ```no_run
    /// # use yuki_ipc_transport::Node;
    /// let node = Node::init()?;
    /// while !node.stop_requested() {
    ///     // one unit of work
    /// }
    /// // save state, flush logs, then return from main
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn stop_requested(&self) -> bool {
        match self.transport.side() {
            Side::Child(link) => link.stop.is_requested(),
            Side::Main(_) => false,
        }
    }

    /// Blocks until this child is asked to stop, or main is gone; at once
    /// if that happened already. [`Error::WrongRole`] in main. See
    /// [Stopping](Node#stopping).
    ///
    /// ```no_run
    /// # use yuki_ipc_transport::Node;
    /// let node = Node::init()?;
    /// // start worker threads, then:
    /// node.wait_for_stop()?;
    /// // finish the job, then return from main
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn wait_for_stop(&self) -> Result<()> {
        let link = self.child_link(NOT_IN_MAIN)?;
        link.stop.wait_until(None);
        Ok(())
    }

    /// Like [`Node::wait_for_stop`], giving up after `timeout`: whether the
    /// stop was requested.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use yuki_ipc_transport::Node;
    /// let node = Node::init()?;
    /// while !node.wait_for_stop_timeout(Duration::from_secs(1))? {
    ///     // a periodic chore
    /// }
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn wait_for_stop_timeout(&self, timeout: Duration) -> Result<bool> {
        let link = self.child_link(NOT_IN_MAIN)?;
        Ok(link.stop.wait_until(stop::deadline(timeout)))
    }

    /// The async form of [`Node::wait_for_stop`], for any executor; the
    /// future owns what it waits on, so it fits a `select!` or a spawned
    /// task. In main it resolves at once to [`Error::WrongRole`].
    ///
    /// ```no_run
    /// # use yuki_ipc_transport::Node;
    /// # async fn serve(node: Node) -> Result<(), yuki_ipc_transport::Error> {
    /// let stop = node.wait_for_stop_async();
    /// // tokio::select! { _ = stop => {}, _ = work() => {} }
    /// stop.await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for_stop_async(&self) -> WaitForStop {
        WaitForStop::new(match self.transport.side() {
            Side::Child(link) => Some(link.stop.clone()),
            Side::Main(_) => None,
        })
    }

    /// Runs `hook` once, on a thread of its own, when this child is asked
    /// to stop or main is gone (at once if that happened already). The
    /// process still ends only when the program returns from `main`: a
    /// hook tells the program's threads to finish, or finishes a job
    /// itself within the grace period. [`Error::WrongRole`] in main. See
    /// [Stopping](Node#stopping).
    ///
    /// ```no_run
    /// # use yuki_ipc_transport::Node;
    /// let node = Node::init()?;
    /// let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    /// node.on_stop(move || {
    ///     // tell the workers to finish, then:
    ///     let _ = done_tx.send(());
    /// })?;
    /// let _ = done_rx.recv();
    /// # Ok::<(), yuki_ipc_transport::Error>(())
    /// ```
    pub fn on_stop(&self, hook: impl FnOnce() + Send + 'static) -> Result<()> {
        let link = self.child_link(NOT_IN_MAIN)?;
        link.stop.on_stop(Box::new(hook));
        Ok(())
    }

    /// Sends `message` to main as one raw message, bypassing the
    /// encoder (child only). For fault-injection tests of main's checks,
    /// so only with the `fault-injection` feature.
    #[cfg(feature = "fault-injection")]
    pub fn send_raw_message(&self, message: &[u8]) -> Result<()> {
        let link = self.child_link("only a child sends raw messages")?;
        Ok(link.send_raw(message)?)
    }

    /// Sends `bytes` to main as one message of the link's carrier without
    /// its envelope (child only; over shared memory the same as
    /// [`send_raw_message`](Node::send_raw_message)): over ipc-channel, a
    /// message that is not a length-prefixed byte string. For
    /// fault-injection tests, so only with the `fault-injection` feature.
    #[cfg(feature = "fault-injection")]
    pub fn send_unwrapped_message(&self, bytes: &[u8]) -> Result<()> {
        let link = self.child_link("only a child sends raw messages")?;
        Ok(link.send_unwrapped(bytes)?)
    }

    /// Drops this child's sending end of the link and nothing else (child
    /// only): over ipc-channel main sees the child's channel close, as if
    /// its writer had vanished, while its calls still wait. For
    /// fault-injection tests, so only with the `fault-injection` feature.
    #[cfg(feature = "fault-injection")]
    pub fn drop_link_sender(&self) -> Result<()> {
        self.child_link("only a child drops its sender")?
            .drop_sender();
        Ok(())
    }

    /// Whether this child's link to main is closed (always `false` in main).
    pub fn is_disconnected(&self) -> bool {
        match self.transport.side() {
            Side::Child(link) => link.is_gone(),
            Side::Main(_) => false,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = &self.supervisor {
            s.shutdown();
        }
        if self.holds_main {
            MAIN_ALIVE.store(false, Ordering::Release);
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("role", &self.role())
            .field("name", &self.name)
            .field("peer", &self.peer_id())
            .finish_non_exhaustive()
    }
}
