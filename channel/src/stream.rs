//! [`Channel`] as a `futures_core::Stream`, like `Subscription` and `Watch`.

use crate::sync;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use crate::channel::Channel;
use crate::error::{Error, Result};

type Receive<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// The receive a stream has in flight, kept between polls. In a mutex only
/// so that a channel stays `Sync`; the stream reaches it through `&mut`.
pub(crate) struct Pending<T>(Mutex<Option<Receive<T>>>);

impl<T> Default for Pending<T> {
    fn default() -> Pending<T> {
        Pending(Mutex::new(None))
    }
}

fn slot<T>(pending: &mut Pending<T>) -> &mut Option<Receive<T>> {
    sync::get_mut(&mut pending.0)
}

/// Receives as [`Channel::recv_async`] does: each item once, across every
/// receiver of the channel. Errors are items; the stream ends once the
/// channel is closed and drained ([`Error::Closed`]) or main is gone
/// ([`Error::Disconnected`]).
///
/// ```
/// use futures_util::StreamExt;
/// use yuki_channel::Channel;
///
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// rt.block_on(async {
///     let mut jobs = Channel::<u32>::new("jobs");
///     for n in 1..=3 {
///         jobs.send(n).unwrap();
///     }
///     jobs.close();
///     let got: Vec<u32> = (&mut jobs).map(|r| r.unwrap()).collect().await;
///     assert_eq!(got, [1, 2, 3]);
/// });
/// ```
impl<T: Send + 'static> futures_core::Stream for Channel<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = self.get_mut();
        let mut receive = match slot(&mut this.pending).take() {
            Some(receive) => receive,
            None => {
                let me = this.clone();
                Box::pin(async move { me.recv_async().await })
            }
        };
        match receive.as_mut().poll(cx) {
            Poll::Pending => {
                *slot(&mut this.pending) = Some(receive);
                Poll::Pending
            }
            Poll::Ready(Err(Error::Closed { .. } | Error::Disconnected(_))) => Poll::Ready(None),
            Poll::Ready(item) => Poll::Ready(Some(item)),
        }
    }
}
