//! Runs the built demo binary: it must end by itself (or on Ctrl+C) with its
//! summary, and leave no child process behind.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Set on the demo (and so inherited by its children) to find them in /proc.
const MARK_ENV: &str = "YUKI_DEMO_TEST_MARK";

/// The demo under test: killed with its process group on every path.
struct Demo {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    mark: String,
}

impl Demo {
    fn start(seconds: &str, mark: &str) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_demo"))
            .args(["--seconds", seconds])
            .env(MARK_ENV, mark)
            .env_remove("YUKI_BOOTSTRAP")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the demo binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
            mark: mark.to_owned(),
        }
    }

    /// Waits for a line containing `text`, failing after `timeout`.
    fn expect_line(&mut self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no line with {text:?} within {timeout:?}; output:\n{}",
                        self.seen.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the demo ended without {text:?}; output:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// Reads the rest of the output (the demo closes stdout when it exits)
    /// and returns every line seen.
    fn finish(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "the demo did not end within {timeout:?}; output:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
        let status = self.child.wait().expect("waiting for the demo");
        assert!(
            status.success(),
            "demo failed ({status}); output:\n{}",
            self.seen.join("\n")
        );
        self.seen.clone()
    }

    /// Processes still alive (not zombies) that carry this run's mark.
    fn survivors(&self) -> Vec<u32> {
        let needle = format!("{MARK_ENV}={}", self.mark);
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
                found.push(pid);
            }
        }
        found
    }

    /// Asserts that no process of this run is left, giving the kernel up to
    /// `timeout` to finish killing them.
    fn assert_no_survivors(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.survivors();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "processes left behind: {left:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.survivors() {
            // SAFETY: kill only sends a signal; the pid carries this test's mark.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

fn mark(name: &str) -> String {
    format!("{name}-{}-{:?}", std::process::id(), Instant::now())
}

fn summary(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("summary: "))
        .collect()
}

#[test]
fn demo_restarts_its_hosts_and_ends_with_a_summary() {
    // One second is too short for the hosts' scripted restarts (the crash
    // comes after 20 ticks of 100 ms): the demo must wait for them past
    // its time, however slow the machine, and still end by itself.
    let mut demo = Demo::start("1", &mark("full"));
    demo.expect_line("spawned plugin host chat", Duration::from_secs(10));
    demo.expect_line("spawned plugin host games", Duration::from_secs(10));
    demo.expect_line("chat asks for a restart", Duration::from_secs(10));
    demo.expect_line("hook: chat restarts on request", Duration::from_secs(10));
    demo.expect_line("crashing on purpose", Duration::from_secs(10));
    demo.expect_line(
        "hook: games restarts by its policy",
        Duration::from_secs(10),
    );
    let lines = demo.finish(Duration::from_secs(20));
    let summary = summary(&lines);
    let has = |text: &str| summary.iter().any(|l| l.contains(text));
    assert!(has("store ("), "{summary:#?}");
    assert!(has("config = BotConfig"), "{summary:#?}");
    assert!(has("count.chat.received = "), "{summary:#?}");
    assert!(has("count.games.seen_from_chat = "), "{summary:#?}");
    assert!(has("runs.chat = 2"), "{summary:#?}");
    assert!(has("runs.games = 2"), "{summary:#?}");
    assert!(has("messages main received: "), "{summary:#?}");
    assert!(
        has("games ran 2 time(s), 1 restart(s) by policy"),
        "{summary:#?}"
    );
    assert!(has("plugin hosts still running: 0"), "{summary:#?}");
    demo.assert_no_survivors(Duration::from_secs(5));
}

#[test]
fn ctrl_c_stops_every_child() {
    let mut demo = Demo::start("60", &mark("ctrl-c"));
    demo.expect_line("first message from", Duration::from_secs(10));
    // SAFETY: kill only sends a signal, to the demo this test started.
    unsafe { libc::kill(demo.child.id() as libc::pid_t, libc::SIGINT) };
    demo.expect_line("Ctrl+C: stopping the plugin hosts", Duration::from_secs(10));
    let lines = demo.finish(Duration::from_secs(20));
    let summary = summary(&lines);
    assert!(
        summary
            .iter()
            .any(|l| l.contains("plugin hosts still running: 0")),
        "{summary:#?}"
    );
    demo.assert_no_survivors(Duration::from_secs(5));
}
