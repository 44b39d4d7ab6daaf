//! The yuki demo: a bot core with two plugin-host child processes sharing a
//! store, pub/sub topics and a channel.
//!
//! `cargo run --release -p yuki-examples --bin demo [-- --seconds N]`

use std::process::ExitCode;
use std::time::Duration;

use yuki_examples::demo;

fn main() -> ExitCode {
    let mut run_for = demo::DEFAULT_RUN;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().map(|v| v.parse::<f64>())) {
            ("--seconds", Some(Ok(s))) if s > 0.0 && s < 3600.0 => {
                run_for = Duration::from_secs_f64(s)
            }
            _ => {
                eprintln!("usage: demo [--seconds N]   (N between 0 and 3600; default 8)");
                return ExitCode::from(2);
            }
        }
    }
    match demo::run(run_for) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}
