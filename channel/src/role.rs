//! Which side of a yuki application this process is.

use std::ffi::OsStr;
use std::sync::OnceLock;

/// The environment variable a parent sets when it spawns a child.
///
/// Its presence makes a process a [`Role::Child`]; its value is read by the
/// transport that connects the child to its parent.
pub const BOOTSTRAP_ENV: &str = "YUKI_BOOTSTRAP";

/// The role of a process: the one main process, or one of its children.
///
/// The main process owns every shared thing (the store's data, the pub/sub
/// routing table, the hosted channels); children reach it through a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The process that owns the shared state and spawns the children.
    Main,
    /// A process spawned by main, connected to it through a transport.
    Child,
}

impl Role {
    /// Decides a role from the value of [`BOOTSTRAP_ENV`]: absent means main.
    ///
    /// This is what [`role()`] uses; tests call it to build either role
    /// without touching the process environment.
    ///
    /// ```
    /// use yuki_channel::Role;
    /// assert_eq!(Role::from_bootstrap(None), Role::Main);
    /// assert_eq!(Role::from_bootstrap(Some("anything".as_ref())), Role::Child);
    /// ```
    pub fn from_bootstrap(value: Option<&OsStr>) -> Role {
        match value {
            Some(_) => Role::Child,
            None => Role::Main,
        }
    }

    /// Whether this is [`Role::Main`].
    pub fn is_main(self) -> bool {
        self == Role::Main
    }
}

static ROLE: OnceLock<Role> = OnceLock::new();

/// The role of this process, read from [`BOOTSTRAP_ENV`] on first use and cached.
///
/// Later changes to the environment do not change the answer: a process does
/// not change sides while it runs.
pub fn role() -> Role {
    *ROLE.get_or_init(|| Role::from_bootstrap(std::env::var_os(BOOTSTRAP_ENV).as_deref()))
}

/// Fixes this process's role for [`role()`] when the transport learned it
/// from elsewhere than [`BOOTSTRAP_ENV`] (a bootstrap value given in code),
/// so that every part of the process agrees on one answer.
///
/// Returns `Err` with the role already fixed when it differs: a process
/// does not change sides, so the caller reports the conflict.
///
/// ```
/// use yuki_channel::{Role, role, set_role};
/// let now = role();
/// assert_eq!(set_role(now), Ok(()));
/// let other = if now.is_main() { Role::Child } else { Role::Main };
/// assert_eq!(set_role(other), Err(now));
/// ```
pub fn set_role(role: Role) -> Result<(), Role> {
    let fixed = *ROLE.get_or_init(|| role);
    if fixed == role { Ok(()) } else { Err(fixed) }
}

/// Whether this process is the main process (the seed's `IS_MAIN_PROCESS`).
pub fn is_main_process() -> bool {
    role().is_main()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_value_decides_role() {
        assert_eq!(Role::from_bootstrap(None), Role::Main);
        assert_eq!(Role::from_bootstrap(Some(OsStr::new(""))), Role::Child);
        assert!(Role::Main.is_main());
        assert!(!Role::Child.is_main());
    }

    #[test]
    fn role_is_cached() {
        let first = role();
        assert_eq!(role(), first);
        assert_eq!(is_main_process(), first.is_main());
    }
}
