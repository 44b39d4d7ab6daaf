//! A child restarted a hundred times: main's file descriptors and threads
//! come back to where they started, and its memory does not grow.

mod common;

use std::time::{Duration, Instant};

use yuki_channel::Channel;
use yuki_ipc_transport::Node;
use yuki_pubsub::PubSub;
use yuki_storage::Store;
use yuki_testkit::{Harness, run_child};

use common::{Kids, WAIT, proc_count, rss_kib};

const RESTARTS: u32 = 100;

/// Waits (bounded) until `count()` comes back to `want` or below; fds and
/// threads of a gone child are released by threads of their own, so there
/// is no event to wait for.
fn settles(what: &str, want: usize, count: impl Fn() -> usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = count();
        if now <= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {now} now, {want} before the child started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_child_restarted_a_hundred_times_leaks_nothing_in_main() {
    if run_child(|_| {
        let node = Node::init().unwrap();
        let t = node.transport();
        let store = Store::attach(t.clone()).unwrap();
        let pubsub = PubSub::attach(t.clone()).unwrap();
        let _sub = pubsub.subscribe::<u8>("news").unwrap();
        let jobs = Channel::<u8>::open(&t, "jobs").unwrap();
        let _watch = store.watch("w.").unwrap();
        // Main may restart this run as soon as the count is applied, before
        // the reply arrives.
        let _ = store.incr("starts", 1);
        // Holds everything open until main stops this run.
        let _ = node.wait_for_stop();
        drop(jobs);
    }) {
        return;
    }
    let started = Instant::now();
    let h = Harness::new().timeout(Duration::from_secs(180));
    let node = Node::init().unwrap();
    let t = node.transport();
    let store = Store::attach(t.clone()).unwrap();
    let pubsub = PubSub::attach(t.clone()).unwrap();
    let _jobs = Channel::<u8>::open(&t, "jobs").unwrap();
    let starts = store.watch("starts").unwrap();
    // Warm up every lazily started part of main once.
    store.set("w.x", &1u8).unwrap();
    pubsub.publish("news", &1u8).unwrap();
    let fds = proc_count("fd");
    let threads = proc_count("task");

    let child = node.spawn("worker", h.command("worker", 0)).unwrap();
    let kids = Kids(vec![child.clone()]);
    starts.recv_timeout(WAIT).expect("the first run starts");
    let mut rss_after_ten = 0;
    for i in 0..RESTARTS {
        child.restart().unwrap();
        starts.recv_timeout(WAIT).expect("the new run starts");
        // Every run's subscription is live, the dead ones' are gone.
        store.set("w.x", &i).unwrap();
        if i == 10 {
            rss_after_ten = rss_kib();
        }
    }
    assert_eq!(
        store.get::<i64>("starts").unwrap(),
        Some(i64::from(RESTARTS) + 1)
    );
    child.stop(WAIT).unwrap();
    drop(kids);
    settles("open file descriptors", fds, || proc_count("fd"));
    settles("threads", threads, || proc_count("task"));
    let grown = rss_kib().saturating_sub(rss_after_ten);
    assert!(
        grown < 16 << 10,
        "main grew by {grown} KiB over 90 restarts"
    );
    eprintln!("{RESTARTS} restarts in {:?}", started.elapsed());
    drop(node);
    h.assert_no_leftovers(WAIT);
}
