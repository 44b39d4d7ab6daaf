//! One compact log line per event, stamped with the time since start and
//! the process it came from, so the output of main and its children reads
//! as one story.

use std::fmt;
use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Main's start time (milliseconds since the Unix epoch), passed to the
/// children so every process counts seconds from the same instant.
pub const EPOCH_ENV: &str = "YUKI_DEMO_EPOCH";

/// The line prefix: seconds since the demo started and the process name.
#[derive(Debug)]
struct Stamp {
    start: SystemTime,
    process: String,
}

impl FormatTime for Stamp {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write!(
            w,
            "{:>5.2}s {:<6}",
            self.start.elapsed().unwrap_or_default().as_secs_f64(),
            self.process
        )
    }
}

/// When the demo started: main's start time in a child, now in main.
pub fn epoch() -> SystemTime {
    std::env::var(EPOCH_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
        .unwrap_or_else(SystemTime::now)
}

/// `epoch` as the value of [`EPOCH_ENV`].
pub fn epoch_value(epoch: SystemTime) -> String {
    let ms = epoch
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    ms.to_string()
}

/// Installs the logger for `process` (`RUST_LOG` overrides the levels) and
/// returns the instant its times count from.
pub fn init(process: &str) -> SystemTime {
    let start = epoch();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,yuki_examples=info"));
    let _ = tracing_subscriber::fmt()
        .compact()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .with_target(false)
        .with_level(false)
        .with_timer(Stamp {
            start,
            process: process.to_owned(),
        })
        .try_init();
    start
}
