//! A value over the store's limit is refused while it is encoded: setting a
//! 50 MB value under a 1 MiB limit never holds its encoding whole.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde_bytes::ByteBuf;
use yuki_channel::InThreadTransport;
use yuki_storage::{Config, Error, Store};

/// Counts the bytes this test binary holds, and the most it held.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = HELD.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: the caller's layout, as the trait requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MAX: usize = 1 << 20;
const BIG: usize = 50_000_000;

/// Sets `value` and checks it was refused, naming its full size, while
/// holding at most about the limit meanwhile.
fn refused<V: Serialize>(store: &Store, what: &str, value: &V) {
    let before = HELD.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let err = store.set("blob", value).unwrap_err();
    let grew = PEAK.load(Ordering::SeqCst) - before;
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
