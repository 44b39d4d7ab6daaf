//! A multi-process test harness: the test binary re-executes itself as a
//! child that runs a chosen scenario.
//!
//! The parent builds a [`Harness`] inside a `#[test]`; each child is the same
//! test binary started with `<test name> --exact --nocapture` and an
//! environment naming the scenario. The child's run of that same test calls
//! [`run_child`], which sees the scenario and runs the child's body instead of
//! the parent's. A child reports values with [`report`] (one line on its
//! stdout, which the harness reads), and its exit status says whether its body
//! finished without panicking.
//!
//! The harness owns every process it starts: dropping it (a normal return or
//! a panic) kills and reaps them all. [`Harness::command`] builds the same
//! command without starting it, for code that spawns children itself (a
//! `Node::spawn`); every such process carries the harness's run id in its
//! environment, so [`Harness::leftovers`] finds any that outlive the test.

mod os;

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use yuki_channel::sync;

/// Names the scenario a re-executed test binary runs.
pub const SCENARIO_ENV: &str = "YUKI_TESTKIT_SCENARIO";
/// The child's index among the children of one scenario (0, 1, ...).
pub const INDEX_ENV: &str = "YUKI_TESTKIT_INDEX";
/// A random id shared by every process one harness started.
pub const RUN_ENV: &str = "YUKI_TESTKIT_RUN";

const REPORT_PREFIX: &str = "yuki-testkit-report ";
const STARTED: &str = "yuki-testkit-started";
const FINISHED: &str = "yuki-testkit-finished";

/// What a child process was asked to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    name: String,
    index: usize,
}

impl Scenario {
    /// The scenario's name, as given to [`Harness::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This child's index among those started for the scenario.
    pub fn index(&self) -> usize {
        self.index
    }
}

/// The scenario this process was started for, or `None` in the parent.
pub fn scenario() -> Option<Scenario> {
    let name = std::env::var(SCENARIO_ENV).ok()?;
    let index = std::env::var(INDEX_ENV)
        .ok()
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    Some(Scenario { name, index })
}

/// In a child started by a harness, runs `body` and returns `true`; in the
/// parent returns `false` at once. Put it first in the test:
///
/// ```no_run
/// #[test]
/// fn two_children_report() {
///     if yuki_testkit::run_child(|s| yuki_testkit::report("index", s.index())) {
///         return;
///     }
///     let mut h = yuki_testkit::Harness::new();
///     h.spawn_n("report", 2).unwrap();
///     for outcome in h.wait_all() {
///         outcome.assert_success();
///     }
/// }
/// ```
pub fn run_child(body: impl FnOnce(&Scenario)) -> bool {
    let Some(s) = scenario() else {
        return false;
    };
    emit(STARTED);
    body(&s);
    emit(FINISHED);
    true
}

/// Reports `key = value` from a child to the harness that started it.
///
/// Values are one line of text; newlines in `value` are replaced by spaces.
pub fn report(key: &str, value: impl fmt::Display) {
    let value = value.to_string().replace('\n', " ");
    emit(&format!("{REPORT_PREFIX}{key} {value}"));
}

/// Writes `line` in one write(2), starting on a fresh line: processes that
/// share the harness's pipe (grandchildren, libtest's partial "test ... ok"
/// lines) cannot split it, and it never continues someone else's line.
fn emit(line: &str) {
    let mut out = io::stdout().lock();
    let _ = out.flush();
    let _ = out.write_all(format!("\n{line}\n").as_bytes());
    let _ = out.flush();
}

/// Identifies one child of a [`Harness`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcId(usize);

/// How one child ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The scenario it ran.
    pub scenario: String,
    /// Its index within the scenario.
    pub index: usize,
    /// Its exit status; `None` when it had to be killed at the time-out.
    pub status: Option<ExitStatus>,
    /// Whether it was still running at the deadline (and was killed).
    pub timed_out: bool,
    /// Whether the child's body ran to its end (not a panic, not a missing test).
    pub finished: bool,
    /// Every [`report`] the child made, in order.
    pub reports: Vec<(String, String)>,
    /// Its other stdout lines, for diagnostics.
    pub output: Vec<String>,
}

impl Outcome {
    /// Whether the child ran its body to the end and exited with success.
    pub fn success(&self) -> bool {
        self.finished && self.status.is_some_and(|s| s.success())
    }

    /// The last value reported under `key`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.reports
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value reported under `key`, in order.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.reports
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Panics with the child's story unless it succeeded.
    pub fn assert_success(&self) {
        assert!(self.success(), "child failed: {self:#?}");
    }
}

#[derive(Default)]
struct ProcInner {
    /// The child exited; its zombie may not be reaped yet, so its pid is ours.
    exited: bool,
    status: Option<ExitStatus>,
    stdout_done: bool,
    reports: Vec<(String, String)>,
    output: Vec<String>,
    started: bool,
    finished: bool,
}

struct ProcState {
    pid: u32,
    process: os::Process,
    scenario: String,
    index: usize,
    inner: Mutex<ProcInner>,
    changed: Condvar,
}

impl ProcState {
    fn lock(&self) -> MutexGuard<'_, ProcInner> {
        sync::lock(&self.inner)
    }

    /// Kills it unless it already exited (then it is not yet reaped, or
    /// about to be: its pid cannot have been reused).
    fn kill(&self) {
        let inner = self.lock();
        if !inner.exited {
            self.process.kill();
        }
    }

    #[cfg(unix)]
    fn signal(&self, sig: i32) {
        let inner = self.lock();
        if !inner.exited {
            self.process.signal(sig);
        }
    }

    /// Waits until the child exited and its stdout closed, or the deadline.
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut inner = self.lock();
        while !(inner.exited && inner.stdout_done && inner.status.is_some()) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            inner = sync::wait_timeout(&self.changed, inner, deadline - now).0;
        }
        true
    }

    fn outcome(&self, timed_out: bool) -> Outcome {
        let inner = self.lock();
        Outcome {
            scenario: self.scenario.clone(),
            index: self.index,
            status: if timed_out { None } else { inner.status },
            timed_out,
            finished: inner.finished,
            reports: inner.reports.clone(),
            output: inner.output.clone(),
        }
    }
}

/// Starts, watches and always cleans up the child processes of one test.
///
/// Dropping the harness kills every child still running and reaps it, on
/// every path out of the test, panics included.
pub struct Harness {
    test: String,
    run: String,
    timeout: Duration,
    started: Instant,
    procs: Vec<Arc<ProcState>>,
    next_index: HashMap<String, usize>,
}

impl Harness {
    /// A harness for the test running on this thread (libtest names each
    /// test's thread after the test), with a 30 s deadline.
    ///
    /// # Panics
    ///
    /// When the thread carries no test name (use [`Harness::for_test`]).
    pub fn new() -> Harness {
        let name = std::thread::current()
            .name()
            .filter(|n| *n != "main")
            .map(str::to_owned)
            .expect("cannot tell the test's name from this thread; use Harness::for_test(name)");
        Harness::for_test(&name)
    }

    /// A harness for the test named `test` (its full path, as `cargo test`
    /// prints it).
    pub fn for_test(test: &str) -> Harness {
        Harness {
            test: test.to_owned(),
            run: run_id(),
            timeout: Duration::from_secs(30),
            started: Instant::now(),
            procs: Vec::new(),
            next_index: HashMap::new(),
        }
    }

    /// Sets the deadline for the whole test, counted from the harness's creation.
    pub fn timeout(mut self, timeout: Duration) -> Harness {
        self.timeout = timeout;
        self
    }

    /// The instant after which waits give up and children are killed.
    pub fn deadline(&self) -> Instant {
        self.started + self.timeout
    }

    /// The id shared by every process this harness started (see [`RUN_ENV`]).
    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// The command that re-executes this test as a child running `scenario`,
    /// not started. Its stdout is discarded; stderr is inherited so a child's
    /// panic shows in the test's output.
    ///
    /// Give it to code that spawns children itself (such as `Node::spawn`).
    /// The harness does not own such processes; [`Harness::leftovers`]
    /// still finds them.
    pub fn command(&self, scenario: &str, index: usize) -> Command {
        let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
        let mut cmd = Command::new(exe);
        cmd.args([
            self.test.as_str(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCENARIO_ENV, scenario)
        .env(INDEX_ENV, index.to_string())
        .env(RUN_ENV, &self.run)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        cmd
    }

    /// Starts one child running `scenario`; indices count up per scenario.
    pub fn spawn(&mut self, scenario: &str) -> io::Result<ProcId> {
        self.spawn_with(scenario, |_| {})
    }

    /// Like [`Harness::spawn`], letting `configure` change the command first
    /// (an environment variable, a working directory).
    pub fn spawn_with(
        &mut self,
        scenario: &str,
        configure: impl FnOnce(&mut Command),
    ) -> io::Result<ProcId> {
        let index = self.next_index.entry(scenario.to_owned()).or_insert(0);
        let i = *index;
        *index += 1;
        let mut cmd = self.command(scenario, i);
        cmd.stdout(Stdio::piped());
        configure(&mut cmd);
        self.spawn_command(scenario, i, cmd)
    }

    /// Starts `n` children running `scenario`.
    pub fn spawn_n(&mut self, scenario: &str, n: usize) -> io::Result<Vec<ProcId>> {
        (0..n).map(|_| self.spawn(scenario)).collect()
    }

    fn spawn_command(
        &mut self,
        scenario: &str,
        index: usize,
        mut cmd: Command,
    ) -> io::Result<ProcId> {
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take();
        let state = Arc::new(ProcState {
            pid: child.id(),
            process: os::Process::new(child),
            scenario: scenario.to_owned(),
            index,
            inner: Mutex::default(),
            changed: Condvar::new(),
        });
        let id = ProcId(self.procs.len());
        self.procs.push(state.clone());

        let waiter = state.clone();
        std::thread::Builder::new()
            .name(format!("testkit-wait-{}", waiter.pid))
            .spawn(move || {
                waiter.process.wait_exited();
                waiter.lock().exited = true;
                let status = waiter.process.reap().ok();
                waiter.lock().status = status;
                waiter.changed.notify_all();
            })?;

        let reader = state;
        std::thread::Builder::new()
            .name(format!("testkit-out-{}", reader.pid))
            .spawn(move || {
                if let Some(out) = stdout {
                    for line in BufReader::new(out).lines() {
                        let Ok(line) = line else { break };
                        let mut inner = reader.lock();
                        // Another process may have left a partial line just
                        // before ours: look for the marker anywhere.
                        if let Some(rest) = line
                            .find(REPORT_PREFIX)
                            .map(|at| &line[at + REPORT_PREFIX.len()..])
                        {
                            let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
                            inner.reports.push((k.to_owned(), v.to_owned()));
                        } else if line.ends_with(STARTED) {
                            inner.started = true;
                        } else if line.ends_with(FINISHED) {
                            inner.finished = true;
                        } else {
                            inner.output.push(line);
                        }
                        drop(inner);
                        reader.changed.notify_all();
                    }
                }
                reader.lock().stdout_done = true;
                reader.changed.notify_all();
            })?;
        Ok(id)
    }

    fn proc(&self, id: ProcId) -> &Arc<ProcState> {
        &self.procs[id.0]
    }

    /// The child's process id.
    pub fn pid(&self, id: ProcId) -> u32 {
        self.proc(id).pid
    }

    /// Kills the child: SIGKILL on Unix, `TerminateProcess` on Windows
    /// (nothing if it already exited).
    pub fn kill(&self, id: ProcId) {
        self.proc(id).kill();
    }

    /// Sends `signal` to the child (nothing if it already exited). Unix
    /// only: Windows has no signals.
    #[cfg(unix)]
    pub fn signal(&self, id: ProcId, signal: i32) {
        self.proc(id).signal(signal);
    }

    /// Waits until the child reports `key` and returns the value, or `None`
    /// when it exits without doing so or the deadline passes.
    pub fn wait_report(&self, id: ProcId, key: &str) -> Option<String> {
        let p = self.proc(id);
        let deadline = self.deadline();
        let mut inner = p.lock();
        loop {
            if let Some((_, v)) = inner.reports.iter().find(|(k, _)| k == key) {
                return Some(v.clone());
            }
            let now = Instant::now();
            if inner.stdout_done || now >= deadline {
                return None;
            }
            inner = sync::wait_timeout(&p.changed, inner, deadline - now).0;
        }
    }

    /// Waits for the child to exit (killing it at the deadline).
    pub fn wait(&self, id: ProcId) -> Outcome {
        let p = self.proc(id);
        if p.wait_until(self.deadline()) {
            return p.outcome(false);
        }
        p.kill();
        p.wait_until(Instant::now() + Duration::from_secs(5));
        p.outcome(true)
    }

    /// Waits for every child to exit (killing those still running at the
    /// deadline) and returns their outcomes in the order started.
    pub fn wait_all(&self) -> Vec<Outcome> {
        (0..self.procs.len())
            .map(|i| self.wait(ProcId(i)))
            .collect()
    }

    /// Processes still alive (not zombies) that carry this harness's run id:
    /// children it started, or children started with [`Harness::command`].
    /// Linux only (it reads `/proc`): elsewhere it finds none.
    pub fn leftovers(&self) -> Vec<u32> {
        let needle = format!("{RUN_ENV}={}", self.run);
        let me = std::process::id();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            // A zombie's environ reads empty: it is dead, only not yet reaped.
            let Ok(env) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                found.push(pid);
            }
        }
        found
    }

    /// Waits (bounded by `within`) until process `pid` (any process, not
    /// only this harness's children) is no longer alive, woken by the
    /// kernel; whether it is gone. Linux only (a pidfd and `/proc`).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// let h = yuki_testkit::Harness::for_test("grandchild_ends_with_main");
    /// let grandchild: u32 = 4242; // reported by a child, say
    /// assert!(h.wait_gone(grandchild, Duration::from_secs(5)));
    /// ```
    #[cfg(target_os = "linux")]
    pub fn wait_gone(&self, pid: u32, within: Duration) -> bool {
        os::wait_gone(pid, Instant::now() + within);
        !alive(pid)
    }

    /// Waits (bounded by `within`) until no process of this run is alive,
    /// and panics naming those still alive. Use it at the end of a test.
    pub fn assert_no_leftovers(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for pid in self.leftovers() {
            os::wait_gone(pid, deadline);
        }
        let left = self.leftovers();
        assert!(
            left.is_empty(),
            "child processes left running after the test: {left:?}"
        );
    }
}

/// Whether `pid` names a process that runs (a zombie has ended).
#[cfg(target_os = "linux")]
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which ends at the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

impl Default for Harness {
    fn default() -> Harness {
        Harness::new()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for p in &self.procs {
            p.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in &self.procs {
            p.wait_until(deadline);
        }
    }
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("test", &self.test)
            .field("run", &self.run)
            .field("children", &self.procs.len())
            .finish()
    }
}

fn run_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (t as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
