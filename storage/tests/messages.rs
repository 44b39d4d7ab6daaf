//! The store's error messages say what happened and what the program can do.

use yuki_channel::InThreadTransport;
use yuki_storage::{Batch, Config, Error, Store};

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

#[test]
fn the_value_limit_is_a_setting_and_the_error_names_it() {
    // A value's stored bytes are its mark and its encoding: a 10-byte
    // array takes 28.
    let store = Store::local_with(Config::default().max_value_len(32));
    store.set("fits", &[1u8; 10]).unwrap();
    let err = store.set("big", &vec![1u8; 100]).unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { ref key, len, max: 32 } if key == "big" && len > 100),
        "{err:?}"
    );
    assert!(err.to_string().contains("Config::max_value_len"), "{err}");
    // Every write path honours it, batches included.
    let mut batch = Batch::new();
    batch.get("fits").set("big", &vec![1u8; 100]);
    assert!(
        matches!(
            store.batch(&batch),
            Err(Error::InvalidBatch { index: 1, ref source })
                if matches!(**source, Error::ValueTooLarge { max: 32, .. })
        ),
        "the batch is refused whole"
    );
    assert!(!store.contains("big").unwrap());
    let cas = store.compare_and_swap("fits", None::<&Vec<u8>>, Some(&vec![0u8; 100]));
    assert!(matches!(cas, Err(Error::ValueTooLarge { .. })), "{cas:?}");
}

#[test]
fn main_s_limit_decides_for_its_children() {
    let main = InThreadTransport::main();
    let _in_main = Store::attach_with(main.clone(), Config::default().max_value_len(16)).unwrap();
    let child = Store::attach(main.connect("worker").unwrap()).unwrap();
    // The child's own (default) limit lets it through; main refuses it.
    let err = child.set("big", &vec![1u8; 100]).unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { max: 16, .. }),
        "{err:?}"
    );

    // Raised in main and in the child, a value over the default is stored.
    let main = InThreadTransport::main();
    let raised = Config::default().max_value_len(8 << 20);
    let in_main = Store::attach_with(main.clone(), raised.clone()).unwrap();
    let child = Store::attach_with(main.connect("worker").unwrap(), raised).unwrap();
    let big = serde_bytes::ByteBuf::from(vec![3u8; 5 << 20]);
    child.set("big", &big).unwrap();
    assert_eq!(
        in_main.get::<serde_bytes::ByteBuf>("big").unwrap(),
        Some(big)
    );
}
