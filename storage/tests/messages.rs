//! The store's error messages say what happened and what the program can do.

use yuki_channel::InThreadTransport;
use yuki_storage::{Error, Store};

#[test]
fn a_child_whose_main_left_is_told_there_is_no_reconnect() {
    let main = InThreadTransport::main();
    let _store = Store::attach(main.clone()).unwrap();
    let child = Store::attach(main.connect("worker").unwrap()).unwrap();
    main.disconnect("main is gone (the link closed)");
    let err = child.set("k", &1u8).unwrap_err();
    assert!(matches!(err, Error::Disconnected(_)), "{err:?}");
    let said = err.to_string();
    assert!(said.matches("main is gone").count() <= 1, "{said}");
    assert!(!said.contains("or reconnect"), "{said}");
    assert!(said.contains("does not reconnect"), "{said}");
    assert!(said.contains("end this process"), "{said}");
}
