//! Sleeping on a word of memory shared between processes, and waking its
//! sleepers: the one place a link end's thread blocks.
//!
//! Linux futexes on a `MAP_SHARED` mapping are keyed by the page, not the
//! address, so main and a child that map the same region at different
//! addresses wait on and wake the same word.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Blocks while `word` holds `expected`, for at most `timeout`; returns at
/// once if it holds something else. It may also return early for no reason
/// (a signal, a wake meant for an earlier sleep): callers look again.
#[cfg(target_os = "linux")]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        // Below 10^9: fits any c_long.
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned 4-byte atomic for the whole call,
    // and the kernel only reads it and `ts`. Not FUTEX_PRIVATE: the word
    // lives in memory another process maps.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every thread, in any process, sleeping on `word`.
#[cfg(target_os = "linux")]
pub(crate) fn wake(word: &AtomicU32) {
    // SAFETY: as in `wait`; FUTEX_WAKE does not touch the word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

// Elsewhere ipc-channel may copy a region on its way instead of sharing
// it (macOS sends it as a copy-on-write Mach message), and there is no
// futex: say so at build time rather than fail at run time.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "yuki-ipc-transport runs on Linux only: its links share memory between processes and sleep on futexes"
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn a_changed_word_returns_at_once_and_a_wake_ends_a_sleep() {
        let word = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        wait(&word, 1, Duration::from_secs(10));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the word was not 1"
        );

        word.store(1, Ordering::SeqCst);
        let sleeper = {
            let word = word.clone();
            std::thread::spawn(move || {
                while word.load(Ordering::SeqCst) == 1 {
                    wait(&word, 1, Duration::from_secs(10));
                }
            })
        };
        word.store(2, Ordering::SeqCst);
        wake(&word);
        sleeper.join().unwrap();
    }
}
