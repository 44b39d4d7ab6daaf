//! In-thread `Channel<T>` against bare crossbeam-channel: one-way throughput
//! and the ping-pong round trip between two threads.
//!
//! Both threads of every run have a core of their own (the caller core 0,
//! the other core 1), for ours and crossbeam alike: left to the scheduler,
//! a run's two threads share a core in some runs and not in others, which
//! moves the figure more than what is measured.
//!
//! Ours and the floor run alternately, several rounds each, and the best
//! round of each is reported: on a shared machine the best round is the one
//! least disturbed by others. Every round is capped by time and the rounds
//! stop when the figure's budget is spent, so a loaded machine makes the run
//! noisier, not longer.

use std::thread;
use std::time::{Duration, Instant};

use std::sync::Arc;

use yuki_channel::{Channel, ChannelOptions, InThreadTransport, Transport};

use crate::bench::placement;
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

/// The value that tells the other thread to stop: the runs below are cut
/// by time, so the receiver cannot know the count beforehand.
const STOP: u64 = u64::MAX;

/// How often (in items) a run looks at the clock.
const CLOCK_EVERY: u64 = 1024;

/// Millions of items per second from one thread to another: at most `n`
/// items, for at most `cap`.
fn one_way<P: Pipe>(n: u64, cap: Duration) -> f64 {
    let (tx, rx) = P::make();
    let start = Instant::now();
    let consumer = spawn_peer(move || {
        let mut got = 0u64;
        while rx.take() != STOP {
            got += 1;
        }
        got
    });
    let sent = send_until(n, start + cap, |i| tx.put(i));
    tx.put(STOP);
    let got = consumer.join().expect("consumer thread");
    assert_eq!(got, sent, "every item arrives once");
    mops(sent, start.elapsed())
}

/// Calls `send(i)` for `i` in `0..n` until `deadline`; returns how many.
fn send_until(n: u64, deadline: Instant, mut send: impl FnMut(u64)) -> u64 {
    let mut i = 0;
    while i < n {
        send(i);
        i += 1;
        if i % CLOCK_EVERY == 0 && Instant::now() >= deadline {
            break;
        }
    }
    i
}

/// Mean round trip in microseconds, a value to the other thread and back:
/// at most `n` trips, for at most `cap`.
fn ping_pong<P: Pipe>(n: u64, cap: Duration) -> f64 {
    let (ping_tx, ping_rx) = P::make();
    let (pong_tx, pong_rx) = P::make();
    let echo = spawn_peer(move || {
        loop {
            let v = ping_rx.take();
            if v == STOP {
                break;
            }
            pong_tx.put(v);
        }
    });
    let start = Instant::now();
    let trips = send_until(n, start + cap, |i| {
        ping_tx.put(i);
        assert_eq!(pong_rx.take(), i);
    });
    let elapsed = start.elapsed();
    ping_tx.put(STOP);
    echo.join().expect("echo thread");
    elapsed.as_secs_f64() * 1e6 / trips as f64
}

/// Millions of items per second from main to a child's receiver through a
/// hosted channel over the in-thread transport (credit window, coalesced
/// pushes, encoding): what hosting costs beyond the transport. At most `n`
/// items, for at most `cap`.
fn hosted_one_way(n: u64, cap: Duration) -> f64 {
    let network = InThreadTransport::main();
    let main: Arc<dyn Transport> = network.clone();
    let child: Arc<dyn Transport> = network.connect("bench").expect("main is up");
    let tx = Channel::<u64>::open(&main, "bench").expect("open in main");
    // The prefetch the figure was first measured with (the default is 1).
    let options = ChannelOptions::new().prefetch(64);
    let rx = Channel::<u64>::open_with(&child, "bench", &options).expect("open in the child");
    let start = Instant::now();
    let consumer = spawn_peer(move || {
        let mut got = 0u64;
        while rx.recv().expect("open channel") != STOP {
            got += 1;
        }
        got
    });
    let sent = send_until(n, start + cap, |i| tx.send(i).expect("open channel"));
    tx.send(STOP).expect("open channel");
    let got = consumer.join().expect("consumer thread");
    assert_eq!(got, sent, "every item arrives once");
    mops(sent, start.elapsed())
}

/// The core of the thread that calls [`run`], and of the other thread of
/// each run, when pinning works.
const CALLER_CORE: usize = 0;
const PEER_CORE: usize = 1;

/// Whether this area's threads are pinned (set once by [`run`]).
static PINNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Spawns the other thread of a run, on [`PEER_CORE`] when the area is
/// pinned.
fn spawn_peer<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> thread::JoinHandle<R> {
    let pinned = PINNED.load(std::sync::atomic::Ordering::Relaxed);
    thread::spawn(move || {
        if pinned {
            // Pinning worked for this core in `run`; should it fail now,
            // the run is merely unpinned.
            let _ = placement::pin_thread(Some(PEER_CORE));
        }
        f()
    })
}

/// Pins the calling thread to [`CALLER_CORE`] and the peers to
/// [`PEER_CORE`] while it lives, if both cores can be pinned; restores the
/// caller's CPUs when dropped.
struct Pinned(bool);

impl Pinned {
    fn new() -> Pinned {
        let peer_ok = || {
            thread::spawn(|| placement::pin_thread(Some(PEER_CORE)).is_ok())
                .join()
                .unwrap_or(false)
        };
        let ok = placement::pin_thread(Some(CALLER_CORE)).is_ok() && peer_ok();
        if !ok {
            let _ = placement::pin_thread(None);
        }
        PINNED.store(ok, std::sync::atomic::Ordering::Relaxed);
        Pinned(ok)
    }

    /// How the figures' names say where the threads ran.
    fn label(&self) -> &'static str {
        if self.0 { "cores 0/1" } else { "unpinned" }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        PINNED.store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = placement::pin_thread(None);
    }
}

/// Runs `ours` and `floor` in alternating rounds, taking turns to go
/// first, each capped so that the
/// pair stays within `budget`, and stops early once the budget is spent
/// (after one round at least): both sides always get the same number of
/// rounds and the same cap, so their ratio stays fair on a loaded machine.
/// Returns the best of each, by `better`.
fn alternate(
    rounds: u32,
    budget: Duration,
    better: Better,
    mut ours: impl FnMut(Duration) -> f64,
    mut floor: impl FnMut(Duration) -> f64,
) -> (f64, f64) {
    let cap = budget / (2 * rounds);
    let pick = |a: f64, b: f64| match better {
        Better::Higher => a.max(b),
        Better::Lower => a.min(b),
    };
    let start = Instant::now();
    let (mut a, mut b) = (ours(cap), floor(cap));
    for round in 1..rounds {
        if start.elapsed() >= budget {
            break;
        }
        // Whichever runs second finds the allocator warm from the first:
        // take turns going first.
        if round % 2 == 1 {
            b = pick(b, floor(cap));
            a = pick(a, ours(cap));
        } else {
            a = pick(a, ours(cap));
            b = pick(b, floor(cap));
        }
    }
    (a, b)
}

/// Adds the in-thread channel lines to `report`.
pub fn run(report: &mut Report, quick: bool) -> Result<(), String> {
    // Each of the three figures gets a third of the area's time budget.
    let (rounds, items, trips, budget) = if quick {
        (5, 200_000, 20_000, Duration::from_secs(3))
    } else {
        (25, 2_000_000, 200_000, Duration::from_secs(12))
    };
    let pinned = Pinned::new();
    let place = pinned.label();
    let (ours, floor) = alternate(
        rounds,
        budget,
        Better::Higher,
        |cap| one_way::<Ours>(items, cap),
        |cap| one_way::<Crossbeam>(items, cap),
    );
    report.add(
        Line::new(
            format!("in-thread Channel<u64> one-way, {place}"),
            "M msgs/s",
            ours,
            Better::Higher,
        )
        .floor("crossbeam", floor)
        .target("<= 1.2x floor"),
    );
    let (ours, floor) = alternate(
        rounds,
        budget,
        Better::Lower,
        |cap| ping_pong::<Ours>(trips, cap),
        |cap| ping_pong::<Crossbeam>(trips, cap),
    );
    report.add(
        Line::new(
            format!("in-thread Channel<u64> ping-pong, {place}"),
            "us",
            ours,
            Better::Lower,
        )
        .floor("crossbeam", floor)
        .target("<= 1.2x floor"),
    );
    let (hosted, local) = alternate(
        rounds,
        budget,
        Better::Higher,
        |cap| hosted_one_way(items / 4, cap),
        |cap| one_way::<Ours>(items / 4, cap),
    );
    report.add(
        Line::new(
            format!("hosted Channel<u64> main->child, in-thread, prefetch 64, {place}"),
            "M msgs/s",
            hosted,
            Better::Higher,
        )
        .floor("local Channel", local),
    );
    Ok(())
}
