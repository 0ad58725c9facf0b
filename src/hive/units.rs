//! Bringing an agent up: its door, its side units and disk, a system agent's system
//! (its GC root, or a switch in place), its container, then its harness, each ensured with
//! `ensure`'s rules.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::driver::UnitDriver;
use super::ensure::{ensure_running, Outcome};
use super::files::mark_stopped;
use super::mode::Mode;
use super::nixos_system::{running_system, set_gc_root, SWITCH_TIMEOUT};
use crate::plan::system::SWITCH_UNIT;
use crate::plan::UnitPlan;
use crate::spec::AgentSpec;

impl UnitDriver {
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

    /// A system agent's step before its units are ensured, returning the mode to ensure
    /// them with and whether it switched. A unit that will be (re)started boots what the GC root names, so the GC
    /// root is pointed at the spec's system first. A running unit whose plan is the same
    /// but whose system is not is switched in place (not for `start`, which keeps what
    /// runs): its InvocationID stays; a failed switch is an error and leaves the GC root,
    /// and so the running system, as it was.
    pub(super) async fn settle_system(
        &self,
        spec: &AgentSpec,
        plan: &crate::plan::UnitPlan,
        mode: Mode,
    ) -> Result<(Mode, bool)> {
        let Some(system) = &spec.system else {
            return Ok((mode, false));
        };
        let name = &spec.name;
        let live = self.sd.status(&plan.unit).await?.filter(|s| s.is_up());
        let live_plan = live.as_ref().and_then(|s| s.plan_hash().map(str::to_owned));
        let same_plan = live_plan.as_deref() == Some(plan.hash.as_str());
        let kept = live.is_some()
            && match mode {
                Mode::Start => live_plan.is_some(),
                Mode::Create => same_plan,
                Mode::Rebuild => false,
            };
        let running = running_system(name);
        if mode != Mode::Start && same_plan && running.as_deref() != Some(system.as_path()) {
            self.switch_in_place(spec, system).await?;
            set_gc_root(name, system)?;
            return Ok((Mode::Start, true));
        }
        if !kept {
            set_gc_root(name, system)?;
        }
        Ok((mode, false))
    }

    /// Runs the new system's `switch-to-configuration test` inside the running container,
    /// over the container's own bus, bounded by [`SWITCH_TIMEOUT`].
    async fn switch_in_place(&self, spec: &AgentSpec, system: &Path) -> Result<()> {
        let name = &spec.name;
        let machine = name.machine();
        let what = || {
            format!(
                "switching container {machine} to {} in place (its output: journalctl -M {machine} -u {SWITCH_UNIT})",
                system.display()
            )
        };
        let mut sd = self
            .harness
            .container_systemd(name)
            .await
            .with_context(what)?;
        sd.set_job_timeout(SWITCH_TIMEOUT + Duration::from_secs(5));
        // A switch the daemon gave up on (timed out) may still be there.
        let _ = sd.reset_failed(SWITCH_UNIT).await;
        let plan =
            crate::plan::system::switch_unit(spec, system, SWITCH_TIMEOUT.as_micros() as u64);
        sd.start_transient(&plan).await.with_context(what)?;
        log::info!(
            "agent {name}: switched container {machine} to {} in place",
            system.display()
        );
        Ok(())
    }
}
