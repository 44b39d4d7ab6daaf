//! Small timing helpers shared by the benchmark modules.

use std::time::{Duration, Instant};

/// Runs `f` `n` times and returns the mean time of one run, in microseconds.
pub fn mean_us(n: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Operations per second, in millions, for `ops` operations done in `elapsed`.
pub fn mops(ops: u64, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64() / 1e6
}

/// The `q` quantile (0.0..=1.0) of `samples`, which it sorts.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[i]
}
