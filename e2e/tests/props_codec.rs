//! Codec and frames: generated serde values round-trip through the codec,
//! a hosted channel, the store and pub/sub; arbitrary bytes fed to every
//! decoder of the request path give errors, never panics or huge
//! allocations, and main goes on serving.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use yuki_channel::codec::{self, Frames, put_frame};
use yuki_channel::{Channel, InThreadTransport, Transport};
use yuki_pubsub::PubSub;
use yuki_storage::Store;

use common::rss_kib;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Tuple(i32, String),
    Named { id: u64, tags: Vec<String> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    small: u8,
    signed: i64,
    wide: u128,
    flag: bool,
    letter: char,
    ratio_bits: u64,
    text: String,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    numbers: Vec<u32>,
    maybe: Option<Box<Record>>,
    map: BTreeMap<String, i16>,
    shape: Shape,
    pair: (u16, Option<String>),
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Unit),
        (any::<i32>(), ".{0,8}").prop_map(|(a, b)| Shape::Tuple(a, b)),
        (any::<u64>(), proptest::collection::vec(".{0,4}", 0..4))
            .prop_map(|(id, tags)| Shape::Named { id, tags }),
    ]
}

fn leaf() -> impl Strategy<Value = Record> {
    (
        (any::<u8>(), any::<i64>(), any::<u128>(), any::<bool>()),
        (any::<char>(), any::<u64>(), ".{0,16}"),
        (
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u32>(), 0..8),
            proptest::collection::btree_map(".{0,4}", any::<i16>(), 0..4),
        ),
        (shape(), (any::<u16>(), proptest::option::of(".{0,4}"))),
    )
        .prop_map(
            |(
                (small, signed, wide, flag),
                (letter, ratio_bits, text),
                (blob, numbers, map),
                (shape, pair),
            )| {
                Record {
                    small,
                    signed,
                    wide,
                    flag,
                    letter,
                    ratio_bits,
                    text,
                    blob,
                    numbers,
                    maybe: None,
                    map,
                    shape,
                    pair,
                }
            },
        )
}

fn record() -> impl Strategy<Value = Record> {
    (leaf(), proptest::option::of(leaf())).prop_map(|(mut r, inner)| {
        r.maybe = inner.map(Box::new);
        r
    })
}

/// One in-thread network with the store, pub/sub and hosted channels in
/// main, and one well-behaved child.
struct Net {
    network: Arc<InThreadTransport>,
    child: Arc<dyn Transport>,
    child_store: Store,
    child_pubsub: PubSub,
    _main_store: Store,
    _main_pubsub: PubSub,
}

fn net() -> Net {
    let network = InThreadTransport::main();
    let main: Arc<dyn Transport> = network.clone();
    let main_store = Store::attach(main.clone()).unwrap();
    let main_pubsub = PubSub::attach(main.clone()).unwrap();
    yuki_channel::host_channels(&main).unwrap();
    let child: Arc<dyn Transport> = network.connect("good").unwrap();
    Net {
        network,
        child_store: Store::attach(child.clone()).unwrap(),
        child_pubsub: PubSub::attach(child.clone()).unwrap(),
        child,
        _main_store: main_store,
        _main_pubsub: main_pubsub,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_values_round_trip_through_codec_channel_store_and_pubsub(r in record()) {
        let bytes = codec::encode(&r).unwrap();
        prop_assert_eq!(codec::decode::<Record>(&bytes).unwrap(), r.clone());
        let mut framed = Vec::new();
        put_frame(&mut framed, &bytes);
        put_frame(&mut framed, b"");
        let frames: Vec<_> = Frames::new(&framed).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(frames, vec![&bytes[..], &[][..]]);

        let n = net();
        let main: Arc<dyn Transport> = n.network.clone();
        let in_main = Channel::<Record>::open(&main, "records").unwrap();
        let in_child = Channel::<Record>::open(&n.child, "records").unwrap();
        in_child.send(r.clone()).unwrap();
        prop_assert_eq!(in_main.recv_timeout(Duration::from_secs(5)).unwrap(), r.clone());
        in_main.send(r.clone()).unwrap();
        prop_assert_eq!(in_child.recv_timeout(Duration::from_secs(5)).unwrap(), r.clone());

        n.child_store.set("record", &r).unwrap();
        prop_assert_eq!(n.child_store.get::<Record>("record").unwrap(), Some(r.clone()));

        let sub = n.child_pubsub.subscribe::<Record>("records").unwrap();
        prop_assert_eq!(n.child_pubsub.publish("records", &r).unwrap(), 1);
        prop_assert_eq!(sub.recv_timeout(Duration::from_secs(5)).unwrap().into_value(), r);
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        // The codec, as every typed decode of the request path uses it.
        let _ = codec::decode::<Record>(&bytes);
        let _ = codec::decode::<String>(&bytes);
        let _ = codec::decode::<Vec<u8>>(&bytes);
        let _ = codec::decode::<BTreeMap<String, Vec<u64>>>(&bytes);
        let _ = codec::decode_borrowed::<&str>(&bytes);
        // Frames never claim more than the buffer holds, and an error ends them.
        let mut frames = Frames::new(&bytes);
        let mut used = 0;
        for f in frames.by_ref() {
            match f {
                Ok(f) => used += 4 + f.len(),
                Err(_) => {
                    prop_assert!(frames.next().is_none(), "frames go on after an error");
                    break;
                }
            }
        }
        prop_assert!(used <= bytes.len());
    }
}

/// Length prefixes that claim far more than the input holds.
fn huge_claims() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for tail in [&[][..], &[1, 2, 3][..]] {
        // bincode varints: 251 = u16 follows, 252 = u32, 253 = u64, 254 = u128.
        for prefix in [
            vec![252, 0xff, 0xff, 0xff, 0x7f],
            vec![253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            vec![253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            vec![254; 17],
        ] {
            let mut b = prefix;
            b.extend_from_slice(tail);
            out.push(b);
        }
    }
    out.push(vec![0xff, 0xff, 0xff, 0xff, 1, 2]);
    out
}

#[test]
fn huge_length_claims_are_refused_without_allocating() {
    let before = rss_kib();
    for b in huge_claims() {
        assert!(codec::decode::<Vec<u8>>(&b).is_err());
        assert!(codec::decode::<String>(&b).is_err());
        assert!(codec::decode::<Vec<u64>>(&b).is_err());
        assert!(codec::decode::<Record>(&b).is_err());
        assert!(Frames::new(&b).any(|f| f.is_err()) || b.is_empty());
    }
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 64 << 10,
        "decoding garbage grew memory by {grown} KiB"
    );
}

const SERVICES: [&str; 3] = ["yuki.store", "yuki.pubsub", "yuki.channel"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn garbage_requests_to_every_service_fail_and_main_serves_on(
        service in 0usize..3,
        bytes in prop_oneof![
            3 => proptest::collection::vec(any::<u8>(), 0..128),
            1 => proptest::sample::select(huge_claims()),
        ],
    ) {
        let n = net();
        let bad = n.network.connect("bad").unwrap();
        // An error or some reply, never a panic (a panic fails the test).
        let _ = bad.call(SERVICES[service], &bytes);
        // The others see no error.
        n.child_store.set("k", &1u8).unwrap();
        prop_assert_eq!(n.child_store.get::<u8>("k").unwrap(), Some(1));
        let ch = Channel::<u8>::open(&n.child, "c").unwrap();
        ch.send(7).unwrap();
        prop_assert_eq!(ch.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
        prop_assert_eq!(n.child_pubsub.publish("t", &1u8).unwrap(), 0);
    }
}
