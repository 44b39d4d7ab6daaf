//! The frames pub/sub sends over the transport, encoded with bincode.
//!
//! Children call main's service [`SERVICE`] with a [`Request`]; main answers
//! with a [`Reply`] and delivers to children with [`Push`] frames on the
//! stream of the same name. Payloads are the publisher's encoded message,
//! carried as bytes and decoded by each subscription as its own type.

use serde::{Deserialize, Serialize};

/// The name of main's service and of the push stream to children.
pub(crate) const SERVICE: &str = "yuki.pubsub";

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request<'a> {
    /// Publish `payload` on `topic`; the reply counts reached subscriptions.
    Publish {
        topic: &'a str,
        #[serde(with = "serde_bytes", borrow)]
        payload: &'a [u8],
    },
    /// The caller has one more subscription on `pattern`.
    Subscribe { pattern: &'a str },
    /// The caller has one subscription less on `pattern`.
    Unsubscribe { pattern: &'a str },
    /// Publish `count` payloads on `topic`, written with `codec::put_frame`.
    PublishBatch {
        topic: &'a str,
        count: u64,
        #[serde(with = "serde_bytes", borrow)]
        payloads: &'a [u8],
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// Done; for a publish, how many subscriptions it reached.
    Done(u64),
    /// Refused, with the reason in words.
    Refused(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Push<'a> {
    /// A message for this process's subscriptions that match `topic`.
    ///
    /// Topics travel as bytes: a child checks that they are text only when
    /// a topic differs from the last one, not for every message.
    Message {
        #[serde(with = "serde_bytes", borrow)]
        topic: &'a [u8],
        #[serde(with = "serde_bytes", borrow)]
        payload: &'a [u8],
    },
    /// Main could not deliver `count` messages for `pattern` to this process.
    Lost { pattern: &'a str, count: u64 },
    /// Several messages on `topic`, written with `codec::put_frame`.
    Batch {
        #[serde(with = "serde_bytes", borrow)]
        topic: &'a [u8],
        #[serde(with = "serde_bytes", borrow)]
        payloads: &'a [u8],
    },
}
