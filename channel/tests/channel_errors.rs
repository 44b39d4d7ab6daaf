//! Error messages say what happened once and what the program can do.

use std::sync::Arc;

use yuki_channel::{Channel, Error, InThreadTransport, Transport};

#[test]
fn a_hosted_receiver_whose_main_left_gets_the_reason_once_and_no_reconnect_advice() {
    let main = InThreadTransport::main();
    let child: Arc<dyn Transport> = main.connect("worker").unwrap();
    let seam: Arc<dyn Transport> = main.clone();
    let _in_main = Channel::<u32>::open(&seam, "jobs").unwrap();
    let in_child = Channel::<u32>::open(&child, "jobs").unwrap();
    main.disconnect("main is gone (the link closed)");
    let err = in_child.recv().unwrap_err();
    assert_eq!(
        err,
        Error::Disconnected("main is gone (the link closed)".into()),
        "the transport's reason, not wrapped again"
    );
    let said = err.to_string();
    assert_eq!(said.matches("main is gone").count(), 1, "{said}");
    assert!(!said.contains("reconnect or"), "{said}");
    assert!(said.contains("does not reconnect"), "{said}");
    assert!(said.contains("end this process"), "{said}");
}

#[test]
fn an_oversized_frame_names_the_setting_that_raises_the_limit() {
    let main = InThreadTransport::with_max_frame(64);
    let child: Arc<dyn Transport> = main.connect("worker").unwrap();
    let seam: Arc<dyn Transport> = main.clone();
    let _in_main = Channel::<Vec<u8>>::open(&seam, "blobs").unwrap();
    let in_child = Channel::<Vec<u8>>::open(&child, "blobs").unwrap();
    let err = in_child.send(vec![7; 1000]).unwrap_err();
    assert!(
        matches!(err.error(), Error::FrameTooLarge { max: 64, .. }),
        "{err:?}"
    );
    let said = err.to_string();
    assert!(said.contains("NodeBuilder::max_frame"), "{said}");
    assert!(said.contains("InThreadTransport::with_max_frame"), "{said}");
    assert_eq!(err.into_inner().len(), 1000);
}

#[test]
fn role_and_backlog_errors_say_what_to_do() {
    let said = Error::WrongRole {
        operation: "serving",
        needed: yuki_channel::Role::Main,
    }
    .to_string();
    assert!(said.contains("check role()"), "{said}");
    let said = Error::PeerBacklogged(yuki_channel::PeerId::MAIN).to_string();
    assert!(said.contains("retry later"), "{said}");
    assert!(said.contains("NodeBuilder::max_backlog"), "{said}");
}
