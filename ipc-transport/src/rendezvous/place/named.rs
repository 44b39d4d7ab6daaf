//! Servers the system names (macOS: Mach bootstrap names; Windows: named
//! pipes): the child is given the one server's name itself, and cannot
//! follow a new one, so the rendezvous ends with its first connection.

use std::sync::Mutex;

use ipc_channel::ipc::IpcSender;
use yuki_channel::sync::lock;

use crate::error::{Error, Result};

/// A refused process ends the rendezvous: the child knows no other server.
pub(in crate::rendezvous) const FOLLOWS: bool = false;

/// The name of the rendezvous's server, once there is one.
pub(in crate::rendezvous) struct Place {
    server: Mutex<Option<String>>,
}

impl Place {
    pub(in crate::rendezvous) fn new() -> Result<Place> {
        Ok(Place {
            server: Mutex::new(None),
        })
    }

    /// What the child is told to connect to: the server's own name.
    pub(in crate::rendezvous) fn address(&self) -> Result<String> {
        lock(&self.server)
            .clone()
            .ok_or_else(|| Error::os("creating the handshake server", "no server was opened"))
    }

    /// Names the server; the system keeps it, so there is nothing to narrow.
    pub(in crate::rendezvous) fn point(&self, server: &str) -> Result<()> {
        *lock(&self.server) = Some(server.to_owned());
        Ok(())
    }

    /// Sends the server a message that is no hello, which ends a blocked
    /// accept (here accept waits for a message, not only a connection).
    pub(in crate::rendezvous) fn knock(&self) {
        let Some(name) = lock(&self.server).clone() else {
            return;
        };
        if let Ok(sender) = IpcSender::<u8>::connect(name) {
            let _ = sender.send(0);
        }
    }
}

impl Place {
    /// Nothing to remove: the system forgets a server's name with it.
    pub(in crate::rendezvous) fn close(&self) {}
}

/// The child connects at once: a server here is there or gone for good.
pub(in crate::rendezvous) fn reachable(_address: &str) -> std::result::Result<(), String> {
    Ok(())
}

/// Never: main cannot point the child at another server.
pub(in crate::rendezvous) fn moving(_address: &str) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Hello;
    use ipc_channel::ipc::IpcOneShotServer;
    use std::time::Duration;

    #[test]
    fn the_child_is_given_the_server_itself_and_a_knock_ends_its_accept() {
        let place = Place::new().unwrap();
        assert!(place.address().is_err(), "no server yet");
        let (server, name) = IpcOneShotServer::<Hello>::new().unwrap();
        place.point(&name).unwrap();
        assert_eq!(place.address().unwrap(), name);
        assert!(!FOLLOWS && !moving(&name));
        assert_eq!(reachable(&name), Ok(()));
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let accepting = std::thread::spawn(move || {
            let accepted = server.accept();
            let _ = done_tx.send(accepted.is_err());
        });
        place.knock();
        let refused = done
            .recv_timeout(Duration::from_secs(10))
            .expect("a knock ends a blocked accept");
        assert!(refused, "a knock is no hello");
        accepting.join().unwrap();
        place.close();
    }
}
