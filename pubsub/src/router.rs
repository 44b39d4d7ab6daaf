//! Main's routing table: which child processes subscribed to which
//! patterns, how many subscriptions each holds, and what main could not
//! deliver to each.
//!
//! A message goes to each child at most once, however many of its
//! subscriptions match; the child fans it out locally. A child that does not
//! keep up loses messages, counted per pattern. Main's transport drops the
//! oldest pushes queued for it and hands them back ([`Router::dropped`]):
//! the loss is sent to the child as a notice at once, behind what is
//! queued, so its subscriptions learn it as `Lagged` once they have read
//! that far, even if nothing is published afterwards (a notice dropped in
//! turn is counted again). A transport that refuses a push instead
//! (`PeerBacklogged`) has no room for a notice either: that loss is sent
//! ahead of the next message that gets through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use yuki_channel::sync;

use yuki_channel::{PeerId, Transport, codec};

use crate::memo::{Memo, Stamp};
use crate::pattern::Pattern;
use crate::table::PatternTable;
use crate::wire::{Push, SERVICE};

#[derive(Debug, Default)]
pub(crate) struct Router {
    routes: RwLock<Routes>,
    losses: Mutex<HashMap<PeerId, HashMap<Pattern, u64>>>,
    any_loss: AtomicBool,
    stamp: Stamp,
}

/// Children reached by one topic, with how many subscriptions each.
type Targets = Vec<(PeerId, u64)>;

thread_local! {
    /// The targets of the last topic routed on this thread.
    static LAST: std::cell::Cell<Option<Memo<Targets>>> = const { std::cell::Cell::new(None) };
    /// This thread is sending loss notices: a loss counted meanwhile (a
    /// notice pushing out older pushes) is sent by that loop, not by a
    /// nested one.
    static REPORTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How many times one report sends again what its own notices pushed out.
const REPORT_ROUNDS: usize = 4;

#[derive(Debug, Default)]
struct Routes {
    table: PatternTable<Route>,
    by_peer: HashMap<PeerId, HashMap<Pattern, u64>>,
}

/// The children subscribed to one pattern, with their subscription counts.
#[derive(Debug, Default)]
struct Route {
    pattern: Option<Pattern>,
    peers: Vec<(PeerId, u64)>,
}

impl Router {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Routes> {
        sync::read(&self.routes)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Routes> {
        sync::write(&self.routes)
    }

    /// `peer` holds one more subscription on `pattern`.
    pub(crate) fn add(&self, peer: PeerId, pattern: &Pattern) {
        let mut routes = self.write();
        let route = routes.table.entry(pattern);
        route.pattern.get_or_insert_with(|| pattern.clone());
        match route.peers.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, n)) => *n += 1,
            None => route.peers.push((peer, 1)),
        }
        *routes
            .by_peer
            .entry(peer)
            .or_default()
            .entry(pattern.clone())
            .or_default() += 1;
        self.stamp.bump();
    }

    /// `peer` holds one subscription less on `pattern`.
    pub(crate) fn remove(&self, peer: PeerId, pattern: &Pattern) {
        let mut routes = self.write();
        routes.table.update(pattern, |route| {
            if let Some(at) = route.peers.iter().position(|(p, _)| *p == peer) {
                route.peers[at].1 -= 1;
                if route.peers[at].1 == 0 {
                    route.peers.swap_remove(at);
                }
            }
            route.peers.is_empty()
        });
        if let Some(patterns) = routes.by_peer.get_mut(&peer) {
            if let Some(n) = patterns.get_mut(pattern) {
                *n -= 1;
                if *n == 0 {
                    patterns.remove(pattern);
                }
            }
            if patterns.is_empty() {
                routes.by_peer.remove(&peer);
            }
        }
        self.stamp.bump();
    }

    /// Forgets everything about `peer` (it left).
    pub(crate) fn remove_peer(&self, peer: PeerId) {
        let mut routes = self.write();
        if let Some(patterns) = routes.by_peer.remove(&peer) {
            for pattern in patterns.keys() {
                routes.table.update(pattern, |route| {
                    route.peers.retain(|(p, _)| *p != peer);
                    route.peers.is_empty()
                });
            }
        }
        self.stamp.bump();
        drop(routes);
        self.lock_losses().remove(&peer);
    }

    /// The children `topic` goes to, each with how many of its
    /// subscriptions it reaches there.
    pub(crate) fn targets(&self, topic: &str, out: &mut Targets) {
        out.clear();
        let stamp = self.stamp.now();
        let mut memo = LAST.take().unwrap_or_default();
        if !memo.fits(stamp, topic.as_bytes()) {
            memo.reset(stamp, topic);
            memo.value.clear();
            self.read().table.for_each_match(topic, |route| {
                for &(peer, n) in &route.peers {
                    match memo.value.iter_mut().find(|(p, _)| *p == peer) {
                        Some((_, total)) => *total += n,
                        None => memo.value.push((peer, n)),
                    }
                }
            });
        }
        out.extend_from_slice(&memo.value);
        LAST.set(Some(memo));
    }

    fn lock_losses(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, HashMap<Pattern, u64>>> {
        sync::lock(&self.losses)
    }

    /// Pushes `frame` (`count` messages on `topic`) to `peer`; false if
    /// they were lost.
    pub(crate) fn push(
        &self,
        transport: &dyn Transport,
        peer: PeerId,
        topic: &str,
        frame: &[u8],
        count: u64,
    ) -> bool {
        if self.any_loss.load(Ordering::Acquire) && !self.report_losses(transport, peer) {
            self.record_loss(peer, topic, count);
            return false;
        }
        match transport.push(peer, SERVICE, frame) {
            Ok(()) => true,
            Err(yuki_channel::Error::PeerBacklogged(_)) => {
                self.record_loss(peer, topic, count);
                false
            }
            Err(yuki_channel::Error::NoPeer(_)) => {
                // It left; its leave event may still be on the way.
                self.remove_peer(peer);
                false
            }
            Err(e) => {
                tracing::warn!(%peer, topic, error = %e, "cannot deliver a message to a child");
                self.record_loss(peer, topic, count);
                false
            }
        }
    }

    /// Counts `count` messages on `topic` lost for `peer`, under each of
    /// its patterns that match.
    fn record_loss(&self, peer: PeerId, topic: &str, count: u64) {
        let mut matched = Vec::new();
        self.read().table.for_each_match(topic, |route| {
            if route.peers.iter().any(|(p, _)| *p == peer) {
                matched.extend(route.pattern.clone());
            }
        });
        if matched.is_empty() {
            return;
        }
        let mut losses = self.lock_losses();
        let mine = losses.entry(peer).or_default();
        for pattern in matched {
            *mine.entry(pattern).or_default() += count;
        }
        self.any_loss.store(true, Ordering::Release);
    }

    /// Counts the pushes the transport dropped for `peer` (oldest first)
    /// and tells the child at once.
    pub(crate) fn dropped(&self, transport: &dyn Transport, peer: PeerId, frames: &[&[u8]]) {
        // Consecutive messages on one topic are counted together: a flood
        // is one topic, and one pattern lookup.
        let mut run: Option<(&[u8], u64)> = None;
        for frame in frames {
            let (topic, count) = match Push::decode(frame) {
                Ok(Push::Message { topic, .. }) => (topic, 1),
                Ok(Push::Batch { topic, payloads }) => {
                    (topic, codec::Frames::new(payloads).count() as u64)
                }
                Ok(Push::Lost { pattern, count }) => {
                    if let Ok(pattern) = Pattern::new(pattern) {
                        self.record_pattern_loss(peer, pattern, count);
                    }
                    continue;
                }
                Err(_) => continue,
            };
            match &mut run {
                Some((t, n)) if *t == topic => *n += count,
                _ => {
                    if let Some((t, n)) = run.replace((topic, count)) {
                        self.record_topic_loss(peer, t, n);
                    }
                }
            }
        }
        if let Some((t, n)) = run {
            self.record_topic_loss(peer, t, n);
        }
        if !REPORTING.get() {
            self.report_losses(transport, peer);
        }
    }

    fn record_topic_loss(&self, peer: PeerId, topic: &[u8], count: u64) {
        if let Ok(topic) = std::str::from_utf8(topic) {
            self.record_loss(peer, topic, count);
        }
    }

    fn record_pattern_loss(&self, peer: PeerId, pattern: Pattern, count: u64) {
        let mut losses = self.lock_losses();
        *losses.entry(peer).or_default().entry(pattern).or_default() += count;
        self.any_loss.store(true, Ordering::Release);
    }

    /// Sends `peer` what it lost so far; false if some could not be sent
    /// (it stays counted, for the next try).
    fn report_losses(&self, transport: &dyn Transport, peer: PeerId) -> bool {
        let outer = !REPORTING.replace(true);
        let mut sent_all = true;
        for _ in 0..REPORT_ROUNDS {
            let mine = {
                let mut losses = self.lock_losses();
                let mine = losses.remove(&peer);
                if losses.is_empty() {
                    self.any_loss.store(false, Ordering::Release);
                }
                mine
            };
            let Some(mine) = mine else {
                break;
            };
            // Pushed without the lock: a push may hand back dropped
            // notices, which are counted again (and sent in the next round).
            let mut unsent = Vec::new();
            for (pattern, count) in mine {
                let sent = unsent.is_empty()
                    && codec::encode(&Push::Lost {
                        pattern: pattern.as_str(),
                        count,
                    })
                    .is_ok_and(|f| {
                        // A child that left has nothing left to learn.
                        matches!(
                            transport.push(peer, SERVICE, &f),
                            Ok(()) | Err(yuki_channel::Error::NoPeer(_))
                        )
                    });
                if !sent {
                    unsent.push((pattern, count));
                }
            }
            if !unsent.is_empty() {
                for (pattern, count) in unsent {
                    self.record_pattern_loss(peer, pattern, count);
                }
                sent_all = false;
                break;
            }
            if !outer {
                break;
            }
        }
        if outer {
            REPORTING.set(false);
        }
        sent_all
    }
}
