//! The memory file behind a link's region: made by main at a fixed size
//! and sealed so that nobody, the child included, can shrink or grow it,
//! then checked again by whoever maps it.
//!
//! A process that touches a mapping past the end of its file gets SIGBUS;
//! a child that could shrink the file under main's mapping could kill
//! main. Seals make the size final: `ftruncate` then fails with `EPERM`
//! for every holder of the file, and `F_SEAL_SEAL` stops anyone from
//! changing the seals.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The seals a region's file must carry before it is mapped.
pub(crate) const SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// A new memory file of `len` bytes, sealed with [`SEALS`], closed on
/// exec, at a descriptor above the standard streams (so a child's
/// redirections never land on it).
pub(crate) fn create(len: usize) -> Result<OwnedFd, String> {
    let failed = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: the name is a valid C string; the descriptor returned is new
    // and owned by nobody else.
    let file = unsafe {
        let fd = libc::memfd_create(
            c"yuki-link".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        );
        if fd < 0 {
            return Err(failed("memfd_create"));
        }
        OwnedFd::from_raw_fd(fd)
    };
    let file = above_stdio(file)?;
    let size = libc::off_t::try_from(len).map_err(|_| format!("{len} bytes is too large"))?;
    // SAFETY: plain system calls on a descriptor this function owns.
    unsafe {
        if libc::ftruncate(file.as_raw_fd(), size) != 0 {
            return Err(failed("sizing the memory file"));
        }
        if libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, SEALS) != 0 {
            return Err(failed("sealing the memory file"));
        }
    }
    Ok(file)
}

/// `file`, moved to a descriptor of 3 or more if it sits on a standard one.
pub(crate) fn above_stdio(file: OwnedFd) -> Result<OwnedFd, String> {
    if file.as_raw_fd() > 2 {
        return Ok(file);
    }
    // SAFETY: duplicates a descriptor this function owns; the copy is new.
    let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(format!(
            "moving the memory file: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `fd` is new and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Refuses a file that is not `len` bytes or lacks any of [`SEALS`]: only
/// such a file is safe to map, whatever its other holders do.
pub(crate) fn check(file: BorrowedFd<'_>, len: usize) -> Result<(), String> {
    check_with(file, len, SEALS)
}

/// [`check`] with other seals required: `seals`, all of them.
pub(crate) fn check_with(
    file: BorrowedFd<'_>,
    len: usize,
    seals_needed: i32,
) -> Result<(), String> {
    // SAFETY: fcntl and fstat on a live descriptor; `st` is ours.
    let (seals, size) = unsafe {
        let seals = libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS);
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(file.as_raw_fd(), &mut st) != 0 {
            return Err(format!(
                "its memory file cannot be examined: {}",
                std::io::Error::last_os_error()
            ));
        }
        (seals, st.st_size)
    };
    if seals < 0 || seals & seals_needed != seals_needed {
        return Err(format!(
            "its memory file is not sealed (seals {seals:#x}, needs {seals_needed:#x})"
        ));
    }
    if u64::try_from(size).ok() != Some(len as u64) {
        return Err(format!("its memory file has {size} bytes, not {len}"));
    }
    Ok(())
}

/// A shared, read-write mapping of a whole checked file; unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory, reached through raw pointers by
// whoever owns it (the region, which says how it is shared).
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `file` after [`check`]ing it.
    pub(crate) fn new(file: BorrowedFd<'_>, len: usize) -> Result<Mapping, String> {
        check(file, len)?;
        // SAFETY: a new mapping of a file whose size is sealed at `len`:
        // every byte of it stays backed for as long as it is mapped.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!(
                "its memory file cannot be mapped: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Mapping {
            base: base.cast(),
            len,
        })
    }

    /// The first byte (page-aligned).
    pub(crate) fn base(&self) -> *mut u8 {
        self.base
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped, once; nothing reaches
        // it after its owner is dropped.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_new_file_is_sealed_at_its_size_for_every_holder() {
        let file = create(8192).unwrap();
        assert!(file.as_raw_fd() > 2);
        check(file.as_fd(), 8192).unwrap();
        // SAFETY: ftruncate and fcntl on a live descriptor.
        unsafe {
            for size in [0, 4096, 16384] {
                assert_ne!(libc::ftruncate(file.as_raw_fd(), size), 0);
            }
            assert_ne!(
                libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_WRITE),
                0
            );
        }
        let err = check(file.as_fd(), 4096).unwrap_err();
        assert!(err.contains("8192 bytes, not 4096"), "{err}");
    }

    #[test]
    fn an_unsealed_file_is_refused_before_it_is_mapped() {
        // SAFETY: a new descriptor, owned at once.
        let file = unsafe {
            OwnedFd::from_raw_fd(libc::memfd_create(c"open".as_ptr(), libc::MFD_CLOEXEC))
        };
        // SAFETY: ftruncate on a live descriptor.
        assert_eq!(unsafe { libc::ftruncate(file.as_raw_fd(), 8192) }, 0);
        let err = Mapping::new(file.as_fd(), 8192).unwrap_err();
        assert!(err.contains("not sealed"), "{err}");
    }
}
