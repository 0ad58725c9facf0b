//! An approval's data and lifecycle, with no I/O: the store asks these types which
//! transitions are legal and never compares status strings itself.

use serde::Serialize;

use crate::spec::AgentName;

/// What an approval asks for (docs/approvals.md). An agent names it on the wire; the
/// daemon parses it at the door, so only these reach the store.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ApprovalKind {
    /// A change to the agent's own spec, applied by a rebuild.
    SpecChange,
    /// Claude Code asks whether to run a tool; the answer is the decision.
    ToolUse,
}

impl ApprovalKind {
    pub const ALL: [ApprovalKind; 2] = [ApprovalKind::SpecChange, ApprovalKind::ToolUse];

    /// The text in the `kind` column and on every wire; it never changes once released.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The inverse of [`ApprovalKind::as_str`].
    pub fn parse(raw: &str) -> Option<ApprovalKind> {
        raw.parse().ok()
    }
}

/// Where an approval is in its life (docs/approvals.md):
///
/// ```text
/// pending ──approve──▶ approved ──apply──▶ applied
///    │                    └──────fail────▶ failed
///    ├──deny───▶ denied
///    └──orphan─▶ failed      (the agent's state dir is gone)
/// ```
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Applied,
    Failed,
}

impl Status {
    /// Every status, for exhaustive tests.
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Approved,
        Status::Denied,
        Status::Applied,
        Status::Failed,
    ];

    /// The text stored in the `status` column and shown by `hivectl approvals`; it never
    /// changes once released because old rows keep it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The inverse of [`Status::as_str`].
    pub fn parse(raw: &str) -> Option<Status> {
        raw.parse().ok()
    }

    /// Applies `t`, refusing it unless it starts from this status.
    pub fn then(self, t: Transition) -> Result<Status, IllegalTransition> {
        if self == t.from() {
            Ok(t.to())
        } else {
            Err(IllegalTransition {
                from: self,
                transition: t,
            })
        }
    }

    /// Nothing can happen to an approval in this status any more.
    pub fn is_final(self) -> bool {
        Transition::ALL.iter().all(|t| t.from() != self)
    }
}

/// The named edges of the lifecycle. Each has exactly one status it may start from, which
/// lets the store guard every UPDATE with `WHERE status = <from>` and so stay correct when
/// several processes race on the same row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// An admin said yes.
    Approve,
    /// An admin said no.
    Deny,
    /// The approved change took effect.
    Apply,
    /// The approved change could not be applied.
    Fail,
    /// The agent's state dir vanished before anyone decided.
    Orphan,
}

impl Transition {
    /// Every transition, for exhaustive tests.
    pub const ALL: [Transition; 5] = [
        Transition::Approve,
        Transition::Deny,
        Transition::Apply,
        Transition::Fail,
        Transition::Orphan,
    ];

    /// The only status this transition may start from.
    pub fn from(self) -> Status {
        match self {
            Transition::Approve | Transition::Deny | Transition::Orphan => Status::Pending,
            Transition::Apply | Transition::Fail => Status::Approved,
        }
    }

    /// The status it leads to.
    pub fn to(self) -> Status {
        match self {
            Transition::Approve => Status::Approved,
            Transition::Deny => Status::Denied,
            Transition::Apply => Status::Applied,
            Transition::Fail | Transition::Orphan => Status::Failed,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Transition::Approve => "approve",
            Transition::Deny => "deny",
            Transition::Apply => "mark as applied",
            Transition::Fail => "mark as failed",
            Transition::Orphan => "orphan",
        }
    }
}

/// A transition asked of a status it does not start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} an approval that is {from}", transition.verb())]
pub struct IllegalTransition {
    pub from: Status,
    pub transition: Transition,
}

/// An admin's answer to a pending approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    /// The lifecycle edge this decision takes.
    pub fn transition(self) -> Transition {
        match self {
            Decision::Approve => Transition::Approve,
            Decision::Deny => Transition::Deny,
        }
    }
}

/// What an approval applied in place adds to its note.
pub const IN_PLACE_NOTE: &str = "applied in place, without a restart";

/// What became of an approved change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Applied without restarting anything (an egress allowlist change): the note says
    /// so ([`IN_PLACE_NOTE`]), for `hivectl approve` and every later view.
    AppliedInPlace,
    /// Carries the error, which becomes the approval's note.
    Failed(String),
}

impl Outcome {
    /// The lifecycle edge this outcome takes.
    pub fn transition(&self) -> Transition {
        match self {
            Outcome::Applied | Outcome::AppliedInPlace => Transition::Apply,
            Outcome::Failed(_) => Transition::Fail,
        }
    }
}

/// Which approvals [`Store::list`](super::Store::list) returns, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFilter<'a> {
    /// Only those waiting for an admin: `hivectl approvals`.
    Pending,
    /// Everything ever requested: `hivectl approvals --all`.
    All,
    /// Approved but not yet applied or failed: what a restarted daemon resumes. Few, so the
    /// daemon does not read the whole table at every start.
    Approved,
    /// Every approval of one agent, whatever its status: what an agent may see of the
    /// store through its socket, since it must not learn about its siblings.
    Agent(&'a AgentName),
}

/// One row of the `approvals` table; `--json` output is this struct through serde.
/// Times are unix microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    /// Never reused, even across restarts (AUTOINCREMENT), so an admin's `hivectl approve
    /// 12` can never hit a different request than the one they read.
    pub id: i64,
    pub agent: AgentName,
    /// What is asked for.
    pub kind: ApprovalKind,
    /// JSON text as the requester gave it; the store checked it parses.
    pub payload: String,
    pub status: Status,
    /// The admin's note, or why the approval failed.
    pub note: Option<String>,
    /// Who decided, e.g. `uid 0`.
    pub decided_by: Option<String>,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Why [`Store::decide`](super::Store::decide) did not record a decision.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no approval with id {0}")]
    NotFound(i64),
    /// Someone else decided first, or the approval failed as an orphan.
    #[error("approval {id} is already {status}")]
    AlreadyDecided { id: i64, status: Status },
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Why [`Store::finish`](super::Store::finish) did not record an outcome.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    #[error("no approval with id {0}")]
    NotFound(i64),
    /// Only an approved change can be applied or fail.
    #[error("approval {id} is {status}, not approved")]
    NotApproved { id: i64, status: Status },
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    use Status::*;
    use Transition::*;

    /// The whole lifecycle as a table; every pair not listed must be refused.
    const LEGAL: [(Status, Transition, Status); 5] = [
        (Pending, Approve, Approved),
        (Pending, Deny, Denied),
        (Pending, Orphan, Failed),
        (Approved, Apply, Applied),
        (Approved, Fail, Failed),
    ];

    #[test]
    fn every_transition_from_every_status() {
        for from in Status::ALL {
            for t in Transition::ALL {
                let want = LEGAL
                    .iter()
                    .find(|(f, tt, _)| *f == from && *tt == t)
                    .map(|(_, _, to)| *to);
                match (from.then(t), want) {
                    (Ok(got), Some(to)) => assert_eq!(got, to, "{from} {t:?}"),
                    (Err(e), None) => {
                        assert_eq!(
                            e,
                            IllegalTransition {
                                from,
                                transition: t
                            }
                        );
                        assert!(e.to_string().contains(from.as_str()), "{e}");
                    }
                    (got, want) => panic!("{from} {t:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn final_statuses() {
        let finals: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, [Denied, Applied, Failed]);
    }

    #[test]
    fn status_text_round_trips() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert_eq!(Status::parse("Pending"), None);
        assert_eq!(Status::parse(""), None);
    }

    #[test]
    fn decisions_and_outcomes_map_to_their_edges() {
        assert_eq!(Decision::Approve.transition(), Approve);
        assert_eq!(Decision::Deny.transition(), Deny);
        assert_eq!(Outcome::Applied.transition(), Apply);
        assert_eq!(Outcome::Failed("x".into()).transition(), Fail);
    }
}
