//! Admitting a forked child: the handshake on its rendezvous, who may
//! join in its place (nobody), and attaching its link to the hub.

use std::process::ExitStatus;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::Supervisor;
use super::child::ChildShared;
use crate::error::{Error, Result};
use crate::link::Made;
use crate::main_side::Link;
use crate::rendezvous::{Arrival, Rendezvous};
use crate::wire::{self, Welcome};

/// Whether a process that presented `presented` and says it is
/// `their_pid` is the child main spawned as `pid` with `token`. Any
/// process of this user may connect first: one that is not is refused
/// (with a short reason for it and a longer one for main's log), and main
/// waits on for the child.
pub(super) fn check(
    token: &str,
    pid: u32,
    presented: &str,
    their_pid: u32,
) -> std::result::Result<(), (&'static str, String)> {
    if !wire::same_token(presented, token) {
        Err((
            "wrong token",
            "a process presented a wrong token".to_owned(),
        ))
    } else if their_pid != pid {
        Err((
            "not the spawned process",
            format!("process {their_pid} tried to join in place of the spawned child {pid}"),
        ))
    } else {
        Ok(())
    }
}

/// Waits for `child`'s run `pid` to join on `rendezvous` (or exit, or
/// time out), welcomes it and attaches its link, of which main `made`
/// its half before the spawn.
pub(super) fn admit(
    child: &Arc<ChildShared>,
    sup: &Supervisor,
    rendezvous: Rendezvous,
    made: Made,
    pid: u32,
    exit_rx: &Receiver<ExitStatus>,
) -> Result<Arc<Link>> {
    let token = rendezvous.bootstrap.token.clone();
    let name = child.name.clone();
    let on_exit = |status: ExitStatus| Error::ExitedEarly {
        name,
        status: status.to_string(),
    };
    let admit = |presented: &str, their_pid: u32| check(&token, pid, presented, their_pid);
    match rendezvous.wait(sup.handshake_timeout, exit_rx, on_exit, admit) {
        Arrival::Joined(hello) => {
            let (ends, welcome) = match made.join(hello) {
                Ok(joined) => joined,
                Err((welcome, why)) => {
                    let _ = welcome.send(Welcome::Refused(why.into()));
                    return Err(Error::Refused(format!("{why}, from the spawned child")));
                }
            };
            let peer = sup.hub.next_peer();
            // Before the welcome: a stop or restart the child asks for
            // the moment it joins finds it by this id.
            child.lock().peer = peer;
            let accepted = Welcome::Accepted {
                peer: peer.0,
                name: child.name.clone(),
                max_frame: sup.hub.max_frame as u64,
            };
            welcome
                .send(accepted)
                .map_err(|e| Error::os("answering the handshake", format!("{e:?}")))?;
            let weak = Arc::downgrade(child);
            let kill = Box::new(move || {
                if let Some(c) = weak.upgrade() {
                    c.force(super::os::Force::Kill);
                }
            });
            sup.hub
                .attach(peer, &child.name, ends, Some(kill))
                .map_err(Error::from)
        }
        // No hello at all: the child never connected.
        Arrival::Failed(Error::HandshakeTimeout(waited)) => Err(Error::NeverConnected {
            name: child.name.clone(),
            pid,
            waited,
        }),
        Arrival::Failed(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn only_the_spawned_process_with_the_token_is_admitted() {
        assert_eq!(check("secret", 42, "secret", 42), Ok(()));
        assert_eq!(
            check("secret", 42, "wrong", 42).unwrap_err().0,
            "wrong token"
        );
        assert_eq!(check("secret", 42, "", 42).unwrap_err().0, "wrong token");
        assert_eq!(
            check("secret", 42, "secret", 43).unwrap_err().0,
            "not the spawned process"
        );
        // A wrong token is reported as such whoever presents it.
        assert_eq!(
            check("secret", 42, "wrong", 43).unwrap_err().0,
            "wrong token"
        );
    }
}
