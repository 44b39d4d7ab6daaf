//! Main's own sets, for an instruction-count profile of what the shared
//! read path adds to them:
//!
//! `valgrind --tool=callgrind target/release/setcost on|off [N]`
//!
//! Fills a main's store with 100,000 keys (or `KEYS` from the environment)
//! of 24-byte values, shared reads on or off, then sets `N` (default
//! 200,000) of them again in a random order, as the benchmark's "main set"
//! line does, and prints the time per set (meaningful outside callgrind).
//! `THREADS` (default 1) splits the sets between that many threads.

use std::hint::black_box;

use serde_bytes::ByteBuf;
use yuki_ipc_transport::Node;
use yuki_storage::Store;

const KEYS: usize = 100_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let shared = match args.next().as_deref() {
        Some("on") => true,
        Some("off") => false,
        _ => {
            eprintln!("usage: setcost on|off [N]");
            std::process::exit(2);
        }
    };
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let keys_n: usize = std::env::var("KEYS")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(KEYS);
    let node = Node::builder()
        .independent_main()
        .shared_reads(shared)
        .init()
        .expect("a main");
    let store = Store::attach(node.transport()).expect("a store");
    assert_eq!(store.shares_reads(), shared, "shared reads as asked");
    let keys: Vec<String> = (0..keys_n).map(|i| format!("key:{i:06}")).collect();
    let value = ByteBuf::from(vec![7u8; 24]);
    for k in &keys {
        store.set(k, &value).expect("set");
    }
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
        .max(1);
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (store, keys, value) = (&store, &keys, &value);
            s.spawn(move || {
                let mut x = 0x5eedu64 + t as u64;
                for _ in 0..n / threads {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    black_box(store.set(&keys[x as usize % keys_n], value).is_ok());
                }
            });
        }
    });
    if n > 0 {
        let ns = started.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "{ns:.1} ns per set ({threads} threads), shared reads {}",
            if shared { "on" } else { "off" }
        );
    }
}
