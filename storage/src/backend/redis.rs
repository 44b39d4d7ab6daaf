//! The store kept in a Redis server, for processes on several machines.
//!
//! Every key lives under a namespace (`yuki:` by default) and nothing outside
//! it is touched: `len`, `keys`, `get_all` and `clear` walk the namespace with
//! `SCAN` (never `KEYS`), so unlike the other backends they do not see one
//! instant of a store that others write meanwhile. Values are the same
//! marked bytes as in the local store, so a value written by one backend
//! reads the same from another.
//!
//! Every operation and every batch runs as one Lua script (`apply.lua`),
//! atomically: `incr` reads the counter's integer type from its mark
//! (`yuki_channel::codec::mark`), adds within that type's range and writes
//! it back as the same type, in the script (not `INCRBY`, which works on
//! decimal text), exact over all 64 bits and with the same
//! `NotAnInteger`/`Overflow` errors as the other backends;
//! `compare_and_swap` compares encoded bytes; a time-to-live is `PX`, and
//! `ttl`, `expire` and `persist` are `PTTL`, `PEXPIRE` (a zero `expire`
//! deletes, as `EXPIRE` does) and `PERSIST`. `keys_matching` scans the
//! pattern's plain prefix and filters with the matcher every backend uses.
//!
//! `watch` uses a companion channel (`<namespace>\0watch`) on which the same
//! script publishes every change it makes. Redis expiring a key publishes
//! nothing, and when the connection drops every watch ends with
//! [`Error::Redis`]: changes made while it was down are unknown, so watch
//! again (and re-read) after a reconnect.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use yuki_channel::sync;

use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind, Value};
use serde_bytes::Bytes;
use yuki_channel::codec::{self, mark};
use yuki_redis_link as link;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::glob::{self, Glob};
use crate::protocol::{Failure, Op, Reply, Request};
use crate::watch::{Change, Watch, WatchQueue};

/// Keys `SCAN` asks for per round and `clear` deletes per script.
const CHUNK: usize = 512;

/// The namespace of [`Store::redis`](crate::Store::redis).
pub const DEFAULT_NAMESPACE: &str = "yuki:";

/// The shared runtime, for requests awaited from any executor.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    link::runtime().map_err(|e| Error::Protocol(e.to_string()))
}

/// A request's task that ended before it finished.
fn cancelled(address: &str, e: tokio::task::JoinError) -> Error {
    link::LinkError::new(address, link::Failure::Cancelled(e.to_string())).into()
}

/// What one request asks Redis, owned so it can travel to the runtime.
enum Plan {
    Apply {
        keys: Vec<Vec<u8>>,
        args: Vec<Vec<u8>>,
        /// Per operation: its key and, for `incr`, by how much.
        shapes: Vec<(String, i64)>,
        batch: bool,
    },
    GetAll,
    Keys(String),
    KeysMatching(String),
    Len,
    Clear,
    Purge,
}

/// A reply built from what Redis answered, viewed as the protocol's
/// [`Reply`] so the store parses it as it parses main's.
#[derive(Debug)]
enum Owned {
    Done,
    Value(Option<Vec<u8>>),
    Bool(bool),
    Int(i64),
    Count(u64),
    Entries(Vec<(String, Vec<u8>)>),
    Keys(Vec<String>),
    Batch(Vec<Owned>),
    Failed(Failure),
    Ttl(Option<u64>),
}

impl Owned {
    fn view(&self) -> Reply<'_> {
        match self {
            Owned::Done => Reply::Done,
            Owned::Value(v) => Reply::Value(v.as_deref().map(Bytes::new)),
            Owned::Bool(b) => Reply::Bool(*b),
            Owned::Int(n) => Reply::Int(*n),
            Owned::Count(n) => Reply::Count(*n),
            Owned::Entries(e) => {
                Reply::Entries(e.iter().map(|(k, v)| (k.as_str(), Bytes::new(v))).collect())
            }
            Owned::Keys(k) => Reply::Keys(k.iter().map(String::as_str).collect()),
            Owned::Batch(b) => Reply::Batch(b.iter().map(Owned::view).collect()),
            Owned::Failed(f) => Reply::Failed(f.clone()),
            Owned::Ttl(t) => Reply::Ttl(*t),
        }
    }
}

/// Hands `owned` to `parse` as a reply; a failure becomes its error.
fn finish<R>(owned: Owned, parse: impl FnOnce(Reply<'_>) -> Result<R>) -> Result<R> {
    match owned {
        Owned::Failed(f) => Err(f.into()),
        other => parse(other.view()),
    }
}

/// The watches of one store, fed by the companion channel.
#[derive(Default)]
struct Watches {
    list: Mutex<HashMap<u64, (String, Arc<WatchQueue>)>>,
    next: AtomicU64,
    subscribed: AtomicBool,
}

impl Watches {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (String, Arc<WatchQueue>)>> {
        sync::lock(&self.list)
    }
}

struct Pusher {
    watches: Weak<Watches>,
    address: String,
}

impl redis::aio::AsyncPushSender for Pusher {
    fn send(&self, info: PushInfo) -> std::result::Result<(), redis::aio::SendError> {
        let Some(watches) = self.watches.upgrade() else {
            return Err(redis::aio::SendError);
        };
        match info.kind {
            PushKind::Disconnection => {
                for (_, (_, inbox)) in watches.lock().drain() {
                    inbox.close(Error::Redis {
                        address: self.address.clone(),
                        reason:
                            "the connection was lost, so changes may have been missed; watch again"
                                .into(),
                    });
                }
            }
            PushKind::Message => {
                if let [_, Value::BulkString(payload)] = &info.data[..] {
                    if let Some(change) = parse_change(payload) {
                        let mut list = watches.lock();
                        list.retain(|_, (prefix, inbox)| {
                            !change.key.starts_with(prefix.as_str())
                                || inbox.deliver(change.clone())
                        });
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Reads what `apply.lua` publishes: `s` or `x`, the key's length (4 bytes,
/// big-endian), the key, the new value.
fn parse_change(payload: &[u8]) -> Option<Change> {
    let (&kind, rest) = payload.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(rest.get(4..4 + len)?).ok()?.to_owned();
    let value = rest.get(4 + len..)?;
    Some(Change {
        key,
        value: (kind == b's').then(|| value.to_vec()),
    })
}

/// A store's connection to Redis.
pub(crate) struct Redis {
    address: String,
    namespace: String,
    channel: Vec<u8>,
    conn: ConnectionManager,
    script: Arc<redis::Script>,
    watches: Arc<Watches>,
    watch_capacity: usize,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn fail(address: &str, e: redis::RedisError) -> Error {
    Error::Redis {
        address: address.to_owned(),
        reason: e.to_string(),
    }
}

impl Redis {
    /// Connects to the Redis server at `url`, keeping keys under `namespace`.
    pub(crate) fn connect(url: &str, namespace: &str, watch_capacity: usize) -> Result<Redis> {
        let watches = Arc::new(Watches::default());
        let link::Link { address, conn } = link::connect(url, |address| Pusher {
            watches: Arc::downgrade(&watches),
            address: address.to_owned(),
        })?;
        let mut channel = namespace.as_bytes().to_vec();
        channel.extend_from_slice(b"\0watch");
        Ok(Redis {
            address,
            namespace: namespace.to_owned(),
            channel,
            conn,
            script: Arc::new(redis::Script::new(include_str!("redis/apply.lua"))),
            watches,
            watch_capacity,
        })
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    fn key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.namespace.len() + key.len());
        k.extend_from_slice(self.namespace.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    fn plan_ops(&self, ops: &[Op<'_>], batch: bool) -> Result<Plan> {
        let mut keys = Vec::with_capacity(ops.len());
        let mut args = Vec::with_capacity(ops.len() * 5);
        let mut shapes = Vec::with_capacity(ops.len());
        for op in ops {
            keys.push(self.key(op.key()));
            let mut by = 0;
            let five: [Vec<u8>; 5] = match op {
                Op::Get(_) => [b"g".to_vec(), vec![], vec![], vec![], vec![]],
                Op::Contains(_) => [b"c".to_vec(), vec![], vec![], vec![], vec![]],
                Op::Delete(_) => [b"x".to_vec(), vec![], vec![], vec![], vec![]],
                Op::Set {
                    value, ttl_nanos, ..
                } => {
                    // PX counts milliseconds: round up so a short TTL still lives.
                    let ttl = ttl_nanos
                        .map(|n| n.div_ceil(1_000_000).max(1).to_string().into_bytes())
                        .unwrap_or_default();
                    [b"s".to_vec(), value.to_vec(), ttl, vec![], vec![]]
                }
                Op::Incr { by: n, .. } => {
                    by = *n;
                    let encoded = codec::encode(n).map_err(|e| Error::Protocol(e.to_string()))?;
                    [b"i".to_vec(), encoded, vec![], vec![], vec![]]
                }
                Op::Cas { expected, new, .. } => {
                    let flag = |v: &Option<&Bytes>| if v.is_some() { b"1" } else { b"0" }.to_vec();
                    [
                        b"w".to_vec(),
                        flag(expected),
                        expected.map(|b| b.to_vec()).unwrap_or_default(),
                        flag(new),
                        new.map(|b| b.to_vec()).unwrap_or_default(),
                    ]
                }
                Op::Ttl(_) => [b"t".to_vec(), vec![], vec![], vec![], vec![]],
                Op::Expire { ttl_nanos, .. } => {
                    // Zero removes the key; anything shorter than PX's
                    // millisecond is rounded up, as in `set_with_ttl`.
                    let ms = if *ttl_nanos == 0 {
                        0
                    } else {
                        ttl_nanos.div_ceil(1_000_000).max(1)
                    };
                    [
                        b"e".to_vec(),
                        ms.to_string().into_bytes(),
                        vec![],
                        vec![],
                        vec![],
                    ]
                }
                Op::Persist(_) => [b"p".to_vec(), vec![], vec![], vec![], vec![]],
            };
            args.extend(five);
            shapes.push((op.key().to_owned(), by));
        }
        Ok(Plan::Apply {
            keys,
            args,
            shapes,
            batch,
        })
    }

    fn plan(&self, request: &Request<'_>) -> Result<Plan> {
        Ok(match request {
            Request::Op(op) => self.plan_ops(std::slice::from_ref(op), false)?,
            Request::Batch(ops) => self.plan_ops(ops, true)?,
            Request::GetAll => Plan::GetAll,
            Request::Keys(prefix) => Plan::Keys((*prefix).to_owned()),
            Request::KeysMatching(pattern) => Plan::KeysMatching((*pattern).to_owned()),
            Request::Len => Plan::Len,
            Request::Clear => Plan::Clear,
            Request::Purge => Plan::Purge,
            Request::Watch { .. } | Request::Unwatch { .. } => {
                return Err(Error::Protocol(
                    "watch requests are not sent to Redis".into(),
                ));
            }
        })
    }

    /// Runs `request` in Redis and hands the reply to `parse`.
    fn request<R>(
        &self,
        request: &Request<'_>,
        parse: impl FnOnce(Reply<'_>) -> Result<R>,
    ) -> Result<R> {
        let run = self.run(self.plan(request)?);
        finish(link::block(&self.address, run)??, parse)
    }

    /// The async form of [`Redis::request`].
    fn request_async<R, P>(
        &self,
        request: &Request<'_>,
        parse: P,
    ) -> impl Future<Output = Result<R>> + Send + 'static + use<R, P>
    where
        R: 'static,
        P: FnOnce(Reply<'_>) -> Result<R> + Send + 'static,
    {
        let address = self.address.clone();
        let spawned = self
            .plan(request)
            .and_then(|plan| Ok(runtime()?.spawn(self.run(plan))));
        async move {
            let owned = spawned?.await.map_err(|e| cancelled(&address, e))??;
            finish(owned, parse)
        }
    }

    fn run(&self, plan: Plan) -> impl Future<Output = Result<Owned>> + Send + 'static {
        let mut conn = self.conn.clone();
        let address = self.address.clone();
        let script = self.script.clone();
        let namespace = self.namespace.clone();
        let channel = self.channel.clone();
        async move {
            let ctx = Ctx {
                address: &address,
                script: &script,
                namespace: &namespace,
                channel: &channel,
            };
            match plan {
                Plan::Apply {
                    keys,
                    args,
                    shapes,
                    batch,
                } => {
                    let mut replies = ctx.apply(&mut conn, &keys, &args, &shapes).await?;
                    if batch {
                        Ok(Owned::Batch(replies))
                    } else {
                        replies
                            .pop()
                            .ok_or_else(|| Error::Protocol("Redis gave no result".into()))
                    }
                }
                Plan::Keys(prefix) => {
                    let mut keys = ctx.scan(&mut conn, &prefix).await?;
                    keys.sort_unstable();
                    Ok(Owned::Keys(keys))
                }
                Plan::KeysMatching(pattern) => {
                    // SCAN narrows to the plain prefix; the one matcher of
                    // every backend decides, so all select the same keys.
                    let glob = Glob::new(&pattern);
                    let mut keys = ctx.scan(&mut conn, glob::literal_prefix(&pattern)).await?;
                    keys.retain(|k| glob.matches(k));
                    keys.sort_unstable();
                    Ok(Owned::Keys(keys))
                }
                Plan::Len => Ok(Owned::Count(ctx.scan(&mut conn, "").await?.len() as u64)),
                Plan::GetAll => {
                    let mut entries = BTreeMap::new();
                    let keys = ctx.scan(&mut conn, "").await?;
                    for chunk in keys.chunks(CHUNK) {
                        let full: Vec<Vec<u8>> = chunk
                            .iter()
                            .map(|k| [namespace.as_bytes(), k.as_bytes()].concat())
                            .collect();
                        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                            .arg(&full)
                            .query_async(&mut conn)
                            .await
                            .map_err(|e| fail(&address, e))?;
                        for (k, v) in chunk.iter().zip(values) {
                            if let Some(v) = v {
                                entries.insert(k.clone(), v);
                            }
                        }
                    }
                    Ok(Owned::Entries(entries.into_iter().collect()))
                }
                Plan::Clear => {
                    let keys = ctx.scan(&mut conn, "").await?;
                    let mut removed = 0;
                    for chunk in keys.chunks(CHUNK) {
                        let full: Vec<Vec<u8>> = chunk
                            .iter()
                            .map(|k| [namespace.as_bytes(), k.as_bytes()].concat())
                            .collect();
                        let args: Vec<Vec<u8>> = chunk
                            .iter()
                            .flat_map(|_| [b"x".to_vec(), vec![], vec![], vec![], vec![]])
                            .collect();
                        let shapes: Vec<(String, i64)> =
                            chunk.iter().map(|k| (k.clone(), 0)).collect();
                        for reply in ctx.apply(&mut conn, &full, &args, &shapes).await? {
                            if matches!(reply, Owned::Bool(true)) {
                                removed += 1;
                            }
                        }
                    }
                    Ok(Owned::Count(removed))
                }
                // Redis removes expired keys itself.
                Plan::Purge => Ok(Owned::Count(0)),
            }
        }
    }

    /// Opens a watch on the keys under `prefix`.
    fn start_watch(&self, prefix: &str) -> Result<Watch> {
        let (id, watch) = self.open_watch(prefix);
        match self.subscribed() {
            None => Ok(watch),
            Some(subscribe) => {
                match link::block(&self.address, subscribe).unwrap_or_else(|e| Err(e.into())) {
                    Ok(()) => Ok(watch),
                    Err(e) => Err(self.drop_watch(id, e)),
                }
            }
        }
    }

    /// The async form of [`Redis::start_watch`].
    async fn start_watch_async(&self, prefix: &str) -> Result<Watch> {
        let (id, watch) = self.open_watch(prefix);
        let Some(subscribe) = self.subscribed() else {
            return Ok(watch);
        };
        let done = match runtime()?.spawn(subscribe).await {
            Ok(done) => done,
            Err(e) => Err(cancelled(&self.address, e)),
        };
        match done {
            Ok(()) => Ok(watch),
            Err(e) => Err(self.drop_watch(id, e)),
        }
    }

    /// What subscribes to the companion channel, unless that was done.
    fn subscribed(&self) -> Option<impl Future<Output = Result<()>> + Send + 'static> {
        if self.watches.subscribed.load(Ordering::Acquire) {
            return None;
        }
        let mut conn = self.conn.clone();
        let channel = self.channel.clone();
        let address = self.address.clone();
        let watches = self.watches.clone();
        Some(async move {
            conn.subscribe(&channel)
                .await
                .map_err(|e| fail(&address, e))?;
            watches.subscribed.store(true, Ordering::Release);
            Ok(())
        })
    }

    fn drop_watch(&self, id: u64, e: Error) -> Error {
        self.watches.lock().remove(&id);
        e
    }

    fn open_watch(&self, prefix: &str) -> (u64, Watch) {
        let id = self.watches.next.fetch_add(1, Ordering::Relaxed);
        let (inbox, rx) = WatchQueue::new(self.watch_capacity);
        self.watches
            .lock()
            .insert(id, (prefix.to_owned(), inbox.clone()));
        let weak = Arc::downgrade(&self.watches);
        let cancel = Box::new(move || {
            if let Some(watches) = weak.upgrade() {
                watches.lock().remove(&id);
            }
        });
        (id, Watch::new(inbox, rx, cancel))
    }
}

impl Backend for Arc<Redis> {
    #[inline]
    fn execute<R>(
        &self,
        request: Request<'_>,
        _timeout: Option<Duration>,
        read: impl FnOnce(Reply<'_>) -> Result<R>,
    ) -> Result<R> {
        self.request(&request, read)
    }

    fn execute_async<R, P>(
        &self,
        request: Request<'_>,
        _timeout: Option<Duration>,
        read: P,
    ) -> impl Future<Output = Result<R>> + Send + 'static
    where
        R: Send + 'static,
        P: FnOnce(Reply<'_>) -> Result<R> + Send + 'static,
    {
        self.request_async(&request, read)
    }

    fn watch(&self, prefix: &str, _timeout: Option<Duration>) -> Result<Watch> {
        self.start_watch(prefix)
    }

    fn watch_async(
        &self,
        prefix: &str,
        _timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Watch>> + Send {
        self.start_watch_async(prefix)
    }
}

/// What the async side of a request needs.
struct Ctx<'a> {
    address: &'a str,
    script: &'a redis::Script,
    namespace: &'a str,
    channel: &'a [u8],
}

impl Ctx<'_> {
    async fn apply(
        &self,
        conn: &mut ConnectionManager,
        keys: &[Vec<u8>],
        args: &[Vec<u8>],
        shapes: &[(String, i64)],
    ) -> Result<Vec<Owned>> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(self.namespace).arg(self.channel);
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let results: Vec<Vec<Value>> = invocation
            .invoke_async(conn)
            .await
            .map_err(|e| fail(self.address, e))?;
        if results.len() != shapes.len() {
            return Err(Error::Protocol(format!(
                "Redis answered {} results for {} operations",
                results.len(),
                shapes.len()
            )));
        }
        results
            .into_iter()
            .zip(shapes)
            .map(|(result, (key, by))| read_result(&result, key, *by))
            .collect()
    }

    /// The keys of the namespace that start with `prefix`, without the
    /// namespace, by `SCAN`.
    async fn scan(&self, conn: &mut ConnectionManager, prefix: &str) -> Result<Vec<String>> {
        let mut pattern = Vec::new();
        link::escape_glob(&format!("{}{prefix}", self.namespace), &mut pattern);
        pattern.push(b'*');
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(CHUNK)
                .query_async(conn)
                .await
                .map_err(|e| fail(self.address, e))?;
            for key in batch {
                if let Some(user) = key
                    .strip_prefix(self.namespace.as_bytes())
                    .and_then(|k| std::str::from_utf8(k).ok())
                {
                    keys.push(user.to_owned());
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key more than once.
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }
}

fn read_result(result: &[Value], key: &str, by: i64) -> Result<Owned> {
    let bad = || Error::Protocol(format!("Redis gave an unexpected result {result:?}"));
    let kind = match result.first() {
        Some(Value::BulkString(k)) => k.as_slice(),
        Some(Value::SimpleString(k)) => k.as_bytes(),
        _ => return Err(bad()),
    };
    Ok(match (kind, result.get(1)) {
        (b"v", Some(Value::BulkString(v))) => Owned::Value(Some(v.clone())),
        (b"n", _) => Owned::Value(None),
        (b"b", Some(Value::Int(n))) => Owned::Bool(*n != 0),
        (b"d", _) => Owned::Done,
        // PTTL: -2 for a missing key, -1 for one without a deadline.
        (b"t", Some(Value::Int(ms))) => Owned::Ttl(
            u64::try_from(*ms)
                .ok()
                .map(|ms| ms.saturating_mul(1_000_000)),
        ),
        (b"i", Some(Value::BulkString(v))) => {
            // The script writes only sums that fit an i64.
            Owned::Int(mark::decode::<i64>(v).map_err(|e| Error::Protocol(e.to_string()))?)
        }
        (b"e", Some(Value::BulkString(e))) if e == b"nan" => Owned::Failed(Failure::NotAnInteger {
            key: key.to_owned(),
        }),
        (b"e", Some(Value::BulkString(e))) if e == b"ovf" => Owned::Failed(Failure::Overflow {
            key: key.to_owned(),
            by,
        }),
        _ => return Err(bad()),
    })
}
