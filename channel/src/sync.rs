//! Lock calls that never report poison, shared by every yuki crate.
//!
//! A std lock is poisoned when a thread panics while holding it; every later
//! `lock()` then returns `Err(PoisonError)`. Yuki takes the guard back
//! instead of spreading the panic: every critical section in yuki either
//! leaves its state consistent at each point a panic could occur (single
//! table calls, flag stores, queue pushes) or says in a comment why a
//! half-done change is harmless. Library code must not panic because some
//! other thread did, so the poison flag carries no information yuki needs.
//!
//! These are free functions over the std types rather than wrappers, so
//! fields keep their std types and the hot paths compile to the same code.
//!
//! ```
//! use std::sync::{Condvar, Mutex};
//! use std::time::Duration;
//! use yuki_channel::sync;
//!
//! let m = Mutex::new(1);
//! *sync::lock(&m) += 1;
//! let cv = Condvar::new();
//! let (guard, timeout) = sync::wait_timeout(&cv, sync::lock(&m), Duration::from_millis(1));
//! assert_eq!(*guard, 2);
//! assert!(timeout.timed_out());
//! ```

use std::sync::{
    Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, WaitTimeoutResult,
};
use std::time::Duration;

/// Locks `m`, taking the guard back if an earlier holder panicked.
///
/// ```
/// let m = std::sync::Mutex::new(5);
/// assert_eq!(*yuki_channel::sync::lock(&m), 5);
/// ```
#[inline]
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read-locks `l`, taking the guard back if an earlier writer panicked.
///
/// ```
/// let l = std::sync::RwLock::new(5);
/// assert_eq!(*yuki_channel::sync::read(&l), 5);
/// ```
#[inline]
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Write-locks `l`, taking the guard back if an earlier writer panicked.
///
/// ```
/// let l = std::sync::RwLock::new(5);
/// *yuki_channel::sync::write(&l) = 6;
/// assert_eq!(*yuki_channel::sync::read(&l), 6);
/// ```
#[inline]
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Waits on `cv` with `guard`'s lock released, like [`Condvar::wait`],
/// without reporting poison.
///
/// ```
/// use std::sync::{Condvar, Mutex};
/// use yuki_channel::sync;
///
/// let (m, cv) = (Mutex::new(true), Condvar::new());
/// let mut ready = sync::lock(&m);
/// while !*ready {
///     ready = sync::wait(&cv, ready);
/// }
/// ```
#[inline]
pub fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|p| p.into_inner())
}

/// Waits on `cv` for at most `timeout`, like [`Condvar::wait_timeout`],
/// without reporting poison.
///
/// ```
/// use std::sync::{Condvar, Mutex};
/// use std::time::Duration;
/// use yuki_channel::sync;
///
/// let (m, cv) = (Mutex::new(()), Condvar::new());
/// let (_guard, r) = sync::wait_timeout(&cv, sync::lock(&m), Duration::ZERO);
/// assert!(r.timed_out());
/// ```
#[inline]
pub fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
    cv.wait_timeout(guard, timeout)
        .unwrap_or_else(|p| p.into_inner())
}

/// The value inside an exclusively borrowed mutex, poisoned or not.
///
/// ```
/// let mut m = std::sync::Mutex::new(5);
/// *yuki_channel::sync::get_mut(&mut m) += 1;
/// assert_eq!(m.into_inner().unwrap(), 6);
/// ```
#[inline]
pub fn get_mut<T: ?Sized>(m: &mut Mutex<T>) -> &mut T {
    m.get_mut().unwrap_or_else(|p| p.into_inner())
}

/// The value inside an exclusively borrowed read-write lock, poisoned or not.
///
/// ```
/// let mut l = std::sync::RwLock::new(5);
/// *yuki_channel::sync::get_mut_rw(&mut l) += 1;
/// assert_eq!(l.into_inner().unwrap(), 6);
/// ```
#[inline]
pub fn get_mut_rw<T: ?Sized>(l: &mut RwLock<T>) -> &mut T {
    l.get_mut().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn poisoned<L: Send + Sync + 'static>(l: L, hold: fn(&L)) -> Arc<L> {
        let l = Arc::new(l);
        let c = Arc::clone(&l);
        let r = std::thread::spawn(move || {
            hold(&c);
        })
        .join();
        assert!(r.is_err());
        l
    }

    #[test]
    fn a_poisoned_mutex_still_locks_and_waits() {
        let m = poisoned(Mutex::new(1), |m| {
            let _g = m.lock().unwrap();
            panic!("poison the lock");
        });
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        let cv = Condvar::new();
        let (g, r) = wait_timeout(&cv, lock(&m), Duration::ZERO);
        assert!(r.timed_out());
        assert_eq!(*g, 2);
        drop(g);
        let mut m = Arc::into_inner(m).unwrap();
        assert_eq!(*get_mut(&mut m), 2);
    }

    #[test]
    fn a_poisoned_rwlock_still_reads_and_writes() {
        let l = poisoned(RwLock::new(1), |l| {
            let _g = l.write().unwrap();
            panic!("poison the lock");
        });
        assert!(l.is_poisoned());
        *write(&l) += 1;
        assert_eq!(*read(&l), 2);
        let mut l = Arc::into_inner(l).unwrap();
        assert_eq!(*get_mut_rw(&mut l), 2);
    }
}
