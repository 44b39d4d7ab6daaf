//! The one long-lived thread that starts every child, so that Linux's
//! `PR_SET_PDEATHSIG` ties children to main rather than to a passing
//! thread (what each start sets up is in [`os`](super::os)).

use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;

use crate::error::{Error, Result};
use yuki_channel::sync::lock;

type Job = Box<dyn FnOnce() + Send>;

/// Forks on its own thread; forking ends when it is closed.
pub(super) struct Forker {
    jobs: Mutex<Option<Sender<Job>>>,
}

impl Forker {
    pub(super) fn start() -> Result<Forker> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        std::thread::Builder::new()
            .name("yuki-supervisor".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map_err(|e| Error::os("starting the supervisor thread", e))?;
        Ok(Forker {
            jobs: Mutex::new(Some(tx)),
        })
    }

    /// Spawns `cmd` on the forker thread and returns its result.
    pub(super) fn fork(&self, cmd: &Arc<Mutex<Command>>) -> Result<Child> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let cmd = cmd.clone();
        let job: Job = Box::new(move || {
            let r = lock(&cmd).spawn();
            let _ = tx.send(r);
        });
        let sent = lock(&self.jobs).as_ref().map(|f| f.send(job).is_ok());
        if sent != Some(true) {
            return Err(Error::os("spawning a child", "the node is shutting down"));
        }
        rx.recv()
            .map_err(|_| Error::os("spawning a child", "the supervisor thread ended"))?
            .map_err(|e| Error::os("spawning a child", e))
    }

    /// Ends the thread; later forks fail.
    pub(super) fn close(&self) {
        lock(&self.jobs).take();
    }
}
