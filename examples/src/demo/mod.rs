//! The demo application: a chat-bot core (main) with two plugin hosts
//! (child processes), in the spirit of LiteyukiBot.
//!
//! - main ([`core`]) puts the configuration in the [`Store`](yuki_storage::Store),
//!   spawns the plugin hosts with [`Node::spawn`](yuki_ipc_transport::Node::spawn),
//!   counts the "message received" events they publish, restarts a host that
//!   asks for it on the [`CONTROL`] channel, and prints a summary at the end;
//! - each plugin host ([`plugin`]) reads the configuration, publishes an
//!   event for every chat message it "receives", counts with `incr`, and
//!   listens to the events of the other host. `chat` asks main to restart it
//!   once; `games` crashes once on purpose and its restart policy brings it
//!   back.
//!
//! The same binary plays both roles: [`run`] asks the node which one it is.

pub mod core;
pub mod events;
pub mod log;
pub mod plugin;

use std::time::Duration;

use yuki_channel::Role;
use yuki_ipc_transport::Node;

pub use events::{BotConfig, Control, Incoming};

/// The named channel plugin hosts use to ask main for things.
pub const CONTROL: &str = "plugins.control";

/// Any error of the demo, in words.
pub type DemoError = Box<dyn std::error::Error + Send + Sync>;

/// How long main lets the plugin hosts run before it stops them.
pub const DEFAULT_RUN: Duration = Duration::from_secs(8);

/// Starts this process's part: the bot core in main, a plugin host in a
/// child. `run_for` is how long main runs (ignored in a child).
pub fn run(run_for: Duration) -> Result<(), DemoError> {
    let node = Node::init()?;
    let epoch = log::init(node.name());
    match node.role() {
        Role::Main => core::run(node, run_for, epoch),
        Role::Child => plugin::run(node),
    }
}
