//! The store: main-process operations against a bare `RwLock<HashMap>`,
//! a child's operations against the raw ipc-channel floor and Redis.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Barrier, RwLock};
use std::time::{Duration, Instant};

use yuki_storage::Store;

use crate::bench::timing::mops;
use crate::report::{Better, Line, Report};

/// The keys and values every store figure uses.
struct Workload {
    keys: Vec<String>,
    value: String,
}

impl Workload {
    fn new(n: usize) -> Workload {
        Workload {
            keys: (0..n).map(|i| format!("user:{i:06}")).collect(),
            // A short text value, the common case of a shared store.
            value: "v".repeat(32),
        }
    }

    /// The key for step `i` of thread `t`: a fixed stride through the keys
    /// so threads do not walk in step.
    fn key(&self, t: usize, i: usize) -> &str {
        let n = self.keys.len();
        &self.keys[(i.wrapping_mul(7919) + t * (n / 2 + 1)) % n]
    }
}

type Bare = RwLock<HashMap<String, Vec<u8>>>;

/// Runs `op` for `ops` steps on each of `threads` threads at once; M ops/s in total.
fn throughput(threads: usize, ops: usize, op: impl Fn(usize, usize) + Sync) -> f64 {
    let start = Barrier::new(threads + 1);
    let op = &op;
    let start = &start;
    let elapsed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    start.wait();
                    let begun = Instant::now();
                    for i in 0..ops {
                        op(t, i);
                    }
                    begun.elapsed()
                })
            })
            .collect();
        start.wait();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Duration::MAX))
            .max()
            .unwrap_or(Duration::MAX)
    });
    mops((threads * ops) as u64, elapsed)
}

/// Best of a few runs, alternating ours and the floor so both see the same machine.
fn best_pair(
    rounds: usize,
    mut ours: impl FnMut() -> f64,
    mut floor: impl FnMut() -> f64,
) -> (f64, f64) {
    let (mut a, mut b) = (0f64, 0f64);
    for _ in 0..rounds {
        a = a.max(ours());
        b = b.max(floor());
    }
    (a, b)
}

fn main_process(report: &mut Report, quick: bool) {
    let w = Workload::new(10_000);
    let ops = if quick { 100_000 } else { 300_000 };
    let rounds = if quick { 1 } else { 7 };
    let store = Store::local();
    let bare: Bare = RwLock::new(HashMap::new());
    for k in &w.keys {
        store.set(k, &w.value).expect("set");
        bare.write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k.clone(), w.value.as_bytes().to_vec());
    }
    let value_bytes = w.value.as_bytes();

    for threads in [1, 2] {
        let target = if threads == 1 {
            "<= 1.5x floor"
        } else {
            "< 1.00x floor"
        };
        let bare_get = || {
            throughput(threads, ops, |t, i| {
                let map = bare.read().unwrap_or_else(|p| p.into_inner());
                black_box(map.get(w.key(t, i)).cloned());
            })
        };
        // Typed: the value decoded as the String it was stored as.
        let (ours, floor) = best_pair(
            rounds,
            || {
                throughput(threads, ops, |t, i| {
                    black_box(store.get::<String>(w.key(t, i)).ok().flatten());
                })
            },
            bare_get,
        );
        report.add(
            Line::new(
                format!("main get::<String>, {threads} thread(s)"),
                "M ops/s",
                ours,
                Better::Higher,
            )
            .floor("RwLock<HashMap>", floor)
            .target(target),
        );
        // Raw: the encoded bytes, what the bare map returns too.
        let (ours, floor) = best_pair(
            rounds,
            || {
                throughput(threads, ops, |t, i| {
                    black_box(store.get_raw(w.key(t, i)).ok().flatten());
                })
            },
            bare_get,
        );
        report.add(
            Line::new(
                format!("main get_raw, {threads} thread(s)"),
                "M ops/s",
                ours,
                Better::Higher,
            )
            .floor("RwLock<HashMap>", floor)
            .target(target),
        );

        let (ours, floor) = best_pair(
            rounds,
            || {
                throughput(threads, ops, |t, i| {
                    black_box(store.set(w.key(t, i), &w.value).is_ok());
                })
            },
            || {
                throughput(threads, ops, |t, i| {
                    let key = w.key(t, i);
                    let mut map = bare.write().unwrap_or_else(|p| p.into_inner());
                    black_box(map.insert(key.to_owned(), value_bytes.to_vec()));
                })
            },
        );
        report.add(
            Line::new(
                format!("main set, {threads} thread(s)"),
                "M ops/s",
                ours,
                Better::Higher,
            )
            .floor("RwLock<HashMap>", floor)
            .target(target),
        );
    }
}

/// Measures the store's figures.
pub fn run(report: &mut Report, quick: bool) {
    main_process(report, quick);
}
