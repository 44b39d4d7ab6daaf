//! A main that is alive but frozen (SIGSTOP) costs a child's calls a
//! time-out at their deadline, never a hang; once main runs again the same
//! handles work, and the replies that came too late are dropped. A child's
//! store reads, which read main's shared table rather than call main (on
//! by default), go on answering while main is frozen.
//!
//! Three levels: the test (which never stops), "main" (a harness child,
//! stopped and resumed by the test) and main's Node child. The test tells
//! the grandchild when main is stopped through a pipe whose read end both
//! inherit, since main, stopped, can relay nothing.
//!
//! Linux only: the gate is made with `pipe2(O_CLOEXEC)`, so that no child
//! another test forks meanwhile inherits its write end.
#![cfg(target_os = "linux")]

use std::os::fd::RawFd;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use yuki_channel::{Channel, Error as ChannelError, PeerId};
use yuki_ipc_transport::Node;
use yuki_pubsub::{Error as PubSubError, PubSub};
use yuki_storage::{Batch, Error as StoreError, Store};
use yuki_testkit::{Harness, RUN_ENV, report, run_child};

/// The read end of the test's gate pipe, inherited by main and its child.
const GATE_ENV: &str = "YUKI_TEST_GATE_FD";
/// The bound of every wait that is not the subject of a test.
const WAIT: Duration = Duration::from_secs(30);
/// The grandchild's call time-out while main is frozen.
const CALL_TIMEOUT: Duration = Duration::from_millis(300);
/// How long main stays stopped.
const FROZEN: Duration = Duration::from_secs(3);

/// A pipe whose read end survives exec (the write end does not).
struct Gate {
    read: RawFd,
    write: RawFd,
}

impl Gate {
    fn new() -> Gate {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fds[0] is ours; clearing FD_CLOEXEC lets children inherit it.
        assert_eq!(unsafe { libc::fcntl(fds[0], libc::F_SETFD, 0) }, 0);
        Gate {
            read: fds[0],
            write: fds[1],
        }
    }

    fn open(&self, step: u8) {
        // SAFETY: one byte from a live buffer into our own fd.
        let n = unsafe { libc::write(self.write, [step].as_ptr().cast(), 1) };
        assert_eq!(n, 1, "the gate pipe takes a byte");
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        // SAFETY: both fds are ours and closed once.
        unsafe {
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}

/// In main or the grandchild: waits (bounded) for the test's next byte.
fn wait_gate(expected: u8) {
    let fd: RawFd = std::env::var(GATE_ENV).unwrap().parse().unwrap();
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the test never opened gate {expected}");
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        if r > 0 {
            break;
        }
    }
    let mut byte = 0u8;
    // SAFETY: reads one byte into a live local.
    let n = unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) };
    assert_eq!((n, byte), (1, expected), "gate {expected}");
}

/// Resumes a stopped process when dropped, on every path out of the test.
struct Stopped(libc::pid_t);

impl Stopped {
    /// Stops `pid` and returns once the kernel reports it stopped.
    fn stop(pid: u32) -> Stopped {
        let pid = pid as libc::pid_t;
        let guard = Stopped(pid);
        // SAFETY: plain signal to our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        loop {
            // SAFETY: waitid writes only into `info`; WNOWAIT leaves the
            // state for the harness's own waiter.
            let (r, code) = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let r = libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WSTOPPED | libc::WEXITED | libc::WNOWAIT,
                );
                (r, info.si_code)
            };
            if r == 0 {
                assert_eq!(code, libc::CLD_STOPPED, "main exited instead of stopping");
                return guard;
            }
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EINTR)
            );
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: plain signal to our own child (harmless if it is gone).
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The operations a child makes while main is frozen, and once it runs again.
const OPS: [&str; 12] = [
    "get",
    "set",
    "incr",
    "batch",
    "publish",
    "subscribe",
    "send",
    "send_timeout",
    "get_async",
    "store_with_timeout",
    "watch",
    "publish_async",
];

fn store_timeout(e: &StoreError) -> bool {
    matches!(e, StoreError::CallTimeout { .. })
}

fn pubsub_timeout(e: &PubSubError) -> bool {
    matches!(e, PubSubError::CallTimeout { .. })
}

/// `Ok(())` if the operation worked, `Err(true)` if it timed out,
/// `Err(false)` for anything else (logged).
type Outcome = Result<(), bool>;

fn judge<E: std::fmt::Display>(
    op: &str,
    r: Result<(), E>,
    timeout: impl Fn(&E) -> bool,
) -> Outcome {
    r.map_err(|e| {
        let t = timeout(&e);
        if !t {
            eprintln!("{op}: {e}");
        } else if op == "incr" {
            report("incr-error", &e);
        }
        t
    })
}

fn run_op(op: &str, jobs: &Channel<u32>, store: &Store, pubsub: &PubSub, long: bool) -> Outcome {
    let (store, pubsub) = if long {
        (store.with_timeout(WAIT), pubsub.with_timeout(WAIT))
    } else {
        (store.clone(), pubsub.clone())
    };
    match op {
        "get" => judge(op, store.get::<u64>("k").map(drop), store_timeout),
        "set" => judge(op, store.set("k", &7u64), store_timeout),
        "incr" => judge(op, store.incr("n", 1).map(drop), store_timeout),
        "batch" => {
            let mut b = Batch::new();
            b.set("b", &1u8).get("k");
            judge(op, store.batch(&b).map(drop), store_timeout)
        }
        "publish" => judge(op, pubsub.publish("t", &1u8).map(drop), pubsub_timeout),
        "subscribe" => judge(op, pubsub.subscribe::<u8>("s.>").map(drop), pubsub_timeout),
        "send" if long => judge(
            op,
            jobs.send_timeout(1, WAIT).map_err(|e| e.error().clone()),
            |e| matches!(e, ChannelError::CallTimeout { .. }),
        ),
        "send" => judge(op, jobs.send(1).map_err(|e| e.error().clone()), |e| {
            matches!(e, ChannelError::CallTimeout { .. })
        }),
        "send_timeout" => {
            let d = if long {
                WAIT
            } else {
                Duration::from_millis(200)
            };
            match jobs.send_timeout(2, d) {
                Ok(()) => Ok(()),
                Err(e) => {
                    assert_eq!(e.clone().into_inner(), 2, "the value comes back");
                    judge(op, Err(e.error().clone()), |e| {
                        matches!(e, ChannelError::CallTimeout { .. })
                    })
                }
            }
        }
        "get_async" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            judge(
                op,
                rt.block_on(store.get_async::<u64>("k")).map(drop),
                store_timeout,
            )
        }
        "watch" => judge(op, store.watch("w.").map(drop), store_timeout),
        "publish_async" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            judge(
                op,
                rt.block_on(pubsub.publish_async("t", &2u8)).map(drop),
                pubsub_timeout,
            )
        }
        "store_with_timeout" => {
            let s = if long {
                store
            } else {
                store.with_timeout(Duration::from_millis(150))
            };
            judge(op, s.get::<u64>("k").map(drop), |e| match e {
                StoreError::CallTimeout { after, .. } => long || *after < CALL_TIMEOUT,
                _ => false,
            })
        }
        other => panic!("unknown op {other}"),
    }
}

/// Runs every op at once, one thread each, reporting how each ended and
/// when.
fn run_all(phase: &str, jobs: &Channel<u32>, store: &Store, pubsub: &PubSub, long: bool) {
    std::thread::scope(|s| {
        for op in OPS {
            s.spawn(move || {
                let start = Instant::now();
                let outcome = run_op(op, jobs, store, pubsub, long);
                let ms = start.elapsed().as_millis();
                let kind = match outcome {
                    Ok(()) => "ok",
                    Err(true) => "timeout",
                    Err(false) => "error",
                };
                report(&format!("{phase}.{op}"), format!("{kind} {ms}"));
            });
        }
    });
}

fn run_grandchild() {
    let node = Node::builder().call_timeout(CALL_TIMEOUT).init().unwrap();
    let t = node.transport();
    let store = Store::attach(t.clone()).unwrap();
    let pubsub = PubSub::attach(t.clone()).unwrap();
    let jobs = node.channel_bounded::<u32>("jobs", 64).unwrap();
    report("shares-reads", store.shares_reads());
    // Every operation works while main runs (with room for a slow machine).
    run_all("warm", &jobs, &store, &pubsub, true);
    report("ready", 1);
    wait_gate(1);
    run_all("frozen", &jobs, &store, &pubsub, false);
    wait_gate(2);
    run_all("after", &jobs, &store, &pubsub, true);
    // Calls left in flight (a dropped subscription's unsubscribe) are
    // answered before this one; the late replies came before them all. (A
    // write: a read may be answered from shared memory without a call.)
    store.with_timeout(WAIT).set("k", &7u64).unwrap();
    report("pending", node.pending_calls());
}

fn run_main(test: &str) {
    let h = Harness::for_test(test);
    let node = Node::init().unwrap();
    let t = node.transport();
    let _store = Store::attach(t.clone()).unwrap();
    let _pubsub = PubSub::attach(t.clone()).unwrap();
    let mut cmd = h.command("grandchild", 0);
    // Reports reach the test through main's stdout, even while main is stopped.
    cmd.stdout(Stdio::inherit())
        .env(RUN_ENV, std::env::var(RUN_ENV).unwrap());
    let child = node.child("caller", cmd).spawn().unwrap();
    let exit = child.wait_timeout(WAIT * 2).expect("the caller finishes");
    assert!(exit.status.success(), "the caller failed: {exit:?}");
    report("main-done", 1);
}

fn outcome(h: &Harness, main: yuki_testkit::ProcId, key: &str) -> (String, u128) {
    let v = h
        .wait_report(main, key)
        .unwrap_or_else(|| panic!("no report {key}: {:#?}", h.wait(main)));
    let (kind, ms) = v.split_once(' ').unwrap();
    (kind.to_owned(), ms.parse().unwrap())
}

#[test]
fn frozen_main_costs_every_child_call_a_timeout_then_all_work_again() {
    const TEST: &str = "frozen_main_costs_every_child_call_a_timeout_then_all_work_again";
    if run_child(|s| match s.name() {
        "main" => run_main(TEST),
        "grandchild" => run_grandchild(),
        other => panic!("unknown scenario {other}"),
    }) {
        return;
    }
    let gate = Gate::new();
    let mut h = Harness::new().timeout(Duration::from_secs(90));
    let main = h
        .spawn_with("main", |c| {
            c.env(GATE_ENV, gate.read.to_string());
        })
        .unwrap();
    for op in OPS {
        assert_eq!(outcome(&h, main, &format!("warm.{op}")).0, "ok", "{op}");
    }
    assert!(h.wait_report(main, "ready").is_some());
    let shares_reads = h.wait_report(main, "shares-reads").as_deref() == Some("true");
    let on = std::env::var("YUKI_SHARED_READS").as_deref() != Ok("0");
    assert_eq!(shares_reads, on);

    let stopped = Stopped::stop(h.pid(main));
    gate.open(1);
    // The freeze itself: a fixed length, not a wait for an event. A call
    // that waits for main past it gets its answer and fails the test.
    std::thread::sleep(FROZEN);
    drop(stopped);
    for op in OPS {
        let (kind, ms) = outcome(&h, main, &format!("frozen.{op}"));
        let read = ["get", "get_async", "store_with_timeout"].contains(&op);
        if read && shares_reads {
            assert_eq!(kind, "ok", "{op} reads shared memory while main is stopped");
        } else {
            assert_eq!(kind, "timeout", "{op} while main is stopped");
        }
        assert!(ms < 1000, "{op} took {ms} ms to end");
    }
    // The message names the operation, the deadline and the settings.
    let message = h.wait_report(main, "incr-error").unwrap();
    for part in [
        "store incr of \"n\"",
        "300ms",
        "NodeBuilder::call_timeout",
        "Store::with_timeout",
    ] {
        assert!(message.contains(part), "{part:?} is not in {message:?}");
    }
    gate.open(2);
    for op in OPS {
        assert_eq!(outcome(&h, main, &format!("after.{op}")).0, "ok", "{op}");
    }
    assert_eq!(h.wait_report(main, "pending").as_deref(), Some("0"));
    assert!(h.wait_report(main, "main-done").is_some());
    h.wait(main).assert_success();
    h.assert_no_leftovers(Duration::from_secs(10));
}

/// How many calls time out in the leak test.
const TIMED_OUT: usize = 10_000;
/// Of which blocking (the rest are callbacks).
const BLOCKING: usize = 100;

fn run_slow_main(test: &str) {
    let h = Harness::for_test(test);
    let node = Node::init().unwrap();
    let t = node.transport();
    // The service is held closed until the test opens the gate.
    let opened = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let o = opened.clone();
    t.serve(
        "slow",
        Arc::new(move |_: PeerId, req: &[u8], reply: &mut Vec<u8>| {
            let (lock, cv) = &*o;
            let open = cv
                .wait_timeout_while(lock.lock().unwrap(), WAIT, |open| !*open)
                .unwrap()
                .0;
            assert!(*open, "the gate opens");
            reply.extend_from_slice(req);
            Ok(())
        }),
    )
    .unwrap();
    let o = opened.clone();
    std::thread::spawn(move || {
        wait_gate(1);
        *o.0.lock().unwrap() = true;
        o.1.notify_all();
    });
    let mut cmd = h.command("caller", 0);
    cmd.stdout(Stdio::inherit())
        .env(RUN_ENV, std::env::var(RUN_ENV).unwrap());
    let child = node.child("caller", cmd).spawn().unwrap();
    let exit = child.wait_timeout(WAIT * 2).expect("the caller finishes");
    assert!(exit.status.success(), "the caller failed: {exit:?}");
    report("main-done", 1);
}

fn run_slow_caller() {
    let node = Node::init().unwrap();
    let t = node.transport();
    let short = Duration::from_millis(1);
    // Callbacks first: main's link thread is held by the first of them.
    let timed_out = Arc::new(AtomicUsize::new(0));
    let others = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for i in 0..TIMED_OUT - BLOCKING {
        let (timed_out, others, done_tx) = (timed_out.clone(), others.clone(), done_tx.clone());
        t.call_with_within(
            "slow",
            &(i as u64).to_le_bytes(),
            short,
            Box::new(move |r| {
                match r {
                    Err(ChannelError::CallTimeout { .. }) => {
                        timed_out.fetch_add(1, Ordering::SeqCst)
                    }
                    _ => others.fetch_add(1, Ordering::SeqCst),
                };
                let _ = done_tx.send(());
            }),
        );
    }
    for _ in 0..TIMED_OUT - BLOCKING {
        done_rx.recv_timeout(WAIT).expect("every callback runs");
    }
    for _ in 0..BLOCKING {
        let e = t.call_within("slow", b"b", short).unwrap_err();
        assert!(matches!(e, ChannelError::CallTimeout { .. }), "{e}");
    }
    assert_eq!(timed_out.load(Ordering::SeqCst), TIMED_OUT - BLOCKING);
    assert_eq!(others.load(Ordering::SeqCst), 0);
    report("pending-frozen", node.pending_calls());
    report("timed-out", 1);
    // Main now answers all 10,000 late: every reply finds no waiter.
    for i in 0..10u64 {
        let got = t.call_within("slow", &i.to_le_bytes(), WAIT).unwrap();
        assert_eq!(got, i.to_le_bytes());
    }
    assert_eq!(node.pending_calls(), 0);
    assert_eq!(others.load(Ordering::SeqCst), 0, "no callback ran twice");
    assert_eq!(timed_out.load(Ordering::SeqCst), TIMED_OUT - BLOCKING);
    report("after", "ok");
}

#[test]
fn replies_to_10000_timed_out_calls_are_dropped_and_the_link_goes_on() {
    const TEST: &str = "replies_to_10000_timed_out_calls_are_dropped_and_the_link_goes_on";
    if run_child(|s| match s.name() {
        "main" => run_slow_main(TEST),
        "caller" => run_slow_caller(),
        other => panic!("unknown scenario {other}"),
    }) {
        return;
    }
    let gate = Gate::new();
    let mut h = Harness::new().timeout(Duration::from_secs(90));
    let main = h
        .spawn_with("main", |c| {
            c.env(GATE_ENV, gate.read.to_string());
        })
        .unwrap();
    let timed_out = h.wait_report(main, "timed-out");
    assert!(timed_out.is_some(), "{:#?}", h.wait(main));
    assert_eq!(h.wait_report(main, "pending-frozen").as_deref(), Some("0"));
    gate.open(1);
    assert_eq!(h.wait_report(main, "after").as_deref(), Some("ok"));
    assert!(h.wait_report(main, "main-done").is_some());
    h.wait(main).assert_success();
    h.assert_no_leftovers(Duration::from_secs(10));
}
