//! The store's shared region: one memory file main makes at start-up,
//! maps read-write, and seals so that nobody can ever write it through a
//! new mapping or change its size; every child inherits it at spawn and
//! maps it read-only.
//!
//! The store keeps there a table of its keys that children read without a
//! message to main (`yuki-storage`, `shared/`); this module only makes,
//! hands down and maps the memory, and hands it to the store through
//! [`Transport::shared_region`](yuki_channel::Transport::shared_region).
//!
//! **Size.** The file is [`LEN`] bytes (16 GiB) from the start and never
//! changes: a file whose size can change under a mapping could make a
//! reader fault (SIGBUS). It costs nothing until written: a memory file is
//! sparse and charged page by page as main touches it, not at `ftruncate`
//! or `mmap` (memory files are not accounted up front; `MAP_NORESERVE`
//! says so for the mapping too). Only the address space is reserved, in
//! each process that maps it.
//!
//! **Seals.** `F_SEAL_SHRINK | F_SEAL_GROW` fix the size,
//! `F_SEAL_FUTURE_WRITE` refuses every new writable mapping, `write(2)`
//! and hole punching to every holder (main keeps the writable mapping it
//! made before sealing), `F_SEAL_SEAL` fixes the seals. A child's mapping
//! is read-only and cannot be made writable (`mprotect` fails, and
//! `/proc/self/mem` cannot force a write into a shared mapping that was
//! never writable).
//!
//! **Handing down.** The descriptor is closed on exec except in the
//! children main spawns: their command clears that flag in the child
//! between fork and exec, and carries [`ENV`] = `descriptor:length`. A
//! restarted child inherits it again through the same command. The child
//! moves it to a descriptor of its own, closed on exec, and checks the
//! size and every seal before it maps it; a file that fails a check is
//! refused with a logged reason, and its store then reads from main.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::ptr::NonNull;
use std::sync::Arc;

use yuki_channel::SharedRegion;

use crate::sealed;

/// The region's size: room for millions of keys and values up to the
/// store's value limit, paid for only as it is used.
pub(crate) const LEN: usize = 16 << 30;

/// The variable that tells a child where its inherited region is.
pub(crate) const ENV: &str = "YUKI_STORE_REGION";

/// The variable that turns shared reads off in main when it is `0`.
pub(crate) const OFF_ENV: &str = "YUKI_SHARED_READS";

/// The seals the region's file carries before any child may map it.
pub(crate) const SEALS: i32 =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_FUTURE_WRITE | libc::F_SEAL_SEAL;

/// Whether main's environment leaves shared reads on.
pub(crate) fn allowed_by_env() -> bool {
    std::env::var_os(OFF_ENV).is_none_or(|v| v != "0")
}

/// Main's region: its file, for the children, and its writable mapping.
#[derive(Debug)]
pub(crate) struct MainRegion {
    file: Arc<OwnedFd>,
    pub(crate) region: Arc<SharedRegion>,
}

/// One mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: plain memory, reached only through the region that owns it.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(file: &OwnedFd, len: usize, prot: i32) -> Result<Mapping, String> {
        // SAFETY: a new mapping of a file whose size is sealed at `len` (or,
        // in main, not yet shared with anyone who could change it).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                0,
            )
        };
        match NonNull::new(base.cast::<u8>()) {
            Some(base) if base.as_ptr() != libc::MAP_FAILED.cast() => Ok(Mapping { base, len }),
            _ => Err(format!(
                "mapping the store's region: {}",
                std::io::Error::last_os_error()
            )),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped, once, after every
        // reader (the region owning it) is gone.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl MainRegion {
    /// Makes, maps and seals a region of `len` bytes.
    pub(crate) fn create(len: usize) -> Result<MainRegion, String> {
        let failed = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
        // SAFETY: the name is a valid C string; the descriptor is new.
        let file = unsafe {
            let fd = libc::memfd_create(
                c"yuki-store".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            );
            if fd < 0 {
                return Err(failed("memfd_create"));
            }
            OwnedFd::from_raw_fd(fd)
        };
        let file = sealed::above_stdio(file)?;
        let size = libc::off_t::try_from(len).map_err(|_| format!("{len} bytes is too large"))?;
        // SAFETY: a system call on a descriptor this function owns.
        if unsafe { libc::ftruncate(file.as_raw_fd(), size) } != 0 {
            return Err(failed("sizing the store's region"));
        }
        // Mapped writable before the seals: afterwards nobody can.
        let mapping = Mapping::new(&file, len, libc::PROT_READ | libc::PROT_WRITE)?;
        // SAFETY: a system call on a descriptor this function owns.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
            return Err(failed("sealing the store's region"));
        }
        let base = mapping.base;
        // SAFETY: `mapping` is `len` bytes, read-write, page-aligned, and
        // lives as long as the region it is moved into.
        let region = unsafe { SharedRegion::new(base, len, true, mapping) };
        Ok(MainRegion {
            file: Arc::new(file),
            region: Arc::new(region),
        })
    }

    /// Makes every start of `cmd` inherit the region.
    pub(crate) fn hand_down(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        cmd.env(
            ENV,
            format!("{}:{}", self.file.as_raw_fd(), self.region.len()),
        );
        let file = self.file.clone();
        // SAFETY: only an async-signal-safe call (fcntl) runs between fork
        // and exec; `file` keeps the descriptor open while `cmd` lives.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// Makes sure no start of `cmd` takes a stale region from main's own
/// environment.
pub(crate) fn withhold(cmd: &mut Command) {
    cmd.env_remove(ENV);
}

/// The region main handed down to this child, mapped read-only; `None`
/// when there is none, or it is refused (logged: the store then reads
/// from main).
pub(crate) fn inherited() -> Option<Arc<SharedRegion>> {
    let value = std::env::var_os(ENV)?;
    match open_inherited(&value.to_string_lossy()) {
        Ok(region) => Some(region),
        Err(why) => {
            tracing::warn!(%why, "refused the store's shared region; store reads go to main");
            None
        }
    }
}

/// Parses `descriptor:length`, takes the descriptor over and maps it.
fn open_inherited(value: &str) -> Result<Arc<SharedRegion>, String> {
    let parsed = value
        .split_once(':')
        .and_then(|(fd, len)| Some((fd.parse::<i32>().ok()?, len.parse::<usize>().ok()?)));
    let Some((fd, len)) = parsed else {
        return Err(format!("{ENV}={value:?} is not descriptor:length"));
    };
    // A copy first: `fd` is only known to be the file once it is checked.
    // SAFETY: fcntl on a descriptor number; it fails if nothing is open there.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(format!(
            "descriptor {fd} from {ENV}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `copy` is new and owned by nobody else.
    let copy = unsafe { OwnedFd::from_raw_fd(copy) };
    let region = map_read_only(copy, len)?;
    // SAFETY: `fd` is the inherited file (checked through its copy), which
    // nothing else in this process uses.
    unsafe { libc::close(fd) };
    Ok(region)
}

/// Maps `file` read-only after checking it is `len` bytes and carries
/// every one of [`SEALS`].
pub(crate) fn map_read_only(file: OwnedFd, len: usize) -> Result<Arc<SharedRegion>, String> {
    sealed::check_with(file.as_fd(), len, SEALS)?;
    let mapping = Mapping::new(&file, len, libc::PROT_READ)?;
    drop(file);
    let base = mapping.base;
    // SAFETY: `mapping` is `len` readable, page-aligned bytes, alive as
    // long as the region it is moved into.
    Ok(Arc::new(unsafe {
        SharedRegion::new(base, len, false, mapping)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: usize = 1 << 20;

    /// A child's view of `main`'s region, through a copy of its file.
    fn child_view(main: &MainRegion) -> Arc<SharedRegion> {
        // SAFETY: duplicates a live descriptor; the copy is new.
        let copy = unsafe { libc::fcntl(main.file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        assert!(copy >= 0);
        // SAFETY: `copy` is new and owned here.
        map_read_only(unsafe { OwnedFd::from_raw_fd(copy) }, SMALL).unwrap()
    }

    fn byte(region: &SharedRegion, at: usize) -> u8 {
        // SAFETY: `at` is inside the mapping.
        unsafe { region.base().as_ptr().add(at).read_volatile() }
    }

    #[test]
    fn main_writes_and_a_child_reads_the_same_memory() {
        let main = MainRegion::create(SMALL).unwrap();
        assert!(main.region.is_writable() && main.region.claim());
        let child = child_view(&main);
        assert!(!child.is_writable() && !child.claim());
        // SAFETY: inside main's writable mapping.
        unsafe { main.region.base().as_ptr().add(4096).write_volatile(7) };
        assert_eq!(byte(&child, 4096), 7);
    }

    #[test]
    fn the_default_size_costs_address_space_only() {
        let main = MainRegion::create(LEN).unwrap();
        let child = child_view_of_len(&main, LEN);
        // SAFETY: the last byte of main's writable mapping.
        unsafe { main.region.base().as_ptr().add(LEN - 1).write_volatile(9) };
        assert_eq!(byte(&child, LEN - 1), 9);
    }

    fn child_view_of_len(main: &MainRegion, len: usize) -> Arc<SharedRegion> {
        // SAFETY: as in `child_view`.
        let copy = unsafe { libc::fcntl(main.file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        // SAFETY: `copy` is new and owned here.
        map_read_only(unsafe { OwnedFd::from_raw_fd(copy) }, len).unwrap()
    }

    #[test]
    fn no_holder_of_the_file_can_write_or_resize_it() {
        let main = MainRegion::create(SMALL).unwrap();
        let fd = main.file.as_raw_fd();
        // SAFETY: system calls on a live descriptor; every one must fail.
        unsafe {
            assert_ne!(libc::ftruncate(fd, 4096), 0, "shrunk");
            assert_ne!(libc::ftruncate(fd, 2 * SMALL as libc::off_t), 0, "grown");
            assert!(libc::pwrite(fd, b"x".as_ptr().cast(), 1, 0) < 0, "written");
            let punched = libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                4096,
            );
            assert_ne!(punched, 0, "a hole punched");
            let writable = libc::mmap(
                std::ptr::null_mut(),
                SMALL,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_eq!(writable, libc::MAP_FAILED, "mapped writable");
            assert_ne!(libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_WRITE), 0);
        }
    }

    #[test]
    fn a_child_cannot_make_its_mapping_writable() {
        let main = MainRegion::create(SMALL).unwrap();
        // SAFETY: inside main's writable mapping.
        unsafe { main.region.base().as_ptr().write_volatile(1) };
        let child = child_view(&main);
        let base = child.base().as_ptr();
        // SAFETY: mprotect and madvise on the child's own mapping; both
        // must be refused.
        unsafe {
            let r = libc::mprotect(base.cast(), 4096, libc::PROT_READ | libc::PROT_WRITE);
            assert_ne!(r, 0, "mprotect made it writable");
            assert_ne!(libc::madvise(base.cast(), 4096, libc::MADV_REMOVE), 0);
        }
        // The debugger's way: a forced write through /proc/self/mem.
        use std::os::unix::fs::FileExt;
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/self/mem")
            .unwrap();
        assert!(mem.write_at(&[2], base as u64).is_err());
        assert_eq!(byte(&child, 0), 1);
        assert_eq!(byte(&main.region, 0), 1);
    }

    #[test]
    fn a_file_without_every_seal_or_of_another_size_is_refused() {
        let main = MainRegion::create(SMALL).unwrap();
        // SAFETY: as in `child_view`.
        let copy = unsafe { libc::fcntl(main.file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        // SAFETY: `copy` is new and owned here.
        let err = map_read_only(unsafe { OwnedFd::from_raw_fd(copy) }, SMALL / 2).unwrap_err();
        assert!(err.contains("not"), "{err}");
        // The link's seals alone (no F_SEAL_FUTURE_WRITE) are not enough.
        let link = sealed::create(SMALL).unwrap();
        let err = map_read_only(link, SMALL).unwrap_err();
        assert!(err.contains("not sealed"), "{err}");
    }

    #[test]
    fn a_malformed_or_stale_variable_is_refused() {
        for value in ["", "12", "x:4096", "4096:y"] {
            let err = open_inherited(value).unwrap_err();
            assert!(err.contains("descriptor:length"), "{value}: {err}");
        }
        // A descriptor that is open but is no sealed region (stdin's copy).
        let err = open_inherited(&format!("0:{SMALL}")).unwrap_err();
        assert!(err.contains("not") || err.contains("bytes"), "{err}");
    }
}
