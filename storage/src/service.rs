//! Main's side of the wire: the service children call.

use std::sync::Arc;

use serde_bytes::Bytes;
use yuki_channel::{PeerId, Service, codec};

use crate::data::Data;
use crate::error::Error;
use crate::limits::{check_batch, check_op, check_prefix};
use crate::protocol::{Failure, Op, Reply, Request};

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
        let data = &self.data;
        match request {
            Request::Op(op) => {
                // A child checks before sending; main checks again, as it
                // trusts no frame, and its own limit decides.
                if let Err(e) = check_op(&op, self.max_value) {
                    return failed(&e, reply);
                }
                match op {
                    // Encoded straight from the map: no copy of the value.
                    Op::Get(key) => data
                        .get_with(key, |v| {
                            reply.reserve(v.len() + 16);
                            codec::encode_into(&Reply::Value(Some(Bytes::new(v))), reply)
                        })
                        .unwrap_or_else(|| codec::encode_into(&Reply::Value(None), reply)),
                    Op::Contains(key) => {
                        codec::encode_into(&Reply::Bool(data.contains(key)), reply)
                    }
                    op => codec::encode_into(&data.apply_one(&op).to_reply(), reply),
                }
            }
            Request::Batch(ops) => {
                if let Err(e) = check_batch(&ops, self.max_value) {
                    return failed(&e, reply);
                }
                let outcomes = data.apply_batch(&ops);
                let replies = outcomes.iter().map(|o| o.to_reply()).collect();
                codec::encode_into(&Reply::Batch(replies), reply)
            }
            Request::GetAll => data.with_snapshot(|entries| {
                let entries = entries
                    .into_iter()
                    .map(|(k, v)| (k, Bytes::new(v)))
                    .collect();
                codec::encode_into(&Reply::Entries(entries), reply)
            }),
            Request::Keys(prefix) => {
                if let Err(e) = check_prefix(prefix) {
                    return failed(&e, reply);
                }
                data.with_keys(prefix, |keys| codec::encode_into(&Reply::Keys(keys), reply))
            }
            Request::Len => codec::encode_into(&Reply::Count(data.len() as u64), reply),
            Request::Clear => codec::encode_into(&Reply::Count(data.clear() as u64), reply),
            Request::Purge => codec::encode_into(&Reply::Count(data.purge_expired() as u64), reply),
            Request::Watch { id, prefix } => {
                if let Err(e) = check_prefix(prefix) {
                    return failed(&e, reply);
                }
                data.watchers.add_remote(from, id, prefix);
                codec::encode_into(&Reply::Done, reply)
            }
            Request::Unwatch { id } => {
                data.watchers.remove_remote(from, id);
                codec::encode_into(&Reply::Done, reply)
            }
        }
    }
}
