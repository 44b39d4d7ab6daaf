//! The registry: channels found by name (the seed's `set_channel`,
//! `get_channel` and `get_channels`).

use crate::sync;
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use crate::channel::Channel;
use crate::error::{Error, Result};

struct Entry {
    channel: Box<dyn Any + Send + Sync>,
    type_name: &'static str,
}

/// Channels by name, each with its item type.
///
/// The process has one [`Registry::global`], used by [`register`],
/// [`lookup`] and [`names`]; a `Registry::new()` is one of its own (tests,
/// plugins kept apart).
///
/// ```
/// use yuki_channel::{Channel, Error, Registry};
///
/// let registry = Registry::new();
/// registry.register(&Channel::<String>::new("greetings")).unwrap();
/// let found = registry.lookup::<String>("greetings").unwrap();
/// assert_eq!(found.name(), "greetings");
/// assert!(matches!(registry.lookup::<u32>("greetings"), Err(Error::WrongType { .. })));
/// assert_eq!(registry.names(), vec!["greetings".to_string()]);
/// ```
#[derive(Default)]
pub struct Registry {
    channels: Mutex<BTreeMap<String, Entry>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.names())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The registry of this process.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        sync::lock(&self.channels)
    }

    /// Registers a handle to `channel` under its name; fails with
    /// [`Error::ChannelExists`] if the name is taken.
    pub fn register<T: Send + 'static>(&self, channel: &Channel<T>) -> Result<()> {
        let mut channels = self.lock();
        if channels.contains_key(channel.name()) {
            return Err(Error::ChannelExists(channel.name().to_owned()));
        }
        channels.insert(
            channel.name().to_owned(),
            Entry {
                channel: Box::new(channel.clone()),
                type_name: std::any::type_name::<T>(),
            },
        );
        Ok(())
    }

    /// The channel registered as `name`; fails with [`Error::NoChannel`]
    /// if there is none and [`Error::WrongType`] (naming both types) if it
    /// carries another type than `T`.
    pub fn lookup<T: Send + 'static>(&self, name: &str) -> Result<Channel<T>> {
        let channels = self.lock();
        let entry = channels
            .get(name)
            .ok_or_else(|| Error::NoChannel(name.to_owned()))?;
        entry
            .channel
            .downcast_ref::<Channel<T>>()
            .cloned()
            .ok_or_else(|| Error::WrongType {
                channel: name.to_owned(),
                expected: std::any::type_name::<T>(),
                actual: entry.type_name,
            })
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Removes `name`; returns whether it was registered. Handles already
    /// looked up keep working.
    pub fn unregister(&self, name: &str) -> bool {
        self.lock().remove(name).is_some()
    }
}

/// Registers `channel` in the process's registry (the seed's `set_channel`).
pub fn register<T: Send + 'static>(channel: &Channel<T>) -> Result<()> {
    Registry::global().register(channel)
}

/// Looks up a channel in the process's registry (the seed's `get_channel`).
pub fn lookup<T: Send + 'static>(name: &str) -> Result<Channel<T>> {
    Registry::global().lookup(name)
}

/// The names in the process's registry (the seed's `get_channels`).
pub fn names() -> Vec<String> {
    Registry::global().names()
}
