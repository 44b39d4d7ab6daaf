//! The floor of every cross-process figure: a raw ipc-channel bytes
//! ping-pong between main and the bench child, timed in alternating batches
//! with yuki's figures so that both see the same placement and the same load
//! from the rest of the machine.
//!
//! Main starts an [`Echo`] thread and passes its name to the child in
//! [`ENV`]; the child connects a [`RawPair`] to it and hands its round trip to
//! [`alternate`] beside its own.

use std::process::Command;
use std::thread::JoinHandle;
use std::time::Instant;

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};
use yuki_ipc_transport::Node;

use crate::bench::{child as bench_child, placement};

/// Set in the child: the one-shot server name of main's echo thread.
pub const ENV: &str = "YUKI_BENCH_FLOOR";

/// The bytes of one request: about a get's request.
pub const PAYLOAD: usize = 24;

/// The floor's name in the table.
pub const NAME: &str = "ipc-channel bytes ping-pong";

/// The child's raw link to main's echo thread: (where main answers, where it listens).
type Hello = (IpcBytesSender, IpcBytesReceiver);

/// Main's raw echo thread; it ends when the child drops its [`RawPair`].
#[derive(Debug)]
pub struct Echo {
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// Starts the echo thread and names it in `child`'s environment.
    pub fn start(child: &mut Command) -> Result<Echo, String> {
        let (server, name) = IpcOneShotServer::<Hello>::new().map_err(|e| e.to_string())?;
        child.env(ENV, name);
        let thread = std::thread::spawn(move || {
            let Ok((_, (to_child, from_child))) = server.accept() else {
                return;
            };
            while let Ok(msg) = from_child.recv() {
                if to_child.send(&msg).is_err() {
                    break;
                }
            }
        });
        Ok(Echo {
            thread: Some(thread),
        })
    }

    /// Waits for the echo thread to end (after the child exited or dropped
    /// its link).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Spawns `area`'s bench child through `node` with main's echo thread and
/// [`placement::SERVICE`] beside it, and waits until the child exited
/// successfully.
pub fn run_child(node: &Node, area: &str, quick: bool) -> Result<(), String> {
    placement::serve(&node.transport())?;
    let mut cmd = bench_child::command(area, quick)?;
    let echo = Echo::start(&mut cmd)?;
    let result = bench_child::spawn_and_wait(node, area, cmd);
    echo.join();
    result
}

/// The child's end of the raw ping-pong.
#[derive(Debug)]
pub struct RawPair {
    to_main: IpcBytesSender,
    from_main: IpcBytesReceiver,
    msg: [u8; PAYLOAD],
}

impl RawPair {
    /// Connects to the echo thread main named in [`ENV`].
    pub fn connect() -> Result<RawPair, String> {
        let server = std::env::var(ENV).map_err(|_| format!("main did not set {ENV}"))?;
        let (to_child, from_main) = ipc::bytes_channel().map_err(|e| e.to_string())?;
        let (to_main, from_child) = ipc::bytes_channel().map_err(|e| e.to_string())?;
        IpcSender::<Hello>::connect(server)
            .and_then(|s| {
                s.send((to_child, from_child))
                    .map_err(std::io::Error::other)
            })
            .map_err(|e| format!("main's echo thread does not listen: {e}"))?;
        Ok(RawPair {
            to_main,
            from_main,
            msg: [7; PAYLOAD],
        })
    }

    /// One round trip.
    pub fn ping(&mut self) -> Result<(), String> {
        self.to_main.send(&self.msg).map_err(|e| e.to_string())?;
        self.from_main.recv().map_err(|e| format!("{e:?}"))?;
        Ok(())
    }
}

/// Times each of `sides` in `rounds` alternating batches of `n` runs, after
/// one warm-up batch each, and returns each side's median batch mean in
/// microseconds (in the order given). The first error stops the measurement.
pub fn alternate(
    rounds: usize,
    n: usize,
    sides: &mut [&mut dyn FnMut() -> Result<(), String>],
) -> Result<Vec<f64>, String> {
    let mut means = vec![Vec::with_capacity(rounds); sides.len()];
    for round in 0..=rounds {
        for (side, means) in sides.iter_mut().zip(&mut means) {
            let start = Instant::now();
            for _ in 0..n {
                side()?;
            }
            if round > 0 {
                means.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
            }
        }
    }
    Ok(means.into_iter().map(median).collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
