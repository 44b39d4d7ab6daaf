//! The clock that decides when a time-to-live runs out.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
#[cfg(not(target_os = "linux"))]
use std::time::Instant;

/// A monotonic clock, read by main when it sets and checks expiry.
///
/// Only main's clock matters: a child sends the time-to-live and main turns
/// it into a deadline. Tests inject a [`ManualClock`] to move time by hand.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Time elapsed since some fixed start; never goes backwards.
    fn now(&self) -> Duration;

    /// The system's monotonic clock (`CLOCK_MONOTONIC`, in nanoseconds)
    /// when this clock read zero, if this clock is that one moved back by
    /// a fixed amount; then children judge a time-to-live by themselves
    /// and read the store from shared memory. `None` (the default, and
    /// any clock a test moves by hand): children ask main for every read.
    ///
    /// ```
    /// use yuki_storage::{Clock, ManualClock, SystemClock};
    /// assert!(ManualClock::default().monotonic_origin_ns().is_none());
    /// let on_linux = SystemClock::default().monotonic_origin_ns().is_some();
    /// assert_eq!(on_linux, cfg!(target_os = "linux"));
    /// ```
    fn monotonic_origin_ns(&self) -> Option<u64> {
        None
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock every process of the
/// machine shares, which a child compares a deadline of main's with.
#[cfg(target_os = "linux")]
#[inline]
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`; CLOCK_MONOTONIC always
    // exists on Linux, so it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The real monotonic clock: [`Instant`](std::time::Instant), which on Linux is read as
/// `CLOCK_MONOTONIC` directly so that children can compare deadlines with
/// it (see [`Clock::monotonic_origin_ns`]).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    #[cfg(not(target_os = "linux"))]
    start: Instant,
    #[cfg(target_os = "linux")]
    origin_ns: u64,
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock {
            #[cfg(not(target_os = "linux"))]
            start: Instant::now(),
            #[cfg(target_os = "linux")]
            origin_ns: monotonic_ns(),
        }
    }
}

impl Clock for SystemClock {
    #[cfg(not(target_os = "linux"))]
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    #[cfg(target_os = "linux")]
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(monotonic_ns().saturating_sub(self.origin_ns))
    }

    #[cfg(target_os = "linux")]
    fn monotonic_origin_ns(&self) -> Option<u64> {
        Some(self.origin_ns)
    }
}

/// A clock that moves only when told to, for tests of expiry.
///
/// ```
/// use std::time::Duration;
/// use yuki_storage::{Clock, ManualClock};
///
/// let clock = ManualClock::default();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now(), Duration::from_secs(2));
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}
