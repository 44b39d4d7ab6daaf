//! Waiting for the next message on a link that was just busy: poll it for
//! a short, bounded time before blocking.
//!
//! Waking a thread that sleeps in a receive costs tens of microseconds on
//! another core of a virtual machine, several times the round trip itself;
//! a reply or the next request usually arrives within a few microseconds,
//! so both ends of a busy link poll for it first. Each poll yields the CPU,
//! so a peer on the same core still runs, and the poll only follows
//! activity (a call sent, a message handled): an idle link blocks.

use std::time::{Duration, Instant};

use crate::link::{LinkError as PipeError, Reader};

/// How long a link end polls by default ([`NodeBuilder::reply_spin`](crate::NodeBuilder::reply_spin)).
pub(crate) const DEFAULT: Duration = Duration::from_micros(50);

/// The most waits a link end blocks at once, without polling, after polls
/// that found nothing.
const MAX_SKIP: u32 = 64;

/// One link end's polling: for up to `limit` before each blocking receive,
/// except after polls that found nothing. Each miss in a row doubles the
/// number of waits that block at once (up to [`MAX_SKIP`]), so a link whose
/// messages come further apart than `limit` soon stops burning CPU on it,
/// and one whose messages come close together again polls within a few
/// dozen waits.
#[derive(Debug)]
pub(crate) struct Spin {
    limit: Duration,
    /// Waits left that block at once.
    skip: u32,
    /// Waits to skip after the next miss.
    penalty: u32,
}

impl Spin {
    /// Polls for up to `limit` (`Duration::ZERO` always blocks at once).
    pub(crate) fn new(limit: Duration) -> Spin {
        Spin {
            limit,
            skip: 0,
            penalty: 1,
        }
    }

    /// Receives the next message; polls first when `expected` (a message is
    /// likely close behind: a reply to a call just sent, the next request
    /// after one just handled) and recent polls paid off.
    pub(crate) fn recv(&mut self, rx: &mut Reader, expected: bool) -> Result<Vec<u8>, PipeError> {
        match self.poll(rx, expected) {
            Some(received) => received,
            None => rx.recv(),
        }
    }

    /// [`recv`](Spin::recv) giving up at `deadline` (never if `None`) with
    /// `Ok(None)`.
    pub(crate) fn recv_until(
        &mut self,
        rx: &mut Reader,
        expected: bool,
        deadline: Option<Instant>,
    ) -> Result<Option<Vec<u8>>, PipeError> {
        match self.poll(rx, expected) {
            Some(received) => received.map(Some),
            None => rx.recv_until(deadline),
        }
    }

    /// The polling half of [`recv`](Spin::recv): `None` when it did not
    /// poll or found nothing.
    fn poll(&mut self, rx: &mut Reader, expected: bool) -> Option<Result<Vec<u8>, PipeError>> {
        if !expected || self.limit.is_zero() {
            return None;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        let start = Instant::now();
        loop {
            // Yield first: the peer was just sent to or just answered, and
            // on the same core it can only act once it runs.
            std::thread::yield_now();
            match rx.try_recv() {
                Ok(Some(message)) => {
                    self.penalty = 1;
                    return Some(Ok(message));
                }
                Err(e) => return Some(Err(e)),
                Ok(None) if rx.is_closed() => return Some(rx.recv()),
                Ok(None) => {}
            }
            if start.elapsed() >= self.limit {
                break;
            }
        }
        self.skip = self.penalty;
        self.penalty = (self.penalty * 2).min(MAX_SKIP);
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::pipe::{Region, Way, Writer};

    fn pipe() -> (Writer, Reader) {
        let (region, _) = Region::create().unwrap();
        let reader = Reader::SharedMemory(region.reader(Way::Up, 1 << 20));
        (region.writer(Way::Up), reader)
    }

    #[test]
    fn a_waiting_message_is_received_with_or_without_the_spin() {
        let (mut tx, mut rx) = pipe();
        for limit in [Duration::ZERO, Duration::from_micros(50)] {
            for expected in [false, true] {
                tx.send(b"hello").unwrap();
                assert_eq!(Spin::new(limit).recv(&mut rx, expected).unwrap(), b"hello");
            }
        }
    }

    #[test]
    fn a_message_sent_while_waiting_is_received() {
        let (mut tx, mut rx) = pipe();
        let (sent_tx, sent_rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            // Sent only once the receiver is past a 1 µs spin or in it:
            // either way it must arrive.
            let _ = sent_rx.recv_timeout(Duration::from_secs(10));
            tx.send(b"late").unwrap();
        });
        sent_tx.send(()).unwrap();
        let got = Spin::new(Duration::from_micros(1)).recv(&mut rx, true);
        assert_eq!(got.unwrap(), b"late");
        sender.join().unwrap();
    }

    #[test]
    fn a_closed_link_is_an_error_during_the_spin() {
        let (tx, mut rx) = pipe();
        tx.region().close();
        assert_eq!(
            Spin::new(Duration::from_secs(10)).recv(&mut rx, true),
            Err(PipeError::Closed)
        );
        assert_eq!(
            Spin::new(Duration::ZERO).recv(&mut rx, true),
            Err(PipeError::Closed)
        );
    }

    #[test]
    fn misses_in_a_row_skip_ever_more_polls_and_a_hit_resets() {
        let (mut tx, mut rx) = pipe();
        let mut spin = Spin::new(Duration::from_micros(1));
        for skip in [1, 2, 4, 8, 16, 32, 64, 64] {
            assert!(
                spin.poll(&mut rx, true).is_none(),
                "nothing to find: a miss"
            );
            assert_eq!(spin.skip, skip);
            for left in (0..skip).rev() {
                assert!(spin.poll(&mut rx, true).is_none());
                assert_eq!(spin.skip, left, "a skipped wait does not poll");
            }
        }
        tx.send(b"ready").unwrap();
        assert_eq!(spin.poll(&mut rx, true).unwrap().unwrap(), b"ready");
        assert_eq!((spin.skip, spin.penalty), (0, 1), "a hit resets the count");
        assert!(
            spin.poll(&mut rx, false).is_none(),
            "nothing expected: no poll"
        );
        assert_eq!((spin.skip, spin.penalty), (0, 1));
    }
}
