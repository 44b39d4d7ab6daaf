use std::collections::HashMap;
use std::hint::black_box;
use std::sync::RwLock;
use std::time::Instant;
use yuki_storage::Store;

fn main() {
    let keys: Vec<String> = (0..10_000).map(|i| format!("user:{i:06}")).collect();
    let value = "v".repeat(32);
    let store = Store::local();
    let bare: RwLock<HashMap<String, Vec<u8>>> = RwLock::new(HashMap::new());
    for k in &keys {
        store.set(k, &value).unwrap();
        bare.write()
            .unwrap()
            .insert(k.clone(), value.as_bytes().to_vec());
    }
    let n = 300_000;
    let mut best = [f64::MAX; 7];
    let key = |i: usize| &keys[(i.wrapping_mul(7919)) % keys.len()];
    for _ in 0..30 {
        let t = Instant::now();
        for i in 0..n {
            black_box(store.get::<String>(key(i)).unwrap());
        }
        let a = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for i in 0..n {
            black_box(store.get_raw(key(i)).unwrap());
        }
        let r = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for i in 0..n {
            let b = store.get_raw(key(i)).unwrap().unwrap();
            black_box(yuki_channel::codec::decode::<String>(&b).unwrap());
        }
        let c = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for i in 0..n {
            let m = bare.read().unwrap();
            black_box(m.get(key(i)).cloned());
        }
        let b = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for i in 0..n {
            let m = bare.read().unwrap();
            black_box(m.contains_key(key(i)));
        }
        let bc = t.elapsed().as_nanos() as f64 / n as f64;
        let bytes = yuki_channel::codec::encode(&value).unwrap();
        let t = Instant::now();
        for _ in 0..n {
            black_box(yuki_channel::codec::decode::<String>(black_box(&bytes)).unwrap());
        }
        let d = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            black_box(black_box(&bytes).to_vec());
        }
        let v = t.elapsed().as_nanos() as f64 / n as f64;
        for (i, x) in [a, r, c, b, bc, d, v].into_iter().enumerate() {
            best[i] = best[i].min(x);
        }
    }
    let [a, r, c, b, bc, d, v] = best;
    println!(
        "get<String> {a:.0} raw {r:.0} raw+decode {c:.0} | bare get {b:.0} contains {bc:.0} | decode {d:.0} borrowed {v:.0} ns"
    );
}
