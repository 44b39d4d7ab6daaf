//! A property test of acknowledged delivery: random interleavings of send,
//! receive (acknowledged and plain), ack, requeue, drop, clean leave and
//! crash over in-thread endpoints, held against a model of the queue.
//!
//! The model does not predict which consumer gets what (that is the
//! dispatcher's business); it keeps what must hold whatever it chose:
//! no item is held by two receivers at once, an item comes again only
//! after it was given back or its receiver crashed, an item handed out
//! before comes again marked redelivered, and at the end every item sent
//! was settled as done at least once, with no other duplicates.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use yuki_channel::{Channel, ChannelOptions, Delivery, Error, InThreadTransport, Transport};

const CONSUMERS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Send,
    Take(usize),
    RecvPlain(usize),
    Ack(usize, usize),
    Requeue(usize, usize),
    Drop(usize, usize),
    Leave(usize),
    Crash(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CONSUMERS;
    prop_oneof![
        4 => Just(Op::Send),
        4 => c.clone().prop_map(Op::Take),
        1 => c.clone().prop_map(Op::RecvPlain),
        3 => (c.clone(), any::<usize>()).prop_map(|(c, i)| Op::Ack(c, i)),
        1 => (c.clone(), any::<usize>()).prop_map(|(c, i)| Op::Requeue(c, i)),
        1 => (c.clone(), any::<usize>()).prop_map(|(c, i)| Op::Drop(c, i)),
        1 => c.clone().prop_map(Op::Leave),
        1 => c.prop_map(Op::Crash),
    ]
}

struct Consumer {
    endpoint: Arc<InThreadTransport>,
    channel: Channel<u32>,
    held: Vec<Delivery<u32>>,
    /// Settled here (acked or received plainly) since it joined: main may
    /// not have heard of it if it crashes.
    settled: Vec<u32>,
}

struct Model {
    /// Sent and not yet settled as done.
    outstanding: BTreeSet<u32>,
    /// Ever handed to a receiver.
    handed_out: BTreeSet<u32>,
    /// Settled by a consumer that crashed: may come once more.
    may_return: BTreeSet<u32>,
    sent: u32,
}

impl Model {
    /// Checks an item `v` just received, held by nobody else.
    fn received(
        &mut self,
        v: u32,
        redelivered: Option<bool>,
        consumers: &[Consumer],
    ) -> Result<(), TestCaseError> {
        prop_assert!(v < self.sent, "{v} was never sent");
        for c in consumers {
            prop_assert!(c.held.iter().all(|d| **d != v), "{v} held twice");
        }
        if !self.outstanding.contains(&v) {
            prop_assert!(
                self.may_return.remove(&v),
                "{v} came back after it was settled"
            );
            self.outstanding.insert(v);
        }
        if let Some(redelivered) = redelivered {
            prop_assert!(
                redelivered || !self.handed_out.contains(&v),
                "{v} came again unmarked"
            );
        }
        self.handed_out.insert(v);
        Ok(())
    }
}

fn join(main: &Arc<InThreadTransport>, prefetch: u32, i: usize) -> Consumer {
    let endpoint = main.connect(&format!("c{i}")).unwrap();
    let t: Arc<dyn Transport> = endpoint.clone();
    let channel = Channel::open_with(&t, "q", &ChannelOptions::new().prefetch(prefetch)).unwrap();
    Consumer {
        endpoint,
        channel,
        held: Vec::new(),
        settled: Vec::new(),
    }
}

fn run(ops: Vec<Op>, prefetch: u32) -> Result<(), TestCaseError> {
    let main = InThreadTransport::main();
    let as_dyn: Arc<dyn Transport> = main.clone();
    let m = Channel::<u32>::open(&as_dyn, "q").unwrap();
    let mut consumers: Vec<Consumer> = (0..CONSUMERS).map(|i| join(&main, prefetch, i)).collect();
    let mut model = Model {
        outstanding: BTreeSet::new(),
        handed_out: BTreeSet::new(),
        may_return: BTreeSet::new(),
        sent: 0,
    };
    for op in ops {
        match op {
            Op::Send => {
                m.send(model.sent).unwrap();
                model.outstanding.insert(model.sent);
                model.sent += 1;
            }
            Op::Take(c) => match consumers[c].channel.try_recv_delivery() {
                Ok(d) => {
                    model.received(*d, Some(d.redelivered()), &consumers)?;
                    consumers[c].held.push(d);
                }
                Err(Error::Empty { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(format!("take: {e}"))),
            },
            Op::RecvPlain(c) => match consumers[c].channel.try_recv() {
                Ok(v) => {
                    model.received(v, None, &consumers)?;
                    model.outstanding.remove(&v);
                    consumers[c].settled.push(v);
                }
                Err(Error::Empty { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(format!("recv: {e}"))),
            },
            Op::Ack(c, i) | Op::Requeue(c, i) | Op::Drop(c, i) => {
                let held = &mut consumers[c].held;
                if held.is_empty() {
                    continue;
                }
                let d = held.remove(i % held.len());
                match op {
                    Op::Ack(..) => {
                        model.outstanding.remove(&*d);
                        consumers[c].settled.push(*d);
                        d.ack();
                    }
                    Op::Requeue(..) => d.requeue(),
                    _ => drop(d),
                }
            }
            Op::Leave(c) | Op::Crash(c) => {
                let fresh = join(&main, prefetch, c);
                let gone = std::mem::replace(&mut consumers[c], fresh);
                if matches!(op, Op::Crash(_)) {
                    gone.endpoint.disconnect("crashed");
                    model.may_return.extend(gone.settled.iter().copied());
                }
                // The channel and endpoint go first, as when a process
                // ends; the deliveries it held must come back regardless.
                let Consumer {
                    endpoint,
                    channel,
                    held,
                    ..
                } = gone;
                drop(channel);
                drop(endpoint);
                drop(held);
            }
        }
    }
    // Every consumer leaves; what is left must all be in main.
    for gone in consumers {
        let Consumer {
            endpoint,
            channel,
            held,
            ..
        } = gone;
        drop(channel);
        drop(endpoint);
        drop(held);
    }
    loop {
        match m.try_recv_delivery() {
            Ok(d) => {
                model.received(*d, Some(d.redelivered()), &[])?;
                model.outstanding.remove(&*d);
                d.ack();
            }
            Err(Error::Empty { .. }) => break,
            Err(e) => return Err(TestCaseError::fail(format!("drain: {e}"))),
        }
    }
    prop_assert!(
        model.outstanding.is_empty(),
        "lost: {:?}",
        model.outstanding
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_item_is_settled_at_least_once_and_comes_again_only_when_given_back(
        ops in proptest::collection::vec(op(), 0..120),
        prefetch in prop_oneof![Just(1u32), Just(2), Just(4), Just(64)],
    ) {
        run(ops, prefetch)?;
    }
}
