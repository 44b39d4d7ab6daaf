//! The store: main-process operations against a bare `RwLock<HashMap>`,
//! a child's operations against the raw ipc-channel floor and Redis.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Barrier, RwLock};
use std::time::{Duration, Instant};

use yuki_channel::PeerId;
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
    // Many short runs: the best of them is least disturbed by other work.
    let ops = 30_000;
    let rounds = if quick { 2 } else { 40 };
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
    let floor = match floor_rtt(if quick { 2_000 } else { 20_000 }) {
        Ok(us) => Some(us),
        Err(e) => {
            eprintln!("store: the ipc-channel floor failed: {e}");
            None
        }
    };
    let redis = redis::measure(quick);
    let child = match child_figures(quick) {
        Ok(figures) => figures,
        Err(e) => {
            eprintln!("store: the child failed: {e}");
            return;
        }
    };
    let peer =
        |pick: Pick| -> Result<f64, String> { redis.as_ref().map(pick).map_err(Clone::clone) };
    let with_floor = |line: Line, value: Option<f64>| match value {
        Some(v) => line.floor("ipc-channel bytes ping-pong", v),
        None => line,
    };
    let rtts: [(&str, &str, Pick); 2] = [
        ("get_rtt", "child get round trip", |f| f.get_rtt),
        ("set_rtt", "child set round trip", |f| f.set_rtt),
    ];
    for (key, what, pick) in rtts {
        if let Some(v) = child.get(key) {
            report.add(
                with_floor(Line::new(what, "us", *v, Better::Lower), floor)
                    .peer("Redis, 1 client", peer(pick))
                    .target("<= 1.5x floor; <= 0.5x Redis"),
            );
        }
    }
    // The same get beside a bare call over the same transport: what the
    // store itself adds to a round trip.
    if let (Some(get), Some(echo)) = (child.get("get_rtt"), child.get("echo_rtt")) {
        report.add(
            Line::new(
                "child get round trip vs a bare call",
                "us",
                *get,
                Better::Lower,
            )
            .floor("yuki transport call, 24 B echo", *echo),
        );
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
                    .peer(format!("Redis pipelined {BATCH}"), peer(|f| f.pipelined))
                    .target(">= 1 M ops/s; > Redis pipelined"),
            );
        }
    }
}

/// Picks one of Redis's figures.
type Pick = fn(&redis::Figures) -> f64;

/// Operations per batch (and per Redis pipeline).
const BATCH: usize = 64;
/// Set in the store's bench child: "quick" or "full".
const CHILD_ENV: &str = "YUKI_BENCH_STORE_CHILD";
/// Set in the floor's child: the name of the parent's one-shot server.
const FLOOR_ENV: &str = "YUKI_BENCH_STORE_FLOOR";
/// Where the child leaves its figures, in the store itself.
const RESULT_PREFIX: &str = "bench.result.";
const KEYS: usize = 10_000;
/// A bare service main serves beside the store, for the transport's own cost.
const ECHO: &str = "bench.store.echo";

/// Runs this process's part if it is one of this module's children, and
/// then returns `true` (the caller should exit).
pub fn child_main() -> bool {
    if let Ok(server) = std::env::var(FLOOR_ENV) {
        floor_child(server);
        return true;
    }
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        if let Err(e) = store_child(mode == "quick") {
            eprintln!("store bench child: {e}");
            std::process::exit(1);
        }
        return true;
    }
    false
}

/// The lowest of `batches` means of `per_batch` round trips, in
/// microseconds: on a shared machine the best short run is the figure least
/// distorted by other work, and every column is measured the same way.
fn best_rtt(batches: usize, per_batch: usize, mut one: impl FnMut(usize)) -> f64 {
    let mut i = 0;
    let mut means: Vec<f64> = (0..batches)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                one(i);
                i += 1;
            }
            start.elapsed().as_secs_f64() * 1e6 / per_batch as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    means[0]
}

type FloorHello = (
    ipc_channel::ipc::IpcBytesSender,
    ipc_channel::ipc::IpcBytesReceiver,
);

/// The raw ipc-channel round trip of a get-sized request and reply.
fn floor_rtt(n: usize) -> Result<f64, String> {
    use ipc_channel::ipc::IpcOneShotServer;
    let (server, name) = IpcOneShotServer::<FloorHello>::new().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(exe)
        .env(FLOOR_ENV, name)
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = (|| {
        let (_, (to_child, from_child)) = server.accept().map_err(|e| format!("{e:?}"))?;
        // A get request is about 20 bytes; its reply about 40.
        let msg = [7u8; 24];
        let mut one = |_| {
            if to_child.send(&msg).is_ok() {
                let _ = black_box(from_child.recv());
            }
        };
        for i in 0..n / 10 {
            one(i);
        }
        let rtt = best_rtt(10, n / 10, &mut one);
        let _ = to_child.send(&[]);
        Ok(rtt)
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn floor_child(server: String) {
    use ipc_channel::ipc::{self, IpcSender};
    let Ok((to_child, from_parent)) = ipc::bytes_channel() else {
        return;
    };
    let Ok((to_parent, from_child)) = ipc::bytes_channel() else {
        return;
    };
    let hello: FloorHello = (to_child, from_child);
    if IpcSender::<FloorHello>::connect(server)
        .and_then(|s| s.send(hello).map_err(std::io::Error::other))
        .is_err()
    {
        return;
    }
    let reply = [9u8; 40];
    while let Ok(msg) = from_parent.recv() {
        if msg.is_empty() || to_parent.send(&reply).is_err() {
            break;
        }
    }
}

/// Starts a child on a store filled with the workload; returns its figures.
fn child_figures(quick: bool) -> Result<HashMap<String, f64>, String> {
    let node = yuki_ipc_transport::Node::init().map_err(|e| e.to_string())?;
    let store = Store::attach(node.transport()).map_err(|e| e.to_string())?;
    let w = Workload::new(KEYS);
    for k in &w.keys {
        store.set(k, &w.value).map_err(|e| e.to_string())?;
    }
    node.transport()
        .serve(
            ECHO,
            std::sync::Arc::new(|_: PeerId, req: &[u8], reply: &mut Vec<u8>| {
                reply.extend_from_slice(req);
                Ok(())
            }),
        )
        .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.env(CHILD_ENV, if quick { "quick" } else { "full" });
    let child = node.spawn("store-bench", cmd).map_err(|e| e.to_string())?;
    let exit = child
        .wait_timeout(Duration::from_secs(300))
        .ok_or("the child did not finish in time")?;
    if !exit.status.success() {
        return Err(format!("the child failed: {}", exit.status));
    }
    let mut figures = HashMap::new();
    for key in store.keys(RESULT_PREFIX).map_err(|e| e.to_string())? {
        if let Ok(Some(v)) = store.get::<f64>(&key) {
            figures.insert(key[RESULT_PREFIX.len()..].to_owned(), v);
        }
    }
    Ok(figures)
}

fn store_child(quick: bool) -> Result<(), yuki_storage::Error> {
    let node = yuki_ipc_transport::Node::init()
        .map_err(|e| yuki_storage::Error::Disconnected(e.to_string()))?;
    let store = Store::attach(node.transport())?;
    let w = Workload::new(KEYS);
    let n = if quick { 2_000 } else { 20_000 };
    let record = |name: &str, v: f64| store.set(&format!("{RESULT_PREFIX}{name}"), &v);

    for i in 0..n / 10 {
        store.get::<String>(w.key(0, i))?;
    }
    // Get, set and a bare call in alternating short runs, so that all three
    // see the same machine; the best run of each is kept.
    let transport = node.transport();
    let msg = [7u8; 24];
    let (mut get, mut set, mut echo) = (f64::MAX, f64::MAX, f64::MAX);
    for round in 0..10 {
        let base = round * n / 10;
        get = get.min(best_rtt(1, n / 10, |i| {
            black_box(store.get::<String>(w.key(0, base + i)).ok());
        }));
        set = set.min(best_rtt(1, n / 10, |i| {
            black_box(store.set(w.key(0, base + i), &w.value).ok());
        }));
        echo = echo.min(best_rtt(1, n / 10, |_| {
            black_box(transport.call(ECHO, &msg).ok());
        }));
    }
    record("get_rtt", get)?;
    record("set_rtt", set)?;
    record("echo_rtt", echo)?;

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

/// Redis driven by the same workload, when `redis-server` is installed.
mod redis {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::{BATCH, KEYS, Workload, best_rtt};
    use crate::bench::timing::mops;

    /// Redis's figures.
    pub(super) struct Figures {
        pub(super) get_rtt: f64,
        pub(super) set_rtt: f64,
        pub(super) pipelined: f64,
    }

    /// A private redis-server on a free loopback port, stopped on drop.
    struct Server(Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A minimal RESP client: the benchmark needs only GET, SET and
    /// pipelining, and a full client crate would add a large dependency
    /// tree to the workspace for that.
    struct Client {
        reader: BufReader<TcpStream>,
        writer: TcpStream,
        out: Vec<u8>,
        line: String,
    }

    impl Client {
        fn connect(port: u16) -> std::io::Result<Client> {
            let stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            Ok(Client {
                reader: BufReader::new(stream.try_clone()?),
                writer: stream,
                out: Vec::new(),
                line: String::new(),
            })
        }

        fn queue(&mut self, args: &[&[u8]]) {
            self.out
                .extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                self.out
                    .extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                self.out.extend_from_slice(a);
                self.out.extend_from_slice(b"\r\n");
            }
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.writer.write_all(&self.out)?;
            self.out.clear();
            Ok(())
        }

        /// Reads one reply, returning the bulk payload's length if any.
        fn reply(&mut self) -> std::io::Result<Option<usize>> {
            self.line.clear();
            self.reader.read_line(&mut self.line)?;
            let kind = self.line.as_bytes().first().copied();
            let rest = self.line.get(1..).unwrap_or("").trim_end();
            match kind {
                Some(b'+') | Some(b':') => Ok(None),
                Some(b'-') => Err(std::io::Error::other(self.line.clone())),
                Some(b'$') => {
                    let len: i64 = rest.parse().map_err(std::io::Error::other)?;
                    if len < 0 {
                        return Ok(None);
                    }
                    let mut buf = vec![0; len as usize + 2];
                    self.reader.read_exact(&mut buf)?;
                    Ok(Some(len as usize))
                }
                _ => Err(std::io::Error::other(format!(
                    "unexpected reply {:?}",
                    self.line
                ))),
            }
        }

        fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Option<usize>> {
            self.queue(args);
            self.flush()?;
            self.reply()
        }
    }

    fn start() -> Result<(Server, Client), String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    "redis-server not installed".to_owned()
                } else {
                    e.to_string()
                }
            })?;
        let server = Server(child);
        // The server needs a moment to listen; a bounded wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = Client::connect(port) {
                if c.call(&[b"PING"]).is_ok() {
                    return Ok((server, c));
                }
            }
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn measure(quick: bool) -> Result<Figures, String> {
        let (_server, mut c) = start()?;
        let w = Workload::new(KEYS);
        let value = w.value.as_bytes();
        let io = |e: std::io::Error| e.to_string();
        for chunk in w.keys.chunks(BATCH) {
            for k in chunk {
                c.queue(&[b"SET", k.as_bytes(), value]);
            }
            c.flush().map_err(io)?;
            for _ in chunk {
                c.reply().map_err(io)?;
            }
        }
        let n = if quick { 2_000 } else { 20_000 };
        let mut failed = None;
        let get_rtt = best_rtt(10, n / 10, |i| {
            if let Err(e) = c.call(&[b"GET", w.key(0, i).as_bytes()]) {
                failed = Some(e.to_string());
            }
        });
        let set_rtt = best_rtt(10, n / 10, |i| {
            if let Err(e) = c.call(&[b"SET", w.key(0, i).as_bytes(), value]) {
                failed = Some(e.to_string());
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let batches = if quick { 100 } else { 1_000 };
        let mut pipelined = 0f64;
        for _ in 0..5 {
            let start = Instant::now();
            for b in 0..batches {
                for j in 0..BATCH {
                    let key = w.key(0, b * BATCH + j).as_bytes();
                    if j % 2 == 0 {
                        c.queue(&[b"GET", key]);
                    } else {
                        c.queue(&[b"SET", key, value]);
                    }
                }
                c.flush().map_err(io)?;
                for _ in 0..BATCH {
                    c.reply().map_err(io)?;
                }
            }
            pipelined = pipelined.max(mops((batches * BATCH) as u64, start.elapsed()));
        }
        Ok(Figures {
            get_rtt,
            set_rtt,
            pipelined,
        })
    }
}
