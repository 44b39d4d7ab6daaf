//! The peer column: a private `redis-server` (from [`yuki_testkit::RedisServer`])
//! driven with the `redis` crate by the same workloads as yuki's figures.
//!
//! A machine without `redis-server` gets "not installed" in the peer column:
//! a missing peer is not a failure of the benchmark.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use yuki_testkit::RedisServer;

use crate::bench::pubsub::{SUBSCRIBERS, Tick, now_ns, paced};
use crate::bench::store::{BATCH, Workload};
use crate::bench::timing::mops;
use crate::bench::{floor, placement};

/// Starts a private server, or says why there is none.
pub fn server() -> Result<RedisServer, String> {
    let server = RedisServer::start().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "not installed".to_owned(),
        _ => format!("cannot start: {e}"),
    })?;
    // A fan-out burst queues far more than the default pub/sub output
    // limit allows; the peer must not lose subscribers for being fast.
    let mut con = connection(&server)?;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg("pubsub 0 0 0")
        .exec(&mut con)
        .map_err(|e| e.to_string())?;
    Ok(server)
}

/// A new connection to `server`.
pub fn connection(server: &RedisServer) -> Result<redis::Connection, String> {
    client(server)?.get_connection().map_err(|e| e.to_string())
}

/// Subscribes a new connection to `topic`, waits at `ready` with the
/// others, then hands the subscription to `read`. Every caller reaches the
/// barrier, so one that failed cannot leave the others waiting.
fn subscriber<R>(
    client: &redis::Client,
    topic: &str,
    ready: &Barrier,
    read: impl FnOnce(&mut redis::PubSub<'_>) -> Result<R, String>,
) -> Result<R, String> {
    let mut con = match client.get_connection() {
        Ok(con) => con,
        Err(e) => {
            ready.wait();
            return Err(e.to_string());
        }
    };
    let mut sub = con.as_pubsub();
    let subscribed = sub.subscribe(topic).map_err(|e| e.to_string());
    ready.wait();
    subscribed?;
    read(&mut sub)
}

fn client(server: &RedisServer) -> Result<redis::Client, String> {
    redis::Client::open(server.url()).map_err(|e| e.to_string())
}

/// Redis's store figures.
#[derive(Clone, Debug)]
pub struct StoreFigures {
    /// GET and SET round trips in microseconds, under each placement of
    /// the server and this client ([`placement::each_server`]), named by
    /// placement.
    pub rtts: Vec<(String, Rtts)>,
    /// GET and SET pipelined [`BATCH`] at a time, M ops/s.
    pub pipelined: f64,
}

/// One placement's round trips, microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Rtts {
    /// GET round trip.
    pub get: f64,
    /// SET round trip.
    pub set: f64,
}

impl StoreFigures {
    /// The round trips timed under placement `label`, or else those of an
    /// unpinned fallback, with the name of the placement they ran under.
    pub fn rtts_for(&self, label: &str) -> Option<(&str, Rtts)> {
        self.rtts
            .iter()
            .find(|(l, _)| l == label)
            .or_else(|| self.rtts.iter().find(|(l, _)| l == placement::UNPINNED))
            .map(|(l, r)| (l.as_str(), *r))
    }
}

/// The store workload on Redis, one connection: round trips timed like the
/// child's ([`floor::alternate`]) under each placement, then pipelined
/// batches (unpinned, like the child's batches).
pub fn store(server: &RedisServer, w: &Workload, quick: bool) -> Result<StoreFigures, String> {
    let mut con = connection(server)?;
    let io = |e: redis::RedisError| e.to_string();
    let value = w.value.as_bytes();
    for chunk in w.keys.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.set(k, value).ignore();
        }
        pipe.exec(&mut con).map_err(io)?;
    }
    let (rounds, n) = if quick { (5, 200) } else { (10, 1_000) };
    let con = std::cell::RefCell::new(con);
    let (mut i, mut j) = (0, 0);
    let mut timed = || {
        floor::alternate(
            rounds,
            n,
            &mut [
                &mut || {
                    i += 1;
                    let _: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(w.key(0, i))
                        .query(&mut *con.borrow_mut())
                        .map_err(io)?;
                    Ok(())
                },
                &mut || {
                    j += 1;
                    redis::cmd("SET")
                        .arg(w.key(0, j))
                        .arg(value)
                        .exec(&mut *con.borrow_mut())
                        .map_err(io)
                },
            ],
        )
        .map(|v| Rtts {
            get: v[0],
            set: v[1],
        })
    };
    let rtts = match server.pid() {
        Some(pid) => placement::each_server(pid, timed)?,
        None => vec![(placement::UNPINNED.to_owned(), timed()?)],
    };
    let mut con = con.into_inner();
    let batches = if quick { 100 } else { 1_000 };
    let mut pipelined = 0f64;
    for _ in 0..5 {
        let start = Instant::now();
        for b in 0..batches {
            let mut pipe = redis::pipe();
            for k in 0..BATCH {
                let key = w.key(0, b * BATCH + k);
                if k % 2 == 0 {
                    pipe.get(key);
                } else {
                    pipe.set(key, value).ignore();
                }
            }
            let _: Vec<Option<Vec<u8>>> = pipe.query(&mut con).map_err(io)?;
        }
        pipelined = pipelined.max(mops((batches * BATCH) as u64, start.elapsed()));
    }
    Ok(StoreFigures { rtts, pipelined })
}

/// Redis: [`SUBSCRIBERS`] subscriber connections, a publisher pipelining
/// PUBLISH 64 at a time; messages delivered per second, in millions.
pub fn fanout(server: &RedisServer, n: u64) -> Result<f64, String> {
    let client = client(server)?;
    let ready = Arc::new(Barrier::new(SUBSCRIBERS + 1));
    let start = thread::scope(|s| -> Result<Instant, String> {
        let mut readers = Vec::new();
        for _ in 0..SUBSCRIBERS {
            let (client, ready) = (client.clone(), ready.clone());
            readers.push(s.spawn(move || -> Result<(), String> {
                subscriber(&client, "bench.fanout", &ready, |sub| {
                    for _ in 0..n {
                        let msg = sub.get_message().map_err(|e| e.to_string())?;
                        let _ = yuki_channel::codec::decode::<Tick>(msg.get_payload_bytes());
                    }
                    Ok(())
                })
            }));
        }
        let con = client.get_connection().map_err(|e| e.to_string());
        ready.wait();
        let mut con = con?;
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
pub fn latency(server: &RedisServer, n: u64, rate: u64) -> Result<Vec<f64>, String> {
    let client = client(server)?;
    let ready = Arc::new(Barrier::new(SUBSCRIBERS + 1));
    thread::scope(|s| -> Result<Vec<f64>, String> {
        let mut readers = Vec::new();
        for _ in 0..SUBSCRIBERS {
            let (client, ready) = (client.clone(), ready.clone());
            readers.push(s.spawn(move || -> Result<Vec<f64>, String> {
                subscriber(&client, "bench.latency", &ready, |sub| {
                    let mut samples = Vec::with_capacity(n as usize);
                    while (samples.len() as u64) < n {
                        let msg = sub.get_message().map_err(|e| e.to_string())?;
                        let tick: Tick = yuki_channel::codec::decode(msg.get_payload_bytes())
                            .map_err(|e| e.to_string())?;
                        samples.push(now_ns().saturating_sub(tick.sent_ns) as f64 / 1e3);
                    }
                    Ok(samples)
                })
            }));
        }
        let con = client.get_connection().map_err(|e| e.to_string());
        ready.wait();
        let mut con = con?;
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
