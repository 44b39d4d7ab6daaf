//! Per-thread buffers reused across publishes and deliveries, so the hot
//! path allocates as little as it can.

use std::cell::Cell;
use std::sync::Arc;

thread_local! {
    /// Encoding buffers, reused so that a publish allocates nothing for
    /// them. Taken while in use, so a nested publish gets its own.
    static SCRATCH: Cell<Vec<Vec<u8>>> = const { Cell::new(Vec::new()) };
    /// The last topic a message was delivered on here, shared by the next
    /// message on the same topic instead of a new allocation.
    static LAST_TOPIC: Cell<Option<Arc<str>>> = const { Cell::new(None) };
}

/// Buffers larger than this are not kept for reuse.
const KEEP_SCRATCH: usize = 64 << 10;

pub(crate) fn scratch() -> Vec<u8> {
    SCRATCH.with(|s| {
        let mut all = s.take();
        let buf = all.pop().unwrap_or_default();
        s.set(all);
        buf
    })
}

pub(crate) fn keep_scratch(mut buf: Vec<u8>) {
    if buf.capacity() <= KEEP_SCRATCH {
        buf.clear();
        SCRATCH.with(|s| {
            let mut all = s.take();
            if all.len() < 4 {
                all.push(buf);
            }
            s.set(all);
        });
    }
}

/// `topic` as a shared string, reusing the last one made on this thread.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn shared_topic(topic: &str) -> Arc<str> {
    LAST_TOPIC.with(|last| {
        let shared = match last.take() {
            Some(t) if &*t == topic => t,
            _ => Arc::from(topic),
        };
        last.set(Some(shared.clone()));
        shared
    })
}
