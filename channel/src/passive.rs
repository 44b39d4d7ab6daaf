//! Passive receive: handlers with filters, run by a [`ReceiveLoop`].

use crate::sync;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::FutureExt;
use tokio::sync::Notify;

use crate::channel::Channel;
use crate::error::{Error, Result};

type Filter<T> = Box<dyn Fn(&T) -> bool + Send + Sync>;
type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

enum Run<T> {
    Sync(Box<dyn Fn(&T) + Send + Sync>),
    Async(Box<dyn Fn(Arc<T>) -> BoxFuture + Send + Sync>),
}

struct Handler<T> {
    filter: Filter<T>,
    run: Run<T>,
}

/// The handlers of one channel (whether a loop runs is kept beside the
/// queue, since every receive checks it).
pub(crate) struct Passive<T> {
    /// Replaced whole on each addition, so the loop takes a snapshot per
    /// item without holding a lock across an await.
    handlers: RwLock<Arc<Vec<Arc<Handler<T>>>>>,
}

impl<T> Default for Passive<T> {
    fn default() -> Self {
        Passive {
            handlers: RwLock::new(Arc::new(Vec::new())),
        }
    }
}

impl<T: Send + 'static> Passive<T> {
    fn add(&self, handler: Handler<T>) {
        let mut slot = sync::write(&self.handlers);
        let mut next = Vec::clone(&slot);
        next.push(Arc::new(handler));
        *slot = Arc::new(next);
    }

    pub(crate) fn add_sync(
        &self,
        filter: impl Fn(&T) -> bool + Send + Sync + 'static,
        handler: impl Fn(&T) + Send + Sync + 'static,
    ) {
        self.add(Handler {
            filter: Box::new(filter),
            run: Run::Sync(Box::new(handler)),
        });
    }

    pub(crate) fn add_async<F, Fut>(
        &self,
        filter: impl Fn(&T) -> bool + Send + Sync + 'static,
        handler: F,
    ) where
        F: Fn(Arc<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.add(Handler {
            filter: Box::new(filter),
            run: Run::Async(Box::new(move |item| Box::pin(handler(item)))),
        });
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Handler<T>>>> {
        sync::read(&self.handlers).clone()
    }
}

/// Hands `item` to every handler whose filter accepts it; a panic in a
/// filter or handler is logged and skipped.
async fn dispatch<T: Send + Sync + 'static>(channel: &str, passive: &Passive<T>, item: T) {
    let item = Arc::new(item);
    for (index, handler) in passive.snapshot().iter().enumerate() {
        let accepted = catch_unwind(AssertUnwindSafe(|| (handler.filter)(&item)));
        let outcome = match accepted {
            Ok(false) => continue,
            Ok(true) => match &handler.run {
                Run::Sync(run) => catch_unwind(AssertUnwindSafe(|| run(&item))),
                Run::Async(run) => {
                    let fut = catch_unwind(AssertUnwindSafe(|| run(item.clone())));
                    match fut {
                        Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
                        Err(panic) => Err(panic),
                    }
                }
            },
            Err(panic) => Err(panic),
        };
        if let Err(panic) = outcome {
            tracing::error!(
                channel,
                handler = index,
                panic = panic_message(&panic),
                "a receive handler panicked; the item is skipped for it and the loop goes on"
            );
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(not a string)"
    }
}

#[derive(Default)]
struct Stop {
    requested: AtomicBool,
    notify: Notify,
    done: AtomicBool,
    finished: Notify,
}

/// A running passive receive loop (the seed's `start_receive_loop`): it
/// receives every item of its channel and hands it to the channel's
/// handlers, until [`stop`](ReceiveLoop::stop)ped, dropped, or the channel
/// closes.
///
/// While it runs, active receives on the channel fail with
/// [`Error::ReceiveLoopRunning`]. Dropping it stops the loop without
/// waiting for it.
pub struct ReceiveLoop {
    channel: String,
    stop: Arc<Stop>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for ReceiveLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiveLoop")
            .field("channel", &self.channel)
            .field("on_thread", &self.thread.is_some())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl ReceiveLoop {
    fn claim<T: Send + 'static>(channel: &Channel<T>) -> Result<()> {
        if channel.shared().loop_running.swap(true, Ordering::AcqRel) {
            return Err(Error::ReceiveLoopRunning {
                channel: channel.name().to_owned(),
            });
        }
        Ok(())
    }

    pub(crate) fn start_thread<T: Send + Sync + 'static>(
        channel: Channel<T>,
    ) -> Result<ReceiveLoop> {
        Self::claim(&channel)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let runtime = match runtime {
            Ok(rt) => rt,
            Err(e) => {
                channel
                    .shared()
                    .loop_running
                    .store(false, Ordering::Release);
                return Err(Error::LoopStart(format!("no runtime: {e}")));
            }
        };
        let stop = Arc::new(Stop::default());
        let name = channel.name().to_owned();
        let s = stop.clone();
        let keep = channel.clone();
        let thread = std::thread::Builder::new()
            .name(format!("yuki-recv-{name}"))
            .spawn(move || runtime.block_on(run(channel, s)));
        match thread {
            Ok(thread) => Ok(ReceiveLoop {
                channel: name,
                stop,
                thread: Some(thread),
            }),
            Err(e) => {
                keep.shared().loop_running.store(false, Ordering::Release);
                Err(Error::LoopStart(format!("no thread: {e}")))
            }
        }
    }

    pub(crate) fn spawn_task<T: Send + Sync + 'static>(
        channel: Channel<T>,
        handle: &tokio::runtime::Handle,
    ) -> Result<ReceiveLoop> {
        Self::claim(&channel)?;
        let stop = Arc::new(Stop::default());
        let name = channel.name().to_owned();
        handle.spawn(run(channel, stop.clone()));
        Ok(ReceiveLoop {
            channel: name,
            stop,
            thread: None,
        })
    }

    fn request_stop(&self) {
        self.stop.requested.store(true, Ordering::Release);
        self.stop.notify.notify_one();
    }

    /// Stops the loop after the item it is handling. A loop on its own
    /// thread is waited for (unless `stop` is called by one of its own
    /// handlers); a loop running as a task is only told to stop (use
    /// [`stop_async`](ReceiveLoop::stop_async) to wait for it).
    pub fn stop(mut self) {
        self.request_stop();
        if let Some(thread) = self.thread.take() {
            // Called from a handler on the loop's own thread: it ends after
            // this item, and cannot wait for itself.
            if thread.thread().id() == std::thread::current().id() {
                return;
            }
            if thread.join().is_err() {
                tracing::error!(channel = %self.channel, "the receive loop's thread panicked");
            }
        }
    }

    /// Stops the loop and waits until it has finished.
    pub async fn stop_async(self) {
        self.request_stop();
        let finished = self.stop.finished.notified();
        if !self.stop.done.load(Ordering::Acquire) {
            finished.await;
        }
    }

    /// Whether the loop has ended (stopped, or its channel closed).
    pub fn is_finished(&self) -> bool {
        self.stop.done.load(Ordering::Acquire)
    }
}

impl Drop for ReceiveLoop {
    fn drop(&mut self) {
        self.request_stop();
    }
}

async fn run<T: Send + Sync + 'static>(channel: Channel<T>, stop: Arc<Stop>) {
    let passive = &channel.shared().passive;
    loop {
        if stop.requested.load(Ordering::Acquire) {
            break;
        }
        let item = tokio::select! {
            biased;
            _ = stop.notify.notified() => break,
            item = channel.recv_async_passive() => item,
        };
        match item {
            Ok(item) => dispatch(channel.name(), passive, item).await,
            Err(e) => {
                tracing::debug!(channel = channel.name(), error = %e, "receive loop ends");
                break;
            }
        }
    }
    channel
        .shared()
        .loop_running
        .store(false, Ordering::Release);
    stop.done.store(true, Ordering::Release);
    stop.finished.notify_waiters();
}
