//! Pub/sub error messages say what happened and what the program can do.

use std::time::Duration;

use yuki_channel::InThreadTransport;
use yuki_pubsub::{Error, PubSub};

#[test]
fn a_child_whose_main_left_is_told_there_is_no_reconnect() {
    let main = InThreadTransport::main();
    let _bus = PubSub::attach(main.clone()).unwrap();
    let child = PubSub::attach(main.connect("plugin").unwrap()).unwrap();
    let sub = child.subscribe::<u8>("t").unwrap();
    main.disconnect("main is gone (the link closed)");
    let err = sub.recv_timeout(Duration::from_secs(10)).unwrap_err();
    assert!(matches!(err, Error::Disconnected(_)), "{err:?}");
    let said = err.to_string();
    assert_eq!(said.matches("main is gone").count(), 1, "{said}");
    assert!(!said.contains("or reconnect"), "{said}");
    assert!(said.contains("does not reconnect"), "{said}");
    assert!(said.contains("end this process"), "{said}");
    let err = child.publish("t", &1u8).unwrap_err();
    assert!(err.to_string().contains("does not reconnect"), "{err}");
}
