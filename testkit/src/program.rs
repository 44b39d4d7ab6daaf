//! Generated multi-actor programs and the checker of what they did.
//!
//! A [`Program`] gives each of [`ACTORS`] actors (main's thread, then two
//! threads in each of four children) a list of [`Step`]s: store operations
//! on keys private to the actor or shared by all, atomic batches, channel
//! sends and receives, publishes and subscription polls. Actors record an
//! [`ActorLog`] with the global monotonic time around each store operation;
//! [`check`] then holds the logs against the reference model:
//!
//! - operations on an actor's private keys return exactly what
//!   [`KvModel`] returns, and those keys end as the model says;
//! - every read of a shared key returns a value that some write produced,
//!   and no write acknowledged before the read began overwrote it; each
//!   shared key ends with the value of a write no other write followed;
//! - every channel item is received exactly once (or, with
//!   [`Delivery::AtLeastOnce`], at least once), and with
//!   [`Delivery::ExactlyOnceInOrder`] each receiver sees one sender's items
//!   in the order sent;
//! - every published message reaches every subscription exactly once, in
//!   per-publisher order, unless reported lost as lagged.
//!
//! Programs and logs are serde types, so a parent can hand a program to a
//! child process and get its log back through any yuki carrier.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use crate::kv_model::{KvModel, KvOp, KvResult, KvValue, kv_op};

/// Actors of a program: main's thread, then four children of two threads.
pub const ACTORS: usize = 9;

/// Keys every actor reads and writes.
pub const SHARED_KEYS: [&str; 2] = ["s.x", "s.y"];

/// The keys only `actor` touches.
pub fn private_keys(actor: usize) -> Vec<String> {
    ["a", "b", "c"]
        .iter()
        .map(|k| format!("p{actor}.{k}"))
        .collect()
}

/// Whether `key` is one of the shared keys.
pub fn is_shared(key: &str) -> bool {
    SHARED_KEYS.contains(&key)
}

/// A stored value as it travels between processes ([`KvValue`] is encoded
/// untagged for the store, so it cannot be decoded by itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Val {
    /// A counter.
    Int(i64),
    /// A text.
    Text(String),
}

impl From<KvValue> for Val {
    fn from(v: KvValue) -> Val {
        match v {
            KvValue::Int(n) => Val::Int(n),
            KvValue::Text(s) => Val::Text(s),
        }
    }
}

impl From<Val> for KvValue {
    fn from(v: Val) -> KvValue {
        match v {
            Val::Int(n) => KvValue::Int(n),
            Val::Text(s) => KvValue::Text(s),
        }
    }
}

/// One step of an actor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// `set`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Val,
    },
    /// `get`.
    Get {
        /// The key.
        key: String,
    },
    /// `delete`.
    Delete {
        /// The key.
        key: String,
    },
    /// `contains`.
    Contains {
        /// The key.
        key: String,
    },
    /// `incr`.
    Incr {
        /// The key.
        key: String,
        /// The increment.
        by: i64,
    },
    /// `compare_and_swap`.
    Cas {
        /// The key.
        key: String,
        /// The value expected (`None`: absent).
        expected: Option<Val>,
        /// The value put (`None`: delete).
        new: Option<Val>,
    },
    /// An atomic batch of key operations on the actor's private keys.
    Batch(Vec<Step>),
    /// Sends the actor's next item on the program's channel.
    Send,
    /// Receives one item from the channel if one comes within a moment.
    Recv,
    /// Publishes the actor's next message on topic `t.a` (0) or `t.b` (1).
    Publish {
        /// Which topic.
        topic: u8,
    },
    /// Takes what the actor's subscription holds now.
    Poll,
}

impl Step {
    /// The model operation of a key step (`None` for the others).
    pub fn kv_op(&self) -> Option<KvOp> {
        let k = |s: &String| s.clone();
        let v = |v: &Option<Val>| v.clone().map(KvValue::from);
        Some(match self {
            Step::Set { key, value } => KvOp::Set {
                key: k(key),
                value: value.clone().into(),
            },
            Step::Get { key } => KvOp::Get { key: k(key) },
            Step::Delete { key } => KvOp::Delete { key: k(key) },
            Step::Contains { key } => KvOp::Contains { key: k(key) },
            Step::Incr { key, by } => KvOp::Incr {
                key: k(key),
                by: *by,
            },
            Step::Cas { key, expected, new } => KvOp::Cas {
                key: k(key),
                expected: v(expected),
                new: v(new),
            },
            _ => return None,
        })
    }

    /// The step of a model key operation (global operations have none).
    pub fn from_kv(op: KvOp) -> Option<Step> {
        let v = |v: Option<KvValue>| v.map(Val::from);
        Some(match op {
            KvOp::Set { key, value } => Step::Set {
                key,
                value: value.into(),
            },
            KvOp::Get { key } => Step::Get { key },
            KvOp::Delete { key } => Step::Delete { key },
            KvOp::Contains { key } => Step::Contains { key },
            KvOp::Incr { key, by } => Step::Incr { key, by },
            KvOp::Cas { key, expected, new } => Step::Cas {
                key,
                expected: v(expected),
                new: v(new),
            },
            KvOp::Len | KvOp::Keys { .. } | KvOp::Clear => return None,
        })
    }
}

/// What each actor does; `actors[0]` is main's thread, `actors[1 + 2c + t]`
/// thread `t` of child `c`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// The steps of each actor.
    pub actors: Vec<Vec<Step>>,
}

impl Program {
    /// How many messages the whole program publishes.
    pub fn publishes(&self) -> usize {
        self.actors
            .iter()
            .flatten()
            .filter(|s| matches!(s, Step::Publish { .. }))
            .count()
    }
}

fn key_step(keys: Vec<String>) -> impl Strategy<Value = Step> {
    kv_op(keys, false).prop_map(|op| Step::from_kv(op).expect("a key operation"))
}

/// The steps of one actor, at most `max_len` of them.
pub fn steps(actor: usize, max_len: usize) -> impl Strategy<Value = Vec<Step>> {
    let private = private_keys(actor);
    let mut all = private.clone();
    all.extend(SHARED_KEYS.iter().map(|k| k.to_string()));
    let step = prop_oneof![
        6 => key_step(private.clone()),
        6 => key_step(all),
        2 => proptest::collection::vec(key_step(private), 1..5).prop_map(Step::Batch),
        3 => Just(Step::Send),
        3 => Just(Step::Recv),
        2 => (0u8..2).prop_map(|topic| Step::Publish { topic }),
        1 => Just(Step::Poll),
    ];
    proptest::collection::vec(step, 0..=max_len)
}

/// A program of up to `max_len` steps per actor.
pub fn program(max_len: usize) -> impl Strategy<Value = Program> {
    (0..ACTORS)
        .map(|a| steps(a, max_len).boxed())
        .collect::<Vec<_>>()
        .prop_map(|actors| Program { actors })
}

/// A reading of the system's monotonic clock in nanoseconds, comparable
/// between processes of one machine.
#[cfg(unix)]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A reading of the system's clock in nanoseconds, comparable between
/// processes of one machine. On Windows it is the wall clock, which can
/// step: the multi-process suites that compare readings run on Unix only.
#[cfg(windows)]
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What a key operation returned, as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Res {
    /// A write.
    Done,
    /// A read.
    Value(Option<Val>),
    /// `delete`, `contains`, compare-and-swap.
    Bool(bool),
    /// `incr`'s new value.
    Int(i64),
    /// `incr` refused (a text, an overflow).
    Failed,
}

impl Res {
    /// The model's form.
    pub fn to_kv(&self) -> KvResult {
        match self {
            Res::Done => KvResult::Done,
            Res::Value(v) => KvResult::Value(v.clone().map(KvValue::from)),
            Res::Bool(b) => KvResult::Bool(*b),
            Res::Int(n) => KvResult::Int(*n),
            Res::Failed => KvResult::Failed,
        }
    }
}

/// One key operation as an actor saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEvent {
    /// The operation (batches are logged as one event per operation, all
    /// with the batch's times).
    pub step: Step,
    /// When the call began ([`now_ns`]).
    pub start: u64,
    /// When it returned.
    pub end: u64,
    /// What it returned.
    pub result: Res,
    /// Whether it ran inside a batch.
    pub batched: bool,
}

/// Everything one actor did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorLog {
    /// The actor.
    pub actor: usize,
    /// Key operations, in order.
    pub kv: Vec<KvEvent>,
    /// Channel items sent (sequence numbers of this actor).
    pub sent: Vec<u32>,
    /// Channel items received: (sender, sequence), in order.
    pub received: Vec<(u8, u32)>,
    /// What each publish reported reaching.
    pub reached: Vec<usize>,
    /// Messages delivered to this actor's subscription: (publisher, sequence).
    pub delivered: Vec<(u8, u32)>,
    /// Messages the subscription reported lost.
    pub lagged: u64,
}

struct Write {
    start: u64,
    end: u64,
    value: Option<Val>,
}

fn write_of(e: &KvEvent) -> Option<Option<Val>> {
    match (&e.step, &e.result) {
        (Step::Set { value, .. }, Res::Done) => Some(Some(value.clone())),
        // A delete that found nothing still saw the key absent at its point.
        (Step::Delete { .. }, Res::Bool(_)) => Some(None),
        (Step::Incr { .. }, Res::Int(n)) => Some(Some(Val::Int(*n))),
        (Step::Cas { new, .. }, Res::Bool(true)) => Some(new.clone()),
        _ => None,
    }
}

fn key_of(step: &Step) -> &str {
    match step {
        Step::Set { key, .. }
        | Step::Get { key }
        | Step::Delete { key }
        | Step::Contains { key }
        | Step::Incr { key, .. }
        | Step::Cas { key, .. } => key,
        _ => "",
    }
}

/// Checks the logs of a run of `program` against the model.
///
/// `store` is the store's final contents; `drained` the channel items
/// received after every actor finished (by main, in any order); `subscribers`
/// how many subscriptions each publish should reach; `delivery` what is
/// checked of channel items.
pub fn check(
    program: &Program,
    logs: &[ActorLog],
    store: &BTreeMap<String, Val>,
    drained: &[(u8, u32)],
    subscribers: usize,
    delivery: Delivery,
) -> Result<(), String> {
    if logs.len() != ACTORS {
        return Err(format!("{} logs for {ACTORS} actors", logs.len()));
    }
    let mut writes: BTreeMap<&str, Vec<Write>> = BTreeMap::new();
    for key in SHARED_KEYS {
        writes.entry(key).or_default().push(Write {
            start: 0,
            end: 0,
            value: None,
        });
    }
    // Private keys: exact results; shared keys: the writes.
    let mut expected_private = BTreeMap::new();
    for log in logs {
        let mut model = KvModel::new();
        for e in &log.kv {
            let key = key_of(&e.step);
            if is_shared(key) {
                if let Some(value) = write_of(e) {
                    writes.entry(key).or_default().push(Write {
                        start: e.start,
                        end: e.end,
                        value,
                    });
                }
                continue;
            }
            let op = e.step.kv_op().ok_or("a key event without a key step")?;
            let want = model.apply(&op);
            if e.result.to_kv() != want {
                return Err(format!(
                    "actor {}: {:?} returned {:?}, the model says {want:?}",
                    log.actor, e.step, e.result
                ));
            }
        }
        for (k, v) in model.entries() {
            expected_private.insert(k.clone(), Val::from(v.clone()));
        }
        let steps = program.actors[log.actor]
            .iter()
            .map(|s| match s {
                Step::Batch(b) => b.len(),
                s if s.kv_op().is_some() => 1,
                _ => 0,
            })
            .sum::<usize>();
        if steps != log.kv.len() {
            return Err(format!(
                "actor {} logged {} key operations of {steps}",
                log.actor,
                log.kv.len()
            ));
        }
    }
    let private_now: BTreeMap<_, _> = store
        .iter()
        .filter(|(k, _)| !is_shared(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if private_now != expected_private {
        return Err(format!(
            "private keys end as {private_now:?}, the model says {expected_private:?}"
        ));
    }
    // Shared keys: every read is justified by a write not overwritten
    // before the read began.
    for log in logs {
        for e in &log.kv {
            let (Step::Get { key }, Res::Value(got)) = (&e.step, &e.result) else {
                continue;
            };
            if !is_shared(key) {
                continue;
            }
            let ws = &writes[key.as_str()];
            let justified = ws.iter().any(|w| {
                w.value == *got
                    && w.start < e.end
                    && !ws.iter().any(|w2| w.end < w2.start && w2.end < e.start)
            });
            if !justified {
                return Err(format!(
                    "actor {}: get {key} in [{}, {}] returned {got:?}, which no write \
                     still current at that time produced",
                    log.actor, e.start, e.end
                ));
            }
        }
    }
    for key in SHARED_KEYS {
        let ws = &writes[key];
        let now = store.get(key).cloned();
        let last = ws
            .iter()
            .any(|w| w.value == now && !ws.iter().any(|w2| w.end < w2.start));
        if !last {
            return Err(format!(
                "{key} ends as {now:?}, which no last write produced"
            ));
        }
    }
    check_channel(logs, drained, delivery)?;
    check_pubsub(program, logs, subscribers)
}

/// What a run promises about channel items.
///
/// A hosted channel pushes items ahead to a child's receivers; items a
/// child received but had not consumed when it left go back to the head of
/// main's queue, so another receiver may get them after later ones. Runs
/// where receivers leave while items flow promise exactly once, not order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Every item arrives; a crash may deliver some twice.
    AtLeastOnce,
    /// Every item arrives once.
    ExactlyOnce,
    /// Every item arrives once, each receiver seeing a sender's items in order.
    ExactlyOnceInOrder,
}

fn check_channel(
    logs: &[ActorLog],
    drained: &[(u8, u32)],
    delivery: Delivery,
) -> Result<(), String> {
    let once = delivery != Delivery::AtLeastOnce;
    let ordered = delivery == Delivery::ExactlyOnceInOrder;
    let mut sent = BTreeSet::new();
    for log in logs {
        for s in &log.sent {
            sent.insert((log.actor as u8, *s));
        }
    }
    let mut seen = BTreeMap::new();
    for (who, items) in logs
        .iter()
        .map(|l| (format!("actor {}", l.actor), &l.received))
        .chain([("main's final drain".to_string(), &drained.to_vec())])
    {
        let mut last: BTreeMap<u8, u32> = BTreeMap::new();
        for item in items.iter() {
            if let Some(first) = seen.insert(*item, who.clone())
                && once
            {
                return Err(format!(
                    "channel item {item:?} received twice: by {first}, then by {who}"
                ));
            }
            if !sent.contains(item) {
                return Err(format!("channel item {item:?} was never sent ({who})"));
            }
            if ordered
                && who.starts_with("actor")
                && let Some(prev) = last.insert(item.0, item.1)
                && prev > item.1
            {
                return Err(format!(
                    "{who} received {item:?} after ({}, {prev}): out of order",
                    item.0
                ));
            }
        }
    }
    let lost: Vec<_> = sent.iter().filter(|i| !seen.contains_key(i)).collect();
    if !lost.is_empty() {
        return Err(format!("channel items never received: {lost:?}"));
    }
    Ok(())
}

fn check_pubsub(program: &Program, logs: &[ActorLog], subscribers: usize) -> Result<(), String> {
    let total = program.publishes() as u64;
    for log in logs {
        if let Some(r) = log.reached.iter().find(|r| **r != subscribers) {
            return Err(format!(
                "actor {}: a publish reached {r} subscriptions of {subscribers}",
                log.actor
            ));
        }
        let mut last: BTreeMap<u8, u32> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for m in &log.delivered {
            if !seen.insert(*m) {
                return Err(format!(
                    "actor {}: message {m:?} delivered twice",
                    log.actor
                ));
            }
            if let Some(prev) = last.insert(m.0, m.1)
                && prev > m.1
            {
                return Err(format!(
                    "actor {}: message {m:?} after ({}, {prev}): out of order",
                    log.actor, m.0
                ));
            }
        }
        if log.delivered.len() as u64 + log.lagged != total {
            return Err(format!(
                "actor {}: {} messages delivered and {} lagged of {total} published",
                log.actor,
                log.delivered.len(),
                log.lagged
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(step: Step, start: u64, end: u64, result: Res) -> KvEvent {
        KvEvent {
            step,
            start,
            end,
            result,
            batched: false,
        }
    }

    fn run(reads: Res, store: &[(&str, Val)]) -> Result<(), String> {
        let program = Program {
            actors: vec![Vec::new(); ACTORS],
        };
        let mut logs: Vec<ActorLog> = (0..ACTORS)
            .map(|actor| ActorLog {
                actor,
                ..ActorLog::default()
            })
            .collect();
        let x = "s.x".to_string();
        logs[0].kv = vec![
            event(
                Step::Set {
                    key: x.clone(),
                    value: Val::Int(1),
                },
                10,
                20,
                Res::Done,
            ),
            event(
                Step::Set {
                    key: x.clone(),
                    value: Val::Int(2),
                },
                30,
                40,
                Res::Done,
            ),
        ];
        logs[1].kv = vec![event(Step::Get { key: x }, 50, 60, reads)];
        let mut p = program;
        p.actors[0] = logs[0].kv.iter().map(|e| e.step.clone()).collect();
        p.actors[1] = logs[1].kv.iter().map(|e| e.step.clone()).collect();
        let store = store
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        check(&p, &logs, &store, &[], ACTORS, Delivery::ExactlyOnceInOrder)
    }

    #[test]
    fn a_read_of_the_latest_write_passes() {
        run(Res::Value(Some(Val::Int(2))), &[("s.x", Val::Int(2))]).unwrap();
    }

    #[test]
    fn a_stale_read_or_a_stale_final_value_is_caught() {
        let stale = run(Res::Value(Some(Val::Int(1))), &[("s.x", Val::Int(2))]);
        assert!(stale.unwrap_err().contains("no write"));
        let never = run(Res::Value(Some(Val::Int(7))), &[("s.x", Val::Int(2))]);
        assert!(never.is_err());
        let old_end = run(Res::Value(Some(Val::Int(2))), &[("s.x", Val::Int(1))]);
        assert!(old_end.unwrap_err().contains("last write"));
    }
}
