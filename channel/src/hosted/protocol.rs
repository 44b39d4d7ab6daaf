//! The frames of hosted channels: requests from children to main's
//! [`SERVICE`], replies, and pushes from main on [`STREAM`].

use serde::{Deserialize, Serialize};
use serde_bytes::Bytes;

/// The service main serves for hosted channels.
pub(crate) const SERVICE: &str = "yuki.channel";

/// The push stream main delivers items and notices on.
pub(crate) const STREAM: &str = "yuki.channel";

/// A child's request to main.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request<'a> {
    /// Opens (creating if needed) the channel; answered with
    /// [`Reply::Opened`] or [`Reply::CapacityMismatch`].
    Open {
        name: &'a str,
        capacity: Option<u64>,
        /// The item type's name (`std::any::type_name`): main records the
        /// first opener's and refuses others with [`Reply::WrongType`].
        item_type: &'a str,
    },
    /// Appends one item; [`Reply::Done`], [`Reply::Closed`] or
    /// [`Reply::Full`] (then main sends [`Push::Space`] when room frees up).
    Send { name: &'a str, item: &'a Bytes },
    /// Settles and grants credit: the items of the half-open sequence
    /// ranges `acked` are done with, those of `requeued` go back to the
    /// head of the queue (marked redelivered), and the child accepts up to
    /// `window` items not yet settled. Settling an item twice, or one main
    /// no longer holds for the child, does nothing, so repeated pulls are
    /// harmless. [`Reply::Done`].
    Pull {
        name: &'a str,
        acked: Vec<(u64, u64)>,
        requeued: Vec<u64>,
        window: u32,
        /// How long, in milliseconds, main lets the child hold an item
        /// before taking it back for another receiver (0: for ever).
        ack_wait_ms: u64,
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
    /// The channel carries another item type than the opener's.
    WrongType {
        actual: String,
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
    /// Items for the child's receivers, in queue order; they carry the
    /// child's sequence numbers `first`, `first + 1`, ... (what it settles
    /// them by), and those at the indexes `redelivered` went to a receiver
    /// before.
    Items {
        name: &'a str,
        first: u64,
        #[serde(borrow)]
        items: Vec<&'a Bytes>,
        redelivered: Vec<u32>,
    },
    /// The channel was closed (sends fail from now on).
    Closed { name: &'a str },
    /// The channel is closed and main holds no more items for it: once its
    /// buffer is empty, a receiver fails with `Closed`.
    Drained { name: &'a str },
    /// A full bounded channel has room again.
    Space { name: &'a str },
}
