//! The yuki benchmark: every figure beside its floor and its peer, in one run.
//!
//! `cargo run --release -p yuki-examples --bin bench [-- --quick]`

use yuki_examples::report::Report;

fn main() {
    if yuki_examples::bench::ipc::child_main()
        || yuki_examples::bench::pubsub::child_main()
        || yuki_examples::bench::store::child_main()
    {
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let mut report = Report::default();
    yuki_examples::bench::ipc::run(&mut report, quick);
    // Each area adds its lines here: yuki_examples::bench::<area>::run(&mut report, quick);
    yuki_examples::bench::channel::run(&mut report, quick);
    yuki_examples::bench::store::run(&mut report, quick);
    yuki_examples::bench::pubsub::run(&mut report, quick);
    yuki_examples::bench::redis_backend::run(&mut report, quick);
    println!("\n{}", report.to_markdown());
}
