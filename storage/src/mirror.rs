//! The store's shared read path around the table of `shared/`: main's
//! copy of its data in the region the transport shares, kept by every
//! write under the write's shard lock, and a child's reads of it.
//!
//! Main writes the table while it holds the lock of the key's shard (all
//! the touched shards for a batch, inside one [`Table::batch`]; every
//! shard for `clear`), before the write returns, so once a write has
//! returned anywhere every later read in every process sees it. The table
//! lock is always taken after shard locks, never before, so the order of
//! locks stays one.
//!
//! Deadlines are main's clock's nanoseconds, as in the shards. A child
//! turns its own `CLOCK_MONOTONIC` reading into that clock with the origin
//! main wrote in the table, which is why only a clock that is the system's
//! monotonic one ([`Clock::monotonic_origin_ns`]) gets a mirror.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, OnceLock};

use yuki_channel::SharedRegion;

use crate::clock::Clock;
use crate::shared::{Batch, Lookup, Table, View};

/// Where main's writes are copied to: the table, one batch of it, or
/// nowhere.
pub(crate) trait Sink {
    /// `key` now holds `value` until `expires` (main's clock, nanoseconds;
    /// `u64::MAX` never).
    fn set(&self, key: &str, value: &[u8], expires: u64);
    /// `key` is gone.
    fn remove(&self, key: &str);
}

/// No mirror: the map alone.
pub(crate) struct Nowhere;

impl Sink for Nowhere {
    #[inline(always)]
    fn set(&self, _: &str, _: &[u8], _: u64) {}
    #[inline(always)]
    fn remove(&self, _: &str) {}
}

impl Sink for Table {
    #[inline]
    fn set(&self, key: &str, value: &[u8], expires: u64) {
        Table::set(self, key, value, expires);
    }
    #[inline]
    fn remove(&self, key: &str) {
        Table::remove(self, key);
    }
}

impl Sink for Batch<'_> {
    #[inline]
    fn set(&self, key: &str, value: &[u8], expires: u64) {
        Batch::set(self, key, value, expires);
    }
    #[inline]
    fn remove(&self, key: &str) {
        Batch::remove(self, key);
    }
}

/// Main's table in the shared region.
pub(crate) struct Mirror {
    table: Table,
    /// Keeps the memory the table lives in mapped.
    _region: Arc<SharedRegion>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// Lays out the table in `region` if there is one this store may
    /// write and `clock` is one children can read; otherwise (logged when
    /// it is a surprise) `None`, and children ask main for every read.
    pub(crate) fn create(region: Option<Arc<SharedRegion>>, clock: &dyn Clock) -> Option<Mirror> {
        let region = region?;
        let Some(origin) = clock.monotonic_origin_ns() else {
            tracing::debug!("the store's clock is not the system's: children read from main");
            return None;
        };
        if !region.claim() {
            tracing::warn!(
                "the shared region already holds another store's table: this store's children read from main"
            );
            return None;
        }
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        // SAFETY: the region is mapped writable by this process for as long
        // as the mirror holds it (and every child's view holds its own
        // mapping); it was zeroed when made and, claimed here, nobody
        // else writes it.
        match unsafe { Table::create(region.base(), region.len(), seed, origin) } {
            Ok(table) => Some(Mirror {
                table,
                _region: region,
            }),
            Err(why) => {
                tracing::warn!(%why, "no shared table: children read the store from main");
                None
            }
        }
    }

    /// The table, to write.
    #[inline]
    pub(crate) fn table(&self) -> &Table {
        &self.table
    }
}

/// A buffer large values are not kept in: past this, a thread's read
/// buffer is dropped after use rather than kept.
const KEEP: usize = 64 << 10;

thread_local! {
    /// Each thread's buffer for values read from the table, so a read
    /// allocates nothing but the decoded value.
    static OUT: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A child's reads of main's table.
pub(crate) struct Reader {
    region: Arc<SharedRegion>,
    /// Opened at the first read after main laid the table out.
    view: OnceLock<View>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("open", &self.view.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Reads through `region` if it is a child's read-only one.
    pub(crate) fn new(region: Option<Arc<SharedRegion>>) -> Option<Reader> {
        let region = region.filter(|r| !r.is_writable())?;
        cfg!(target_os = "linux").then(|| Reader {
            region,
            view: OnceLock::new(),
        })
    }

    /// The table, once main has laid it out (until then, and for a main
    /// whose store keeps no table, reads go to main).
    #[inline]
    fn view(&self) -> Option<&View> {
        if let Some(view) = self.view.get() {
            return Some(view);
        }
        // SAFETY: the region stays mapped (read-only) for as long as the
        // reader holds it, and main never unmaps or shrinks it under us:
        // its file is sealed at its size.
        let view = unsafe { View::open(self.region.base(), self.region.len()) }.ok()?;
        Some(self.view.get_or_init(|| view))
    }

    /// Whether the table is open, so reads need no call.
    pub(crate) fn is_open(&self) -> bool {
        self.view().is_some()
    }

    /// Runs `f` on the value of `key` (or `None` when it is absent or
    /// expired) as the table has it; `None` when the table cannot tell
    /// and main must be asked.
    #[inline]
    pub(crate) fn read<R>(&self, key: &str, f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        let view = self.view()?;
        let now = now_on_mains_clock(view.clock_origin_ns())?;
        let mut out = OUT.take();
        let read = match view.get(key, now, &mut out) {
            Lookup::Found => Some(f(Some(&out))),
            Lookup::Absent => Some(f(None)),
            Lookup::AskMain => None,
        };
        if out.capacity() <= KEEP {
            OUT.set(out);
        }
        read
    }
}

/// Now, on main's clock, whose zero was `origin` on `CLOCK_MONOTONIC`.
#[inline]
fn now_on_mains_clock(origin: u64) -> Option<u64> {
    #[cfg(target_os = "linux")]
    return Some(crate::clock::monotonic_ns().saturating_sub(origin));
    #[cfg(not(target_os = "linux"))]
    {
        let _ = origin;
        None
    }
}
