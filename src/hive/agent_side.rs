//! What the daemon tells an agent and answers it about itself, through its socket: the
//! queries of `hive-harness mcp` (its own approvals, whoami) and the pushes (a decision on
//! one of its approvals, a restart ahead). See docs/agent-side.md.
//!
//! An agent only ever sees its own: every query is scoped to the agent the socket belongs
//! to, and another agent's approval id is answered as if it did not exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::approvals::Approvals;
use super::Error;
use crate::spec::{AgentName, Bind};
use crate::store::{Approval, ApprovalKind, Status};

/// Approvals listed by `my_approvals` and replayed on `subscribe`, newest: enough for an
/// agent to follow its own requests (it may have 32 pending), bounded whatever its history.
pub const MAX_LISTED: usize = 64;

/// What the core tells an agent through its door; the socket adapter turns each into its
/// wire message (docs/socket-protocol.md). Telling never waits on the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// An admin decided on one of the agent's approvals, or applying it ended.
    Decided {
        id: i64,
        kind: ApprovalKind,
        /// Approved, denied, applied or failed.
        status: Status,
        note: String,
    },
    /// An approved change is about to restart the agent's container.
    RestartPending { id: i64, grace: Duration },
    /// Wakes a turn (in the turn loop) with an admin's message.
    Wake { reason: String, message: String },
}

/// The agents' doors to the host (their sockets), served by an adapter the core does not
/// know. Opened before an agent's container boots (its harness reports ready only once
/// connected), closed when the agent goes.
pub trait AgentDoors: Send + Sync {
    /// Opens (or reopens: idempotent) the agent's door in its runtime dir `dir`.
    fn open(&self, name: &AgentName, dir: &Path) -> anyhow::Result<()>;
    fn close(&self, name: &AgentName);
    /// Tells the agent's listening harness connections `notice`, without waiting on them;
    /// returns how many it reached (0: none listens).
    fn tell(&self, name: &AgentName, notice: &Notice) -> usize;
    /// Whether a connection to the agent's door has subscribed since this daemon started
    /// (what a harness does first when it connects).
    fn listening(&self, name: &AgentName) -> bool;
}

/// How long an agent is given between being told an approved change will restart its
/// container and the restart, when its harness is listening: its spec's `restart_grace`,
/// else `HYPERHIVE_RESTART_GRACE` (whole seconds, at most [`MAX_GRACE`]) in hive-c0re's
/// environment, else this.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3);
/// The longest grace: an admin's `hivectl approve` waits through it.
pub const MAX_GRACE: Duration = Duration::from_secs(crate::spec::MAX_RESTART_GRACE);

/// The agent's grace: its spec's, or the daemon's default.
pub fn restart_grace(spec_grace: Option<u64>) -> Duration {
    match spec_grace {
        Some(secs) => Duration::from_secs(secs).min(MAX_GRACE),
        None => grace_from(std::env::var("HYPERHIVE_RESTART_GRACE").ok().as_deref()),
    }
}

fn grace_from(raw: Option<&str>) -> Duration {
    match raw.map(|r| r.trim().parse::<u64>()) {
        None => DEFAULT_GRACE,
        Some(Ok(secs)) => Duration::from_secs(secs).min(MAX_GRACE),
        Some(Err(_)) => {
            log::warn!(
                "HYPERHIVE_RESTART_GRACE is not a number of seconds; using {DEFAULT_GRACE:?}"
            );
            DEFAULT_GRACE
        }
    }
}

/// What an agent is told about itself (`whoami`): its own entries of its spec, and
/// which of its approvals wait for an admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    pub agent: AgentName,
    /// The agent's own entries, first on its PATH.
    pub path: Vec<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub binds: Vec<Bind>,
    pub memory_max: Option<u64>,
    pub tasks_max: Option<u64>,
    pub cpu_weight: Option<u64>,
    pub pending_approvals: Vec<i64>,
}

fn decided(a: &Approval) -> Option<Notice> {
    (a.status != Status::Pending).then(|| Notice::Decided {
        id: a.id,
        kind: a.kind,
        status: a.status,
        note: a.note.clone().unwrap_or_default(),
    })
}

fn newest(all: Vec<Approval>) -> Vec<Approval> {
    let skip = all.len().saturating_sub(MAX_LISTED);
    all.into_iter().skip(skip).collect()
}

/// The agent's own approvals, the newest [`MAX_LISTED`], oldest first.
pub fn my_approvals(approvals: &Approvals, agent: &AgentName) -> Result<Vec<Approval>, String> {
    let all = approvals
        .of_agent(agent)
        .map_err(|e| crate::spec::one_line(&format!("agent {agent}: {e:#}")))?;
    Ok(newest(all))
}

pub fn approval_status(
    approvals: &Approvals,
    agent: &AgentName,
    id: i64,
) -> Result<Approval, String> {
    match approvals.get(id) {
        Ok(a) if &a.agent == agent => Ok(a),
        // Someone else's, or none: the same answer, so ids tell an agent nothing.
        Ok(_) | Err(Error::NoSuchApproval(_)) => {
            Err(format!("agent {agent}: no approval {id} of yours"))
        }
        Err(e) => Err(crate::spec::one_line(&format!("agent {agent}: {e}"))),
    }
}

pub fn whoami(approvals: &Approvals, agent: &AgentName) -> Result<WhoAmI, String> {
    let spec = super::specs::load_spec(approvals.roots(), agent)
        .map_err(|e| crate::spec::one_line(&e.to_string()))?;
    let pending: Vec<i64> = approvals
        .of_agent(agent)
        .map(|all| {
            all.iter()
                .filter(|a| a.status == Status::Pending)
                .map(|a| a.id)
                .collect()
        })
        .unwrap_or_default();
    Ok(WhoAmI {
        agent: agent.clone(),
        path: spec.path,
        env: spec.env,
        binds: spec.binds,
        memory_max: spec.memory_max,
        tasks_max: spec.tasks_max,
        cpu_weight: spec.cpu_weight,
        pending_approvals: pending,
    })
}

pub fn recent_decisions(approvals: &Approvals, agent: &AgentName) -> Vec<Notice> {
    match approvals.of_agent(agent) {
        Ok(all) => newest(all).iter().filter_map(decided).collect(),
        Err(e) => {
            log::warn!("agent {agent}: reading its decisions to send: {e:#}");
            Vec::new()
        }
    }
}

/// Tells the approval's agent what became of it, if its harness listens; never waits.
pub fn tell_decided(doors: &dyn AgentDoors, a: &Approval) {
    if let Some(notice) = decided(a) {
        doors.tell(&a.agent, &notice);
    }
}

/// Before an approved change restarts the agent's container: tells its harness, and gives
/// it the grace period to finish its turn. An agent whose harness does not listen (an
/// older harness, or none connected) has nothing to finish it could be told about, so it
/// is not waited for.
pub async fn grace_before_restart(doors: &dyn AgentDoors, a: &Approval, spec_grace: Option<u64>) {
    let grace = restart_grace(spec_grace);
    let notice = Notice::RestartPending { id: a.id, grace };
    if doors.tell(&a.agent, &notice) > 0 && !grace.is_zero() {
        log::info!(
            "approval {} of agent {}: its container restarts in {}s; the agent was told",
            a.id,
            a.agent,
            grace.as_secs()
        );
        tokio::time::sleep(grace).await;
    }
}

/// The wake reason of `hivectl tell --new-session` (harness/claude.rs starts a new
/// conversation for it).
pub const TELL_NEW_SESSION: &str = "tell_new_session";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_grace_comes_first_and_is_bounded() {
        assert_eq!(restart_grace(Some(7)), Duration::from_secs(7));
        assert_eq!(restart_grace(Some(0)), Duration::ZERO);
        assert_eq!(restart_grace(Some(999)), MAX_GRACE);
    }

    #[test]
    fn the_grace_is_bounded_and_a_bad_value_falls_back() {
        assert_eq!(grace_from(None), DEFAULT_GRACE);
        assert_eq!(grace_from(Some("0")), Duration::ZERO);
        assert_eq!(grace_from(Some("7")), Duration::from_secs(7));
        assert_eq!(grace_from(Some("99999")), MAX_GRACE);
        assert_eq!(grace_from(Some("soon")), DEFAULT_GRACE);
    }
}
