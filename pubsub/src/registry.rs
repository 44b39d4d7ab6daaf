//! The subscriptions of this process, by pattern: where a message that
//! reached the process is fanned out to each subscription it matches.

use std::sync::{Arc, RwLock};

use crate::inbox::{End, Envelope, Inbox};
use crate::pattern::Pattern;
use crate::table::PatternTable;

#[derive(Debug, Default)]
pub(crate) struct Registry {
    table: RwLock<PatternTable<Vec<Arc<Inbox>>>>,
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
        self.write().entry(&pattern).push(inbox);
    }

    /// Removes `inbox`; false if it was not registered (already removed).
    pub(crate) fn remove(&self, inbox: &Arc<Inbox>) -> bool {
        let mut found = false;
        self.write().update(inbox.pattern(), |list| {
            if let Some(at) = list.iter().position(|i| Arc::ptr_eq(i, inbox)) {
                list.swap_remove(at);
                found = true;
            }
            list.is_empty()
        });
        found
    }

    /// Queues the message made by `make` (only if some subscription matches)
    /// in every matching subscription; returns how many it reached.
    pub(crate) fn deliver(&self, topic: &str, make: impl FnOnce() -> Envelope) -> usize {
        let table = self.read();
        let mut make = Some(make);
        let mut message: Option<Arc<Envelope>> = None;
        let mut reached = 0;
        table.for_each_match(topic, |list| {
            if message.is_none() {
                message = make.take().map(|make| Arc::new(make()));
            }
            if let Some(m) = &message {
                for inbox in list {
                    inbox.deliver(m);
                    reached += 1;
                }
            }
        });
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

    /// Ends every subscription.
    pub(crate) fn end_all(&self, end: &End) {
        self.read().for_each(|list| {
            for inbox in list {
                inbox.end(end.clone());
            }
        });
    }
}
