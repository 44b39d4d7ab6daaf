//! The backend in the process that owns the data: main's map, read and
//! written in place.

use std::sync::Arc;
use std::time::Duration;

use serde_bytes::Bytes;

use crate::backend::Backend;
use crate::batch::Outcome;
use crate::data::Data;
use crate::error::Result;
use crate::protocol::{Failure, Op, Reply, Request};
use crate::watch::{Watch, WatchQueue};

/// Main's map (or a local store's), with the settings of its watches.
#[derive(Clone)]
pub(crate) struct Local {
    pub(crate) data: Arc<Data>,
    pub(crate) watch_capacity: usize,
}

/// Runs `request` on `data` and hands the reply to `f`, failures included.
/// Values and keys are borrowed from the map, under its lock, for as long
/// as `f` runs: main's service encodes them from there, the local store
/// decodes them from there, and nothing is copied on the way.
///
/// Watches are not requests here: each side opens them itself.
#[inline]
pub(crate) fn answer<T>(data: &Data, request: &Request<'_>, f: impl FnOnce(Reply<'_>) -> T) -> T {
    match request {
        Request::Op(Op::Get(key)) => data.read(key, |v| f(Reply::Value(v.map(Bytes::new)))),
        Request::Op(Op::Contains(key)) => f(Reply::Bool(data.contains(key))),
        Request::Op(op) => f(apply(data, op).to_reply()),
        Request::Batch(ops) => {
            let outcomes = data.apply_batch(ops);
            f(Reply::Batch(
                outcomes.iter().map(Outcome::to_reply).collect(),
            ))
        }
        Request::GetAll => data.with_snapshot(|entries| {
            f(Reply::Entries(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, Bytes::new(v)))
                    .collect(),
            ))
        }),
        Request::Keys(prefix) => data.with_keys(prefix, |keys| f(Reply::Keys(keys))),
        Request::KeysMatching(pattern) => data.with_matching(pattern, |keys| f(Reply::Keys(keys))),
        Request::Len => f(Reply::Count(data.len() as u64)),
        Request::Clear => f(Reply::Count(data.clear() as u64)),
        Request::Purge => f(Reply::Count(data.purge_expired() as u64)),
        Request::Watch { .. } | Request::Unwatch { .. } => f(Reply::Failed(Failure::Other(
            "a watch is opened by the store that owns it, not sent as a request".into(),
        ))),
    }
}

/// One operation on the map. Not generic, so it is compiled once, here,
/// with the map's code inlined into it, rather than into every caller.
fn apply(data: &Data, op: &Op<'_>) -> Outcome {
    data.apply_one(op)
}

impl Backend for Local {
    #[inline]
    fn execute<R>(
        &self,
        request: Request<'_>,
        _timeout: Option<Duration>,
        read: impl FnOnce(Reply<'_>) -> Result<R>,
    ) -> Result<R> {
        answer(&self.data, &request, |reply| match reply {
            Reply::Failed(f) => Err(f.into()),
            reply => read(reply),
        })
    }

    fn execute_async<R, P>(
        &self,
        request: Request<'_>,
        timeout: Option<Duration>,
        read: P,
    ) -> impl Future<Output = Result<R>> + Send + 'static
    where
        R: Send + 'static,
        P: FnOnce(Reply<'_>) -> Result<R> + Send + 'static,
    {
        // Nothing to wait for: the map answers at once.
        std::future::ready(self.execute(request, timeout, read))
    }

    fn watch(&self, prefix: &str, _timeout: Option<Duration>) -> Result<Watch> {
        let (inbox, rx) = WatchQueue::new(self.watch_capacity);
        let id = self.data.watchers.add_local(prefix, inbox.clone());
        let weak = Arc::downgrade(&self.data);
        let cancel = Box::new(move || {
            if let Some(data) = weak.upgrade() {
                data.watchers.remove_local(id);
            }
        });
        Ok(Watch::new(inbox, rx, cancel))
    }

    fn watch_async(
        &self,
        prefix: &str,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Watch>> + Send {
        std::future::ready(self.watch(prefix, timeout))
    }
}
