//! [`ChannelOptions`]: how a process opens a hosted channel.

use std::time::Duration;

/// The prefetch of a process that does not choose one: one unsettled item
/// per process, so an item never waits in a busy receiver's buffer while
/// another receiver is idle (see [`ChannelOptions::prefetch`]).
pub const DEFAULT_PREFETCH: u32 = 1;

/// How [`Channel::open_with`](crate::Channel::open_with) opens a hosted
/// channel: what nobody sets is left as it is.
///
/// ```
/// use yuki_channel::ChannelOptions;
///
/// let options = ChannelOptions::new().capacity(1000).prefetch(32);
/// assert_eq!(options.capacity_wanted(), Some(1000));
/// assert_eq!(options.prefetch_wanted(), Some(32));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelOptions {
    capacity: Option<usize>,
    prefetch: Option<u32>,
    ack_timeout: Option<Duration>,
}

impl ChannelOptions {
    /// No capacity (join the channel whatever its capacity, or create it
    /// unbounded) and this process's prefetch unchanged
    /// ([`DEFAULT_PREFETCH`] on its first open).
    pub fn new() -> ChannelOptions {
        ChannelOptions::default()
    }

    /// The capacity to create the channel with; opening an existing
    /// channel whose capacity differs fails with
    /// [`Error::CapacityMismatch`](crate::Error::CapacityMismatch). A
    /// capacity of 0 is taken as 1.
    pub fn capacity(mut self, capacity: usize) -> ChannelOptions {
        self.capacity = Some(capacity.max(1));
        self
    }

    /// How many items main may push to this process's receivers that they
    /// have not settled yet (RabbitMQ's `basic.qos` prefetch count). An
    /// item is settled when [`recv`](crate::Channel::recv) returns it, or
    /// when a [`Delivery`](crate::Delivery) is acknowledged, requeued or
    /// dropped. It applies to children: main's own receivers take straight
    /// from the queue. A value of 0 is taken as 1; the latest open in a
    /// process sets it for all of the process's handles of the channel.
    ///
    /// With the default of 1, a receiver that holds a delivery holds
    /// nothing else, so an idle receiver never waits while items sit in a
    /// busy one's buffer; with `recv`, at most one item waits in a busy
    /// receiver's buffer. The price is a round trip to main per item when
    /// the queue is busy. Raise it (16 to 64) when items are small and
    /// quick to handle and throughput matters more than how evenly they
    /// spread: a larger prefetch lets main push a batch per frame, and the
    /// benchmark's `queue` area shows what each setting costs.
    pub fn prefetch(mut self, prefetch: u32) -> ChannelOptions {
        self.prefetch = Some(prefetch.max(1));
        self
    }

    /// How long this process's receivers may hold an item unsettled
    /// before main takes it back for another receiver (NATS JetStream's
    /// `AckWait`): for a receiver that is alive but stuck. Main takes back
    /// what it pushed to this process and that was not settled within
    /// `timeout` of the push (in its buffer or held as a delivery), puts it
    /// at the head of the queue marked redelivered, and checks at least
    /// every half `timeout`; an acknowledgement that comes later is
    /// ignored, so the item may be handled twice. Taken-back items still
    /// count against this process's prefetch until it settles them, so a
    /// stuck receiver is not given more. Rounded to milliseconds (at least
    /// one); none by default. It applies to children.
    ///
    /// ```
    /// use std::time::Duration;
    /// use yuki_channel::ChannelOptions;
    ///
    /// let options = ChannelOptions::new().ack_timeout(Duration::from_secs(30));
    /// assert_eq!(options.ack_timeout_wanted(), Some(Duration::from_secs(30)));
    /// ```
    pub fn ack_timeout(mut self, timeout: Duration) -> ChannelOptions {
        self.ack_timeout = Some(timeout);
        self
    }

    /// The acknowledgement deadline set, if any.
    pub fn ack_timeout_wanted(&self) -> Option<Duration> {
        self.ack_timeout
    }

    /// The capacity set, if any.
    pub fn capacity_wanted(&self) -> Option<usize> {
        self.capacity
    }

    /// The prefetch set, if any.
    pub fn prefetch_wanted(&self) -> Option<u32> {
        self.prefetch
    }
}
