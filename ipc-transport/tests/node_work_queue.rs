//! Work queues across processes: acknowledged delivery survives workers
//! killed while they hold jobs, prefetch keeps a stuck worker from
//! hoarding, given-back jobs reach another worker, and a child opening a
//! channel with another item type fails at open.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use yuki_channel::{ChannelOptions, Error};
use yuki_ipc_transport::Node;
use yuki_testkit::{Harness, run_child};

const WAIT: Duration = Duration::from_secs(30);

/// (job, worker pid, redelivered)
type Done = (u32, u32, bool);

/// A tiny deterministic generator (seeded per run, printed on failure).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A worker: reports each job, works on it a little, then acknowledges.
fn worker(node: &Node) {
    let jobs = node
        .channel_with::<u32>("jobs", &ChannelOptions::new().prefetch(2))
        .unwrap();
    let done = node.channel::<Done>("done").unwrap();
    let pid = std::process::id();
    loop {
        let job = match jobs.recv_delivery_timeout(WAIT) {
            Ok(job) => job,
            Err(Error::Closed { .. }) => return,
            Err(e) => panic!("worker: {e}"),
        };
        done.send((*job, pid, job.redelivered())).unwrap();
        // The work: long enough that a kill right after the report
        // finds the job still held.
        let until = std::time::Instant::now() + Duration::from_micros(300);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        job.ack();
    }
}

#[test]
fn workers_killed_while_holding_jobs_lose_none_and_only_their_jobs_come_twice() {
    if run_child(|_| worker(&Node::init().unwrap())) {
        return;
    }
    const JOBS: u32 = 1000;
    const KILLS: usize = 20;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut rng = Rng(seed);
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let jobs = node.channel::<u32>("jobs").unwrap();
    let done = node.channel::<Done>("done").unwrap();
    let mut spawned = 0;
    let mut spawn = |node: &Node| {
        spawned += 1;
        node.spawn(&format!("worker-{spawned}"), h.command("worker", spawned))
            .unwrap()
    };
    let mut workers: Vec<_> = (0..3).map(|_| spawn(&node)).collect();
    for job in 0..JOBS {
        jobs.send(job).unwrap();
    }
    // Kill points: after these many reports, kill the worker that made
    // the last one (it holds that job, and its prefetch).
    let mut kill_at: BTreeSet<usize> = BTreeSet::new();
    while kill_at.len() < KILLS {
        kill_at.insert(1 + rng.below(u64::from(JOBS) * 8 / 10) as usize);
    }
    let mut reports: Vec<Done> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut killed = BTreeSet::new();
    while seen.len() < JOBS as usize {
        let report = done
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("seed {seed}: {} of {JOBS} jobs done: {e}", seen.len()));
        reports.push(report);
        seen.insert(report.0);
        // Kill the worker that made this report: it still holds that job,
        // and its prefetch. A report can come from a worker
        // killed already (it was in flight); then the first live worker
        // goes instead, at once: waiting for a live reporter could wait
        // past the last job, when the survivors have drained the queue.
        if kill_at.contains(&reports.len()) {
            let i = workers
                .iter()
                .position(|w| w.pid() == report.1)
                .unwrap_or(0);
            let victim = workers.swap_remove(i);
            victim.kill().unwrap();
            killed.insert(victim.pid());
            workers.push(spawn(&node));
        }
    }
    jobs.close();
    for w in &workers {
        assert!(
            w.wait_timeout(WAIT)
                .expect("a worker ends once the queue is drained")
                .status
                .success()
        );
    }
    reports.extend(done.try_iter());
    assert_eq!(jobs.len(), 0, "seed {seed}: every job was acknowledged");
    assert_eq!(killed.len(), KILLS, "seed {seed}");
    let mut by_job: BTreeMap<u32, Vec<Done>> = BTreeMap::new();
    for r in &reports {
        by_job.entry(r.0).or_default().push(*r);
    }
    assert_eq!(by_job.len(), JOBS as usize);
    let mut duplicates = 0;
    for (job, runs) in &by_job {
        for pair in runs.windows(2) {
            duplicates += 1;
            assert!(
                killed.contains(&pair[0].1),
                "seed {seed}: job {job} ran twice, first by {} which was not killed",
                pair[0].1
            );
            assert!(pair[1].2, "seed {seed}: job {job} came again unmarked");
        }
    }
    println!(
        "{} kills, {} reports, {duplicates} duplicates, {} marked redelivered",
        killed.len(),
        reports.len(),
        reports.iter().filter(|r| r.2).count()
    );
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_stuck_worker_holds_at_most_its_prefetch_and_the_fast_one_does_the_rest() {
    if run_child(|s| {
        let node = Node::init().unwrap();
        let prefetch = 3;
        let report = node.channel::<(String, u32)>("report").unwrap();
        if s.name() == "stuck" {
            let jobs = node
                .channel_with::<u32>("jobs", &ChannelOptions::new().prefetch(prefetch))
                .unwrap();
            // Takes jobs and never finishes one, until the queue closes.
            let mut held = Vec::new();
            loop {
                match jobs.recv_delivery_timeout(WAIT) {
                    Ok(job) => {
                        report.send(("held".into(), *job)).unwrap();
                        held.push(job);
                    }
                    Err(Error::Closed { .. }) => break,
                    Err(e) => panic!("stuck: {e}"),
                }
            }
            for job in held {
                job.ack();
            }
        } else {
            let jobs = node.channel::<u32>("jobs").unwrap();
            loop {
                match jobs.recv_delivery_timeout(WAIT) {
                    Ok(job) => {
                        report.send(("done".into(), *job)).unwrap();
                        job.ack();
                    }
                    Err(Error::Closed { .. }) => break,
                    Err(e) => panic!("fast: {e}"),
                }
            }
        }
    }) {
        return;
    }
    const JOBS: u32 = 200;
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let jobs = node.channel::<u32>("jobs").unwrap();
    let report = node.channel::<(String, u32)>("report").unwrap();
    let stuck = node.spawn("stuck", h.command("stuck", 0)).unwrap();
    // The stuck worker is alone at first, so it surely takes its share.
    jobs.send(0).unwrap();
    assert_eq!(report.recv_timeout(WAIT).unwrap(), ("held".to_string(), 0));
    let fast = node.spawn("fast", h.command("fast", 0)).unwrap();
    for job in 1..JOBS {
        jobs.send(job).unwrap();
    }
    let mut held = BTreeSet::from([0]);
    let mut done = BTreeSet::new();
    // Counts, not time: if any job sat in the stuck worker's buffer
    // beyond what it holds, the fast worker could never reach the rest.
    while held.len() + done.len() < JOBS as usize {
        let (kind, job) = report.recv_timeout(WAIT).unwrap_or_else(|e| {
            panic!(
                "{} held, {} done: jobs are out of reach: {e}",
                held.len(),
                done.len()
            )
        });
        let fresh = if kind == "held" {
            held.insert(job)
        } else {
            done.insert(job)
        };
        assert!(fresh, "{job} delivered twice");
        assert!(
            held.len() <= 3,
            "the stuck worker holds {} jobs, prefetch 3",
            held.len()
        );
    }
    assert!(held.is_disjoint(&done));
    assert_eq!(jobs.len(), 0);
    jobs.close();
    assert!(stuck.wait_timeout(WAIT).unwrap().status.success());
    assert!(fast.wait_timeout(WAIT).unwrap().status.success());
    assert_eq!(jobs.len(), 0, "what the stuck worker held was acknowledged");
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_requeued_or_dropped_job_reaches_the_other_worker() {
    if run_child(|s| {
        let node = Node::init().unwrap();
        let jobs = node.channel::<u32>("jobs").unwrap();
        let report = node.channel::<(u32, bool)>("report").unwrap();
        // Credit granted and taken by main before "ready": the pull and
        // the `len` call travel in order over one link.
        assert!(jobs.try_recv_delivery().is_err());
        let _ = jobs.len();
        report.send((u32::MAX, false)).unwrap();
        loop {
            let job = match jobs.recv_delivery_timeout(WAIT) {
                Ok(job) => job,
                Err(Error::Closed { .. }) => return,
                Err(e) => panic!("{e}"),
            };
            report.send((s.index() as u32, job.redelivered())).unwrap();
            if job.redelivered() {
                job.ack();
            } else if s.name() == "requeue" {
                job.requeue();
            } else {
                drop(job);
            }
        }
    }) {
        return;
    }
    for how in ["requeue", "drop"] {
        let h = Harness::new();
        let node = Node::init().unwrap();
        let jobs = node.channel::<u32>("jobs").unwrap();
        let report = node.channel::<(u32, bool)>("report").unwrap();
        let workers: Vec<_> = (0..2)
            .map(|i| node.spawn(&format!("w{i}"), h.command(how, i)).unwrap())
            .collect();
        for _ in 0..2 {
            assert_eq!(report.recv_timeout(WAIT).unwrap(), (u32::MAX, false));
        }
        jobs.send(42).unwrap();
        let (first, again) = report.recv_timeout(WAIT).unwrap();
        assert!(!again);
        let (second, again) = report.recv_timeout(WAIT).unwrap();
        assert!(again, "{how}: marked redelivered");
        assert_ne!(first, second, "{how}: it went to the other worker");
        jobs.close();
        for w in &workers {
            assert!(w.wait_timeout(WAIT).unwrap().status.success());
        }
        assert_eq!(jobs.len(), 0);
        drop(node);
        h.assert_no_leftovers(WAIT);
    }
}

#[test]
fn a_child_opening_another_item_type_fails_at_open_with_both_names() {
    if run_child(|_| {
        let node = Node::init().unwrap();
        let err = node.channel::<String>("typed").unwrap_err();
        assert!(matches!(err, Error::ChannelTypeMismatch { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("alloc::string::String"), "{text}");
        assert!(text.contains("(u64, u64)"), "{text}");
        // The right type still joins.
        let ok = node.channel::<(u64, u64)>("typed").unwrap();
        ok.send((1, 2)).unwrap();
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let typed = node.channel::<(u64, u64)>("typed").unwrap();
    let child = node.spawn("child", h.command("child", 0)).unwrap();
    assert_eq!(typed.recv_timeout(WAIT).unwrap(), (1, 2));
    assert!(child.wait_timeout(WAIT).unwrap().status.success());
    drop(node);
    h.assert_no_leftovers(WAIT);
}

#[test]
fn a_job_held_past_its_ack_timeout_by_a_live_worker_goes_to_another() {
    if run_child(|s| {
        let node = Node::init().unwrap();
        let report = node.channel::<(String, u32, bool)>("report").unwrap();
        let options = if s.name() == "stuck" {
            ChannelOptions::new().ack_timeout(Duration::from_millis(100))
        } else {
            ChannelOptions::new()
        };
        let jobs = node.channel_with::<u32>("jobs", &options).unwrap();
        let mut held = Vec::new();
        loop {
            match jobs.recv_delivery_timeout(WAIT) {
                Ok(job) => {
                    report
                        .send((s.name().to_string(), *job, job.redelivered()))
                        .unwrap();
                    if s.name() == "stuck" {
                        held.push(job); // alive, but never done with it
                    } else {
                        job.ack();
                    }
                }
                Err(Error::Closed { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        for job in held {
            job.ack(); // too late: ignored
        }
    }) {
        return;
    }
    let h = Harness::new();
    let node = Node::builder().independent_main().init().unwrap();
    let jobs = node.channel::<u32>("jobs").unwrap();
    let report = node.channel::<(String, u32, bool)>("report").unwrap();
    let stuck = node.spawn("stuck", h.command("stuck", 0)).unwrap();
    jobs.send(7).unwrap();
    assert_eq!(
        report.recv_timeout(WAIT).unwrap(),
        ("stuck".into(), 7, false)
    );
    let other = node.spawn("other", h.command("other", 0)).unwrap();
    assert_eq!(
        report.recv_timeout(WAIT).unwrap(),
        ("other".into(), 7, true)
    );
    // The stuck worker's prefetch is still taken: the next job skips it.
    jobs.send(8).unwrap();
    assert_eq!(
        report.recv_timeout(WAIT).unwrap(),
        ("other".into(), 8, false)
    );
    jobs.close();
    assert!(stuck.wait_timeout(WAIT).unwrap().status.success());
    assert!(other.wait_timeout(WAIT).unwrap().status.success());
    assert_eq!(jobs.len(), 0);
    assert!(report.try_recv().is_err(), "nothing delivered a third time");
    drop(node);
    h.assert_no_leftovers(WAIT);
}
