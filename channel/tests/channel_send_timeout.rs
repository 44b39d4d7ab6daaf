//! `send_timeout` on bounded channels, local and hosted (from main and from
//! a child over the in-thread transport): it gives up at its deadline
//! with the value handed back, and sends once room comes in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use yuki_channel::{Channel, Error, InThreadTransport, SendTimeoutError, Transport};

const WAIT: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(50);

/// A full channel: `send_timeout` waits about `SHORT`, then hands the value back.
fn times_out_on_a_full_channel(ch: &Channel<u32>) {
    ch.send_timeout(1, SHORT).unwrap();
    let start = Instant::now();
    let e = ch.send_timeout(2, SHORT).unwrap_err();
    assert!(start.elapsed() >= SHORT, "gave up before its deadline");
    assert!(e.is_timeout(), "{e:?}");
    assert!(
        matches!(e.error(), Error::Timeout(d) if *d == SHORT),
        "{e:?}"
    );
    assert_eq!(e.into_inner(), 2, "the value comes back");
}

/// Room that comes within the deadline lets the send through.
fn sends_once_room_comes(sender: &Channel<u32>, receiver: Channel<u32>) {
    let taker = std::thread::spawn(move || receiver.recv_timeout(WAIT).unwrap());
    sender.send_timeout(3, WAIT).unwrap();
    assert_eq!(taker.join().unwrap(), 1);
}

#[test]
fn a_local_bounded_send_times_out_and_hands_the_value_back() {
    let ch = Channel::<u32>::bounded("local", 1);
    times_out_on_a_full_channel(&ch);
    sends_once_room_comes(&ch, ch.clone());
    ch.close();
    let e = ch.send_timeout(4, SHORT).unwrap_err();
    assert!(e.is_closed() && !e.is_timeout(), "{e:?}");
    assert_eq!(e.into_inner(), 4);
}

#[test]
fn a_hosted_bounded_send_times_out_in_main_and_in_a_child() {
    let main = InThreadTransport::main();
    let main_t: Arc<dyn Transport> = main.clone();
    let child: Arc<dyn Transport> = main.connect("c").unwrap();
    let in_main = Channel::<u32>::open_bounded(&main_t, "q", 1).unwrap();
    let in_child = Channel::<u32>::open_bounded(&child, "q", 1).unwrap();
    // From main.
    times_out_on_a_full_channel(&in_main);
    sends_once_room_comes(&in_main, in_main.clone());
    assert_eq!(in_main.recv_timeout(WAIT).unwrap(), 3);
    // From a child: main answers "full", and the wait for room is bounded too.
    times_out_on_a_full_channel(&in_child);
    sends_once_room_comes(&in_child, in_main.clone());
    assert_eq!(in_main.recv_timeout(WAIT).unwrap(), 3);
}

#[test]
fn a_hosted_send_from_a_child_cut_off_fails_without_waiting() {
    let main = InThreadTransport::main();
    let main_t: Arc<dyn Transport> = main.clone();
    yuki_channel::host_channels(&main_t).unwrap();
    let child = main.connect("c").unwrap();
    let child_t: Arc<dyn Transport> = child.clone();
    let ch = Channel::<u32>::open_bounded(&child_t, "q", 1).unwrap();
    child.disconnect("exited");
    let start = Instant::now();
    match ch.send_timeout(5, WAIT) {
        Err(SendTimeoutError::Failed(e)) => {
            assert!(matches!(e.error(), Error::Disconnected(_)), "{e:?}");
            assert_eq!(e.into_inner(), 5);
        }
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < WAIT);
}
