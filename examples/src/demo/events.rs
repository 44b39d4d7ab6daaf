//! What travels between the bot core and its plugin hosts.

use serde::{Deserialize, Serialize};

/// The bot's configuration, kept in the store under [`BotConfig::KEY`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotConfig {
    /// The bot's display name.
    pub bot_name: String,
    /// What starts a command in a chat message.
    pub command_prefix: String,
    /// How often a plugin host receives a chat message, in milliseconds.
    pub tick_ms: u64,
}

impl BotConfig {
    /// The store key of the configuration.
    pub const KEY: &'static str = "config";
}

/// The event a plugin host publishes on `msg.<host>` for each chat message
/// it receives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// The plugin host that received it.
    pub host: String,
    /// Who wrote it.
    pub user: String,
    /// What they wrote.
    pub text: String,
}

/// A request to main on the [`CONTROL`](super::CONTROL) channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Restart the plugin host `host` (e.g. to load new plugins).
    Restart {
        /// Which host.
        host: String,
        /// Why, in words.
        reason: String,
    },
    /// Stop the demo now (sent by main's own Ctrl+C handler).
    Quit,
}

/// The topic a host publishes its events on.
pub fn topic(host: &str) -> String {
    format!("msg.{host}")
}
