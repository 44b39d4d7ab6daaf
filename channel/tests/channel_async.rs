//! `recv_async` under a multi-thread tokio runtime.

use std::time::Duration;

use yuki_channel::{Channel, Error};

const WAIT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn async_receivers_get_every_item_once() {
    let rt = runtime();
    let ch = Channel::<u32>::new("async");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = ch.clone();
            rt.spawn(async move {
                let mut got = Vec::new();
                while let Ok(v) = c.recv_async().await {
                    got.push(v);
                }
                got
            })
        })
        .collect();
    // Sent from a plain thread: the send wakes the tasks.
    let c = ch.clone();
    std::thread::spawn(move || {
        for i in 0..5000 {
            c.send(i).unwrap();
        }
        c.close();
    })
    .join()
    .unwrap();
    let mut all = rt.block_on(async {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(tokio::time::timeout(WAIT, t).await.unwrap().unwrap());
        }
        all
    });
    all.sort_unstable();
    assert_eq!(all, (0..5000).collect::<Vec<_>>());
}

#[test]
fn waiting_tasks_wake_on_close() {
    let rt = runtime();
    let ch = Channel::<u32>::bounded("close-async", 4);
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let c = ch.clone();
            let ready = ready_tx.clone();
            rt.spawn(async move {
                ready.send(()).unwrap();
                c.recv_async().await
            })
        })
        .collect();
    for _ in 0..4 {
        ready_rx.recv_timeout(WAIT).unwrap();
    }
    ch.close();
    rt.block_on(async {
        for t in tasks {
            let r = tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
            assert_eq!(
                r,
                Err(Error::Closed {
                    channel: "close-async".into()
                })
            );
        }
    });
}

#[test]
fn a_cancelled_receive_takes_nothing() {
    let rt = runtime();
    let ch = Channel::<u32>::new("cancel");
    rt.block_on(async {
        let r = tokio::time::timeout(Duration::from_millis(20), ch.recv_async()).await;
        assert!(r.is_err(), "nothing to receive yet");
        ch.send(5).unwrap();
        assert_eq!(ch.recv_async().await, Ok(5));
        ch.send(6).unwrap();
    });
    assert_eq!(ch.try_recv(), Ok(6));
}

#[test]
fn closed_and_drained_fails_at_once() {
    let rt = runtime();
    let ch = Channel::<u32>::new("drained");
    ch.send(1).unwrap();
    ch.close();
    rt.block_on(async {
        assert_eq!(ch.recv_async().await, Ok(1));
        assert!(matches!(ch.recv_async().await, Err(Error::Closed { .. })));
    });
}
