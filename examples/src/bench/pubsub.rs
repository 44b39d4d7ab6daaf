//! Pub/sub: fan-out from one publisher to 4 subscribers.
//!
//! - in one process: yuki's `PubSub::local()` beside crossbeam channels (the
//!   floor: one bare queue per subscriber) and tokio's broadcast channel;
//! - across processes: main publishing to 4 child processes, beside Redis
//!   PUBLISH/SUBSCRIBE with the same payloads (a private `redis-server` on a
//!   free loopback port, started and stopped here), when installed.
//!
//! Each message is a [`Tick`]: a sequence number, the wall-clock time it was
//! sent (so a receiver in another process can compute the latency) and 32
//! bytes of body, about 50 bytes encoded.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use yuki_ipc_transport::Node;
use yuki_pubsub::{Error, PubSub};

use crate::bench::timing::mops;
use crate::report::{Better, Line, Report};

/// Subscribers per fan-out.
const SUBSCRIBERS: usize = 4;

/// Set in this module's children: "quick" or "full".
const CHILD_ENV: &str = "YUKI_BENCH_PUBSUB_CHILD";

/// The cross-process workload, the same in main and in the children.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Messages published as fast as possible.
    burst: u64,
    /// Messages published at `rate` for the latency figures.
    paced: u64,
    /// Messages per second for the latency figures.
    rate: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                burst: 50_000,
                paced: 2_000,
                rate: 10_000,
            }
        } else {
            Plan {
                burst: 1_000_000,
                paced: 20_000,
                rate: 10_000,
            }
        }
    }
}

/// What a child subscriber measured, published to main on `bench.result`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ChildResult {
    /// Burst messages received.
    got: u64,
    /// Burst messages lost (reported as lag).
    lost: u64,
    /// Wall-clock nanoseconds when the last burst message arrived.
    last_ns: u64,
    /// End-to-end latency of each paced message, in microseconds.
    latency_us: Vec<f32>,
}

/// One benchmark message.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Tick {
    /// 0, 1, 2, ... per run.
    pub seq: u64,
    /// Nanoseconds since the Unix epoch when it was published.
    pub sent_ns: u64,
    /// Payload filler.
    #[serde(with = "serde_bytes")]
    pub body: [u8; 32],
}

impl Tick {
    /// A tick stamped now.
    pub fn now(seq: u64) -> Tick {
        Tick {
            seq,
            sent_ns: now_ns(),
            body: [7; 32],
        }
    }
}

/// Wall-clock nanoseconds: comparable between processes of one machine.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Runs this process's part if it is one of this module's children, and
/// then returns `true` (the caller should exit).
pub fn child_main() -> bool {
    match std::env::var(CHILD_ENV) {
        Ok(mode) => {
            if let Err(e) = child(Plan::new(mode == "quick")) {
                eprintln!("pub/sub bench child failed: {e}");
                std::process::exit(1);
            }
            true
        }
        Err(_) => false,
    }
}

/// Adds the pub/sub lines to `report`.
pub fn run(report: &mut Report, quick: bool) {
    local(report, quick);
    across_processes(report, quick);
}

fn across_processes(report: &mut Report, quick: bool) {
    let plan = Plan::new(quick);
    let ours = match yuki_children(plan, quick) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pub/sub across processes failed: {e}");
            return;
        }
    };
    let redis = RedisServer::start();
    let (peer_tput, peer_lat) = match &redis {
        Ok(server) => (
            redis_fanout(server, plan.burst),
            redis_latency(server, plan.paced, plan.rate),
        ),
        Err(why) => (Err(why.clone()), Err(why.clone())),
    };
    drop(redis);
    let mut figure = "pub/sub 1 publisher (main) -> 4 child processes".to_string();
    if ours.lost > 0 {
        figure += &format!(" ({} lost as lag)", ours.lost);
    }
    report.add(
        Line::new(figure, "M msgs/s", ours.mops, Better::Higher)
            .peer("Redis PUBLISH, pipelined 64", peer_tput)
            .target(">= 1 M/s and >= 3x Redis"),
    );
    let mut peer_lat = peer_lat;
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        let mut ours_lat = ours.latency_us.clone();
        let peer = match &mut peer_lat {
            Ok(samples) => Ok(quantile(samples, q)),
            Err(why) => Err(why.clone()),
        };
        report.add(
            Line::new(
                format!(
                    "pub/sub latency {name}, main -> 4 children at {} msgs/s",
                    plan.rate
                ),
                "us",
                quantile(&mut ours_lat, q),
                Better::Lower,
            )
            .peer("Redis", peer),
        );
    }
}

/// yuki's cross-process figures.
#[derive(Debug)]
struct Figures {
    mops: f64,
    lost: u64,
    latency_us: Vec<f64>,
}

/// Main's side: spawns 4 subscriber children, publishes a burst and then a
/// paced stream, and collects what the children measured.
fn yuki_children(plan: Plan, quick: bool) -> Result<Figures, String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let node = Node::init().map_err(|e| text(&e))?;
    let pubsub = PubSub::attach(node.transport()).map_err(|e| text(&e))?;
    let ready = pubsub
        .subscribe::<u64>("bench.ready")
        .map_err(|e| text(&e))?;
    let drained = pubsub
        .subscribe::<u64>("bench.drained")
        .map_err(|e| text(&e))?;
    let results = pubsub
        .subscribe::<ChildResult>("bench.result")
        .map_err(|e| text(&e))?;
    let exe = std::env::current_exe().map_err(|e| text(&e))?;
    let mut children = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut cmd = std::process::Command::new(&exe);
        cmd.env(CHILD_ENV, if quick { "quick" } else { "full" });
        children.push(
            node.spawn(&format!("subscriber{i}"), cmd)
                .map_err(|e| text(&e))?,
        );
    }
    let wait = Duration::from_secs(60);
    for _ in 0..SUBSCRIBERS {
        ready.recv_timeout(wait).map_err(|e| text(&e))?;
    }
    let start_ns = now_ns();
    for seq in 0..plan.burst {
        pubsub
            .publish("bench.fanout", &Tick::now(seq))
            .map_err(|e| text(&e))?;
    }
    // The latency run starts once every child has drained the burst.
    for _ in 0..SUBSCRIBERS {
        drained.recv_timeout(wait).map_err(|e| text(&e))?;
    }
    paced(plan.paced, plan.rate, |seq| {
        pubsub
            .publish("bench.latency", &Tick::now(seq))
            .map(|_| ())
            .map_err(|e| text(&e))
    })?;
    let mut got = 0;
    let mut lost = 0;
    let mut last_ns = start_ns;
    let mut latency_us = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let r = results
            .recv_timeout(wait)
            .map_err(|e| text(&e))?
            .into_value();
        got += r.got;
        lost += r.lost;
        last_ns = last_ns.max(r.last_ns);
        latency_us.extend(r.latency_us.iter().map(|&v| v as f64));
    }
    for child in &children {
        let _ = child.wait_timeout(wait);
    }
    let elapsed = Duration::from_nanos(last_ns.saturating_sub(start_ns).max(1));
    Ok(Figures {
        mops: mops(got, elapsed),
        lost,
        latency_us,
    })
}

/// A child's side: subscribes, says it is ready, receives the burst and the
/// paced stream, and publishes what it measured.
fn child(plan: Plan) -> Result<(), String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let node = Node::init().map_err(|e| text(&e))?;
    let pubsub = PubSub::attach(node.transport()).map_err(|e| text(&e))?;
    let burst = pubsub
        .with_capacity(plan.burst as usize + 1)
        .subscribe::<Tick>("bench.fanout")
        .map_err(|e| text(&e))?;
    let paced = pubsub
        .with_capacity(plan.paced as usize + 1)
        .subscribe::<Tick>("bench.latency")
        .map_err(|e| text(&e))?;
    pubsub
        .publish("bench.ready", &node.peer_id().0)
        .map_err(|e| text(&e))?;
    let quiet = Duration::from_secs(5);
    let mut result = ChildResult::default();
    loop {
        match burst.recv_timeout(quiet) {
            Ok(m) => {
                result.got += 1;
                result.last_ns = now_ns();
                if m.value().seq + 1 == plan.burst {
                    break;
                }
            }
            Err(Error::Lagged(n)) => result.lost += n,
            Err(Error::Timeout(_)) => break,
            Err(e) => return Err(text(&e)),
        }
    }
    pubsub
        .publish("bench.drained", &result.got)
        .map_err(|e| text(&e))?;
    while (result.latency_us.len() as u64) < plan.paced {
        match paced.recv_timeout(quiet) {
            Ok(m) => result
                .latency_us
                .push(now_ns().saturating_sub(m.value().sent_ns) as f32 / 1e3),
            Err(Error::Lagged(_)) => {}
            Err(Error::Timeout(_)) => break,
            Err(e) => return Err(text(&e)),
        }
    }
    pubsub
        .publish("bench.result", &result)
        .map_err(|e| text(&e))?;
    Ok(())
}

fn local(report: &mut Report, quick: bool) {
    let n: u64 = if quick { 20_000 } else { 300_000 };
    let ours = local_yuki(n);
    let floor = local_crossbeam(n);
    let peer = local_broadcast(n);
    report.add(
        Line::new(
            "pub/sub in-process, 1 publisher -> 4 subscribers",
            "M msgs/s",
            ours,
            Better::Higher,
        )
        .floor("crossbeam, a queue per subscriber", floor)
        .peer("tokio broadcast", Ok(peer)),
    );
}

/// yuki in one process: messages delivered per second, in millions.
fn local_yuki(n: u64) -> f64 {
    let pubsub = PubSub::local().with_capacity(n as usize + 1);
    let subs: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| {
            pubsub
                .subscribe::<Tick>("bench.fanout")
                .expect("valid pattern")
        })
        .collect();
    let start = Instant::now();
    thread::scope(|s| {
        for sub in &subs {
            s.spawn(move || {
                let mut got = 0u64;
                while got < n {
                    if sub.recv().is_ok() {
                        got += 1;
                    }
                }
            });
        }
        for seq in 0..n {
            let _ = pubsub.publish("bench.fanout", &Tick::now(seq));
        }
    });
    mops(n * SUBSCRIBERS as u64, start.elapsed())
}

/// The floor: the encoded message sent to one crossbeam queue per subscriber.
fn local_crossbeam(n: u64) -> f64 {
    let queues: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| crossbeam_channel::unbounded::<Arc<[u8]>>())
        .collect();
    let start = Instant::now();
    thread::scope(|s| {
        for (_, rx) in &queues {
            s.spawn(move || {
                for _ in 0..n {
                    if let Ok(bytes) = rx.recv() {
                        let _ = yuki_channel::codec::decode::<Tick>(&bytes);
                    }
                }
            });
        }
        for seq in 0..n {
            if let Ok(bytes) = yuki_channel::codec::encode(&Tick::now(seq)) {
                let bytes: Arc<[u8]> = bytes.into();
                for (tx, _) in &queues {
                    let _ = tx.send(bytes.clone());
                }
            }
        }
    });
    mops(n * SUBSCRIBERS as u64, start.elapsed())
}

/// The in-process peer: tokio's broadcast channel, typed, no encoding.
fn local_broadcast(n: u64) -> f64 {
    let (tx, _) = tokio::sync::broadcast::channel::<Tick>(n as usize + 1);
    let rxs: Vec<_> = (0..SUBSCRIBERS).map(|_| tx.subscribe()).collect();
    let start = Instant::now();
    thread::scope(|s| {
        for mut rx in rxs {
            s.spawn(move || {
                let mut got = 0;
                while got < n {
                    match rx.blocking_recv() {
                        Ok(_) => got += 1,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => got += k,
                        Err(_) => break,
                    }
                }
            });
        }
        for seq in 0..n {
            let _ = tx.send(Tick::now(seq));
        }
    });
    mops(n * SUBSCRIBERS as u64, start.elapsed())
}

/// A private `redis-server` on a free loopback port, stopped on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    /// Starts one, or says why it could not.
    pub fn start() -> Result<RedisServer, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--client-output-buffer-limit", "pubsub 0 0 0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => "not installed".to_string(),
                _ => format!("cannot start: {e}"),
            })?;
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("did not start within 5 s".into());
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    /// A client of this server.
    pub fn client(&self) -> Result<redis::Client, String> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).map_err(|e| e.to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis: 4 subscriber connections, a publisher pipelining PUBLISH 64 at a
/// time; messages delivered per second, in millions.
pub fn redis_fanout(server: &RedisServer, n: u64) -> Result<f64, String> {
    let client = server.client()?;
    let ready = Arc::new(Barrier::new(SUBSCRIBERS + 1));
    let start = thread::scope(|s| -> Result<Instant, String> {
        let mut readers = Vec::new();
        for _ in 0..SUBSCRIBERS {
            let (client, ready) = (client.clone(), ready.clone());
            readers.push(s.spawn(move || -> Result<(), String> {
                let mut con = client.get_connection().map_err(|e| e.to_string())?;
                let mut sub = con.as_pubsub();
                sub.subscribe("bench.fanout").map_err(|e| e.to_string())?;
                ready.wait();
                let mut got = 0;
                while got < n {
                    let msg = sub.get_message().map_err(|e| e.to_string())?;
                    let _ = yuki_channel::codec::decode::<Tick>(msg.get_payload_bytes());
                    got += 1;
                }
                Ok(())
            }));
        }
        let mut con = client.get_connection().map_err(|e| e.to_string())?;
        ready.wait();
        let start = Instant::now();
        let mut seq = 0;
        while seq < n {
            let mut pipe = redis::pipe();
            for _ in 0..64.min(n - seq) {
                let bytes =
                    yuki_channel::codec::encode(&Tick::now(seq)).map_err(|e| e.to_string())?;
                pipe.cmd("PUBLISH").arg("bench.fanout").arg(bytes).ignore();
                seq += 1;
            }
            pipe.exec(&mut con).map_err(|e| e.to_string())?;
        }
        for r in readers {
            r.join().map_err(|_| "a reader panicked".to_string())??;
        }
        Ok(start)
    })?;
    Ok(mops(n * SUBSCRIBERS as u64, start.elapsed()))
}

/// Redis at `rate` messages/s for `n` messages: end-to-end latency samples
/// of every subscriber, in microseconds.
pub fn redis_latency(server: &RedisServer, n: u64, rate: u64) -> Result<Vec<f64>, String> {
    let client = server.client()?;
    let ready = Arc::new(Barrier::new(SUBSCRIBERS + 1));
    thread::scope(|s| -> Result<Vec<f64>, String> {
        let mut readers = Vec::new();
        for _ in 0..SUBSCRIBERS {
            let (client, ready) = (client.clone(), ready.clone());
            readers.push(s.spawn(move || -> Result<Vec<f64>, String> {
                let mut con = client.get_connection().map_err(|e| e.to_string())?;
                let mut sub = con.as_pubsub();
                sub.subscribe("bench.latency").map_err(|e| e.to_string())?;
                ready.wait();
                let mut samples = Vec::with_capacity(n as usize);
                while (samples.len() as u64) < n {
                    let msg = sub.get_message().map_err(|e| e.to_string())?;
                    let tick: Tick = yuki_channel::codec::decode(msg.get_payload_bytes())
                        .map_err(|e| e.to_string())?;
                    samples.push(now_ns().saturating_sub(tick.sent_ns) as f64 / 1e3);
                }
                Ok(samples)
            }));
        }
        let mut con = client.get_connection().map_err(|e| e.to_string())?;
        ready.wait();
        paced(n, rate, |seq| {
            let bytes = yuki_channel::codec::encode(&Tick::now(seq)).map_err(|e| e.to_string())?;
            redis::cmd("PUBLISH")
                .arg("bench.latency")
                .arg(bytes)
                .exec(&mut con)
                .map_err(|e| e.to_string())
        })?;
        let mut all = Vec::new();
        for r in readers {
            all.extend(r.join().map_err(|_| "a reader panicked".to_string())??);
        }
        Ok(all)
    })
}

/// Calls `send(seq)` for `n` messages at `rate` per second.
pub fn paced(
    n: u64,
    rate: u64,
    mut send: impl FnMut(u64) -> Result<(), String>,
) -> Result<(), String> {
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    for seq in 0..n {
        let due = start + period * seq as u32;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        send(seq)?;
    }
    Ok(())
}

/// The `q` quantile (0.0..=1.0) of `samples`, which it sorts.
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable_by(f64::total_cmp);
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}
