//! What main owns: the sharded map, the watchers and the expiry of keys.
//!
//! Every operation locks what it touches and applies itself whole before it
//! unlocks: one key's shard for single-key operations, the touched shards in
//! shard order for a batch, every shard (in order) for `get_all`, `keys`,
//! `len` and `clear`. Taking locks in one global order means no two
//! operations can wait on each other in a cycle.
//!
//! With a [`Mirror`], the entries live in the shared table children read,
//! and every change is made there before the shard locks are released
//! (`mirror.rs`): the table's own lock comes after them in that order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use yuki_channel::sync;

use crossbeam_channel::{RecvTimeoutError, Sender};
use serde_bytes::Bytes;
use yuki_channel::codec::mark::{IntType, Integer};

use crate::batch::Outcome;
use crate::clock::Clock;
use crate::entry::NEVER;
use crate::error::Error;
use crate::glob::{self, Glob};
use crate::mirror::{Mirror, Nowhere, Sink};
use crate::protocol::{Op, Reply};
use crate::shards::{Hasher, Now, Shard, Shards, Touched, give_back};
use crate::shared::Table;
use crate::watch::Watchers;

pub(crate) struct Data {
    shards: Shards,
    clock: Arc<dyn Clock>,
    pub(crate) watchers: Watchers,
    purge_every: Duration,
    purger_started: AtomicBool,
    /// Dropping it stops the background purge.
    purger_stop: Mutex<Option<Sender<()>>>,
    /// The table children read, when they read from shared memory.
    mirror: Option<Mirror>,
    me: Weak<Data>,
}

impl Data {
    pub(crate) fn new(
        shards: usize,
        clock: Arc<dyn Clock>,
        purge_every: Duration,
        mirror: Option<Mirror>,
    ) -> Arc<Data> {
        Arc::new_cyclic(|me| Data {
            shards: Shards::new(
                shards,
                mirror.as_ref().map_or_else(Hasher::default, Mirror::hasher),
            ),
            clock,
            watchers: Watchers::default(),
            purge_every,
            purger_started: AtomicBool::new(false),
            purger_stop: Mutex::new(None),
            mirror,
            me: me.clone(),
        })
    }

    /// The shared table, if children read from one: it holds most of the
    /// entries.
    #[inline]
    fn table(&self) -> Option<&Table> {
        self.mirror.as_ref().map(Mirror::table)
    }

    fn now(&self) -> Now<'_> {
        Now::new(&*self.clock)
    }

    /// Whether children read this data from shared memory.
    pub(crate) fn is_mirrored(&self) -> bool {
        self.mirror.is_some()
    }

    /// The seed of the shared table's hash (for tests).
    #[cfg(test)]
    pub(crate) fn mirror_seed(&self) -> Option<u64> {
        self.mirror.as_ref().map(|m| m.table().seed_and_stripes().0)
    }

    /// Runs `f` on the live value of `key` under its shard's read lock.
    #[inline]
    pub(crate) fn get_with<R>(&self, key: &str, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.read(key, |value| value.map(f))
    }

    /// Runs `f` on the live value of `key`, or on `None`, under its shard's
    /// read lock: a caller builds its result once, in its final shape.
    #[inline]
    pub(crate) fn read<R>(&self, key: &str, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let hash = self.shards.hash(key);
        let shard = self.shards.read(self.shards.index(hash));
        let mut now = self.now();
        f(shard
            .find_live(self.table(), hash, key, &mut now)
            .map(|e| e.value()))
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.get_with(key, |_| ()).is_some()
    }

    /// Applies one operation under its shard's write lock.
    #[inline]
    pub(crate) fn apply_one(&self, op: &Op<'_>) -> Outcome {
        let key = op.key();
        let hash = self.shards.hash(key);
        let mut shard = self.shards.write(self.shards.index(hash));
        let mut now = self.now();
        let outcome = match &self.mirror {
            Some(mirror) => self.apply(&mut shard, hash, op, &mut now, mirror.table()),
            None => self.apply(&mut shard, hash, op, &mut now, &Nowhere),
        };
        drop(shard);
        give_back();
        outcome
    }

    /// Applies `ops` in order with every shard they touch locked, so no
    /// other operation sees the batch half applied.
    pub(crate) fn apply_batch(&self, ops: &[Op<'_>]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(ops.len());
        self.locked_batch(ops, |shard, hash, op, now, sink| {
            outcomes.push(self.apply(shard, hash, op, now, sink));
        });
        outcomes
    }

    /// [`Data::apply_batch`] handing each operation's reply to `each` as
    /// soon as it is applied, a `get`'s value borrowed from the map: main's
    /// service encodes it from there, where an [`Outcome`] would copy the
    /// key and the value only to be encoded and dropped.
    pub(crate) fn answer_batch(&self, ops: &[Op<'_>], mut each: impl FnMut(Reply<'_>)) {
        self.locked_batch(ops, |shard, hash, op, now, sink| match *op {
            Op::Get(key) => each(Reply::Value(
                shard
                    .find_live(sink.table(), hash, key, now)
                    .map(|e| Bytes::new(e.value())),
            )),
            _ => each(self.apply(shard, hash, op, now, sink).to_reply()),
        });
    }

    /// Runs `f` on each of `ops` in order, with its shard, its key's hash
    /// and the batch's clock, while every shard they touch is locked (in
    /// shard order).
    fn locked_batch(
        &self,
        ops: &[Op<'_>],
        mut f: impl FnMut(&mut Shard, u64, &Op<'_>, &mut Now<'_>, &dyn Sink),
    ) {
        let placed: Vec<(u64, usize)> = ops
            .iter()
            .map(|op| {
                let hash = self.shards.hash(op.key());
                (hash, self.shards.index(hash))
            })
            .collect();
        let touched = Touched::new(self.shards.count(), placed.iter().map(|&(_, i)| i));
        let mut guards: Vec<_> = touched.shards().map(|i| self.shards.write(i)).collect();
        let mut now = self.now();
        // Readers of the shared table see the whole batch or none of it (a
        // batch that only reads changes nothing there, and takes no table
        // lock).
        let writes = ops
            .iter()
            .any(|op| !matches!(op, Op::Get(_) | Op::Contains(_) | Op::Ttl(_)));
        let mut run = |sink: &dyn Sink| {
            for (op, &(hash, index)) in ops.iter().zip(&placed) {
                f(&mut guards[touched.slot(index)], hash, op, &mut now, sink);
            }
        };
        match &self.mirror {
            Some(mirror) if writes => mirror.table().batch(|batch| run(batch)),
            // Reads only: the table's entries are read, no lock taken.
            Some(mirror) => run(mirror.table()),
            None => run(&Nowhere),
        }
        drop(guards);
        give_back();
    }

    fn apply<S: Sink + ?Sized>(
        &self,
        shard: &mut Shard,
        hash: u64,
        op: &Op<'_>,
        now: &mut Now<'_>,
        sink: &S,
    ) -> Outcome {
        let table = sink.table();
        let hasher = self.shards.hasher();
        match *op {
            Op::Get(key) => Outcome::Got {
                key: key.to_owned(),
                value: shard
                    .find_live(table, hash, key, now)
                    .map(|e| e.value().to_vec()),
            },
            Op::Contains(key) => {
                Outcome::Contains(shard.find_live(table, hash, key, now).is_some())
            }
            Op::Set {
                key,
                value,
                ttl_nanos,
            } => {
                let expires = match ttl_nanos {
                    None => NEVER,
                    Some(ttl) => {
                        self.start_purger();
                        now.get().saturating_add(ttl).min(NEVER - 1)
                    }
                };
                shard.put(sink, hasher, hash, key, value, expires);
                self.changed(key, Some(value));
                Outcome::Set
            }
            Op::Delete(key) => match shard.remove(sink, hasher, hash, key) {
                Some(expires) => {
                    self.changed(key, None);
                    Outcome::Deleted(now.keeps(expires))
                }
                None => Outcome::Deleted(false),
            },
            Op::Incr { key, by } => {
                let mut expires = NEVER;
                let current = match shard.find_live(table, hash, key, now) {
                    Some(e) => match Integer::read(e.value()) {
                        Some(n) => {
                            expires = e.expires();
                            Some(n)
                        }
                        None => {
                            return Outcome::Failed(Error::NotAnInteger {
                                key: key.to_owned(),
                            });
                        }
                    },
                    None => None,
                };
                // A new counter is an i64; an existing one keeps its type.
                let start = current.or_else(|| Integer::new(IntType::I64, 0));
                let next = start.and_then(|n| n.checked_add(by)).and_then(|n| {
                    let returned = i64::try_from(n.value()).ok()?;
                    Some((n, returned))
                });
                let Some((next, returned)) = next else {
                    return Outcome::Failed(Error::Overflow {
                        key: key.to_owned(),
                        by,
                    });
                };
                let mut bytes = Vec::with_capacity(10);
                next.encode_into(&mut bytes);
                // A counter keeps its time to live, as in Redis.
                shard.put(sink, hasher, hash, key, &bytes, expires);
                self.changed(key, Some(&bytes));
                Outcome::Incremented(returned)
            }
            Op::Cas { key, expected, new } => {
                let current = shard.find_live(table, hash, key, now).map(|e| e.value());
                if current != expected.map(|b| &b[..]) {
                    return Outcome::Swapped(false);
                }
                match new {
                    Some(v) => {
                        shard.put(sink, hasher, hash, key, v, NEVER);
                        self.changed(key, Some(v));
                    }
                    None => {
                        if shard.remove(sink, hasher, hash, key).is_some() {
                            self.changed(key, None);
                        }
                    }
                }
                Outcome::Swapped(true)
            }
            Op::Ttl(key) => Outcome::Ttl(shard.find_live(table, hash, key, now).and_then(|e| {
                let expires = e.expires();
                (expires != NEVER).then(|| Duration::from_nanos(expires.saturating_sub(now.get())))
            })),
            Op::Expire { key, ttl_nanos } => {
                if shard.find_live(table, hash, key, now).is_none() {
                    return Outcome::Expiring(false);
                }
                if ttl_nanos == 0 {
                    // As Redis does: a deadline that has passed removes the key.
                    shard.remove(sink, hasher, hash, key);
                    self.changed(key, None);
                } else {
                    self.start_purger();
                    let expires = now.get().saturating_add(ttl_nanos).min(NEVER - 1);
                    shard.set_expires(sink, hash, key, expires);
                }
                Outcome::Expiring(true)
            }
            Op::Persist(key) => {
                let persists = shard
                    .find_live(table, hash, key, now)
                    .is_some_and(|e| e.expires() != NEVER);
                if persists {
                    shard.set_expires(sink, hash, key, NEVER);
                }
                Outcome::Persisted(persists)
            }
        }
    }

    #[inline]
    fn changed(&self, key: &str, value: Option<&[u8]>) {
        if self.watchers.any() {
            self.watchers.notify(key, value);
        }
    }

    /// Runs `f` on every live entry, all seen at one instant (every shard
    /// read-locked together).
    pub(crate) fn with_snapshot<R>(&self, f: impl FnOnce(Vec<(&str, &[u8])>) -> R) -> R {
        let guards = self.shards.read_all();
        let mut now = self.now();
        let entries = guards
            .iter()
            .flat_map(|g| {
                g.live(self.table(), &mut now)
                    .map(|e| (e.key(), e.value()))
                    .collect::<Vec<_>>()
            })
            .collect();
        f(entries)
    }

    /// Runs `f` on the live keys that start with `prefix`, seen at one instant.
    pub(crate) fn with_keys<R>(&self, prefix: &str, f: impl FnOnce(Vec<&str>) -> R) -> R {
        let guards = self.shards.read_all();
        let mut now = self.now();
        let keys = guards
            .iter()
            .flat_map(|g| {
                g.live(self.table(), &mut now)
                    .map(|e| e.key())
                    .filter(|k| k.starts_with(prefix))
                    .collect::<Vec<_>>()
            })
            .collect();
        f(keys)
    }

    /// Runs `f` on the live keys that match the glob `pattern`, seen at
    /// one instant.
    pub(crate) fn with_matching<R>(&self, pattern: &str, f: impl FnOnce(Vec<&str>) -> R) -> R {
        let glob = Glob::new(pattern);
        self.with_keys(glob::literal_prefix(pattern), |keys| {
            f(keys.into_iter().filter(|k| glob.matches(k)).collect())
        })
    }

    /// How many live keys there are, at one instant.
    pub(crate) fn len(&self) -> usize {
        let guards = self.shards.read_all();
        let mut now = self.now();
        guards
            .iter()
            .map(|g| g.live_len(self.table(), &mut now))
            .sum()
    }

    /// Removes every key at one instant; returns how many were live.
    pub(crate) fn clear(&self) -> usize {
        let mut guards = self.shards.write_all();
        let mut now = self.now();
        let cleared = guards
            .iter_mut()
            .map(|g| g.clear(self.table(), &mut now, |k| self.changed(k, None)))
            .sum();
        if let Some(mirror) = &self.mirror {
            mirror.table().clear();
        }
        drop(guards);
        give_back();
        cleared
    }

    /// How many entries the shards' tables have room for: what their
    /// memory is sized for.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.shards.read_all().iter().map(|g| g.capacity()).sum()
    }

    /// Removes expired keys now, one shard at a time; returns how many.
    pub(crate) fn purge_expired(&self) -> usize {
        (0..self.shards.count())
            .map(|i| {
                let mut now = self.now();
                let purged =
                    self.shards
                        .write(i)
                        .purge(self.table(), self.shards.hasher(), &mut now, |k| {
                            if let Some(mirror) = &self.mirror {
                                mirror.table().remove(k);
                            }
                            self.changed(k, None)
                        });
                give_back();
                purged
            })
            .sum()
    }

    /// Starts the background purge the first time a key gets a deadline.
    fn start_purger(&self) {
        if self.purger_started.load(Ordering::Relaxed)
            || self.purger_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        *sync::lock(&self.purger_stop) = Some(stop);
        let me = self.me.clone();
        let every = self.purge_every;
        let spawned = std::thread::Builder::new()
            .name("yuki-store-purge".into())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => match me.upgrade() {
                            Some(data) => {
                                let n = data.purge_expired();
                                if n > 0 {
                                    tracing::trace!(n, "purged expired keys");
                                }
                            }
                            None => return,
                        },
                        _ => return,
                    }
                }
            });
        if let Err(e) = spawned {
            // Reads still honour expiry; only the memory is reclaimed later.
            tracing::warn!(error = %e, "cannot start the background purge of expired keys");
            self.purger_started.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn clearing_or_deleting_most_keys_gives_the_tables_memory_back() {
        let data = Data::new(
            64,
            Arc::new(SystemClock::default()),
            Duration::from_secs(60),
            None,
        );
        let keys: Vec<String> = (0..400_000).map(|i| format!("key:{i}")).collect();
        let fill = || {
            for key in &keys {
                let value = serde_bytes::Bytes::new(key.as_bytes());
                let set = Op::Set {
                    key,
                    value,
                    ttl_nanos: None,
                };
                assert!(matches!(data.apply_one(&set), Outcome::Set));
            }
        };
        fill();
        let full = data.capacity();
        assert!(full >= keys.len(), "{full}");
        assert_eq!(data.clear(), keys.len());
        assert_eq!(data.capacity(), 0, "clear keeps no table");
        fill();
        // Deleting all but one key in twenty.
        for (i, key) in keys.iter().enumerate() {
            if i % 20 != 0 {
                assert!(matches!(
                    data.apply_one(&Op::Delete(key)),
                    Outcome::Deleted(true)
                ));
            }
        }
        assert_eq!(data.len(), keys.len() / 20);
        let left = data.capacity();
        assert!(
            left <= full / 4,
            "{left} slots of {full} kept for {} keys",
            data.len()
        );
        assert!(data.contains("key:0") && !data.contains("key:1"));
    }
}
