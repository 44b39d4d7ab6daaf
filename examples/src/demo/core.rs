//! The bot core: main's side of the demo.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use yuki_channel::sync;

use tracing::{info, warn};
use yuki_channel::Error as ChannelError;
use yuki_channel::codec::mark;
use yuki_ipc_transport::{ChildHandle, Lifecycle, Node, RestartPolicy};
use yuki_pubsub::PubSub;
use yuki_storage::Store;

use super::events::{BotConfig, Control, Incoming};
use super::{CONTROL, DemoError, log};

/// The plugin hosts main starts, with their restart policies.
const HOSTS: [(&str, RestartPolicy); 2] = [
    ("chat", RestartPolicy::Never),
    ("games", RestartPolicy::OnFailure),
];

/// How often main reports the messages counted so far.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// How long past its run time the demo waits for each host's scripted
/// restart to happen (a slow machine takes longer to get there).
const STORY_GRACE: Duration = Duration::from_secs(30);

/// Messages main received, by plugin host.
type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Runs the bot core for `run_for` (or until Ctrl+C), then stops the plugin
/// hosts and prints the summary.
pub fn run(node: Node, run_for: Duration, epoch: SystemTime) -> Result<(), DemoError> {
    let started = Instant::now();
    let transport = node.transport();
    let store = Store::attach(transport.clone())?;
    let pubsub = PubSub::attach(transport)?;
    let control = node.channel::<Control>(CONTROL)?;

    let config = BotConfig {
        bot_name: "yuki-bot".into(),
        command_prefix: "/".into(),
        tick_ms: 100,
    };
    store.set(BotConfig::KEY, &config)?;
    info!(?config, "configuration stored");

    let runs = store.watch("runs.")?;
    std::thread::spawn(move || {
        while let Ok(change) = runs.recv() {
            if let Ok(Some(run)) = change.decode::<i64>() {
                info!("store: {} = {run}", change.key);
            }
        }
    });

    let counts: Counts = Arc::default();
    let tally = counts.clone();
    let _listener = pubsub.on_message::<Incoming, _>("msg.*", move |m| {
        let event = m.into_value();
        let mut counts = sync::lock(&tally);
        let n = counts.entry(event.host.clone()).or_default();
        *n += 1;
        if *n == 1 {
            info!(host = %event.host, user = %event.user, text = %event.text, "first message from");
        }
    })?;

    node.on_lifecycle(|moment: &Lifecycle| match moment {
        Lifecycle::Stopping { name, .. } => info!("hook: {name} is stopping"),
        Lifecycle::Restarting {
            name, attempt: 0, ..
        } => info!("hook: {name} restarts on request"),
        Lifecycle::Restarting {
            name,
            attempt,
            delay,
        } => info!("hook: {name} restarts by its policy (attempt {attempt}, in {delay:?})"),
        Lifecycle::Exited { name, status, .. } => info!("hook: {name} exited ({status})"),
        Lifecycle::GaveUp { name, restarts } => {
            warn!("hook: {name} stays down after {restarts} restarts")
        }
    });

    let quit = control.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = quit.send(Control::Quit);
    }) {
        warn!(error = %e, "Ctrl+C handler not installed");
    }

    let exe = std::env::current_exe()?;
    let mut hosts = Vec::new();
    for (name, policy) in HOSTS {
        let mut command = Command::new(&exe);
        command.env(log::EPOCH_ENV, log::epoch_value(epoch));
        let handle = node
            .child(name, command)
            .restart_policy(policy)
            .backoff(Duration::from_millis(200), Duration::from_secs(1))
            .spawn()?;
        info!("spawned plugin host {name} (pid {})", handle.pid());
        hosts.push(handle);
    }

    let interrupted = serve(&control, &store, &hosts, &counts, started + run_for)?;
    if interrupted {
        info!("Ctrl+C: stopping the plugin hosts");
    } else {
        info!("time is up: stopping the plugin hosts");
    }
    for host in &hosts {
        match host.stop(Duration::from_secs(2)) {
            Ok(exit) => info!("{} stopped ({})", host.name(), exit.status),
            Err(e) => warn!("{} did not stop cleanly: {e}", host.name()),
        }
    }
    summary(&store, &counts, &hosts, started)?;
    Ok(())
}

/// Whether every host has started its second run: the restart it asks for
/// and the crash that restarts it have both happened.
fn story_told(store: &Store) -> Result<bool, DemoError> {
    for (name, _) in HOSTS {
        if store.get_or::<i64>(&format!("runs.{name}"), 0)? < 2 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Answers control requests until `deadline`, or later while the hosts'
/// restarts have not happened yet (at most [`STORY_GRACE`] later); returns
/// whether Ctrl+C ended it.
fn serve(
    control: &yuki_channel::Channel<Control>,
    store: &Store,
    hosts: &[ChildHandle],
    counts: &Counts,
    deadline: Instant,
) -> Result<bool, DemoError> {
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    let mut deadline = deadline;
    let mut overtime = false;
    loop {
        let now = Instant::now();
        // Past its time, the demo ends once the story is told (looked at
        // each progress tick), or when the grace runs out too.
        if (now >= deadline || overtime) && story_told(store)? {
            return Ok(false);
        }
        if now >= deadline {
            if overtime {
                return Ok(false);
            }
            overtime = true;
            deadline = now + STORY_GRACE;
            info!("time is up, but the hosts have not restarted yet: waiting for them");
        }
        if now >= next_progress {
            next_progress += PROGRESS_EVERY;
            let counts = sync::lock(counts);
            info!("messages so far: {}", describe(&counts));
        }
        match control.recv_timeout(deadline.min(next_progress) - now) {
            Ok(Control::Quit) => return Ok(true),
            Ok(Control::Restart { host, reason }) => {
                info!("{host} asks for a restart: {reason}");
                match hosts.iter().find(|h| h.name() == host) {
                    Some(handle) => match handle.restart() {
                        Ok(()) => info!("{host} is back (pid {})", handle.pid()),
                        Err(e) => warn!("restarting {host} failed: {e}"),
                    },
                    None => warn!("no plugin host is named {host}"),
                }
            }
            Err(ChannelError::Timeout(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn describe(counts: &BTreeMap<String, u64>) -> String {
    let total: u64 = counts.values().sum();
    let each: Vec<String> = counts.iter().map(|(h, n)| format!("{h} {n}")).collect();
    format!("{total} ({})", each.join(", "))
}

/// Prints what the store holds and what main counted, one `summary:` line
/// each, so a reader (or a test) finds them at once.
/// Reads a stored value as the store marks it.
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ChannelError> {
    mark::decode(bytes).map_err(|m| ChannelError::Decode {
        type_name: m.asked,
        reason: m.to_string(),
    })
}

fn summary(
    store: &Store,
    counts: &Counts,
    hosts: &[ChildHandle],
    started: Instant,
) -> Result<(), DemoError> {
    let entries = store.get_all_raw()?;
    println!("summary: store ({} keys)", entries.len());
    for (key, bytes) in &entries {
        if key == BotConfig::KEY {
            let config: BotConfig = decode(bytes)?;
            println!("summary:   {key} = {config:?}");
        } else {
            let value: i64 = decode(bytes)?;
            println!("summary:   {key} = {value}");
        }
    }
    let counts = sync::lock(counts);
    println!("summary: messages main received: {}", describe(&counts));
    for host in hosts {
        let runs: i64 = store.get_or(&format!("runs.{}", host.name()), 0)?;
        println!(
            "summary: {} ran {runs} time(s), {} restart(s) by policy, running now: {}",
            host.name(),
            host.restarts(),
            host.is_running()
        );
    }
    let running = hosts.iter().filter(|h| h.is_running()).count();
    println!(
        "summary: done in {:.1} s, plugin hosts still running: {running}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
