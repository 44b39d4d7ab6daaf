//! Servers that are Unix socket files: a private directory holding a
//! link that main moves from server to server.
//!
//! ipc-channel binds each server's socket inside a new directory of the
//! system temporary directory (`$TMPDIR`, else `/tmp`), created with the
//! process's default permissions. Right after creating it, yuki narrows
//! that directory to `0700` and the socket to `0600`, so only the owning
//! user can reach it; and a child must present a 128-bit token besides. To
//! leave no window at all between creation and narrowing, start main with
//! `TMPDIR` pointing at a directory only its user can open
//! (`mkdir -m 0700 "$XDG_RUNTIME_DIR/yuki"`, say).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A refused process's server is replaced, and the child follows the link.
pub(in crate::rendezvous) const FOLLOWS: bool = true;

/// main's own directory, holding the link `socket` the child is told of.
pub(in crate::rendezvous) struct Place {
    dir: PathBuf,
    link: PathBuf,
}

impl Place {
    /// A new directory of the temporary directory that only this user can
    /// open, from its creation on.
    pub(in crate::rendezvous) fn new() -> Result<Place> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| Error::os("drawing a random name", e))?;
        let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("yuki-{name}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                Error::os(
                    "creating the handshake socket",
                    format!(
                        "{}: {e}; check that TMPDIR names a writable directory",
                        dir.display()
                    ),
                )
            })?;
        let link = dir.join("socket");
        Ok(Place { dir, link })
    }

    /// What the child is told to connect to: the link.
    pub(in crate::rendezvous) fn address(&self) -> Result<String> {
        self.link
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::os("creating the handshake socket", "TMPDIR is not UTF-8"))
    }

    /// Narrows the new server's socket to this user, then points the link
    /// at it, replacing what it pointed at in one step.
    pub(in crate::rendezvous) fn point(&self, server: &str) -> Result<()> {
        restrict(Path::new(server))?;
        let fresh = self.link.with_extension("new");
        let _ = std::fs::remove_file(&fresh);
        std::os::unix::fs::symlink(server, &fresh)
            .and_then(|()| std::fs::rename(&fresh, &self.link))
            .map_err(|e| Error::os("pointing the handshake socket at a new server", e))
    }

    /// Connects to the server behind the link and hangs up, which ends a
    /// blocked accept. (Not through ipc-channel, whose `connect` leaks its
    /// socket when the connection fails, as it does while the link points
    /// at a server that is gone.)
    pub(in crate::rendezvous) fn knock(&self) {
        use std::os::unix::ffi::OsStrExt;
        let path = self.link.as_os_str().as_bytes();
        // SAFETY: a zeroed sockaddr_un is valid; the path is copied within its
        // bounds (leaving the terminating zero); the socket is owned at once.
        unsafe {
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            if path.len() >= addr.sun_path.len() {
                return;
            }
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (d, s) in addr.sun_path.iter_mut().zip(path) {
                *d = *s as libc::c_char;
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return;
            }
            let socket = OwnedFd::from_raw_fd(fd);
            libc::connect(
                socket.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
        }
    }
}

impl Place {
    /// Removes the directory and the link: no child can find main here
    /// any more.
    pub(in crate::rendezvous) fn close(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.close();
    }
}

/// Narrows the socket's directory to its owner.
fn restrict(socket: &Path) -> Result<()> {
    let dir = socket
        .parent()
        .ok_or_else(|| Error::os("securing the handshake socket", "it has no directory"))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .and_then(|()| std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)))
        .map_err(|e| Error::os("securing the handshake socket", e))
}

/// Whether the server behind `address` is there to connect to. The child
/// looks before it connects: ipc-channel's `connect` leaks its socket when
/// the connection fails, as it does while main moves the link.
pub(in crate::rendezvous) fn reachable(address: &str) -> std::result::Result<(), String> {
    std::fs::metadata(address)
        .map(drop)
        .map_err(|e| format!("cannot reach {address}: {e}"))
}

/// Whether `address` is still a link main may point at a new server (so a
/// failed try is worth another).
pub(in crate::rendezvous) fn moving(address: &str) -> bool {
    std::fs::symlink_metadata(address).is_ok_and(|m| m.is_symlink())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_private_and_goes_with_the_place() {
        let place = Place::new().unwrap();
        let dir = place.dir.clone();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        let address = place.address().unwrap();
        assert!(!moving(&address), "not pointed anywhere yet");
        assert!(reachable(&address).is_err());
        drop(place);
        assert!(!dir.exists());
    }

    #[test]
    fn a_server_is_narrowed_to_its_user_before_the_link_points_at_it() {
        let place = Place::new().unwrap();
        let server_dir = place.dir.join("server");
        std::fs::create_dir(&server_dir).unwrap();
        std::fs::set_permissions(&server_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let server = server_dir.join("sock");
        std::fs::write(&server, b"").unwrap();
        std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o666)).unwrap();
        place.point(server.to_str().unwrap()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&server_dir), 0o700);
        assert_eq!(mode(&server), 0o600);
        let address = place.address().unwrap();
        assert!(moving(&address));
        assert_eq!(reachable(&address), Ok(()));
        assert_eq!(std::fs::read_link(&address).unwrap(), server);
        // Pointing again replaces the link in one step.
        let other = server_dir.join("other");
        std::fs::write(&other, b"").unwrap();
        place.point(other.to_str().unwrap()).unwrap();
        assert_eq!(std::fs::read_link(&address).unwrap(), other);
        std::fs::remove_file(&other).unwrap();
        assert!(
            moving(&address),
            "a link to a server that is gone still moves"
        );
        assert!(reachable(&address).is_err());
    }
}
