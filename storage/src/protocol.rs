//! The frames a child and main exchange: requests, replies and pushed changes.
//!
//! Keys and values are borrowed on both sides (`&str`, `serde_bytes`), so
//! main serves a request without copying it and a reply is decoded in place.

use serde::{Deserialize, Serialize};
use serde_bytes::Bytes;

use crate::error::Error;

/// The service main serves the store under.
pub(crate) const SERVICE: &str = "yuki.store";

/// The push stream that carries changes to watchers in children.
pub(crate) const WATCH_STREAM: &str = "yuki.store.watch";

/// One operation on one key: what a batch is made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Op<'a> {
    Get(&'a str),
    Contains(&'a str),
    Set {
        key: &'a str,
        #[serde(borrow)]
        value: &'a Bytes,
        /// Time to live in nanoseconds; `None` keeps the key forever.
        ttl_nanos: Option<u64>,
    },
    Delete(&'a str),
    Incr {
        key: &'a str,
        by: i64,
    },
    Cas {
        key: &'a str,
        #[serde(borrow)]
        expected: Option<&'a Bytes>,
        #[serde(borrow)]
        new: Option<&'a Bytes>,
    },
    /// The time the key has left.
    Ttl(&'a str),
    /// Gives the key a time to live; zero removes it now.
    Expire {
        key: &'a str,
        ttl_nanos: u64,
    },
    /// Takes the key's time to live away.
    Persist(&'a str),
}

/// What kind of operation an [`Op`] is, without its key or values: what
/// is needed to read its reply once the request is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Get,
    Contains,
    Set,
    Delete,
    Incr,
    Cas,
    Ttl,
    Expire,
    Persist,
}

impl OpKind {
    /// The operation's name in the API.
    pub(crate) fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Contains => "contains",
            OpKind::Set => "set",
            OpKind::Delete => "delete",
            OpKind::Incr => "incr",
            OpKind::Cas => "compare_and_swap",
            OpKind::Ttl => "ttl",
            OpKind::Expire => "expire",
            OpKind::Persist => "persist",
        }
    }
}

impl<'a> Op<'a> {
    pub(crate) fn key(&self) -> &'a str {
        match self {
            Op::Get(k) | Op::Contains(k) | Op::Delete(k) | Op::Ttl(k) | Op::Persist(k) => k,
            Op::Set { key, .. }
            | Op::Incr { key, .. }
            | Op::Cas { key, .. }
            | Op::Expire { key, .. } => key,
        }
    }

    pub(crate) fn kind(&self) -> OpKind {
        match self {
            Op::Get(_) => OpKind::Get,
            Op::Contains(_) => OpKind::Contains,
            Op::Set { .. } => OpKind::Set,
            Op::Delete(_) => OpKind::Delete,
            Op::Incr { .. } => OpKind::Incr,
            Op::Cas { .. } => OpKind::Cas,
            Op::Ttl(_) => OpKind::Ttl,
            Op::Expire { .. } => OpKind::Expire,
            Op::Persist(_) => OpKind::Persist,
        }
    }
}

/// A request to main's store service.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request<'a> {
    #[serde(borrow)]
    Op(Op<'a>),
    #[serde(borrow)]
    Batch(Vec<Op<'a>>),
    GetAll,
    Keys(&'a str),
    Len,
    Clear,
    Purge,
    Watch {
        id: u64,
        prefix: &'a str,
    },
    Unwatch {
        id: u64,
    },
    /// The keys that match a glob pattern.
    KeysMatching(&'a str),
}

impl Request<'_> {
    /// The request in words, for a time-out's message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Request::Op(op) => format!("store {} of {:?}", op.kind().name(), op.key()),
            Request::Batch(ops) => format!("store batch of {} operations", ops.len()),
            Request::GetAll => "store get_all".into(),
            Request::Keys(prefix) => format!("store keys of prefix {prefix:?}"),
            Request::Len => "store len".into(),
            Request::Clear => "store clear".into(),
            Request::Purge => "store purge_expired".into(),
            Request::Watch { prefix, .. } => format!("store watch of prefix {prefix:?}"),
            Request::Unwatch { .. } => "store unwatch".into(),
            Request::KeysMatching(pattern) => format!("store keys matching {pattern:?}"),
        }
    }
}

/// Main's answer to one request (or to one operation of a batch).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply<'a> {
    Done,
    #[serde(borrow)]
    Value(Option<&'a Bytes>),
    Bool(bool),
    Int(i64),
    Count(u64),
    #[serde(borrow)]
    Entries(Vec<(&'a str, &'a Bytes)>),
    Keys(Vec<&'a str>),
    #[serde(borrow)]
    Batch(Vec<Reply<'a>>),
    Failed(Failure),
    /// A key's time left in nanoseconds; `None` when it has none or is missing.
    Ttl(Option<u64>),
}

/// An error main reports inside a reply, rebuilt as an [`Error`] in the child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Failure {
    NotAnInteger { key: String },
    Overflow { key: String, by: i64 },
    ReplyTooLarge { size: u64, max: u64 },
    EmptyKey,
    KeyTooLong { len: u64, max: u64 },
    ValueTooLarge { key: String, len: u64, max: u64 },
    Other(String),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::NotAnInteger { key } => Error::NotAnInteger { key },
            Failure::Overflow { key, by } => Error::Overflow { key, by },
            Failure::ReplyTooLarge { size, max } => Error::ReplyTooLarge {
                size: size as usize,
                max: max as usize,
            },
            Failure::EmptyKey => Error::EmptyKey,
            Failure::KeyTooLong { len, max } => Error::KeyTooLong {
                len: len as usize,
                max: max as usize,
            },
            Failure::ValueTooLarge { key, len, max } => Error::ValueTooLarge {
                key,
                len: len as usize,
                max: max as usize,
            },
            Failure::Other(why) => Error::Protocol(why),
        }
    }
}

impl Failure {
    /// The failure to send for `e`, for the errors main itself detects.
    pub(crate) fn from_error(e: &Error) -> Failure {
        match e {
            Error::NotAnInteger { key } => Failure::NotAnInteger { key: key.clone() },
            Error::Overflow { key, by } => Failure::Overflow {
                key: key.clone(),
                by: *by,
            },
            Error::EmptyKey => Failure::EmptyKey,
            Error::KeyTooLong { len, max } => Failure::KeyTooLong {
                len: *len as u64,
                max: *max as u64,
            },
            Error::ValueTooLarge { key, len, max } => Failure::ValueTooLarge {
                key: key.clone(),
                len: *len as u64,
                max: *max as u64,
            },
            other => Failure::Other(other.to_string()),
        }
    }
}

/// A frame pushed to a child on [`WATCH_STREAM`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Pushed<'a> {
    Change {
        id: u64,
        key: &'a str,
        #[serde(borrow)]
        value: Option<&'a Bytes>,
    },
    /// Main could not deliver a change to this watcher; it is closed.
    Lagged { id: u64 },
}
