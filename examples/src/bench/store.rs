//! The store: main-process operations against a bare `RwLock<HashMap>`,
//! a child's operations against the raw ipc-channel floor and Redis.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Barrier, RwLock};
use std::time::{Duration, Instant};
use yuki_channel::sync;

use yuki_channel::codec;
use yuki_storage::Store;

use crate::bench::timing::mops;
use crate::bench::{child as bench_child, floor, placement, redis_peer};
use crate::report::{Better, Line, Report};

/// The keys and values every store figure uses (yuki's and Redis's).
#[derive(Debug)]
pub struct Workload {
    /// `user:000000`, `user:000001`, ...
    pub keys: Vec<String>,
    /// The value every key holds.
    pub value: String,
}

impl Workload {
    /// `n` keys with a 32-byte text value.
    pub fn new(n: usize) -> Workload {
        Workload {
            keys: (0..n).map(|i| format!("user:{i:06}")).collect(),
            // A short text value, the common case of a shared store.
            value: "v".repeat(32),
        }
    }

    /// The key for step `i` of thread `t`: a fixed stride through the keys
    /// so threads do not walk in step.
    pub fn key(&self, t: usize, i: usize) -> &str {
        let n = self.keys.len();
        &self.keys[(i.wrapping_mul(7919) + t * (n / 2 + 1)) % n]
    }
}

type Bare = RwLock<HashMap<String, Vec<u8>>>;

/// One way of reading a key from the store.
type Get = fn(&Store, &str);
/// The same read from the bare map.
type BareGet = fn(&Bare, &str);

/// Whether thread `t` of a [`throughput`] run can be pinned to core `t`, for
/// `t` below `threads`: then the threads of a run never share a core, for
/// the store and the bare map alike (left to the scheduler, two threads
/// share one core in some runs and not in others).
fn can_pin(threads: usize) -> bool {
    std::thread::scope(|s| {
        (0..threads)
            .map(|t| s.spawn(move || placement::pin_thread(Some(t)).is_ok()))
            .collect::<Vec<_>>()
            .into_iter()
            .all(|h| h.join().unwrap_or(false))
    })
}

/// Runs `op` for `ops` steps on each of `threads` threads at once (thread
/// `t` on core `t` when `pinned`); M ops/s in total.
fn throughput(threads: usize, pinned: bool, ops: usize, op: impl Fn(usize, usize) + Sync) -> f64 {
    let start = Barrier::new(threads + 1);
    let op = &op;
    let start = &start;
    let elapsed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    if pinned {
                        // `can_pin` succeeded; a failure now only unpins the run.
                        let _ = placement::pin_thread(Some(t));
                    }
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
    // Many short runs: the best of them is least disturbed by other work.
    let ops = 30_000;
    let rounds = if quick { 2 } else { 40 };
    let store = Store::local();
    // The bare map holds what the store holds: each value encoded with the
    // codec yuki uses, so both sides do the same work per operation (a
    // typed get decodes the same bytes into the same String; a set encodes
    // it) and the figures compare the maps.
    let encoded = codec::encode(&w.value).expect("encode");
    let bare: Bare = RwLock::new(HashMap::new());
    for k in &w.keys {
        store.set(k, &w.value).expect("set");
        sync::write(&bare).insert(k.clone(), encoded.clone());
    }

    for threads in [1, 2] {
        let pinned = can_pin(threads);
        let place = match (pinned, threads) {
            (false, _) => "unpinned",
            (true, 1) => "core 0",
            (true, _) => "cores 0/1",
        };
        let target = if threads == 1 {
            "<= 1.5x floor"
        } else {
            "< 1.00x floor"
        };
        let mut add = |what: &str, (ours, floor): (f64, f64)| {
            report.add(
                Line::new(
                    format!("main {what}, {threads} thread(s), {place}"),
                    "M ops/s",
                    ours,
                    Better::Higher,
                )
                .floor("RwLock<HashMap>", floor)
                .target(target),
            )
        };
        // Typed: the value decoded as the String it was stored as (the bare
        // map's bytes through the same decoder the store uses); raw: the
        // encoded bytes copied out.
        let gets: [(&str, Get, BareGet); 2] = [
            (
                "get::<String>",
                |store, key| {
                    black_box(store.get::<String>(key).ok().flatten());
                },
                |map, key| {
                    let map = sync::read(map);
                    black_box(
                        map.get(key)
                            .and_then(|b| codec::decode_borrowed::<String>(b).ok()),
                    );
                },
            ),
            (
                "get_raw",
                |store, key| {
                    black_box(store.get_raw(key).ok().flatten());
                },
                |map, key| {
                    let map = sync::read(map);
                    black_box(map.get(key).cloned());
                },
            ),
        ];
        for (what, get, bare_get) in gets {
            let ours = || throughput(threads, pinned, ops, |t, i| get(&store, w.key(t, i)));
            let floor = || throughput(threads, pinned, ops, |t, i| bare_get(&bare, w.key(t, i)));
            add(what, best_pair(rounds, ours, floor));
        }
        let (ours, floor) = best_pair(
            rounds,
            || {
                throughput(threads, pinned, ops, |t, i| {
                    black_box(store.set(w.key(t, i), &w.value).is_ok());
                })
            },
            || {
                throughput(threads, pinned, ops, |t, i| {
                    let key = w.key(t, i);
                    let value = codec::encode(&w.value).unwrap_or_default();
                    let mut map = sync::write(&bare);
                    black_box(map.insert(key.to_owned(), value));
                })
            },
        );
        add("set", (ours, floor));
    }
}

/// A 1 MiB payload set in main as a plain `Vec<u8>` (serde encodes it a
/// byte at a time) against the same bytes as a `serde_bytes::ByteBuf` (one
/// copy): why the docs ask for `serde_bytes`.
fn byte_payloads(report: &mut Report, quick: bool) {
    let store = Store::local();
    let bytes = vec![7u8; 1 << 20];
    let buf = serde_bytes::ByteBuf::from(bytes.clone());
    let (sets, rounds) = if quick { (4, 2) } else { (32, 8) };
    // GB/s of payload stored.
    let rate = |set: &dyn Fn()| {
        let begun = Instant::now();
        for _ in 0..sets {
            set();
        }
        (sets << 20) as f64 / begun.elapsed().as_secs_f64() / 1e9
    };
    let (ours, floor) = best_pair(
        rounds,
        || {
            rate(&|| {
                black_box(store.set("blob", &bytes).is_ok());
            })
        },
        || {
            rate(&|| {
                black_box(store.set("blob", &buf).is_ok());
            })
        },
    );
    report.add(
        Line::new(
            "main set of a 1 MiB Vec<u8>, no serde_bytes",
            "GB/s",
            ours,
            Better::Higher,
        )
        .floor("the same bytes as serde_bytes::ByteBuf", floor),
    );
}

/// Measures the store's figures.
pub fn run(report: &mut Report, quick: bool) -> Result<(), String> {
    main_process(report, quick);
    byte_payloads(report, quick);
    let redis = redis_peer::server()
        .and_then(|server| redis_peer::store(&server, &Workload::new(KEYS), quick));
    let child = child_figures(quick)?;
    let pipelined = redis.as_ref().map(|f| f.pipelined).map_err(Clone::clone);
    let labels = placement::labels("floor_rtt", child.keys().map(String::as_str));
    if labels.is_empty() {
        return Err("the child reported no floor".into());
    }
    for label in labels {
        let at = |key: &str| child.get(&placement::key(key, &label)).copied();
        let Some(floor) = at("floor_rtt") else {
            continue;
        };
        // Redis under the same placement as this row, else unpinned and
        // named so.
        let peer = redis
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|f| f.rtts_for(&label).ok_or_else(|| "not timed".to_owned()));
        let peer_name = match &peer {
            Ok((l, _)) => format!("Redis, 1 client, {l}"),
            Err(_) => "Redis, 1 client".to_owned(),
        };
        let rtts: [(&str, &str, Pick); 2] = [
            ("get_rtt", "child get round trip", |r| r.get),
            ("set_rtt", "child set round trip", |r| r.set),
        ];
        for (key, what, pick) in rtts {
            if let Some(v) = at(key) {
                report.add(
                    Line::new(format!("{what}, {label}"), "us", v, Better::Lower)
                        .floor(floor::NAME, floor)
                        .peer(peer_name.clone(), peer.clone().map(|(_, r)| pick(&r)))
                        .target("<= 1.5x floor; <= 0.5x Redis"),
                );
            }
        }
        // The same get beside a bare call over the same transport: what the
        // store itself adds to a round trip.
        if let (Some(get), Some(echo)) = (at("get_rtt"), at("echo_rtt")) {
            report.add(
                Line::new(
                    format!("child get round trip vs a bare call, {label}"),
                    "us",
                    get,
                    Better::Lower,
                )
                .floor("yuki transport call, 24 B echo", echo),
            );
        }
    }
    for (key, what) in [
        (
            "batched_1",
            format!("child batched get+set ({BATCH}/frame, 1 thread)"),
        ),
        (
            "batched_4",
            format!("child batched get+set ({BATCH}/frame, 4 threads)"),
        ),
    ] {
        if let Some(v) = child.get(key) {
            report.add(
                Line::new(what, "M ops/s", *v, Better::Higher)
                    .peer(format!("Redis pipelined {BATCH}"), pipelined.clone())
                    .target(">= 1 M ops/s; > Redis pipelined"),
            );
        }
    }
    Ok(())
}

/// Picks one of Redis's round trips.
type Pick = fn(&redis_peer::Rtts) -> f64;

/// Operations per batch (and per Redis pipeline).
pub const BATCH: usize = 64;
/// Where the child leaves its figures, in the store itself.
const RESULT_PREFIX: &str = "bench.result.";
const KEYS: usize = 10_000;
/// A bare service main serves beside the store, for the transport's own cost.
const ECHO: &str = "bench.store.echo";

/// Starts a child on a store filled with the workload; returns its figures.
fn child_figures(quick: bool) -> Result<HashMap<String, f64>, String> {
    // Round trips: the child's reads are calls here, as they are without
    // shared memory (the `shmread` area times the shared read path).
    let node = yuki_ipc_transport::Node::builder()
        .shared_reads(false)
        .init()
        .map_err(|e| e.to_string())?;
    let store = Store::attach(node.transport()).map_err(|e| e.to_string())?;
    let w = Workload::new(KEYS);
    for k in &w.keys {
        store.set(k, &w.value).map_err(|e| e.to_string())?;
    }
    bench_child::serve_echo(&node.transport(), ECHO)?;
    floor::run_child(&node, "store", quick)?;
    let mut figures = HashMap::new();
    for key in store.keys(RESULT_PREFIX).map_err(|e| e.to_string())? {
        if let Ok(Some(v)) = store.get::<f64>(&key) {
            figures.insert(key[RESULT_PREFIX.len()..].to_owned(), v);
        }
    }
    Ok(figures)
}

/// The child's side: round trips beside the floor, then batches; the
/// figures go into the store under [`RESULT_PREFIX`].
pub(crate) fn child(quick: bool) -> Result<(), String> {
    let node = yuki_ipc_transport::Node::init().map_err(|e| e.to_string())?;
    let mut link = floor::RawPair::connect()?;
    let store = Store::attach(node.transport()).map_err(|e| e.to_string())?;
    let w = Workload::new(KEYS);
    let record = |name: &str, v: f64| {
        store
            .set(&format!("{RESULT_PREFIX}{name}"), &v)
            .map_err(|e| e.to_string())
    };
    // Get, set, a bare call and the raw floor in alternating batches, as
    // the ipc figures are timed, so that all four see the same machine,
    // under each placement of the two processes.
    let transport = node.transport();
    let msg = [7u8; floor::PAYLOAD];
    let (rounds, n) = if quick { (5, 200) } else { (10, 1_000) };
    let (mut i, mut j) = (0, 0);
    let placed = placement::each(&transport, || {
        floor::alternate(
            rounds,
            n,
            &mut [
                &mut || link.ping(),
                &mut || {
                    i += 1;
                    black_box(store.get::<String>(w.key(0, i)))
                        .map(drop)
                        .map_err(|e| e.to_string())
                },
                &mut || {
                    j += 1;
                    store.set(w.key(0, j), &w.value).map_err(|e| e.to_string())
                },
                &mut || {
                    transport
                        .call(ECHO, &msg)
                        .map(drop)
                        .map_err(|e| e.to_string())
                },
            ],
        )
    })?;
    drop(link);
    for (label, rtts) in placed {
        for (name, v) in ["floor_rtt", "get_rtt", "set_rtt", "echo_rtt"]
            .into_iter()
            .zip(rtts)
        {
            record(&placement::key(name, &label), v)?;
        }
    }

    let batches = if quick { 100 } else { 1_000 };
    let batch_for = |t: usize, b: usize| {
        let mut batch = yuki_storage::Batch::new();
        for j in 0..BATCH {
            let key = w.key(t, b * BATCH + j);
            if j % 2 == 0 {
                batch.get(key);
            } else {
                batch.set(key, &w.value);
            }
        }
        batch
    };
    for threads in [1usize, 4] {
        // Batches are built beforehand: the figure is the store's, not the builder's.
        let prepared: Vec<Vec<yuki_storage::Batch>> = (0..threads)
            .map(|t| (0..batches / threads).map(|b| batch_for(t, b)).collect())
            .collect();
        let mut best = 0f64;
        for _ in 0..5 {
            let start = Instant::now();
            std::thread::scope(|s| {
                for mine in &prepared {
                    let store = store.clone();
                    s.spawn(move || {
                        for batch in mine {
                            black_box(store.batch(batch).ok());
                        }
                    });
                }
            });
            let ops = (batches / threads * threads * BATCH) as u64;
            best = best.max(mops(ops, start.elapsed()));
        }
        record(&format!("batched_{threads}"), best)?;
    }
    Ok(())
}
