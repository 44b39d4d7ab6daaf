//! Hosted channel delivery between several receiving children: every item
//! once, each receiver seeing one sender's items in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use yuki_channel::{Channel, Error, InThreadTransport, Transport};

const ITEMS: u32 = 400;
const SENT_BY_EACH: u32 = 20;
const ALL: usize = (ITEMS + 6 * SENT_BY_EACH) as usize;

/// Children receive with short time-outs while main sends; returns what
/// each receiver got.
fn receive_with_short_timeouts(timeout: Duration) -> Vec<Vec<u32>> {
    let network = InThreadTransport::main();
    let main: Arc<dyn Transport> = network.clone();
    let ch = Channel::<u32>::open(&main, "work").unwrap();
    let total = Arc::new(AtomicUsize::new(0));
    let mut receivers = Vec::new();
    for c in 0..3u32 {
        let child: Arc<dyn Transport> = network.connect(&format!("c{c}")).unwrap();
        let ch = Channel::<u32>::open(&child, "work").unwrap();
        for t in 0..2u32 {
            let (ch, total) = (ch.clone(), total.clone());
            receivers.push(std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut got = Vec::new();
                // Children send too: items numbered from ITEMS up.
                for k in 0..SENT_BY_EACH {
                    ch.send(ITEMS + (c * 2 + t) * SENT_BY_EACH + k).unwrap();
                    if let Ok(v) = ch.recv_timeout(timeout) {
                        got.push(v);
                        total.fetch_add(1, Ordering::SeqCst);
                    }
                }
                while total.load(Ordering::SeqCst) < ALL && Instant::now() < deadline {
                    match ch.recv_timeout(timeout) {
                        Ok(v) => {
                            got.push(v);
                            total.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(Error::Timeout(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                got
            }));
        }
    }
    for i in 0..ITEMS {
        ch.send(i).unwrap();
        if i % 16 == 0 {
            std::thread::yield_now();
        }
    }
    receivers.into_iter().map(|r| r.join().unwrap()).collect()
}

fn check(got: &[Vec<u32>]) -> Result<(), String> {
    let mut seen = std::collections::BTreeMap::new();
    for (r, items) in got.iter().enumerate() {
        let main_items: Vec<_> = items.iter().filter(|i| **i < ITEMS).collect();
        for w in main_items.windows(2) {
            if w[0] > w[1] {
                return Err(format!("receiver {r} got {} after {}", w[1], w[0]));
            }
        }
        for i in items {
            if let Some(first) = seen.insert(*i, r) {
                return Err(format!("item {i} received by {first} and by {r}"));
            }
        }
    }
    if seen.len() != ALL {
        return Err(format!("{} of {ALL} items received", seen.len()));
    }
    Ok(())
}

#[test]
fn receivers_that_wait_long_get_every_item_once_in_order() {
    check(&receive_with_short_timeouts(Duration::from_secs(1))).unwrap();
}

#[test]
fn receivers_that_give_up_often_get_every_item_once() {
    check(&receive_with_short_timeouts(Duration::from_micros(200))).unwrap();
}

#[test]
fn items_a_child_received_are_not_delivered_again_after_it_leaves() {
    let network = InThreadTransport::main();
    let main: Arc<dyn Transport> = network.clone();
    let in_main = Channel::<u32>::open(&main, "work").unwrap();
    let child = network.connect("worker").unwrap();
    let child_t: Arc<dyn Transport> = child.clone();
    let in_child = Channel::<u32>::open(&child_t, "work").unwrap();
    for i in 0..10 {
        in_main.send(i).unwrap();
    }
    assert_eq!(in_child.recv_timeout(Duration::from_secs(5)).unwrap(), 0);
    drop(in_child);
    child.disconnect("the worker is done");
    let mut rest = Vec::new();
    while let Ok(i) = in_main.recv_timeout(Duration::from_millis(200)) {
        rest.push(i);
    }
    assert_eq!(
        rest,
        (1..10).collect::<Vec<_>>(),
        "item 0 was received by the child already"
    );
}
