//! The shared suite against a store local to one process.

mod suite;

use std::sync::Arc;
use std::time::Duration;

use yuki_storage::{Config, ManualClock, Store};

use suite::{Harness, store_suite};

struct Local {
    store: Store,
    clock: Arc<ManualClock>,
}

fn local() -> Local {
    let clock = Arc::new(ManualClock::default());
    Local {
        store: Store::local_with(Config::default().clock(clock.clone()).shards(8)),
        clock,
    }
}

impl Harness for Local {
    fn main(&self) -> Store {
        self.store.clone()
    }
    fn child(&self, _name: &str) -> Store {
        self.store.clone()
    }
    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

store_suite!(local());

#[test]
fn the_suite_list_names_every_generated_test() {
    let names: Vec<&str> = suite::ALL.iter().map(|(n, _)| *n).collect();
    assert_eq!(names.len(), 15);
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
}
