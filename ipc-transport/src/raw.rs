//! A child's side of a link made by hand, for fault-injection tests that
//! play a child breaking rules a real one never breaks.

use std::sync::Mutex;
use yuki_channel::sync;

use crate::pipe::{Way, Writer};
use crate::rendezvous;

/// The shared region of a hand-made link, with its pipe towards main.
pub struct RawRegion {
    up: Mutex<Writer>,
}

impl std::fmt::Debug for RawRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRegion").finish_non_exhaustive()
    }
}

impl RawRegion {
    /// The region main handed down to this child at `fd` (the
    /// descriptor named in its bootstrap value), mapped as a child maps it.
    pub fn inherited(fd: i32) -> Result<RawRegion, String> {
        let region = rendezvous::inherited_region(fd).map_err(|e| e.to_string())?;
        let up = Mutex::new(region.writer(Way::Up));
        Ok(RawRegion { up })
    }

    /// Sends `message` to main as one message, bypassing every check;
    /// fails once the link is closed.
    pub fn send_up(&self, message: &[u8]) -> Result<(), String> {
        let mut up = sync::lock(&self.up);
        up.send(message).map_err(|e| format!("{e:?}"))
    }

    /// Claims, in the region, to have written more than the pipe to main
    /// holds, and wakes main's reader to look.
    pub fn scribble(&self) {
        sync::lock(&self.up).scribble();
    }
}
