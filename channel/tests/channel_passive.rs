//! Passive receive: filters, handlers, the receive loop on a thread or a task.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::Receiver;
use yuki_channel::{Channel, Error};

const WAIT: Duration = Duration::from_secs(10);

fn recv_n<T>(rx: &Receiver<T>, n: usize) -> Vec<T> {
    (0..n).map(|_| rx.recv_timeout(WAIT).unwrap()).collect()
}

#[test]
fn each_item_goes_to_every_accepting_handler() {
    let ch = Channel::<u32>::new("route");
    let (tx, rx) = crossbeam_channel::unbounded();
    let t = tx.clone();
    ch.on_receive(|n| n % 2 == 0, move |n| t.send(("even", *n)).unwrap());
    let t = tx.clone();
    ch.on_receive(|n| n % 3 == 0, move |n| t.send(("three", *n)).unwrap());
    ch.on_receive(|_| false, move |n| tx.send(("never", *n)).unwrap());
    let dispatcher = ch.start_receive_loop().unwrap();
    for n in 1..=6 {
        ch.send(n).unwrap();
    }
    let got = recv_n(&rx, 5);
    assert_eq!(
        got,
        vec![
            ("even", 2),
            ("three", 3),
            ("even", 4),
            ("even", 6),
            ("three", 6)
        ]
    );
    dispatcher.stop();
    assert!(rx.try_recv().is_err());
}

#[test]
fn active_receive_is_refused_while_the_loop_runs() {
    let ch = Channel::<u32>::new("mixed");
    let dispatcher = ch.start_receive_loop().unwrap();
    let busy = Error::ReceiveLoopRunning {
        channel: "mixed".into(),
    };
    assert_eq!(ch.recv(), Err(busy.clone()));
    assert_eq!(ch.try_recv(), Err(busy.clone()));
    assert_eq!(ch.recv_timeout(Duration::ZERO), Err(busy.clone()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(ch.recv_async()), Err(busy.clone()));
    assert_eq!(ch.start_receive_loop().unwrap_err(), busy);
    assert!(format!("{dispatcher:?}").contains("mixed"));
    dispatcher.stop();
    ch.send(1).unwrap();
    assert_eq!(ch.recv(), Ok(1));
}

#[test]
fn a_panicking_handler_is_caught_and_the_loop_goes_on() {
    let ch = Channel::<u32>::new("panic");
    let (tx, rx) = crossbeam_channel::unbounded();
    ch.on_receive(|n| *n == 1, |_| panic!("handler fails on purpose"));
    ch.on_receive(|n| *n == 2, |_| std::panic::panic_any(42u8));
    ch.on_receive(
        |n| {
            if *n == 3 {
                panic!("filter fails on purpose")
            } else {
                true
            }
        },
        move |n| tx.send(*n).unwrap(),
    );
    let dispatcher = ch.start_receive_loop().unwrap();
    for n in 1..=4 {
        ch.send(n).unwrap();
    }
    assert_eq!(recv_n(&rx, 3), vec![1, 2, 4]);
    assert!(!dispatcher.is_finished());
    dispatcher.stop();
}

#[test]
fn async_handlers_run_on_the_loop_thread_in_order() {
    let ch = Channel::<String>::new("async-handlers");
    let (tx, rx) = crossbeam_channel::unbounded();
    ch.on_receive_async(
        |s: &String| s.starts_with('a'),
        move |s: Arc<String>| {
            let tx = tx.clone();
            async move {
                tokio::task::yield_now().await;
                tx.send(s.to_string()).unwrap();
            }
        },
    );
    ch.on_receive_async(
        |s: &String| s == "boom",
        |_| async { panic!("async handler fails") },
    );
    let dispatcher = ch.start_receive_loop().unwrap();
    for s in ["a1", "b", "boom", "a2"] {
        ch.send(s.to_string()).unwrap();
    }
    assert_eq!(recv_n(&rx, 2), vec!["a1", "a2"]);
    dispatcher.stop();
}

#[test]
fn loop_as_a_task_on_the_callers_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ch = Channel::<u32>::new("task");
    let count = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = crossbeam_channel::unbounded();
    let c = count.clone();
    ch.on_receive(
        |_| true,
        move |n| {
            c.fetch_add(1, Ordering::SeqCst);
            tx.send(*n).unwrap();
        },
    );
    let dispatcher = ch.spawn_receive_loop(rt.handle()).unwrap();
    for n in 0..100 {
        ch.send(n).unwrap();
    }
    assert_eq!(recv_n(&rx, 100), (0..100).collect::<Vec<_>>());
    rt.block_on(async {
        tokio::time::timeout(WAIT, dispatcher.stop_async())
            .await
            .unwrap();
    });
    ch.send(7).unwrap();
    assert_eq!(ch.recv_timeout(WAIT), Ok(7));
    assert_eq!(count.load(Ordering::SeqCst), 100);
}

#[test]
fn the_loop_ends_when_the_channel_closes() {
    let ch = Channel::<u32>::new("ends");
    let (tx, rx) = crossbeam_channel::unbounded();
    ch.on_receive(|_| true, move |n| tx.send(*n).unwrap());
    let dispatcher = ch.start_receive_loop().unwrap();
    ch.send(1).unwrap();
    ch.close();
    assert_eq!(recv_n(&rx, 1), vec![1]);
    // stop() waits for the thread, which has ended on its own.
    dispatcher.stop();
    assert!(matches!(ch.recv(), Err(Error::Closed { .. })));
}

#[test]
fn stop_async_waits_for_the_task() {
    let ch = Channel::<u32>::new("stop-async");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dispatcher = ch.spawn_receive_loop(rt.handle()).unwrap();
    rt.block_on(async move {
        tokio::task::yield_now().await;
        assert!(!dispatcher.is_finished());
        dispatcher.stop_async().await;
    });
    ch.send(3).unwrap();
    assert_eq!(ch.try_recv(), Ok(3));
}

#[test]
fn a_handler_may_stop_its_own_loop() {
    let ch = Channel::<u32>::new("self-stop");
    let slot: Arc<std::sync::Mutex<Option<yuki_channel::ReceiveLoop>>> = Arc::default();
    let (tx, rx) = crossbeam_channel::unbounded();
    let s = slot.clone();
    ch.on_receive(
        |_| true,
        move |n| {
            if let Some(dispatcher) = s.lock().unwrap().take() {
                dispatcher.stop();
            }
            tx.send(*n).unwrap();
        },
    );
    *slot.lock().unwrap() = Some(ch.start_receive_loop().unwrap());
    ch.send(1).unwrap();
    assert_eq!(recv_n(&rx, 1), vec![1]);
}
