//! The time-to-live queries (`ttl`, `expire`, `persist`) and `keys_matching`,
//! with Redis's semantics, on every backend.

use std::time::Duration;

use yuki_storage::{Batch, Error, MAX_KEY_LEN, Outcome, Store};

use super::{Harness, WAIT};

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn ttl_within(store: &Store, key: &str, low: Duration, high: Duration) {
    let left = store.ttl(key).unwrap();
    assert!(
        left.is_some_and(|d| d > low && d <= high),
        "{key}: {left:?} not in ({low:?}, {high:?}]"
    );
}

/// What Redis's TTL, EXPIRE and PERSIST answer, in real time (the clock
/// moves only as much as the test takes): runs on Redis too.
pub fn ttl_expire_and_persist_answer_as_redis_does(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    let minute = Duration::from_secs(60);
    for store in [&main, &child] {
        // A missing key: no time left, nothing to expire or persist, and
        // expire does not create it.
        assert_eq!(store.ttl("missing").unwrap(), None);
        assert!(!store.expire("missing", minute).unwrap());
        assert!(!store.expire("missing", Duration::ZERO).unwrap());
        assert!(!store.persist("missing").unwrap());
        assert!(!store.contains("missing").unwrap());
    }

    // A key without a time-to-live: the same `None`, and nothing to persist.
    child.set("plain", "v").unwrap();
    assert_eq!(main.ttl("plain").unwrap(), None);
    assert!(!main.persist("plain").unwrap());

    child.set_with_ttl("session", "tok", minute).unwrap();
    ttl_within(&main, "session", minute - WAIT, minute);
    ttl_within(&child, "session", minute - WAIT, minute);
    // Persist, then ttl: the deadline is gone, the value stays.
    assert!(main.persist("session").unwrap());
    assert_eq!(child.ttl("session").unwrap(), None);
    assert!(!child.persist("session").unwrap());
    assert_eq!(
        child.get::<String>("session").unwrap().as_deref(),
        Some("tok")
    );

    // Expire replaces the deadline, longer or shorter.
    assert!(child.expire("plain", 2 * minute).unwrap());
    ttl_within(&main, "plain", 2 * minute - WAIT, 2 * minute);
    assert!(child.expire("plain", minute).unwrap());
    ttl_within(&main, "plain", minute - WAIT, minute);
    // incr keeps it, set takes it away, as before.
    child.set("n", &1i64).unwrap();
    assert!(child.expire("n", minute).unwrap());
    assert_eq!(child.incr("n", 1).unwrap(), 2);
    ttl_within(&main, "n", minute - WAIT, minute);
    child.set("n", &3i64).unwrap();
    assert_eq!(main.ttl("n").unwrap(), None);

    // A zero time-to-live removes the key now.
    assert!(child.expire("plain", Duration::ZERO).unwrap());
    assert!(!main.contains("plain").unwrap());
    assert_eq!(main.get::<String>("plain").unwrap(), None);
    assert_eq!(main.ttl("plain").unwrap(), None);

    // The longest duration is held, not wrapped around into the past.
    assert!(child.expire("n", Duration::MAX).unwrap());
    ttl_within(&main, "n", 100 * YEAR, Duration::MAX);
    assert_eq!(main.get::<i64>("n").unwrap(), Some(3));
    // The shortest that is not zero still makes a deadline.
    child.set("brief", &0).unwrap();
    assert!(child.expire("brief", Duration::from_nanos(1)).unwrap());

    for store in [&main, &child] {
        assert!(matches!(store.ttl(""), Err(Error::EmptyKey)));
        assert!(matches!(store.expire("", minute), Err(Error::EmptyKey)));
        assert!(matches!(store.persist(""), Err(Error::EmptyKey)));
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert!(matches!(store.ttl(&long), Err(Error::KeyTooLong { .. })));
    }

    // In a batch, `contains` and `ttl` together tell a missing key from
    // one without a deadline, at one instant.
    let mut batch = Batch::new();
    batch
        .contains("nothing")
        .ttl("nothing")
        .set("b", &1)
        .ttl("b")
        .expire("b", minute)
        .expire("nothing", minute)
        .persist("b")
        .persist("b")
        .expire("b", Duration::ZERO)
        .contains("b");
    let out = child.batch(&batch).unwrap();
    assert_eq!(
        out,
        vec![
            Outcome::Contains(false),
            Outcome::Ttl(None),
            Outcome::Set,
            Outcome::Ttl(None),
            Outcome::Expiring(true),
            Outcome::Expiring(false),
            Outcome::Persisted(true),
            Outcome::Persisted(false),
            Outcome::Expiring(true),
            Outcome::Contains(false),
        ]
    );
    let mut batch = Batch::new();
    batch.set_with_ttl("t", &1, minute).ttl("t");
    match &child.batch(&batch).unwrap()[1] {
        Outcome::Ttl(Some(d)) => assert!(*d > minute - WAIT && *d <= minute, "{d:?}"),
        other => panic!("{other:?}"),
    }
    let mut bad = Batch::new();
    bad.ttl("ok").expire("", minute);
    assert!(matches!(
        child.batch(&bad),
        Err(Error::InvalidBatch { index: 1, .. })
    ));

    // The async forms give the same answers.
    block_on(async {
        assert!(child.expire_async("t", 2 * minute).await.unwrap());
        let left = child.ttl_async("t").await.unwrap().unwrap();
        assert!(left > 2 * minute - WAIT && left <= 2 * minute);
        assert!(child.persist_async("t").await.unwrap());
        assert_eq!(child.ttl_async("t").await.unwrap(), None);
        assert!(!child.persist_async("t").await.unwrap());
        assert!(!child.expire_async("missing", minute).await.unwrap());
    });
}

/// What the deadlines do as main's clock moves: not on Redis.
pub fn ttl_counts_down_and_expired_keys_are_missing(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    let ten = Duration::from_secs(10);
    child.set_with_ttl("k", &1, ten).unwrap();
    h.advance(Duration::from_secs(4));
    // Main's clock decides, to the nanosecond.
    assert_eq!(child.ttl("k").unwrap(), Some(Duration::from_secs(6)));
    h.advance(Duration::from_secs(6));
    // After expiry the key is missing for every query, even before a purge.
    assert_eq!(child.ttl("k").unwrap(), None);
    assert!(!child.expire("k", ten).unwrap());
    assert!(!child.persist("k").unwrap());
    assert!(!main.contains("k").unwrap());
    // Gone for good once purged (the background purge may have been first).
    main.purge_expired().unwrap();
    assert_eq!(main.ttl("k").unwrap(), None);

    // Persist, then the old deadline passes: the key stays.
    child.set_with_ttl("kept", &1, ten).unwrap();
    assert!(child.persist("kept").unwrap());
    h.advance(2 * ten);
    assert_eq!(main.get::<i32>("kept").unwrap(), Some(1));
    assert_eq!(main.purge_expired().unwrap(), 0);

    // Expire gives a deadline to a key that had none; it then goes.
    child.set("later", &1).unwrap();
    assert!(child.expire("later", Duration::from_nanos(1)).unwrap());
    assert_eq!(child.ttl("later").unwrap(), Some(Duration::from_nanos(1)));
    h.advance(Duration::from_nanos(1));
    assert!(!main.contains("later").unwrap());
    assert!(!child.persist("later").unwrap());

    // Expire that shortens, then lengthens, a deadline.
    child.set_with_ttl("moved", &1, ten).unwrap();
    assert!(child.expire("moved", Duration::from_secs(1)).unwrap());
    assert!(child.expire("moved", Duration::from_secs(30)).unwrap());
    h.advance(ten);
    assert_eq!(child.ttl("moved").unwrap(), Some(Duration::from_secs(20)));

    // A zero expire is a removal watchers see; persist and expire change
    // no value, so they see nothing of those.
    let watch = main.watch("w.").unwrap();
    child.set("w.a", &1).unwrap();
    assert!(child.expire("w.a", ten).unwrap());
    assert!(child.persist("w.a").unwrap());
    assert!(child.expire("w.a", Duration::ZERO).unwrap());
    let first = watch.recv_timeout(WAIT).unwrap();
    assert!(!first.is_removal());
    let second = watch.recv_timeout(WAIT).unwrap();
    assert_eq!(second.key, "w.a");
    assert!(second.is_removal());
}

/// `keys_matching` reads globs as Redis's KEYS does: runs on Redis too.
pub fn keys_matching_reads_globs_as_redis_does(h: &dyn Harness) {
    let (main, child) = (h.main(), h.child("c"));
    let all = [
        "user.1", "user.22", "user.x", "users", "user.[a]", "a*b", "a?b", "ab", r"a\b", "q[1]",
        "é.1", "%.txt",
    ];
    let mut batch = Batch::new();
    for key in all {
        batch.set(key, &0);
    }
    child.batch(&batch).unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("user.*", &["user.1", "user.22", "user.[a]", "user.x"]),
        ("user.?", &["user.1", "user.x"]),
        ("user.[0-9]*", &["user.1", "user.22"]),
        ("user.[^0-9]*", &["user.[a]", "user.x"]),
        ("user.[1x]", &["user.1", "user.x"]),
        (r"user.\[a\]", &["user.[a]"]),
        ("user.[[]a]", &["user.[a]"]),
        (r"a\*b", &["a*b"]),
        (r"a\?b", &["a?b"]),
        ("a*b", &["a*b", "a?b", r"a\b", "ab"]),
        ("a?b", &["a*b", "a?b", r"a\b"]),
        (r"a\\b", &[r"a\b"]),
        (r"q\[1\]", &["q[1]"]),
        ("é.?", &["é.1"]),
        ("%.*", &["%.txt"]),
        ("*.txt", &["%.txt"]),
        ("user.[", &[]),
        ("nothing*", &[]),
        ("", &[]),
        ("users", &["users"]),
    ];
    for store in [&main, &child] {
        for (pattern, want) in cases {
            assert_eq!(store.keys_matching(pattern).unwrap(), *want, "{pattern:?}");
        }
        let mut every: Vec<&str> = all.to_vec();
        every.sort_unstable();
        assert_eq!(store.keys_matching("*").unwrap(), every);
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert!(matches!(
            store.keys_matching(&long),
            Err(Error::KeyTooLong { .. })
        ));
    }

    // A prefix with many keys, among as many that do not match.
    let mut batch = Batch::new();
    for i in 0..2000 {
        batch
            .set(&format!("many.{i}"), &i)
            .set(&format!("manx.{i}"), &i);
    }
    child.batch(&batch).unwrap();
    let many = main.keys_matching("many.*").unwrap();
    assert_eq!(many.len(), 2000);
    assert!(many.windows(2).all(|w| w[0] < w[1]), "sorted");
    assert_eq!(child.keys_matching("many.1??").unwrap().len(), 100);
    assert_eq!(child.keys_matching("man[xy].1999").unwrap().len(), 2);
    assert_eq!(child.keys_matching("man?.*").unwrap().len(), 4000);

    block_on(async {
        assert_eq!(
            child.keys_matching_async("user.?").await.unwrap(),
            ["user.1", "user.x"]
        );
    });
}

fn block_on<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f);
}
