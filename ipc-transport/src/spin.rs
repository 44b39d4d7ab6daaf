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

use ipc_channel::ipc::IpcBytesReceiver;
use ipc_channel::{IpcError, TryRecvError};

/// How long a link end polls by default ([`NodeBuilder::reply_spin`](crate::NodeBuilder::reply_spin)).
pub(crate) const DEFAULT: Duration = Duration::from_micros(50);

/// Receives the next message, polling for up to `spin` before blocking
/// (`Duration::ZERO` blocks at once).
pub(crate) fn recv(rx: &IpcBytesReceiver, spin: Duration) -> Result<Vec<u8>, IpcError> {
    if !spin.is_zero() {
        let start = Instant::now();
        loop {
            // Yield first: the caller has just sent, and a peer on the same
            // core can only answer once it runs.
            std::thread::yield_now();
            match rx.try_recv() {
                Ok(message) => return Ok(message),
                Err(TryRecvError::IpcError(e)) => return Err(e),
                Err(TryRecvError::Empty) => {}
            }
            if start.elapsed() >= spin {
                break;
            }
        }
    }
    rx.recv()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc_channel::ipc;

    #[test]
    fn a_waiting_message_is_received_with_or_without_the_spin() {
        let (tx, rx) = ipc::bytes_channel().unwrap();
        for spin in [Duration::ZERO, Duration::from_micros(50)] {
            tx.send(b"hello").unwrap();
            assert_eq!(recv(&rx, spin).unwrap(), b"hello");
        }
    }

    #[test]
    fn a_message_sent_while_waiting_is_received() {
        let (tx, rx) = ipc::bytes_channel().unwrap();
        let (sent_tx, sent_rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            // Sent only once the receiver is past a 1 µs spin or in it:
            // either way it must arrive.
            let _ = sent_rx.recv_timeout(Duration::from_secs(10));
            tx.send(b"late").unwrap();
        });
        sent_tx.send(()).unwrap();
        assert_eq!(recv(&rx, Duration::from_micros(1)).unwrap(), b"late");
        sender.join().unwrap();
    }

    #[test]
    fn a_closed_channel_is_an_error_during_the_spin() {
        let (tx, rx) = ipc::bytes_channel().unwrap();
        drop(tx);
        assert!(recv(&rx, Duration::from_secs(10)).is_err());
        assert!(recv(&rx, Duration::ZERO).is_err());
    }
}
