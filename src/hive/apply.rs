//! Applying approvals: an admin's decision is recorded, then the change is applied by
//! writing the new spec and rebuilding; one the daemon approved but did not finish
//! applying (it was killed in between) is applied at the next start.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::approvals::{requested_spec, Approvals};
use super::changes::{Change, Changes};
use super::driver::UnitDriver;
use super::files::write_atomic;
use super::lifecycle::Lifecycle;
use super::locks::AgentLocks;
use super::specs::load_spec;
use super::tool_use::{expired, now_micros, EXPIRED_BY, EXPIRY_EVERY};
use super::{preflight, Error};
use crate::failpoint;
use crate::journal::fields;
use crate::spec::claude::DEFAULT_PERMISSION_TIMEOUT;
use crate::store::{Approval, ApprovalKind, Decision, Outcome as ApprovalOutcome};

/// Decides approvals and applies them: the decision goes to the store and to the agent,
/// the change through the lifecycle's rebuild (or in place).
pub(super) struct Applier {
    changes: Changes,
    approvals: Arc<Approvals>,
    locks: Arc<AgentLocks>,
    driver: Arc<UnitDriver>,
    lifecycle: Arc<Lifecycle>,
}

impl Applier {
    pub(super) fn new(
        driver: Arc<UnitDriver>,
        lifecycle: Arc<Lifecycle>,
        locks: Arc<AgentLocks>,
        approvals: Arc<Approvals>,
        changes: Changes,
    ) -> Self {
        Self {
            changes,
            approvals,
            locks,
            driver,
            lifecycle,
        }
    }

    /// An admin approves: record the decision, then apply the change by writing the new
    /// spec and rebuilding. The approval ends applied or failed, and says which.
    pub(super) async fn approve(
        &self,
        id: i64,
        by: &str,
        note: Option<&str>,
    ) -> Result<Approval, Error> {
        let decided = self.approvals.decide(id, Decision::Approve, by, note)?;
        super::agent_side::tell_decided(self.driver.doors.as_ref(), &decided);
        if decided.kind == ApprovalKind::ToolUse {
            // Nothing to apply on the host: the agent's claude runs the call it asked for.
            let finished = self.approvals.finish(id, ApprovalOutcome::Applied)?;
            super::agent_side::tell_decided(self.driver.doors.as_ref(), &finished);
            return Ok(finished);
        }
        failpoint::hit("approve:decided");
        // The grace the agent's spec gives it now, before the change is laid over it.
        let current = load_spec(&self.driver.host.roots, &decided.agent).ok();
        let grace = current.as_ref().and_then(|s| s.restart_grace);
        // A change of the egress allowlist alone restarts nothing: no grace, no warning.
        let egress_only = current.as_ref().is_some_and(|old| {
            requested_spec(&self.driver.host.roots, &decided).is_ok_and(|(_, new)| {
                let mut o = old.clone();
                o.egress = new.egress.clone();
                o == new
            })
        });
        if !egress_only {
            super::agent_side::grace_before_restart(self.driver.doors.as_ref(), &decided, grace)
                .await;
        }
        let outcome = match self.apply(&decided).await {
            Ok(in_place) => {
                failpoint::hit("approve:applied");
                if in_place {
                    ApprovalOutcome::AppliedInPlace
                } else {
                    ApprovalOutcome::Applied
                }
            }
            Err(e) => ApprovalOutcome::Failed(format!("{e:#}")),
        };
        let finished = self.approvals.finish(id, outcome)?;
        super::agent_side::tell_decided(self.driver.doors.as_ref(), &finished);
        Ok(finished)
    }

    pub(super) async fn deny(
        &self,
        id: i64,
        by: &str,
        note: Option<&str>,
    ) -> Result<Approval, Error> {
        let denied = self.approvals.decide(id, Decision::Deny, by, note)?;
        super::agent_side::tell_decided(self.driver.doors.as_ref(), &denied);
        Ok(denied)
    }

    /// Applies an approved change; true when it was applied in place (nothing restarted).
    async fn apply(&self, a: &Approval) -> Result<bool> {
        let name = &a.agent;
        let _guard = self.locks.lock(name).await;
        let (_, spec) = requested_spec(&self.driver.host.roots, a).map_err(anyhow::Error::msg)?;
        preflight::check(&spec, &self.driver.host).map_err(anyhow::Error::msg)?;
        let saved = self.driver.host.roots.saved_spec(name);
        write_atomic(&saved, spec.to_file().to_toml().as_bytes())
            .with_context(|| format!("agent {name}: saving spec {}", saved.display()))?;
        failpoint::hit("approve:spec-saved");
        if self.driver.egress_in_place(&spec, a.id).await? {
            self.changes.publish(Change::AgentChanged(name.clone()));
            return Ok(true);
        }
        self.lifecycle.rebuild_locked(&spec, Some(a.id)).await?;
        self.changes.publish(Change::AgentChanged(name.clone()));
        Ok(false)
    }

    /// An approval the daemon recorded as approved but did not finish applying (it was
    /// killed in between) is applied now: the admin's decision stands. Applying is
    /// idempotent (the spec converges), so a change already written is not doubled; one
    /// whose rebuild already brought the agent up is only recorded, not rebuilt again.
    pub(super) async fn resume_approved(&self) {
        let all = match self.approvals.approved() {
            Ok(all) => all,
            Err(e) => {
                log::error!("reading approvals to resume: {e}");
                return;
            }
        };
        for a in all
            .iter()
            .filter(|a| a.status == crate::store::Status::Approved)
        {
            let outcome = if a.kind == ApprovalKind::ToolUse {
                ApprovalOutcome::Applied
            } else if self.rebuilt_for(a).await {
                log::warn!("approval {} of agent {}: applied but not recorded when hive-c0re stopped; recording it", a.id, a.agent);
                ApprovalOutcome::Applied
            } else {
                log::warn!("approval {} of agent {}: approved but not applied when hive-c0re stopped; applying it now", a.id, a.agent);
                match self.apply(a).await {
                    Ok(true) => ApprovalOutcome::AppliedInPlace,
                    Ok(false) => ApprovalOutcome::Applied,
                    Err(e) => ApprovalOutcome::Failed(format!("{e:#}")),
                }
            };
            if let Err(e) = self.approvals.finish(a.id, outcome) {
                log::error!("approval {}: recording its outcome: {e}", a.id);
            }
        }
    }

    /// Whether the approval's rebuild already brought its agent's container up: the live
    /// unit runs stamped with the approval's id (the stamp only comes from that rebuild,
    /// which saved the spec first). Applying again would rebuild the agent a second time.
    async fn rebuilt_for(&self, a: &Approval) -> bool {
        let stamp = fields::assign(fields::APPROVAL_ID, a.id);
        match self.driver.sd.status(&a.agent.container_unit()).await {
            Ok(Some(st)) => st.is_up() && st.environment.contains(&stamp),
            Ok(None) => false,
            Err(e) => {
                log::warn!("approval {}: reading its agent's unit: {e:#}", a.id);
                false
            }
        }
    }

    /// Denies every pending `tool_use` approval past its agent's `permission_timeout`.
    pub(super) async fn expire_tool_uses(&self, now: i64) {
        let pending = match self.approvals.pending_list() {
            Ok(p) => p,
            Err(e) => {
                log::warn!("looking for expired tool_use approvals: {e}");
                return;
            }
        };
        for a in pending.iter().filter(|a| a.kind == ApprovalKind::ToolUse) {
            // An agent whose spec is gone or changed: the default bound.
            let timeout = load_spec(&self.driver.host.roots, &a.agent)
                .ok()
                .and_then(|s| s.claude)
                .map(|c| c.permission_timeout)
                .unwrap_or(DEFAULT_PERMISSION_TIMEOUT);
            if !expired(a.created_at, timeout, now) {
                continue;
            }
            let note = format!(
                "no admin decided within {timeout} s (the agent's permission_timeout); claude was refused"
            );
            match self.deny(a.id, EXPIRED_BY, Some(&note)).await {
                // An admin decided in between: theirs stands.
                Ok(_) | Err(Error::AlreadyDecided(_)) => {}
                Err(e) => log::warn!(
                    "approval {} of agent {}: closing it at its timeout: {e}",
                    a.id,
                    a.agent
                ),
            }
        }
    }
}

/// Closes expired `tool_use` approvals now and then, for as long as the daemon runs
/// (also those left pending by an earlier daemon).
pub(super) fn spawn_expiry(applier: Arc<Applier>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(EXPIRY_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            applier.expire_tool_uses(now_micros()).await;
        }
    });
}
