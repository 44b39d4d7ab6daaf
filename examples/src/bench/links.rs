//! The two link kinds side by side: a child's store `get` round trip and
//! its pipelined calls over the shared-memory link and over the ipc-channel
//! link, each beside the raw ipc-channel ping-pong timed in the same child,
//! in alternating batches and under the same placement.
//!
//! Main spawns one child per [`LinkKind`], one after the other; each child
//! reports its figures to main under its kind's name.

use yuki_ipc_transport::{LinkKind, Node};
use yuki_storage::Store;

use crate::bench::{child as bench_child, floor, ipc, placement};
use crate::report::{Better, Line, Report};

const ROUNDS: usize = 21;
/// The key every child reads.
const KEY: &str = "bench.links.value";

/// Measures and adds this area's lines.
pub fn run(report: &mut Report, quick: bool) -> Result<(), String> {
    let results = figures(quick)?;
    let get = |k: &str| results.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    for kind in LinkKind::ALL {
        let names = results.iter().map(|(n, _)| n.as_str());
        let mut floors = Vec::new();
        for label in placement::labels(&format!("{kind}.get"), names) {
            let (Some(floor), Some(rtt)) = (
                get(&placement::key(&format!("{kind}.floor"), &label)),
                get(&placement::key(&format!("{kind}.get"), &label)),
            ) else {
                continue;
            };
            let target = match kind {
                LinkKind::IpcChannel => "<= 1.3x floor",
                _ => "<= 1.5x floor",
            };
            report.add(
                Line::new(
                    format!("child store get round trip over the {kind} link, {label}"),
                    "us",
                    rtt,
                    Better::Lower,
                )
                .floor(floor::NAME, floor)
                .target(target),
            );
            floors.push((label, floor));
        }
        let Some(floor) = placement::throughput_floor(&floors) else {
            return Err(format!("the {kind} child reported no round trips"));
        };
        if let Some(v) = get(&format!("{kind}.pipelined")) {
            report.add(
                Line::new(
                    format!("child pipelined calls over the {kind} link"),
                    "M calls/s",
                    v,
                    Better::Higher,
                )
                .floor("1 / floor round trip", 1.0 / floor),
            );
        }
    }
    Ok(())
}

/// Main's side: a store with the key, an echo service, and a child per
/// link kind, each beside main's raw echo thread.
fn figures(quick: bool) -> Result<Vec<(String, f64)>, String> {
    // Reads from shared memory would skip the link this area times.
    let node = Node::builder()
        .shared_reads(false)
        .init()
        .map_err(|e| e.to_string())?;
    let t = node.transport();
    let store = Store::attach(t.clone()).map_err(|e| e.to_string())?;
    store.set(KEY, &7u64).map_err(|e| e.to_string())?;
    bench_child::serve_echo(&t, "echo")?;
    let rx = bench_child::serve_results(&t)?;
    placement::serve(&t)?;
    for kind in LinkKind::ALL {
        let mut cmd = bench_child::command("links", quick)?;
        let echo = floor::Echo::start(&mut cmd)?;
        let spawned = node
            .child(&format!("links-{kind}-bench"), cmd)
            .link(kind)
            .spawn()
            .map_err(|e| e.to_string());
        let result = spawned.and_then(|child| bench_child::wait(&child, "links"));
        echo.join();
        result?;
    }
    Ok(rx.try_iter().collect())
}

/// The child's side: the get round trip beside the floor under each
/// placement, then pipelined calls, named for this child's link kind.
pub(crate) fn child(quick: bool) -> Result<(), String> {
    let node = Node::init().map_err(|e| e.to_string())?;
    let kind = node.link_kind();
    let t = node.transport();
    let store = Store::attach(t.clone()).map_err(|e| e.to_string())?;
    let mut raw = floor::RawPair::connect()?;
    let mut get = || match store.get::<u64>(KEY) {
        Ok(Some(7)) => Ok(()),
        other => Err(format!("the bench key reads {other:?}")),
    };
    let n = if quick { 300 } else { 1_500 };
    let placed = placement::each(&t, || {
        floor::alternate(ROUNDS, n, &mut [&mut || raw.ping(), &mut get])
    })?;
    drop(raw);
    for (label, medians) in placed {
        let floor_key = placement::key(&format!("{kind}.floor"), &label);
        bench_child::send_result(&t, &floor_key, medians[0])?;
        let get_key = placement::key(&format!("{kind}.get"), &label);
        bench_child::send_result(&t, &get_key, medians[1])?;
    }
    let ops = if quick { 200_000 } else { 1_000_000 };
    bench_child::send_result(&t, &format!("{kind}.pipelined"), ipc::pipelined(&t, ops))
}
