//! Batches: many operations sent as one frame and applied atomically in main.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::Bytes;

use crate::error::{Error, Result};
use crate::limits::check_key;
use crate::protocol::{Failure, Op, OpKind, Reply};
use crate::value;

/// Operations to apply together, in order, with nothing else in between.
///
/// Build it, then run it with [`Store::batch`](crate::Store::batch): in a
/// child the whole batch is one frame and one round trip. Main applies every
/// operation in order while it holds the locks of every key the batch
/// touches, so no other process ever sees it half applied. Each operation
/// gets its own [`Outcome`]; an operation that fails (an `incr` of a text)
/// fails alone, as in a Redis `MULTI`/`EXEC`. A key or value the batch
/// refuses up front fails the whole batch before anything is sent.
///
/// ```
/// use yuki_storage::{Batch, Outcome, Store};
///
/// let store = Store::local();
/// let mut batch = Batch::new();
/// batch.set("a", &1i64).incr("a", 2).get("a").delete("b");
/// let out = store.batch(&batch).unwrap();
/// assert_eq!(out[1], Outcome::Incremented(3));
/// assert_eq!(out[2].value::<i64>().unwrap(), Some(3));
/// assert_eq!(out[3], Outcome::Deleted(false));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Batch {
    ops: Vec<OwnedOp>,
    invalid: Option<(usize, Error)>,
}

#[derive(Debug, Clone)]
enum OwnedOp {
    Get(String),
    Contains(String),
    Set {
        key: String,
        value: Vec<u8>,
        ttl_nanos: Option<u64>,
    },
    Delete(String),
    Incr {
        key: String,
        by: i64,
    },
    Cas {
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    Ttl(String),
    Expire {
        key: String,
        ttl_nanos: u64,
    },
    Persist(String),
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// How many operations it holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn push(&mut self, key: &str, make: impl FnOnce() -> Result<OwnedOp>) -> &mut Batch {
        if self.invalid.is_none() {
            match check_key(key).and_then(|()| make()) {
                Ok(op) => self.ops.push(op),
                Err(e) => self.invalid = Some((self.ops.len(), e)),
            }
        } else {
            // Keep positions meaningful in the error: count, do not store.
            self.ops.push(OwnedOp::Get(String::new()));
        }
        self
    }

    /// Sets `key` to `value` (see [`Store::set`](crate::Store::set)).
    pub fn set<V: Serialize + ?Sized>(&mut self, key: &str, value: &V) -> &mut Batch {
        self.push(key, || {
            Ok(OwnedOp::Set {
                key: key.to_owned(),
                // The store it runs on checks the size against its limit.
                value: value::encode(key, value, usize::MAX)?,
                ttl_nanos: None,
            })
        })
    }

    /// Sets `key` to `value` for `ttl` (see [`Store::set_with_ttl`](crate::Store::set_with_ttl)).
    pub fn set_with_ttl<V: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &V,
        ttl: Duration,
    ) -> &mut Batch {
        self.push(key, || {
            Ok(OwnedOp::Set {
                key: key.to_owned(),
                // The store it runs on checks the size against its limit.
                value: value::encode(key, value, usize::MAX)?,
                ttl_nanos: Some(ttl_nanos(ttl)),
            })
        })
    }

    /// Reads `key`: [`Outcome::Got`].
    pub fn get(&mut self, key: &str) -> &mut Batch {
        self.push(key, || Ok(OwnedOp::Get(key.to_owned())))
    }

    /// Whether `key` exists: [`Outcome::Contains`].
    pub fn contains(&mut self, key: &str) -> &mut Batch {
        self.push(key, || Ok(OwnedOp::Contains(key.to_owned())))
    }

    /// Deletes `key`: [`Outcome::Deleted`].
    pub fn delete(&mut self, key: &str) -> &mut Batch {
        self.push(key, || Ok(OwnedOp::Delete(key.to_owned())))
    }

    /// Adds `by` to the counter `key`: [`Outcome::Incremented`].
    pub fn incr(&mut self, key: &str, by: i64) -> &mut Batch {
        self.push(key, || {
            Ok(OwnedOp::Incr {
                key: key.to_owned(),
                by,
            })
        })
    }

    /// Compare-and-swap (see [`Store::compare_and_swap`](crate::Store::compare_and_swap)):
    /// [`Outcome::Swapped`].
    pub fn compare_and_swap<V: Serialize + ?Sized>(
        &mut self,
        key: &str,
        expected: Option<&V>,
        new: Option<&V>,
    ) -> &mut Batch {
        self.push(key, || {
            Ok(OwnedOp::Cas {
                key: key.to_owned(),
                expected: expected
                    .map(|v| value::encode(key, v, usize::MAX))
                    .transpose()?,
                new: new.map(|v| value::encode(key, v, usize::MAX)).transpose()?,
            })
        })
    }

    /// The time `key` has left (see [`Store::ttl`](crate::Store::ttl)):
    /// [`Outcome::Ttl`].
    pub fn ttl(&mut self, key: &str) -> &mut Batch {
        self.push(key, || Ok(OwnedOp::Ttl(key.to_owned())))
    }

    /// Gives `key` a time to live (see [`Store::expire`](crate::Store::expire)):
    /// [`Outcome::Expiring`].
    pub fn expire(&mut self, key: &str, ttl: Duration) -> &mut Batch {
        self.push(key, || {
            Ok(OwnedOp::Expire {
                key: key.to_owned(),
                ttl_nanos: ttl_nanos(ttl),
            })
        })
    }

    /// Takes `key`'s time to live away (see [`Store::persist`](crate::Store::persist)):
    /// [`Outcome::Persisted`].
    pub fn persist(&mut self, key: &str) -> &mut Batch {
        self.push(key, || Ok(OwnedOp::Persist(key.to_owned())))
    }

    /// The operations as sent, or the first one refused.
    pub(crate) fn ops(&self) -> Result<Vec<Op<'_>>> {
        if let Some((index, e)) = &self.invalid {
            return Err(Error::InvalidBatch {
                index: *index,
                source: Box::new(e.clone()),
            });
        }
        Ok(self
            .ops
            .iter()
            .map(|op| match op {
                OwnedOp::Get(k) => Op::Get(k),
                OwnedOp::Contains(k) => Op::Contains(k),
                OwnedOp::Set {
                    key,
                    value,
                    ttl_nanos,
                } => Op::Set {
                    key,
                    value: Bytes::new(value),
                    ttl_nanos: *ttl_nanos,
                },
                OwnedOp::Delete(k) => Op::Delete(k),
                OwnedOp::Incr { key, by } => Op::Incr { key, by: *by },
                OwnedOp::Cas { key, expected, new } => Op::Cas {
                    key,
                    expected: expected.as_deref().map(Bytes::new),
                    new: new.as_deref().map(Bytes::new),
                },
                OwnedOp::Ttl(k) => Op::Ttl(k),
                OwnedOp::Expire { key, ttl_nanos } => Op::Expire {
                    key,
                    ttl_nanos: *ttl_nanos,
                },
                OwnedOp::Persist(k) => Op::Persist(k),
            })
            .collect())
    }
}

/// A time to live in nanoseconds, the longest ones held to `u64::MAX`.
pub(crate) fn ttl_nanos(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX)
}

/// What one operation of a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A `set` was applied.
    Set,
    /// A `get`: the encoded value, `None` if the key did not exist.
    Got {
        /// The key read.
        key: String,
        /// Its encoded value.
        value: Option<Vec<u8>>,
    },
    /// A `contains`: whether the key existed.
    Contains(bool),
    /// A `delete`: whether the key existed.
    Deleted(bool),
    /// An `incr`: the new value.
    Incremented(i64),
    /// A `compare_and_swap`: whether it swapped.
    Swapped(bool),
    /// A `ttl`: the time the key has left, `None` when it has no time to
    /// live or does not exist.
    Ttl(Option<Duration>),
    /// An `expire`: whether the key existed (and now expires).
    Expiring(bool),
    /// A `persist`: whether the key had a time to live, now taken away.
    Persisted(bool),
    /// The operation failed alone; the others were applied.
    Failed(Error),
}

impl Outcome {
    /// Decodes the value of a [`Outcome::Got`] as a `V`; a failed operation
    /// gives its error and any other outcome `Ok(None)`.
    pub fn value<V: DeserializeOwned>(&self) -> Result<Option<V>> {
        match self {
            Outcome::Got {
                key,
                value: Some(bytes),
            } => value::decode(key, bytes).map(Some),
            Outcome::Failed(e) => Err(e.clone()),
            _ => Ok(None),
        }
    }

    /// This outcome as main sends it.
    #[inline]
    pub(crate) fn to_reply(&self) -> Reply<'_> {
        match self {
            Outcome::Set => Reply::Done,
            Outcome::Got { value, .. } => Reply::Value(value.as_deref().map(Bytes::new)),
            Outcome::Contains(b)
            | Outcome::Deleted(b)
            | Outcome::Swapped(b)
            | Outcome::Expiring(b)
            | Outcome::Persisted(b) => Reply::Bool(*b),
            Outcome::Incremented(n) => Reply::Int(*n),
            Outcome::Ttl(left) => Reply::Ttl(left.map(ttl_nanos)),
            Outcome::Failed(e) => Reply::Failed(Failure::from_error(e)),
        }
    }

    /// Rebuilds the outcome of an operation of `kind` on `key` from its
    /// reply (the key is kept only by a `get`).
    pub(crate) fn from_reply(kind: OpKind, key: &str, reply: Reply<'_>) -> Result<Outcome> {
        Ok(match (kind, reply) {
            (_, Reply::Failed(f)) => Outcome::Failed(f.into()),
            (OpKind::Set, Reply::Done) => Outcome::Set,
            (OpKind::Get, Reply::Value(v)) => Outcome::Got {
                key: key.to_owned(),
                value: v.map(|b| b.to_vec()),
            },
            (OpKind::Contains, Reply::Bool(b)) => Outcome::Contains(b),
            (OpKind::Delete, Reply::Bool(b)) => Outcome::Deleted(b),
            (OpKind::Cas, Reply::Bool(b)) => Outcome::Swapped(b),
            (OpKind::Expire, Reply::Bool(b)) => Outcome::Expiring(b),
            (OpKind::Persist, Reply::Bool(b)) => Outcome::Persisted(b),
            (OpKind::Incr, Reply::Int(n)) => Outcome::Incremented(n),
            (OpKind::Ttl, Reply::Ttl(t)) => Outcome::Ttl(t.map(Duration::from_nanos)),
            (kind, reply) => {
                return Err(Error::Protocol(format!(
                    "reply {reply:?} does not answer a {}",
                    kind.name()
                )));
            }
        })
    }
}

/// What reading a batch's reply needs of its operations, owned, so an
/// async caller can read it after the batch is gone.
pub(crate) struct Shapes(Vec<(OpKind, String)>);

impl Shapes {
    /// Only a `get`, which names its key in its outcome, keeps a copy of it.
    pub(crate) fn owned(ops: &[Op<'_>]) -> Shapes {
        Shapes(
            ops.iter()
                .map(|op| {
                    let kind = op.kind();
                    let key = if kind == OpKind::Get {
                        op.key().to_owned()
                    } else {
                        String::new()
                    };
                    (kind, key)
                })
                .collect(),
        )
    }

    /// One outcome per operation, from main's reply to the batch.
    pub(crate) fn read(&self, reply: Reply<'_>) -> Result<Vec<Outcome>> {
        read_outcomes(
            self.0.iter().map(|(kind, key)| (*kind, key.as_str())),
            reply,
        )
    }
}

impl Batch {
    /// One outcome per operation, from main's reply to this batch: a
    /// blocking batch reads it while the batch is still borrowed, with the
    /// batch's own keys.
    pub(crate) fn read(&self, reply: Reply<'_>) -> Result<Vec<Outcome>> {
        read_outcomes(self.ops.iter().map(|op| (op.kind(), op.key())), reply)
    }
}

impl OwnedOp {
    fn kind(&self) -> OpKind {
        match self {
            OwnedOp::Get(_) => OpKind::Get,
            OwnedOp::Contains(_) => OpKind::Contains,
            OwnedOp::Set { .. } => OpKind::Set,
            OwnedOp::Delete(_) => OpKind::Delete,
            OwnedOp::Incr { .. } => OpKind::Incr,
            OwnedOp::Cas { .. } => OpKind::Cas,
            OwnedOp::Ttl(_) => OpKind::Ttl,
            OwnedOp::Expire { .. } => OpKind::Expire,
            OwnedOp::Persist(_) => OpKind::Persist,
        }
    }

    fn key(&self) -> &str {
        match self {
            OwnedOp::Get(k)
            | OwnedOp::Contains(k)
            | OwnedOp::Delete(k)
            | OwnedOp::Ttl(k)
            | OwnedOp::Persist(k) => k,
            OwnedOp::Set { key, .. }
            | OwnedOp::Incr { key, .. }
            | OwnedOp::Cas { key, .. }
            | OwnedOp::Expire { key, .. } => key,
        }
    }
}

/// One outcome per operation from main's reply to a batch whose operations
/// are, in order, `shapes` (each one's kind and key).
fn read_outcomes<'k>(
    shapes: impl ExactSizeIterator<Item = (OpKind, &'k str)>,
    reply: Reply<'_>,
) -> Result<Vec<Outcome>> {
    match reply {
        Reply::Batch(replies) if replies.len() == shapes.len() => shapes
            .zip(replies)
            .map(|((kind, key), r)| Outcome::from_reply(kind, key, r))
            .collect(),
        other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
    }
}
