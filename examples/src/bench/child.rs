//! The benchmark's child processes: the bench binary re-executes itself with
//! [`ENV`] naming the area and the mode, and [`run_if_child`] (first thing in
//! `main`) sends such a process to its area's child code.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use yuki_channel::{PeerId, Transport};
use yuki_ipc_transport::{ChildHandle, Node};

/// Set in a bench child: `AREA:quick` or `AREA:full`.
pub const ENV: &str = "YUKI_BENCH_CHILD";

/// The longest a bench child may run before main gives up on it.
pub const TIME_LIMIT: Duration = Duration::from_secs(300);

/// Runs this process's part if it is a bench child and returns `true` (the
/// caller should then exit); `false` in the main process.
pub fn run_if_child() -> bool {
    let Ok(value) = std::env::var(ENV) else {
        return false;
    };
    let (area, mode) = value.split_once(':').unwrap_or((value.as_str(), "full"));
    let quick = mode == "quick";
    let result = match area {
        "ipc" => super::ipc::child(quick),
        "links" => super::links::child(quick),
        "store" => super::store::child(quick),
        "shmread" => super::shmread::child(quick),
        "pubsub" => super::pubsub::child(quick),
        "queue" => super::queue::child(quick),
        other => Err(format!("no bench child is called {other:?}")),
    };
    if let Err(e) = result {
        eprintln!("{area} bench child failed: {e}");
        std::process::exit(1);
    }
    true
}

/// The command that re-executes the bench binary as `area`'s child.
pub fn command(area: &str, quick: bool) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the bench binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.env(
        ENV,
        format!("{area}:{}", if quick { "quick" } else { "full" }),
    );
    Ok(cmd)
}

/// Spawns `area`'s child through `node` and waits until it exits
/// successfully.
pub fn spawn_and_wait(node: &Node, area: &str, cmd: Command) -> Result<(), String> {
    let child = node
        .spawn(&format!("{area}-bench"), cmd)
        .map_err(|e| e.to_string())?;
    wait(&child, area)
}

/// Waits until `area`'s child exits, successfully.
pub fn wait(child: &ChildHandle, area: &str) -> Result<(), String> {
    let exit = child
        .wait_timeout(TIME_LIMIT)
        .map_err(|e| format!("the {area} child did not finish within {TIME_LIMIT:?}: {e}"))?;
    if exit.status.success() {
        Ok(())
    } else {
        Err(format!("the {area} child failed: {}", exit.status))
    }
}

/// Serves `result` on main's side: each figure a child sends with
/// [`send_result`] comes out of the returned receiver.
pub(crate) fn serve_results(
    transport: &Arc<dyn Transport>,
) -> Result<crossbeam_channel::Receiver<(String, f64)>, String> {
    let (tx, rx) = crossbeam_channel::unbounded();
    transport
        .serve(
            "result",
            Arc::new(move |_: PeerId, req: &[u8], _: &mut Vec<u8>| {
                let _ = tx.send(yuki_channel::codec::decode::<(String, f64)>(req)?);
                Ok(())
            }),
        )
        .map_err(|e| e.to_string())?;
    Ok(rx)
}

/// A child's figure `name`, sent to main's [`serve_results`].
pub(crate) fn send_result(t: &Arc<dyn Transport>, name: &str, value: f64) -> Result<(), String> {
    let frame = yuki_channel::codec::encode(&(name, value)).map_err(|e| e.to_string())?;
    t.call("result", &frame).map_err(|e| e.to_string())?;
    Ok(())
}

/// Serves `name` on `transport` as a bare echo: the cost of a call with no
/// work behind it.
pub fn serve_echo(transport: &Arc<dyn Transport>, name: &str) -> Result<(), String> {
    transport
        .serve(
            name,
            Arc::new(|_: PeerId, req: &[u8], reply: &mut Vec<u8>| {
                reply.extend_from_slice(req);
                Ok(())
            }),
        )
        .map_err(|e| e.to_string())
}
