//! A per-thread memo of the last lookup by topic.
//!
//! Publishers usually send many messages on one topic in a row; remembering
//! what the last topic matched, until the table changes, spares the walk of
//! the pattern table (and its hashing) for each message.

use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies one table and counts its changes.
#[derive(Debug)]
pub(crate) struct Stamp {
    table: u64,
    changes: AtomicU64,
}

impl Default for Stamp {
    fn default() -> Stamp {
        static TABLES: AtomicU64 = AtomicU64::new(0);
        Stamp {
            table: TABLES.fetch_add(1, Ordering::Relaxed),
            changes: AtomicU64::new(0),
        }
    }
}

impl Stamp {
    /// Records a change; call it while the table's write lock is held.
    pub(crate) fn bump(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// The table's identity and version now; read it before the lookup.
    pub(crate) fn now(&self) -> (u64, u64) {
        (self.table, self.changes.load(Ordering::Acquire))
    }
}

/// What a topic matched in one version of one table.
#[derive(Debug, Default)]
pub(crate) struct Memo<T> {
    stamp: (u64, u64),
    topic: String,
    pub(crate) value: T,
}

impl<T> Memo<T> {
    /// Whether this memo answers `topic` in the table version `stamp`.
    pub(crate) fn fits(&self, stamp: (u64, u64), topic: &[u8]) -> bool {
        self.stamp == stamp && self.topic.as_bytes() == topic
    }

    /// Reuses this memo's buffers for a fresh lookup.
    pub(crate) fn reset(&mut self, stamp: (u64, u64), topic: &str) {
        self.stamp = stamp;
        self.topic.clear();
        self.topic.push_str(topic);
    }
}
