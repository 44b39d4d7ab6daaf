//! Acknowledged delivery over hosted channels, in one process: settling,
//! redelivery, prefetch, and in-thread endpoints that end like processes.

use std::sync::Arc;
use std::time::Duration;

use yuki_channel::{Channel, ChannelOptions, Delivery, Error, InThreadTransport, Transport};

const WAIT: Duration = Duration::from_secs(10);

struct Net {
    main: Arc<InThreadTransport>,
}

impl Net {
    fn new() -> Net {
        let main = InThreadTransport::main();
        let as_dyn: Arc<dyn Transport> = main.clone();
        yuki_channel::host_channels(&as_dyn).unwrap();
        Net { main }
    }

    fn main(&self) -> Arc<dyn Transport> {
        self.main.clone()
    }

    /// A child endpoint and its handle of `name`.
    fn worker(&self, who: &str, name: &str, prefetch: u32) -> (Arc<dyn Transport>, Channel<u32>) {
        let t: Arc<dyn Transport> = self.main.connect(who).unwrap();
        let options = ChannelOptions::new().prefetch(prefetch);
        let c = Channel::open_with(&t, name, &options).unwrap();
        (t, c)
    }
}

fn empty(r: Result<Delivery<u32>, Error>) -> bool {
    matches!(r, Err(Error::Empty { .. }))
}

#[test]
fn an_acknowledged_delivery_is_never_delivered_again() {
    let net = Net::new();
    let m = Channel::<u32>::open(&net.main(), "q").unwrap();
    let (t, w) = net.worker("w", "q", 1);
    m.send(1).unwrap();
    let d = w.recv_delivery_timeout(WAIT).unwrap();
    assert_eq!((*d, d.redelivered()), (1, false));
    d.ack();
    drop(w);
    drop(t);
    assert_eq!(net.main.peers(), vec![], "the dropped endpoint left");
    assert!(matches!(m.try_recv(), Err(Error::Empty { .. })));
}

#[test]
fn a_requeued_or_dropped_delivery_reaches_another_consumer_marked_redelivered() {
    for requeue in [true, false] {
        let net = Net::new();
        let m = Channel::<u32>::open(&net.main(), "q").unwrap();
        let (_ta, a) = net.worker("a", "q", 1);
        let (_tb, b) = net.worker("b", "q", 1);
        // Both ready (credit granted); `a` joined first, so it is served first.
        assert!(empty(a.try_recv_delivery()));
        assert!(empty(b.try_recv_delivery()));
        m.send(7).unwrap();
        let d = a.try_recv_delivery().unwrap();
        assert!(!d.redelivered());
        if requeue {
            d.requeue();
        } else {
            drop(d);
        }
        let again = b.recv_delivery_timeout(WAIT).unwrap();
        assert_eq!(*again, 7);
        assert!(again.redelivered());
        assert!(
            empty(a.try_recv_delivery()),
            "it went to the other consumer"
        );
        again.ack();
        assert_eq!(m.len(), 0);
    }
}

#[test]
fn dropping_the_last_handles_of_an_in_thread_child_requeues_what_it_held() {
    // The trial of the issue: three workers share 30 jobs; one of them
    // goes away holding deliveries and a prefetched buffer.
    let net = Net::new();
    let m = Channel::<u32>::open(&net.main(), "jobs").unwrap();
    let (t1, w1) = net.worker("w1", "jobs", 4);
    let (_t2, w2) = net.worker("w2", "jobs", 4);
    let (_t3, w3) = net.worker("w3", "jobs", 4);
    for w in [&w1, &w2, &w3] {
        assert!(empty(w.try_recv_delivery()));
    }
    for i in 0..30 {
        m.send(i).unwrap();
    }
    let held: Vec<Delivery<u32>> = (0..2).map(|_| w1.try_recv_delivery().unwrap()).collect();
    let held_values: Vec<u32> = held.iter().map(|d| **d).collect();
    // The channel and the transport go; the deliveries outlive them, as
    // a process's memory does not: the endpoint's end hands them back.
    drop(w1);
    drop(t1);
    let mut done = Vec::new();
    let mut redelivered = Vec::new();
    // In-thread, main pushes while the call that freed credit runs: a
    // worker that finds nothing means nothing is left for it.
    while let Some(d) = [&w2, &w3].iter().find_map(|w| w.try_recv_delivery().ok()) {
        if d.redelivered() {
            redelivered.push(*d);
        }
        done.push(*d);
        d.ack();
    }
    drop(held);
    done.sort_unstable();
    assert_eq!(
        done,
        (0..30).collect::<Vec<_>>(),
        "each job once, none lost"
    );
    for v in held_values {
        assert!(
            redelivered.contains(&v),
            "{v} was held by the worker that went"
        );
    }
    assert!(empty(w2.try_recv_delivery()));
    assert_eq!(m.len(), 0);
}

#[test]
fn a_slow_consumer_holds_at_most_its_prefetch_and_the_fast_one_never_waits() {
    for prefetch in [1, 4] {
        let net = Net::new();
        let m = Channel::<u32>::open(&net.main(), "jobs").unwrap();
        let (_ts, slow) = net.worker("slow", "jobs", prefetch);
        let (_tf, fast) = net.worker("fast", "jobs", 1);
        assert!(empty(slow.try_recv_delivery()));
        assert!(empty(fast.try_recv_delivery()));
        for i in 0..100 {
            m.send(i).unwrap();
        }
        // The slow one takes what it was given and sits on it.
        let mut held = Vec::new();
        while let Ok(d) = slow.try_recv_delivery() {
            held.push(d);
        }
        assert!(
            !held.is_empty() && held.len() <= prefetch as usize,
            "{}",
            held.len()
        );
        let mut got = 0;
        loop {
            match fast.try_recv_delivery() {
                Ok(d) => {
                    got += 1;
                    d.ack();
                }
                Err(Error::Empty { .. }) => {
                    assert_eq!(
                        m.len(),
                        0,
                        "the fast consumer waited while jobs were queued"
                    );
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got + held.len(), 100);
    }
}

#[test]
fn the_prefetch_of_a_second_open_applies_to_the_process() {
    let net = Net::new();
    let m = Channel::<u32>::open(&net.main(), "q").unwrap();
    let (t, w) = net.worker("w", "q", 1);
    let again = Channel::<u32>::open_with(&t, "q", &ChannelOptions::new().prefetch(3)).unwrap();
    assert!(again.same_channel(&w));
    // A plain open keeps the prefetch the process chose.
    Channel::<u32>::open(&t, "q").unwrap();
    assert!(empty(w.try_recv_delivery()));
    for i in 0..10 {
        m.send(i).unwrap();
    }
    let held: Vec<_> = std::iter::from_fn(|| w.try_recv_delivery().ok()).collect();
    assert_eq!(held.len(), 3);
    assert_eq!(m.len(), 7);
}

#[test]
fn main_receives_deliveries_too() {
    let net = Net::new();
    let m = Channel::<u32>::open(&net.main(), "q").unwrap();
    m.send(1).unwrap();
    m.send(2).unwrap();
    let d = m.recv_delivery_timeout(WAIT).unwrap();
    assert_eq!((*d, d.redelivered()), (1, false));
    drop(d);
    let d = m.try_recv_delivery().unwrap();
    assert_eq!((*d, d.redelivered()), (1, true));
    d.ack();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let d = rt.block_on(m.recv_delivery_async()).unwrap();
    assert_eq!(*d, 2);
    d.ack();
    assert!(m.is_empty());
}

#[test]
fn async_deliveries_in_a_child() {
    let net = Net::new();
    let m = Channel::<u32>::open(&net.main(), "q").unwrap();
    let (_t, w) = net.worker("w", "q", 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    m.send(5).unwrap();
    let d = rt.block_on(w.recv_delivery_async()).unwrap();
    assert_eq!(*d, 5);
    d.ack();
}

#[test]
fn in_process_deliveries_requeue_to_the_back() {
    let c = Channel::<u32>::new("local");
    c.send(1).unwrap();
    c.send(2).unwrap();
    let d = c.recv_delivery().unwrap();
    assert_eq!(*d, 1);
    d.requeue();
    assert_eq!(c.recv().unwrap(), 2);
    let d = c.try_recv_delivery().unwrap();
    assert_eq!(*d, 1);
    d.ack();
    assert!(c.is_empty());
}

#[test]
fn main_takes_back_what_a_stuck_consumer_holds_past_its_ack_timeout() {
    let net = Net::new();
    let m = Channel::<u32>::open(&net.main(), "q").unwrap();
    let stuck_t: Arc<dyn Transport> = net.main.connect("stuck").unwrap();
    let options = ChannelOptions::new()
        .prefetch(1)
        .ack_timeout(Duration::from_millis(20));
    let stuck = Channel::<u32>::open_with(&stuck_t, "q", &options).unwrap();
    assert!(empty(stuck.try_recv_delivery()));
    m.send(1).unwrap();
    let held = stuck.try_recv_delivery().unwrap();
    assert_eq!(*held, 1);
    // Another consumer joins after the push: only the deadline can give
    // it the item the stuck one holds.
    let (_t, other) = net.worker("other", "q", 1);
    let again = other.recv_delivery_timeout(WAIT).unwrap();
    assert_eq!((*again, again.redelivered()), (1, true));
    again.ack();
    // The taken-back item still counts against the stuck one's prefetch.
    m.send(2).unwrap();
    let next = other.recv_delivery_timeout(WAIT).unwrap();
    assert_eq!(*next, 2);
    assert!(empty(stuck.try_recv_delivery()));
    // A late acknowledgement is ignored; credit comes back with it.
    held.ack();
    next.ack();
    m.send(3).unwrap();
    let last = [&stuck, &other]
        .iter()
        .find_map(|c| c.try_recv_delivery().ok())
        .expect("3 went to a consumer with credit");
    last.ack();
    assert!(m.is_empty());
}

#[test]
fn a_consumer_ten_times_slower_holds_at_most_its_prefetch_and_the_fast_one_never_waits() {
    const JOBS: usize = 300;
    for prefetch in [1, 4, 16] {
        let net = Net::new();
        let m = Channel::<u32>::open(&net.main(), "jobs").unwrap();
        let (_ts, slow) = net.worker("slow", "jobs", prefetch);
        let (_tf, fast) = net.worker("fast", "jobs", 1);
        assert!(empty(slow.try_recv_delivery()));
        assert!(empty(fast.try_recv_delivery()));
        for i in 0..JOBS as u32 {
            m.send(i).unwrap();
        }
        let (mut fast_done, mut slow_done) = (0, 0);
        let mut seen = std::collections::BTreeSet::new();
        // Each turn the slow consumer finishes one job and the fast one ten.
        for _turn in 0..JOBS {
            let slow_job = slow.try_recv_delivery().ok();
            // What it holds: the job in hand and what waits in its buffer
            // (its `len` counts its buffer and main's queue).
            let buffered = slow.len() - m.len();
            let holds = buffered + usize::from(slow_job.is_some());
            assert!(
                holds <= prefetch as usize,
                "prefetch {prefetch}: holds {holds}"
            );
            for _ in 0..10 {
                match fast.try_recv_delivery() {
                    Ok(job) => {
                        assert!(seen.insert(*job));
                        fast_done += 1;
                        job.ack();
                    }
                    Err(Error::Empty { .. }) => {
                        assert_eq!(m.len(), 0, "prefetch {prefetch}: the fast one waited");
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            if let Some(job) = slow_job {
                assert!(seen.insert(*job));
                slow_done += 1;
                job.ack();
            }
            if fast_done + slow_done == JOBS {
                break;
            }
        }
        assert_eq!(fast_done + slow_done, JOBS);
        assert!(slow_done * 10 <= fast_done + 10 * prefetch as usize);
    }
}
