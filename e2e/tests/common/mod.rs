//! Helpers shared by the integration and fault tests of this directory.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use yuki_ipc_transport::ChildHandle;
use yuki_storage::{Error as StoreError, Store};
use yuki_testkit::kv_model::KvValue;
use yuki_testkit::program::{Res, Step, Val};

/// The bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// Reads a stored value back (texts are never empty, so a text never
/// decodes as an integer).
pub fn val_of(bytes: &[u8]) -> Val {
    match yuki_channel::codec::mark::decode::<i64>(bytes) {
        Ok(n) => Val::Int(n),
        Err(_) => Val::Text(
            yuki_channel::codec::mark::decode::<String>(bytes).expect("an i64 or a String"),
        ),
    }
}

/// Children spawned through a `Node`, killed on every path out of a test.
#[derive(Debug, Default)]
pub struct Kids(pub Vec<ChildHandle>);

impl Kids {
    /// Waits for every child to exit successfully, within `within`.
    pub fn wait_success(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for c in &self.0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let exit = c
                .wait_timeout(left)
                .unwrap_or_else(|e| panic!("{} did not finish: {e}", c.name()));
            assert!(exit.status.success(), "{} failed: {exit:?}", c.name());
        }
    }
}

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &self.0 {
            if c.is_running() {
                let _ = c.kill();
            }
        }
    }
}

/// The resident memory of this process in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// How many entries a directory of /proc/self holds (`fd`, `task`).
pub fn proc_count(dir: &str) -> usize {
    std::fs::read_dir(format!("/proc/self/{dir}"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Hex form of bytes, for passing a value to a child in its environment.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a [`hex`] string.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// The model's form of a value.
pub fn kv_value(v: &Val) -> KvValue {
    v.clone().into()
}

/// Runs one key step on `store`.
pub fn apply(store: &Store, step: &Step) -> Res {
    match step {
        Step::Set { key, value } => {
            store.set(key, &kv_value(value)).unwrap();
            Res::Done
        }
        Step::Get { key } => Res::Value(store.get_raw(key).unwrap().map(|b| val_of(&b))),
        Step::Delete { key } => Res::Bool(store.delete(key).unwrap()),
        Step::Contains { key } => Res::Bool(store.contains(key).unwrap()),
        Step::Incr { key, by } => match store.incr(key, *by) {
            Ok(n) => Res::Int(n),
            Err(StoreError::NotAnInteger { .. } | StoreError::Overflow { .. }) => Res::Failed,
            Err(e) => panic!("incr failed: {e}"),
        },
        Step::Cas { key, expected, new } => Res::Bool(
            store
                .compare_and_swap(
                    key,
                    expected.as_ref().map(kv_value).as_ref(),
                    new.as_ref().map(kv_value).as_ref(),
                )
                .unwrap(),
        ),
        other => panic!("not a key step: {other:?}"),
    }
}
