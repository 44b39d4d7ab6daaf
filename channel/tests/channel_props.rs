//! Property tests: exactly-once delivery with each sender's order kept,
//! bounded capacity, and filter routing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use yuki_channel::{Channel, Error, InThreadTransport, Transport};

const WAIT: Duration = Duration::from_secs(10);

/// Runs `counts.len()` senders (sender `s` sends `(s, 0..counts[s])`) and
/// `receivers` receivers over handles made by `handle`, then checks every
/// item arrived once and each receiver saw each sender's items in order.
fn check_exactly_once(
    counts: &[u32],
    receivers: usize,
    handle: impl Fn() -> Channel<(u32, u32)>,
) -> Result<(), TestCaseError> {
    let closer = handle();
    let rx_threads: Vec<_> = (0..receivers)
        .map(|_| {
            let c = handle();
            thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match c.recv_timeout(WAIT) {
                        Ok(v) => got.push(v),
                        Err(Error::Closed { .. }) => return Ok(got),
                        Err(e) => return Err(e),
                    }
                }
            })
        })
        .collect();
    let tx_threads: Vec<_> = counts
        .iter()
        .enumerate()
        .map(|(s, &n)| {
            let c = handle();
            thread::spawn(move || {
                for i in 0..n {
                    if i % 7 == 0 {
                        thread::yield_now();
                    }
                    c.send((s as u32, i)).unwrap();
                }
            })
        })
        .collect();
    for t in tx_threads {
        t.join().unwrap();
    }
    closer.close();
    let mut all = Vec::new();
    for t in rx_threads {
        let got = t
            .join()
            .unwrap()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for s in 0..counts.len() as u32 {
            let mine: Vec<u32> = got.iter().filter(|v| v.0 == s).map(|v| v.1).collect();
            prop_assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "sender {s} out of order"
            );
        }
        all.extend(got);
    }
    all.sort_unstable();
    let mut want: Vec<(u32, u32)> = counts
        .iter()
        .enumerate()
        .flat_map(|(s, &n)| (0..n).map(move |i| (s as u32, i)))
        .collect();
    want.sort_unstable();
    prop_assert_eq!(all, want);
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Send(u8),
    TrySend(u8),
    TryRecv,
    RecvTimeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u8>().prop_map(Op::Send),
        any::<u8>().prop_map(Op::TrySend),
        Just(Op::TryRecv),
        Just(Op::RecvTimeout),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn local_sends_from_many_threads_arrive_once_in_order(
        counts in prop::collection::vec(0u32..300, 1..5),
        receivers in 1usize..4,
        capacity in prop::option::of(1usize..8),
    ) {
        let ch = match capacity {
            Some(c) => Channel::bounded("prop", c),
            None => Channel::new("prop"),
        };
        check_exactly_once(&counts, receivers, || ch.clone())?;
    }

    #[test]
    fn hosted_sends_from_many_children_arrive_once_in_order(
        counts in prop::collection::vec(0u32..200, 1..4),
        receivers in 1usize..4,
        capacity in prop::option::of(1usize..8),
    ) {
        let network = InThreadTransport::main();
        let main: Arc<dyn Transport> = network.clone();
        let open = |t: &Arc<dyn Transport>| match capacity {
            Some(c) => Channel::<(u32, u32)>::open_bounded(t, "prop", c).unwrap(),
            None => Channel::<(u32, u32)>::open(t, "prop").unwrap(),
        };
        open(&main);
        // Every handle but the first lives in a child of its own; the
        // first one, in main, closes.
        let first = std::cell::Cell::new(true);
        check_exactly_once(&counts, receivers, || {
            if first.replace(false) {
                return open(&main);
            }
            let child: Arc<dyn Transport> = network.connect("c").unwrap();
            open(&child)
        })?;
    }

    #[test]
    fn bounded_channels_never_exceed_capacity(
        capacity in 1usize..6,
        ops in prop::collection::vec(op(), 0..80),
    ) {
        let ch = Channel::<u8>::bounded("cap", capacity);
        let mut model = VecDeque::new();
        for op in ops {
            match op {
                Op::Send(v) => {
                    // A send into a full channel would wait: model it as a try.
                    if model.len() < capacity {
                        ch.send(v).unwrap();
                        model.push_back(v);
                    }
                }
                Op::TrySend(v) => match ch.try_send(v) {
                    Ok(()) => {
                        prop_assert!(model.len() < capacity);
                        model.push_back(v);
                    }
                    Err(e) => {
                        prop_assert!(e.is_full());
                        prop_assert_eq!(model.len(), capacity);
                        prop_assert_eq!(e.into_inner(), v);
                    }
                },
                Op::TryRecv => match ch.try_recv() {
                    Ok(v) => prop_assert_eq!(Some(v), model.pop_front()),
                    Err(e) => {
                        prop_assert!(matches!(e, Error::Empty { .. }), "{:?}", e);
                        prop_assert!(model.is_empty());
                    }
                },
                Op::RecvTimeout => match ch.recv_timeout(Duration::ZERO) {
                    Ok(v) => prop_assert_eq!(Some(v), model.pop_front()),
                    Err(e) => {
                        prop_assert!(matches!(e, Error::Timeout(_)), "{:?}", e);
                        prop_assert!(model.is_empty());
                    }
                },
            }
            prop_assert_eq!(ch.len(), model.len());
            prop_assert!(ch.len() <= capacity);
        }
    }

    #[test]
    fn concurrent_senders_never_overfill(capacity in 1usize..5, senders in 1usize..4) {
        let ch = Channel::<usize>::bounded("cap-threads", capacity);
        let threads: Vec<_> = (0..senders)
            .map(|_| {
                let c = ch.clone();
                thread::spawn(move || for i in 0..200 { c.send(i).unwrap() })
            })
            .collect();
        for _ in 0..senders * 200 {
            prop_assert!(ch.len() <= capacity);
            ch.recv_timeout(WAIT).unwrap();
        }
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn filters_route_each_item_to_exactly_the_accepting_handlers(
        filters in prop::collection::vec((1u32..5, 0u32..5), 1..5),
        items in prop::collection::vec(0u32..50, 0..60),
    ) {
        let ch = Channel::<u32>::new("route");
        let (tx, rx) = crossbeam_channel::unbounded();
        for (h, &(m, r)) in filters.iter().enumerate() {
            let tx = tx.clone();
            ch.on_receive(move |n| *n != u32::MAX && n % m == r % m, move |n| tx.send((h, *n)).unwrap());
        }
        // A marker every handler accepts tells when all items were handled.
        let end = u32::MAX;
        let tx_end = tx.clone();
        ch.on_receive(move |n| *n == end, move |_| tx_end.send((usize::MAX, end)).unwrap());
        let dispatcher = ch.start_receive_loop().unwrap();
        for &n in &items {
            ch.send(n).unwrap();
        }
        ch.send(end).unwrap();
        let mut got = Vec::new();
        loop {
            let (h, n) = rx.recv_timeout(WAIT).unwrap();
            if h == usize::MAX {
                break;
            }
            got.push((h, n));
        }
        dispatcher.stop();
        let want: Vec<(usize, u32)> = items
            .iter()
            .flat_map(|&n| {
                filters
                    .iter()
                    .enumerate()
                    .filter(move |(_, (m, r))| n % m == r % m)
                    .map(move |(h, _)| (h, n))
            })
            .collect();
        prop_assert_eq!(got, want);
    }
}
