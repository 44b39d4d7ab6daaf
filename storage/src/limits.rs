//! The sizes a store accepts, checked before anything is sent.

use crate::error::{Error, Result};
use crate::protocol::{Op, Request};

/// The longest key, in bytes (16 KiB).
pub const MAX_KEY_LEN: usize = 16 << 10;

/// The default largest encoded value, in bytes (4 MiB), of
/// [`Config::max_value_len`](crate::Config::max_value_len): well inside one
/// frame of the default transport limit, so a single `set` always fits.
pub const MAX_VALUE_LEN: usize = 4 << 20;

/// Refuses the empty key and keys over [`MAX_KEY_LEN`].
#[inline]
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::KeyTooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

/// Refuses prefixes over [`MAX_KEY_LEN`] (the empty prefix means every key).
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > MAX_KEY_LEN {
        return Err(Error::KeyTooLong {
            len: prefix.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

/// Refuses encoded values over `max` (the store's
/// [`Config::max_value_len`](crate::Config::max_value_len)).
#[inline]
pub(crate) fn check_value(key: &str, value: &[u8], max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::ValueTooLarge {
            key: key.to_owned(),
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// Checks one operation's key and values.
pub(crate) fn check_op(op: &Op<'_>, max_value: usize) -> Result<()> {
    check_key(op.key())?;
    match op {
        Op::Set { key, value, .. } => check_value(key, value, max_value),
        Op::Cas { key, expected, new } => {
            for v in [expected, new].into_iter().flatten() {
                check_value(key, v, max_value)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks every operation of a batch: the first refused one fails it whole.
pub(crate) fn check_batch(ops: &[Op<'_>], max_value: usize) -> Result<()> {
    match ops
        .iter()
        .enumerate()
        .find_map(|(i, op)| check_op(op, max_value).err().map(|e| (i, e)))
    {
        Some((index, e)) => Err(Error::InvalidBatch {
            index,
            source: Box::new(e),
        }),
        None => Ok(()),
    }
}

/// Checks what a request carries, as main does for every frame.
pub(crate) fn check_request(request: &Request<'_>, max_value: usize) -> Result<()> {
    match request {
        Request::Op(op) => check_op(op, max_value),
        Request::Batch(ops) => check_batch(ops, max_value),
        Request::Keys(prefix) | Request::Watch { prefix, .. } => check_prefix(prefix),
        Request::KeysMatching(pattern) => check_prefix(pattern),
        Request::GetAll
        | Request::Len
        | Request::Clear
        | Request::Purge
        | Request::Unwatch { .. } => Ok(()),
    }
}
