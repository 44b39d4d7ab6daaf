//! Main's side of the wire: the service children call.

use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};

use yuki_channel::{PeerId, Service, codec};

use crate::backend::local::answer;
use crate::data::Data;
use crate::error::Error;
use crate::limits::check_request;
use crate::protocol::{Failure, Reply, Request};

/// Serves the store's requests from children, straight from main's map.
pub(crate) struct StoreService {
    pub(crate) data: Arc<Data>,
    pub(crate) max_frame: usize,
    /// Main's [`Config::max_value_len`](crate::Config::max_value_len).
    pub(crate) max_value: usize,
}

impl Service for StoreService {
    fn call(&self, from: PeerId, request: &[u8], reply: &mut Vec<u8>) -> yuki_channel::Result<()> {
        // A request that does not decode is a protocol violation: the
        // transport cuts the child off and logs why.
        let request: Request<'_> = codec::decode_borrowed(request)?;
        self.answer(from, request, reply)?;
        if reply.len() > self.max_frame {
            let size = reply.len() as u64;
            reply.clear();
            let failure = Failure::ReplyTooLarge {
                size,
                max: self.max_frame as u64,
            };
            codec::encode_into(&Reply::Failed(failure), reply)?;
        }
        Ok(())
    }
}

/// The start of a [`Reply::Batch`] of `n` replies: what its encoding
/// holds before the first reply, so the replies can follow one by one.
struct BatchHead(usize);

/// [`Reply::Batch`]'s place among the variants of [`Reply`].
const BATCH_VARIANT: u32 = 7;

impl Serialize for BatchHead {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_variant("Reply", BATCH_VARIANT, "Batch", &SeqLen(self.0))
    }
}

/// A sequence's length without its items, which the caller writes after it.
struct SeqLen(usize);

impl Serialize for SeqLen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_seq(Some(self.0))?.end()
    }
}

fn failed(e: &Error, reply: &mut Vec<u8>) -> yuki_channel::Result<()> {
    codec::encode_into(&Reply::Failed(Failure::from_error(e)), reply)
}

impl StoreService {
    fn answer(
        &self,
        from: PeerId,
        request: Request<'_>,
        reply: &mut Vec<u8>,
    ) -> yuki_channel::Result<()> {
        // A child checks before sending; main checks again, as it trusts
        // no frame, and its own limit decides.
        if let Err(e) = check_request(&request, self.max_value) {
            return failed(&e, reply);
        }
        match request {
            Request::Watch { id, prefix } => {
                self.data.watchers.add_remote(from, id, prefix);
                codec::encode_into(&Reply::Done, reply)
            }
            Request::Unwatch { id } => {
                self.data.watchers.remove_remote(from, id);
                codec::encode_into(&Reply::Done, reply)
            }
            Request::Batch(ops) => {
                // Each reply is encoded as its operation is applied, a
                // value straight from the map: nothing is copied for it.
                codec::encode_into(&BatchHead(ops.len()), reply)?;
                let mut encoded = Ok(());
                self.data.answer_batch(&ops, |answer| {
                    if encoded.is_ok() {
                        encoded = codec::encode_into(&answer, reply);
                    }
                });
                encoded
            }
            // Encoded straight from the map: no copy of a value.
            request => answer(&self.data, &request, |answer| {
                if let Reply::Value(Some(v)) = &answer {
                    reply.reserve(v.len() + 16);
                }
                codec::encode_into(&answer, reply)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_bytes::Bytes;

    use super::*;

    /// The head, then each reply encoded alone, is the encoding of the
    /// whole `Reply::Batch`: with no replies, a few, and more than a
    /// one-byte length holds.
    #[test]
    fn a_batch_head_and_its_replies_encode_as_the_whole_batch() {
        for n in [0usize, 1, 3, 250, 251, 300] {
            let values: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; i % 5]).collect();
            let replies: Vec<Reply<'_>> = values
                .iter()
                .enumerate()
                .map(|(i, v)| match i % 4 {
                    0 => Reply::Value(Some(Bytes::new(v))),
                    1 => Reply::Done,
                    2 => Reply::Bool(true),
                    _ => Reply::Value(None),
                })
                .collect();
            let mut streamed = codec::encode(&BatchHead(n)).unwrap();
            for r in &replies {
                codec::encode_into(r, &mut streamed).unwrap();
            }
            assert_eq!(
                streamed,
                codec::encode(&Reply::Batch(replies)).unwrap(),
                "{n} replies"
            );
        }
    }
}
