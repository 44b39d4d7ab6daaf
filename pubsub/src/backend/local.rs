//! Topics within this process only: a publish is a delivery to this
//! process's subscriptions, and nothing else.

use std::fmt;
use std::time::Duration;

use super::{Backend, Payloads, Pending};
use crate::error::Result;
use crate::pattern::Pattern;
use crate::subscribers::Subscribers;

/// The backend of `PubSub::local`.
#[derive(Debug, Default)]
pub(crate) struct Local {
    subscribers: Subscribers,
}

impl Backend for Local {
    fn subscribers(&self) -> &Subscribers {
        &self.subscribers
    }

    fn publish(&self, topic: &str, payloads: Payloads<'_>, _: Option<Duration>) -> Result<usize> {
        Ok(payloads
            .iter()
            .map(|payload| self.subscribers.deliver(topic.as_bytes(), payload))
            .sum())
    }

    fn publish_async(&self, topic: &str, payload: &[u8], within: Option<Duration>) -> Pending {
        Pending::Ready(self.publish(topic, Payloads::One(payload), within))
    }

    fn subscribe(&self, _: &Pattern, _: Option<Duration>) -> Result<()> {
        Ok(())
    }

    fn unsubscribe(&self, _: &Pattern) {}

    fn describe(&self, out: &mut fmt::DebugStruct<'_, '_>) {
        out.field("mode", &"local");
    }
}
