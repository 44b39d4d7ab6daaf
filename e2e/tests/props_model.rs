//! Model-based property tests: generated programs of store operations,
//! batches, channel traffic and publishes, run by main's thread and four
//! children of two threads, over the ipc transport and in-thread, checked
//! against the reference model (see `yuki_testkit::program`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use yuki_channel::{Channel, Error as ChannelError, InThreadTransport, Transport, codec};
use yuki_ipc_transport::Node;
use yuki_pubsub::{Error as PubSubError, PubSub, Subscription};
use yuki_storage::{Batch, Error as StoreError, Outcome, Store};
use yuki_testkit::program::{
    ACTORS, ActorLog, Delivery, KvEvent, Program, Res, Step, Val, check, now_ns, program,
};
use yuki_testkit::{Harness, run_child};

use common::{Kids, WAIT, apply, hex, kv_value, unhex, val_of};

const PROGRAM_ENV: &str = "YUKI_TEST_PROGRAM";
const CASE_ENV: &str = "YUKI_TEST_CASE";
const CHILDREN: usize = 4;
/// Each ipc case starts four processes; in-thread cases are cheap.
const IPC_CASES: u32 = 12;
const IN_THREAD_CASES: u32 = 96;
/// Subscription buffers hold every message of a program: nothing lags.
const CAPACITY: usize = 4096;

type Item = (u8, u32);

/// The names one case uses, fresh per case so cases do not meet.
struct Names {
    work: String,
    ready: String,
    logs: String,
    topics: [String; 2],
    pattern: String,
}

impl Names {
    fn new(case: u64) -> Names {
        Names {
            work: format!("work.{case}"),
            ready: format!("ready.{case}"),
            logs: format!("logs.{case}"),
            topics: [format!("c{case}.a"), format!("c{case}.b")],
            pattern: format!("c{case}.*"),
        }
    }

    fn go(&self, child: usize) -> String {
        format!("{}.go.{child}", self.ready)
    }
}

struct Actor<'a> {
    actor: usize,
    store: &'a Store,
    pubsub: &'a PubSub,
    work: &'a Channel<Item>,
    sub: Subscription<Item>,
    names: &'a Names,
}

fn batch_of(steps: &[Step]) -> Batch {
    let mut b = Batch::new();
    for s in steps {
        match s {
            Step::Set { key, value } => b.set(key, &kv_value(value)),
            Step::Get { key } => b.get(key),
            Step::Delete { key } => b.delete(key),
            Step::Contains { key } => b.contains(key),
            Step::Incr { key, by } => b.incr(key, *by),
            Step::Cas { key, expected, new } => b.compare_and_swap(
                key,
                expected.as_ref().map(kv_value).as_ref(),
                new.as_ref().map(kv_value).as_ref(),
            ),
            other => panic!("not a key step: {other:?}"),
        };
    }
    b
}

fn res_of(o: &Outcome) -> Res {
    match o {
        Outcome::Set => Res::Done,
        Outcome::Got { value, .. } => Res::Value(value.as_deref().map(val_of)),
        Outcome::Contains(b) | Outcome::Deleted(b) | Outcome::Swapped(b) => Res::Bool(*b),
        Outcome::Incremented(n) => Res::Int(*n),
        Outcome::Failed(StoreError::NotAnInteger { .. } | StoreError::Overflow { .. }) => {
            Res::Failed
        }
        other => panic!("a batch operation failed: {other:?}"),
    }
}

impl Actor<'_> {
    fn poll(&self, log: &mut ActorLog, wait: Option<Duration>) -> bool {
        let got = match wait {
            None => self.sub.try_recv(),
            Some(w) => self.sub.recv_timeout(w),
        };
        match got {
            Ok(m) => log.delivered.push(*m.value()),
            Err(PubSubError::Lagged(n)) => log.lagged += n,
            Err(PubSubError::Empty | PubSubError::Timeout(_)) => return false,
            Err(e) => panic!("actor {}: subscription failed: {e}", self.actor),
        }
        true
    }

    fn run(&self, steps: &[Step], publishes: usize) -> ActorLog {
        let mut log = ActorLog {
            actor: self.actor,
            ..ActorLog::default()
        };
        let me = self.actor as u8;
        for step in steps {
            match step {
                Step::Batch(ops) => {
                    let b = batch_of(ops);
                    let start = now_ns();
                    let out = self.store.batch(&b).unwrap();
                    let end = now_ns();
                    assert_eq!(out.len(), ops.len());
                    for (op, o) in ops.iter().zip(&out) {
                        log.kv.push(KvEvent {
                            step: op.clone(),
                            start,
                            end,
                            result: res_of(o),
                            batched: true,
                        });
                    }
                }
                Step::Send => {
                    let seq = log.sent.len() as u32;
                    self.work.send((me, seq)).unwrap();
                    log.sent.push(seq);
                }
                Step::Recv => match self.work.recv_timeout(Duration::from_millis(5)) {
                    Ok(item) => log.received.push(item),
                    Err(ChannelError::Timeout(_) | ChannelError::Empty { .. }) => {}
                    Err(e) => panic!("actor {}: recv failed: {e}", self.actor),
                },
                Step::Publish { topic } => {
                    let seq = log.reached.len() as u32;
                    let topic = &self.names.topics[usize::from(*topic)];
                    log.reached
                        .push(self.pubsub.publish(topic, &(me, seq)).unwrap());
                }
                Step::Poll => while self.poll(&mut log, None) {},
                key => {
                    let start = now_ns();
                    let result = apply(self.store, key);
                    let end = now_ns();
                    log.kv.push(KvEvent {
                        step: key.clone(),
                        start,
                        end,
                        result,
                        batched: false,
                    });
                }
            }
        }
        // Every other actor may still be publishing: wait for the rest.
        let deadline = Instant::now() + WAIT;
        while (log.delivered.len() as u64 + log.lagged) < publishes as u64 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "actor {}: only {} of {publishes} messages arrived",
                self.actor,
                log.delivered.len()
            );
            self.poll(&mut log, Some(left));
        }
        log
    }
}

/// A child's part of a case: two actor threads on `transport`.
fn child_part(transport: Arc<dyn Transport>, index: usize, case: u64, program: &Program) {
    let names = Names::new(case);
    let store = Store::attach(transport.clone()).unwrap();
    let pubsub = PubSub::attach(transport.clone())
        .unwrap()
        .with_capacity(CAPACITY);
    let work = Channel::<Item>::open(&transport, &names.work).unwrap();
    let ready = Channel::<u8>::open(&transport, &names.ready).unwrap();
    let go = Channel::<u8>::open(&transport, &names.go(index)).unwrap();
    let logs = Channel::<ActorLog>::open(&transport, &names.logs).unwrap();
    let publishes = program.publishes();
    std::thread::scope(|scope| {
        for thread in 0..2 {
            let actor = 1 + 2 * index + thread;
            let (store, pubsub, work, ready, go, logs, names) =
                (&store, &pubsub, &work, &ready, &go, &logs, &names);
            scope.spawn(move || {
                let sub = pubsub.subscribe::<Item>(&names.pattern).unwrap();
                ready.send(actor as u8).unwrap();
                go.recv_timeout(WAIT).expect("main says go");
                let a = Actor {
                    actor,
                    store,
                    pubsub,
                    work,
                    sub,
                    names,
                };
                let log = a.run(&program.actors[actor], publishes);
                logs.send(log).unwrap();
            });
        }
    });
}

/// Main's part of a case, with `start` starting the children.
/// What main's part runs on.
#[derive(Clone, Copy)]
struct MainSide<'a> {
    transport: &'a Arc<dyn Transport>,
    store: &'a Store,
    pubsub: &'a PubSub,
}

fn main_part(
    side: &MainSide<'_>,
    case: u64,
    program: &Program,
    start: impl FnOnce(),
    finish: impl FnOnce(),
    delivery: Delivery,
) -> Result<(), String> {
    let MainSide {
        transport,
        store,
        pubsub,
    } = *side;
    let names = Names::new(case);
    store.clear().unwrap();
    let work = Channel::<Item>::open(transport, &names.work).unwrap();
    let ready = Channel::<u8>::open(transport, &names.ready).unwrap();
    let logs = Channel::<ActorLog>::open(transport, &names.logs).unwrap();
    let gos: Vec<_> = (0..CHILDREN)
        .map(|i| Channel::<u8>::open(transport, &names.go(i)).unwrap())
        .collect();
    let sub = pubsub.subscribe::<Item>(&names.pattern).unwrap();
    start();
    for _ in 1..ACTORS {
        ready.recv_timeout(WAIT).expect("every actor gets ready");
    }
    for go in &gos {
        go.send(1).unwrap();
        go.send(1).unwrap();
    }
    let me = Actor {
        actor: 0,
        store,
        pubsub,
        work: &work,
        sub,
        names: &names,
    };
    let mut all = vec![me.run(&program.actors[0], program.publishes())];
    for _ in 1..ACTORS {
        all.push(logs.recv_timeout(WAIT).expect("every actor sends its log"));
    }
    all.sort_by_key(|l| l.actor);
    finish();
    // Items pushed ahead to children that left come back to main's queue.
    let sent: usize = all.iter().map(|l| l.sent.len()).sum();
    let mut received: usize = all.iter().map(|l| l.received.len()).sum();
    let mut drained = Vec::new();
    let deadline = Instant::now() + WAIT;
    while received < sent {
        let left = deadline.saturating_duration_since(Instant::now());
        match work.recv_timeout(left) {
            Ok(item) => {
                drained.push(item);
                received += 1;
            }
            Err(e) => return Err(format!("{} channel items missing: {e}", sent - received)),
        }
    }
    // A duplicate would show as an item beyond the count.
    while let Ok(item) = work.recv_timeout(Duration::from_millis(20)) {
        drained.push(item);
    }
    let contents: BTreeMap<String, Val> = store
        .get_all_raw()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, val_of(&v)))
        .collect();
    check(program, &all, &contents, &drained, ACTORS, delivery)
}

fn run_cases(cases: u32, max_len: usize, case: impl Fn(u64, &Program) -> Result<(), String>) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    });
    let n = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&program(max_len), |p| {
        let id = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        case(id, &p).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, program)) => {
            panic!("{why}\nminimal program: {program:#?}")
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn programs_over_the_ipc_transport_match_the_model() {
    if run_child(|s| {
        let node = Node::init().expect("the child joins main");
        let case: u64 = std::env::var(CASE_ENV).unwrap().parse().unwrap();
        let bytes = unhex(&std::env::var(PROGRAM_ENV).unwrap());
        let program: Program = codec::decode(&bytes).unwrap();
        child_part(node.transport(), s.index(), case, &program);
    }) {
        return;
    }
    let h = Harness::new().timeout(Duration::from_secs(300));
    let node = Node::builder().independent_main().init().unwrap();
    let t = node.transport();
    let store = Store::attach(t.clone()).unwrap();
    let pubsub = PubSub::attach(t.clone()).unwrap().with_capacity(CAPACITY);
    run_cases(IPC_CASES, 60, |case, program| {
        let encoded = hex(&codec::encode(program).unwrap());
        let kids = std::cell::RefCell::new(Kids::default());
        main_part(
            &MainSide {
                transport: &t,
                store: &store,
                pubsub: &pubsub,
            },
            case,
            program,
            || {
                for i in 0..CHILDREN {
                    let mut cmd = h.command("actors", i);
                    cmd.env(PROGRAM_ENV, &encoded)
                        .env(CASE_ENV, case.to_string());
                    let child = node.spawn(&format!("actors-{case}-{i}"), cmd).unwrap();
                    kids.borrow_mut().0.push(child);
                }
            },
            || kids.borrow().wait_success(WAIT),
            Delivery::ExactlyOnce,
        )
    });
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn programs_in_thread_match_the_model_with_channel_items_exactly_once() {
    in_thread(IN_THREAD_CASES, Delivery::ExactlyOnce);
}

fn in_thread(cases: u32, delivery: Delivery) {
    let network = InThreadTransport::main();
    let t: Arc<dyn Transport> = network.clone();
    let store = Store::attach(t.clone()).unwrap();
    let pubsub = PubSub::attach(t.clone()).unwrap().with_capacity(CAPACITY);
    run_cases(cases, 40, |case, program| {
        let program = Arc::new(program.clone());
        let threads = std::cell::RefCell::new(Vec::new());
        main_part(
            &MainSide {
                transport: &t,
                store: &store,
                pubsub: &pubsub,
            },
            case,
            &program,
            || {
                for i in 0..CHILDREN {
                    let child = network.connect(&format!("c{case}-{i}")).unwrap();
                    let program = program.clone();
                    threads.borrow_mut().push(std::thread::spawn(move || {
                        let t: Arc<dyn Transport> = child.clone();
                        child_part(t, i, case, &program);
                        child.disconnect("the child's part is over");
                    }));
                }
            },
            || {
                for t in threads.borrow_mut().drain(..) {
                    t.join().expect("a child's thread panicked");
                }
            },
            delivery,
        )
    });
}
