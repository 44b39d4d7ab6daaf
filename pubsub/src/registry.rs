//! The subscriptions of this process, by pattern: where a message that
//! reached the process is fanned out to each subscription it matches.

use std::cell::Cell;
use std::sync::{Arc, RwLock};

use crate::inbox::{End, Envelope, Inbox};
use crate::memo::{Memo, Stamp};
use crate::pattern::Pattern;
use crate::table::PatternTable;

#[derive(Debug, Default)]
pub(crate) struct Registry {
    table: RwLock<PatternTable<Vec<Arc<Inbox>>>>,
    stamp: Stamp,
}

thread_local! {
    /// The subscriptions the last topic delivered on this thread matched.
    static LAST: Cell<Option<Memo<Vec<Arc<Inbox>>>>> = const { Cell::new(None) };
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, PatternTable<Vec<Arc<Inbox>>>> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, PatternTable<Vec<Arc<Inbox>>>> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn add(&self, inbox: Arc<Inbox>) {
        let pattern = inbox.pattern().clone();
        let mut table = self.write();
        table.entry(&pattern).push(inbox);
        self.stamp.bump();
    }

    /// Removes `inbox`; false if it was not registered (already removed).
    pub(crate) fn remove(&self, inbox: &Arc<Inbox>) -> bool {
        let mut found = false;
        let mut table = self.write();
        table.update(inbox.pattern(), |list| {
            if let Some(at) = list.iter().position(|i| Arc::ptr_eq(i, inbox)) {
                list.swap_remove(at);
                found = true;
            }
            list.is_empty()
        });
        self.stamp.bump();
        found
    }

    /// Queues the message made by `make` (only if some subscription matches)
    /// in every matching subscription; returns how many it reached.
    pub(crate) fn deliver(&self, topic: &str, make: impl FnOnce() -> Envelope) -> usize {
        let stamp = self.stamp.now();
        let mut memo = LAST.take().unwrap_or_default();
        if !memo.fits(stamp, topic) {
            memo.reset(stamp, topic);
            memo.value.clear();
            self.read()
                .for_each_match(topic, |list| memo.value.extend(list.iter().cloned()));
        }
        let reached = memo.value.len();
        if let Some((last, others)) = memo.value.split_last() {
            let message = make();
            for inbox in others {
                inbox.deliver(message.clone());
            }
            last.deliver(message);
        }
        LAST.set(Some(memo));
        reached
    }

    /// Tells every subscription on exactly `pattern` that `n` messages were lost.
    pub(crate) fn lose(&self, pattern: &Pattern, n: u64) {
        if let Some(list) = self.read().get(pattern) {
            for inbox in list {
                inbox.lose(n);
            }
        }
    }

    /// Queues the message made by `make` in every subscription on exactly
    /// `pattern`; returns how many it reached.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn deliver_to(&self, pattern: &Pattern, make: impl FnOnce() -> Envelope) -> usize {
        let table = self.read();
        let Some(list) = table.get(pattern).filter(|l| !l.is_empty()) else {
            return 0;
        };
        let message = make();
        for inbox in list {
            inbox.deliver(message.clone());
        }
        list.len()
    }

    /// Tells every subscription that messages may have been lost.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn gap_all(&self) {
        self.read()
            .for_each(|list| list.iter().for_each(|inbox| inbox.gap()));
    }

    /// Ends every subscription.
    pub(crate) fn end_all(&self, end: &End) {
        self.read().for_each(|list| {
            for inbox in list {
                inbox.end(end.clone());
            }
        });
    }
}
