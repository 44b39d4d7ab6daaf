//! The frames of hosted channels: requests from children to main's
//! [`SERVICE`], replies, and pushes from main on [`STREAM`].

use serde::{Deserialize, Serialize};
use serde_bytes::Bytes;

/// The service main serves for hosted channels.
pub(crate) const SERVICE: &str = "yuki.channel";

/// The push stream main delivers items and notices on.
pub(crate) const STREAM: &str = "yuki.channel";

/// How many items a child lets main push ahead of its receivers.
pub(crate) const WINDOW: u32 = 64;

/// A child's request to main.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request<'a> {
    /// Opens (creating if needed) the channel; answered with
    /// [`Reply::Opened`] or [`Reply::CapacityMismatch`].
    Open {
        name: &'a str,
        capacity: Option<u64>,
    },
    /// Appends one item; [`Reply::Done`], [`Reply::Closed`] or
    /// [`Reply::Full`] (then main sends [`Push::Space`] when room frees up).
    Send { name: &'a str, item: &'a Bytes },
    /// Grants credit: the child has consumed `consumed` items in all, and
    /// accepts up to `window` items not yet consumed. Cumulative, so
    /// repeated or reordered pulls are harmless. [`Reply::Done`].
    Pull {
        name: &'a str,
        consumed: u64,
        window: u32,
    },
    /// Closes the channel; [`Reply::Closing`].
    Close { name: &'a str },
    /// Asks how many items wait in main; [`Reply::Len`].
    Len { name: &'a str },
}

/// Main's answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Reply {
    Opened {
        capacity: Option<u64>,
        closed: bool,
        drained: bool,
    },
    CapacityMismatch {
        actual: Option<u64>,
    },
    Done,
    Closed,
    Full {
        capacity: u64,
    },
    Closing {
        closed_now: bool,
    },
    Len(u64),
    NoChannel,
}

/// What main pushes to a child.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Push<'a> {
    /// Items for the child's receivers, in queue order.
    Items {
        name: &'a str,
        #[serde(borrow)]
        items: Vec<&'a Bytes>,
    },
    /// The channel was closed (sends fail from now on).
    Closed { name: &'a str },
    /// The channel is closed and main holds no more items for it: once its
    /// buffer is empty, a receiver fails with `Closed`.
    Drained { name: &'a str },
    /// A full bounded channel has room again.
    Space { name: &'a str },
}
