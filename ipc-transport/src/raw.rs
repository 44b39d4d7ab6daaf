//! A child's side of a link made by hand, for fault-injection tests that
//! play a child breaking rules a real one never breaks.

use std::sync::{Arc, Mutex};

use ipc_channel::ipc::IpcSharedMemory;

use crate::pipe::{Region, Way, Writer};

/// The shared region of a hand-made link, with its pipe towards main.
#[doc(hidden)]
pub struct RawRegion {
    region: Arc<Region>,
    up: Mutex<Writer>,
}

impl std::fmt::Debug for RawRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRegion").finish_non_exhaustive()
    }
}

impl RawRegion {
    /// A new region, as a child makes it for its hello.
    pub fn new() -> Result<RawRegion, String> {
        let region = Region::create()?;
        let up = Mutex::new(region.writer(Way::Up));
        Ok(RawRegion { region, up })
    }

    /// What goes in the hello's `rings` field.
    pub fn share(&self) -> IpcSharedMemory {
        self.region.share()
    }

    /// Sends `message` to main as one message, bypassing every check;
    /// fails once the link is closed.
    pub fn send_up(&self, message: &[u8]) -> Result<(), String> {
        let mut up = self.up.lock().unwrap_or_else(|p| p.into_inner());
        up.send(message).map_err(|e| format!("{e:?}"))
    }

    /// Claims, in the region, to have written more than the pipe to main
    /// holds, and wakes main's reader to look.
    pub fn scribble(&self) {
        self.up.lock().unwrap_or_else(|p| p.into_inner()).scribble();
    }
}
