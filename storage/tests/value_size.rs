//! A value over the store's limit is refused while it is encoded: setting a
//! 50 MB value under a 1 MiB limit never holds its encoding whole.

use serde::Serialize;
use serde_bytes::ByteBuf;
use yuki_channel::InThreadTransport;
use yuki_storage::{Config, Error, Store};
use yuki_testkit::CountingAllocator;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::new();

const MAX: usize = 1 << 20;
const BIG: usize = 50_000_000;

/// Sets `value` and checks it was refused, naming its full size, while
/// holding at most about the limit meanwhile.
fn refused<V: Serialize>(store: &Store, what: &str, value: &V) {
    ALLOCATOR.start();
    let err = store.set("blob", value).unwrap_err();
    let grew = ALLOCATOR.grown();
    assert!(
        matches!(err, Error::ValueTooLarge { len, max: MAX, .. } if len > BIG),
        "{what}: {err:?}"
    );
    assert!(
        grew <= 2 * MAX,
        "{what}: setting held {grew} more bytes; the encoding stops at the limit"
    );
}

#[test]
fn an_oversized_value_is_refused_without_being_encoded_whole() {
    let network = InThreadTransport::main();
    let config = Config::default().max_value_len(MAX);
    let main = Store::attach_with(network.clone(), config.clone()).unwrap();
    let child = Store::attach_with(network.connect("worker").unwrap(), config).unwrap();
    let bytes = ByteBuf::from(vec![1u8; BIG]);
    let text = "x".repeat(BIG);
    let words = vec![u32::MAX; BIG / 4];
    for (name, store) in [("main", &main), ("child", &child)] {
        refused(store, &format!("{name}, bytes"), &bytes);
        refused(store, &format!("{name}, a string"), &text);
        refused(store, &format!("{name}, some bytes"), &Some(&bytes));
        refused(store, &format!("{name}, a Vec<u32>"), &words);
    }
    // What fits still goes in.
    child.set("blob", &ByteBuf::from(vec![2u8; 1000])).unwrap();
    assert_eq!(main.get::<ByteBuf>("blob").unwrap().unwrap().len(), 1000);
}
