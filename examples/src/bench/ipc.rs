//! Cross-process calls: a child's call round trip and its pipelined calls,
//! beside the floor, a raw ipc-channel bytes ping-pong between the same two
//! processes.
//!
//! The benchmark binary re-executes itself as the child; [`child_main`] must
//! run first in `main` so that the child does its part and exits. The child
//! times the floor and yuki's round trip in alternating batches, so both
//! see the same placement and the same load from the rest of the machine.

use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};
use yuki_channel::{PeerId, Transport, codec};
use yuki_ipc_transport::Node;

use crate::bench::timing::mops;
use crate::report::{Better, Line, Report};

/// Set in the child: "quick" or "full".
const CHILD_ENV: &str = "YUKI_BENCH_IPC_CHILD";
/// Set in the child: the one-shot server of main's raw echo thread.
const FLOOR_ENV: &str = "YUKI_BENCH_IPC_FLOOR";

const PAYLOAD: usize = 24;
const WINDOW: usize = 4096;
const ROUNDS: usize = 21;

/// The child's raw link to main's echo thread: (where main answers, where it listens).
type FloorHello = (IpcBytesSender, IpcBytesReceiver);

/// Runs this process's part if it is this module's child, and then returns
/// `true` (the caller should exit).
pub fn child_main() -> bool {
    match std::env::var(CHILD_ENV) {
        Ok(mode) => {
            yuki_child(mode == "quick");
            true
        }
        Err(_) => false,
    }
}

/// Measures and adds this area's lines.
pub fn run(report: &mut Report, quick: bool) {
    let results = match figures(quick) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ipc benchmark failed: {e}");
            return;
        }
    };
    let get = |k: &str| results.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let (Some(floor), Some(rtt)) = (get("floor"), get("rtt")) else {
        eprintln!("ipc benchmark: the child reported no round trips");
        return;
    };
    report.add(
        Line::new(
            "child call round trip (24 B echo), unpinned",
            "us",
            rtt,
            Better::Lower,
        )
        .floor("ipc-channel bytes ping-pong", floor)
        .target("<= 1.5x floor"),
    );
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
}

/// Main's side: an echo service, a raw echo thread, and the child.
fn figures(quick: bool) -> Result<Vec<(String, f64)>, String> {
    let node = Node::init().map_err(|e| e.to_string())?;
    let t = node.transport();
    t.serve(
        "echo",
        Arc::new(|_: PeerId, req: &[u8], reply: &mut Vec<u8>| {
            reply.extend_from_slice(req);
            Ok(())
        }),
    )
    .map_err(|e| e.to_string())?;
    let (tx, rx) = crossbeam_channel::unbounded();
    t.serve(
        "result",
        Arc::new(move |_: PeerId, req: &[u8], _: &mut Vec<u8>| {
            let _ = tx.send(codec::decode::<(String, f64)>(req)?);
            Ok(())
        }),
    )
    .map_err(|e| e.to_string())?;

    t.serve(
        "cpu",
        Arc::new(|_: PeerId, _: &[u8], reply: &mut Vec<u8>| {
            codec::encode_into(&cpu_seconds().unwrap_or(f64::NAN), reply)
        }),
    )
    .map_err(|e| e.to_string())?;

    let (server, name) = IpcOneShotServer::<FloorHello>::new().map_err(|e| e.to_string())?;
    let echo = std::thread::spawn(move || {
        let Ok((_, (to_child, from_child))) = server.accept() else {
            return;
        };
        while let Ok(msg) = from_child.recv() {
            if to_child.send(&msg).is_err() {
                break;
            }
        }
    });

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, if quick { "quick" } else { "full" })
        .env(FLOOR_ENV, &name);
    let child = node.spawn("bench-child", cmd).map_err(|e| e.to_string())?;
    let exit = child
        .wait_timeout(Duration::from_secs(300))
        .ok_or("the child did not finish in time")?;
    let _ = echo.join();
    if !exit.status.success() {
        return Err(format!("the child failed: {}", exit.status));
    }
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

/// The mean of one batch of `n` round trips, in microseconds.
fn batch_us(n: usize, mut one: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        one();
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn send_result(t: &Arc<dyn Transport>, name: &str, value: f64) {
    let frame = codec::encode(&(name, value)).expect("encodable");
    t.call("result", &frame).expect("main records the result");
}

fn yuki_child(quick: bool) {
    let node = Node::init().expect("the bench child joins main");
    let t = node.transport();

    let server = std::env::var(FLOOR_ENV).expect("main names its echo thread");
    let (to_child, from_main) = ipc::bytes_channel().expect("channel");
    let (to_main, from_child) = ipc::bytes_channel().expect("channel");
    IpcSender::<FloorHello>::connect(server)
        .and_then(|s| {
            s.send((to_child, from_child))
                .map_err(std::io::Error::other)
        })
        .expect("main's echo thread listens");

    let msg = [7u8; PAYLOAD];
    let mut floor_one = || {
        to_main.send(&msg).expect("echo thread alive");
        let back = from_main.recv().expect("echo thread answers");
        debug_assert_eq!(back.len(), PAYLOAD);
    };
    let mut yuki_one = || {
        let back = t.call("echo", &msg).expect("echo");
        debug_assert_eq!(back.len(), PAYLOAD);
    };
    let n = if quick { 300 } else { 1_500 };
    batch_us(n, &mut floor_one);
    batch_us(n, &mut yuki_one);
    let (mut floor, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        floor.push(batch_us(n, &mut floor_one));
        ours.push(batch_us(n, &mut yuki_one));
    }
    drop((to_main, from_main));
    send_result(&t, "floor", median(floor));
    send_result(&t, "rtt", median(ours));

    let ops = if quick { 200_000 } else { 2_000_000 };
    let main_cpu = |t: &Arc<dyn Transport>| -> f64 {
        codec::decode(&t.call("cpu", b"").expect("main answers")).expect("a number")
    };
    let (main0, own0) = (main_cpu(&t), cpu_seconds().unwrap_or(f64::NAN));
    send_result(&t, "pipelined", pipelined(&t, ops));
    let (main1, own1) = (main_cpu(&t), cpu_seconds().unwrap_or(f64::NAN));
    let cpu = (main1 - main0) + (own1 - own0);
    if cpu.is_finite() {
        send_result(&t, "pipelined_cpu_us", cpu * 1e6 / ops as f64);
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
    send_result(
        &t,
        "threads",
        mops((per_thread * 8) as u64, start.elapsed()),
    );
}

/// `ops` calls with `call_with`, at most [`WINDOW`] in flight: the caller
/// refills the window by halves, as a pipelining client does, so it wakes
/// once per half window rather than once per reply.
fn pipelined(t: &Arc<dyn Transport>, ops: usize) -> f64 {
    let window = Arc::new((Mutex::new(0usize), Condvar::new()));
    let msg = [7u8; PAYLOAD];
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
