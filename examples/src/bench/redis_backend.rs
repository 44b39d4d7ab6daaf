//! The Redis backends (`Store::redis`, `PubSub::redis`) against the bare
//! `redis` crate driving the same server with the same commands: what the
//! yuki layer (encoding, Lua script, runtime hop) adds to Redis itself.
//! Runs only when a `redis-server` binary is on the machine.

use std::time::{Duration, Instant};

use yuki_pubsub::PubSub;
use yuki_storage::{Batch, Store};
use yuki_testkit::RedisServer;

use crate::bench::redis_peer;
use crate::bench::timing::{mean_us, mops};
use crate::report::{Better, Line, Report};

/// Operations per batch or pipeline.
const BATCH: usize = 64;

/// Adds the Redis backends' lines to `report`.
///
/// A machine without `redis-server` skips them: that is not a failure.
pub fn run(report: &mut Report, quick: bool) -> Result<(), String> {
    let server = match redis_peer::server() {
        Ok(server) => server,
        Err(why) => {
            println!("redis: skipped, redis-server {why}");
            return Ok(());
        }
    };
    measure(report, &server, quick)
}

fn measure(report: &mut Report, server: &RedisServer, quick: bool) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let n: u64 = if quick { 1_000 } else { 10_000 };
    let store = Store::redis(&server.url()).map_err(|e| err(&e))?;
    let mut raw = redis_peer::connection(server)?;
    let value = 42u64;
    store.set("bench.k", &value).map_err(|e| err(&e))?;
    let encoded = store
        .get_raw("bench.k")
        .map_err(|e| err(&e))?
        .unwrap_or_default();

    let ours_get = mean_us(n, || {
        let _ = store.get::<u64>("bench.k");
    });
    let floor_get = mean_us(n, || {
        let _: redis::RedisResult<Vec<u8>> = redis::cmd("GET").arg("yuki:bench.k").query(&mut raw);
    });
    report.add(
        Line::new(
            "Store on Redis: get round trip",
            "us",
            ours_get,
            Better::Lower,
        )
        .floor("redis crate GET, 1 connection", floor_get),
    );

    let ours_set = mean_us(n, || {
        let _ = store.set("bench.k", &value);
    });
    let floor_set = mean_us(n, || {
        let _: redis::RedisResult<()> = redis::cmd("SET")
            .arg("yuki:bench.k")
            .arg(&encoded)
            .query(&mut raw);
    });
    report.add(
        Line::new(
            "Store on Redis: set round trip (Lua script, publishes the change)",
            "us",
            ours_set,
            Better::Lower,
        )
        .floor("redis crate SET, 1 connection", floor_set),
    );

    let batches = (n as usize / BATCH).max(10);
    let mut batch = Batch::new();
    for i in 0..BATCH {
        batch.set(&format!("bench.b{i}"), &value);
    }
    let start = Instant::now();
    for _ in 0..batches {
        store.batch(&batch).map_err(|e| err(&e))?;
    }
    let ours_batch = mops((batches * BATCH) as u64, start.elapsed());
    let mut pipe = redis::pipe();
    for i in 0..BATCH {
        pipe.cmd("SET")
            .arg(format!("yuki:bench.b{i}"))
            .arg(&encoded)
            .ignore();
    }
    let start = Instant::now();
    for _ in 0..batches {
        let _: () = pipe.query(&mut raw).map_err(|e| err(&e))?;
    }
    let floor_batch = mops((batches * BATCH) as u64, start.elapsed());
    report.add(
        Line::new(
            format!("Store on Redis: batched set ({BATCH}/batch, atomic)"),
            "M ops/s",
            ours_batch,
            Better::Higher,
        )
        .floor(format!("redis crate SET pipelined {BATCH}"), floor_batch),
    );

    // Publish to one subscriber and wait for it: a delivered round trip.
    let pubsub = PubSub::redis(&server.url()).map_err(|e| err(&e))?;
    let sub = pubsub
        .subscribe::<u64>("bench.topic")
        .map_err(|e| err(&e))?;
    let ours_pub = mean_us(n, || {
        let _ = pubsub.publish("bench.topic", &value);
        let _ = sub.recv_timeout(Duration::from_secs(5));
    });
    let mut listener = redis_peer::connection(server)?;
    let floor_pub = {
        let mut ps = listener.as_pubsub();
        ps.subscribe("bench.raw").map_err(|e| err(&e))?;
        ps.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| err(&e))?;
        let start = Instant::now();
        for _ in 0..n {
            let _: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg("bench.raw")
                .arg(&encoded)
                .query(&mut raw);
            if ps.get_message().is_err() {
                break;
            }
        }
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    };
    report.add(
        Line::new(
            "PubSub on Redis: publish and receive, 1 subscriber",
            "us",
            ours_pub,
            Better::Lower,
        )
        .floor("redis crate PUBLISH + SUBSCRIBE", floor_pub),
    );
    Ok(())
}
