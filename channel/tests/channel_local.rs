//! In-process channels: every method and every error path.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use yuki_channel::{Channel, Error, TrySendError};

const WAIT: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(30);

#[test]
fn unbounded_is_fifo_and_counts() {
    let ch = Channel::<u32>::new("fifo");
    assert_eq!(ch.name(), "fifo");
    assert_eq!(ch.capacity(), None);
    assert!(ch.is_empty());
    for i in 0..100 {
        ch.send(i).unwrap();
    }
    assert_eq!(ch.len(), 100);
    assert!(!ch.is_empty());
    for i in 0..100 {
        assert_eq!(ch.recv().unwrap(), i);
    }
    assert!(ch.is_empty());
    assert!(!ch.is_closed());
}

#[test]
fn clones_are_handles_to_one_queue() {
    let a = Channel::<String>::new("shared");
    let b = a.clone();
    let other = Channel::<String>::new("shared");
    assert!(a.same_channel(&b));
    assert!(!a.same_channel(&other));
    a.send("x".into()).unwrap();
    assert_eq!(b.try_recv().unwrap(), "x");
    assert!(format!("{a:?}").contains("shared"));
}

#[test]
fn try_recv_on_empty_says_empty() {
    let ch = Channel::<u8>::new("empty");
    let err = ch.try_recv().unwrap_err();
    assert_eq!(
        err,
        Error::Empty {
            channel: "empty".into()
        }
    );
    assert!(err.to_string().contains("\"empty\""));
}

#[test]
fn recv_timeout_times_out_then_receives() {
    let ch = Channel::<u8>::new("t");
    assert_eq!(ch.recv_timeout(SHORT), Err(Error::Timeout(SHORT)));
    ch.send(7).unwrap();
    assert_eq!(ch.recv_timeout(SHORT), Ok(7));
}

#[test]
fn bounded_try_send_on_full_hands_the_value_back() {
    let ch = Channel::<String>::bounded("b", 2);
    assert_eq!(ch.capacity(), Some(2));
    ch.try_send("1".into()).unwrap();
    ch.send("2".into()).unwrap();
    let err = ch.try_send("3".into()).unwrap_err();
    assert!(err.is_full());
    assert!(!err.is_closed());
    assert_eq!(
        err.error(),
        &Error::Full {
            channel: "b".into(),
            capacity: 2
        }
    );
    assert!(err.to_string().contains("full"));
    assert_eq!(err.into_inner(), "3");
    assert_eq!(ch.len(), 2);
    let e: Error = ch.try_send("4".into()).unwrap_err().into();
    assert!(matches!(e, Error::Full { .. }));
}

#[test]
fn capacity_zero_is_taken_as_one_and_huge_is_capped() {
    assert_eq!(
        Channel::<u8>::bounded("huge", usize::MAX).capacity(),
        Some(1 << 20)
    );
    let ch = Channel::<u8>::bounded("z", 0);
    assert_eq!(ch.capacity(), Some(1));
    ch.try_send(1).unwrap();
    assert!(ch.try_send(2).unwrap_err().is_full());
}

#[test]
fn bounded_send_waits_for_room() {
    let ch = Channel::<u32>::bounded("wait", 1);
    ch.send(1).unwrap();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let c = ch.clone();
    let t = thread::spawn(move || {
        c.send(2).unwrap();
        done_tx.send(()).unwrap();
    });
    assert!(done_rx.recv_timeout(SHORT).is_err(), "send must wait");
    assert_eq!(ch.recv_timeout(WAIT), Ok(1));
    done_rx.recv_timeout(WAIT).unwrap();
    assert_eq!(ch.recv_timeout(WAIT), Ok(2));
    t.join().unwrap();
}

#[test]
fn close_refuses_sends_and_drains_then_fails() {
    let ch = Channel::<String>::new("c");
    ch.send("a".into()).unwrap();
    ch.send("b".into()).unwrap();
    assert!(ch.close());
    assert!(!ch.close(), "second close does nothing");
    assert!(ch.is_closed());

    let err = ch.send("late".into()).unwrap_err();
    assert!(err.is_closed());
    assert_eq!(
        err.error(),
        &Error::Closed {
            channel: "c".into()
        }
    );
    assert!(err.to_string().contains("closed"));
    assert!(format!("{err:?}").contains("Closed"));
    assert_eq!(err.into_inner(), "late");
    let err = ch.try_send("late".into()).unwrap_err();
    assert!(err.is_closed() && !err.is_full());
    let (v, e) = match err {
        TrySendError::Failed(e) => e.into_parts(),
        TrySendError::Full(..) => panic!("not full"),
    };
    assert_eq!(
        (v.as_str(), e.clone()),
        (
            "late",
            Error::Closed {
                channel: "c".into()
            }
        )
    );

    assert_eq!(ch.len(), 2);
    assert_eq!(ch.recv().unwrap(), "a");
    assert_eq!(ch.try_recv().unwrap(), "b");
    let closed = Error::Closed {
        channel: "c".into(),
    };
    assert_eq!(ch.recv(), Err(closed.clone()));
    assert_eq!(ch.try_recv(), Err(closed.clone()));
    assert_eq!(ch.recv_timeout(SHORT), Err(closed));
}

#[test]
fn close_wakes_blocked_receivers() {
    let ch = Channel::<u8>::new("wake");
    let barrier = Arc::new(Barrier::new(4));
    // Results come back on a channel, so a receiver the close fails to wake
    // fails the test within `WAIT` instead of hanging it.
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    for i in 0..3 {
        let c = ch.clone();
        let b = barrier.clone();
        let done = done_tx.clone();
        thread::spawn(move || {
            b.wait();
            let r = if i == 0 {
                c.recv_timeout(WAIT)
            } else {
                c.recv()
            };
            done.send(r).unwrap();
        });
    }
    barrier.wait();
    ch.close();
    for _ in 0..3 {
        let r = done_rx
            .recv_timeout(WAIT)
            .expect("close woke every receiver");
        assert!(matches!(r, Err(Error::Closed { .. })));
    }
}

#[test]
fn close_wakes_a_sender_blocked_on_full_with_its_value() {
    let ch = Channel::<String>::bounded("full", 1);
    ch.send("first".into()).unwrap();
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let c = ch.clone();
    thread::spawn(move || {
        started_tx.send(()).unwrap();
        done_tx.send(c.send("blocked".into())).unwrap();
    });
    started_rx.recv_timeout(WAIT).unwrap();
    ch.close();
    let sent = done_rx.recv_timeout(WAIT).expect("close woke the sender");
    let err = sent.unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err.into_inner(), "blocked");
    assert_eq!(ch.recv().unwrap(), "first");
    assert!(matches!(ch.recv(), Err(Error::Closed { .. })));
}

#[test]
fn dropping_every_handle_frees_the_items() {
    let token = Arc::new(());
    let ch = Channel::<Arc<()>>::new("drop");
    ch.send(token.clone()).unwrap();
    let c2 = ch.clone();
    drop(ch);
    assert_eq!(Arc::strong_count(&token), 2);
    drop(c2);
    assert_eq!(Arc::strong_count(&token), 1);

    let ch = Channel::<Arc<()>>::bounded("drop-closed", 4);
    ch.send(token.clone()).unwrap();
    ch.close();
    drop(ch);
    assert_eq!(Arc::strong_count(&token), 1);
}

#[test]
fn many_senders_and_receivers_see_each_item_once() {
    let ch = Channel::<u64>::bounded("mpmc", 8);
    let senders: Vec<_> = (0..4u64)
        .map(|s| {
            let c = ch.clone();
            thread::spawn(move || {
                for i in 0..1000 {
                    c.send(s * 1000 + i).unwrap();
                }
            })
        })
        .collect();
    let receivers: Vec<_> = (0..3)
        .map(|_| {
            let c = ch.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match c.recv_timeout(WAIT) {
                        Ok(v) => got.push(v),
                        Err(Error::Closed { .. }) => return got,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    ch.close();
    let mut all: Vec<u64> = receivers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..4000).collect::<Vec<_>>());
}

#[test]
fn iterators_stop_at_the_first_failure() {
    let ch = Channel::<u32>::new("iter");
    for i in 0..3 {
        ch.send(i).unwrap();
    }
    assert_eq!(ch.try_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
    ch.send(3).unwrap();
    ch.close();
    assert_eq!(ch.iter().collect::<Vec<_>>(), vec![3]);
}

#[test]
fn send_errors_convert() {
    let ch = Channel::<u32>::bounded("conv", 1);
    ch.close();
    let err = ch.send(1).unwrap_err();
    let try_err: TrySendError<u32> = err.clone().into();
    assert!(try_err.is_closed());
    assert_eq!(
        try_err.error(),
        &Error::Closed {
            channel: "conv".into()
        }
    );
    assert!(format!("{try_err:?}").contains("Failed"));
    assert!(try_err.to_string().contains("closed"));
    assert_eq!(try_err.into_inner(), 1);
    assert!(std::error::Error::source(&err).is_some());
    let e: Error = err.into();
    assert!(matches!(e, Error::Closed { .. }));
}

#[test]
fn handles_and_receive_futures_cross_threads_for_any_send_item() {
    fn send_sync<S: Send + Sync>(_: &S) {}
    fn send<S: Send>(_: &S) {}
    // `Cell` is `Send` but not `Sync`: handles are still shareable.
    let ch = Channel::<std::cell::Cell<u8>>::new("cell");
    send_sync(&ch);
    send(&ch.recv_async());
    ch.send(std::cell::Cell::new(1)).unwrap();
    assert_eq!(ch.try_recv().unwrap().get(), 1);
}

/// Senders race a close: each send either lands (and is received exactly
/// once, in its sender's order) or fails with its own value; nothing is lost,
/// doubled or leaked, on unbounded and bounded queues alike.
#[test]
fn a_close_racing_with_senders_loses_and_doubles_nothing() {
    for capacity in [None, Some(4)] {
        let token = Arc::new(());
        let ch = match capacity {
            None => Channel::<(usize, u64, Arc<()>)>::new("race"),
            Some(n) => Channel::bounded("race", n),
        };
        let senders: Vec<_> = (0..3usize)
            .map(|s| {
                let (c, token) = (ch.clone(), token.clone());
                thread::spawn(move || {
                    for i in 0u64.. {
                        if let Err(e) = c.send((s, i, token.clone())) {
                            assert!(e.is_closed());
                            let (back_s, back_i, _) = e.into_inner();
                            assert_eq!((back_s, back_i), (s, i), "the failed send's own value");
                            return i;
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        // Miri runs this too, slowly: a shorter stream still races.
        let close_at = if cfg!(miri) { 20 } else { 5_000 };
        let mut next = [0u64; 3];
        let mut received = 0u64;
        loop {
            match ch.recv_timeout(WAIT) {
                Ok((s, i, _)) => {
                    assert_eq!(i, next[s], "sender {s}'s order");
                    next[s] += 1;
                    received += 1;
                    // Close mid-stream, with the senders still busy.
                    if received == close_at {
                        assert!(ch.close());
                    }
                }
                Err(Error::Closed { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let sent: Vec<u64> = senders.into_iter().map(|s| s.join().unwrap()).collect();
        assert_eq!(sent, next, "every send that succeeded was received");
        drop(ch);
        assert_eq!(
            Arc::strong_count(&token),
            1,
            "no item leaked or dropped twice"
        );
    }
}
