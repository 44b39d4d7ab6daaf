//! [`Store`]: one API in main, in a child and in-thread.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::Bytes;
use yuki_channel::{PeerEvent, Transport};

use crate::backend::Any;
use crate::backend::local::Local;
use crate::backend::remote::{Remote, unexpected};
use crate::batch::{Batch, Outcome, Shapes, ttl_nanos};
use crate::clock::{Clock, SystemClock};
use crate::data::Data;
use crate::error::{Error, Result};
use crate::limits::{MAX_VALUE_LEN, check_batch, check_key, check_prefix, check_value};
use crate::mirror::Mirror;
use crate::protocol::{Op, Reply, Request, SERVICE};
use crate::service::StoreService;
use crate::value;
use crate::watch::Watch;

/// How a store is set up. Only main's settings matter for the data; a
/// child uses `watch_capacity`, and `max_value_len` to refuse a value
/// before sending it (main checks again with its own).
#[derive(Debug, Clone)]
pub struct Config {
    clock: Arc<dyn Clock>,
    shards: usize,
    purge_every: Duration,
    watch_capacity: usize,
    max_value_len: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            clock: Arc::new(SystemClock::default()),
            shards: 64,
            purge_every: Duration::from_secs(1),
            watch_capacity: 65_536,
            max_value_len: MAX_VALUE_LEN,
        }
    }
}

impl Config {
    /// The clock that decides expiry (default: the system's monotonic clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Config {
        self.clock = clock;
        self
    }

    /// How many shards main's map has (rounded up to a power of two, at most
    /// 4,096, and at most 1,024 while children read the store from shared
    /// memory, where each shard holds whole stripes of the shared table;
    /// default 64).
    pub fn shards(mut self, shards: usize) -> Config {
        self.shards = shards;
        self
    }

    /// How often expired keys are purged in the background (default 1 s).
    /// Reads never see an expired key, whatever this is.
    pub fn purge_every(mut self, every: Duration) -> Config {
        self.purge_every = every;
        self
    }

    /// How many changes a [`Watch`] buffers before it is closed with
    /// [`Error::WatchLagged`] (default 65 536).
    pub fn watch_capacity(mut self, capacity: usize) -> Config {
        self.watch_capacity = capacity.max(1);
        self
    }

    /// The largest encoded value a write accepts, in bytes (default
    /// [`MAX_VALUE_LEN`], 4 MiB); a larger one fails with
    /// [`Error::ValueTooLarge`]. Main's setting decides for every process;
    /// give children the same, since they check theirs before sending. A
    /// value must also fit the transport's frame
    /// (`NodeBuilder::max_frame`).
    ///
    /// ```
    /// use yuki_storage::{Config, Error, Store};
    /// let store = Store::local_with(Config::default().max_value_len(8));
    /// store.set("small", "1234").unwrap();
    /// let err = store.set("big", "123456789").unwrap_err();
    /// assert!(matches!(err, Error::ValueTooLarge { max: 8, .. }));
    /// ```
    pub fn max_value_len(mut self, bytes: usize) -> Config {
        self.max_value_len = bytes;
        self
    }
}

/// A key-value store shared by main and every child.
///
/// Keys are non-empty UTF-8 strings of at most [`MAX_KEY_LEN`](crate::MAX_KEY_LEN)
/// bytes; values are any serde type, kept encoded, at most
/// [`Config::max_value_len`] bytes (default
/// [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN)). Cloning is cheap: clones
/// share the same data.
///
/// **Byte payloads**: values are encoded with serde, which writes a plain
/// `Vec<u8>` one element at a time; store bytes as `serde_bytes::ByteBuf`
/// (or a field marked `#[serde(with = "serde_bytes")]`) and they are copied
/// whole, many times faster for large values (the benchmark's "1 MiB
/// `Vec<u8>`" line measures it).
///
/// In main the data is a sharded map in this process and every operation
/// works on it directly. In a child every operation is one call to main.
/// Either way each operation is applied whole in main before it returns, so
/// whatever any process reads after a write returned sees that write;
/// operations on one key are linearizable, and one thread's operations
/// apply in the order it made them.
///
/// `get_all`, `get_all_raw`, `keys`, `keys_matching`, `len` and `clear` see (or change) the
/// whole store at one instant: main holds every shard's lock together for
/// them, so none of them ever sees a batch half applied.
///
/// Every operation has an async form (`get_async`, ...): in a child it
/// sends at once and awaits the reply without blocking a thread.
#[derive(Clone)]
pub struct Store {
    backend: Any,
    /// This handle's call deadline in a child (`None`: the transport's).
    timeout: Option<Duration>,
    max_value: usize,
}

/// The store attached to a transport, kept in its extensions.
struct Attached(Store);

impl Store {
    /// A store for this process alone (nothing is served).
    pub fn local() -> Store {
        Store::local_with(Config::default())
    }

    /// [`Store::local`] with settings.
    pub fn local_with(config: Config) -> Store {
        let data = Data::new(config.shards, config.clock, config.purge_every, None);
        Store::new(
            Any::Local(Local {
                data,
                watch_capacity: config.watch_capacity,
            }),
            config.max_value_len,
        )
    }

    fn new(backend: Any, max_value: usize) -> Store {
        Store {
            backend,
            timeout: None,
            max_value,
        }
    }
    /// A store kept in the Redis server at `url` (such as
    /// `redis://127.0.0.1:6379`), under the key namespace
    /// [`DEFAULT_NAMESPACE`](crate::DEFAULT_NAMESPACE): see
    /// [`Store::redis_with_namespace`].
    #[cfg(feature = "redis")]
    pub fn redis(url: &str) -> Result<Store> {
        Store::redis_with_namespace(url, crate::backend::redis::DEFAULT_NAMESPACE)
    }

    /// A store kept in the Redis server at `url`, every key stored as
    /// `namespace` + key; nothing outside the namespace is read or changed.
    ///
    /// Every operation works as with the other backends and values are
    /// encoded the same way, except that `len`, `keys`, `get_all` and
    /// `clear` walk the namespace with `SCAN` and so do not see one instant
    /// when others write meanwhile, expired keys are removed by Redis
    /// (`purge_expired` returns 0) and a watch ends with [`Error::Redis`] when
    /// the connection drops. When the connection drops, calls fail with
    /// [`Error::Redis`] until it is back; it reconnects by itself with
    /// back-off.
    ///
    /// Fails with [`Error::Redis`], naming the address, when the URL is
    /// malformed or the server cannot be reached.
    #[cfg(feature = "redis")]
    pub fn redis_with_namespace(url: &str, namespace: &str) -> Result<Store> {
        let capacity = Config::default().watch_capacity;
        let redis = crate::backend::redis::Redis::connect(url, namespace, capacity)?;
        Ok(Store::new(Any::Redis(Arc::new(redis)), MAX_VALUE_LEN))
    }

    /// The store of the application `transport` belongs to.
    ///
    /// In main it creates the data and serves it to every child; in a child
    /// it connects to main's. Attaching again to the same transport returns
    /// the same store.
    pub fn attach(transport: Arc<dyn Transport>) -> Result<Store> {
        Store::attach_with(transport, Config::default())
    }

    /// [`Store::attach`] with settings (ignored when already attached).
    pub fn attach_with(transport: Arc<dyn Transport>, config: Config) -> Result<Store> {
        let ext = transport.extensions();
        let attached = ext.get_or_try_init::<Attached, Error>(|| {
            if transport.role().is_main() {
                let mirror = Mirror::create(transport.shared_region(), &*config.clock);
                let data = Data::new(config.shards, config.clock, config.purge_every, mirror);
                data.watchers.set_pusher(Arc::downgrade(&transport));
                let service = StoreService {
                    data: data.clone(),
                    max_frame: transport.max_frame(),
                    max_value: config.max_value_len,
                };
                transport.serve(SERVICE, Arc::new(service))?;
                let weak = Arc::downgrade(&data);
                transport.on_peer_event(Arc::new(move |event: &PeerEvent| {
                    if let (PeerEvent::Left { peer, .. }, Some(data)) = (event, weak.upgrade()) {
                        data.watchers.remove_peer(*peer);
                    }
                }));
                let local = Local {
                    data,
                    watch_capacity: config.watch_capacity,
                };
                Ok(Attached(Store::new(
                    Any::Local(local),
                    config.max_value_len,
                )))
            } else {
                let remote = Remote::new(transport.clone(), config.watch_capacity)?;
                Ok(Attached(Store::new(
                    Any::Remote(remote),
                    config.max_value_len,
                )))
            }
        })?;
        Ok(attached.0.clone())
    }

    /// A handle to the same store whose operations in a child wait at most
    /// `timeout` for main's answer, in place of the transport's call
    /// time-out (`NodeBuilder::call_timeout`, 30 s by default). When main
    /// does not answer in time, the operation fails with
    /// [`Error::CallTimeout`]; a write may still be applied later. Other
    /// handles keep their own deadline; in main and for a local store,
    /// where nothing waits for another process, and for Redis, it changes
    /// nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// let store = yuki_storage::Store::local();
    /// let quick = store.with_timeout(Duration::from_millis(300));
    /// quick.set("k", &1).unwrap();
    /// assert_eq!(store.get::<i32>("k").unwrap(), Some(1));
    /// assert_eq!(quick.timeout(), Some(Duration::from_millis(300)));
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> Store {
        Store {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// The deadline set with [`Store::with_timeout`], if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether this process holds the data (main, or a local store).
    pub fn is_owner(&self) -> bool {
        matches!(self.backend, Any::Local(_))
    }

    /// Whether children read this store from memory main shares with them,
    /// without a call: in main, whether it keeps the shared table; in a
    /// child, whether it reads it now. Needs a transport that shares memory
    /// (the ipc transport on Linux, with `NodeBuilder::shared_reads` on)
    /// and main's clock to be the system's ([`SystemClock`]); `false` for a
    /// local or in-thread store, whose reads are in place anyway, and for
    /// Redis.
    ///
    /// Reads from shared memory keep every promise of the store: a write
    /// that returned in any process is seen by every later read, a batch
    /// is never seen half applied, an expired key is absent, and values
    /// are decoded (or refused as [`Error::WrongType`]) as always. A read
    /// the table cannot answer at once (main is rewriting that very key,
    /// or the region is full) is a call to main as before; once main is
    /// gone, reads fail with [`Error::Disconnected`] as calls do.
    ///
    /// ```
    /// use yuki_channel::InThreadTransport;
    /// let store = yuki_storage::Store::attach(InThreadTransport::main()).unwrap();
    /// assert!(!store.shares_reads());
    /// ```
    pub fn shares_reads(&self) -> bool {
        match &self.backend {
            Any::Local(local) => local.data.is_mirrored(),
            Any::Remote(remote) => remote.shares_reads(),
            #[cfg(feature = "redis")]
            Any::Redis(_) => false,
        }
    }

    /// Runs `request` on this store's backend and reads the reply with `read`.
    #[inline]
    fn execute<R>(
        &self,
        request: Request<'_>,
        read: impl FnOnce(Reply<'_>) -> Result<R>,
    ) -> Result<R> {
        self.backend.execute(request, self.timeout, read)
    }

    /// The async form of [`Store::execute`].
    async fn execute_async<R, P>(&self, request: Request<'_>, read: P) -> Result<R>
    where
        R: Send + 'static,
        P: FnOnce(Reply<'_>) -> Result<R> + Send + 'static,
    {
        self.backend
            .execute_async(request, self.timeout, read)
            .await
    }

    /// Sets `key` to `value` (and removes any time-to-live it had).
    ///
    /// ```
    /// let store = yuki_storage::Store::local();
    /// store.set("greeting", "hello").unwrap();
    /// assert_eq!(store.get::<String>("greeting").unwrap().as_deref(), Some("hello"));
    /// ```
    pub fn set<V: Serialize + ?Sized>(&self, key: &str, value: &V) -> Result<()> {
        check_key(key)?;
        value::with_encoded(key, value, self.max_value, |bytes| {
            self.execute(set(key, bytes, None), read_done)
        })
    }

    /// Sets `key` to `value` for `ttl`; after that every read treats it as
    /// absent, and main purges it in the background.
    pub fn set_with_ttl<V: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &V,
        ttl: Duration,
    ) -> Result<()> {
        check_key(key)?;
        value::with_encoded(key, value, self.max_value, |bytes| {
            self.execute(set(key, bytes, Some(ttl)), read_done)
        })
    }

    /// The value of `key` as a `V`, `None` if it does not exist.
    ///
    /// A value written as another type is read as the same value when `V`
    /// holds it (an integer as any integer type in whose range it is, a
    /// string as any string type, `Some`/`None` as their contents are);
    /// otherwise it is [`Error::WrongType`] naming the key and both types.
    /// Never another value.
    ///
    /// ```
    /// let store = yuki_storage::Store::local();
    /// store.set("visits", &7i64).unwrap();
    /// assert_eq!(store.get::<u64>("visits").unwrap(), Some(7));
    /// assert!(store.get::<String>("visits").is_err());
    /// ```
    #[inline]
    pub fn get<V: DeserializeOwned>(&self, key: &str) -> Result<Option<V>> {
        check_key(key)?;
        // Decoded where the backend holds the bytes: in the map under its
        // lock, or in the reply frame. Never copied.
        self.execute(Request::Op(Op::Get(key)), |reply| match reply {
            Reply::Value(v) => value::decode_found(key, v.map(|b| &b[..])),
            other => Err(unexpected(&other)),
        })
    }

    /// The value of `key`, or `default` if it does not exist.
    pub fn get_or<V: DeserializeOwned>(&self, key: &str, default: V) -> Result<V> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// The stored bytes of `key`, undecoded: the value as
    /// [`yuki_channel::codec::mark`] encodes it (a mark of its type, then
    /// bincode), or, when it was written with [`Store::set_raw`], exactly
    /// the bytes given there.
    pub fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        self.execute(Request::Op(Op::Get(key)), read_value)
    }

    /// Sets `key` to `bytes` exactly as given, for programs that keep their
    /// own format and read it back with [`Store::get_raw`].
    ///
    /// [`Store::get`] reads the stored bytes as a marked value
    /// ([`yuki_channel::codec::mark`]), so give it only bytes that were
    /// marked so; and `incr` counts only marked integers.
    ///
    /// ```
    /// let store = yuki_storage::Store::local();
    /// store.set_raw("blob", b"my own format").unwrap();
    /// assert_eq!(store.get_raw("blob").unwrap().as_deref(), Some(&b"my own format"[..]));
    /// ```
    pub fn set_raw(&self, key: &str, bytes: &[u8]) -> Result<()> {
        check_key(key)?;
        check_value(key, bytes, self.max_value)?;
        self.execute(set(key, bytes, None), read_done)
    }

    /// Whether `key` exists.
    pub fn contains(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.execute(Request::Op(Op::Contains(key)), read_bool)
    }

    /// Deletes `key`; returns whether it existed.
    pub fn delete(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.execute(Request::Op(Op::Delete(key)), read_bool)
    }

    /// Adds `by` to the counter `key` and returns the new value. The key
    /// keeps its time-to-live and its type: a counter is any value written
    /// as an integer type (`i8` to `i64`, `u8` to `u64`, `isize`, `usize`),
    /// and a missing key starts as an `i64` 0.
    ///
    /// A value that is not such an integer is [`Error::NotAnInteger`]; a
    /// sum that its type cannot hold, or (for a `u64`) that is over
    /// `i64::MAX`, is [`Error::Overflow`]; in both cases nothing changes.
    ///
    /// ```
    /// let store = yuki_storage::Store::local();
    /// store.set("count", &250u8).unwrap();
    /// assert_eq!(store.incr("count", 5).unwrap(), 255);
    /// assert!(store.incr("count", 1).is_err());
    /// assert_eq!(store.get::<u8>("count").unwrap(), Some(255));
    /// ```
    pub fn incr(&self, key: &str, by: i64) -> Result<i64> {
        check_key(key)?;
        self.execute(Request::Op(Op::Incr { key, by }), read_int)
    }

    /// Sets `key` to `new` (deletes it for `None`) if its value is now
    /// `expected` (absent for `None`); returns whether it did.
    ///
    /// Values are compared as encoded bytes, so `expected` must be of the
    /// type the value was written with. Like [`Store::set`], a swap leaves
    /// the key without a time-to-live.
    pub fn compare_and_swap<V: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&V>,
        new: Option<&V>,
    ) -> Result<bool> {
        let cas = Cas::encode(key, expected, new, self.max_value)?;
        self.execute(Request::Op(cas.op(key)), read_bool)
    }

    /// The time `key` has left before it expires: `Some` for a key set
    /// with a time-to-live (or given one by [`Store::expire`]), `None` for
    /// a key that never expires **and** for a missing key, Redis's `-1`
    /// and `-2` both. When the difference matters, ask both at one instant
    /// with a [`Batch`] of [`contains`](Batch::contains) and
    /// [`ttl`](Batch::ttl).
    ///
    /// Redis counts in milliseconds, so there the time is whole
    /// milliseconds; main's map counts nanoseconds.
    ///
    /// ```
    /// use std::time::Duration;
    /// let store = yuki_storage::Store::local();
    /// store.set_with_ttl("session", "ann", Duration::from_secs(60)).unwrap();
    /// store.set("name", "ann").unwrap();
    /// let left = store.ttl("session").unwrap().unwrap();
    /// assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
    /// assert_eq!(store.ttl("name").unwrap(), None);
    /// assert_eq!(store.ttl("missing").unwrap(), None);
    /// ```
    pub fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        check_key(key)?;
        self.execute(Request::Op(Op::Ttl(key)), read_ttl)
    }

    /// Gives `key` the time-to-live `ttl` from now, replacing any it had;
    /// returns whether the key existed (a missing key stays missing).
    /// A zero `ttl` removes the key at once, as Redis's `EXPIRE` with a
    /// deadline that has passed does (watchers see a removal).
    ///
    /// ```
    /// use std::time::Duration;
    /// let store = yuki_storage::Store::local();
    /// store.set("k", &1).unwrap();
    /// assert!(store.expire("k", Duration::from_secs(60)).unwrap());
    /// assert!(store.ttl("k").unwrap().is_some());
    /// assert!(!store.expire("missing", Duration::from_secs(60)).unwrap());
    /// assert!(store.expire("k", Duration::ZERO).unwrap());
    /// assert!(!store.contains("k").unwrap());
    /// ```
    pub fn expire(&self, key: &str, ttl: Duration) -> Result<bool> {
        check_key(key)?;
        self.execute(expire(key, ttl), read_bool)
    }

    /// Takes `key`'s time-to-live away, so it never expires; returns
    /// whether it had one (`false` for a missing key or one that never
    /// expired), as Redis's `PERSIST`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let store = yuki_storage::Store::local();
    /// store.set_with_ttl("k", &1, Duration::from_secs(60)).unwrap();
    /// assert!(store.persist("k").unwrap());
    /// assert_eq!(store.ttl("k").unwrap(), None);
    /// assert!(!store.persist("k").unwrap());
    /// ```
    pub fn persist(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.execute(Request::Op(Op::Persist(key)), read_bool)
    }

    /// Runs `batch` atomically in main; one [`Outcome`] per operation, in order.
    pub fn batch(&self, batch: &Batch) -> Result<Vec<Outcome>> {
        let ops = batch.ops()?;
        check_batch(&ops, self.max_value)?;
        self.execute(Request::Batch(ops), |reply| batch.read(reply))
    }

    /// A copy of every entry, decoded as `V`, seen at one instant.
    ///
    /// A value of another type is [`Error::WrongType`] naming the first such
    /// key in key order; use [`Store::get_all_raw`] for mixed types.
    pub fn get_all<V: DeserializeOwned>(&self) -> Result<BTreeMap<String, V>> {
        decode_all(self.get_all_raw()?)
    }

    /// A copy of every entry, undecoded, seen at one instant.
    pub fn get_all_raw(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        self.execute(Request::GetAll, read_entries)
    }

    /// The keys that start with `prefix` (`""` for all), sorted, at one instant.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        check_prefix(prefix)?;
        self.execute(Request::Keys(prefix), read_keys)
    }

    /// The keys that match the glob `pattern`, sorted, at one instant
    /// (on Redis, by `SCAN`, like [`Store::keys`]). As in Redis's `KEYS`:
    /// `*` matches any run of characters, `?` one character, `[abc]` one of
    /// those (`[^abc]` any other, `[a-z]` a range), and `\\` makes the next
    /// character plain. Only the pattern's plain start (before its first
    /// special character) narrows the search; `"*.tmp"` reads every key.
    ///
    /// ```
    /// let store = yuki_storage::Store::local();
    /// for key in ["user.1", "user.22", "user.x", "users", "a*b"] {
    ///     store.set(key, &0).unwrap();
    /// }
    /// assert_eq!(store.keys_matching("user.?").unwrap(), ["user.1", "user.x"]);
    /// assert_eq!(store.keys_matching("user.[0-9]*").unwrap(), ["user.1", "user.22"]);
    /// assert_eq!(store.keys_matching(r"a\*b").unwrap(), ["a*b"]);
    /// ```
    pub fn keys_matching(&self, pattern: &str) -> Result<Vec<String>> {
        check_prefix(pattern)?;
        self.execute(Request::KeysMatching(pattern), read_keys)
    }

    /// How many keys there are.
    pub fn len(&self) -> Result<usize> {
        self.execute(Request::Len, read_count)
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes every key at one instant; returns how many there were.
    pub fn clear(&self) -> Result<usize> {
        self.execute(Request::Clear, read_count)
    }

    /// Purges expired keys now rather than at the next background pass;
    /// returns how many. Reads never see expired keys either way.
    pub fn purge_expired(&self) -> Result<usize> {
        self.execute(Request::Purge, read_count)
    }

    /// Watches the keys that start with `prefix` (`""` for all): every change
    /// main applies after this returns, in main's order, delivered in this
    /// process.
    ///
    /// ```
    /// let store = yuki_storage::Store::local();
    /// let mut watch = store.watch("user.").unwrap();
    /// store.set("user.1", "ann").unwrap();
    /// store.delete("user.1").unwrap();
    /// assert_eq!(watch.recv().unwrap().decode::<String>().unwrap().as_deref(), Some("ann"));
    /// assert!(watch.recv().unwrap().is_removal());
    /// ```
    pub fn watch(&self, prefix: &str) -> Result<Watch> {
        check_prefix(prefix)?;
        self.backend.watch(prefix, self.timeout)
    }

    // ---- async forms: the same requests, awaited ----

    /// The async form of [`Store::set`].
    pub async fn set_async<V: Serialize + ?Sized>(&self, key: &str, value: &V) -> Result<()> {
        check_key(key)?;
        let bytes = value::encode(key, value, self.max_value)?;
        self.execute_async(set(key, &bytes, None), read_done).await
    }

    /// The async form of [`Store::set_with_ttl`].
    pub async fn set_with_ttl_async<V: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &V,
        ttl: Duration,
    ) -> Result<()> {
        check_key(key)?;
        let bytes = value::encode(key, value, self.max_value)?;
        self.execute_async(set(key, &bytes, Some(ttl)), read_done)
            .await
    }

    /// The async form of [`Store::get`].
    pub async fn get_async<V: DeserializeOwned>(&self, key: &str) -> Result<Option<V>> {
        self.get_raw_async(key)
            .await?
            .map(|b| value::decode(key, &b))
            .transpose()
    }

    /// The async form of [`Store::get_or`].
    pub async fn get_or_async<V: DeserializeOwned>(&self, key: &str, default: V) -> Result<V> {
        Ok(self.get_async(key).await?.unwrap_or(default))
    }

    /// The async form of [`Store::get_raw`].
    pub async fn get_raw_async(&self, key: &str) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        self.execute_async(Request::Op(Op::Get(key)), read_value)
            .await
    }

    /// The async form of [`Store::contains`].
    pub async fn contains_async(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.execute_async(Request::Op(Op::Contains(key)), read_bool)
            .await
    }

    /// The async form of [`Store::delete`].
    pub async fn delete_async(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.execute_async(Request::Op(Op::Delete(key)), read_bool)
            .await
    }

    /// The async form of [`Store::incr`].
    pub async fn incr_async(&self, key: &str, by: i64) -> Result<i64> {
        check_key(key)?;
        self.execute_async(Request::Op(Op::Incr { key, by }), read_int)
            .await
    }

    /// The async form of [`Store::compare_and_swap`].
    pub async fn compare_and_swap_async<V: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&V>,
        new: Option<&V>,
    ) -> Result<bool> {
        let cas = Cas::encode(key, expected, new, self.max_value)?;
        self.execute_async(Request::Op(cas.op(key)), read_bool)
            .await
    }

    /// The async form of [`Store::ttl`].
    pub async fn ttl_async(&self, key: &str) -> Result<Option<Duration>> {
        check_key(key)?;
        self.execute_async(Request::Op(Op::Ttl(key)), read_ttl)
            .await
    }

    /// The async form of [`Store::expire`].
    pub async fn expire_async(&self, key: &str, ttl: Duration) -> Result<bool> {
        check_key(key)?;
        self.execute_async(expire(key, ttl), read_bool).await
    }

    /// The async form of [`Store::persist`].
    pub async fn persist_async(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.execute_async(Request::Op(Op::Persist(key)), read_bool)
            .await
    }

    /// The async form of [`Store::batch`].
    pub async fn batch_async(&self, batch: &Batch) -> Result<Vec<Outcome>> {
        let ops = batch.ops()?;
        check_batch(&ops, self.max_value)?;
        let shapes = Shapes::owned(&ops);
        self.execute_async(Request::Batch(ops), move |reply| shapes.read(reply))
            .await
    }

    /// The async form of [`Store::get_all`].
    pub async fn get_all_async<V: DeserializeOwned>(&self) -> Result<BTreeMap<String, V>> {
        decode_all(self.get_all_raw_async().await?)
    }

    /// The async form of [`Store::get_all_raw`].
    pub async fn get_all_raw_async(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        self.execute_async(Request::GetAll, read_entries).await
    }

    /// The async form of [`Store::keys`].
    pub async fn keys_async(&self, prefix: &str) -> Result<Vec<String>> {
        check_prefix(prefix)?;
        self.execute_async(Request::Keys(prefix), read_keys).await
    }

    /// The async form of [`Store::keys_matching`].
    pub async fn keys_matching_async(&self, pattern: &str) -> Result<Vec<String>> {
        check_prefix(pattern)?;
        self.execute_async(Request::KeysMatching(pattern), read_keys)
            .await
    }

    /// The async form of [`Store::len`].
    pub async fn len_async(&self) -> Result<usize> {
        self.execute_async(Request::Len, read_count).await
    }

    /// The async form of [`Store::clear`].
    pub async fn clear_async(&self) -> Result<usize> {
        self.execute_async(Request::Clear, read_count).await
    }

    /// The async form of [`Store::purge_expired`].
    pub async fn purge_expired_async(&self) -> Result<usize> {
        self.execute_async(Request::Purge, read_count).await
    }

    /// The async form of [`Store::watch`].
    pub async fn watch_async(&self, prefix: &str) -> Result<Watch> {
        check_prefix(prefix)?;
        self.backend.watch_async(prefix, self.timeout).await
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.backend {
            Any::Local(_) => "owner",
            Any::Remote(_) => "remote",
            #[cfg(feature = "redis")]
            Any::Redis(_) => "redis",
        };
        let mut d = f.debug_struct("Store");
        d.field("kind", &kind);
        #[cfg(feature = "redis")]
        if let Any::Redis(redis) = &self.backend {
            d.field("address", &redis.address());
        }
        d.finish()
    }
}

/// The encoded values of a compare-and-swap, checked before anything is sent.
struct Cas {
    expected: Option<Vec<u8>>,
    new: Option<Vec<u8>>,
}

impl Cas {
    fn encode<V: Serialize + ?Sized>(
        key: &str,
        expected: Option<&V>,
        new: Option<&V>,
        max: usize,
    ) -> Result<Cas> {
        check_key(key)?;
        Ok(Cas {
            expected: expected.map(|v| value::encode(key, v, max)).transpose()?,
            new: new.map(|v| value::encode(key, v, max)).transpose()?,
        })
    }

    fn op<'a>(&'a self, key: &'a str) -> Op<'a> {
        Op::Cas {
            key,
            expected: self.expected.as_deref().map(Bytes::new),
            new: self.new.as_deref().map(Bytes::new),
        }
    }
}

/// A `set` of `key` to the encoded `value`, for `ttl` or for ever.
fn set<'a>(key: &'a str, value: &'a [u8], ttl: Option<Duration>) -> Request<'a> {
    Request::Op(Op::Set {
        key,
        value: Bytes::new(value),
        ttl_nanos: ttl.map(ttl_nanos),
    })
}

fn expire(key: &str, ttl: Duration) -> Request<'_> {
    Request::Op(Op::Expire {
        key,
        ttl_nanos: ttl_nanos(ttl),
    })
}

fn decode_all<V: DeserializeOwned>(raw: BTreeMap<String, Vec<u8>>) -> Result<BTreeMap<String, V>> {
    raw.into_iter()
        .map(|(k, v)| {
            let decoded = value::decode(&k, &v)?;
            Ok((k, decoded))
        })
        .collect()
}

// The readers below are inlined into each operation's closure, where the
// local backend's reply is built: a `set` in main then learns its reply is
// `Done` without a call, and without dropping a `Reply` it never needed.
#[inline]
fn read_done(reply: Reply<'_>) -> Result<()> {
    match reply {
        Reply::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}

#[inline]
fn read_int(reply: Reply<'_>) -> Result<i64> {
    match reply {
        Reply::Int(n) => Ok(n),
        other => Err(unexpected(&other)),
    }
}

#[inline]
fn read_ttl(reply: Reply<'_>) -> Result<Option<Duration>> {
    match reply {
        Reply::Ttl(t) => Ok(t.map(Duration::from_nanos)),
        other => Err(unexpected(&other)),
    }
}

#[inline]
fn read_value(reply: Reply<'_>) -> Result<Option<Vec<u8>>> {
    match reply {
        Reply::Value(v) => Ok(v.map(|b| b.to_vec())),
        other => Err(unexpected(&other)),
    }
}

#[inline]
fn read_bool(reply: Reply<'_>) -> Result<bool> {
    match reply {
        Reply::Bool(b) => Ok(b),
        other => Err(unexpected(&other)),
    }
}

#[inline]
fn read_count(reply: Reply<'_>) -> Result<usize> {
    match reply {
        Reply::Count(n) => usize::try_from(n).map_err(|e| Error::Protocol(e.to_string())),
        other => Err(unexpected(&other)),
    }
}

fn read_keys(reply: Reply<'_>) -> Result<Vec<String>> {
    match reply {
        Reply::Keys(keys) => {
            let mut keys: Vec<String> = keys.into_iter().map(str::to_owned).collect();
            keys.sort_unstable();
            Ok(keys)
        }
        other => Err(unexpected(&other)),
    }
}

fn read_entries(reply: Reply<'_>) -> Result<BTreeMap<String, Vec<u8>>> {
    match reply {
        Reply::Entries(entries) => Ok(entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect()),
        other => Err(unexpected(&other)),
    }
}
