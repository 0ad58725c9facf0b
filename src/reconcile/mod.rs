//! Specs are the truth: what reconcile does with one agent, decided from its spec (and the
//! plan hash of that spec) and what systemd runs. Pure: the daemon gathers the facts, asks
//! [`decide`], and carries the answer out (hive::reconciler); `hivectl plan` shows the same
//! answer without acting on it.

pub mod diff;
mod system;
pub use system::with_system;
pub mod view;

use serde::{Deserialize, Serialize};

use crate::journal::fields;
use crate::spec::AgentName;
use crate::systemd::{ActiveState, SubState};

/// What the daemon knows about one agent before it acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub agent: AgentName,
    pub spec: SpecFacts,
    /// The container unit as systemd has it; `None` if systemd has no such unit loaded.
    pub live: Option<Live>,
    /// `hivectl stop` was run for it since the host booted.
    pub stopped_by_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecFacts {
    /// No spec saved by create nor declared.
    Missing,
    /// A spec that does not parse or validate, or that preflight refuses (a bind source is
    /// gone…): the one-line reason.
    Refused(String),
    Valid {
        /// The plan hash of the container unit (which covers the harness unit too).
        plan: String,
        autostart: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub active_state: ActiveState,
    pub sub_state: SubState,
    /// `HIVE_PLAN=` of the unit; `None` for a unit hyperhive did not make.
    pub plan: Option<String>,
}

/// One agent's step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// The units match the spec: left as they are (same InvocationID).
    Keep,
    /// Nothing runs and the spec wants it up: create the units.
    Create,
    /// A unit of ours runs another plan: replace it.
    Rebuild { live_plan: String },
    /// The units match, but the system agent runs another system than its spec names:
    /// switch it in place (same InvocationID).
    Switch { from: String, to: String },
    /// The spec is gone and pruning was asked: stop the units (state stays).
    Stop,
    /// Nothing to do, for a reason worth showing.
    Leave { reason: String },
    /// Cannot act on this agent: why, in one line.
    Refuse { reason: String },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Create => "create",
            Action::Rebuild { .. } => "rebuild",
            Action::Switch { .. } => "switch",
            Action::Stop => "stop",
            Action::Leave { .. } => "leave",
            Action::Refuse { .. } => "refuse",
        }
    }

    /// Whether carrying it out starts or stops units.
    pub fn changes_units(&self) -> bool {
        matches!(
            self,
            Action::Create | Action::Rebuild { .. } | Action::Switch { .. } | Action::Stop
        )
    }
}

/// The one rule. Never a second start of what runs, never a restart of matching units;
/// units in the middle of something systemd does (starting, restarting after a crash,
/// stopping) are left to systemd, and a failed unit is left for the admin to look at —
/// `hivectl start` brings it back, as `systemctl start` would.
pub fn decide(f: &Facts, prune: bool) -> Action {
    let unit = f.agent.container_unit();
    let live = f
        .live
        .as_ref()
        .filter(|l| l.active_state != ActiveState::Inactive);
    match (&f.spec, live) {
        (SpecFacts::Missing, None) => Action::Leave {
            reason: "no spec and no unit".into(),
        },
        (SpecFacts::Missing, Some(l)) if l.plan.is_none() => Action::Leave {
            reason: format!(
                "{unit} was not made by hyperhive (no {}); left alone",
                fields::PLAN
            ),
        },
        (SpecFacts::Missing, Some(l)) if l.active_state == ActiveState::Failed => Action::Leave {
            reason: format!("no spec; {unit} is failed (hivectl destroy clears it)"),
        },
        (SpecFacts::Missing, Some(_)) if prune => Action::Stop,
        (SpecFacts::Missing, Some(_)) => Action::Leave {
            reason: format!("no spec, but {unit} runs; reload --prune stops it"),
        },
        (SpecFacts::Refused(reason), _) => Action::Refuse {
            reason: reason.clone(),
        },
        (SpecFacts::Valid { autostart, .. }, None) => {
            if f.stopped_by_admin {
                Action::Leave {
                    reason: "stopped with hivectl stop since boot; hivectl start brings it back"
                        .into(),
                }
            } else if !autostart {
                Action::Leave {
                    reason: "autostart is off; hivectl start brings it up".into(),
                }
            } else {
                Action::Create
            }
        }
        (SpecFacts::Valid { plan, .. }, Some(l)) => match l.plan.as_deref() {
            None => Action::Refuse {
                reason: format!(
                    "{unit} is {} but was not made by hyperhive (no {}); stop it first",
                    l.active_state,
                    fields::PLAN
                ),
            },
            Some(_) if l.active_state == ActiveState::Failed => Action::Leave {
                reason: format!("{unit} failed ({}); hivectl start restarts it", l.sub_state),
            },
            Some(_) if l.active_state != ActiveState::Active => Action::Leave {
                reason: format!(
                    "{unit} is {}/{}; systemd is at work on it",
                    l.active_state, l.sub_state
                ),
            },
            Some(live) if live == plan => Action::Keep,
            Some(live) => Action::Rebuild {
                live_plan: live.to_owned(),
            },
        },
    }
}

/// What reconcile did (or, for a plan, would do) with one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub agent: AgentName,
    #[serde(flatten)]
    pub action: Action,
    /// The spec's plan hash, when it has a valid one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Absent for a plan, or for steps that change nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<StepResult>,
}

/// How carrying a step out ended; on the wire `ok` or `failed: <reason>`
/// (docs/dbus-api.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum StepResult {
    Ok,
    /// Why, in one line.
    Failed(String),
}

impl StepResult {
    pub fn is_ok(&self) -> bool {
        *self == StepResult::Ok
    }
}

impl From<StepResult> for String {
    fn from(r: StepResult) -> Self {
        match r {
            StepResult::Ok => "ok".into(),
            StepResult::Failed(why) => format!("failed: {why}"),
        }
    }
}

impl From<&str> for StepResult {
    fn from(s: &str) -> Self {
        StepResult::from(s.to_owned())
    }
}

impl From<String> for StepResult {
    fn from(s: String) -> Self {
        match s.strip_prefix("failed: ") {
            _ if s == "ok" => StepResult::Ok,
            Some(why) => StepResult::Failed(why.to_owned()),
            None => StepResult::Failed(s),
        }
    }
}

/// Totals of a reconcile, for its journal entry and hivectl's last line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub created: usize,
    pub rebuilt: usize,
    pub kept: usize,
    pub stopped: usize,
    pub left: usize,
    pub refused: usize,
    pub failed: usize,
}

impl Totals {
    pub fn of(steps: &[Step]) -> Totals {
        let mut t = Totals::default();
        for s in steps {
            if s.result.as_ref().is_some_and(|r| !r.is_ok()) {
                t.failed += 1;
                continue;
            }
            match s.action {
                Action::Keep => t.kept += 1,
                Action::Create => t.created += 1,
                Action::Rebuild { .. } | Action::Switch { .. } => t.rebuilt += 1,
                Action::Stop => t.stopped += 1,
                Action::Leave { .. } => t.left += 1,
                Action::Refuse { .. } => t.refused += 1,
            }
        }
        t
    }

    pub fn summary(&self) -> String {
        format!(
            "{} created, {} rebuilt, {} kept, {} stopped, {} left alone, {} refused, {} failed",
            self.created,
            self.rebuilt,
            self.kept,
            self.stopped,
            self.left,
            self.refused,
            self.failed
        )
    }
}

#[cfg(test)]
mod tests;
