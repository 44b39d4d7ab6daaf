//! [`Node`]: what a process gets from start-up, by role.

use std::fmt;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use yuki_channel::codec::DEFAULT_MAX_FRAME;
use yuki_channel::{BOOTSTRAP_ENV, Channel, ChannelOptions, PeerId, Role, Transport};

use crate::child_side::{ChildLink, WhenMainGone};
use crate::error::{Error, Result};
use crate::main_side::Hub;
use crate::rendezvous;
use crate::spin;
use crate::supervise::{ChildHandle, LifecycleHook, Restart, RestartPolicy, Supervisor};
use crate::transport::{IpcTransport, Side};
use crate::wire::Control;

/// This process's place in a yuki application: main with its supervised
/// children, or a child connected to main.
///
/// Dropping main's node kills its children and waits for them.
pub struct Node {
    transport: Arc<IpcTransport>,
    supervisor: Option<Arc<Supervisor>>,
    name: String,
}

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
    bootstrap: Option<String>,
}

impl Default for NodeBuilder {
    fn default() -> NodeBuilder {
        NodeBuilder {
            handshake_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(5),
            max_frame: DEFAULT_MAX_FRAME,
            max_backlog: 64 << 20,
            stall_timeout: Duration::from_secs(10),
            when_main_gone: WhenMainGone::Exit,
            reply_spin: spin::DEFAULT,
            bootstrap: None,
        }
    }
}

impl NodeBuilder {
    /// How long a handshake may take, on either side (default 5 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> NodeBuilder {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a child gets at each step of a stop or restart requested
    /// by the child itself (default 5 s).
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

    /// How many bytes may wait for one child before pushes to it fail with
    /// `PeerBacklogged` (default 64 MiB).
    pub fn max_backlog(mut self, bytes: usize) -> NodeBuilder {
        self.max_backlog = bytes;
        self
    }

    /// How long main waits on a child that does not read what main sends
    /// it before it cuts the child off and kills it (default 10 s).
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

    /// Uses `value` in place of the `YUKI_BOOTSTRAP` environment variable
    /// (the process then starts as a child).
    pub fn bootstrap(mut self, value: impl Into<String>) -> NodeBuilder {
        self.bootstrap = Some(value.into());
        self
    }

    /// Starts the node: the server side in main; in a child, the handshake
    /// with main, which fails within the handshake time-out.
    pub fn init(self) -> Result<Node> {
        let value = self
            .bootstrap
            .clone()
            .or_else(|| std::env::var_os(BOOTSTRAP_ENV).map(|v| v.to_string_lossy().into_owned()));
        match value {
            None => self.init_main(),
            Some(v) => self.init_child(&v),
        }
    }

    fn init_main(self) -> Result<Node> {
        let hub = Arc::new(Hub::new(self.max_frame, self.max_backlog, self.reply_spin));
        let supervisor = Supervisor::start(
            hub.clone(),
            self.handshake_timeout,
            self.stop_timeout,
            self.stall_timeout,
        )?;
        let transport = Arc::new(IpcTransport::new(Side::Main(hub)));
        // Children may open a named channel before main opens any.
        let seam: Arc<dyn Transport> = transport.clone();
        yuki_channel::host_channels(&seam)?;
        Ok(Node {
            transport,
            supervisor: Some(supervisor),
            name: "main".into(),
        })
    }

    fn init_child(self, value: &str) -> Result<Node> {
        let joined = rendezvous::join(value, self.handshake_timeout)?;
        let (peer, name) = (joined.peer, joined.name.clone());
        let link = ChildLink::start(joined, self.when_main_gone, self.reply_spin)
            .map_err(|e| Error::os("starting the link threads", e))?;
        tracing::debug!(peer, %name, "joined main");
        Ok(Node {
            transport: Arc::new(IpcTransport::new(Side::Child(link))),
            supervisor: None,
            name,
        })
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
}

impl ChildBuilder<'_> {
    /// When to restart it (default: never).
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
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
    /// (Linux `PR_SET_PDEATHSIG`; default SIGKILL; `None` disables it).
    pub fn parent_death_signal(mut self, signal: Option<i32>) -> Self {
        self.death_signal = signal;
        self
    }

    /// Starts the child and waits for its handshake.
    pub fn spawn(self) -> Result<ChildHandle> {
        let sup = self.node.supervisor()?;
        sup.spawn(&self.name, self.command, self.restart, self.death_signal)
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

    /// The transport, for yuki-storage, yuki-pubsub and hosted channels.
    pub fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
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
            death_signal: Some(libc::SIGKILL),
        }
    }

    /// The children spawned so far, by name.
    pub fn children(&self) -> Vec<ChildHandle> {
        self.supervisor
            .as_ref()
            .map(|s| s.children())
            .unwrap_or_default()
    }

    /// Adds a hook run in main before a child stops, before it restarts,
    /// and when it exits. Does nothing in a child.
    pub fn on_lifecycle(&self, hook: LifecycleHook) {
        if let Some(s) = &self.supervisor {
            s.on_lifecycle(hook);
        }
    }

    fn child_link(&self, operation: &'static str) -> Result<&Arc<ChildLink>> {
        match self.transport.side() {
            Side::Child(link) => Ok(link),
            Side::Main(_) => Err(Error::WrongRole(operation)),
        }
    }

    /// Asks main to stop this child (child only).
    pub fn request_stop(&self) -> Result<()> {
        let link = self.child_link("only a child asks main to stop it")?;
        Ok(link.send_control(Control::Stop)?)
    }

    /// Asks main to restart this child (child only).
    pub fn request_restart(&self) -> Result<()> {
        let link = self.child_link("only a child asks main to restart it")?;
        Ok(link.send_control(Control::Restart)?)
    }

    /// Sends `message` to main as one raw message, bypassing the
    /// encoder (child only). For fault-injection tests of main's checks.
    #[doc(hidden)]
    pub fn send_raw_message(&self, message: &[u8]) -> Result<()> {
        let link = self.child_link("only a child sends raw messages")?;
        Ok(link.send_raw(message)?)
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
