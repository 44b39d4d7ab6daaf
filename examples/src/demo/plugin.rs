//! A plugin host: a child process of the demo.
//!
//! It reads the bot's configuration from the store, then "receives" a chat
//! message every `tick_ms`: it publishes an [`Incoming`] event on
//! `msg.<host>` and counts it with `incr`. It listens to the other host's
//! events and counts those too. On its first run, `chat` asks main to
//! restart it (as a host does to load new plugins) and `games` crashes on
//! purpose; the store remembers the runs, so neither does it twice. Asked to
//! stop, it finishes the message in hand and returns.

use std::time::Duration;

use tracing::{info, warn};
use yuki_ipc_transport::Node;
use yuki_pubsub::PubSub;
use yuki_storage::Store;

use super::events::{BotConfig, Control, Incoming, topic};
use super::{CONTROL, DemoError};

/// On its first run, `chat` asks for a restart after this many messages.
const RESTART_AFTER: u64 = 10;
/// On its first run, `games` crashes after this many messages.
const CRASH_AFTER: u64 = 20;

const USERS: [&str; 3] = ["ann", "bo", "cy"];
const TEXTS: [&str; 4] = ["hello", "/weather tokyo", "/roll 2d6", "good bot"];

/// Runs the plugin host until main asks it to stop, then returns (the
/// process exits cleanly when `main` returns).
pub fn run(node: Node) -> Result<(), DemoError> {
    // Ctrl+C reaches the whole process group: main stops the hosts itself.
    if let Err(e) = ctrlc::set_handler(|| {}) {
        warn!(error = %e, "Ctrl+C stays fatal here");
    }
    let name = node.name().to_owned();
    let transport = node.transport();
    let store = Store::attach(transport.clone())?;
    let pubsub = PubSub::attach(transport)?;
    let control = node.channel::<Control>(CONTROL)?;

    let run = store.incr(&format!("runs.{name}"), 1)?;
    let config: BotConfig = store
        .get(BotConfig::KEY)?
        .ok_or("the bot core stored no configuration")?;
    info!(
        "run {run}: serving {} with prefix {:?}",
        config.bot_name, config.command_prefix
    );

    let other = if name == "chat" { "games" } else { "chat" };
    let seen_key = format!("count.{name}.seen_from_{other}");
    let counter = store.clone();
    let _listener = pubsub.on_message::<Incoming, _>(&topic(other), move |m| {
        let event = m.into_value();
        match counter.incr(&seen_key, 1) {
            Ok(1) => info!(
                "first event from {}: {} wrote {:?}",
                event.host, event.user, event.text
            ),
            Ok(_) => {}
            Err(e) => warn!("counting failed: {e}"),
        }
    })?;

    let received_key = format!("count.{name}.received");
    let tick = Duration::from_millis(config.tick_ms.max(1));
    for n in 1u64.. {
        // The tick doubles as the wait for main's stop request.
        if node.wait_for_stop_timeout(tick)? {
            info!("asked to stop after {} message(s)", n - 1);
            break;
        }
        let event = Incoming {
            host: name.clone(),
            user: USERS[n as usize % USERS.len()].into(),
            text: TEXTS[n as usize % TEXTS.len()].into(),
        };
        let reached = pubsub.publish(&topic(&name), &event)?;
        store.incr(&received_key, 1)?;
        if n == 1 {
            info!("first message published, {reached} subscription(s) reached");
        }
        if run == 1 && name == "chat" && n == RESTART_AFTER {
            info!("new plugins to load: asking main for a restart on {CONTROL:?}");
            let request = Control::Restart {
                host: name.clone(),
                reason: "new plugins to load".into(),
            };
            if control.send(request).is_err() {
                return Err("main is gone".into());
            }
        }
        if run == 1 && name == "games" && n == CRASH_AFTER {
            warn!("crashing on purpose");
            std::process::exit(3);
        }
    }
    Ok(())
}
