//! Bringing an agent up: its door, its side units and disk, its container, then its
//! harness, each ensured with `ensure`'s rules.

use anyhow::Result;

use super::ensure::{ensure_running, Outcome};
use super::files::mark_stopped;
use super::mode::Mode;
use super::Hive;
use crate::plan::UnitPlan;
use crate::spec::AgentSpec;
use crate::systemd::Systemd;

impl Hive {
    /// Socket, container, harness — in that order: the harness reports ready only once it
    /// is connected, so its socket must be there before the container boots.
    pub(super) async fn bring_up(
        &self,
        spec: &AgentSpec,
        plan: &UnitPlan,
        mode: Mode,
        approval: Option<i64>,
    ) -> Result<Outcome> {
        let name = &spec.name;
        self.doors.open(name, &self.host.roots.runtime_dir(name))?;
        mark_stopped(&self.host.roots, name, false)?;
        // The container binds the proxy's directory: it must exist before nspawn runs.
        self.ensure_egress(spec).await?;
        self.ensure_ports(spec).await?;
        // Its state and credentials are in its image: mounted before nspawn binds them.
        let disk_stopped_it = self.ensure_disk(spec).await?;
        let (mode, switched) = self.settle_system(spec, plan, mode).await?;
        let outcome = match ensure_running(&self.sd, plan, mode).await? {
            Outcome::Adopted if switched => Outcome::Switched,
            // Its image grew, or its data moved in, with the container stopped.
            Outcome::Created if disk_stopped_it => Outcome::Replaced,
            outcome => outcome,
        };
        // A new container has no harness yet; an adopted one keeps a matching harness.
        let harness_mode = if matches!(outcome, Outcome::Adopted | Outcome::Switched) {
            mode
        } else {
            Mode::Start
        };
        self.harness
            .ensure_harness(spec, harness_mode, approval)
            .await?;
        Ok(outcome)
    }

    /// [`ensure_running`], as the side units' files call it.
    pub(super) async fn ensure_running(
        sd: &Systemd,
        plan: &UnitPlan,
        mode: Mode,
    ) -> Result<Outcome> {
        ensure_running(sd, plan, mode).await
    }
}
