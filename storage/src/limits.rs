//! The sizes a store accepts, checked before anything is sent.

use crate::error::{Error, Result};

/// The longest key, in bytes (16 KiB).
pub const MAX_KEY_LEN: usize = 16 << 10;

/// The largest encoded value, in bytes (4 MiB): well inside one frame of the
/// default transport limit, so a single `set` always fits.
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

/// Refuses encoded values over [`MAX_VALUE_LEN`].
#[inline]
pub(crate) fn check_value(key: &str, value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::ValueTooLarge {
            key: key.to_owned(),
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}
