//! The shared suite against a store local to one process.

mod suite;

use std::sync::Arc;

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
    fn clock(&self) -> Arc<ManualClock> {
        self.clock.clone()
    }
}

store_suite!(local());
