//! A child's read of the store from shared memory: its latency (median,
//! p99, p99.9; one reader, and four readers in four processes) beside
//! main's own get, beside the round trip it replaces (shared reads off),
//! and beside LMDB (through `heed`, one read transaction per get), plus
//! what the shared copy costs main's and a child's writes.
//!
//! Every get is timed alone with `Instant` (the timer's own cost, measured
//! in the same run, is subtracted), over 100,000 keys of 24-byte values in
//! a random order, after one untimed pass over them all (for every reader
//! alike). Processes are left to the scheduler (unpinned).

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use serde_bytes::ByteBuf;
use yuki_ipc_transport::Node;
use yuki_storage::Store;

use crate::bench::child as bench_child;
use crate::report::{Better, Line, Report};

/// Keys of the workload, and the length of each value.
const KEYS: usize = 100_000;
const VALUE_LEN: usize = 24;
/// Where children leave their figures, in the store itself.
const RESULT_PREFIX: &str = "bench.shmread.result.";
const READY_PREFIX: &str = "bench.shmread.ready.";
const GO: &str = "bench.shmread.go";
/// Tells a reader child its index.
const READER_ENV: &str = "YUKI_BENCH_SHMREAD_READER";
/// Sets a child times for its set figure, in each of `SET_ROUNDS` rounds.
const SETS: usize = 10_000;
const SET_ROUNDS: usize = 5;

fn key(i: usize) -> String {
    format!("key:{i:06}")
}

fn value(i: usize) -> ByteBuf {
    ByteBuf::from((0..VALUE_LEN).map(|j| (i + j) as u8).collect::<Vec<u8>>())
}

/// The keys in a random order of their own (`seed`), `n` of them.
fn order(n: usize, seed: u64) -> Vec<String> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            key(x as usize % KEYS)
        })
        .collect()
}

/// What timing nothing costs, in nanoseconds (the median of many tries).
fn timer_cost() -> f64 {
    let mut tries: Vec<f64> = (0..20_000)
        .map(|_| {
            let t = Instant::now();
            black_box(());
            t.elapsed().as_nanos() as f64
        })
        .collect();
    tries.sort_by(f64::total_cmp);
    tries[tries.len() / 2]
}

/// Median, p99 and p99.9 of `op` over `keys`, in microseconds, each get
/// timed alone.
fn latencies(keys: &[String], cost: f64, mut op: impl FnMut(&str)) -> [f64; 3] {
    let mut samples: Vec<f64> = keys
        .iter()
        .map(|k| {
            let t = Instant::now();
            op(k);
            (t.elapsed().as_nanos() as f64 - cost).max(0.0)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] / 1000.0;
    [at(0.5), at(0.99), at(0.999)]
}

const QUANTILES: [&str; 3] = ["median", "p99", "p99.9"];

/// Main's node and its store, filled with the workload.
fn filled_main(shared: bool) -> Result<(Node, Store), String> {
    let node = Node::builder()
        .independent_main()
        .shared_reads(shared)
        .init()
        .map_err(|e| e.to_string())?;
    let store = Store::attach(node.transport()).map_err(|e| e.to_string())?;
    if shared && !store.shares_reads() {
        return Err("shared reads are off (not Linux, or YUKI_SHARED_READS=0)".into());
    }
    for i in 0..KEYS {
        store.set(&key(i), &value(i)).map_err(|e| e.to_string())?;
    }
    Ok((node, store))
}

/// What one run of `readers` reader children measured, the worst reader's
/// figure for each.
#[derive(Debug, Default)]
struct Readers {
    get: [f64; 3],
    set: f64,
}

/// Starts `readers` children on `node` at once and gathers their figures.
fn run_readers(node: &Node, store: &Store, readers: usize, quick: bool) -> Result<Readers, String> {
    let err = |e: yuki_storage::Error| e.to_string();
    let _ = store.delete(GO).map_err(err)?;
    let ready = store.watch(READY_PREFIX).map_err(err)?;
    let children = (0..readers)
        .map(|i| {
            let mut cmd: Command = bench_child::command("shmread", quick)?;
            cmd.env(READER_ENV, i.to_string());
            node.spawn(&format!("shmread-reader-{i}"), cmd)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    for _ in 0..readers {
        ready
            .recv_timeout(bench_child::TIME_LIMIT)
            .map_err(|e| format!("a reader never got ready: {e}"))?;
    }
    store.set(GO, &true).map_err(err)?;
    for child in &children {
        let exit = child
            .wait_timeout(bench_child::TIME_LIMIT)
            .map_err(|e| e.to_string())?;
        if !exit.status.success() {
            return Err(format!("a reader failed: {}", exit.status));
        }
    }
    let mut out = Readers::default();
    for i in 0..readers {
        let figure = |name: &str| -> Result<f64, String> {
            store
                .get::<f64>(&format!("{RESULT_PREFIX}{i}.{name}"))
                .map_err(err)?
                .ok_or_else(|| format!("reader {i} left no {name}"))
        };
        for (q, name) in QUANTILES.iter().enumerate() {
            out.get[q] = out.get[q].max(figure(name)?);
        }
        out.set = out.set.max(figure("set")?);
    }
    Ok(out)
}

/// LMDB is the peer only where the shared read path exists.
#[cfg(not(target_os = "linux"))]
fn lmdb(_: &[String], _: f64) -> Result<[f64; 3], String> {
    Err("LMDB is measured on Linux only, beside the shared read path".into())
}

/// LMDB's read of the same workload, from a database in a temporary
/// directory: one read transaction per get, the value copied out.
#[cfg(target_os = "linux")]
fn lmdb(keys: &[String], cost: f64) -> Result<[f64; 3], String> {
    use heed::types::{Bytes, Str};
    let dir = std::env::temp_dir().join(format!("yuki-bench-lmdb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let measured = (|| {
        let e = |e: heed::Error| e.to_string();
        // SAFETY: a directory of this run's own; nobody else opens it.
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .map_size(1 << 30)
                .open(&dir)
                .map_err(e)?
        };
        let mut wtxn = env.write_txn().map_err(e)?;
        let db: heed::Database<Str, Bytes> = env.create_database(&mut wtxn, None).map_err(e)?;
        for i in 0..KEYS {
            db.put(&mut wtxn, &key(i), &value(i)).map_err(e)?;
        }
        wtxn.commit().map_err(e)?;
        let get = |k: &str| {
            let rtxn = env.read_txn().expect("a read transaction");
            black_box(db.get(&rtxn, k).ok().flatten().map(<[u8]>::to_vec));
        };
        // Warmed as ours are: one pass over every key first.
        for k in keys {
            get(k);
        }
        Ok::<_, String>(latencies(keys, cost, get))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

/// Mean microseconds of a `set` on `store`, best of a few rounds.
fn set_cost(store: &Store, n: usize, rounds: usize) -> f64 {
    let v = value(0);
    (0..rounds)
        .map(|r| {
            let t = Instant::now();
            for i in 0..n {
                black_box(store.set(&key((i * 7919 + r) % KEYS), &v).is_ok());
            }
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Mean microseconds of a `get` on `store`, in the order of `set_cost`.
fn get_cost(store: &Store, n: usize) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        black_box(store.get::<ByteBuf>(&key((i * 7919) % KEYS)).is_ok());
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Wall-clock microseconds per `set` on `store` while `threads` threads of
/// main make `n` sets in all, each in its own order.
fn threaded_set_cost(store: &Store, n: usize, threads: usize) -> f64 {
    let v = value(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for th in 0..threads {
            let v = &v;
            s.spawn(move || {
                for i in 0..n / threads {
                    let k = (i * 7919 + th * (KEYS / threads)) % KEYS;
                    black_box(store.set(&key(k), v).is_ok());
                }
            });
        }
    });
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Measures the shared read path's figures.
pub fn run(report: &mut Report, quick: bool) -> Result<(), String> {
    let n = if quick { 20_000 } else { KEYS };
    let cost = timer_cost();
    let keys = order(n, 0x5eed);
    let (on_node, on_store) = filled_main(true)?;
    let (off_node, off_store) = filled_main(false)?;

    for k in &keys {
        black_box(on_store.get::<ByteBuf>(k).ok().flatten());
    }
    let main_get = latencies(&keys, cost, |k| {
        black_box(on_store.get::<ByteBuf>(k).ok().flatten());
    });
    let peer = lmdb(&keys, cost);
    let one = run_readers(&on_node, &on_store, 1, quick)?;
    let four = run_readers(&on_node, &on_store, 4, quick)?;
    let calls = run_readers(&off_node, &off_store, 1, quick)?;

    for (label, figures) in [
        ("1 reader", &one),
        ("4 readers in 4 processes, the slowest", &four),
    ] {
        for (q, name) in QUANTILES.iter().enumerate() {
            let mut line = Line::new(
                format!("child get::<ByteBuf> from shared memory, {label}, {name}"),
                "us",
                figures.get[q],
                Better::Lower,
            )
            .floor("main's own get", main_get[q])
            .peer(
                "LMDB via heed, one read txn per get",
                peer.clone().map(|p| p[q]),
            );
            if q == 0 {
                line = line.target("<= 0.25 us; < LMDB");
            }
            report.add(line);
        }
    }
    for (q, name) in QUANTILES.iter().enumerate() {
        report.add(
            Line::new(
                format!("child get round trip it replaces (shared reads off), {name}"),
                "us",
                calls.get[q],
                Better::Lower,
            )
            .floor("child get from shared memory", one.get[q]),
        );
    }
    // Writes, with the shared copy and without, alternated so both see the
    // same machine.
    let (sets, rounds) = if quick { (20_000, 2) } else { (KEYS, 6) };
    let (mut with, mut without) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds {
        with = with.min(set_cost(&on_store, sets, 1));
        without = without.min(set_cost(&off_store, sets, 1));
    }
    report.add(
        Line::new("main set, shared reads on", "us", with, Better::Lower)
            .floor("shared reads off", without)
            .target("<= 1.2x floor"),
    );
    let (mut with, mut without) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds {
        with = with.min(threaded_set_cost(&on_store, sets, 2));
        without = without.min(threaded_set_cost(&off_store, sets, 2));
    }
    report.add(
        Line::new(
            "main set from 2 threads, shared reads on",
            "us",
            with,
            Better::Lower,
        )
        .floor("shared reads off", without)
        .target("<= 1.2x floor"),
    );
    let (mut with, mut without) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds {
        with = with.min(get_cost(&on_store, sets));
        without = without.min(get_cost(&off_store, sets));
    }
    report.add(
        Line::new("main get, shared reads on", "us", with, Better::Lower)
            .floor("shared reads off", without)
            .target("<= 1.2x floor"),
    );
    report.add(
        Line::new(
            "child set round trip, shared reads on",
            "us",
            one.set,
            Better::Lower,
        )
        .floor("shared reads off", calls.set)
        .target("<= 1.2x floor"),
    );
    drop((on_store, off_store));
    drop((on_node, off_node));
    Ok(())
}

/// A reader child: says it is ready, waits for the others, then times its
/// gets and sets and leaves the figures in the store.
pub(crate) fn child(quick: bool) -> Result<(), String> {
    let index: usize = std::env::var(READER_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or("no reader index")?;
    let node = Node::init().map_err(|e| e.to_string())?;
    let store = Store::attach(node.transport()).map_err(|e| e.to_string())?;
    let err = |e: yuki_storage::Error| e.to_string();
    let n = if quick { 20_000 } else { KEYS };
    let keys = order(n, 0x5eed + index as u64 * 7);
    let cost = timer_cost();
    store
        .set(&format!("{READY_PREFIX}{index}"), &true)
        .map_err(err)?;
    let deadline = Instant::now() + bench_child::TIME_LIMIT;
    while !store.contains(GO).map_err(err)? {
        if Instant::now() > deadline {
            return Err("main never said go".into());
        }
        std::thread::yield_now();
    }
    // Warm the caches and the page tables of the region first: one pass
    // over every key (a first touch of a page costs a fault).
    for k in &keys {
        black_box(store.get::<ByteBuf>(k).map_err(err)?);
    }
    let get = latencies(&keys, cost, |k| {
        black_box(store.get::<ByteBuf>(k).ok().flatten());
    });
    // The best of a few rounds: a round trip is at the scheduler's mercy,
    // and the figure is compared with another child's, run at another time.
    let v = value(index);
    let mut set = f64::INFINITY;
    for _ in 0..SET_ROUNDS {
        let t = Instant::now();
        for j in 0..SETS {
            store
                .set(&format!("bench.shmread.w{index}.{}", j % 1000), &v)
                .map_err(err)?;
        }
        set = set.min(t.elapsed().as_secs_f64() * 1e6 / SETS as f64);
    }
    let record = |name: &str, v: f64| store.set(&format!("{RESULT_PREFIX}{index}.{name}"), &v);
    for (q, name) in QUANTILES.iter().enumerate() {
        record(name, get[q]).map_err(err)?;
    }
    record("set", set).map_err(err)?;
    Ok(())
}
