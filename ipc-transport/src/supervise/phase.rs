//! A supervised child's state machine: where its current run is
//! ([`Phase`]), what was asked of it ([`Ask`]), and every move between
//! them, written once in [`Life::on`].
//!
//! ```text
//!            StartBegun          Forked                Joined
//!   Idle ───────────────▶ Forking ─────▶ Handshake ─────────────▶ Running
//!    ▲  ▲   StartFailed      │          │  │ Exited (kept as a zombie)   │ Exited
//!    │  └────────────────────┘          │  ▼                             ▼
//!    │                      Reaped      │ Handshake{exited}         Running{exited}
//!    │        Joined/StartFailed        ▼                                │ Reaped
//!    ├──────────────────────────── HandshakeReaped                       │
//!    └───────────────────────────────────────────────────────────────────┘
//!   Idle/Running ── Finish ──▶ Finished (terminal)
//! ```
//!
//! A start that fails after the fork while its process is not yet reaped
//! leaves it `Running` (no start in progress), so its watcher reaps it and
//! applies the policy as for any exit.

use std::fmt;

use super::policy::Exit;

/// Where a child's current run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// No process: not started yet, or between runs (the back-off).
    Idle,
    /// A start is on its way to the fork.
    Forking,
    /// Forked; the start waits for the handshake and handles an exit
    /// during it itself. `exited`: it exited but is not reaped yet (its pid
    /// is still ours).
    Handshake { exited: bool },
    /// Forked and reaped before the start ended: the start cleans up.
    HandshakeReaped,
    /// Its process exists and no start is in progress (normally: it joined).
    Running { exited: bool },
    /// Ended for good.
    Finished(Exit),
}

/// What was asked of the child, beside its phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ask {
    /// Nothing: its policy decides after an exit.
    Nothing,
    /// Start it again once it exits, whatever its policy says.
    Restart,
    /// Stop it for good (sticky).
    Stop,
}

/// What happens to a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// A start begins (before the fork, so a concurrent stop sees it).
    StartBegun,
    /// The fork made its process.
    Forked,
    /// The start failed (the fork, the watcher or the handshake).
    StartFailed,
    /// It joined: the handshake ended and its link is up.
    Joined,
    /// Its process exited; not reaped yet.
    Exited,
    /// Its process was reaped.
    Reaped,
    /// `stop`, `kill` or the node's shutdown.
    StopAsked,
    /// `restart`.
    RestartAsked,
    /// The requested restart is being done.
    RestartTaken,
    /// It ended for good.
    Finish(Exit),
}

/// An event that has no move from the state it came in: the state stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Illegal {
    pub(super) phase: Phase,
    pub(super) ask: Ask,
    pub(super) event: Event,
}

impl fmt::Display for Illegal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} cannot happen to a child in {:?} (asked: {:?})",
            self.event, self.phase, self.ask
        )
    }
}

/// A child's phase and what was asked of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Life {
    pub(super) phase: Phase,
    pub(super) ask: Ask,
}

impl Default for Life {
    fn default() -> Life {
        Life {
            phase: Phase::Idle,
            ask: Ask::Nothing,
        }
    }
}

impl Life {
    /// Applies `event`: the one place a child's state changes. An illegal
    /// event leaves it as it was and says so.
    pub(super) fn on(&mut self, event: Event) -> Result<(), Illegal> {
        use Event as E;
        use Phase as P;
        let (phase, ask) = match (self.phase, self.ask, event) {
            // What is asked: a stop is final and overrides a restart.
            (P::Finished(_), _, E::StopAsked | E::RestartAsked) => return Err(self.illegal(event)),
            (phase, _, E::StopAsked) => (phase, Ask::Stop),
            (_, Ask::Stop, E::RestartAsked) => return Err(self.illegal(event)),
            (phase, _, E::RestartAsked) => (phase, Ask::Restart),
            (phase, Ask::Restart, E::RestartTaken) => (phase, Ask::Nothing),

            // One run, from the fork to the reaping.
            (P::Idle, ask, E::StartBegun) => (P::Forking, ask),
            (P::Forking, ask, E::Forked) => (P::Handshake { exited: false }, ask),
            (P::Forking, ask, E::StartFailed) => (P::Idle, ask),
            (P::Handshake { exited }, ask, E::StartFailed) => (P::Running { exited }, ask),
            (P::Handshake { exited }, ask, E::Joined) => (P::Running { exited }, ask),
            (P::HandshakeReaped, ask, E::Joined | E::StartFailed) => (P::Idle, ask),
            (P::Handshake { .. }, ask, E::Exited) => (P::Handshake { exited: true }, ask),
            (P::Running { .. }, ask, E::Exited) => (P::Running { exited: true }, ask),
            (P::Handshake { .. }, ask, E::Reaped) => (P::HandshakeReaped, ask),
            (P::Running { .. }, ask, E::Reaped) => (P::Idle, ask),

            // The end. A finished child's last process may still be reaped
            // (one killed but not reaped within the start's wait).
            (P::Idle | P::Running { .. }, ask, E::Finish(exit)) => (P::Finished(exit), ask),
            (P::Finished(exit), ask, E::Finish(_) | E::Reaped | E::Exited) => {
                (P::Finished(exit), ask)
            }

            _ => return Err(self.illegal(event)),
        };
        self.phase = phase;
        self.ask = ask;
        Ok(())
    }

    fn illegal(&self, event: Event) -> Illegal {
        Illegal {
            phase: self.phase,
            ask: self.ask,
            event,
        }
    }

    /// Its process exists (maybe as an unreaped zombie).
    pub(super) fn running(&self) -> bool {
        matches!(self.phase, Phase::Handshake { .. } | Phase::Running { .. })
    }

    /// Its process runs and has not exited: a signal reaches it.
    pub(super) fn alive(&self) -> bool {
        matches!(
            self.phase,
            Phase::Handshake { exited: false } | Phase::Running { exited: false }
        )
    }

    /// How it ended, once it has for good.
    pub(super) fn finished(&self) -> Option<Exit> {
        match self.phase {
            Phase::Finished(exit) => Some(exit),
            _ => None,
        }
    }

    pub(super) fn stopping(&self) -> bool {
        self.ask == Ask::Stop
    }
}

#[cfg(test)]
mod tests {
    use std::process::ExitStatus;

    use super::*;

    fn exit() -> Exit {
        Exit {
            status: ExitStatus::default(),
            restarts: 0,
            gave_up: false,
        }
    }

    fn phases() -> Vec<Phase> {
        vec![
            Phase::Idle,
            Phase::Forking,
            Phase::Handshake { exited: false },
            Phase::Handshake { exited: true },
            Phase::HandshakeReaped,
            Phase::Running { exited: false },
            Phase::Running { exited: true },
            Phase::Finished(exit()),
        ]
    }

    fn events() -> Vec<Event> {
        vec![
            Event::StartBegun,
            Event::Forked,
            Event::StartFailed,
            Event::Joined,
            Event::Exited,
            Event::Reaped,
            Event::StopAsked,
            Event::RestartAsked,
            Event::RestartTaken,
            Event::Finish(exit()),
        ]
    }

    /// The expected move for every phase and event, written as the table a
    /// reader checks the code against (asked: nothing).
    fn expected(phase: Phase, event: Event) -> Option<Phase> {
        use Event as E;
        use Phase as P;
        let f = P::Finished(exit());
        Some(match (phase, event) {
            (P::Idle, E::StartBegun) => P::Forking,
            (P::Idle, E::Finish(_)) => f,
            (P::Forking, E::Forked) => P::Handshake { exited: false },
            (P::Forking, E::StartFailed) => P::Idle,
            (P::Handshake { exited }, E::StartFailed | E::Joined) => P::Running { exited },
            (P::Handshake { .. }, E::Exited) => P::Handshake { exited: true },
            (P::Handshake { .. }, E::Reaped) => P::HandshakeReaped,
            (P::HandshakeReaped, E::Joined | E::StartFailed) => P::Idle,
            (P::Running { .. }, E::Exited) => P::Running { exited: true },
            (P::Running { .. }, E::Reaped) => P::Idle,
            (P::Running { .. }, E::Finish(_)) => f,
            (P::Finished(_), E::Finish(_) | E::Reaped | E::Exited) => f,
            (p, E::StopAsked | E::RestartAsked) if p != f => p,
            _ => return None,
        })
    }

    #[test]
    fn every_phase_and_event_moves_as_the_table_says() {
        let mut checked = 0;
        for phase in phases() {
            for event in events() {
                let mut life = Life {
                    phase,
                    ask: Ask::Nothing,
                };
                let got = life.on(event);
                match expected(phase, event) {
                    Some(to) => {
                        assert_eq!(got, Ok(()), "{phase:?} on {event:?}");
                        assert_eq!(life.phase, to, "{phase:?} on {event:?}");
                    }
                    None => {
                        assert!(got.is_err(), "{phase:?} on {event:?} should be illegal");
                        assert_eq!(life.phase, phase, "an illegal event left {phase:?}");
                        assert_eq!(life.ask, Ask::Nothing);
                    }
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 8 * 10);
    }

    #[test]
    fn asks_follow_their_own_rules_in_every_phase() {
        for phase in phases() {
            let done = matches!(phase, Phase::Finished(_));
            for ask in [Ask::Nothing, Ask::Restart, Ask::Stop] {
                for event in [Event::StopAsked, Event::RestartAsked, Event::RestartTaken] {
                    let mut life = Life { phase, ask };
                    let got = life.on(event);
                    let want = match (event, ask) {
                        _ if done && event != Event::RestartTaken => None,
                        (Event::StopAsked, _) => Some(Ask::Stop),
                        (Event::RestartAsked, Ask::Stop) => None,
                        (Event::RestartAsked, _) => Some(Ask::Restart),
                        (Event::RestartTaken, Ask::Restart) => Some(Ask::Nothing),
                        _ => None,
                    };
                    match want {
                        Some(a) => {
                            assert_eq!(got, Ok(()), "{phase:?}/{ask:?} on {event:?}");
                            assert_eq!(life.ask, a, "{phase:?}/{ask:?} on {event:?}");
                        }
                        None => assert!(got.is_err(), "{phase:?}/{ask:?} on {event:?}"),
                    }
                    assert_eq!(life.phase, phase, "an ask never moves the phase");
                }
            }
        }
    }

    #[test]
    fn a_run_keeps_what_was_asked() {
        let mut life = Life::default();
        life.on(Event::StartBegun).unwrap();
        life.on(Event::StopAsked).unwrap();
        for e in [Event::Forked, Event::Joined, Event::Exited, Event::Reaped] {
            life.on(e).unwrap();
            assert!(life.stopping(), "after {e:?}");
        }
        assert_eq!(life.phase, Phase::Idle);
        assert_eq!(
            life.on(Event::RestartAsked).map_err(|i| i.event),
            Err(Event::RestartAsked)
        );
    }

    #[test]
    fn the_flags_read_from_the_phase() {
        for phase in phases() {
            let life = Life {
                phase,
                ask: Ask::Nothing,
            };
            assert_eq!(
                life.alive(),
                life.running()
                    && !matches!(
                        phase,
                        Phase::Handshake { exited: true } | Phase::Running { exited: true }
                    )
            );
            assert_eq!(
                life.finished().is_some(),
                matches!(phase, Phase::Finished(_))
            );
        }
    }
}
