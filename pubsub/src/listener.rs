//! Callbacks: `on_message` (sync) and `on_message_async`, the passive way to
//! receive (the seed's `on_subscriber_receive`).
//!
//! Each handler is a subscription of its own with its own buffer, so a slow
//! handler lags alone and never delays the others.
//!
//! - A sync handler runs on a thread of its own, named after its pattern:
//!   one stuck handler cannot hold up another.
//! - An async handler runs as a task on the tokio runtime that registered
//!   it, awaiting each call before the next.
//!
//! Messages reach a handler one at a time, in order. A handler that panics
//! is caught and logged, and gets the next message; lag and undecodable
//! messages are logged as warnings. The returned [`Listener`] stops the
//! handler when dropped (after the call in progress), or runs it for the rest
//! of the process once [`Listener::detach`]ed.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::inbox::Inbox;
use crate::pattern::Pattern;
use crate::pubsub::PubSub;
use crate::subscription::{Message, Subscription};

/// Keeps a handler registered with [`PubSub::on_message`] or
/// [`PubSub::on_message_async`] running; dropping it stops the handler.
#[must_use = "the handler stops when the Listener is dropped; call detach() to keep it"]
pub struct Listener {
    pubsub: PubSub,
    inbox: Arc<Inbox>,
}

impl Listener {
    /// The pattern the handler receives.
    pub fn pattern(&self) -> &Pattern {
        self.inbox.pattern()
    }

    /// Stops the handler after the call in progress, if any, and
    /// unsubscribes it (the same as dropping the listener).
    pub fn stop(self) {}

    /// Keeps the handler running for as long as the process is connected.
    pub fn detach(self) {
        std::mem::forget(self);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.pubsub.close(&self.inbox);
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("pattern", self.inbox.pattern())
            .finish()
    }
}

impl PubSub {
    /// Calls `handler` with every message on a topic `pattern` matches, on a
    /// thread of its own (see the [module doc](crate::listener)).
    ///
    /// Fails like [`PubSub::subscribe`], or with [`Error::Spawn`] when no
    /// thread can be started.
    pub fn on_message<M, F>(&self, pattern: &str, mut handler: F) -> Result<Listener>
    where
        M: DeserializeOwned + 'static,
        F: FnMut(Message<M>) + Send + 'static,
    {
        let subscription = self.subscribe::<M>(pattern)?;
        let listener = self.listener(&subscription);
        std::thread::Builder::new()
            .name(format!("yuki-pubsub {pattern}"))
            .spawn(move || {
                let pattern = subscription.pattern().as_str().to_owned();
                loop {
                    match subscription.recv() {
                        Ok(message) => {
                            if let Err(panic) =
                                std::panic::catch_unwind(AssertUnwindSafe(|| handler(message)))
                            {
                                log_panic(&pattern, &panic);
                            }
                        }
                        Err(Error::Closed | Error::Disconnected(_)) => break,
                        Err(e) => tracing::warn!(pattern, error = %e, "message handler"),
                    }
                }
            })
            .map_err(|e| Error::Spawn(e.to_string()))?;
        Ok(listener)
    }

    /// Calls the async `handler` with every message on a topic `pattern`
    /// matches, as a task on the current tokio runtime (see the
    /// [module doc](crate::listener)).
    ///
    /// Fails like [`PubSub::subscribe`], or with [`Error::NoRuntime`] outside
    /// a tokio runtime.
    pub fn on_message_async<M, F, Fut>(&self, pattern: &str, mut handler: F) -> Result<Listener>
    where
        M: DeserializeOwned + Send + 'static,
        F: FnMut(Message<M>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let subscription = self.subscribe::<M>(pattern)?;
        let listener = self.listener(&subscription);
        runtime.spawn(async move {
            let pattern = subscription.pattern().as_str().to_owned();
            loop {
                match subscription.recv_async().await {
                    Ok(message) => {
                        let call = std::panic::catch_unwind(AssertUnwindSafe(|| handler(message)));
                        let done = match call {
                            Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
                            Err(panic) => Err(panic),
                        };
                        if let Err(panic) = done {
                            log_panic(&pattern, &panic);
                        }
                    }
                    Err(Error::Closed | Error::Disconnected(_)) => break,
                    Err(e) => tracing::warn!(pattern, error = %e, "message handler"),
                }
            }
        });
        Ok(listener)
    }

    fn listener<M>(&self, subscription: &Subscription<M>) -> Listener {
        Listener {
            pubsub: self.clone(),
            inbox: subscription.inbox().clone(),
        }
    }
}

fn log_panic(pattern: &str, panic: &Box<dyn Any + Send>) {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-text panic");
    tracing::error!(
        pattern,
        panic = what,
        "a message handler panicked; it goes on with the next message"
    );
}
