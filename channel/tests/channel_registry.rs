//! The registry of channels by name.

use yuki_channel::{Channel, Error, Registry};

#[test]
fn register_lookup_and_list() {
    let r = Registry::new();
    let a = Channel::<u32>::new("a");
    r.register(&a).unwrap();
    r.register(&Channel::<String>::new("b")).unwrap();
    assert_eq!(r.names(), vec!["a".to_string(), "b".to_string()]);
    let found = r.lookup::<u32>("a").unwrap();
    assert!(found.same_channel(&a));
    found.send(1).unwrap();
    assert_eq!(a.recv(), Ok(1));
    assert!(format!("{r:?}").contains("\"a\""));
}

#[test]
fn errors_name_what_went_wrong() {
    let r = Registry::new();
    r.register(&Channel::<u32>::new("x")).unwrap();
    assert_eq!(
        r.register(&Channel::<u32>::new("x")),
        Err(Error::ChannelExists("x".into()))
    );
    assert_eq!(
        r.lookup::<u32>("nope").unwrap_err(),
        Error::NoChannel("nope".into())
    );
    let err = r.lookup::<String>("x").unwrap_err();
    assert_eq!(
        err,
        Error::WrongType {
            channel: "x".into(),
            expected: "alloc::string::String",
            actual: "u32",
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("u32") && msg.contains("String"), "{msg}");
    assert!(r.unregister("x"));
    assert!(!r.unregister("x"));
    assert!(r.names().is_empty());
}

#[test]
fn the_global_registry() {
    let ch = Channel::<u8>::new("registry-test-global");
    yuki_channel::register(&ch).unwrap();
    assert!(yuki_channel::names().contains(&"registry-test-global".to_string()));
    assert!(
        yuki_channel::lookup::<u8>("registry-test-global")
            .unwrap()
            .same_channel(&ch)
    );
    assert!(Registry::global().unregister("registry-test-global"));
}
