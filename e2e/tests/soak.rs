//! Soak: eight children doing a mixed workload (checked store operations,
//! batches, channel traffic, publishes) for a bounded time. At the end the
//! model agrees, no child saw an error, and main's memory is flat.
//!
//! Runs 15 s by default; `YUKI_SOAK_SECS` asks for longer.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use yuki_channel::{Channel, Error as ChannelError};
use yuki_ipc_transport::Node;
use yuki_pubsub::{Error as PubSubError, PubSub};
use yuki_storage::{Batch, Store};
use yuki_testkit::kv_model::{KvModel, kv_op};
use yuki_testkit::program::{Step, Val, now_ns, private_keys};
use yuki_testkit::{Harness, run_child};

use common::{Kids, WAIT, apply, rss_kib, val_of};

const CHILDREN: usize = 8;
const DEADLINE_ENV: &str = "YUKI_SOAK_DEADLINE_NS";
const CAPACITY: usize = 1024;

fn soak_secs() -> u64 {
    std::env::var("YUKI_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
}

/// What a child did, sent to main at the end.
type Report = (BTreeMap<String, Val>, Vec<(u8, u32)>, u32, u64, u64);

fn child(index: usize) {
    let deadline: u64 = std::env::var(DEADLINE_ENV).unwrap().parse().unwrap();
    let node = Node::init().unwrap();
    let t = node.transport();
    let store = Store::attach(t.clone()).unwrap();
    let pubsub = PubSub::attach(t.clone()).unwrap().with_capacity(CAPACITY);
    let sub = pubsub.subscribe::<(u8, u32)>("soak.*").unwrap();
    let work = Channel::<(u8, u32)>::open(&t, "soak.work").unwrap();
    let reports = Channel::<Report>::open(&t, "soak.reports").unwrap();
    // Start together, so every publish reaches every subscription.
    let go = store.watch("go").unwrap();
    store.set(&format!("ready.{index}"), &1u8).unwrap();
    go.recv_timeout(WAIT).expect("main says go");
    let mut seed = [0u8; 32];
    seed[0] = index as u8;
    let mut runner = TestRunner::new_with_rng(
        Default::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let ops = kv_op(private_keys(100 + index), false);
    let mut model = KvModel::new();
    let (mut sent, mut received, mut published) = (0u32, Vec::new(), 0u32);
    let mut last_seen: BTreeMap<u8, u32> = BTreeMap::new();
    let (mut delivered, mut lagged) = (0u64, 0u64);
    let me = index as u8;
    let mut round = 0u64;
    while now_ns() < deadline {
        round += 1;
        // Ten checked store operations.
        for _ in 0..10 {
            let op = ops.new_tree(&mut runner).unwrap().current();
            let step = Step::from_kv(op.clone()).unwrap();
            let want = model.apply(&op);
            assert_eq!(apply(&store, &step).to_kv(), want, "{op:?}");
        }
        // A batch of counters.
        let mut b = Batch::new();
        for j in 0..8 {
            b.set(&format!("b{index}.{j}"), &round);
        }
        assert_eq!(store.batch(&b).unwrap().len(), 8);
        // Channel traffic.
        work.send((me, sent)).unwrap();
        sent += 1;
        match work.recv_timeout(Duration::from_millis(1)) {
            Ok(item) => received.push(item),
            Err(ChannelError::Timeout(_)) => {}
            Err(e) => panic!("{e}"),
        }
        // A publish, and what arrived.
        assert_eq!(
            pubsub.publish("soak.x", &(me, published)).unwrap(),
            CHILDREN
        );
        published += 1;
        loop {
            match sub.try_recv() {
                Ok(m) => {
                    let (from, seq) = *m.value();
                    if let Some(prev) = last_seen.insert(from, seq) {
                        assert!(prev < seq, "from {from}: {seq} after {prev}");
                    }
                    delivered += 1;
                }
                Err(PubSubError::Lagged(n)) => lagged += n,
                Err(PubSubError::Empty) => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
    // Finish together too: every publish reaches every subscription, and
    // each subscription gets every message or learns it lagged.
    let end = store.watch("end").unwrap();
    store.set(&format!("done.{index}"), &published).unwrap();
    end.recv_timeout(WAIT).expect("main says end");
    let total: u64 = (0..CHILDREN)
        .map(|j| u64::from(store.get::<u32>(&format!("done.{j}")).unwrap().unwrap()))
        .sum();
    let until = Instant::now() + WAIT;
    while delivered + lagged < total {
        match sub.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(m) => {
                let (from, seq) = *m.value();
                if let Some(prev) = last_seen.insert(from, seq) {
                    assert!(prev < seq, "from {from}: {seq} after {prev}");
                }
                delivered += 1;
            }
            Err(PubSubError::Lagged(n)) => lagged += n,
            Err(e) => panic!("{delivered} + {lagged} lagged of {total} messages: {e}"),
        }
    }
    let state = model
        .entries()
        .iter()
        .map(|(k, v)| (k.clone(), Val::from(v.clone())))
        .collect();
    reports
        .send((state, received, sent, delivered, lagged))
        .unwrap();
}

#[test]
fn eight_children_soak_without_error_or_growth() {
    if run_child(|s| child(s.index())) {
        return;
    }
    let secs = soak_secs();
    let h = Harness::new().timeout(Duration::from_secs(secs + 120));
    let node = Node::init().unwrap();
    let t = node.transport();
    let store = Store::attach(t.clone()).unwrap();
    let _pubsub = PubSub::attach(t.clone()).unwrap();
    let work = Channel::<(u8, u32)>::open(&t, "soak.work").unwrap();
    let reports = Channel::<Report>::open(&t, "soak.reports").unwrap();
    let deadline = now_ns() + secs * 1_000_000_000;
    let ready = store.watch("ready.").unwrap();
    let mut kids = Kids::default();
    for i in 0..CHILDREN {
        let mut cmd = h.command("soak", i);
        cmd.env(DEADLINE_ENV, deadline.to_string());
        kids.0.push(node.spawn(&format!("soak-{i}"), cmd).unwrap());
    }
    for _ in 0..CHILDREN {
        ready.recv_timeout(WAIT).expect("every child starts");
    }
    let done = store.watch("done.").unwrap();
    store.set("go", &1u8).unwrap();
    // Memory after a quarter of the run, against the end.
    let quarter = Instant::now() + Duration::from_secs(secs / 4);
    let mut first = None;
    let mut finished = 0;
    while finished < CHILDREN {
        let wait = if first.is_none() {
            quarter.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(secs) + WAIT
        };
        match done.recv_timeout(wait) {
            Ok(_) => finished += 1,
            Err(yuki_storage::Error::Timeout(_)) if first.is_none() => first = Some(rss_kib()),
            Err(e) => panic!("a child never finished: {e}"),
        }
    }
    store.set("end", &1u8).unwrap();
    let mut all = Vec::new();
    while all.len() < CHILDREN {
        all.push(reports.recv_timeout(WAIT).expect("every child reports"));
    }
    kids.wait_success(WAIT);
    let last = rss_kib();

    let mut expected = BTreeMap::new();
    let (mut sent, mut received) = (0usize, Vec::new());
    let mut delivered = 0;
    for (state, got, n, d, _lagged) in &all {
        expected.extend(state.clone());
        received.extend(got.iter().copied());
        sent += *n as usize;
        delivered += d;
    }
    let contents: BTreeMap<String, Val> = store
        .get_all_raw()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with('p'))
        .map(|(k, v)| (k, val_of(&v)))
        .collect();
    assert_eq!(contents, expected, "the store disagrees with the model");
    // Items pushed ahead to children that left come back to main.
    let mut received: std::collections::BTreeSet<_> = received.into_iter().collect();
    let until = Instant::now() + WAIT;
    while received.len() < sent {
        match work.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(item) => {
                received.insert(item);
            }
            Err(e) => panic!("{} channel items missing: {e}", sent - received.len()),
        }
    }
    let growth = last.saturating_sub(first.unwrap_or(last));
    eprintln!(
        "soak {secs} s: {sent} channel items, {delivered} messages delivered, main grew {growth} KiB"
    );
    assert!(
        growth < 32 << 10,
        "main grew by {growth} KiB during the soak"
    );
    drop(kids);
    drop(node);
    h.assert_no_leftovers(WAIT);
}
