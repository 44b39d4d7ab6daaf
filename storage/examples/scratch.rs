use std::hint::black_box;
use std::time::Instant;
use yuki_channel::InThreadTransport;
use yuki_storage::Store;

fn main() {
    let keys: Vec<String> = (0..10_000).map(|i| format!("user:{i:06}")).collect();
    let value = "v".repeat(32);
    let t = InThreadTransport::main();
    let main = Store::attach(t.clone()).unwrap();
    let child = Store::attach(t.connect("c").unwrap()).unwrap();
    for k in &keys {
        main.set(k, &value).unwrap();
    }
    let n = 100_000;
    let key = |i: usize| &keys[(i.wrapping_mul(7919)) % keys.len()];
    let mut best = [f64::MAX; 2];
    for _ in 0..20 {
        let t0 = Instant::now();
        for i in 0..n {
            black_box(child.get::<String>(key(i)).unwrap());
        }
        best[0] = best[0].min(t0.elapsed().as_nanos() as f64 / n as f64);
        let t0 = Instant::now();
        for i in 0..n {
            child.set(key(i), &value).unwrap();
        }
        best[1] = best[1].min(t0.elapsed().as_nanos() as f64 / n as f64);
    }
    println!(
        "in-thread child get {:.0} ns, set {:.0} ns",
        best[0], best[1]
    );
}
