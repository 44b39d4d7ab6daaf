//! [`Delivery<T>`]: an item received with acknowledgement, which the
//! receiver settles when it is done with it.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::channel::{Channel, Queue};
use crate::error::{Error, Result};
use crate::hosted::Holder;

/// An item received with [`Channel::recv_delivery`] and its kin: it derefs
/// to the value, and the receiver settles it when done, with
/// [`ack`](Delivery::ack) (done with it) or [`requeue`](Delivery::requeue)
/// (back to the head of the queue, for another receiver).
///
/// A delivery dropped without either is requeued, and so is every delivery
/// held by a child process that ends (exits, crashes or is killed), or by
/// an in-thread child endpoint whose last handle is dropped: the item goes
/// back to the head of main's queue, and whoever receives it next sees
/// [`redelivered`](Delivery::redelivered) `true`.
///
/// ```
/// use std::sync::Arc;
/// use yuki_channel::{Channel, InThreadTransport, Transport};
///
/// let network = InThreadTransport::main();
/// let main: Arc<dyn Transport> = network.clone();
/// let jobs = Channel::<String>::open(&main, "jobs").unwrap();
/// let worker: Arc<dyn Transport> = network.connect("worker").unwrap();
/// let worker_jobs = Channel::<String>::open(&worker, "jobs").unwrap();
///
/// jobs.send("resize".to_string()).unwrap();
/// let job = worker_jobs.recv_delivery().unwrap();
/// assert_eq!(job.as_str(), "resize");
/// assert!(!job.redelivered());
/// job.requeue(); // cannot do it now: back to the queue
///
/// // No other receiver has room, so it comes back here, marked.
/// let again = worker_jobs.recv_delivery().unwrap();
/// assert!(again.redelivered());
/// again.ack();
/// assert!(jobs.is_empty());
/// ```
pub struct Delivery<T> {
    value: Option<T>,
    redelivered: bool,
    settle: Settle<T>,
}

/// What settling a delivery does.
enum Settle<T> {
    /// Already settled.
    Done,
    /// From an in-process channel: requeued by sending it again.
    Local(Box<dyn FnOnce(T) + Send + Sync>),
    Hosted(Holder),
}

impl<T> Delivery<T> {
    /// Whether the item was delivered before, to a receiver that gave it
    /// back (requeued or dropped it) or ended while it held it: the work it
    /// stands for may have been done in part, or in full if that receiver
    /// ended before its acknowledgement reached main.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// Done with the item: it is not delivered again.
    ///
    /// In a child the acknowledgement travels with the next frame to main
    /// (at once when nothing else is pending): a child that ends before it
    /// left may have the item delivered again, marked redelivered. So
    /// delivery is at least once, and a redelivered item may have been
    /// handled already.
    pub fn ack(mut self) {
        if let Settle::Hosted(holder) = std::mem::replace(&mut self.settle, Settle::Done) {
            holder.ack();
        }
    }

    /// Gives the item back: it goes to the head of the queue, marked
    /// redelivered, and to another receiver if one has room for it.
    ///
    /// An item from an in-process channel ([`Channel::new`]) is sent again
    /// instead, to the back of the queue and not marked redelivered (such a
    /// queue holds bare values); if that channel was closed meanwhile, it
    /// is dropped (nothing else could receive it).
    pub fn requeue(mut self) {
        self.give_back();
    }

    fn give_back(&mut self) {
        match std::mem::replace(&mut self.settle, Settle::Done) {
            Settle::Done => {}
            Settle::Hosted(holder) => holder.requeue(),
            Settle::Local(send_again) => {
                if let Some(value) = self.value.take() {
                    send_again(value);
                }
            }
        }
    }
}

impl<T> Deref for Delivery<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // Taken only by `give_back`, which consumes or drops the delivery.
        self.value
            .as_ref()
            .expect("a delivery holds its value until settled")
    }
}

impl<T> DerefMut for Delivery<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
            .as_mut()
            .expect("a delivery holds its value until settled")
    }
}

impl<T> Drop for Delivery<T> {
    /// Unsettled: back to the queue, for another receiver.
    fn drop(&mut self) {
        self.give_back();
    }
}

impl<T: fmt::Debug> fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("value", &self.value)
            .field("redelivered", &self.redelivered)
            .field("settled", &matches!(self.settle, Settle::Done))
            .finish()
    }
}

/// Acknowledged receive: items the receiver settles itself.
impl<T: Send + 'static> Channel<T> {
    /// Receives the next item as a [`Delivery`], waiting for one; the item
    /// stays this receiver's until the delivery is acknowledged, requeued
    /// or dropped, and goes back to the queue if the process holding it
    /// ends first. Errors as [`recv`](Channel::recv).
    ///
    /// This is the receive for work that must not be lost: handle the
    /// item, then [`ack`](Delivery::ack) it. Each item is delivered at
    /// least once; it is delivered again (marked
    /// [`redelivered`](Delivery::redelivered)) only after a receiver gave
    /// it back or ended before its acknowledgement reached main. An item
    /// that cannot be decoded fails the receive with
    /// [`Error::Decode`] and is settled as done, since it would fail every
    /// receiver.
    ///
    /// ```
    /// use yuki_channel::Channel;
    ///
    /// let jobs = Channel::<u32>::new("jobs");
    /// jobs.send(7).unwrap();
    /// let job = jobs.recv_delivery().unwrap();
    /// assert_eq!(*job, 7);
    /// job.ack();
    /// assert!(jobs.is_empty());
    /// ```
    pub fn recv_delivery(&self) -> Result<Delivery<T>> {
        self.receive_delivery(None)
    }

    /// Like [`recv_delivery`](Channel::recv_delivery), giving up with
    /// [`Error::Timeout`] after `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use yuki_channel::{Channel, Error};
    ///
    /// let jobs = Channel::<u32>::new("jobs");
    /// let wait = jobs.recv_delivery_timeout(Duration::from_millis(10));
    /// assert!(matches!(wait, Err(Error::Timeout(_))));
    /// ```
    pub fn recv_delivery_timeout(&self, timeout: Duration) -> Result<Delivery<T>> {
        self.receive_delivery(Some(timeout))
    }

    /// Like [`recv_delivery`](Channel::recv_delivery) for an item there
    /// now, as [`try_recv`](Channel::try_recv).
    ///
    /// ```
    /// use yuki_channel::{Channel, Error};
    ///
    /// let jobs = Channel::<u32>::new("jobs");
    /// assert!(matches!(jobs.try_recv_delivery(), Err(Error::Empty { .. })));
    /// jobs.send(1).unwrap();
    /// let job = jobs.try_recv_delivery().unwrap();
    /// job.requeue(); // not now: an in-process channel sends it again
    /// assert_eq!(*jobs.try_recv_delivery().unwrap(), 1);
    /// ```
    pub fn try_recv_delivery(&self) -> Result<Delivery<T>> {
        self.delivery_active()?;
        let shared = self.shared();
        match &shared.queue {
            Queue::Local(q) => {
                let value = q
                    .try_recv()
                    .map_err(|f| f.into_error(&shared.name, q.capacity()))?;
                Ok(self.local_delivery(value))
            }
            Queue::Hosted(h) => Ok(hosted_delivery(h.try_recv_held(&shared.name)?)),
        }
    }

    /// Like [`recv_delivery`](Channel::recv_delivery) without blocking a
    /// thread, as [`recv_async`](Channel::recv_async); cancel-safe.
    ///
    /// ```
    /// use yuki_channel::Channel;
    ///
    /// # async fn work() {
    /// let jobs = Channel::<u32>::new("jobs");
    /// jobs.send(3).unwrap();
    /// let job = jobs.recv_delivery_async().await.unwrap();
    /// assert_eq!(*job, 3);
    /// job.ack();
    /// # }
    /// ```
    pub async fn recv_delivery_async(&self) -> Result<Delivery<T>> {
        self.delivery_active()?;
        let shared = self.shared();
        match &shared.queue {
            Queue::Local(q) => {
                let value = q
                    .recv_async()
                    .await
                    .map_err(|f| f.into_error(&shared.name, q.capacity()))?;
                Ok(self.local_delivery(value))
            }
            Queue::Hosted(h) => Ok(hosted_delivery(h.recv_held_async(&shared.name).await?)),
        }
    }

    fn receive_delivery(&self, timeout: Option<Duration>) -> Result<Delivery<T>> {
        self.delivery_active()?;
        let shared = self.shared();
        match &shared.queue {
            Queue::Local(q) => {
                let value = match timeout {
                    None => q.recv(),
                    Some(t) => q.recv_timeout(t),
                }
                .map_err(|f| f.into_error(&shared.name, q.capacity()))?;
                Ok(self.local_delivery(value))
            }
            Queue::Hosted(h) => Ok(hosted_delivery(h.recv_held(&shared.name, timeout)?)),
        }
    }

    fn local_delivery(&self, value: T) -> Delivery<T> {
        let channel = self.clone();
        Delivery {
            value: Some(value),
            redelivered: false,
            settle: Settle::Local(Box::new(move |value| {
                if channel.send(value).is_err() {
                    tracing::warn!(
                        channel = channel.name(),
                        "a requeued item was dropped: the channel is closed"
                    );
                }
            })),
        }
    }

    fn delivery_active(&self) -> Result<()> {
        if self.shared().loop_running.load(Ordering::Acquire) {
            return Err(Error::ReceiveLoopRunning {
                channel: self.name().to_owned(),
            });
        }
        Ok(())
    }
}

fn hosted_delivery<T>((value, redelivered, holder): (T, bool, Holder)) -> Delivery<T> {
    Delivery {
        value: Some(value),
        redelivered,
        settle: Settle::Hosted(holder),
    }
}
