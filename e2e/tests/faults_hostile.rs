//! Hostile or broken children: a wrong token, garbage frames, oversized
//! frames (over each link kind), a scribble on the link's shared memory, a
//! flood of requests whose replies are never read, and over the
//! ipc-channel link a message that is no byte string and a sender dropped
//! mid-call. Each is
//! refused or cut off with a logged reason; main's memory stays bounded and
//! well-behaved children see no error.
//!
//! Linux only: most of these children forge the shared-memory link by hand
//! (`RawRegion`), which exists on Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcSender, IpcSharedMemory};
use serde::{Deserialize, Serialize};
use yuki_channel::codec::{self, put_frame};
use yuki_channel::{BOOTSTRAP_ENV, Channel, PeerEvent, PeerId};
use yuki_ipc_transport::{ChildHandle, Error, LinkKind, Node, RawRegion, WhenMainGone};
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

/// A hello for an ipc-channel link, laid out as the transport's own (its
/// first variant is never sent).
#[derive(Serialize, Deserialize)]
enum RawIpcHello {
    _Join,
    JoinOverIpc {
        token: String,
        pid: u32,
        down: IpcBytesSender,
        up: IpcBytesReceiver,
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

/// Joins main by hand over an ipc-channel link; returns the sender up
/// (whose messages must carry ipc-channel's byte-string envelope), the
/// channel from main (never read) and main's answer.
fn raw_join_ipc() -> (IpcBytesSender, IpcBytesReceiver, RawWelcome) {
    let value = std::env::var(BOOTSTRAP_ENV).unwrap();
    let parts: Vec<&str> = value.splitn(4, ' ').collect();
    let (down_tx, down_rx) = ipc::bytes_channel().unwrap();
    let (up_tx, up_rx) = ipc::bytes_channel().unwrap();
    let (welcome_tx, welcome_rx) = ipc::channel::<RawWelcome>().unwrap();
    IpcSender::<RawIpcHello>::connect(parts[3].to_owned())
        .unwrap()
        .send(RawIpcHello::JoinOverIpc {
            token: parts[1].to_owned(),
            pid: std::process::id(),
            down: down_tx,
            up: up_rx,
            welcome: welcome_tx,
        })
        .unwrap();
    let welcome = welcome_rx.try_recv_timeout(WAIT).unwrap();
    (up_tx, down_rx, welcome)
}

/// 64 calls of main's large replies in one message.
fn flood_message() -> Vec<u8> {
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
    message
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
            let message = flood_message();
            // Until main cuts the link (and kills this process).
            for _ in 0..100_000 {
                if region.send_up(&message).is_err() {
                    break;
                }
            }
        }
        "mismatched" => {
            // Main made a shared memory link; this child asks for channels.
            let (_up, _down, welcome) = raw_join_ipc();
            assert!(
                matches!(&welcome, RawWelcome::Refused(why) if why.contains("another kind")),
                "{welcome:?}"
            );
        }
        "ipc-flooder" => {
            let (up, _down, welcome) = raw_join_ipc();
            assert!(
                matches!(welcome, RawWelcome::Accepted { .. }),
                "{welcome:?}"
            );
            let calls = flood_message();
            // ipc-channel's envelope: the length, seven bits a byte.
            let mut message = Vec::new();
            let mut len = calls.len();
            while len >= 0x80 {
                message.push((len as u8) | 0x80);
                len >>= 7;
            }
            message.push(len as u8);
            message.extend_from_slice(&calls);
            // Until main cuts the link (and kills this process).
            for _ in 0..100_000 {
                if up.send(&message).is_err() {
                    break;
                }
            }
        }
        #[cfg(target_os = "linux")]
        "shrinker" | "grower" | "resealer" => resize_region(kind),
        "unwrapped" => {
            let node = Node::builder()
                .when_main_gone(WhenMainGone::Stay)
                .init()
                .unwrap();
            assert_eq!(node.link_kind(), LinkKind::IpcChannel);
            // A length of 100 with three bytes after it.
            node.send_unwrapped_message(&[100, 1, 2, 3]).unwrap();
            let store = Store::attach(node.transport()).unwrap();
            let deadline = std::time::Instant::now() + WAIT;
            while store.get::<u8>("k").is_ok() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "main never cut the link"
                );
                std::thread::yield_now();
            }
        }
        "dropper" => {
            let node = Node::builder()
                .when_main_gone(WhenMainGone::Stay)
                .init()
                .unwrap();
            assert_eq!(node.link_kind(), LinkKind::IpcChannel);
            // A call main is still running (a raw message has left when
            // the hook returns) as this child's sender goes.
            let frame = codec::encode(&RawFrame::Call {
                id: 1 << 40,
                service: "slow",
                body: b"",
            })
            .unwrap();
            let mut message = Vec::new();
            put_frame(&mut message, &frame);
            node.send_raw_message(&message).unwrap();
            node.drop_link_sender().unwrap();
            // Main cuts the link once it sees the sender gone, and this
            // child sees main's channel close (nothing here closed it).
            let deadline = std::time::Instant::now() + WAIT;
            while !node.is_disconnected() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "main never cut the link"
                );
                std::thread::yield_now();
            }
            let later = node.transport().call("slow", b"");
            assert!(
                matches!(later, Err(yuki_channel::Error::Disconnected(_))),
                "{later:?}"
            );
        }
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
/// link's region in `/proc/self/fd`. (Sealed memory files, and so these
/// tests, are Linux's.)
#[cfg(target_os = "linux")]
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
#[cfg(target_os = "linux")]
fn errno(r: i64) -> Option<i32> {
    (r < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// A child that joins, works, then tries to change the size or the seals
/// of its link's memory behind main's back: each attempt must fail with
/// EPERM, and main must still answer afterwards.
#[cfg(target_os = "linux")]
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
    // Long enough for a child to act while its call is being served.
    t.serve(
        "slow",
        Arc::new(|_: PeerId, _: &[u8], reply: &mut Vec<u8>| {
            std::thread::sleep(Duration::from_millis(200));
            reply.push(1);
            Ok(())
        }),
    )
    .unwrap();
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
    /// Spawns the child `scenario` over a link of `kind`, named for both.
    fn spawn_over(&self, scenario: &str, kind: LinkKind) -> Result<ChildHandle, Error> {
        self.node
            .child(&format!("{scenario}-{kind}"), command(&self.h, scenario, 0))
            .link(kind)
            .spawn()
    }

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
    // (It joins by hand over shared memory, whose descriptor it reads.)
    let err = main
        .spawn_over("forger", LinkKind::SharedMemory)
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(err.to_string().contains("token"), "{err}");
    // So is a hello for another kind of link than main made.
    let err = main
        .spawn_over("mismatched", LinkKind::SharedMemory)
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(err.to_string().contains("another kind"), "{err}");

    let mut bad = Kids::default();
    for link in LinkKind::ALL {
        for kind in ["garbage", "oversized"] {
            bad.0.push(main.spawn_over(kind, link).unwrap());
        }
    }
    bad.0.push(
        main.spawn_over("scribbler", LinkKind::SharedMemory)
            .unwrap(),
    );
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
    // Each floods its link by hand.
    let flooder = Kids(vec![
        main.spawn_over("flooder", LinkKind::SharedMemory).unwrap(),
        main.spawn_over("ipc-flooder", LinkKind::IpcChannel)
            .unwrap(),
    ]);
    for c in &flooder.0 {
        c.wait_timeout(WAIT)
            .unwrap_or_else(|e| panic!("{} was never cut off: {e}", c.name()));
        let why = main.reason(c);
        assert!(
            why.contains("does not read its replies"),
            "{}: {why:?}",
            c.name()
        );
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 4 * (MAX_BACKLOG as u64 >> 10) + (32 << 10),
        "main grew by {grown} KiB with a flooder bounded to {MAX_BACKLOG} bytes"
    );
    drop(flooder);
    main.finish();
}

#[cfg(target_os = "linux")]
#[test]
fn a_child_cannot_resize_or_reseal_its_links_memory() {
    if run_child(children) {
        return;
    }
    let main = start_main();
    for kind in ["shrinker", "grower", "resealer"] {
        let c = Kids(vec![main.spawn_over(kind, LinkKind::SharedMemory).unwrap()]);
        // The attempt failed in the child, and main answered it after.
        c.wait_success(WAIT);
        assert_eq!(main.store.get::<u64>(kind).unwrap(), Some(99), "{kind}");
    }
    // A child offering memory of its own making is refused, with a reason.
    let err = main
        .spawn_over("offerer", LinkKind::SharedMemory)
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    assert!(err.to_string().contains("cannot be read"), "{err}");
    // The good children saw no error (checked as they finish).
    main.finish();
}

#[test]
fn over_ipc_channel_a_message_that_is_no_byte_string_or_a_dropped_sender_cuts_off_that_child_only()
{
    if run_child(children) {
        return;
    }
    let main = start_main();
    let unwrapped = Kids(vec![
        main.spawn_over("unwrapped", LinkKind::IpcChannel).unwrap(),
    ]);
    unwrapped.wait_success(WAIT);
    let why = main.reason(&unwrapped.0[0]);
    assert!(
        why.contains("malformed") && why.contains("byte string"),
        "{why:?}"
    );
    let dropper = Kids(vec![
        main.spawn_over("dropper", LinkKind::IpcChannel).unwrap(),
    ]);
    dropper.wait_success(WAIT);
    let why = main.reason(&dropper.0[0]);
    assert!(why.contains("closed its link"), "{why:?}");
    // The good children saw no error (checked as they finish).
    drop((unwrapped, dropper));
    main.finish();
}
