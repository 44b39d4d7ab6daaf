//! The store kept in a real `redis-server` (ignored by default: run with
//! `cargo test -p yuki-storage --features redis -- --ignored`). Runs the
//! shared suite's bodies that do not move a manual clock, then what is
//! particular to Redis.
#![cfg(feature = "redis")]

mod suite;

use std::time::{Duration, Instant};

use yuki_storage::{Batch, Error, Outcome, Store};
use yuki_testkit::RedisServer;

use suite::{Harness, WAIT};

struct OnRedis {
    server: RedisServer,
    main: Store,
}

fn on_redis() -> OnRedis {
    let server = RedisServer::start().expect("redis-server must be installed for these tests");
    let main = Store::redis(&server.url()).unwrap();
    OnRedis { server, main }
}

impl Harness for OnRedis {
    fn main(&self) -> Store {
        self.main.clone()
    }
    fn child(&self, _name: &str) -> Store {
        // Another process would open its own connection.
        Store::redis(&self.server.url()).unwrap()
    }
    fn advance(&self, _by: Duration) {
        unreachable!("the bodies that move the clock do not run on Redis")
    }
}

macro_rules! redis_suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            #[ignore = "needs redis-server"]
            fn $name() {
                suite::$name(&on_redis());
            }
        )*
    };
}

// The bodies that move a manual clock (TTL, purge) are replaced below by
// tests in real time.
redis_suite!(
    set_get_and_types,
    get_or_and_raw,
    delete_reports_existence,
    contains_keys_len_clear,
    get_all_is_a_typed_snapshot_copy,
    incr_counts,
    compare_and_swap_swaps_only_on_match,
    invalid_input_is_refused,
    writes_are_visible_everywhere_at_once,
    batches_are_atomic_under_snapshots,
    concurrent_incr_loses_nothing,
    values_are_read_as_written_or_refused,
    incr_works_on_every_integer_type,
    ttl_expire_and_persist_answer_as_redis_does,
    keys_matching_reads_globs_as_redis_does,
);

#[test]
#[ignore = "needs redis-server"]
fn values_are_encoded_exactly_as_in_the_local_store() {
    let h = on_redis();
    let local = Store::local();
    for n in [
        0i64,
        1,
        -1,
        125,
        -126,
        250,
        251,
        65_535,
        -70_000,
        i64::MAX,
        i64::MIN,
    ] {
        h.main.set("n", &n).unwrap();
        local.set("n", &n).unwrap();
        assert_eq!(h.main.get_raw("n").unwrap(), local.get_raw("n").unwrap());
    }
    // incr works on the same bytes, exact over 64 bits, in both directions.
    for (start, by) in [
        (0i64, 1i64),
        (124, 1),
        (-125, -1),
        (250, 1),
        (65_535, 1),
        (-65_536, 65_536),
        (1 << 40, -(1 << 41)),
        (i64::MAX - 1, 1),
        (i64::MIN + 1, -1),
        (9_007_199_254_740_993, 2),
        (-5, 5),
    ] {
        h.main.set("c", &start).unwrap();
        local.set("c", &start).unwrap();
        assert_eq!(h.main.incr("c", by).unwrap(), start + by, "{start}+{by}");
        local.incr("c", by).unwrap();
        assert_eq!(h.main.get_raw("c").unwrap(), local.get_raw("c").unwrap());
    }
    h.main.set("c", &i64::MAX).unwrap();
    assert!(matches!(h.main.incr("c", 1), Err(Error::Overflow { .. })));
    h.main.set("c", &i64::MIN).unwrap();
    assert!(matches!(h.main.incr("c", -1), Err(Error::Overflow { .. })));
    assert_eq!(h.main.get::<i64>("c").unwrap(), Some(i64::MIN));
    h.main.set("s", "text").unwrap();
    assert!(matches!(
        h.main.incr("s", 1),
        Err(Error::NotAnInteger { .. })
    ));
    assert_eq!(h.main.incr("fresh", -7).unwrap(), -7);
}

#[test]
#[ignore = "needs redis-server"]
fn the_namespace_is_all_it_touches() {
    let h = on_redis();
    let other = Store::redis_with_namespace(&h.server.url(), "other:").unwrap();
    other.set("keep", &1u8).unwrap();
    // Glob characters in the namespace or a prefix are literal.
    let odd = Store::redis_with_namespace(&h.server.url(), "o*d?").unwrap();
    odd.set("x", &2u8).unwrap();
    h.main.set("a", &1u8).unwrap();
    h.main.set("a*b", &1u8).unwrap();
    assert_eq!(h.main.len().unwrap(), 2);
    assert_eq!(h.main.keys("a*").unwrap(), vec!["a*b".to_owned()]);
    assert_eq!(h.main.clear().unwrap(), 2);
    assert_eq!(other.get::<u8>("keep").unwrap(), Some(1));
    assert_eq!(odd.keys("").unwrap(), vec!["x".to_owned()]);
    assert!(format!("{:?}", h.main).contains("redis"));
}

#[test]
#[ignore = "needs redis-server"]
fn ttl_expires_in_real_time_and_batches_carry_it() {
    let h = on_redis();
    let mut batch = Batch::new();
    batch
        .set_with_ttl("short", &1i64, Duration::from_millis(30))
        .incr("short", 1)
        .get("short");
    let outcomes = h.main.batch(&batch).unwrap();
    assert_eq!(outcomes[1], Outcome::Incremented(2));
    h.main
        .set_with_ttl("long", &1i64, Duration::from_secs(60))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while h.main.contains("short").unwrap() {
        assert!(Instant::now() < deadline, "the key never expired");
        std::thread::yield_now();
    }
    assert_eq!(h.main.get::<i64>("long").unwrap(), Some(1));
    assert_eq!(h.main.purge_expired().unwrap(), 0);
}

#[test]
#[ignore = "needs redis-server"]
fn ttl_after_expiry_and_expire_in_real_time() {
    let h = on_redis();
    h.main.set("k", &1i64).unwrap();
    assert!(h.main.expire("k", Duration::from_millis(30)).unwrap());
    h.main
        .set_with_ttl("kept", &1i64, Duration::from_millis(30))
        .unwrap();
    assert!(h.main.persist("kept").unwrap());
    let deadline = Instant::now() + WAIT;
    while h.main.contains("k").unwrap() {
        assert!(Instant::now() < deadline, "the key never expired");
        std::thread::yield_now();
    }
    assert_eq!(h.main.ttl("k").unwrap(), None);
    assert!(!h.main.expire("k", Duration::from_secs(1)).unwrap());
    assert!(!h.main.persist("k").unwrap());
    // Past the deadline it had: persisted, so still there.
    assert_eq!(h.main.get::<i64>("kept").unwrap(), Some(1));
    assert_eq!(h.main.ttl("kept").unwrap(), None);
    // A pattern's special characters never reach outside the namespace.
    let odd = Store::redis_with_namespace(&h.server.url(), "o*[").unwrap();
    odd.set("x", &1).unwrap();
    assert_eq!(odd.keys_matching("*").unwrap(), ["x"]);
    assert_eq!(h.main.keys_matching("*x").unwrap(), Vec::<String>::new());
}

#[test]
#[ignore = "needs redis-server"]
fn watches_see_changes_from_other_connections_in_order() {
    let h = on_redis();
    let other = h.child("writer");
    let watch = h.main.watch("w.").unwrap();
    other.set("w.a", &1i64).unwrap();
    other.set("x", &1i64).unwrap();
    other.incr("w.a", 2).unwrap();
    other
        .compare_and_swap("w.a", Some(&3i64), None::<&i64>)
        .unwrap();
    other.set("w.b", &5i64).unwrap();
    assert_eq!(other.clear().unwrap(), 2);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let change = watch.recv_timeout(WAIT).unwrap();
        seen.push((change.key.clone(), change.decode::<i64>().unwrap()));
    }
    assert_eq!(
        seen,
        vec![
            ("w.a".to_owned(), Some(1)),
            ("w.a".to_owned(), Some(3)),
            ("w.a".to_owned(), None),
            ("w.b".to_owned(), Some(5)),
            ("w.b".to_owned(), None),
        ]
    );
    assert_eq!(watch.try_recv(), Err(Error::Empty));
}

#[test]
#[ignore = "needs redis-server"]
fn async_forms_run_on_redis() {
    let h = on_redis();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        h.main.set_async("k", &7u32).await.unwrap();
        assert_eq!(h.main.get_async::<u32>("k").await.unwrap(), Some(7));
        assert_eq!(h.main.incr_async("n", 3).await.unwrap(), 3);
        assert_eq!(h.main.keys_async("").await.unwrap(), vec!["k", "n"]);
        assert_eq!(h.main.len_async().await.unwrap(), 2);
        assert!(h.main.delete_async("k").await.unwrap());
        let watch = h.main.watch_async("").await.unwrap();
        h.main.set_async("z", &1u8).await.unwrap();
        let change = tokio::time::timeout(WAIT, watch.recv_async())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(change.key, "z");
    });
}

#[test]
#[ignore = "needs redis-server"]
fn bad_urls_and_refusing_servers_name_the_address() {
    let err = Store::redis("not a url").unwrap_err();
    assert!(err.to_string().contains("not a url"), "{err}");
    let url = RedisServer::refusing_url().unwrap();
    let err = Store::redis(&url).unwrap_err();
    assert!(matches!(err, Error::Redis { .. }), "{err}");
    let address = url.trim_start_matches("redis://");
    assert!(err.to_string().contains(address), "{err}");
}

#[test]
#[ignore = "needs redis-server"]
fn a_killed_server_gives_errors_ends_watches_then_recovers() {
    let mut h = on_redis();
    let watch = h.main.watch("").unwrap();
    h.main.set("a", &1u8).unwrap();
    assert_eq!(watch.recv_timeout(WAIT).unwrap().key, "a");

    h.server.kill();
    let err = h.main.set("b", &2u8).unwrap_err();
    assert!(matches!(err, Error::Redis { .. }), "{err}");
    assert!(
        err.to_string().contains(&h.server.port().to_string()),
        "{err}"
    );
    assert!(matches!(watch.recv_timeout(WAIT), Err(Error::Redis { .. })));

    h.server.restart().unwrap();
    let deadline = Instant::now() + WAIT;
    while h.main.set("b", &2u8).is_err() {
        assert!(Instant::now() < deadline, "no recovery");
        std::thread::yield_now();
    }
    // The server lost its data (no persistence); the store works again.
    assert_eq!(h.main.get::<u8>("b").unwrap(), Some(2));
    let watch = h.main.watch("").unwrap();
    h.main.set("c", &3u8).unwrap();
    assert_eq!(watch.recv_timeout(WAIT).unwrap().key, "c");
}
