//! The receive family has one shape: a hosted channel, a subscription and a
//! watch, in a child, waited on together with `tokio::select!`, lose and
//! duplicate nothing however the race between them falls; and each is a
//! `Stream` that ends when nothing more can come.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use yuki_channel::{Channel, InThreadTransport, Transport};
use yuki_pubsub::PubSub;
use yuki_storage::{Error as StoreError, Store};

const N: u32 = 2000;
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn select_over_a_channel_a_subscription_and_a_watch_loses_nothing() {
    let main = InThreadTransport::main();
    let child: Arc<dyn Transport> = main.connect("worker").unwrap();
    let seam: Arc<dyn Transport> = main.clone();
    let jobs_main = Channel::<u32>::open(&seam, "jobs").unwrap();
    let bus = PubSub::attach(seam.clone())
        .unwrap()
        .with_capacity(N as usize + 1);
    let store = Store::attach(seam.clone()).unwrap();

    let jobs = Channel::<u32>::open(&child, "jobs").unwrap();
    let chat = PubSub::attach(child.clone())
        .unwrap()
        .with_capacity(N as usize + 1)
        .subscribe::<u32>("chat.*")
        .unwrap();
    let changes = Store::attach(child.clone()).unwrap().watch("k.").unwrap();

    // Three producers race each other and the select below.
    let producers = [
        std::thread::spawn(move || (0..N).for_each(|i| jobs_main.send(i).unwrap())),
        std::thread::spawn(move || {
            (0..N).for_each(|i| assert_eq!(bus.publish("chat.x", &i).unwrap(), 1))
        }),
        std::thread::spawn(move || (0..N).for_each(|i| store.set(&format!("k.{i}"), &i).unwrap())),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        let mut got = [Vec::new(), Vec::new(), Vec::new()];
        let all = async {
            while got.iter().map(Vec::len).sum::<usize>() < 3 * N as usize {
                tokio::select! {
                    job = jobs.recv_async() => got[0].push(job.unwrap()),
                    message = chat.recv_async() => got[1].push(message.unwrap().into_value()),
                    change = changes.recv_async() => got[2].push(change.unwrap().decode::<u32>().unwrap().unwrap()),
                }
            }
        };
        tokio::time::timeout(WAIT, all).await.expect("every item arrives");
        got
    });
    for p in producers {
        p.join().unwrap();
    }
    let expected: Vec<u32> = (0..N).collect();
    for (what, items) in ["channel", "subscription", "watch"].iter().zip(got) {
        assert_eq!(items, expected, "{what}: each item once, in order");
    }
    // Nothing is left behind by the futures select dropped.
    assert!(jobs.try_recv().is_err());
    assert!(chat.try_recv().is_err());
    assert_eq!(changes.try_recv(), Err(StoreError::Empty));
}

#[test]
fn a_hosted_channel_is_a_stream_that_ends_when_closed() {
    let main = InThreadTransport::main();
    let child: Arc<dyn Transport> = main.connect("worker").unwrap();
    let seam: Arc<dyn Transport> = main.clone();
    let in_main = Channel::<u32>::open(&seam, "jobs").unwrap();
    let mut in_child = Channel::<u32>::open(&child, "jobs").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..10 {
            in_main.send(i).unwrap();
        }
        let first: Vec<u32> = (&mut in_child).take(4).map(Result::unwrap).collect().await;
        assert_eq!(first, [0, 1, 2, 3]);
        // A clone streams from the same queue; the close ends both.
        let mut other = in_child.clone();
        assert_eq!(other.next().await.unwrap().unwrap(), 4);
        in_main.close();
        let rest = tokio::time::timeout(
            WAIT,
            (&mut in_child).map(Result::unwrap).collect::<Vec<u32>>(),
        )
        .await
        .expect("the stream ends");
        assert_eq!(rest, [5, 6, 7, 8, 9]);
        assert!(other.next().await.is_none());
    });
}
