//! Work queues: a hosted channel from main to 1 and to 4 child consumers,
//! with plain `recv` and with acknowledged receive (`recv_delivery` then
//! `ack`), at prefetch 1 and 64, beside the floor: a raw ipc-channel
//! stream of the same items from main to one child.
//!
//! Each run spawns its consumers, waits until each has granted credit,
//! sends the items (8-byte `u64`s) and closes the channel; consumers
//! receive until it is closed and drained, and report how many they got.
//! The rate is items over the time from the first send to the last report;
//! runs at prefetch 1 move a tenth of the items (each costs a round trip).

use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcBytesSender, IpcOneShotServer, IpcSender};
use yuki_channel::{ChannelOptions, Error};
use yuki_ipc_transport::Node;

use crate::bench::child as bench_child;
use crate::bench::timing::mops;
use crate::report::{Better, Line, Report};

/// Set in a consumer: `floor:SERVER:ITEMS` or `MODE:PREFETCH:CHANNEL`.
const SPEC_ENV: &str = "YUKI_BENCH_QUEUE";

const READY: &str = "bench.queue.ready";
const DONE: &str = "bench.queue.done";
const WAIT: Duration = Duration::from_secs(120);
const FLOOR: &str = "raw ipc-channel stream, 1 child";

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Adds the work-queue lines to `report`.
pub fn run(report: &mut Report, quick: bool) -> Result<(), String> {
    let items: u64 = if quick { 20_000 } else { 200_000 };
    let node = Node::init().map_err(text)?;
    let floor = floor(&node, quick, items)?;
    for consumers in [1, 4] {
        let plural = if consumers == 1 { "" } else { "s" };
        let mut recv = [0.0; 2];
        for (i, prefetch) in [1, 64].into_iter().enumerate() {
            recv[i] = queue(&node, quick, consumers, "recv", prefetch, items)?;
            report.add(
                Line::new(
                    format!("queue main -> {consumers} child consumer{plural}, recv, prefetch {prefetch}"),
                    "M items/s",
                    recv[i],
                    Better::Higher,
                )
                .floor(FLOOR, floor),
            );
        }
        for (i, prefetch) in [1, 64].into_iter().enumerate() {
            let acked = queue(&node, quick, consumers, "ack", prefetch, items)?;
            let mut line = Line::new(
                format!("queue main -> {consumers} child consumer{plural}, recv_delivery + ack, prefetch {prefetch}"),
                "M items/s",
                acked,
                Better::Higher,
            )
            .floor(format!("recv, prefetch {prefetch}"), recv[i]);
            if prefetch == 64 {
                line = line.target("<= 1.5x recv");
            }
            report.add(line);
            report.add(
                Line::new(
                    format!("  time per acknowledged item, {consumers} consumer{plural}, prefetch {prefetch}"),
                    "us",
                    1.0 / acked,
                    Better::Lower,
                )
                .floor(format!("recv, prefetch {prefetch}"), 1.0 / recv[i]),
            );
        }
    }
    Ok(())
}

/// One run: the rate in millions of items per second.
fn queue(
    node: &Node,
    quick: bool,
    consumers: usize,
    mode: &str,
    prefetch: u32,
    items: u64,
) -> Result<f64, String> {
    // A round trip per item at prefetch 1: fewer items keep the run short.
    let items = if prefetch == 1 { items / 10 } else { items };
    let name = format!("bench.queue.{mode}.{prefetch}.{consumers}");
    let jobs = node.channel::<u64>(&name).map_err(text)?;
    let ready = node.channel::<u64>(READY).map_err(text)?;
    let done = node.channel::<u64>(DONE).map_err(text)?;
    let mut children = Vec::new();
    for i in 0..consumers {
        let mut cmd = bench_child::command("queue", quick)?;
        cmd.env(SPEC_ENV, format!("{mode}:{prefetch}:{name}"));
        children.push(node.spawn(&format!("consumer{i}"), cmd).map_err(text)?);
    }
    for _ in 0..consumers {
        ready.recv_timeout(WAIT).map_err(text)?;
    }
    let start = Instant::now();
    for i in 0..items {
        jobs.send(i).map_err(|e| text(e.error()))?;
    }
    jobs.close();
    let mut got = 0;
    for _ in 0..consumers {
        got += done.recv_timeout(WAIT).map_err(text)?;
    }
    let elapsed = start.elapsed();
    for c in &children {
        c.wait_timeout(WAIT)
            .map_err(|e| format!("a consumer did not exit: {e}"))?;
    }
    if got != items {
        return Err(format!("{name}: {got} of {items} items received"));
    }
    Ok(mops(items, elapsed))
}

/// The floor: the same items as raw ipc-channel byte messages to one child.
fn floor(node: &Node, quick: bool, items: u64) -> Result<f64, String> {
    let done = node.channel::<u64>(DONE).map_err(text)?;
    let (server, server_name) = IpcOneShotServer::<IpcBytesSender>::new().map_err(text)?;
    let mut cmd = bench_child::command("queue", quick)?;
    cmd.env(SPEC_ENV, format!("floor:{server_name}:{items}"));
    let child = node.spawn("floor-consumer", cmd).map_err(text)?;
    let (_, to_child) = server.accept().map_err(text)?;
    let start = Instant::now();
    for i in 0..items {
        to_child.send(&i.to_le_bytes()).map_err(text)?;
    }
    let got = done.recv_timeout(WAIT).map_err(text)?;
    let elapsed = start.elapsed();
    child
        .wait_timeout(WAIT)
        .map_err(|e| format!("the floor consumer did not exit: {e}"))?;
    if got != items {
        return Err(format!("floor: {got} of {items} items received"));
    }
    Ok(mops(items, elapsed))
}

/// A consumer's side.
pub(crate) fn child(_quick: bool) -> Result<(), String> {
    let spec = std::env::var(SPEC_ENV).map_err(|_| format!("main did not set {SPEC_ENV}"))?;
    let mut parts = spec.splitn(3, ':');
    let (mode, arg, rest) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(a), Some(r)) => (m, a, r),
        _ => return Err(format!("bad {SPEC_ENV}: {spec:?}")),
    };
    let node = Node::init().map_err(text)?;
    let done = node.channel::<u64>(DONE).map_err(text)?;
    if mode == "floor" {
        let items: u64 = rest.parse().map_err(text)?;
        let (tx, rx) = ipc::bytes_channel().map_err(text)?;
        IpcSender::<IpcBytesSender>::connect(arg.to_string())
            .and_then(|s| s.send(tx).map_err(std::io::Error::other))
            .map_err(text)?;
        let mut got = 0;
        while got < items {
            rx.recv().map_err(|e| format!("{e:?}"))?;
            got += 1;
        }
        return done.send(got).map_err(|e| text(e.error()));
    }
    let prefetch: u32 = arg.parse().map_err(text)?;
    let jobs = node
        .channel_with::<u64>(rest, &ChannelOptions::new().prefetch(prefetch))
        .map_err(text)?;
    // Credit granted, and taken by main (calls on one link keep their
    // order), before main starts.
    let _ = jobs.try_recv();
    let _ = jobs.len();
    node.channel::<u64>(READY)
        .map_err(text)?
        .send(0)
        .map_err(|e| text(e.error()))?;
    let mut got = 0u64;
    loop {
        let received = if mode == "ack" {
            jobs.recv_delivery_timeout(WAIT).map(|job| {
                std::hint::black_box(*job);
                job.ack();
            })
        } else {
            jobs.recv_timeout(WAIT).map(|v| {
                std::hint::black_box(v);
            })
        };
        match received {
            Ok(()) => got += 1,
            Err(Error::Closed { .. }) => break,
            Err(e) => return Err(text(e)),
        }
    }
    drop(jobs);
    done.send(got).map_err(|e| text(e.error()))
}
