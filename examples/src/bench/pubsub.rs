//! Pub/sub: fan-out from one publisher to 4 subscribers.
//!
//! - in one process: yuki's `PubSub::local()` beside crossbeam channels (the
//!   floor: one bare queue per subscriber) and tokio's broadcast channel;
//! - across processes: main publishing to 4 child processes, beside Redis
//!   PUBLISH/SUBSCRIBE with the same payloads ([`redis_peer`]), when installed.
//!
//! Each message is a [`Tick`]: a sequence number, the wall-clock time it was
//! sent (so a receiver in another process can compute the latency) and 32
//! bytes of body, about 50 bytes encoded.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use yuki_ipc_transport::Node;
use yuki_pubsub::{Error, PubSub};

use crate::bench::timing::mops;
use crate::bench::{child as bench_child, redis_peer};
use crate::report::{Better, Line, Report};

/// Subscribers per fan-out.
pub const SUBSCRIBERS: usize = 4;

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
    /// Messages received, per burst.
    got: [u64; 2],
    /// Messages lost (reported as lag), per burst.
    lost: [u64; 2],
    /// Wall-clock nanoseconds when the last message of each burst arrived.
    last_ns: [u64; 2],
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

/// Adds the pub/sub lines to `report`.
pub fn run(report: &mut Report, quick: bool) -> Result<(), String> {
    local(report, quick);
    across_processes(report, quick)
}

fn across_processes(report: &mut Report, quick: bool) -> Result<(), String> {
    let plan = Plan::new(quick);
    let ours = yuki_children(plan, quick)?;
    let redis = redis_peer::server();
    let (peer_tput, peer_lat) = match &redis {
        Ok(server) => (
            redis_peer::fanout(server, plan.burst),
            redis_peer::latency(server, plan.paced, plan.rate),
        ),
        Err(why) => (Err(why.clone()), Err(why.clone())),
    };
    drop(redis);
    for (i, how) in ["publish", "publish_batch of 64"].iter().enumerate() {
        let mut figure = format!("pub/sub main -> 4 child processes, {how}");
        if ours.lost[i] > 0 {
            figure += &format!(" ({} lost as lag)", ours.lost[i]);
        }
        report.add(
            Line::new(figure, "M msgs/s", ours.mops[i], Better::Higher)
                .peer("Redis PUBLISH, pipelined 64", peer_tput.clone())
                .target(">= 1 M/s and >= 3x Redis"),
        );
    }
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
    Ok(())
}

/// yuki's cross-process figures: [one publish per message, batches of 64].
#[derive(Debug)]
struct Figures {
    mops: [f64; 2],
    lost: [u64; 2],
    latency_us: Vec<f64>,
}

/// The burst topics: one publish per message, then batches.
const BURSTS: [&str; 2] = ["bench.single", "bench.batched"];

/// Main's side: spawns 4 subscriber children, publishes two bursts and then
/// a paced stream, and collects what the children measured.
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
    let mut children = Vec::new();
    for i in 0..SUBSCRIBERS {
        let cmd = bench_child::command("pubsub", quick)?;
        children.push(
            node.spawn(&format!("subscriber{i}"), cmd)
                .map_err(|e| text(&e))?,
        );
    }
    let wait = Duration::from_secs(60);
    for _ in 0..SUBSCRIBERS {
        ready.recv_timeout(wait).map_err(|e| text(&e))?;
    }
    let mut starts = [0; 2];
    for (b, topic) in BURSTS.iter().enumerate() {
        starts[b] = now_ns();
        if b == 0 {
            for seq in 0..plan.burst {
                pubsub
                    .publish(topic, &Tick::now(seq))
                    .map_err(|e| text(&e))?;
            }
        } else {
            let mut batch = Vec::with_capacity(64);
            let mut seq = 0;
            while seq < plan.burst {
                batch.clear();
                batch.extend((seq..plan.burst.min(seq + 64)).map(Tick::now));
                seq += batch.len() as u64;
                pubsub.publish_batch(topic, &batch).map_err(|e| text(&e))?;
            }
        }
        // The next run starts once every child has drained this burst.
        for _ in 0..SUBSCRIBERS {
            drained.recv_timeout(wait).map_err(|e| text(&e))?;
        }
    }
    paced(plan.paced, plan.rate, |seq| {
        pubsub
            .publish("bench.latency", &Tick::now(seq))
            .map(|_| ())
            .map_err(|e| text(&e))
    })?;
    let mut got = [0; 2];
    let mut lost = [0; 2];
    let mut last_ns = starts;
    let mut latency_us = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let r = results
            .recv_timeout(wait)
            .map_err(|e| text(&e))?
            .into_value();
        for b in 0..2 {
            got[b] += r.got[b];
            lost[b] += r.lost[b];
            last_ns[b] = last_ns[b].max(r.last_ns[b]);
        }
        latency_us.extend(r.latency_us.iter().map(|&v| v as f64));
    }
    for child in &children {
        let _ = child.wait_timeout(wait);
    }
    let rate = |b: usize| {
        let elapsed = Duration::from_nanos(last_ns[b].saturating_sub(starts[b]).max(1));
        mops(got[b], elapsed)
    };
    Ok(Figures {
        mops: [rate(0), rate(1)],
        lost,
        latency_us,
    })
}

/// A child's side: subscribes, says it is ready, receives the bursts and
/// the paced stream, and publishes what it measured.
pub(crate) fn child(quick: bool) -> Result<(), String> {
    let plan = Plan::new(quick);
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let node = Node::init().map_err(|e| text(&e))?;
    let pubsub = PubSub::attach(node.transport()).map_err(|e| text(&e))?;
    let bursts = BURSTS
        .iter()
        .map(|topic| {
            pubsub
                .with_capacity(plan.burst as usize + 1)
                .subscribe::<Tick>(topic)
        })
        .collect::<Result<Vec<_>, _>>()
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
    for (b, burst) in bursts.iter().enumerate() {
        loop {
            match burst.recv_timeout(quiet) {
                Ok(m) => {
                    result.got[b] += 1;
                    let last = m.value().seq + 1 == plan.burst;
                    // The clock is read now and then, not for every message.
                    if last || result.got[b] % 1024 == 0 {
                        result.last_ns[b] = now_ns();
                    }
                    if last {
                        break;
                    }
                }
                Err(Error::Lagged(n)) => result.lost[b] += n,
                Err(Error::Timeout(_)) => break,
                Err(e) => return Err(text(&e)),
            }
        }
        pubsub
            .publish("bench.drained", &result.got[b])
            .map_err(|e| text(&e))?;
    }
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
