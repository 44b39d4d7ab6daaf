//! The shared suite against a store local to one process.

mod suite;

use std::sync::Arc;
use std::time::Duration;

use yuki_storage::{Config, ManualClock, Store};

use suite::{Harness, store_suite};

struct Local {
    store: Store,
    clock: Arc<ManualClock>,
}

fn local() -> Local {
    let clock = Arc::new(ManualClock::default());
    Local {
        store: Store::local_with(Config::default().clock(clock.clone()).shards(8)),
        clock,
    }
}

impl Harness for Local {
    fn main(&self) -> Store {
        self.store.clone()
    }
    fn child(&self, _name: &str) -> Store {
        self.store.clone()
    }
    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

store_suite!(local());

#[test]
fn the_suite_list_names_every_generated_test() {
    let names: Vec<&str> = suite::ALL.iter().map(|(n, _)| *n).collect();
    assert_eq!(names.len(), 20);
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
}

/// A value whose encoding always fails.
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to be encoded"))
    }
}

#[test]
fn a_value_that_cannot_be_encoded_names_the_key_and_type() {
    let store = Store::local();
    match store.set("k", &Unencodable) {
        Err(yuki_storage::Error::Encode {
            key,
            type_name,
            reason,
        }) => {
            assert_eq!(key, "k");
            assert!(type_name.ends_with("Unencodable"), "{type_name}");
            assert!(reason.contains("refuses"), "{reason}");
        }
        other => panic!("expected Encode, got {other:?}"),
    }
    let mut batch = yuki_storage::Batch::new();
    batch.set("a", &1).set("b", &Unencodable);
    assert!(matches!(
        store.batch(&batch),
        Err(yuki_storage::Error::InvalidBatch { index: 1, .. })
    ));
    assert!(store.is_empty().unwrap());
}

#[test]
fn clones_share_data_and_separate_stores_do_not() {
    let a = Store::local();
    let b = a.clone();
    a.set("k", &1).unwrap();
    assert_eq!(b.get::<i32>("k").unwrap(), Some(1));
    assert!(Store::local().is_empty().unwrap());
    assert!(a.is_owner());
    assert!(format!("{a:?}").contains("owner"));
}

#[test]
fn a_watch_ends_when_its_store_is_dropped() {
    let store = Store::local_with(Config::default().purge_every(Duration::from_millis(1)));
    store
        .set_with_ttl("t", &1, Duration::from_secs(60))
        .unwrap();
    let watch = store.watch("").unwrap();
    store.set("k", &1).unwrap();
    drop(store);
    // Changes made before still arrive; then the end, not a hang.
    assert_eq!(watch.recv_timeout(suite::WAIT).unwrap().key, "k");
    assert!(matches!(
        watch.recv_timeout(suite::WAIT),
        Err(yuki_storage::Error::Disconnected(_))
    ));
}

#[test]
fn stores_and_watches_cross_threads() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    fn sendable<T: Send + 'static>() {}
    shareable::<Store>();
    sendable::<yuki_storage::Watch>();
    sendable::<yuki_storage::Batch>();
    shareable::<yuki_storage::Error>();
}

#[test]
fn async_forms_can_be_spawned_on_a_multi_thread_runtime() {
    fn send<F: std::future::Future + Send>(_: F) {}
    let store = Store::local();
    let batch = yuki_storage::Batch::new();
    send(store.get_async::<i32>("k"));
    send(store.set_async("k", &1));
    send(store.ttl_async("k"));
    send(store.expire_async("k", Duration::ZERO));
    send(store.persist_async("k"));
    send(store.keys_matching_async("*"));
    send(store.batch_async(&batch));
    send(store.watch_async("k"));
}
