//! Hostile or broken children: a wrong token, garbage frames, oversized
//! frames, a scribble on the link's shared memory, a flood of requests
//! whose replies are never read. Each is
//! refused or cut off with a logged reason; main's memory stays bounded and
//! well-behaved children see no error.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcSender, IpcSharedMemory};
use serde::{Deserialize, Serialize};
use yuki_channel::codec::{self, put_frame};
use yuki_channel::{BOOTSTRAP_ENV, Channel, PeerEvent, PeerId};
use yuki_ipc_transport::{Error, Node, RawRegion, WhenMainGone};
use yuki_pubsub::PubSub;
use yuki_storage::Store;
use yuki_testkit::{Harness, run_child};

use common::{Kids, WAIT, rss_kib};

const MAX_FRAME: usize = 1 << 20;
const MAX_BACKLOG: usize = 4 << 20;
const REPLY: usize = 64 << 10;
/// Well-behaved children at work beside each hostile one.
const GOOD: usize = 3;

/// A child's hello, laid out as the transport's own (a test plays the
/// child by hand to break rules the real one never breaks).
#[derive(Serialize, Deserialize)]
enum RawHello {
    Join {
        token: String,
        pid: u32,
        down: IpcBytesSender,
        welcome: IpcSender<RawWelcome>,
    },
}

/// A hello that offers main memory of the child's own making (as children
/// did before main made the link's memory), in a variant main does not
/// know: main must not take it.
#[derive(Serialize, Deserialize)]
enum OfferingHello {
    _Join,
    _Unknown,
    // No channels: ipc-channel (in debug builds) panics twice, and so
    // aborts, when it drops two channels of a message it cannot read.
    JoinWithMemory {
        token: String,
        pid: u32,
        rings: IpcSharedMemory,
    },
}

#[derive(Serialize, Deserialize, Debug)]
enum RawWelcome {
    Accepted {
        peer: u64,
        name: String,
        max_frame: u64,
    },
    Refused(String),
}

/// A call frame, laid out as the transport's own.
#[derive(Serialize)]
enum RawFrame<'a> {
    Call {
        id: u64,
        service: &'a str,
        #[serde(with = "serde_bytes")]
        body: &'a [u8],
    },
}

/// Joins main by hand; returns the link's region (whose pipe from main is
/// never read), the socket that tells this process main is gone, and
/// main's answer.
fn raw_join(token_of: impl FnOnce(&str) -> String) -> (RawRegion, IpcBytesReceiver, RawWelcome) {
    let value = std::env::var(BOOTSTRAP_ENV).unwrap();
    let mut parts = value.splitn(4, ' ');
    let (_version, token, fd, server) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap().parse().unwrap(),
        parts.next().unwrap(),
    );
    let (down_tx, down_rx) = ipc::bytes_channel().unwrap();
    let (welcome_tx, welcome_rx) = ipc::channel::<RawWelcome>().unwrap();
    let hello = IpcSender::<RawHello>::connect(server.to_owned()).unwrap();
    hello
        .send(RawHello::Join {
            token: token_of(token),
            pid: std::process::id(),
            down: down_tx,
            welcome: welcome_tx,
        })
        .unwrap();
    let welcome = welcome_rx.try_recv_timeout(WAIT).unwrap();
    let region = RawRegion::inherited(fd).unwrap();
    (region, down_rx, welcome)
}

fn hostile(kind: &str) {
    match kind {
        "forger" => {
            let (_region, _alive, welcome) = raw_join(|t| {
                // The same length, one digit off.
                let mut t = t.to_owned().into_bytes();
                t[0] = if t[0] == b'0' { b'1' } else { b'0' };
                String::from_utf8(t).unwrap()
            });
            assert!(matches!(welcome, RawWelcome::Refused(_)), "{welcome:?}");
        }
        "garbage" | "oversized" => {
            let node = Node::builder()
                .when_main_gone(WhenMainGone::Stay)
                .init()
                .unwrap();
            let message = if kind == "garbage" {
                let mut m = Vec::new();
                put_frame(&mut m, &[0xfe, 0xff, 0x13, 0x37, 0, 0, 0, 9]);
                m
            } else {
                let big = vec![7u8; 2 * MAX_FRAME];
                let frame = codec::encode(&RawFrame::Call {
                    id: 1,
                    service: "yuki.store",
                    body: &big,
                })
                .unwrap();
                let mut m = Vec::new();
                put_frame(&mut m, &frame);
                m
            };
            // Main may cut the link before all of an oversized message is
            // in: the send then fails, and the calls below fail too.
            let sent = node.send_raw_message(&message);
            assert!(sent.is_ok() || kind == "oversized", "{sent:?}");
            // Main cuts the link: the next call fails (a write: reads may
            // be answered from shared memory without a call).
            let store = Store::attach(node.transport()).unwrap();
            let deadline = std::time::Instant::now() + WAIT;
            while store.set("k", &0u8).is_ok() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "main never cut the link"
                );
                std::thread::yield_now();
            }
        }
        "scribbler" => {
            let (region, down, welcome) = raw_join(|t| t.to_owned());
            assert!(
                matches!(welcome, RawWelcome::Accepted { .. }),
                "{welcome:?}"
            );
            region.scribble();
            // Main cuts the link: its end of the liveness socket closes
            // (the test's own wait is bounded; main kills leftovers).
            while down.recv().is_ok() {}
            assert!(region.send_up(b"after the cut").is_err());
        }
        "flooder" => {
            let (region, _alive, welcome) = raw_join(|t| t.to_owned());
            assert!(
                matches!(welcome, RawWelcome::Accepted { .. }),
                "{welcome:?}"
            );
            let mut message = Vec::new();
            for id in 0..64 {
                let frame = codec::encode(&RawFrame::Call {
                    id,
                    service: "big",
                    body: b"",
                })
                .unwrap();
                put_frame(&mut message, &frame);
            }
            // Until main cuts the link (and kills this process).
            for _ in 0..100_000 {
                if region.send_up(&message).is_err() {
                    break;
                }
            }
        }
        "shrinker" | "grower" | "resealer" => resize_region(kind),
        "offerer" => {
            let value = std::env::var(BOOTSTRAP_ENV).unwrap();
            let parts: Vec<&str> = value.splitn(4, ' ').collect();
            // ipc-channel's memory file: unsealed, so the child could
            // shrink it under main's mapping.
            let rings = IpcSharedMemory::from_byte(0, 4096);
            IpcSender::<OfferingHello>::connect(parts[3].to_owned())
                .unwrap()
                .send(OfferingHello::JoinWithMemory {
                    token: parts[1].to_owned(),
                    pid: std::process::id(),
                    rings,
                })
                .unwrap();
            // Main refuses the hello and waits on for a real one until its
            // handshake time-out, then kills this process.
            let (_tx, rx) = std::sync::mpsc::channel::<()>();
            let _ = rx.recv();
        }
        other => panic!("unknown hostile kind {other}"),
    }
}

/// The memory files this process holds, as a hostile child finds its
/// link's region in `/proc/self/fd`.
fn memfds() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            target.to_str()?.starts_with("/memfd:").then_some(fd)
        })
        .collect()
}

/// Why a system call failed, if it did.
fn errno(r: i64) -> Option<i32> {
    (r < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// A child that joins, works, then tries to change the size or the seals
/// of its link's memory behind main's back: each attempt must fail with
/// EPERM, and main must still answer afterwards.
fn resize_region(kind: &str) {
    let node = Node::builder()
        .when_main_gone(WhenMainGone::Stay)
        .init()
        .unwrap();
    let store = Store::attach(node.transport()).unwrap();
    store.set(&format!("{kind}.before"), &1u8).unwrap();
    let fds = memfds();
    assert!(
        !fds.is_empty(),
        "the link's memory file is not in /proc/self/fd"
    );
    for fd in fds {
        // SAFETY: fstat, ftruncate and fcntl on a descriptor this process
        // holds; `st` is ours.
        let (len, r) = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            assert_eq!(libc::fstat(fd, &mut st), 0);
            let len = st.st_size;
            let r = match kind {
                "shrinker" => i64::from(libc::ftruncate(fd, 0)),
                "grower" => i64::from(libc::ftruncate(fd, len * 2)),
                _ => {
                    let seals = libc::fcntl(fd, libc::F_GET_SEALS);
                    let wanted = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
                    assert_eq!(seals & wanted, wanted, "seals {seals:#x}");
                    // Sealing it further (or at all) is refused too.
                    i64::from(libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_WRITE))
                }
            };
            (len, r)
        };
        assert_eq!(
            errno(r),
            Some(libc::EPERM),
            "{kind} on a file of {len} bytes"
        );
        // SAFETY: as above.
        let shrunk = errno(i64::from(unsafe { libc::ftruncate(fd, 0) }));
        assert_eq!(shrunk, Some(libc::EPERM), "{kind}: the file can be shrunk");
    }
    // Main is unharmed: calls still work.
    for i in 0..100u64 {
        store.set(kind, &i).unwrap();
        assert_eq!(store.get::<u64>(kind).unwrap(), Some(i));
    }
}

/// A well-behaved child: checked work until main sets `stop`.
fn good(n: usize) {
    let node = Node::init().unwrap();
    let t = node.transport();
    let store = Store::attach(t.clone()).unwrap();
    let pubsub = PubSub::attach(t.clone()).unwrap();
    let echo = Channel::<u64>::open(&t, &format!("echo.{n}")).unwrap();
    let sub = pubsub.subscribe::<u64>(&format!("good.{n}")).unwrap();
    store.set(&format!("good.{n}.ready"), &1u8).unwrap();
    for i in 0u64.. {
        store.set(&format!("g{n}"), &i).unwrap();
        assert_eq!(store.get::<u64>(&format!("g{n}")).unwrap(), Some(i));
        echo.send(i).unwrap();
        assert_eq!(echo.recv_timeout(WAIT).unwrap(), i);
        assert_eq!(pubsub.publish(&format!("good.{n}"), &i).unwrap(), 1);
        assert_eq!(sub.recv_timeout(WAIT).unwrap().into_value(), i);
        if store.contains("stop").unwrap() {
            break;
        }
    }
}

/// A child's command; it runs ignored tests too, so an ignored test's
/// children run their part when the test is asked for.
fn command(h: &Harness, scenario: &str, index: usize) -> std::process::Command {
    let mut cmd = h.command(scenario, index);
    cmd.arg("--include-ignored");
    cmd
}

struct Main {
    h: Harness,
    node: Node,
    store: Store,
    left: Mutex<Vec<(PeerId, String)>>,
    left_rx: crossbeam_channel::Receiver<(PeerId, String)>,
    goods: Kids,
    _pubsub: PubSub,
}

/// Main with a service of large replies and [`GOOD`] children at work.
fn start_main() -> Main {
    let h = Harness::new().timeout(Duration::from_secs(120));
    let node = Node::builder()
        .independent_main()
        .max_frame(MAX_FRAME)
        .max_backlog(MAX_BACKLOG)
        .init()
        .unwrap();
    let t = node.transport();
    let store = Store::attach(t.clone()).unwrap();
    let pubsub = PubSub::attach(t.clone()).unwrap();
    yuki_channel::host_channels(&t).unwrap();
    let big = vec![1u8; REPLY];
    t.serve(
        "big",
        Arc::new(move |_: PeerId, _: &[u8], reply: &mut Vec<u8>| {
            reply.extend_from_slice(&big);
            Ok(())
        }),
    )
    .unwrap();
    let (left_tx, left_rx) = crossbeam_channel::unbounded();
    t.on_peer_event(Arc::new(move |e| {
        if let PeerEvent::Left { peer, reason } = e {
            let _ = left_tx.send((*peer, reason.clone()));
        }
    }));
    let ready = store.watch("good.").unwrap();
    let mut goods = Kids::default();
    for i in 0..GOOD {
        goods.0.push(
            node.spawn(&format!("good-{i}"), command(&h, "good", i))
                .unwrap(),
        );
    }
    for _ in 0..GOOD {
        ready.recv_timeout(WAIT).expect("good children start");
    }
    Main {
        h,
        node,
        store,
        left: Mutex::new(Vec::new()),
        left_rx,
        goods,
        _pubsub: pubsub,
    }
}

impl Main {
    /// Why `c` left, waiting (bounded) for main to say so.
    fn reason(&self, c: &yuki_ipc_transport::ChildHandle) -> String {
        let mut left = self.left.lock().unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some((_, r)) = left.iter().find(|(p, _)| *p == c.id()) {
                return r.clone();
            }
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            match self.left_rx.recv_timeout(wait) {
                Ok(e) => left.push(e),
                Err(_) => return String::new(),
            }
        }
    }

    /// The good children finished without an error, nothing is left running.
    fn finish(self) {
        self.store.set("stop", &1u8).unwrap();
        self.goods.wait_success(WAIT);
        drop(self.goods);
        drop(self.node);
        self.h.assert_no_leftovers(WAIT);
    }
}

fn children(s: &yuki_testkit::Scenario) {
    match s.name() {
        "good" => good(s.index()),
        kind => hostile(kind),
    }
}

#[test]
fn hostile_children_are_cut_off_and_the_others_see_no_error() {
    if run_child(children) {
        return;
    }
    let main = start_main();
    let before = rss_kib();
    // A wrong token is refused at the door.
    let err = main
        .node
        .spawn("forger", command(&main.h, "forger", 0))
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(err.to_string().contains("token"), "{err}");

    let mut bad = Kids::default();
    for kind in ["garbage", "oversized", "scribbler"] {
        bad.0
            .push(main.node.spawn(kind, command(&main.h, kind, 0)).unwrap());
    }
    bad.wait_success(WAIT);
    for c in &bad.0 {
        let why = main.reason(c);
        assert!(why.contains("malformed"), "{}: {why:?}", c.name());
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 << 10, "main grew by {grown} KiB");
    drop(bad);
    main.finish();
}

#[test]
fn a_child_flooding_requests_without_reading_replies_is_cut_off() {
    if run_child(children) {
        return;
    }
    let main = start_main();
    let before = rss_kib();
    let flooder = Kids(vec![
        main.node
            .spawn("flooder", command(&main.h, "flooder", 0))
            .unwrap(),
    ]);
    let c = &flooder.0[0];
    c.wait_timeout(WAIT)
        .unwrap_or_else(|e| panic!("the flooder was never cut off: {e}"));
    let why = main.reason(c);
    assert!(why.contains("does not read its replies"), "{why:?}");
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 4 * (MAX_BACKLOG as u64 >> 10) + (32 << 10),
        "main grew by {grown} KiB with a flooder bounded to {MAX_BACKLOG} bytes"
    );
    drop(flooder);
    main.finish();
}

#[test]
fn a_child_cannot_resize_or_reseal_its_links_memory() {
    if run_child(children) {
        return;
    }
    let main = start_main();
    for kind in ["shrinker", "grower", "resealer"] {
        let c = Kids(vec![
            main.node.spawn(kind, command(&main.h, kind, 0)).unwrap(),
        ]);
        // The attempt failed in the child, and main answered it after.
        c.wait_success(WAIT);
        assert_eq!(main.store.get::<u64>(kind).unwrap(), Some(99), "{kind}");
    }
    // A child offering memory of its own making is refused, with a reason.
    let err = main
        .node
        .spawn("offerer", command(&main.h, "offerer", 0))
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(err.to_string().contains("cannot be read"), "{err}");
    // The good children saw no error (checked as they finish).
    main.finish();
}
