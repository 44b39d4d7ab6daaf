//! Cross-process calls: a child's call round trip and its pipelined calls,
//! beside the floor, a raw ipc-channel bytes ping-pong between two processes.
//!
//! The benchmark binary re-executes itself as the child; [`child_main`] must
//! run first in `main` so that the child does its part and exits.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};
use yuki_channel::{PeerId, Transport, codec};
use yuki_ipc_transport::Node;

use crate::bench::timing::mops;
use crate::report::{Better, Line, Report};

/// Set in the floor's child: the name of the parent's one-shot server.
const FLOOR_ENV: &str = "YUKI_BENCH_IPC_FLOOR";
/// Set in the yuki child: "quick" or "full".
const CHILD_ENV: &str = "YUKI_BENCH_IPC_CHILD";

const PAYLOAD: usize = 24;
const WINDOW: usize = 256;

/// Runs this process's part if it is one of this module's children, and
/// then returns `true` (the caller should exit).
pub fn child_main() -> bool {
    if let Ok(server) = std::env::var(FLOOR_ENV) {
        floor_child(server);
        return true;
    }
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        yuki_child(mode == "quick");
        return true;
    }
    false
}

/// Measures and adds this area's lines.
pub fn run(report: &mut Report, quick: bool) {
    let n = if quick { 2_000 } else { 20_000 };
    let floor = match floor_rtt(n) {
        Ok(us) => us,
        Err(e) => {
            eprintln!("ipc floor failed: {e}");
            return;
        }
    };
    let results = match yuki_figures(quick) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ipc child failed: {e}");
            return;
        }
    };
    let get = |k: &str| results.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    if let Some(rtt) = get("rtt") {
        report.add(
            Line::new("child call round trip (24 B, echo)", "us", rtt, Better::Lower)
                .floor("ipc-channel bytes ping-pong", floor)
                .target("<= 1.5x floor"),
        );
    }
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
    if let Some(v) = get("threads") {
        report.add(
            Line::new("child blocking calls, 8 threads", "M calls/s", v, Better::Higher)
                .floor("1 / floor round trip", 1.0 / floor),
        );
    }
}

/// The median of `batches` runs of `per_batch` round trips, in microseconds.
fn median_rtt(batches: usize, per_batch: usize, mut one: impl FnMut()) -> f64 {
    let mut means: Vec<f64> = (0..batches)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                one();
            }
            start.elapsed().as_secs_f64() * 1e6 / per_batch as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    means[means.len() / 2]
}

type FloorHello = (IpcBytesSender, IpcBytesReceiver);

fn floor_rtt(n: usize) -> Result<f64, String> {
    let (server, name) = IpcOneShotServer::<FloorHello>::new().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .env(FLOOR_ENV, name)
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = (|| {
        let (_, (to_child, from_child)) = server.accept().map_err(|e| format!("{e:?}"))?;
        let msg = [7u8; PAYLOAD];
        let mut one = || {
            to_child.send(&msg).expect("floor child alive");
            let back = from_child.recv().expect("floor child answers");
            debug_assert_eq!(back.len(), PAYLOAD);
        };
        for _ in 0..n / 10 {
            one();
        }
        let rtt = median_rtt(5, n / 5, &mut one);
        let _ = to_child.send(&[]);
        Ok(rtt)
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn floor_child(server: String) {
    let (to_child, from_parent) = ipc::bytes_channel().expect("channel");
    let (to_parent, from_child) = ipc::bytes_channel().expect("channel");
    let hello: FloorHello = (to_child, from_child);
    IpcSender::<FloorHello>::connect(server)
        .and_then(|s| s.send(hello).map_err(std::io::Error::other))
        .expect("floor parent listening");
    while let Ok(msg) = from_parent.recv() {
        if msg.is_empty() || to_parent.send(&msg).is_err() {
            break;
        }
    }
}

fn yuki_figures(quick: bool) -> Result<Vec<(String, f64)>, String> {
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
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, if quick { "quick" } else { "full" });
    let child = node.spawn("bench-child", cmd).map_err(|e| e.to_string())?;
    let exit = child
        .wait_timeout(Duration::from_secs(300))
        .ok_or("the child did not finish in time")?;
    if !exit.status.success() {
        return Err(format!("the child failed: {}", exit.status));
    }
    Ok(rx.try_iter().collect())
}

fn send_result(t: &Arc<dyn Transport>, name: &str, value: f64) {
    let frame = codec::encode(&(name, value)).expect("encodable");
    t.call("result", &frame).expect("main records the result");
}

fn yuki_child(quick: bool) {
    let node = Node::init().expect("the bench child joins main");
    let t = node.transport();
    let n = if quick { 2_000 } else { 20_000 };
    let msg = [7u8; PAYLOAD];
    let mut one = || {
        let back = t.call("echo", &msg).expect("echo");
        debug_assert_eq!(back.len(), PAYLOAD);
    };
    for _ in 0..n / 10 {
        one();
    }
    let rtt = median_rtt(5, n / 5, &mut one);
    send_result(&t, "rtt", rtt);

    let ops = if quick { 200_000 } else { 2_000_000 };
    send_result(&t, "pipelined", pipelined(&t, ops));

    let per_thread = ops / 8 / 10;
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
    send_result(&t, "threads", mops((per_thread * 8) as u64, start.elapsed()));
}

/// `ops` calls with `call_with`, at most [`WINDOW`] in flight.
fn pipelined(t: &Arc<dyn Transport>, ops: usize) -> f64 {
    let (tokens, done) = crossbeam_channel::bounded::<()>(WINDOW);
    let msg = [7u8; PAYLOAD];
    let start = Instant::now();
    for _ in 0..ops {
        tokens.send(()).expect("token");
        let done = done.clone();
        t.call_with(
            "echo",
            &msg,
            Box::new(move |r| {
                r.expect("echo");
                let _ = done.try_recv();
            }),
        );
    }
    // Wait for the last calls: the window drains when every token is back.
    while !tokens.is_empty() {
        std::thread::yield_now();
    }
    mops(ops as u64, start.elapsed())
}
