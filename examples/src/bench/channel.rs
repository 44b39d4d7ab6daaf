//! In-thread `Channel<T>` against bare crossbeam-channel: one-way throughput
//! and the ping-pong round trip between two threads.
//!
//! Ours and the floor run alternately, several rounds each, and the best
//! round of each is reported: on a shared machine the best round is the one
//! least disturbed by others.

use std::thread;
use std::time::Instant;

use std::sync::Arc;

use yuki_channel::{Channel, InThreadTransport, Transport};

use crate::bench::timing::mops;
use crate::report::{Better, Line, Report};

/// The two sides measured: yuki's channel and crossbeam's.
trait Pipe: Clone + Send + 'static {
    fn make() -> (Self, Self);
    fn put(&self, v: u64);
    fn take(&self) -> u64;
}

#[derive(Clone)]
struct Ours(Channel<u64>);

impl Pipe for Ours {
    fn make() -> (Self, Self) {
        let c = Channel::new("bench");
        (Ours(c.clone()), Ours(c))
    }
    fn put(&self, v: u64) {
        self.0.send(v).expect("open channel");
    }
    fn take(&self) -> u64 {
        self.0.recv().expect("open channel")
    }
}

#[derive(Clone)]
struct Crossbeam(
    crossbeam_channel::Sender<u64>,
    crossbeam_channel::Receiver<u64>,
);

impl Pipe for Crossbeam {
    fn make() -> (Self, Self) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let c = Crossbeam(tx, rx);
        (c.clone(), c)
    }
    fn put(&self, v: u64) {
        self.0.send(v).expect("connected");
    }
    fn take(&self) -> u64 {
        self.1.recv().expect("connected")
    }
}

/// Millions of items per second from one thread to another.
fn one_way<P: Pipe>(n: u64) -> f64 {
    let (tx, rx) = P::make();
    let start = Instant::now();
    let consumer = thread::spawn(move || {
        let mut sum = 0u64;
        for _ in 0..n {
            sum = sum.wrapping_add(rx.take());
        }
        sum
    });
    for i in 0..n {
        tx.put(i);
    }
    let sum = consumer.join().expect("consumer thread");
    assert_eq!(sum, n * (n - 1) / 2);
    mops(n, start.elapsed())
}

/// Mean round trip in microseconds: a value to the other thread and back.
fn ping_pong<P: Pipe>(n: u64) -> f64 {
    let (ping_tx, ping_rx) = P::make();
    let (pong_tx, pong_rx) = P::make();
    let echo = thread::spawn(move || {
        for _ in 0..n {
            pong_tx.put(ping_rx.take());
        }
    });
    let start = Instant::now();
    for i in 0..n {
        ping_tx.put(i);
        assert_eq!(pong_rx.take(), i);
    }
    let elapsed = start.elapsed();
    echo.join().expect("echo thread");
    elapsed.as_secs_f64() * 1e6 / n as f64
}

/// Millions of items per second from main to a child's receiver through a
/// hosted channel over the in-thread transport (credit window, coalesced
/// pushes, encoding): what hosting costs beyond the transport.
fn hosted_one_way(n: u64) -> f64 {
    let network = InThreadTransport::main();
    let main: Arc<dyn Transport> = network.clone();
    let child: Arc<dyn Transport> = network.connect("bench").expect("main is up");
    let tx = Channel::<u64>::open(&main, "bench").expect("open in main");
    let rx = Channel::<u64>::open(&child, "bench").expect("open in the child");
    let start = Instant::now();
    let consumer = thread::spawn(move || {
        let mut sum = 0u64;
        for _ in 0..n {
            sum = sum.wrapping_add(rx.recv().expect("open channel"));
        }
        sum
    });
    for i in 0..n {
        tx.send(i).expect("open channel");
    }
    let sum = consumer.join().expect("consumer thread");
    assert_eq!(sum, n * (n - 1) / 2);
    mops(n, start.elapsed())
}

/// Adds the in-thread channel lines to `report`.
pub fn run(report: &mut Report, quick: bool) {
    let (rounds, items, trips) = if quick {
        (3, 200_000, 20_000)
    } else {
        (7, 2_000_000, 200_000)
    };
    let (mut ours, mut floor) = (0f64, 0f64);
    for _ in 0..rounds {
        ours = ours.max(one_way::<Ours>(items));
        floor = floor.max(one_way::<Crossbeam>(items));
    }
    report.add(
        Line::new(
            "in-thread Channel<u64> one-way",
            "M msgs/s",
            ours,
            Better::Higher,
        )
        .floor("crossbeam", floor)
        .target("<= 1.2x floor"),
    );
    let (mut ours, mut floor) = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        ours = ours.min(ping_pong::<Ours>(trips));
        floor = floor.min(ping_pong::<Crossbeam>(trips));
    }
    report.add(
        Line::new(
            "in-thread Channel<u64> ping-pong",
            "us",
            ours,
            Better::Lower,
        )
        .floor("crossbeam", floor)
        .target("<= 1.2x floor"),
    );
    let (mut hosted, mut local) = (0f64, 0f64);
    for _ in 0..rounds {
        hosted = hosted.max(hosted_one_way(items / 4));
        local = local.max(one_way::<Ours>(items / 4));
    }
    report.add(
        Line::new(
            "hosted Channel<u64> main->child, in-thread",
            "M msgs/s",
            hosted,
            Better::Higher,
        )
        .floor("local Channel", local),
    );
}
