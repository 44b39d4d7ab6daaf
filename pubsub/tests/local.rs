//! The shared suite in one process (`PubSub::local`), and the check that
//! every backend runs it.

mod suite;

use yuki_pubsub::PubSub;

use suite::{Harness, pubsub_suite};

struct Local(PubSub);

impl Harness for Local {
    fn main(&self) -> PubSub {
        self.0.clone()
    }
    fn child(&self, _index: usize) -> PubSub {
        self.0.clone()
    }
}

pubsub_suite!(Local(PubSub::local()));

#[test]
fn every_backend_runs_the_suite() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/backend");
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "mod")
        .collect();
    found.sort();
    let mut listed: Vec<&str> = suite::BACKENDS.iter().map(|(b, _)| *b).collect();
    listed.sort_unstable();
    assert_eq!(
        found, listed,
        "a backend without a suite entry, or the reverse"
    );
    for (backend, entries) in suite::BACKENDS {
        assert!(!entries.is_empty(), "{backend} runs the suite nowhere");
        for entry in *entries {
            let path = format!("{}/tests/{entry}.rs", env!("CARGO_MANIFEST_DIR"));
            let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(
                source.contains("pubsub_suite!(") || source.contains("in suite::ALL"),
                "{path} does not run the suite"
            );
        }
    }
}

#[test]
fn the_suite_list_has_every_body_once() {
    let mut names: Vec<&str> = suite::ALL.iter().map(|(n, _)| *n).collect();
    assert_eq!(names.len(), 14, "a body added: count it here too");
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), suite::ALL.len());
}

#[test]
fn a_local_pubsub_says_so() {
    let ps = PubSub::local();
    assert!(format!("{ps:?}").contains("local"));
    assert_eq!(ps.with_capacity(0).capacity(), 1);
}

#[test]
fn handles_are_clone_send_and_sync() {
    fn clone_send_sync<T: Clone + Send + Sync>() {}
    fn send_sync<T: Send + Sync>() {}
    clone_send_sync::<PubSub>();
    // A subscription moves to another thread whatever its message type.
    send_sync::<yuki_pubsub::Subscription<std::rc::Rc<u8>>>();
    send_sync::<yuki_pubsub::Listener>();
}
