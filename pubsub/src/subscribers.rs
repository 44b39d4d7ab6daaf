//! The subscriptions of this process, by pattern: where a message that
//! reached the process is fanned out to each subscription it matches.

use std::cell::RefCell;
use std::sync::{Arc, RwLock};
use yuki_channel::sync;

use crate::inbox::{End, Envelope, Inbox};
use crate::memo::{Memo, Stamp};
use crate::pattern::Pattern;
use crate::table::PatternTable;

#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    table: RwLock<PatternTable<Vec<Arc<Inbox>>>>,
    stamp: Stamp,
}

thread_local! {
    /// What the last topic delivered on this thread matched.
    static LAST: RefCell<Memo<Matched>> = RefCell::new(Memo::default());
}

/// The subscriptions one topic matched, and (when there are some) the
/// topic as shared by the messages delivered on it: one allocation per
/// topic, not per message.
#[derive(Debug, Default)]
struct Matched {
    inboxes: Vec<Arc<Inbox>>,
    topic: Option<Arc<str>>,
}

impl Subscribers {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, PatternTable<Vec<Arc<Inbox>>>> {
        sync::read(&self.table)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, PatternTable<Vec<Arc<Inbox>>>> {
        sync::write(&self.table)
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

    /// Queues `payload`, published on `topic`, in every matching
    /// subscription; returns how many it reached.
    ///
    /// The topic comes as bytes, as main sends it: it is checked to be text
    /// only when it differs from the last one delivered on this thread.
    /// One that is not text reaches nothing.
    pub(crate) fn deliver(&self, topic: &[u8], payload: &[u8]) -> usize {
        let stamp = self.stamp.now();
        LAST.with(|last| {
            let Ok(mut memo) = last.try_borrow_mut() else {
                // Delivering from within a delivery: no memo to spare.
                let mut alone = Memo::default();
                return self.deliver_with(&mut alone, stamp, topic, payload);
            };
            self.deliver_with(&mut memo, stamp, topic, payload)
        })
    }

    fn deliver_with(
        &self,
        memo: &mut Memo<Matched>,
        stamp: (u64, u64),
        topic: &[u8],
        payload: &[u8],
    ) -> usize {
        if !memo.fits(stamp, topic) {
            let Ok(text) = std::str::from_utf8(topic) else {
                tracing::warn!("ignoring a message whose topic is not text");
                return 0;
            };
            memo.reset(stamp, text);
            let matched = &mut memo.value;
            matched.inboxes.clear();
            self.read()
                .for_each_match(text, |list| matched.inboxes.extend(list.iter().cloned()));
            matched.topic = (!matched.inboxes.is_empty()).then(|| Arc::from(text));
        }
        let matched = &memo.value;
        let (Some((last, others)), Some(topic)) = (matched.inboxes.split_last(), &matched.topic)
        else {
            return 0;
        };
        let message = Envelope {
            topic: topic.clone(),
            payload: payload.into(),
        };
        for inbox in others {
            inbox.deliver(message.clone());
        }
        last.deliver(message);
        matched.inboxes.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_by_topic_with_and_without_the_memo() {
        let subscribers = Subscribers::default();
        let inbox = Arc::new(Inbox::new(Pattern::new("a.*").unwrap(), 8));
        subscribers.add(inbox.clone());
        assert_eq!(subscribers.deliver(b"a.b", b"1"), 1);
        assert_eq!(subscribers.deliver(b"a.b", b"2"), 1);
        assert_eq!(subscribers.deliver(b"x", b"3"), 0);
        // A delivery made while another holds this thread's memo.
        LAST.with(|last| {
            let _busy = last.borrow_mut();
            assert_eq!(subscribers.deliver(b"a.c", b"4"), 1);
        });
        let mut got = Vec::new();
        while let Ok(e) = inbox.try_next() {
            got.push((e.topic.to_string(), e.payload.to_vec()));
        }
        let want = [("a.b", b"1"), ("a.b", b"2"), ("a.c", b"4")];
        let want: Vec<_> = want
            .iter()
            .map(|(t, p)| (t.to_string(), p.to_vec()))
            .collect();
        assert_eq!(got, want);
        // A topic that is not text reaches nothing.
        assert_eq!(subscribers.deliver(b"a.\xff", b"6"), 0);
        assert_eq!(inbox.try_next().unwrap_err(), crate::Error::Empty);
        // A change of the table is seen at once.
        assert!(subscribers.remove(&inbox));
        assert_eq!(subscribers.deliver(b"a.b", b"5"), 0);
    }
}
