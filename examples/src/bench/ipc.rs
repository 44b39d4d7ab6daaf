//! Cross-process calls: a child's call round trip and its pipelined calls,
//! beside the floor, a raw ipc-channel bytes ping-pong between the same two
//! processes.
//!
//! The child times the floor and yuki's round trip in alternating batches
//! ([`floor::alternate`]), so both see the same load from the rest of the
//! machine, once with both processes on one core and once on two
//! ([`placement`]); the throughput figures run unpinned.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use yuki_channel::{PeerId, Transport, codec};
use yuki_ipc_transport::Node;

use crate::bench::timing::mops;
use crate::bench::{child as bench_child, floor, placement};
use crate::report::{Better, Line, Report};

const WINDOW: usize = 4096;
/// The request and reply size of the bulk figure: a quarter of a pipe, so
/// copies in and out of the shared memory dominate.
const BULK: usize = 64 << 10;
const ROUNDS: usize = 21;

/// Measures and adds this area's lines.
pub fn run(report: &mut Report, quick: bool) -> Result<(), String> {
    let results = figures(quick)?;
    let get = |k: &str| results.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let mut floors = Vec::new();
    for label in placement::labels("rtt", results.iter().map(|(n, _)| n.as_str())) {
        let (Some(floor), Some(rtt)) = (
            get(&placement::key("floor", &label)),
            get(&placement::key("rtt", &label)),
        ) else {
            continue;
        };
        report.add(
            Line::new(
                format!("child call round trip (24 B echo), {label}"),
                "us",
                rtt,
                Better::Lower,
            )
            .floor(floor::NAME, floor)
            .target("<= 1.5x floor"),
        );
        floors.push((label, floor));
    }
    let floor = placement::throughput_floor(&floors).ok_or("the child reported no round trips")?;
    if let Some(v) = get("pipelined") {
        report.add(
            Line::new(
                format!("child pipelined calls (call_with, window {WINDOW})"),
                "M calls/s",
                v,
                Better::Higher,
            )
            .floor("1 / floor round trip", 1.0 / floor)
            .target(">= 1 M calls/s"),
        );
    }
    if let Some(v) = get("pipelined_cpu_us") {
        report.add(
            Line::new(
                "  CPU per pipelined call, both processes",
                "us",
                v,
                Better::Lower,
            )
            .target("<= 2 us (1 M calls/s on 2 cores)"),
        );
    }
    if let Some(v) = get("threads") {
        report.add(
            Line::new(
                "child blocking calls, 8 threads",
                "M calls/s",
                v,
                Better::Higher,
            )
            .floor("1 / floor round trip", 1.0 / floor),
        );
    }
    if let Some(v) = get("bulk") {
        report.add(Line::new(
            format!("child echo calls of {} KiB (bytes both ways)", BULK >> 10),
            "GB/s",
            v,
            Better::Higher,
        ));
    }
    Ok(())
}

/// Main's side: an echo service, a raw echo thread, and the child.
fn figures(quick: bool) -> Result<Vec<(String, f64)>, String> {
    let node = Node::init().map_err(|e| e.to_string())?;
    let t = node.transport();
    bench_child::serve_echo(&t, "echo")?;
    let rx = bench_child::serve_results(&t)?;

    t.serve(
        "cpu",
        Arc::new(|_: PeerId, _: &[u8], reply: &mut Vec<u8>| {
            codec::encode_into(&cpu_seconds().unwrap_or(f64::NAN), reply)
        }),
    )
    .map_err(|e| e.to_string())?;

    floor::run_child(&node, "ipc", quick)?;
    Ok(rx.try_iter().collect())
}

/// CPU time (user + system) this process has used, from `/proc/self/stat`.
///
/// The figures there count clock ticks of 1/100 s on Linux; a run of a
/// second or more makes that resolution good enough.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The child's side: the round trips beside the floor, then the
/// throughput figures, each sent to main's `result` service.
pub(crate) fn child(quick: bool) -> Result<(), String> {
    let node = Node::init().map_err(|e| e.to_string())?;
    let t = node.transport();
    let mut link = floor::RawPair::connect()?;
    let msg = [7u8; floor::PAYLOAD];
    let mut yuki_one = || t.call("echo", &msg).map(drop).map_err(|e| e.to_string());
    let n = if quick { 300 } else { 1_500 };
    let placed = placement::each(&t, || {
        floor::alternate(ROUNDS, n, &mut [&mut || link.ping(), &mut yuki_one])
    })?;
    drop(link);
    for (label, medians) in placed {
        bench_child::send_result(&t, &placement::key("floor", &label), medians[0])?;
        bench_child::send_result(&t, &placement::key("rtt", &label), medians[1])?;
    }

    let ops = if quick { 200_000 } else { 2_000_000 };
    let main_cpu = |t: &Arc<dyn Transport>| -> f64 {
        codec::decode(&t.call("cpu", b"").expect("main answers")).expect("a number")
    };
    let (main0, own0) = (main_cpu(&t), cpu_seconds().unwrap_or(f64::NAN));
    bench_child::send_result(&t, "pipelined", pipelined(&t, ops))?;
    let (main1, own1) = (main_cpu(&t), cpu_seconds().unwrap_or(f64::NAN));
    let cpu = (main1 - main0) + (own1 - own0);
    if cpu.is_finite() {
        bench_child::send_result(&t, "pipelined_cpu_us", cpu * 1e6 / ops as f64)?;
    }

    let per_thread = ops / 8 / 20;
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..8 {
            let t = t.clone();
            s.spawn(move || {
                for _ in 0..per_thread {
                    t.call("echo", &msg).expect("echo");
                }
            });
        }
    });
    bench_child::send_result(
        &t,
        "threads",
        mops((per_thread * 8) as u64, start.elapsed()),
    )?;

    let big = vec![7u8; BULK];
    let calls = if quick { 2_000 } else { 20_000 };
    let start = Instant::now();
    for _ in 0..calls {
        t.call("echo", &big).map_err(|e| e.to_string())?;
    }
    let bytes = (2 * calls * BULK) as f64;
    bench_child::send_result(&t, "bulk", bytes / start.elapsed().as_secs_f64() / 1e9)
}

/// `ops` calls with `call_with`, at most [`WINDOW`] in flight: the caller
/// refills the window by halves, as a pipelining client does, so it wakes
/// once per half window rather than once per reply.
pub(crate) fn pipelined(t: &Arc<dyn Transport>, ops: usize) -> f64 {
    let window = Arc::new((Mutex::new(0usize), Condvar::new()));
    let msg = [7u8; floor::PAYLOAD];
    let start = Instant::now();
    let mut issued = 0;
    while issued < ops {
        {
            let (count, cv) = &*window;
            let mut in_flight = count.lock().unwrap();
            while *in_flight > WINDOW / 2 {
                in_flight = cv.wait(in_flight).unwrap();
            }
            let n = (WINDOW - *in_flight).min(ops - issued);
            *in_flight += n;
            issued += n;
            drop(in_flight);
            for _ in 0..n {
                let window = window.clone();
                t.call_with(
                    "echo",
                    &msg,
                    Box::new(move |r| {
                        r.expect("echo");
                        let (count, cv) = &*window;
                        let mut in_flight = count.lock().unwrap();
                        *in_flight -= 1;
                        if *in_flight == WINDOW / 2 || *in_flight == 0 {
                            cv.notify_one();
                        }
                    }),
                );
            }
        }
    }
    let (count, cv) = &*window;
    let mut in_flight = count.lock().unwrap();
    while *in_flight > 0 {
        in_flight = cv.wait(in_flight).unwrap();
    }
    mops(ops as u64, start.elapsed())
}
