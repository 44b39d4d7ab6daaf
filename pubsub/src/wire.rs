//! The frames pub/sub sends over the transport, encoded with bincode.
//!
//! Children call main's service [`SERVICE`] with a [`Request`]; main answers
//! with a [`Reply`] and delivers to children with [`Push`] frames on the
//! stream of the same name. Payloads are the publisher's encoded message,
//! carried as bytes and decoded by each subscription as its own type.

use serde::{Deserialize, Serialize};
use yuki_channel::codec;

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

impl<'a> Push<'a> {
    /// Decodes a push frame: a single message (most of what a child
    /// receives) is read directly, in the codec's own layout; anything else,
    /// and anything malformed, goes through the codec.
    pub(crate) fn decode(frame: &'a [u8]) -> yuki_channel::Result<Push<'a>> {
        if let Some((0, rest)) = frame.split_first() {
            if let Some((topic, rest)) = codec::raw::split_bytes(rest) {
                if let Some((payload, [])) = codec::raw::split_bytes(rest) {
                    return Ok(Push::Message { topic, payload });
                }
            }
        }
        codec::decode_borrowed(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_decode_as_the_codec_encodes_them() {
        for (topic_len, payload_len) in [(0, 0), (1, 250), (12, 251), (250, 65_535), (3, 65_536)] {
            let topic = vec![b't'; topic_len];
            let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
            let frame = codec::encode(&Push::Message {
                topic: &topic,
                payload: &payload,
            })
            .unwrap();
            match Push::decode(&frame).unwrap() {
                Push::Message {
                    topic: t,
                    payload: p,
                } => {
                    assert_eq!((t, p), (&topic[..], &payload[..]));
                }
                other => panic!("{other:?}"),
            }
            // Cut short or with bytes after it, it is an error, as for the codec.
            assert!(Push::decode(&frame[..frame.len() - 1]).is_err());
            let mut longer = frame.clone();
            longer.push(0);
            assert!(Push::decode(&longer).is_err());
        }
        let lost = codec::encode(&Push::Lost {
            pattern: "a.>",
            count: 3,
        })
        .unwrap();
        assert!(matches!(
            Push::decode(&lost).unwrap(),
            Push::Lost {
                pattern: "a.>",
                count: 3
            }
        ));
        let batch = codec::encode(&Push::Batch {
            topic: b"a",
            payloads: b"xyz",
        })
        .unwrap();
        assert!(matches!(
            Push::decode(&batch).unwrap(),
            Push::Batch {
                topic: b"a",
                payloads: b"xyz"
            }
        ));
        assert!(Push::decode(b"").is_err());
        assert!(Push::decode(&[0, 255]).is_err());
    }
}
