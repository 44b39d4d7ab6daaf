//! Children killed with SIGKILL at random points of writes, batches,
//! channel traffic and subscriptions: main serves on, acknowledged writes
//! stay, batches stay whole, and the dead child's subscriptions and channel
//! credits are released.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use yuki_channel::{Channel, Error as ChannelError, codec};
use yuki_ipc_transport::{LinkKind, Node};
use yuki_pubsub::PubSub;
use yuki_storage::{Batch, Store};
use yuki_testkit::{Harness, run_child};

use common::{Kids, WAIT};

const KILLS: usize = 50;
const GROUP: usize = 8;
const TASKS: u32 = 20_000;
const STEADY: usize = 2;

fn group_batch(n: usize, i: u64) -> Batch {
    let mut b = Batch::new();
    for j in 0..GROUP {
        b.set(&format!("g{n}.{j}"), &i);
    }
    b.incr(&format!("g{n}.count"), 1);
    b
}

/// Every group's keys hold one value, and its counter is one more.
fn check_group(all: &BTreeMap<String, Vec<u8>>, n: usize) {
    let values: Vec<u64> = (0..GROUP)
        .filter_map(|j| all.get(&format!("g{n}.{j}")))
        .map(|b| codec::mark::decode::<u64>(b).unwrap())
        .collect();
    let count = all
        .get(&format!("g{n}.count"))
        .map(|b| codec::mark::decode::<i64>(b).unwrap());
    if values.is_empty() {
        assert_eq!(count, None, "group {n}: a counter without values");
        return;
    }
    assert_eq!(values.len(), GROUP, "group {n}: a batch applied in part");
    assert!(
        values.iter().all(|v| *v == values[0]),
        "group {n}: {values:?}"
    );
    assert_eq!(count, Some(values[0] as i64 + 1), "group {n}");
}

/// A victim: four threads writing, batching, taking tasks and listening,
/// until it is killed.
fn victim(n: usize) {
    let node = Node::init().expect("the victim joins");
    let t = node.transport();
    let store = Store::attach(t.clone()).unwrap();
    let pubsub = PubSub::attach(t.clone()).unwrap();
    let tasks = Channel::<u32>::open(&t, "tasks").unwrap();
    let _sub = pubsub.subscribe::<u32>("news.*").unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0u64.. {
                store.set(&format!("w{n}.{i}"), &i).unwrap();
                store.set(&format!("w{n}.last"), &i).unwrap();
            }
        });
        s.spawn(|| {
            for i in 0u64.. {
                store.batch(&group_batch(n, i)).unwrap();
            }
        });
        s.spawn(|| {
            loop {
                match tasks.recv_timeout(WAIT) {
                    // Marked done only after it was received.
                    Ok(task) => store.set(&format!("done.{task}"), &(n as u64)).unwrap(),
                    Err(e) => panic!("tasks: {e}"),
                }
            }
        });
    });
}

/// A steady child: checked work until main sets `stop`; any error fails it.
fn steady(n: usize) {
    let node = Node::init().expect("the steady child joins");
    let t = node.transport();
    let store = Store::attach(t.clone()).unwrap();
    let pubsub = PubSub::attach(t.clone()).unwrap();
    let sub = pubsub.subscribe::<u32>("news.*").unwrap();
    let echo = Channel::<u64>::open(&t, &format!("echo.{n}")).unwrap();
    store.set(&format!("steady.{n}.ready"), &1u8).unwrap();
    for i in 0u64.. {
        let key = format!("s{n}.{}", i % 16);
        store.set(&key, &i).unwrap();
        assert_eq!(store.get::<u64>(&key).unwrap(), Some(i));
        echo.send(i).unwrap();
        assert_eq!(echo.recv_timeout(WAIT).unwrap(), i);
        while sub.try_recv().is_ok() {}
        if store.contains("stop").unwrap() {
            break;
        }
    }
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b) % n
}

#[test]
fn fifty_children_killed_mid_work_leave_main_whole() {
    if run_child(|s| match s.name() {
        "victim" => victim(s.index()),
        "steady" => steady(s.index()),
        other => panic!("unknown scenario {other}"),
    }) {
        return;
    }
    let started = Instant::now();
    let h = Harness::new().timeout(Duration::from_secs(240));
    let node = Node::init().unwrap();
    let t = node.transport();
    let store = Store::attach(t.clone()).unwrap();
    let pubsub = PubSub::attach(t.clone()).unwrap();
    let tasks = Channel::<u32>::open(&t, "tasks").unwrap();
    for task in 0..TASKS {
        tasks.send(task).unwrap();
    }
    let mut steady_kids = Kids::default();
    let ready = store.watch("steady.").unwrap();
    for i in 0..STEADY {
        // The links alternate between the kinds: each kind's end is seen.
        let child = node
            .child(&format!("steady-{i}"), h.command("steady", i))
            .link(LinkKind::ALL[i % LinkKind::ALL.len()])
            .spawn();
        steady_kids.0.push(child.unwrap());
    }
    for _ in 0..STEADY {
        ready.recv_timeout(WAIT).expect("steady children start");
    }

    let mut kids = Kids::default();
    for n in 0..KILLS {
        let progress = store.watch(&format!("w{n}.last")).unwrap();
        let child = node
            .child(&format!("victim-{n}"), h.command("victim", n))
            .link(LinkKind::ALL[n % LinkKind::ALL.len()])
            .spawn()
            .unwrap();
        kids.0.push(child.clone());
        // Kill after a random amount of acknowledged work.
        for _ in 0..1 + random_below(40) {
            progress
                .recv_timeout(WAIT)
                .expect("the victim makes progress");
        }
        // kill() waits until the exit is reaped (SIGKILL cannot be ignored).
        child.kill().expect("a killed victim is reaped");
        assert!(!child.is_running());

        let all = store.get_all_raw().unwrap();
        check_group(&all, n);
        let last = codec::mark::decode::<u64>(&all[&format!("w{n}.last")]).unwrap();
        for i in 0..=last {
            let v = all
                .get(&format!("w{n}.{i}"))
                .map(|b| codec::mark::decode::<u64>(b).unwrap());
            assert_eq!(v, Some(i), "victim {n}: an acknowledged write is gone");
        }
    }

    // The dead children's subscriptions are gone: only the steady ones remain.
    let deadline = Instant::now() + WAIT;
    loop {
        let reached = pubsub.publish("news.check", &1u32).unwrap();
        if reached == STEADY {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publish still reaches {reached} subscriptions"
        );
        std::thread::yield_now();
    }

    // Credits: every task was either marked done by a receiver or is back
    // in main's queue.
    store.set("stop", &1u8).unwrap();
    steady_kids.wait_success(WAIT);
    let mut back = Vec::new();
    loop {
        match tasks.try_recv() {
            Ok(task) => back.push(task),
            Err(ChannelError::Empty { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let done = store.keys("done.").unwrap();
    let mut accounted = vec![false; TASKS as usize];
    for task in back {
        accounted[task as usize] = true;
    }
    for key in &done {
        let task: usize = key["done.".len()..].parse().unwrap();
        accounted[task] = true;
    }
    // A victim may die between taking a task and marking it: one per victim.
    let lost: Vec<_> = (0..TASKS).filter(|t| !accounted[*t as usize]).collect();
    assert!(
        lost.len() <= KILLS,
        "tasks lost with their dead receivers: {lost:?}"
    );
    eprintln!(
        "{KILLS} kills, {} tasks done by victims, in {:?}",
        done.len(),
        started.elapsed()
    );
    drop(kids);
    drop(steady_kids);
    drop(node);
    h.assert_no_leftovers(WAIT);
}
