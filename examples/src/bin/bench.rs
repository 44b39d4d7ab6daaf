//! The yuki benchmark: every figure beside its floor and its peer, in one run.
//!
//! `cargo run --release -p yuki-examples --bin bench [-- --quick] [--out DIR]`
//!
//! Prints the table, and writes it as `bench.md` and `bench.csv` with the
//! chart `bench.svg` into `DIR` (default: `target/bench` beside the binary's
//! `target/release`).

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use yuki_examples::report::Report;

fn main() -> ExitCode {
    if yuki_examples::bench::child::run_if_child() {
        return ExitCode::SUCCESS;
    }
    let Some(Options { quick, out, only }) = options() else {
        eprintln!(
            "usage: bench [--quick] [--out DIR] [--only AREA,AREA] (areas: ipc, links, channel, store, shmread, pubsub, queue, redis)"
        );
        return ExitCode::from(2);
    };
    let started = Instant::now();
    let mut report = Report::default();
    let areas: [(&str, Area); 8] = [
        ("ipc", yuki_examples::bench::ipc::run),
        ("links", yuki_examples::bench::links::run),
        ("channel", yuki_examples::bench::channel::run),
        ("store", yuki_examples::bench::store::run),
        ("shmread", yuki_examples::bench::shmread::run),
        ("pubsub", yuki_examples::bench::pubsub::run),
        ("queue", yuki_examples::bench::queue::run),
        ("redis", yuki_examples::bench::redis_backend::run),
    ];
    for (area, run) in areas {
        if only.as_ref().is_some_and(|o| !o.iter().any(|a| a == area)) {
            continue;
        }
        let start = Instant::now();
        // A panic (a library's assertion, an `expect` in a bench child's
        // helper) fails its area, not the whole run.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(&mut report, quick)))
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&*panic))));
        if let Err(e) = outcome {
            report.fail(area, e);
        }
        println!("-- {area}: {:.1} s", start.elapsed().as_secs_f64());
    }
    println!("\n{}", report.to_markdown());
    println!(
        "{} run in {:.0} s",
        if quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = write(&report, &out) {
        eprintln!("writing the report into {} failed: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!(
        "wrote bench.md, bench.csv and bench.svg into {}",
        out.display()
    );
    // Slow figures never fail the run; an area that failed, or a figure
    // that measured nothing, does.
    let broken: Vec<&str> = report
        .lines
        .iter()
        .filter(|l| !(l.ours.is_finite() && l.ours > 0.0))
        .map(|l| l.figure.as_str())
        .collect();
    if !broken.is_empty() {
        eprintln!("the benchmark measured nothing for: {broken:?}");
    }
    if !report.errors.is_empty() {
        let areas: Vec<&str> = report.errors.iter().map(|(a, _)| a.as_str()).collect();
        eprintln!("failed areas: {}", areas.join(", "));
    }
    if report.lines.is_empty() || !broken.is_empty() || !report.errors.is_empty() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The text a panic carries, if it is text.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// One area's benchmark: adds its lines to the report (`true`: quick), or
/// says why it failed.
type Area = fn(&mut Report, bool) -> Result<(), String>;

/// The command line.
struct Options {
    /// A reduced run, for CI.
    quick: bool,
    /// Where the files go.
    out: PathBuf,
    /// The areas to run (all when `None`).
    only: Option<Vec<String>>,
}

/// `--quick`, `--out DIR` and `--only AREA,AREA`, or `None` for anything else.
fn options() -> Option<Options> {
    let mut quick = false;
    let mut out = None;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--out" => out = Some(PathBuf::from(args.next()?)),
            "--only" => only = Some(args.next()?.split(',').map(str::to_owned).collect()),
            _ => return None,
        }
    }
    Some(Options {
        quick,
        out: out.unwrap_or_else(default_out),
        only,
    })
}

/// `target/bench` when the binary lives in `target/<profile>/`, else `bench`.
fn default_out() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("bench")))
        .unwrap_or_else(|| PathBuf::from("bench"))
}

fn write(report: &Report, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let svg = yuki_examples::chart::svg(report)?;
    for (name, body) in [
        ("bench.md", report.to_markdown()),
        ("bench.csv", report.to_csv()),
        ("bench.svg", svg),
    ] {
        std::fs::write(dir.join(name), body).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}
