//! Main's side of the wire: the service children call.

use std::sync::Arc;

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
