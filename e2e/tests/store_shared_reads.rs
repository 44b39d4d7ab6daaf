//! Children read the store from memory main shares with them: every read
//! checked against what was acknowledged, under concurrent writers, batches,
//! time-to-live, kills and a child that tries to write the region; and the
//! same answers with shared reads off.
//!
//! How a reader knows what was acknowledged: each writer of main, after a
//! write of key `k` at version `v` returned, sets `acked.k` to `v`. A reader
//! reads `acked.k` (a), then `k`, then `acked.k` again (b): the value it got
//! must be the one of some version in `a..=b + 1` (the write after `b` may
//! have landed already), so never older than the last acknowledged write,
//! and a delete it saw must be one of those versions too (no resurrected
//! key). Values carry their version and bytes made from it, so a torn value
//! fails its check.
//!
//! Linux only: the shared read path exists on Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use yuki_ipc_transport::{ChildHandle, Node};
use yuki_storage::{Batch, MAX_VALUE_LEN, Store};
use yuki_testkit::{Harness, run_child};

use common::{Kids, WAIT};

/// Keys each writer thread of main owns.
const KEYS: u64 = 16;
/// Writer threads in main, besides the batch writer.
const WRITERS: u64 = 3;
/// Keys one batch sets together.
const GROUP: u64 = 8;
/// A version that is a delete: every fourth.
fn is_delete(version: u64) -> bool {
    version % 4 == 3
}

/// What shared reads are expected to be, given main's environment.
fn shared_reads_expected() -> bool {
    std::env::var("YUKI_SHARED_READS").as_deref() != Ok("0")
}

/// The bytes of `key` at `version`: a length and contents both made from
/// them, so a value torn between two versions does not check out.
fn fill(key: &str, version: u64) -> Vec<u8> {
    let seed = key.bytes().fold(version, |h, b| {
        h.wrapping_mul(0x100_0000_01b3).wrapping_add(b as u64)
    });
    let len = (seed % 300) as usize + if version % 16 == 0 { 2000 } else { 0 };
    (0..len)
        .map(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8)
        .collect()
}

type Versioned = (u64, ByteBuf);

fn versioned(key: &str, version: u64) -> Versioned {
    (version, ByteBuf::from(fill(key, version)))
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn main_store(shared: bool) -> (Node, Store) {
    let node = Node::builder()
        .independent_main()
        .shared_reads(shared)
        .init()
        .expect("main starts");
    let store = Store::attach(node.transport()).unwrap();
    assert_eq!(node.shared_reads(), shared && shared_reads_expected());
    assert_eq!(store.shares_reads(), node.shared_reads());
    (node, store)
}

fn child_store() -> (Node, Store) {
    let node = Node::init().expect("the child joins");
    let store = Store::attach(node.transport()).unwrap();
    (node, store)
}

fn spawn(node: &Node, h: &Harness, scenario: &str, index: usize) -> ChildHandle {
    node.spawn(&format!("{scenario}-{index}"), h.command(scenario, index))
        .expect("the child starts")
}

/// One writer of main: sets and deletes its keys in version order, and
/// acknowledges each version once the write returned.
fn write_keys(store: &Store, writer: u64, until: &AtomicBool) -> u64 {
    let mut writes = 0;
    for version in 1u64.. {
        if until.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("w{writer}.{}", version % KEYS);
        // Each key's own versions: every KEYS-th of the writer's.
        let v = version / KEYS + 1;
        if is_delete(v) {
            store.delete(&key).unwrap();
        } else {
            store.set(&key, &versioned(&key, v)).unwrap();
        }
        store.set(&format!("acked.{key}"), &v).unwrap();
        writes += 1;
    }
    writes
}

/// The batch writer: every key of a group set to one version at once.
fn write_batches(store: &Store, until: &AtomicBool) {
    for version in 1u64.. {
        if until.load(Ordering::Relaxed) {
            break;
        }
        let mut b = Batch::new();
        for j in 0..GROUP {
            b.set(&format!("g.{j}"), &version);
        }
        store.batch(&b).unwrap();
    }
}

/// One check of key `key` against its acknowledgements.
fn check_key(store: &Store, key: &str) {
    let acked = format!("acked.{key}");
    let before = store.get::<u64>(&acked).unwrap().unwrap_or(0);
    let got = store.get::<Versioned>(key).unwrap();
    let after = store.get::<u64>(&acked).unwrap().unwrap_or(0);
    assert!(before <= after, "{key}: acknowledgements went back");
    match got {
        Some((v, bytes)) => {
            assert!(
                v >= before && v <= after + 1,
                "{key}: read version {v}, acknowledged {before}..={after}"
            );
            assert!(!is_delete(v), "{key}: version {v} was a delete");
            assert_eq!(bytes.as_slice(), fill(key, v), "{key}: a torn value");
        }
        None => {
            // Absent: never written yet, or a delete among the versions
            // that may be current.
            let possible = (before.max(1)..=after + 1).any(is_delete) || after == 0;
            assert!(
                possible,
                "{key}: absent, but acknowledged {before}..={after} has no delete"
            );
        }
    }
}

/// Reads a group after another: once one key shows a batch, every key
/// read after it shows that batch or a later one.
fn check_group(store: &Store) {
    let mut seen = 0u64;
    for j in 0..GROUP {
        let v = store.get::<u64>(&format!("g.{j}")).unwrap().unwrap_or(0);
        assert!(
            v >= seen,
            "g.{j} = {v} after a key of batch {seen}: half a batch"
        );
        seen = v;
    }
}

/// Checks each reader makes before main may stop them (fewer when every
/// read is a call: with shared reads off in the environment).
fn progress_checks() -> u64 {
    if shared_reads_expected() { 3000 } else { 300 }
}

/// A reader child: checks keys until main says stop; the count in `done.i`.
fn reader(index: usize) {
    let (_node, store) = child_store();
    assert_eq!(store.shares_reads(), shared_reads_expected());
    let deadline = Instant::now() + WAIT * 2;
    let mut checks = 0u64;
    let mut i = index as u64;
    while !store.contains("stop").unwrap() {
        assert!(Instant::now() < deadline, "main never said stop");
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let writer = (i >> 33) % WRITERS;
        check_key(&store, &format!("w{writer}.{}", (i >> 40) % KEYS));
        check_group(&store);
        checks += 1;
        if checks == progress_checks() {
            store.set(&format!("progress.{index}"), &checks).unwrap();
        }
    }
    store.set(&format!("done.{index}"), &checks).unwrap();
}

#[test]
fn four_child_readers_see_every_acknowledged_write_and_never_a_torn_or_stale_value() {
    if run_child(|s| reader(s.index())) {
        return;
    }
    let h = Harness::new().timeout(Duration::from_secs(120));
    let (node, store) = main_store(true);
    let stop = AtomicBool::new(false);
    let mut kids = Kids::default();
    std::thread::scope(|s| {
        // Main's writers end on every way out of the scope, a failed
        // assertion included (the scope waits for them).
        let _stop = StopOnDrop(&stop);
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (store, stop) = (&store, &stop);
                s.spawn(move || write_keys(store, w, stop))
            })
            .collect();
        s.spawn(|| write_batches(&store, &stop));
        let done = store.watch("done.").unwrap();
        let progress = store.watch("progress.").unwrap();
        for i in 0..4 {
            kids.0.push(spawn(&node, &h, "reader", i));
        }
        // They read while main writes, until each has made its share of
        // checks.
        for _ in 0..4 {
            progress
                .recv_timeout(WAIT)
                .expect("every reader makes progress");
        }
        store.set("stop", &true).unwrap();
        let mut finished = 0;
        while finished < 4 {
            let change = done.recv_timeout(WAIT).expect("every reader reports");
            let checks: u64 = store.get(&change.key).unwrap().unwrap();
            assert!(
                checks >= progress_checks(),
                "{}: {checks} checks",
                change.key
            );
            finished += 1;
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            assert!(w.join().unwrap() > 0);
        }
    });
    kids.wait_success(WAIT);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

/// Whether the child's main was asked for shared reads (set by the test).
const SHARED_ENV: &str = "YUKI_TEST_SHARED";

/// A child's store, checked to read shared memory exactly when its main
/// was asked to (and the environment allows).
fn checked_child_store() -> (Node, Store) {
    let (node, store) = child_store();
    let asked = std::env::var(SHARED_ENV).as_deref() == Ok("1");
    assert_eq!(node.shared_reads(), asked && shared_reads_expected());
    assert_eq!(store.shares_reads(), node.shared_reads());
    (node, store)
}

fn spawn_asked(
    node: &Node,
    h: &Harness,
    scenario: &str,
    index: usize,
    shared: bool,
) -> ChildHandle {
    let mut cmd = h.command(scenario, index);
    cmd.env(SHARED_ENV, if shared { "1" } else { "0" });
    node.spawn(&format!("{scenario}-{index}"), cmd)
        .expect("the child starts")
}

const HANDOFFS: u64 = 2000;

/// Child A sets a key, then tells child B over a channel; B reads it.
fn handoff_child(index: usize) {
    let (node, store) = checked_child_store();
    let told = node.channel::<u64>("told").unwrap();
    if index == 0 {
        for i in 1..=HANDOFFS {
            store.set("handed", &i).unwrap();
            told.send(i).unwrap();
        }
    } else {
        for _ in 1..=HANDOFFS {
            let i = told.recv_timeout(WAIT).unwrap();
            let read = store.get::<u64>("handed").unwrap();
            assert!(read >= Some(i), "read {read:?} after {i} was acknowledged");
        }
    }
}

fn handoff(shared: bool) {
    let h = Harness::new();
    let (node, _store) = main_store(shared);
    let kids = Kids(vec![
        spawn_asked(&node, &h, "handoff", 0, shared),
        spawn_asked(&node, &h, "handoff", 1, shared),
    ]);
    kids.wait_success(WAIT);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_write_returned_in_one_child_is_read_by_another_at_once() {
    if run_child(|s| handoff_child(s.index())) {
        return;
    }
    handoff(true);
}

#[test]
fn a_write_returned_in_one_child_is_read_by_another_with_shared_reads_off() {
    if run_child(|s| handoff_child(s.index())) {
        return;
    }
    handoff(false);
}

const TTL: Duration = Duration::from_millis(300);

/// Sets keys with a time-to-live from this child and watches them: present
/// until their time is up, absent after; a persisted one stays.
fn ttl_child() {
    let (_node, store) = checked_child_store();
    let asked = Instant::now();
    store.set_with_ttl("brief", &1u8, TTL).unwrap();
    let returned = Instant::now();
    let mut reads = 0u64;
    loop {
        let before = returned.elapsed();
        let present = store.get::<u8>("brief").unwrap().is_some();
        reads += 1;
        if present {
            // Its deadline is at most TTL after the set returned.
            assert!(
                before < TTL,
                "still present {before:?} after the set returned"
            );
        } else {
            // Its deadline is at least TTL after the set was asked.
            assert!(asked.elapsed() >= TTL, "gone after {:?}", asked.elapsed());
            break;
        }
        assert!(asked.elapsed() < WAIT, "never expired");
    }
    assert!(reads > 1, "the key was never seen present");
    store.set_with_ttl("kept", &2u8, TTL).unwrap();
    assert!(store.persist("kept").unwrap());
    let persisted = Instant::now();
    while persisted.elapsed() < TTL * 2 {
        assert_eq!(
            store.get::<u8>("kept").unwrap(),
            Some(2),
            "a persisted key expired"
        );
    }
    assert!(store.expire("kept", Duration::ZERO).unwrap());
    assert_eq!(store.get::<u8>("kept").unwrap(), None);
}

fn ttl(shared: bool) {
    let h = Harness::new();
    let (node, store) = main_store(shared);
    let kids = Kids(vec![spawn_asked(&node, &h, "ttl", 0, shared)]);
    kids.wait_success(WAIT);
    assert_eq!(store.get::<u8>("brief").unwrap(), None);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_child_sees_a_key_expire_when_its_time_is_up() {
    if run_child(|_| ttl_child()) {
        return;
    }
    ttl(true);
}

#[test]
fn a_child_sees_a_key_expire_when_its_time_is_up_with_shared_reads_off() {
    if run_child(|_| ttl_child()) {
        return;
    }
    ttl(false);
}

/// How many times a reader is killed in the middle of its reads.
const KILLS: usize = 100;

/// Reads and checks until killed; says once that it is reading.
fn victim(index: usize) {
    let (_node, store) = child_store();
    let mut i = index as u64;
    for n in 0u64.. {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        check_key(&store, &format!("w0.{}", (i >> 40) % KEYS));
        if n == 50 {
            store.set(&format!("victim.{index}"), &n).unwrap();
        }
    }
}

#[test]
fn readers_killed_mid_read_a_hundred_times_harm_neither_main_nor_other_readers() {
    if run_child(|s| match s.name() {
        "victim" => victim(s.index()),
        "reader" => reader(s.index()),
        other => panic!("unknown scenario {other}"),
    }) {
        return;
    }
    let h = Harness::new().timeout(Duration::from_secs(240));
    let (node, store) = main_store(true);
    let stop = AtomicBool::new(false);
    let mut steady = Kids::default();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let writer = s.spawn(|| write_keys(&store, 0, &stop));
        s.spawn(|| write_batches(&store, &stop));
        let done = store.watch("done.").unwrap();
        steady.0.push(spawn(&node, &h, "reader", 0));
        let reading = store.watch("victim.").unwrap();
        for n in 0..KILLS {
            let victim = spawn(&node, &h, "victim", n);
            reading.recv_timeout(WAIT).expect("the victim reads");
            let exit = victim.kill().expect("the victim is killed");
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&exit.status),
                Some(libc::SIGKILL),
                "victim {n} ended otherwise: {exit:?}"
            );
        }
        // Main is whole: it writes and reads as before.
        store.set("after", &1u8).unwrap();
        assert_eq!(store.get::<u8>("after").unwrap(), Some(1));
        store.set("stop", &true).unwrap();
        let change = done.recv_timeout(WAIT).expect("the steady reader reports");
        assert!(store.get::<u64>(&change.key).unwrap().unwrap() > 0);
        stop.store(true, Ordering::Relaxed);
        assert!(writer.join().unwrap() > 0);
    });
    steady.wait_success(WAIT);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

/// This child's read-only mapping of the store's region, found the way a
/// hostile child would.
fn own_region() -> (usize, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| l.contains("memfd:yuki-store"))
        .expect("the region is mapped");
    let (range, rest) = line.split_once(' ').unwrap();
    assert!(rest.starts_with("r--s"), "mapped {rest}");
    let (start, end) = range.split_once('-').unwrap();
    let start = usize::from_str_radix(start, 16).unwrap();
    let end = usize::from_str_radix(end, 16).unwrap();
    (start, end - start)
}

/// A copy of the region's file taken before the node takes it over, as
/// a hostile program would: the descriptor main handed down.
fn keep_inherited_file() -> i32 {
    let value = std::env::var("YUKI_STORE_REGION").expect("main handed a region down");
    let fd: i32 = value.split(':').next().unwrap().parse().unwrap();
    // SAFETY: duplicates an inherited descriptor; the copy is this test's.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    assert!(copy >= 0, "descriptor {fd} was inherited");
    copy
}

/// Tries every way of writing the region it knows; each must fail.
fn scribbler() {
    let fd = keep_inherited_file();
    let (_node, store) = checked_child_store();
    let before = store.get_raw("fixed").unwrap().expect("main set it");
    let (base, len) = own_region();
    let page = base as *mut libc::c_void;
    // SAFETY: calls on this process's own mapping and descriptors; every
    // one is expected to be refused by the kernel.
    unsafe {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        assert_ne!(
            libc::mprotect(page, 4096, prot),
            0,
            "mprotect made it writable"
        );
        assert_ne!(
            libc::madvise(page, 4096, libc::MADV_REMOVE),
            0,
            "madvise removed a page"
        );
        let again = libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0);
        assert_eq!(again, libc::MAP_FAILED, "mapped it writable again");
        assert!(
            libc::pwrite(fd, b"x".as_ptr().cast(), 1, 0) < 0,
            "wrote the file"
        );
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        assert_ne!(libc::fallocate(fd, punch, 0, 1 << 20), 0, "punched a hole");
        assert_ne!(libc::ftruncate(fd, 0), 0, "shrank it");
    }
    use std::os::unix::fs::FileExt;
    // Opened again for writing through /proc, as a new file.
    let path = format!("/proc/self/fd/{fd}");
    let reopened = std::fs::OpenOptions::new().write(true).open(&path);
    if let Ok(file) = reopened {
        assert!(file.write_at(&[0; 64], 0).is_err(), "wrote through {path}");
    }
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
        .unwrap();
    assert!(
        mem.write_at(&[0; 64], base as u64).is_err(),
        "wrote through /proc/self/mem"
    );
    assert_eq!(store.get_raw("fixed").unwrap(), Some(before));
    assert!(store.shares_reads());
}

#[test]
fn a_child_that_tries_to_write_the_shared_region_changes_nothing() {
    if run_child(|s| match s.name() {
        "scribbler" => scribbler(),
        "handoff" => handoff_child(s.index()),
        other => panic!("unknown scenario {other}"),
    }) {
        return;
    }
    if !shared_reads_expected() {
        return;
    }
    let h = Harness::new();
    let (node, store) = main_store(true);
    store.set("fixed", "a value nobody may change").unwrap();
    let kids = Kids(vec![spawn_asked(&node, &h, "scribbler", 0, true)]);
    kids.wait_success(WAIT);
    // Main and the other children read and write as before.
    let others = Kids(vec![
        spawn_asked(&node, &h, "handoff", 0, true),
        spawn_asked(&node, &h, "handoff", 1, true),
    ]);
    others.wait_success(WAIT);
    assert_eq!(
        store.get::<String>("fixed").unwrap().as_deref(),
        Some("a value nobody may change")
    );
    drop(node);
    h.assert_no_leftovers(WAIT);
}

/// Keys main writes for the child to read among.
const MANY: u64 = 1_000_000;

fn many_keys_child() {
    let (_node, store) = checked_child_store();
    let mut i = 7u64;
    for _ in 0..20_000 {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let k = (i >> 20) % MANY;
        assert_eq!(store.get::<u64>(&format!("k{k}")).unwrap(), Some(k));
        assert!(!store.contains(&format!("missing{k}")).unwrap());
    }
    for len in [0usize, 1, 255, 256, 4096, 65_536, 1 << 20] {
        let got = store.get::<ByteBuf>(&format!("size{len}")).unwrap();
        assert_eq!(got.map(|b| b.len()), Some(len), "a value of {len} bytes");
    }
    let big = store
        .get::<ByteBuf>("big")
        .unwrap()
        .expect("the largest value");
    assert!(big.iter().enumerate().all(|(i, b)| *b == i as u8));
    // Read as another type: refused, as from main.
    assert!(store.get::<String>("k1").is_err());
}

#[test]
fn a_child_reads_among_a_million_keys_and_values_up_to_the_limit() {
    if run_child(|_| many_keys_child()) {
        return;
    }
    let h = Harness::new().timeout(Duration::from_secs(240));
    let (node, store) = main_store(true);
    for chunk in (0..MANY).collect::<Vec<_>>().chunks(1000) {
        let mut b = Batch::new();
        for k in chunk {
            b.set(&format!("k{k}"), k);
        }
        store.batch(&b).unwrap();
    }
    for len in [0usize, 1, 255, 256, 4096, 65_536, 1 << 20] {
        store
            .set(&format!("size{len}"), &ByteBuf::from(vec![7u8; len]))
            .unwrap();
    }
    // The largest value the store takes: the limit less its mark and length.
    let big: Vec<u8> = (0..MAX_VALUE_LEN - 64).map(|i| i as u8).collect();
    store.set("big", &ByteBuf::from(big)).unwrap();
    let kids = Kids(vec![spawn_asked(&node, &h, "many", 0, true)]);
    kids.wait_success(WAIT * 2);
    drop(node);
    h.assert_no_leftovers(WAIT);
}

/// Fails its first run and reads shared memory in each: a restarted child
/// inherits the region again.
fn restarted_child() {
    let (_node, store) = checked_child_store();
    assert!(store.shares_reads());
    let run = store.incr("runs", 1).unwrap();
    assert_eq!(store.get::<i64>("runs").unwrap(), Some(run));
    if run == 1 {
        std::process::exit(3);
    }
}

#[test]
fn a_restarted_child_reads_shared_memory_again() {
    if run_child(|_| restarted_child()) {
        return;
    }
    if !shared_reads_expected() {
        return;
    }
    let h = Harness::new();
    let (node, store) = main_store(true);
    let mut cmd = h.command("restarted", 0);
    cmd.env(SHARED_ENV, "1");
    let child = node
        .child("restarted", cmd)
        .restart_policy(yuki_ipc_transport::RestartPolicy::OnFailure)
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .spawn()
        .expect("the child starts");
    let kids = Kids(vec![child]);
    kids.wait_success(WAIT);
    assert_eq!(kids.0[0].wait_timeout(WAIT).unwrap().restarts, 1);
    assert_eq!(store.get::<i64>("runs").unwrap(), Some(2));
    drop(node);
    h.assert_no_leftovers(WAIT);
}
